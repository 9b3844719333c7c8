"""A run's files end to end on a real MNIST slice: contents, determinism, NaN stop, kill -9 and resume."""
import csv
import json
import signal

import keras
import numpy as np
import pytest

import MaskTrainer
import runlog
from tests.helpers import comparable_log, new_run, only_run, small_resnet_jit, trainer_process, write_cifar_batches

SLICE = ["--trainsize", "3000"]


def test_short_run_learns_and_writes_every_file(tmp_path, mnist_directory):
    run = new_run(tmp_path, mnist_directory, *SLICE, "--maxepochs", "1", "--seed", "5")
    run.train()
    files = run.files
    assert files.directory == tmp_path / "FreePruning/LeNet/P1_0.5/mask_relu_he_LR0.001"
    assert len(files.run_id) == 7 and int(files.run_id, 16) >= 0
    log = runlog.read_log(files.log_json)
    assert log["testAccuracy"][0] < 0.2 and log["testAccuracy"][1] > 0.75  # chance is 0.1
    assert len(log["testAccuracy"]) == 2 and log["totalWeights"] == 266_200
    assert log["epochSeconds"][0] == 0 and log["epochSeconds"][1] > 0
    assert log["remainingWeights"][0] == 266_200 and log["changedWeights"][0] == 0
    assert log["remainingWeights"][1] + log["changedWeights"][1] == 266_200
    first_layer = log["remainingWeightsPerLayer"][1][0]
    assert len(log["remainingWeightsPerLayer"][1]) == 3 and sum(first_layer[:3]) == 784 * 300
    config = json.loads(files.config.read_text())
    assert config["status"] == "finished" and config["seed"] == 5 and config["dataset"] == "mnist"
    assert config["datasetSizes"] == {"train": 3000, "validation": 5000, "test": 10000}
    assert set(config["versions"]) >= {"keras", "numpy", keras.backend.backend()}
    rows = list(csv.DictReader(files.log_csv.open()))
    assert len(rows) == 2 and float(rows[1]["testAccuracy"]) == log["testAccuracy"][1]
    weights, masks = runlog.read_npz(files.weights), runlog.read_npz(files.masks)
    assert list(weights) == list(masks) == ["dense_1", "dense_2", "dense_3"]
    assert weights["dense_1"].shape == masks["dense_1"].shape == (784, 300)
    assert not files.checkpoint.exists(), "the checkpoint is removed when the run finishes"
    assert files.model.exists() and config["backend"] == keras.backend.backend()
    preprocessing = runlog.read_npz(files.preprocessing)
    assert preprocessing["mean_image"].shape == (28, 28, 1) and preprocessing["input_scale"] == 1


def test_same_seed_gives_identical_runs(tmp_path, mnist_directory):
    for name in ("a", "b"):
        new_run(tmp_path / name, mnist_directory, *SLICE, "--maxepochs", "2", "--seed", "17",
                "--traintype", "MinFlipping").train()
    a, b = only_run(tmp_path / "a"), only_run(tmp_path / "b")
    assert comparable_log(a.log_json) == comparable_log(b.log_json)
    masks_a, masks_b = runlog.read_npz(a.masks), runlog.read_npz(b.masks)
    assert all(np.array_equal(masks_a[key], masks_b[key]) for key in masks_a)


def test_seed_zero_draws_a_seed_and_records_it(tmp_path, mnist_directory):
    args = MaskTrainer.build_parser().parse_args(["--seed", "0", "--datadir", str(mnist_directory)])
    settings, record, _ = MaskTrainer.resolve_run(args)
    assert record["requestedSeed"] == 0 and record["seed"] == settings.seed > 0


