"""A run's life beyond one clean pass: resuming checks its files, extends a finished run, stops for callbacks,
fails honestly, and never loses Ctrl-C."""
import json
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import MaskTrainer
import runlog
from masks.callbacks import kept_fractions
from tests.helpers import REPO_ROOT, comparable_log, new_run, only_run, trainer_process
from training import checkpoint

SLICE = ["--trainsize", "1000"]


def train(output, data, *flags) -> int:
    return MaskTrainer.main(["--outputpath", str(output), "--datadir", str(data), *SLICE, *flags])


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("MaskTrainer.py: error:") and "Traceback" not in error
    return error


@pytest.fixture
def finished_run(tmp_path, mnist_directory) -> runlog.RunFiles:
    assert train(tmp_path / "out", mnist_directory, "--maxepochs", "1", "--seed", "7") == 0
    return only_run(tmp_path / "out")


def unfinished(files: runlog.RunFiles) -> None:
    """Mark a finished run as interrupted after epoch 1 (what a kill leaves), from its own saved model."""
    config = json.loads(files.config.read_text())
    config["status"] = "running"
    runlog.write_json(files.config, config)
    saved = keras.saving.load_model(files.model)
    checkpoint.save(files.checkpoint, saved, saved.optimizer, 1, owner=(files.run_id, config_digest(files)))
    files.model.unlink()


def config_digest(files: runlog.RunFiles) -> str:
    from settings.config import RunConfig
    return RunConfig.from_dict(json.loads(files.config.read_text()), "test", complete=True).digest()


@pytest.mark.parametrize("key, value, message", [
    ("lr", None, "missing setting 'lr'"),
    ("trainsize", -5, "trainsize -5 is not a positive integer"),
    ("activation", "tanh", "activation 'tanh' is not one of"),
    ("p1", 2.0, "p1 2.0 is not a probability"),
    ("precision", "fp8", "precision 'fp8' is not one of"),
    ("lr", "abc", "lr 'abc' is not a positive number"),
    ("batchsize", True, "batchsize True is not a positive integer"),
    ("seed", 0, "records no seed"),
    ("backend", "theano", "resume it with that backend"),
    ("modelEpoch", -1, "modelEpoch should be the epoch of the run's model"),
    ("modelEpoch", "1", "modelEpoch should be the epoch of the run's model"),
])
def test_resume_checks_every_value_of_the_configuration(finished_run, capsys, key, value, message):
    config = json.loads(finished_run.config.read_text())
    config["status"] = "running"
    if value is None:
        del config[key]
    else:
        config[key] = value
    finished_run.config.write_text(json.dumps(config))
    log_before = finished_run.log_json.read_text()
    assert MaskTrainer.main(["--resume", str(finished_run.config)]) == 2
    error = one_line_error(capsys)
    assert str(finished_run.config) in error and message in error
    assert finished_run.log_json.read_text() == log_before


def test_resume_of_an_empty_path_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert MaskTrainer.main(["--resume", ""]) == 2
    assert "--resume needs the path" in one_line_error(capsys)
    assert not any(tmp_path.iterdir()), "no default run may start"


def test_a_huge_number_in_a_configuration_is_refused_not_a_crash(finished_run, capsys):
    finished_run.config.write_text(finished_run.config.read_text().replace('"lr": 0.001', '"lr": 1' + '0' * 400))
    assert MaskTrainer.main(["--resume", str(finished_run.config), "--maxepochs", "2"]) == 2
    assert "lr 1000" in one_line_error(capsys)


def test_an_internal_value_error_while_building_is_not_called_bad_input(finished_run, capsys, monkeypatch):
    import networks

    def broken(*args, **kwargs):
        raise ValueError("a bug in a network")
    monkeypatch.setattr(networks, "build", broken)
    config = json.loads(finished_run.config.read_text())
    assert MaskTrainer.main(["--outputpath", str(finished_run.directory.parent), "--datadir", config["datadir"],
                             *SLICE, "--maxepochs", "1"]) == 1
    error = capsys.readouterr().err
    assert "Traceback" in error and "ValueError: a bug in a network" in error


def test_resume_refuses_settings_other_than_maxepochs(finished_run, capsys):
    assert MaskTrainer.main(["--resume", str(finished_run.config), "--lr", "0.1"]) == 2
    assert "not --lr" in one_line_error(capsys)


