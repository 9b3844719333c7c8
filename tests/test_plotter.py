"""Plotter.py on small synthetic run files written through runlog (no training needed)."""
import csv
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

import Plotter
import runlog

PLOTTER = Path(Plotter.__file__)
LAYER_SIZES = (20, 10)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF-"


def write_run(directory: Path, run_id: str, test_accuracy: list[float], val_accuracy: list[float] | None = None,
              traintype: str = "FreePruning", changed_means: str = "pruned", p1: float = 0.5,
              seed: int | None = None) -> runlog.RunFiles:
    """A run whose two layers (20 and 10 connections) each lose 2 connections per epoch."""
    epochs = len(test_accuracy)
    per_layer = [[[0, 2 * epoch, size - 2 * epoch, 0, 0, 0] for size in LAYER_SIZES] for epoch in range(epochs)]
    remaining = [sum(layer[2] for layer in layers) for layers in per_layer]
    total = sum(LAYER_SIZES)
    log = {"trainLoss": [1.0] * epochs, "valLoss": [1.0] * epochs, "testLoss": [1.0] * epochs,
           "trainAccuracy": test_accuracy, "valAccuracy": val_accuracy or test_accuracy,
           "testAccuracy": test_accuracy, "remainingWeights": remaining,
           "changedWeights": [total - count for count in remaining], "epochSeconds": [0.0] + [1.0] * (epochs - 1),
           "totalWeights": total, "remainingWeightsPerLayer": per_layer, "layerNames": ["dense_1", "dense_2"],
           "status": "finished"}
    config = {"nettype": "LeNet", "traintype": traintype, "initializer": "he", "activation": "relu",
              "masktype": "mask", "p1": p1, "lr": 0.001, "dataset": "mnist", "batchsize": 25, "trainsize": 100,
              "runId": run_id, "changedMeans": changed_means, **({"seed": seed} if seed is not None else {})}
    files = runlog.RunFiles(directory, run_id)
    runlog.write_json(files.config, config)
    runlog.write_log(files, log)
    return files


def three_runs(directory: Path) -> Path:
    write_run(directory, "aaaaaaa", [0.1, 0.5, 0.7, 0.8], val_accuracy=[0.1, 0.6, 0.5, 0.55])
    write_run(directory, "bbbbbbb", [0.1, 0.6, 0.8, 0.9])
    write_run(directory, "ccccccc", [0.1, 0.4, 0.6, 0.7], val_accuracy=[0.1, 0.4, 0.6, 0.6])
    return directory


@pytest.fixture
def saved_stems(monkeypatch) -> list[Path]:
    """Record which figures Plotter would save, without writing them: writing PNG and PDF is the slow part."""
    stems = []

    def record(figure, stem: Path, show: bool) -> None:
        stems.append(stem)
        plt.close(figure)
    monkeypatch.setattr(Plotter, "save", record)
    return stems


