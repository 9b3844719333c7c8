"""Provenance on every load (issue 25): a resume, an extension and an export check each file they rest on against
the digests the run recorded and the draw from its seed, and refuse a mismatch in one line, writing nothing."""
import gzip
import json
import shutil

import keras
import numpy as np
import pytest

import Exporter
import MaskTrainer
import runlog
from tests.helpers import new_run, only_run
from training import checkpoint, provenance
from training.run import Run

TINY = ["--trainsize", "200", "--seed", "7"]


class StopAfterEpoch(keras.callbacks.Callback):
    """What Ctrl-C after an epoch leaves: that epoch's log and checkpoint, the run still `running`."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def stop_after_epoch_1(run: Run) -> runlog.RunFiles:
    with pytest.raises(KeyboardInterrupt):
        run.train()
    assert run.files.checkpoint.exists()
    return run.files


@pytest.fixture
def interrupted(tmp_path, mnist_directory) -> runlog.RunFiles:
    """A LeNet run stopped after epoch 1 of 2, with its checkpoint."""
    return stop_after_epoch_1(new_run(tmp_path / "out", mnist_directory, *TINY, "--maxepochs", "2",
                                      callbacks=[StopAfterEpoch()]))


@pytest.fixture
def finished(tmp_path, mnist_directory) -> runlog.RunFiles:
    assert MaskTrainer.main(["--outputpath", str(tmp_path / "out"), "--datadir", str(mnist_directory), *TINY,
                             "--maxepochs", "1"]) == 0
    return only_run(tmp_path / "out")


def snapshot(files: runlog.RunFiles) -> dict:
    """Every file of the run directory: bytes and modification time."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in files.directory.iterdir()}


