"""The study runner: study files expand to the right grids, and finished runs are skipped, interrupted ones resumed."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import experiments
import runlog
from experiments import summary
from experiments.__main__ import main
from tests.helpers import POINT, write_run
from training import interrupts

GRID_SIZES = {"lenet": 30, "lenet-p1": 24, "conv-short": 4, "conv": 30, "peers": 90, "peers-conv": 162,
              "resnet": 10, "conv8": 10}


@pytest.mark.parametrize("name", experiments.study_names())
def test_every_shipped_study_parses_with_explicit_nonzero_seeds(name):
    study = experiments.load_study(name)
    assert study.points and all(point["seed"] >= 1 for point in study.points)
    assert len({tuple(sorted(point.items())) for point in study.points}) == len(study.points)


@pytest.mark.parametrize("name, size", GRID_SIZES.items())
def test_studies_expand_to_the_issue_grid_sizes(name, size):
    assert len(experiments.load_study(name).points) == size


def test_unknown_study_is_one_line_error_and_exit_2(capsys):
    assert main(["run", "no-such-study"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown study 'no-such-study'" in error and "lenet" in error


@pytest.mark.parametrize("text, message", [
    ("[grid\n", "not a readable TOML file"),
    ("[fixed]\nseed = 1\n", "needs a [grid]"),
    ("[grid]\nseed = [0]\n", "seeds must be explicit"),
    ("[grid]\nseed = [1]\nepochs = [3]\n", "not a MaskTrainer setting"),
    ("[grid]\nseed = 1\n", "non-empty list"),
    ("[grid]\ntraintype = ['Pruning']\nseed = [1]\n", "unknown traintype"),
    ("[grid]\nnettype = ['LeNet']\n", "no seed"),
    ("[grid]\ntraintype = ['SignFlipping']\nseed = [1]\n[fixed]\nmasktype = 'mask'\n", "does not fit"),
    ("[grid]\nseed = [1]\n[[plot]]\nname = 'x'\nlr = [1.0]\n", "[[plot]]"),
    ("[grid]\nseed = [1, 2, 1]\n", "gives one run twice .seed=1."),
    ("[grid]\ntraintype = ['FreeFlipping', 'SignFlipping']\nseed = [1]\n", "gives one run twice"),
    ("[grid]\nseed = [1]\n[ray]\ncpus = 0\n", "[ray] takes cpus"),
    ("[grid]\nseed = [1]\n[ray]\nmemory = 1\n", "[ray] takes cpus"),
    ("[grid]\ntraintype = ['EdgePopup', 'FreePruning']\nkeep = [0.3]\nseed = [1]\n", "--keep is only for EdgePopup"),
    ("[grid]\ntraintype = ['EdgePopup']\nkeep = [0.0]\nseed = [1]\n", "keep 0.0 is not a fraction in"),
    ("[[grid]]\nseed = [1]\n[[grid]]\nlr = [0.1]\n", "no seed"),
    ("[[grid]]\nseed = [1]\n[[grid]]\nseed = [1]\n", "gives one run twice"),
    ("grid = []\n", "needs a [grid]"),
    ("[grid]\nseed = [1]\n[ray]\ncpus = nan\n", "[ray] takes cpus"),
    ("[grid]\nseed = [1]\n[ray]\ngpus = inf\n", "[ray] takes cpus"),
])
def test_malformed_study_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(experiments.StudyError, match=message.replace("[", r"\[")):
        experiments.load_study(str(path))


def test_peers_runs_every_type_on_the_same_seeds_and_edge_popup_at_each_keep():
    study = experiments.load_study("peers")
    edge = [point for point in study.points if point["traintype"] == "EdgePopup"]
    assert sorted({point["keep"] for point in edge}) == [0.3, 0.5, 0.7] and len(edge) == 30
    assert all("keep" not in point for point in study.points if point["traintype"] != "EdgePopup")
    assert {point["seed"] for point in study.points} == {1, 2, 3, 4, 5}
    directories = {experiments.experiment_directory(point, Path("Outputs")) for point in edge}
    assert {path.name.split("_relu")[0] for path in directories} == {"topk_K0.3", "topk_K0.5", "topk_K0.7"}


def test_a_repeated_grid_point_is_refused_with_one_line(tmp_path, capsys):
    path = tmp_path / "twice.toml"
    path.write_text("[grid]\nseed = [1, 1]\n")
    assert main(["run", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "gives one run twice" in error


def test_ray_resources_come_from_the_study_file(tmp_path):
    path = tmp_path / "ray.toml"
    path.write_text("[grid]\nseed = [1]\n[ray]\ncpus = 2\ngpus = 0.25\n")
    assert experiments.load_study(str(path)).resources == {"cpus": 2.0, "gpus": 0.25}


def test_plot_groups_keep_the_named_grid_values():
    study = experiments.load_study("lenet")
    assert set(study.plots) == {"he", "heconstant"}
    assert study.plots["he"] == {"initializer": ["he"]}


def test_run_directory_uses_canonical_training_type_and_mask(tmp_path):
    directory = experiments.experiment_directory(POINT, tmp_path)
    assert directory == tmp_path / "SignFlipping/LeNet/P1_0.5/flip_relu_heconstant_LR0.001"


def test_absent_run_is_new(tmp_path):
    assert experiments.find_run(POINT, tmp_path) == ("new", None)


def test_finished_or_failed_run_is_skipped(tmp_path):
    config = write_run(tmp_path, POINT, "aaaaaaa", "finished", 3)
    assert experiments.find_run(POINT, tmp_path) == ("finished", config)
    config.unlink()
    failed = write_run(tmp_path, POINT, "bbbbbbb", "failed", 2)
    assert experiments.find_run(POINT, tmp_path) == ("failed", failed)


def test_interrupted_run_resumes_the_furthest_one(tmp_path):
    write_run(tmp_path, POINT, "aaaaaaa", "running", None)  # killed before epoch 0
    furthest = write_run(tmp_path, POINT, "bbbbbbb", "running", 2)
    write_run(tmp_path, POINT, "ccccccc", "running", 1)
    assert experiments.find_run(POINT, tmp_path) == ("resume", furthest)


@pytest.mark.parametrize("change", [{"seed": 3}, {"maxepochs": 20}, {"batchsize": 50}, {"trainsize": 500},
                                    {"dataset": "fashion-mnist"}])
def test_run_with_other_settings_does_not_count(tmp_path, change):
    write_run(tmp_path, POINT, "aaaaaaa", "finished", 3, **change)
    assert experiments.find_run(POINT, tmp_path) == ("new", None)


def fake_trainer(tmp_path: Path, monkeypatch, exit_code: int = 0, seconds: float = 0.0) -> list[list[str]]:
    """Replace MaskTrainer with a script that records its command line and environment, sleeps, and exits."""
    script = tmp_path / "fake_trainer.py"
    script.write_text("import json, os, sys, time\n"
                      f"record = {{'argv': sys.argv[1:], 'env': dict(os.environ)}}\n"
                      "with open(os.environ['FAKE_RECORD'], 'a') as file:\n"
                      "    file.write(json.dumps(record) + '\\n')\n"
                      f"time.sleep({seconds})\n"
                      f"sys.exit({exit_code})\n")
    commands = []
    original = experiments.points.trainer_command

    def command(point, outputpath, action, config_path):
        real = original(point, outputpath, action, config_path)
        commands.append(real)
        return [sys.executable, str(script), *real[2:]]
    monkeypatch.setattr(experiments.points, "trainer_command", command)
    monkeypatch.setenv("FAKE_RECORD", str(tmp_path / "record.jsonl"))
    return commands


def fake_records(tmp_path: Path) -> list[dict]:
    import json
    return [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]


def test_runner_skips_resumes_and_starts_the_right_commands(tmp_path, monkeypatch):
    points = [dict(POINT, seed=seed) for seed in (1, 2, 3)]
    write_run(tmp_path, points[0], "aaaaaaa", "finished", 3)
    interrupted = write_run(tmp_path, points[1], "bbbbbbb", "running", 1)
    commands = fake_trainer(tmp_path, monkeypatch)
    lines = []
    study = experiments.Study("synthetic", "", points, {})
    assert experiments.run_study(study, tmp_path, say=lines.append) == 0
    assert lines[0] == "study synthetic: 3 runs: 1 finished, 0 failed, 1 resume, 1 new"
    assert commands[0] == [sys.executable, str(experiments.REPO_ROOT / "MaskTrainer.py"), "--resume", str(interrupted),
                           "--maxepochs", "3"]
    assert commands[1][2:] == ["--nettype", "LeNet", "--traintype", "FreeFlipping", "--initializer", "heconstant",
                               "--seed", "3", "--dataset", "mnist", "--maxepochs", "3", "--batchsize", "25",
                               "--lr", "0.001", "--outputpath", str(tmp_path)]
    assert len(commands) == 2 and "left" in lines[-2]
    # The trainer is told its claim; one job keeps the machine's threads, as before.
    claim = Path(fake_records(tmp_path)[0]["env"]["MASKTRAINER_CLAIM"])
    assert claim.name.startswith("Claim_seed2-")
    assert claim.parent == experiments.experiment_directory(points[1], tmp_path)
    assert "TF_NUM_INTRAOP_THREADS" not in fake_records(tmp_path)[0]["env"]
    assert not list(tmp_path.rglob("Claim_*"))  # released when the runs ended
    assert lines[-1].startswith("study synthetic: 3/3 runs finished; 2 trained here")


def test_dry_run_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: pytest.fail("dry run started a process"))
    lines = []
    experiments.run_study(experiments.Study("s", "", [POINT], {}), tmp_path, dry_run=True, say=lines.append)
    assert lines[1].startswith("[1/1] new:") and "--resume" not in lines[2]
    assert not list(tmp_path.rglob("Claim_*"))


def test_failed_runs_are_not_reported_complete(tmp_path, monkeypatch):
    fake_trainer(tmp_path, monkeypatch, exit_code=2)
    lines = []
    study = experiments.Study("s", "", [POINT], {})
    assert experiments.run_study(study, tmp_path, say=lines.append) == 1
    assert "FAILED (exit 2)" in lines[-2] and "0/1 runs complete" in lines[-2]
    assert lines[-1].startswith("study s: 0/1 runs finished") and "1 FAILED: [1]" in lines[-1]


def test_jobs_share_the_cores_and_gpus_round_robin(tmp_path, monkeypatch):
    from experiments import runner
    fake_trainer(tmp_path, monkeypatch, seconds=0.5)
    monkeypatch.setattr(runner, "gpu_devices", lambda: ["0", "1"])
    points = [dict(POINT, seed=seed) for seed in (1, 2, 3, 4)]
    lines = []
    assert experiments.run_study(experiments.Study("s", "", points, {}), tmp_path, say=lines.append,
                                 runs_per_gpu=2) == 0
    assert lines[1] == (f"study s: training 4 at a time on GPUs 0, 1, {max(1, runner.available_cores() // 4)} "
                        f"CPU thread{'s' if runner.available_cores() >= 8 else ''} each")
    environments = [record["env"] for record in fake_records(tmp_path)]
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for env in environments) == ["0", "0", "1", "1"]
    for env in environments:
        assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert env["TF_NUM_INTRAOP_THREADS"] == env["PJRT_NPROC"] == str(max(1, runner.available_cores() // 4))


@pytest.mark.parametrize("visible, devices", [("0,1", ["0", "1"]), ("", []), ("-1", []), ("2,-1,3", ["2"])])
def test_gpus_are_the_visible_devices(visible, devices):
    from experiments import runner
    assert runner.gpu_devices({"CUDA_VISIBLE_DEVICES": visible}) == devices


def test_gpus_are_found_with_nvidia_smi(tmp_path, monkeypatch):
    from experiments import runner
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert runner.gpu_devices({}) == ["0", "1"]


def test_interrupting_the_runner_stops_its_trainers_and_releases_their_claims(tmp_path, monkeypatch):
    import _thread
    import threading
    fake_trainer(tmp_path, monkeypatch, seconds=60)
    points = [dict(POINT, seed=seed) for seed in (1, 2)]
    record, finished = tmp_path / "record.jsonl", threading.Event()

    def interrupt_once_both_started():  # however loaded the machine, both trainers are running when Ctrl-C comes
        while not finished.is_set() and not (record.exists() and len(record.read_text().splitlines()) == 2):
            time.sleep(0.1)
        if not finished.is_set():  # never into a later test
            _thread.interrupt_main()
    threading.Thread(target=interrupt_once_both_started, daemon=True).start()
    lines = []
    try:
        with pytest.raises(KeyboardInterrupt):
            experiments.run_study(experiments.Study("s", "", points, {}), tmp_path, jobs=2, say=lines.append)
    finally:
        finished.set()
    assert any("interrupting 2 runs" in line for line in lines) and len(fake_records(tmp_path)) == 2
    assert not list(tmp_path.rglob("Claim_*"))


def test_a_point_claimed_by_a_live_runner_waits_and_counts_when_that_runner_finishes(tmp_path, monkeypatch):
    from experiments import claims
    commands = fake_trainer(tmp_path, monkeypatch)
    directory = experiments.experiment_directory(POINT, tmp_path)
    other = claims.acquire(directory, experiments.claim_stem(POINT), 20, note={"host": "elsewhere"})
    # The other runner finishes its run two seconds later and releases its claim.
    threading_timer(2.0, lambda: (write_run(tmp_path, POINT, "aaaaaaa", "finished", 3), other.release()))
    lines = []
    assert experiments.run_study(experiments.Study("s", "", [POINT], {}), tmp_path, say=lines.append,
                                 stale_after=20) == 0
    assert "claimed by elsewhere" in lines[2] and not commands
    assert "finished by another runner" in lines[3]
    assert lines[-1].startswith("study s: 1/1 runs finished; 0 trained here") and "1 by other runners" in lines[-1]


def threading_timer(seconds: float, action) -> None:
    import threading
    threading.Timer(seconds, action).start()


def test_tiny_study_end_to_end_second_run_skips(tmp_path, mnist_directory, monkeypatch, capfd):
    monkeypatch.setenv("MASKTRAINER_DATA", str(mnist_directory))
    study_file = tmp_path / "tiny.toml"
    study_file.write_text('[grid]\ntraintype = ["SignFlipping"]\nseed = [1]\n'
                          '[fixed]\nnettype = "LeNet"\nmaxepochs = 1\ntrainsize = 500\n')
    outputs = tmp_path / "Outputs"
    assert main(["run", str(study_file), "--outputpath", str(outputs)]) == 0
    assert "1 new" in capfd.readouterr().out
    (config,) = outputs.glob("SignFlipping/LeNet/*/*/Config_ID*.json")
    assert runlog.read_json(config)["status"] == "finished"
    assert main(["run", str(study_file), "--outputpath", str(outputs)]) == 0
    assert "1 finished, 0 failed, 0 resume, 0 new" in capfd.readouterr().out


def test_plot_view_links_only_the_studys_own_runs(tmp_path):
    own = write_run(tmp_path, POINT, "aaaaaaa", "finished", 3)
    write_run(tmp_path, POINT, "bbbbbbb", "finished", 2, trainsize=500)  # a quick test run in the same directory
    view = experiments.study_view(experiments.Study("s", "", [POINT], {}), tmp_path, tmp_path / "view")
    linked = sorted(path.name for path in view.rglob("*_ID*.json"))
    assert linked == ["Config_IDaaaaaaa.json", "TrainLogs_IDaaaaaaa.json"]
    assert (experiments.experiment_directory(POINT, view) / own.name).resolve() == own.resolve()


def test_table_counts_finished_runs_of_the_grid_only(tmp_path):
    points = [dict(POINT, seed=seed) for seed in (1, 2)]
    write_run(tmp_path, points[0], "aaaaaaa", "finished", 3)
    write_run(tmp_path, points[1], "bbbbbbb", "running", 1)
    write_run(tmp_path, points[1], "ccccccc", "finished", 3, maxepochs=20)
    study = experiments.Study("s", "", points, {})
    assert "| s | 1 | 3 | 10.00% [10.00%, 10.00%] |" in experiments.table_study(study, tmp_path)
    assert "| s | 2 | 1/3 |" in experiments.table_study(study, tmp_path, finished_only=False)


def test_table_counts_a_seed_trained_twice_once_and_warns(tmp_path, capsys):
    write_run(tmp_path, POINT, "aaaaaaa", "finished", 2)
    write_run(tmp_path, POINT, "bbbbbbb", "finished", 3)  # the same point trained again, by a second runner
    study_file = tmp_path / "s.toml"
    study_file.write_text('[grid]\nseed = [2]\n[fixed]\nnettype = "LeNet"\ntraintype = "FreeFlipping"\n'
                          'initializer = "heconstant"\ndataset = "mnist"\nmaxepochs = 3\nbatchsize = 25\n'
                          'lr = 0.001\n')
    assert main(["table", str(study_file), "--outputpath", str(tmp_path)]) == 0
    output = capsys.readouterr()
    assert "| s | 1 | 3 |" in output.out
    assert output.err.count("\n") == 1 and output.err.startswith("python -m experiments: warning: ")
    assert "seed 2: bbbbbbb counted, aaaaaaa left out" in output.err


def plot_files(tmp_path: Path) -> Path:
    study_file = tmp_path / "s.toml"
    study_file.write_text('[grid]\nseed = [2]\n[fixed]\nnettype = "LeNet"\ntraintype = "FreeFlipping"\n'
                          'initializer = "heconstant"\ndataset = "mnist"\nmaxepochs = 3\n')
    return study_file


def test_plot_never_deletes_runs_under_its_view_folder(tmp_path, capsys):
    """The view folder once was rmtree'd whole: with --outputpath inside it, every run of the study went."""
    report = tmp_path / "report"
    outputs = report / "s" / "runs"
    config = write_run(outputs, POINT, "aaaaaaa", "finished", 3)
    assert main(["plot", str(plot_files(tmp_path)), "--outputpath", str(outputs), "--out", str(report)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "lies inside the study view" in error
    assert config.exists() and runlog.RunFiles.from_config_path(config).log_json.exists()


def test_plot_refuses_a_view_folder_holding_files_it_did_not_make(tmp_path, capsys):
    write_run(tmp_path / "Outputs", POINT, "aaaaaaa", "finished", 3)
    notes = tmp_path / "report" / "s" / "runs" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    assert main(["plot", str(plot_files(tmp_path)), "--outputpath", str(tmp_path / "Outputs"),
                 "--out", str(tmp_path / "report")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "holds files that `plot` did not make (notes.txt)" in error
    assert notes.read_text() == "mine"


def test_a_new_view_removes_only_what_the_last_one_made(tmp_path):
    outputs = tmp_path / "Outputs"
    own = write_run(outputs, POINT, "aaaaaaa", "finished", 3)
    study = experiments.Study("s", "", [POINT], {})
    view = experiments.study_view(study, outputs, tmp_path / "view")
    directory = experiments.experiment_directory(POINT, view)
    (directory / "Accuracy_Sparsity.png").write_bytes(b"figure")  # what Plotter writes there
    again = experiments.study_view(study, outputs, tmp_path / "view")
    assert (directory / own.name).resolve() == own.resolve() and not (directory / "Accuracy_Sparsity.png").exists()
    assert own.exists() and runlog.RunFiles.from_config_path(own).log_json.exists()
    (directory / "mine.txt").write_text("kept")  # something a person put into the view
    with pytest.raises(experiments.StudyError, match="did not make"):
        experiments.study_view(study, outputs, again)
    assert (directory / "mine.txt").read_text() == "kept" and own.exists()


def test_the_study_commands_load_neither_tensorflow_nor_ray(tmp_path):
    """`list`, `table` and `plot` read files only (and `run --dry-run` too: test_cli checks it)."""
    study_file = plot_files(tmp_path)
    code = ("import sys; from experiments.__main__ import main\n"
            f"main(['list']); main(['table', {str(study_file)!r}, '--outputpath', {str(tmp_path)!r}])\n"
            "import Plotter\n"
            "sys.exit(sorted({'tensorflow', 'keras', 'jax', 'ray'} & set(sys.modules)) != [])")
    assert subprocess.run([sys.executable, "-c", code], cwd=experiments.REPO_ROOT, capture_output=True,
                          timeout=120).returncode == 0


@pytest.mark.parametrize("fixed, message", [
    ("nettype = 'ResNet'", "nettype 'ResNet' is not one of LeNet"),
    ("activation = 'tanh'", "activation 'tanh' is not one of"),
    ("p1 = 'abc'", "p1 'abc' is not a probability"),
    ("lr = -1.0", "lr -1.0 is not a positive number"),
    ("trainsize = 0", "trainsize 0 is not a positive integer"),
])
def test_a_study_is_checked_whole_before_anything_runs(tmp_path, capsys, fixed, message):
    study_file = tmp_path / "bad.toml"
    study_file.write_text(f"[grid]\nseed = [1, 2]\n[fixed]\n{fixed}\n")
    assert main(["run", str(study_file), "--dry-run", "--outputpath", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and str(study_file) in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_an_output_path_that_is_a_file_is_refused_in_one_line_before_any_point_runs(tmp_path, capsys, monkeypatch,
                                                                                   dry_run):
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: pytest.fail("a point was started"))
    monkeypatch.setattr(interrupts, "raise_on_stop_signals", lambda: None)  # this test process keeps its handlers
    study_file = tmp_path / "s.toml"
    study_file.write_text("[grid]\nseed = [1, 2]\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for outputpath in (a_file, a_file / "below"):
        assert main(["run", str(study_file), "--outputpath", str(outputpath), *dry_run]) == 2
        assert capsys.readouterr() == ("", f"python -m experiments: error: cannot write to output path {outputpath}: "
                                           f"{a_file} is not a folder\n")
    assert a_file.read_text() == "x" and not list(tmp_path.rglob("Claim_*"))


def test_a_linked_folder_below_the_output_path_is_refused_before_any_point_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: pytest.fail("a point was started"))
    monkeypatch.setattr(interrupts, "raise_on_stop_signals", lambda: None)  # this test process keeps its handlers
    study_file = tmp_path / "s.toml"
    study_file.write_text("[grid]\nseed = [1, 2]\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "FreePruning").symlink_to(tmp_path / "elsewhere")
    assert main(["run", str(study_file), "--outputpath", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "passes through a symbolic link" in error
    assert not list((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("argv", [["tabel"], ["run", "lenet", "--bogus"], ["run", "lenet", "--jobs", "two"]])
def test_a_bad_flag_is_one_line_on_stderr_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.count("\n") == 1 and error.startswith("python -m experiments: error: ")


@pytest.mark.parametrize("flag", ["--stale-after", "--ray-cpus", "--ray-gpus"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_stale_time_or_ray_share_that_is_not_finite_is_refused(capsys, flag, value):
    with pytest.raises(SystemExit) as stop:
        main(["run", "lenet", "--dry-run", "--ray", f"{flag}={value}"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"python -m experiments: error: argument {flag}: {value} should be a finite " \
                                      "number\n"


def test_a_finished_run_with_fewer_epochs_is_extended_not_trained_again(tmp_path, monkeypatch):
    shorter = write_run(tmp_path, dict(POINT, maxepochs=2), "ccccccc", "finished", 2)
    write_run(tmp_path, dict(POINT, maxepochs=5), "ddddddd", "finished", 5)  # longer than asked: another run
    assert experiments.find_run(POINT, tmp_path) == ("resume", shorter)
    commands = fake_trainer(tmp_path, monkeypatch)
    experiments.run_study(experiments.Study("s", "", [POINT], {}), tmp_path, say=lambda line: None)
    assert commands == [[sys.executable, str(experiments.REPO_ROOT / "MaskTrainer.py"), "--resume", str(shorter),
                         "--maxepochs", "3"]]


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", ".hidden", "", "runs", "all", "RUNS", "x" * 101])
def test_a_plot_name_must_be_a_plain_folder_name_of_its_own(tmp_path, name):
    path = tmp_path / "named.toml"
    path.write_text(f"[grid]\nseed = [1]\n[[plot]]\nname = {json.dumps(name)}\nseed = [1]\n")
    with pytest.raises(experiments.StudyError, match=r"\[\[plot\]\] name"):
        experiments.load_study(str(path))


def test_two_plot_groups_of_one_name_are_refused(tmp_path):
    path = tmp_path / "twice.toml"
    path.write_text("[grid]\nseed = [1, 2]\n[[plot]]\nname = 'one'\nseed = [1]\n[[plot]]\nname = 'One'\nseed = [2]\n")
    with pytest.raises(experiments.StudyError, match=r"two \[\[plot\]\] entries are named 'One'"):
        experiments.load_study(str(path))


def test_a_study_beyond_the_size_limit_is_refused_before_its_grid_is_expanded(tmp_path, capsys):
    path = tmp_path / "huge.toml"
    values = lambda start, scale: ", ".join(str(start + scale * i) for i in range(1000))  # noqa: E731
    path.write_text(f"[grid]\nseed = [{values(1, 1)}]\nlr = [{values(0.001, 1e-6)}]\nbatchsize = [{values(1, 1)}]\n")
    assert main(["run", str(path), "--dry-run", "--outputpath", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "1,000,000,000 runs" in error and "limit of 100,000" in error
    assert experiments.MAX_STUDY_POINTS == 100_000


def write_weights_and_masks(config: Path) -> None:
    """A run's initial weights and final masks, from which the summary computes its effective size."""
    files = runlog.RunFiles.from_config_path(config)
    rng = np.random.default_rng(0)
    weights = {"dense_1": rng.normal(size=(6, 4)).astype(np.float32),
               "dense_2": rng.normal(size=(4, 3)).astype(np.float32)}
    masks = {name: np.ones_like(kernel) for name, kernel in weights.items()}
    masks["dense_1"][:, 0] = 0  # one unit without input: removed
    runlog.write_npz(files.weights, weights)
    runlog.write_npz(files.masks, masks)


def summary_cells(table: str) -> list[str]:
    """The numbers of a one-row summary table: its cells after the configuration's label."""
    row = table.strip().splitlines()[2]
    return [cell.strip() for cell in row.strip("|").split("|")][-(len(summary.COLUMNS) - 1):]


def test_plots_summary_equals_the_tables_effective_size_included(tmp_path):
    outputs = tmp_path / "Outputs"
    write_weights_and_masks(write_run(outputs, POINT, "aaaaaaa", "finished", 3, activation="relu"))
    study = experiments.Study("s", "", [POINT], {})
    table = experiments.table_study(study, outputs)
    assert experiments.plot_study(study, outputs, tmp_path / "report") == 0
    plotted = (tmp_path / "report" / "s" / "all" / "Summary.md").read_text()
    assert summary_cells(plotted) == summary_cells(table)
    assert summary_cells(table)[-3:-1] == ["3/3", "27 of 36 (75.0%)"]


def test_a_point_takes_its_network_recipe_where_the_study_is_silent():
    """A ResNet point trains in the authors' recipe (the registry's) unless the study says otherwise, and its
    directory says so; a recipe setting the study gives wins."""
    point = {"nettype": "ResNet20", "traintype": "FreePruning", "seed": 1}
    assert experiments.experiment_directory(point, Path("out")).name == "mask_relu_he_LR0.001_steps200_aug"
    assert experiments.point_value(point, "batchsize") == 64 and experiments.point_value(point, "augment") is True
    assert experiments.point_value(dict(point, batchsize=32), "batchsize") == 32
    sgd = dict(point, optimizer="sgd", momentum=0.9, weightdecay=5e-4, lrschedule="cosine", lr=0.1)
    assert experiments.experiment_directory(sgd, Path("out")).name == \
        "mask_relu_he_LR0.1_sgd_M0.9_WD0.0005_cosine200_aug"
    assert experiments.experiment_directory(dict(POINT), Path("out")).name == "flip_relu_heconstant_LR0.001"


@pytest.mark.parametrize("augment", [True, False])
def test_a_point_s_command_line_is_one_that_masktrainer_takes(augment):
    """Every setting a study may give reaches MaskTrainer as it parses it (a switch as --augment / --no-augment)."""
    import MaskTrainer
    point = dict(POINT, augment=augment, optimizer="sgd", momentum=0.9, lrschedule="cosine", weightdecay=1e-4)
    command = experiments.trainer_command(point, Path("out"), "start", None)
    args = MaskTrainer.build_parser().parse_args(command[2:])
    assert MaskTrainer.given_settings(args) == {**point, "outputpath": "out"}