def test_a_checkpoint_from_another_run_is_refused(tmp_path, mnist_directory, capsys):
    for seed in ("7", "8"):
        assert train(tmp_path / seed, mnist_directory, "--maxepochs", "1", "--seed", seed) == 0
    mine, foreign = only_run(tmp_path / "8"), only_run(tmp_path / "7")
    unfinished(mine)
    unfinished(foreign)
    shutil.copy(foreign.checkpoint, mine.checkpoint)
    log_before = mine.log_json.read_text()
    capsys.readouterr()
    assert MaskTrainer.main(["--resume", str(mine.config), "--maxepochs", "2"]) == 2
    error = one_line_error(capsys)
    assert str(mine.checkpoint) in error and "belongs to another run" in error
    assert mine.log_json.read_text() == log_before and json.loads(mine.config.read_text())["status"] == "running"


def test_an_interrupted_run_resumes_from_its_checkpoint(finished_run, tmp_path, mnist_directory):
    unfinished(finished_run)
    assert MaskTrainer.main(["--resume", str(finished_run.config), "--maxepochs", "2"]) == 0
    assert train(tmp_path / "straight", mnist_directory, "--maxepochs", "2", "--seed", "7") == 0
    assert comparable_log(finished_run.log_json) == comparable_log(only_run(tmp_path / "straight").log_json)