def test_nan_loss_stops_the_run_and_says_why(tmp_path, mnist_directory, capsys):
    code = MaskTrainer.main(["--traintype", "Baseline", "--lr", "1e30", *SLICE, "--maxepochs", "3",
                             "--outputpath", str(tmp_path), "--datadir", str(mnist_directory)])
    files = only_run(tmp_path)
    config, log = json.loads(files.config.read_text()), json.loads(files.log_json.read_text())
    assert code == 3 and "loss became nan during epoch 1" in capsys.readouterr().err
    assert config["status"] == log["status"] == "failed" and "nan" in config["stopReason"]
    assert len(log["testAccuracy"]) == 1  # epoch 0 only; no record with NaN in it


KILLED_RUNS = {  # case -> (flags, epochs; killed after half of them)
    "MinPruning": (["--traintype", "MinPruning"], 4),
    "Supermask": (["--traintype", "Supermask"], 4),  # its draw counter is state too
    # the rate of each epoch, SGD's momentum, weight decay, the epoch's augmentation and BatchNorm's moving statistics
    # must all continue exactly (200 CIFAR-layout images: 4 steps of 64 an epoch; `steps` lowers the second's rate)
    "ResNet20 recipe": (["--nettype", "ResNet20", "--optimizer", "sgd", "--momentum", "0.9", "--weightdecay", "0.0001",
                         "--lrschedule", "steps", "--augment", "--lr", "0.01"], 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(KILLED_RUNS))
def test_killed_run_keeps_its_epochs_and_resumes_to_the_uninterrupted_result(tmp_path, mnist_directory, capsys, case):
    case_flags, epochs = KILLED_RUNS[case]
    data, data_flags = mnist_directory, SLICE
    if case.startswith("ResNet20"):
        data, data_flags = tmp_path / "cifar", small_resnet_jit()
        write_cifar_batches(data, train=5200, test=50)
    flags = [*data_flags, "--maxepochs", str(epochs), "--seed", "3", *case_flags, "--datadir", str(data)]
    reference = trainer_process(*flags, "--outputpath", str(tmp_path / "reference"))
    killed = trainer_process(*flags, "--outputpath", str(tmp_path / "killed"))
    for line in killed.stdout:  # the line is printed after the epoch's log and checkpoint are written
        if line.startswith(f"epoch {epochs // 2:3d}/{epochs}"):
            killed.send_signal(signal.SIGKILL)
            break
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    files = only_run(tmp_path / "killed")
    assert len(runlog.read_log(files.log_json)["testAccuracy"]) == epochs // 2 + 1  # epochs 0 to the kill
    assert files.checkpoint.exists() and not files.masks.exists()

    # Resumed in this process: the killed one left only its files, so this sees what a new process's `--resume`
    # would, without a third process's start-up
    capsys.readouterr()
    assert MaskTrainer.main(["--resume", str(files.config)]) == 0
    output = capsys.readouterr().out
    assert f"epoch {epochs // 2 + 1:3d}/{epochs}" in output
    assert f"epoch   1/{epochs}" not in output  # nothing trained again
    reference.communicate(timeout=300)
    expected = only_run(tmp_path / "reference")
    assert comparable_log(files.log_json) == comparable_log(expected.log_json)
    masks, expected_masks = runlog.read_npz(files.masks), runlog.read_npz(expected.masks)
    assert all(np.array_equal(masks[key], expected_masks[key]) for key in masks)

    assert MaskTrainer.main(["--resume", str(files.config)]) == 0 and "already finished" in capsys.readouterr().out


@pytest.mark.slow
def test_conv_network_trains_on_cifar_layout_data(tmp_path):
    write_cifar_batches(tmp_path / "data", train=5100, test=50)  # 5,000 validation, 100 to train on
    code = MaskTrainer.main(["--nettype", "Conv2", "--traintype", "SignFlipping", "--maxepochs", "1",
                             "--datadir", str(tmp_path / "data"),
                             "--outputpath", str(tmp_path / "out"), "--seed", "2"])
    log = runlog.read_log(only_run(tmp_path / "out").log_json)
    assert code == 0 and log["totalWeights"] == 4_300_992 and len(log["testAccuracy"]) == 2