def refused(capsys, files: runlog.RunFiles, *flags: str) -> str:
    """Resume the run; it must be refused with status 2 and one line, leaving every file as it was."""
    before = snapshot(files)
    capsys.readouterr()
    assert MaskTrainer.main(["--resume", str(files.config), *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("MaskTrainer.py: error: ") and "Traceback" not in error, error
    assert snapshot(files) == before, "a refused resume wrote a file"
    return error


def edit_npz(path, key: str, change) -> None:
    """Change one array of an .npz file, keeping the others (a checkpoint keeps its recorded digests)."""
    arrays = runlog.read_npz(path)
    arrays[key] = change(arrays[key].copy())
    runlog.write_npz(path, arrays)


def other_seeds_run(tmp_path, mnist_directory) -> runlog.RunFiles:
    assert MaskTrainer.main(["--outputpath", str(tmp_path / "other"), "--datadir", str(mnist_directory),
                             "--trainsize", "200", "--seed", "8", "--maxepochs", "1"]) == 0
    return only_run(tmp_path / "other")


def without_digests(files: runlog.RunFiles) -> None:
    """Make the run look written before digests were (an old run: nor did it record its score initializer)."""
    config = json.loads(files.config.read_text())
    del config[provenance.RECORD_KEY], config["scoreInitializer"]
    runlog.write_json(files.config, config)


@pytest.mark.parametrize("kind", ["interrupted", "finished"])
def test_a_log_from_another_run_is_refused_on_resuming(kind, request, tmp_path, mnist_directory, capsys):
    files = request.getfixturevalue(kind)
    other = other_seeds_run(tmp_path, mnist_directory)
    shutil.copy(other.log_json, files.log_json)  # the same settings but another seed: its own epochs
    error = refused(capsys, files, *(["--maxepochs", "2"] if kind == "finished" else []))
    assert str(files.log_json) in error and f"differ from those run {files.run_id} logged" in error


@pytest.mark.parametrize("key, value", [("lr", 0.05), ("traintype", "MinPruning")])
def test_a_finished_run_whose_settings_were_edited_is_not_extended(finished, capsys, key, value):
    config = json.loads(finished.config.read_text())
    config[key] = value  # in range: only the recorded settings digest tells
    runlog.write_json(finished.config, config)
    error = refused(capsys, finished, "--maxepochs", "2")
    assert str(finished.config) in error and f"are not those run {finished.run_id} finished with" in error


@pytest.mark.parametrize("name", ["weights", "masks"])
def test_summaries_refuse_a_weights_or_masks_file_other_than_the_run_wrote(finished, name):
    from experiments import summary
    (run,) = runlog.read_runs(finished.directory)
    assert summary.effective_size(run).parameters == 266_200
    edit_npz(getattr(finished, name), "dense_3", lambda array: -array)
    with pytest.raises(runlog.RunLogError, match=f"dense_3 differs from the file run {finished.run_id} wrote"):
        summary.effective_size(run)


def test_exporter_and_the_tables_refuse_a_finished_run_whose_log_was_edited(finished, tmp_path, capsys):
    import Exporter
    from experiments import summary
    log = json.loads(finished.log_json.read_text())
    log["testAccuracy"][-1] = 0.99
    finished.log_json.write_text(json.dumps(log))
    assert Exporter.main([str(finished.config), "--out", str(tmp_path / "x.keras")]) == 2
    assert f"differ from those run {finished.run_id} logged" in capsys.readouterr().err
    assert not (tmp_path / "x.keras").exists()
    (run,) = runlog.read_runs(finished.directory)
    with pytest.raises(runlog.RunLogError, match=f"differ from those run {finished.run_id} logged"):
        summary.effective_size(run)


def test_plotter_refuses_an_edited_masks_file_before_it_draws_anything(finished, tmp_path, capsys):
    import Plotter
    edit_npz(finished.masks, "dense_3", lambda array: -array)
    assert Plotter.main([str(finished.directory), "--out", str(tmp_path / "plots" / "Comparison")]) == 2
    assert "dense_3 differs from the file run" in capsys.readouterr().err
    assert not list(finished.directory.glob("*.png")) and not (tmp_path / "plots").exists()


def test_a_model_from_another_seed_is_refused_on_extension(finished, tmp_path, mnist_directory, capsys):
    shutil.copy(other_seeds_run(tmp_path, mnist_directory).model, finished.model)
    error = refused(capsys, finished, "--maxepochs", "2")
    assert str(finished.model) in error and "not the model the run saved" in error


@pytest.mark.parametrize("kind", ["interrupted", "finished"])
def test_a_record_whose_digests_were_deleted_is_refused_not_taken_for_an_old_run(kind, request, capsys):
    files = request.getfixturevalue(kind)
    config = json.loads(files.config.read_text())
    del config[provenance.RECORD_KEY]
    runlog.write_json(files.config, config)
    error = refused(capsys, files, *(["--maxepochs", "2"] if kind == "finished" else []))
    assert str(files.config) in error and "records no 'digests', which the version that wrote it" in error


def test_an_old_run_without_digests_still_refuses_another_seeds_model(finished, tmp_path, mnist_directory, capsys):
    shutil.copy(other_seeds_run(tmp_path, mnist_directory).model, finished.model)
    without_digests(finished)
    error = refused(capsys, finished, "--maxepochs", "2")
    assert str(finished.model) in error and "weights of dense_1 are not those drawn from the run's seed" in error


def test_an_edited_checkpoint_is_refused(interrupted, capsys):
    edit_npz(interrupted.checkpoint, "model/dense_2/scores", lambda scores: scores * 2)
    error = refused(capsys, interrupted)
    assert str(interrupted.checkpoint) in error and "model/dense_2/scores differs" in error


def test_a_checkpoint_with_other_frozen_weights_is_refused_even_for_an_old_run(interrupted, capsys):
    arrays = runlog.read_npz(interrupted.checkpoint)
    del arrays[checkpoint.DIGESTS_KEY]
    arrays["model/dense_1/kernel"] = arrays["model/dense_1/kernel"][::-1].copy()
    runlog.write_npz(interrupted.checkpoint, arrays)
    error = refused(capsys, interrupted)
    assert str(interrupted.checkpoint) in error and "carries no digests" in error
    without_digests(interrupted)
    error = refused(capsys, interrupted)
    assert str(interrupted.checkpoint) in error and "weights of dense_1 are not those drawn" in error


def test_a_zeroed_weights_file_is_refused(interrupted, capsys):
    edit_npz(interrupted.weights, "dense_1", np.zeros_like)
    error = refused(capsys, interrupted)
    assert str(interrupted.weights) in error and "dense_1 differs from the file run" in error
    without_digests(interrupted)
    error = refused(capsys, interrupted)
    assert str(interrupted.weights) in error and "weights of dense_1 are not those drawn" in error


def test_an_edited_preprocessing_file_is_refused(interrupted, capsys):
    edit_npz(interrupted.preprocessing, "mean_image", lambda mean: mean + np.float32(1e-3))
    error = refused(capsys, interrupted)
    assert str(interrupted.preprocessing) in error and "mean_image differs from the file run" in error
    without_digests(interrupted)
    error = refused(capsys, interrupted)
    assert str(interrupted.preprocessing) in error and "mean_image differs from the statistics of the data" in error


def test_different_data_under_resume_is_refused(tmp_path, mnist_directory, capsys, monkeypatch):
    monkeypatch.setenv("MASKTRAINER_DATA", str(mnist_directory))  # no --datadir: the run records none
    args = MaskTrainer.build_parser().parse_args(["--outputpath", str(tmp_path / "out"), *TINY, "--maxepochs", "2"])
    files = stop_after_epoch_1(Run(*MaskTrainer.resolve_run(args), callbacks=[StopAfterEpoch()],
                                   print_line=lambda line: None))
    changed = tmp_path / "data" / "mnist"
    shutil.copytree(mnist_directory / "mnist", changed)
    images = changed / "train-images-idx3-ubyte.gz"
    data = bytearray(gzip.decompress(images.read_bytes()))
    data[16 + 784 * 5010 + 400] ^= 0xFF  # one pixel of one image that the run trained on
    images.write_bytes(gzip.compress(bytes(data), compresslevel=1))
    monkeypatch.setenv("MASKTRAINER_DATA", str(tmp_path / "data"))
    error = refused(capsys, files)
    assert str(changed) in error and "trainImages differs from the data run" in error


def test_an_old_run_without_digests_resumes_with_a_warning(interrupted, capsys):
    without_digests(interrupted)
    assert MaskTrainer.main(["--resume", str(interrupted.config)]) == 0
    assert "records no digests" in capsys.readouterr().err
    config = json.loads(interrupted.config.read_text())
    assert config["status"] == "finished"
    assert set(config[provenance.RECORD_KEY]) == {"masks", "model", "log", "settings"}
    assert MaskTrainer.main(["--resume", str(interrupted.config), "--maxepochs", "3"]) == 0  # its model checked


def halve_one_connection(files: runlog.RunFiles) -> None:
    """Scale one kept connection of dense_3 by 0.5: the signs, so the log's counts, still hold."""
    masks = runlog.read_npz(files.masks)
    masks["dense_3"].flat[np.flatnonzero(masks["dense_3"])[0]] = 0.5
    runlog.write_npz(files.masks, masks)


def test_exporter_refuses_a_file_changed_after_the_run(finished, tmp_path, capsys):
    halve_one_connection(finished)
    finished.model.unlink()  # read from Weights * Masks
    capsys.readouterr()
    assert Exporter.main([str(finished.config), "--out", str(tmp_path / "x.keras")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(finished.masks) in error and "dense_3 differs" in error
    assert not (tmp_path / "x.keras").exists()


def test_array_digests_tell_dtype_shape_and_values_apart():
    values = np.arange(6, dtype=np.float32)
    digests = {provenance.array_digest(array) for array in (
        values, values.reshape(2, 3), values.astype(np.float64), values + 1, values.reshape(2, 3).T)}
    assert len(digests) == 5
    assert provenance.array_digest(values.reshape(2, 3).T) == provenance.array_digest(values.reshape(2, 3).T.copy())