@pytest.mark.slow
def test_a_finished_run_extended_equals_a_straight_run(tmp_path, mnist_directory, capsys):
    assert train(tmp_path / "extended", mnist_directory, "--maxepochs", "2", "--seed", "9",
                 "--traintype", "MinPruning") == 0
    files = only_run(tmp_path / "extended")
    assert MaskTrainer.main(["--resume", str(files.config)]) == 0
    assert "already finished" in capsys.readouterr().out
    first_epochs, weights_written = runlog.read_log(files.log_json)["epochSeconds"], files.weights.stat().st_mtime_ns
    assert MaskTrainer.main(["--resume", str(files.config), "--maxepochs", "1"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert MaskTrainer.main(["--resume", str(files.config), "--maxepochs", "4"]) == 0
    assert runlog.read_log(files.log_json)["epochSeconds"][:3] == first_epochs, "epochs 1-2 are not trained again"
    assert files.weights.stat().st_mtime_ns == weights_written
    assert train(tmp_path / "straight", mnist_directory, "--maxepochs", "4", "--seed", "9",
                 "--traintype", "MinPruning") == 0
    straight = only_run(tmp_path / "straight")
    assert comparable_log(files.log_json) == comparable_log(straight.log_json)
    masks, expected = runlog.read_npz(files.masks), runlog.read_npz(straight.masks)
    assert all(np.array_equal(masks[key], expected[key]) for key in expected)
    assert json.loads(files.config.read_text())["maxepochs"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("written_by", ["this version", "a version before modelEpoch"])
def test_an_extension_killed_before_its_first_checkpoint_continues_from_the_finished_model(
        tmp_path, mnist_directory, monkeypatch, written_by):
    assert train(tmp_path / "extended", mnist_directory, "--maxepochs", "1", "--seed", "9") == 0
    files = only_run(tmp_path / "extended")
    finished_log = runlog.read_log(files.log_json)
    if written_by != "this version":  # its record says neither which epoch its model holds nor its log's digest
        record = json.loads(files.config.read_text())
        del record["modelEpoch"], record["digests"]["log"], record["digests"]["settings"]
        runlog.write_json(files.config, record)

    def killed(*args, **kwargs):  # after the first new epoch's log was written, before its checkpoint
        raise KeyboardInterrupt
    with monkeypatch.context() as patched:
        patched.setattr(checkpoint, "save", killed)
        assert MaskTrainer.main(["--resume", str(files.config), "--maxepochs", "3"]) == 130
    assert json.loads(files.config.read_text())["status"] == "running" and not files.checkpoint.exists()
    assert len(runlog.read_log(files.log_json)["testAccuracy"]) == 3  # epoch 2 logged, its model not saved

    assert MaskTrainer.main(["--resume", str(files.config)]) == 0
    log = runlog.read_log(files.log_json)
    assert log["epochSeconds"][:2] == finished_log["epochSeconds"], "the finished epochs are not trained again"
    assert train(tmp_path / "straight", mnist_directory, "--maxepochs", "3", "--seed", "9") == 0
    straight = only_run(tmp_path / "straight")
    assert comparable_log(files.log_json) == comparable_log(straight.log_json)
    masks, expected = runlog.read_npz(files.masks), runlog.read_npz(straight.masks)
    assert all(np.array_equal(masks[key], expected[key]) for key in expected)


def test_a_run_is_never_written_through_a_linked_folder_below_the_output_path(tmp_path, mnist_directory, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "FreePruning").symlink_to(victim)
    assert train(tmp_path / "out", mnist_directory, "--maxepochs", "1", "--seed", "3") == 2
    assert "passes through a symbolic link or a file" in one_line_error(capsys)
    assert not list(victim.iterdir())


def test_a_resume_is_never_written_through_a_linked_folder_however_its_path_is_spelled(
        tmp_path, mnist_directory, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train("out", mnist_directory, "--maxepochs", "1", "--seed", "3") == 0  # a relative --outputpath
    shutil.move(tmp_path / "out" / "FreePruning", tmp_path / "victim")
    (tmp_path / "out" / "FreePruning").symlink_to(tmp_path / "victim")
    (config,) = (tmp_path / "victim").rglob("Config_ID*.json")
    before = {path: path.stat().st_mtime_ns for path in (tmp_path / "victim").rglob("*")}
    capsys.readouterr()
    linked_config = tmp_path / "out" / "FreePruning" / config.relative_to(tmp_path / "victim")
    assert MaskTrainer.main(["--resume", str(linked_config), "--maxepochs", "2"]) == 2  # spelled absolute
    assert "passes through a symbolic link or a file" in one_line_error(capsys)
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "victim").rglob("*")} == before


def test_a_run_that_another_process_trains_is_not_resumed_beside_it(tmp_path, mnist_directory, capsys):
    import fcntl
    assert train(tmp_path / "out", mnist_directory, "--maxepochs", "1", "--seed", "3") == 0
    files = only_run(tmp_path / "out")
    before = {path.name: path.stat().st_mtime_ns for path in files.directory.iterdir()}
    with open(files.weights, "rb") as other_trainer:  # as a trainer resuming it holds it
        fcntl.flock(other_trainer, fcntl.LOCK_EX | fcntl.LOCK_NB)
        capsys.readouterr()
        assert MaskTrainer.main(["--resume", str(files.config), "--maxepochs", "2"]) == 2
        assert f"run {files.run_id} is being trained by another process" in one_line_error(capsys)
        assert {path.name: path.stat().st_mtime_ns for path in files.directory.iterdir()} == before
    assert MaskTrainer.main(["--resume", str(files.config), "--maxepochs", "2"]) == 0  # let go: it resumes
    assert MaskTrainer.main(["--resume", str(files.config)]) == 0  # and this process let go of it in turn


def test_tensorboard_summaries_are_never_written_through_a_link(tmp_path, mnist_directory, capsys):
    assert train(tmp_path / "out", mnist_directory, "--maxepochs", "1", "--seed", "3") == 0
    files = only_run(tmp_path / "out")
    victim = tmp_path / "victim"
    victim.mkdir()
    (files.directory / f"TensorBoard_ID{files.run_id}").symlink_to(victim)
    capsys.readouterr()
    assert MaskTrainer.main(["--resume", str(files.config), "--maxepochs", "2", "--tensorboard"]) == 2
    assert "summaries would be written through" in one_line_error(capsys)
    assert not list(victim.iterdir())


def test_early_stopping_ends_the_run_as_finished_with_the_reason(tmp_path, mnist_directory):
    stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", min_delta=1.0, patience=1)
    run = new_run(tmp_path, mnist_directory, *SLICE, "--maxepochs", "5", "--seed", "3", callbacks=[stopper])
    run.train()
    config, log = json.loads(run.files.config.read_text()), runlog.read_log(run.files.log_json)
    assert config["status"] == "finished" and "stopped early" in config["stopReason"]
    assert len(log["testAccuracy"]) == 3 and stopper.stopped_epoch == 2


@pytest.mark.parametrize("traintype", ["FreePruning", "SignedSupermask"])
def test_callbacks_see_the_kept_fractions_of_the_masks_as_evaluated(tmp_path, mnist_directory, traintype):
    class KeptFractions(keras.callbacks.Callback):
        """Each epoch's logged kept fractions beside those the masks give, counted op by op."""
        def __init__(self):
            super().__init__()
            self.pairs = []

        def on_epoch_end(self, epoch, logs=None):
            logged = {key: value for key, value in logs.items() if key.startswith("kept_fraction")}
            self.pairs.append((logged, kept_fractions(self.model)))
    recorder = KeptFractions()
    new_run(tmp_path, mnist_directory, *SLICE, "--maxepochs", "2", "--seed", "3", "--traintype", traintype,
            callbacks=[recorder]).train()
    assert len(recorder.pairs) == 2
    for logged, counted in recorder.pairs:
        assert logged == counted and set(logged) == {"kept_fraction", "kept_fraction/dense_1",
                                                     "kept_fraction/dense_2", "kept_fraction/dense_3"}
    assert recorder.pairs[-1][0]["kept_fraction"] < 1  # masks that prune something, so the values are tested


def test_keras_tensorboard_callback_writes_event_files(tmp_path, mnist_directory):
    pytest.importorskip("tensorflow")
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "board"))
    new_run(tmp_path, mnist_directory, *SLICE, "--maxepochs", "1", "--seed", "3", callbacks=[board]).train()
    assert list((tmp_path / "board").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("traintype", ["FreePruning", "SignedSupermask"])
def test_tensorboard_flag_writes_connectivity_summaries(tmp_path, mnist_directory, traintype):
    tf = pytest.importorskip("tensorflow")
    assert train(tmp_path, mnist_directory, "--maxepochs", "2", "--seed", "3", "--tensorboard",
                 "--traintype", traintype) == 0
    (events,) = only_run(tmp_path).directory.rglob("events.out.tfevents.*")
    tags = {value.tag for event in tf.compat.v1.train.summary_iterator(str(events)) for value in event.summary.value}
    assert {"epoch/val_accuracy", "epoch/test_loss", "epoch/changed_fraction", "kept_fraction/dense_1",
            "kept_fraction", "scores/dense_3"} <= tags


def test_an_unexpected_error_shows_its_traceback_and_marks_the_run_failed(tmp_path, mnist_directory, capsys,
                                                                           monkeypatch):
    from training import run as run_module
    calls = []
    real = run_module.statistics.mask_statistics

    def broken(*args):
        calls.append(1)
        if len(calls) > 1:
            raise TypeError("an internal bug")
        return real(*args)
    monkeypatch.setattr(run_module.statistics, "mask_statistics", broken)
    assert train(tmp_path, mnist_directory, "--maxepochs", "2", "--seed", "3") == 1
    error = capsys.readouterr().err
    assert "Traceback" in error and "TypeError: an internal bug" in error
    config = json.loads(only_run(tmp_path).config.read_text())
    assert config["status"] == "failed" and config["stopReason"] == "TypeError: an internal bug"


def test_a_logged_value_that_is_not_finite_stops_the_run(tmp_path, mnist_directory, capsys, monkeypatch):
    from training import backends
    steps_class = backends.current().Steps
    real = steps_class.evaluate
    monkeypatch.setattr(steps_class, "evaluate", lambda self, x, y: (
        (float("nan"), real(self, x, y)[1]) if len(y) == 5000 and self.model.optimizer.iterations > 0
        else real(self, x, y)))
    assert train(tmp_path, mnist_directory, "--maxepochs", "2", "--seed", "3") == 3
    assert "valLoss became nan at epoch 1" in capsys.readouterr().err
    files = only_run(tmp_path)
    log = runlog.read_log(files.log_json)  # standard JSON: no NaN was written
    assert len(log["testAccuracy"]) == 1 and json.loads(files.config.read_text())["status"] == "failed"


def test_damaged_data_leaves_no_run_files(tmp_path, capsys):
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    source = REPO_ROOT.parent / "shared" / "data" / "mnist"
    for path in source.glob("*.gz"):
        shutil.copy(path, tmp_path / "data" / "mnist" / path.name)
    labels = tmp_path / "data" / "mnist" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:100])
    assert MaskTrainer.main(["--datadir", str(tmp_path / "data"), "--outputpath", str(tmp_path / "out")]) == 2
    assert str(labels) in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_network_added_to_the_registry_trains_through_the_cli_with_defaults(tmp_path, mnist_directory,
                                                                              monkeypatch):
    import networks

    def tiny(x, layers, num_classes):
        return layers.classifier(num_classes)(layers.flatten()(x))
    monkeypatch.setitem(networks.NETWORKS, "Tiny", networks.NetworkSpec(tiny, "mnist", convolutional=False))
    assert train(tmp_path, mnist_directory, "--nettype", "Tiny", "--maxepochs", "1") == 0
    log = runlog.read_log(only_run(tmp_path).log_json)
    assert log["totalWeights"] == 784 * 10 and len(log["testAccuracy"]) == 2 and log["changedWeights"][-1] > 0


