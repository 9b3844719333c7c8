"""The study runner: study files expand to the right grids, and finished runs are skipped, interrupted ones resumed."""
import subprocess
import sys
from pathlib import Path

import pytest

import experiments
import runlog
from experiments.__main__ import main

GRID_SIZES = {"lenet": 30, "lenet-p1": 24, "conv-short": 4, "conv": 30}
POINT = {"nettype": "LeNet", "traintype": "FreeFlipping", "initializer": "heconstant", "seed": 2,
         "dataset": "mnist", "maxepochs": 3, "batchsize": 25, "lr": 0.001}


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
])
def test_malformed_study_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(experiments.StudyError, match=message.replace("[", r"\[")):
        experiments.load_study(str(path))


def test_plot_groups_keep_the_named_grid_values():
    study = experiments.load_study("lenet")
    assert set(study.plots) == {"he", "heconstant"}
    assert study.plots["he"] == {"initializer": ["he"]}


def write_run(outputpath: Path, point: dict, run_id: str, status: str | None, epochs: int | None, **changes) -> Path:
    """A synthetic run: its Config_ID file (as MaskTrainer records it) and, for `epochs`, a log of that length."""
    directory = experiments.experiment_directory(point, outputpath)
    files = runlog.RunFiles(directory, run_id)
    config = {**experiments.resolved(point), "p1": 0.5, "trainsize": None, "precision": "float32",
              "status": status, "changedMeans": "flipped", **changes}
    runlog.write_json(files.config, config)
    if epochs is not None:
        log = {key: [0.1] * (epochs + 1) for key in runlog.EPOCH_KEYS}
        runlog.write_log(files, dict(log, totalWeights=10, remainingWeightsPerLayer=[[[0, 0, 10] * 2]] * (epochs + 1)))
    return files.config


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


def test_runner_skips_resumes_and_starts_the_right_commands(tmp_path, monkeypatch):
    points = [dict(POINT, seed=seed) for seed in (1, 2, 3)]
    write_run(tmp_path, points[0], "aaaaaaa", "finished", 3)
    interrupted = write_run(tmp_path, points[1], "bbbbbbb", "running", 1)
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command: commands.append(command) or subprocess.CompletedProcess(
        command, 0))
    lines = []
    study = experiments.Study("synthetic", "", points, {})
    assert experiments.run_study(study, tmp_path, say=lines.append) == 0
    assert lines[0] == "study synthetic: 3 runs: 1 finished, 0 failed, 1 resume, 1 new"
    assert commands[0] == [sys.executable, str(experiments.REPO_ROOT / "MaskTrainer.py"), "--resume", str(interrupted)]
    assert commands[1][2:] == ["--nettype", "LeNet", "--traintype", "FreeFlipping", "--initializer", "heconstant",
                               "--seed", "3", "--dataset", "mnist", "--maxepochs", "3", "--batchsize", "25",
                               "--lr", "0.001", "--outputpath", str(tmp_path)]
    assert len(commands) == 2 and "left" in lines[-2]


def test_dry_run_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda command: pytest.fail("dry run started a process"))
    lines = []
    experiments.run_study(experiments.Study("s", "", [POINT], {}), tmp_path, dry_run=True, say=lines.append)
    assert lines[1].startswith("[1/1] new:") and "--resume" not in lines[2]


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
    linked = sorted(path.name for path in view.rglob("*.json"))
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