def read_summary(directory: Path) -> list[dict]:
    with open(directory / "Summary.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_runs_are_merged_into_mean_min_and_max_per_epoch(tmp_path):
    experiment = Plotter.load_experiment(three_runs(tmp_path))
    mean, low, high = Plotter.mean_min_max(experiment.test_accuracy)
    assert experiment.run_count == 3
    np.testing.assert_allclose(mean, [0.1, 0.5, 0.7, 0.8])
    np.testing.assert_allclose(low, [0.1, 0.4, 0.6, 0.7])
    np.testing.assert_allclose(high, [0.1, 0.6, 0.8, 0.9])


def test_fractions_changed_and_per_layer_remaining_come_from_the_counts(tmp_path):
    experiment = Plotter.load_experiment(three_runs(tmp_path))
    assert experiment.layer_names == ["dense_1", "dense_2"]
    np.testing.assert_allclose(experiment.layer_remaining[0, :, 0], [1.0, 0.9, 0.8, 0.7])
    np.testing.assert_allclose(experiment.layer_remaining[0, :, 1], [1.0, 0.8, 0.6, 0.4])
    np.testing.assert_allclose(experiment.fraction_changed[0], [0, 4 / 30, 8 / 30, 12 / 30])


def test_runs_of_different_length_are_merged_over_shared_epochs(tmp_path, capsys):
    write_run(tmp_path, "aaaaaaa", [0.1, 0.5, 0.7, 0.8])
    write_run(tmp_path, "bbbbbbb", [0.1, 0.7])
    experiment = Plotter.load_experiment(tmp_path)
    np.testing.assert_allclose(experiment.test_accuracy, [[0.1, 0.5], [0.1, 0.7]])
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and warning.startswith("Plotter.py: warning: ")
    assert "bbbbbbb ends at epoch 1, the longest at epoch 3" in warning


def test_summary_gives_final_accuracy_statistics_accuracy_at_best_validation_and_fraction_changed(
        tmp_path, capsys, saved_stems):
    three_runs(tmp_path / "experiment")
    assert Plotter.main([str(tmp_path / "experiment"), "--out", str(tmp_path / "report" / "Comparison")]) == 0
    [row] = read_summary(tmp_path / "report")
    final = np.array([0.8, 0.9, 0.7])
    assert row["configuration"] == "FreePruning LeNet he p1=0.5"
    assert (row["runs"], row["epochs"]) == ("3", "3")
    np.testing.assert_allclose([float(row[key]) for key in ("final test accuracy mean", "std", "min", "max")],
                               [final.mean(), final.std(), 0.7, 0.9])
    # best validation epochs: 1 (first of the maxima 0.6), 3, and 2 (first of two 0.6s)
    np.testing.assert_allclose(float(row["test accuracy at best validation"]), np.mean([0.5, 0.9, 0.6]))
    np.testing.assert_allclose(float(row["fraction changed"]), 12 / 30)
    np.testing.assert_allclose(float(row["seconds per epoch"]), 1.0)
    markdown = (tmp_path / "report" / "Summary.md").read_text()
    assert f"| {tmp_path / 'experiment'} | FreePruning LeNet he p1=0.5 | 3 | 3 | 80.00% [70.00%, 90.00%] | " \
           "66.67% [50.00%, 90.00%] | 40.00% pruned | - | - | 1.0 |" in markdown  # no masks: no effective size
    assert markdown in capsys.readouterr().out


def test_plotter_and_the_table_command_share_one_summary():
    from experiments import summary
    assert Plotter.summary is summary and not hasattr(Plotter, "markdown_table")


def test_a_seed_trained_twice_counts_once_with_its_longer_run_and_a_warning(tmp_path, capsys):
    write_run(tmp_path, "aaaaaaa", [0.1, 0.5, 0.7], seed=1)
    write_run(tmp_path, "bbbbbbb", [0.1, 0.6, 0.8, 0.9], seed=1)  # the same run again, one epoch further
    write_run(tmp_path, "ccccccc", [0.1, 0.4, 0.6, 0.7], seed=2)
    experiment = Plotter.load_experiment(tmp_path)
    assert [run.run_id for run in experiment.runs] == ["bbbbbbb", "ccccccc"]
    np.testing.assert_allclose(experiment.test_accuracy[:, -1], [0.9, 0.7])
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and warning.startswith(f"Plotter.py: warning: {tmp_path}: ")
    assert "seed 1: bbbbbbb counted, aaaaaaa left out" in warning


def test_figures_are_written_as_png_and_pdf_with_a_comparison_for_two_directories(tmp_path):
    first = three_runs(tmp_path / "FreePruning")
    second = tmp_path / "SignFlipping"
    write_run(second, "ddddddd", [0.1, 0.3, 0.5, 0.6], traintype="SignFlipping", changed_means="flipped")
    assert Plotter.main([str(first), str(second), "--out", str(tmp_path / "Comparison.png")]) == 0
    for stem in (first / "Accuracy_Sparsity", first / "Layer_Remaining", second / "Accuracy_Sparsity",
                 second / "Layer_Remaining", tmp_path / "Comparison"):
        assert stem.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
        assert stem.with_suffix(".pdf").read_bytes().startswith(PDF_MAGIC)
    assert [row["configuration"] for row in read_summary(tmp_path)] == ["FreePruning LeNet he p1=0.5",
                                                                         "SignFlipping LeNet he p1=0.5"]


def test_no_argument_plots_the_default_experiment(tmp_path, monkeypatch, saved_stems):
    monkeypatch.chdir(tmp_path)
    three_runs(Plotter.DEFAULT_EXPERIMENT)
    assert Plotter.main([]) == 0
    assert saved_stems == [Plotter.DEFAULT_EXPERIMENT / name for name in ("Accuracy_Sparsity", "Layer_Remaining")]
    assert len(read_summary(Path("Outputs"))) == 1


def test_a_directory_given_twice_or_also_found_by_all_is_plotted_once(tmp_path, saved_stems, monkeypatch):
    directory = tmp_path / "FreePruning" / "LeNet"
    write_run(directory, "aaaaaaa", [0.1, 0.5])
    monkeypatch.chdir(tmp_path)
    assert Plotter.main([str(directory), "FreePruning/LeNet/", "--all", str(tmp_path)]) == 0
    assert [row["directory"] for row in read_summary(tmp_path)] == [str(directory)]
    assert len(saved_stems) == 2  # its two figures, and no comparison of it with itself


def test_all_plots_every_experiment_directory_under_the_root(tmp_path, saved_stems):
    directories = [tmp_path / "FreePruning" / "LeNet", tmp_path / "MinPruning" / "LeNet"]
    for directory in directories:
        write_run(directory, "aaaaaaa", [0.1, 0.5], traintype=directory.parent.name)
    (tmp_path / "empty").mkdir()
    view = tmp_path / "studies" / "a-study" / "runs" / "FreePruning"  # as `experiments plot` links them
    view.mkdir(parents=True)
    for path in directories[0].iterdir():
        (view / path.name).symlink_to(path)
    assert Plotter.main(["--all", str(tmp_path)]) == 0
    assert [row["directory"] for row in read_summary(tmp_path)] == [str(path) for path in directories]
    assert saved_stems[-1] == tmp_path / "Comparison" and len(saved_stems) == 5


def test_coinciding_labels_are_told_apart_by_directory_name(tmp_path):
    write_run(tmp_path / "mask_relu_he_LR0.001", "aaaaaaa", [0.1, 0.5])
    write_run(tmp_path / "mask_relu_he_LR0.01", "bbbbbbb", [0.1, 0.6])
    experiments = [Plotter.load_experiment(path) for path in sorted(tmp_path.iterdir())]
    assert Plotter.legend_labels(experiments) == ["FreePruning LeNet he p1=0.5, mask_relu_he_LR0.001",
                                                  "FreePruning LeNet he p1=0.5, mask_relu_he_LR0.01"]


@pytest.mark.parametrize("means, word", [(["pruned"], "pruned"), (["flipped", "none"], "flipped"),
                                         (["none"], "changed"), (["flipped", "pruned"], "changed (pruned or flipped)")])
def test_lower_axis_says_pruned_flipped_or_changed(tmp_path, means, word):
    for kind in means:
        write_run(tmp_path / kind, "aaaaaaa", [0.1, 0.5], changed_means=kind)
    assert Plotter.changed_word([Plotter.load_experiment(tmp_path / kind) for kind in means]) == word


DAMAGES = {
    "corrupt JSON": lambda text: text.replace(":", "=", 1),
    "truncated JSON": lambda text: text[: len(text) // 2],
    "missing keys": lambda text: text.replace('"testLoss"', '"renamedKey"'),
}


def assert_plotter_fails_naming(directory: Path, named: Path) -> None:
    """Run Plotter.py on `directory` as a user would: exit 2 and one line on stderr naming `named`."""
    result = subprocess.run([sys.executable, str(PLOTTER), str(directory), "--out", str(directory / "Comparison")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"Plotter.py: error: {named}")
    assert "Traceback" not in result.stderr and not (directory / "Summary.md").exists()


def test_a_directory_without_runs_gives_a_one_line_error_naming_it(tmp_path):
    assert_plotter_fails_naming(tmp_path, named=tmp_path)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_log_gives_a_one_line_error_naming_it(tmp_path, damage):
    files = write_run(tmp_path, "aaaaaaa", [0.1, 0.5, 0.7])
    files.log_json.write_text(DAMAGES[damage](files.log_json.read_text()))
    assert_plotter_fails_naming(tmp_path, named=files.log_json)


@pytest.mark.parametrize("key, value", [("testAccuracy", ["high", 0.5, 0.7]), ("totalWeights", [30])])
def test_malformed_values_give_a_one_line_error_naming_the_file(tmp_path, capsys, key, value):
    files = write_run(tmp_path, "aaaaaaa", [0.1, 0.5, 0.7])
    runlog.write_json(files.log_json, {**runlog.read_json(files.log_json), key: value})
    assert Plotter.main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{files.log_json}: malformed values" in error


def test_a_configuration_without_its_keys_gives_an_error_naming_it(tmp_path, capsys):
    files = write_run(tmp_path, "aaaaaaa", [0.1, 0.5])
    files.config.write_text('{"nettype": "LeNet"}')
    assert Plotter.main([str(tmp_path)]) == 2
    assert f"{files.config}: missing keys traintype, initializer, p1, changedMeans" in capsys.readouterr().err


@pytest.mark.parametrize("linked", ["first/Accuracy_Sparsity.png", "second/Layer_Remaining.pdf",
                                    "report/Comparison.pdf", "report/Summary.csv"])
def test_a_file_to_be_written_that_is_a_link_stops_the_plot_before_anything_is_written(tmp_path, capsys, linked):
    write_run(tmp_path / "first", "aaaaaaa", [0.1, 0.5])
    write_run(tmp_path / "second", "bbbbbbb", [0.1, 0.6])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "report").mkdir()
    (tmp_path / linked).symlink_to(victim)
    before = sorted(tmp_path.rglob("*"))
    assert Plotter.main([str(tmp_path / "first"), str(tmp_path / "second"),
                         "--out", str(tmp_path / "report" / "Comparison")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"Plotter.py: error: {tmp_path / linked}: ")
    assert victim.read_text() == "precious" and (tmp_path / linked).is_symlink()
    assert sorted(tmp_path.rglob("*")) == before  # no figure, no summary


def test_a_figure_is_written_beside_a_link_never_through_it(tmp_path):
    figure = plt.figure()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "Figure.png").symlink_to(victim)
    with pytest.raises(ValueError, match="Figure.png: a link"):
        Plotter.save(figure, tmp_path / "Figure", show=False)
    assert victim.read_text() == "precious"


def test_a_bad_flag_is_one_line_on_stderr_and_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        Plotter.main(["--bogus"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "Plotter.py: error: unrecognized arguments: --bogus\n"


def test_plotter_starts_without_tensorflow():
    code = "import sys, Plotter; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=PLOTTER.parent, timeout=60).returncode == 0


@pytest.mark.slow
def test_real_runs_of_two_training_types_are_plotted_and_summarised(tmp_path, mnist_directory):
    from tests.helpers import new_run
    for traintype, seed in (("FreePruning", "1"), ("FreePruning", "2"), ("MinFlipping", "1")):
        new_run(tmp_path / "Outputs", mnist_directory, "--traintype", traintype, "--seed", seed,
                "--trainsize", "500", "--maxepochs", "2").train()
    directories = sorted(path.parent for path in (tmp_path / "Outputs").rglob("TrainLogs_ID*.json"))
    assert Plotter.main(["--all", str(tmp_path / "Outputs")]) == 0
    for directory in set(directories):
        assert (directory / "Accuracy_Sparsity.png").read_bytes().startswith(b"\x89PNG")
        assert (directory / "Accuracy_Sparsity.pdf").read_bytes().startswith(b"%PDF")
    summary = (tmp_path / "Outputs" / "Summary.csv").read_text()
    assert "FreePruning" in summary and "MinFlipping" in summary
    rows = {row["configuration"]: row for row in read_summary(tmp_path / "Outputs")}
    # after two short epochs every unit still has inputs and outputs: the compact network is the whole one
    for row in rows.values():
        assert row["units alive"] == "300/100/10"
        assert int(float(row["parameters"])) == 266_200 >= float(row["effective parameters"]) > 0