def test_a_default_changed_in_run_config_is_seen_everywhere(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO_ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "Outputs", "__pycache__", ".data"))
    config = copy / "settings" / "config.py"
    config.write_text(config.read_text().replace('setting(1e-3, "learning rate', 'setting(0.003, "learning rate'))
    check = ("import MaskTrainer, Plotter, experiments\n"
             "args = MaskTrainer.build_parser().parse_args([])\n"
             "assert MaskTrainer.resolve_run(args)[0].lr == 0.003\n"
             "assert 'LR0.003' in str(Plotter.DEFAULT_EXPERIMENT)\n"
             "assert experiments.point_value({}, 'lr') == 0.003\n")
    result = subprocess.run([sys.executable, "-c", check], cwd=copy, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def wait_for_line(process, prefix: str) -> None:
    for line in process.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"no line starting {prefix!r}")


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["loading 0.3 s", "loading 2 s", "epoch 0", "epoch 1", "epoch 1 + 0.3 s"])
def test_ctrl_c_always_stops_the_run_cleanly(tmp_path, mnist_directory, moment):
    process = trainer_process("--datadir", str(mnist_directory), "--outputpath", str(tmp_path), "--trainsize",
                              "20000", "--maxepochs", "6", "--seed", "4")
    if moment.startswith("loading"):
        time.sleep(float(moment.split()[1]))
    else:
        wait_for_line(process, f"epoch {int(moment.split()[1]):3d}/6")
        if "+" in moment:
            time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    output, error = process.communicate(timeout=120)
    assert process.returncode == 130, (output, error)
    assert "Traceback" not in error and "interrupted" in error
    configs = list(tmp_path.rglob("Config_ID*.json"))
    if configs:
        assert json.loads(configs[0].read_text())["status"] == "running"
        assert "epoch   6/6" not in output


