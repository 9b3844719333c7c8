"""Bad input: one line on stderr, a non-zero exit, no traceback, before any training starts."""
import os
import stat
import subprocess
import sys

import pytest

import datasets
import MaskTrainer
from tests.helpers import REPO_ROOT, trainer_process

BAD_ARGUMENTS = {
    "unknown network": (["--nettype", "ResNet"], "invalid choice: 'ResNet'"),
    "unknown training type": (["--traintype", "Pruning"], "invalid choice: 'Pruning'"),
    "unknown initializer": (["--initializer", "zeros"], "invalid choice: 'zeros'"),
    "unknown activation": (["--activation", "tanh"], "invalid choice: 'tanh'"),
    "unknown mask type": (["--masktype", "dropout"], "invalid choice: 'dropout'"),
    "p1 above 1": (["--p1", "1.5"], "1.5 is not a probability in [0, 1]"),
    "p1 below 0": (["--p1", "-0.1"], "-0.1 is not a probability in [0, 1]"),
    "p1 not a number": (["--p1", "half"], "'half' is not a probability"),
    "lr zero": (["--lr", "0"], "0 is not a positive number"),
    "batchsize zero": (["--batchsize", "0"], "0 is not a positive integer"),
    "maxepochs negative": (["--maxepochs", "-3"], "-3 is not a positive integer"),
    "trainsize not an integer": (["--trainsize", "1e3"], "'1e3' is not a positive integer"),
    "flipping type with pruning mask": (["--traintype", "SignFlipping", "--masktype", "mask"],
                                        "--masktype mask does not fit --traintype SignFlipping"),
    "pruning type with flip mask": (["--traintype", "MinPruning", "--masktype", "flip"],
                                    "--masktype flip does not fit --traintype MinPruning"),
    "missing data directory": (["--datadir", "/nonexistent/data"], "--datadir /nonexistent/data is not a directory"),
    "keep zero": (["--traintype", "EdgePopup", "--keep", "0"], "0 is not a fraction in (0, 1]"),
    "keep above one": (["--traintype", "EdgePopup", "--keep", "1.5"], "1.5 is not a fraction in (0, 1]"),
    "keep negative": (["--traintype", "EdgePopup", "--keep", "-0.5"], "-0.5 is not a fraction in (0, 1]"),
    "keep not a number": (["--traintype", "EdgePopup", "--keep", "most"], "'most' is not a fraction in (0, 1]"),
    "keep infinite": (["--traintype", "EdgePopup", "--keep", "inf"], "inf is not a fraction in (0, 1]"),
    "keep for another type": (["--traintype", "FreePruning", "--keep", "0.5"],
                              "--keep is only for EdgePopup, not --traintype FreePruning"),
    "keep for Supermask": (["--traintype", "Supermask", "--keep", "0.3"],
                           "--keep is only for EdgePopup, not --traintype Supermask"),
    "rival with the paper's mask": (["--traintype", "EdgePopup", "--masktype", "mask"],
                                    "--masktype mask does not fit --traintype EdgePopup"),
    "unknown optimizer": (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    "momentum of one": (["--optimizer", "sgd", "--momentum", "1"], "1 is not a momentum in [0, 1)"),
    "momentum for Adam": (["--momentum", "0.9"], "--momentum is for --optimizer sgd, not adam"),
    "negative weight decay": (["--weightdecay=-1e-4"], "-1e-4 is not a non-negative number"),
    "unknown schedule": (["--lrschedule", "linear"], "invalid choice: 'linear'"),
    "augment with a value": (["--augment=yes"], "ignored explicit argument 'yes'"),
    "batchnorm without BatchNorm": (["--batchnorm", "frozen"], "--batchnorm is for networks with BatchNorm"),
    "ResNet on MNIST": (["--nettype", "ResNet20", "--dataset", "mnist"],
                        "--nettype ResNet20 takes 32x32 images, not the 28x28 of mnist"),
    "ResNet on Fashion-MNIST": (["--nettype", "ResNet20", "--dataset", "fashion_mnist"], "not the 28x28"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_argument_gives_one_line_error(case, capsys, tmp_path):
    argv, message = BAD_ARGUMENTS[case]
    try:
        code = MaskTrainer.main(["--outputpath", str(tmp_path), *argv])
    except SystemExit as exit_:  # argparse rejects the value itself
        code = exit_.code
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1 and error.startswith("MaskTrainer.py: error:") and message in error
    assert not list(tmp_path.rglob("*.json")), "nothing is written for bad input"


def test_unwritable_output_path_gives_one_line_error(tmp_path, capsys, mnist_directory):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    assert MaskTrainer.main(["--outputpath", str(locked / "out"), "--datadir", str(mnist_directory)]) == 2
    assert "cannot write to output path" in capsys.readouterr().err


def test_output_path_that_is_a_file_gives_one_line_error(tmp_path, capsys, mnist_directory):
    (tmp_path / "file").write_text("not a folder")
    code = MaskTrainer.main(["--outputpath", str(tmp_path / "file"), "--datadir", str(mnist_directory)])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "cannot write to output path" in error


def test_missing_dataset_names_the_places_looked_in(tmp_path, capsys, monkeypatch):
    def offline():
        raise OSError("no network")
    monkeypatch.setitem(datasets.DATASETS, "cifar10", datasets.DatasetSpec(
        "cifar10", datasets.load_cifar10_directory, offline))
    code = MaskTrainer.main(["--nettype", "Conv2", "--datadir", str(tmp_path), "--outputpath", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert f"looked in: {tmp_path / 'cifar10'}" in error and "Keras download failed: OSError: no network" in error


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    process = trainer_process("--p1", "2", "--outputpath", str(tmp_path))
    _, error = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "Traceback" not in error and error.strip().endswith("2 is not a probability in [0, 1]")


def test_help_lists_every_choice():
    text = MaskTrainer.build_parser().format_help()
    for choice in ["LeNet", "Conv6", "MinFlipping", "FreeFlipping", "heconstant", "binary", "selu", "mask_rs"]:
        assert choice in text


@pytest.mark.slow
def test_a_normal_run_and_its_export_print_only_the_projects_own_lines(tmp_path, mnist_directory):
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's
    process = subprocess.run([sys.executable, "MaskTrainer.py", "--maxepochs", "1", "--trainsize", "1000", "--seed", "1",
                              "--datadir", str(mnist_directory), "--outputpath", str(tmp_path)],
                             cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)
    output, error = process.stdout, process.stderr
    assert process.returncode == 0 and error == "", error
    assert all(line.startswith(("run ", "epoch ")) for line in output.splitlines())
    config = next(tmp_path.rglob("Config_ID*.json"))
    export = subprocess.run([sys.executable, "Exporter.py", str(config), "--out", str(tmp_path / "lenet.keras")],
                            cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0 and export.stderr == "", export.stderr


LIGHT_COMMANDS = {
    "trainer help": ("MaskTrainer.py", ["--help"]),
    "trainer bad choice": ("MaskTrainer.py", ["--nettype", "ResNet"]),
    "plotter help": ("Plotter.py", ["--help"]),
    "experiments help": ("experiments", ["--help"]),
    "study dry run": ("experiments", ["run", "conv-short", "--dry-run"]),
}


@pytest.mark.parametrize("case", list(LIGHT_COMMANDS))
def test_help_and_checks_load_no_deep_learning_library(case, tmp_path):
    """--help and the checks of choices take a fraction of a second: the registries import no Keras."""
    script, argv = LIGHT_COMMANDS[case]
    run = ("runpy.run_module('experiments', run_name='__main__', alter_sys=True)" if script == "experiments"
           else f"runpy.run_path({script!r}, run_name='__main__')")
    code = (f"import runpy, sys\nsys.argv = [{script!r}, *{argv!r}]\ntry:\n    {run}\nexcept SystemExit:\n    pass\n"
            "print(sorted({name.split('.')[0] for name in sys.modules} & {'keras', 'tensorflow', 'jax'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "MASKTRAINER_DATA": str(tmp_path)})
    assert result.stdout.splitlines()[-1:] == ["[]"], result.stderr