def test_a_trainsize_beyond_the_training_split_is_bad_input_and_writes_nothing(tmp_path, mnist_directory, capsys):
    assert MaskTrainer.main(["--outputpath", str(tmp_path / "out"), "--datadir", str(mnist_directory),
                             "--trainsize", "100000", "--maxepochs", "1"]) == 2
    assert "--trainsize 100000 is more than the 55,000 images" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_binary_inputs_that_float16_cannot_hold_are_refused_before_anything_is_written(tmp_path, mnist_directory,
                                                                                        capsys):
    try:
        assert MaskTrainer.main(["--outputpath", str(tmp_path / "out"), "--datadir", str(mnist_directory),
                                 "--nettype", "Conv4", "--dataset", "mnist", "--initializer", "binary",
                                 "--precision", "mixed_float16", "--trainsize", "200", "--maxepochs", "1"]) == 2
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert "mixed_float16 cannot hold the inputs of Conv4" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("nettype, shape, policy", [("LeNet", (28, 28, 1), "mixed_float16"),
                                                    ("Conv4", (32, 32, 3), "mixed_bfloat16")])
def test_binary_networks_allowed_in_mixed_precision_give_outputs_that_vary(nettype, shape, policy):
    import networks
    from settings.config import RunConfig
    from training.run import check_precision
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = networks.build(nettype, shape, initializer="binary", seed=1)
        check_precision(RunConfig(nettype=nettype, initializer="binary", precision=policy), model)
        outputs = np.asarray(model(np.random.default_rng(0).normal(size=(8, *shape)).astype("float32")), "float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(outputs).all() and np.ptp(outputs, axis=0).max() > 1e-3


def test_a_full_disk_names_the_model_file_that_could_not_be_written(tmp_path, mnist_directory, capsys, monkeypatch):
    import errno

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(keras.Model, "save", full)
    assert train(tmp_path, mnist_directory, "--trainsize", "200", "--maxepochs", "1", "--seed", "3") == 1
    files = only_run(tmp_path)
    error = capsys.readouterr().err
    assert f"cannot write {files.model}: No space left on device" in error and f"--resume {files.config}" in error
    assert not [path for path in tmp_path.rglob("*") if ".tmp" in path.name]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_run_as_ctrl_c_does(tmp_path, mnist_directory, stop):
    def default_stop_signals():  # a test runner started under nohup would pass SIGHUP on ignored
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
    process = trainer_process("--datadir", str(mnist_directory), "--outputpath", str(tmp_path), "--trainsize", "200",
                              "--maxepochs", "60", "--seed", "4", env={"PYTHONUNBUFFERED": "1"},
                              preexec_fn=default_stop_signals)
    wait_for_line(process, "epoch   1/60")
    process.send_signal(stop)
    output, error = process.communicate(timeout=120)
    files = only_run(tmp_path)
    assert process.returncode == 128 + stop, (output, error)
    assert f"stopped by {stop.name}; continue with --resume {files.config}" in error and "Traceback" not in error
    assert json.loads(files.config.read_text())["status"] == "running" and "epoch  60/60" not in output
    assert not [path for path in tmp_path.rglob("*") if ".tmp" in path.name]
