"""Plot and tabulate the runs of one or more experiment directories (SPEC.md section 8).

Reads only the run files, through `runlog`, so it needs no TensorFlow and starts fast. For each experiment
directory it merges all runs and writes `Accuracy_Sparsity.png/.pdf` (test accuracy above the fraction of
weights pruned or flipped) and `Layer_Remaining.png/.pdf` (the remaining, or unflipped, fraction of each
masked layer). With several directories it also draws them on shared axes in one comparison figure. A
summary table (`experiments.summary`, the one `python -m experiments table` prints) goes to the terminal and to
`Summary.md` and `Summary.csv` beside the comparison figure. A seed trained twice with the same settings counts
once, with the run that has more epochs, and a warning.

    python Plotter.py                                  # the default experiment
    python Plotter.py DIR [DIR ...] [--out PATH] [--show]
    python Plotter.py --all Outputs                    # every experiment directory under Outputs/
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

import runlog
from experiments import summary
from experiments.studies import contained
from settings.commands import EXIT_BAD_INPUT, EXIT_OK, OneLineParser
from settings.config import RunConfig

DEFAULT_EXPERIMENT = RunConfig().experiment_directory()  # the default run's directory
REQUIRED_CONFIG_KEYS = ("traintype", "nettype", "initializer", "p1", "changedMeans")
MASK_COUNTS = slice(0, 3)  # negative, zero and positive masks: together, the layer's size
POSITIVE_MASKS = runlog.LAYER_COUNT_NAMES.index("positiveMasks")
BAND_NOTE = "lines: mean over runs; bands: minimum to maximum over runs"
MERGE_CHECKED_KEYS = ("dataset", "trainsize", "batchsize")  # runs that differ in these are merged with a warning


def warn(message: str) -> None:
    """A one-line warning on stderr; plotting goes on."""
    print(f"Plotter.py: warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Experiment:
    """The runs of one experiment directory, merged over the epochs they all share: arrays are [run, epoch]."""
    directory: Path
    config: dict  # the first run's; runs of one directory differ only in seed
    test_accuracy: np.ndarray
    val_accuracy: np.ndarray
    fraction_changed: np.ndarray
    layer_remaining: np.ndarray  # [run, epoch, layer]: positive masks over the layer's size
    layer_names: list[str]
    runs: tuple[runlog.RecordedRun, ...]  # each with its whole log, for the summary table

    @property
    def run_count(self) -> int:
        return len(self.test_accuracy)

    @property
    def runs_text(self) -> str:
        return f"{self.run_count} run" if self.run_count == 1 else f"{self.run_count} runs"

    @property
    def epochs(self) -> np.ndarray:
        return np.arange(self.test_accuracy.shape[1])

    @property
    def label(self) -> str:
        """The configuration in a few words, for legends and the summary table."""
        config = self.config
        kept = "" if config.get("keep") is None else f" K={config['keep']}"  # EdgePopup's fraction kept
        return f"{config['traintype']}{kept} {config['nettype']} {config['initializer']} p1={config['p1']}"


def run_arrays(run: runlog.RecordedRun) -> dict[str, np.ndarray]:
    """One run's log as float arrays indexed by epoch; RunLogError naming the file that lacks a key or a number."""
    files = run.files
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in run.config]
    if missing:
        raise runlog.RunLogError(f"{files.config}: missing keys {', '.join(missing)}")
    log = run.log
    try:
        counts = np.asarray(log["remainingWeightsPerLayer"], dtype=float)
        if counts.ndim != 3 or counts.shape[2] != len(runlog.LAYER_COUNT_NAMES):
            raise ValueError("'remainingWeightsPerLayer' should hold six counts per layer per epoch")
        return {
            "test_accuracy": np.asarray(log["testAccuracy"], dtype=float),
            "val_accuracy": np.asarray(log["valAccuracy"], dtype=float),
            "fraction_changed": np.asarray(log["changedWeights"], dtype=float) / float(log["totalWeights"]),
            "layer_remaining": counts[:, :, POSITIVE_MASKS] / counts[:, :, MASK_COUNTS].sum(axis=2),
        }
    except (TypeError, ValueError) as error:
        raise runlog.RunLogError(f"{files.log_json}: malformed values ({error})") from None


def shared_epoch_count(directory: Path, runs: list[runlog.RecordedRun]) -> int:
    """How many epochs every run has recorded, with a warning naming the shorter (interrupted or running) runs."""
    lengths = [len(run.log["testAccuracy"]) for run in runs]
    shared, longest = min(lengths), max(lengths)
    if shared < longest:
        shorter = ", ".join(f"{run.run_id} ends at epoch {length - 1}"
                            for run, length in zip(runs, lengths) if length < longest)
        warn(f"{directory}: runs differ in length ({shorter}, the longest at epoch {longest - 1}); "
             f"merged over epochs 0 to {shared - 1}")
    return shared


def load_experiment(directory: Path) -> Experiment:
    """Read every run of `directory` and stack them over the epochs they share."""
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a directory")
    runs, repeated = summary.one_run_per_seed(runlog.read_runs(directory))
    if not runs:
        raise ValueError(f"{directory}: no runs (no Config_ID<id>.json with its TrainLogs_ID<id>.json)")
    if repeated:
        warn(f"{directory}: {repeated}")
    arrays = [run_arrays(run) for run in runs]
    if len({run_data["layer_remaining"].shape[1] for run_data in arrays}) > 1:
        raise ValueError(f"{directory}: runs have different numbers of masked layers")
    differing = [key for key in MERGE_CHECKED_KEYS if len({str(run.config.get(key)) for run in runs}) > 1]
    if differing:
        warn(f"{directory}: runs differ in {', '.join(differing)}; merged anyway")
    shared = shared_epoch_count(directory, runs)
    merged = {key: np.stack([run_data[key][:shared] for run_data in arrays]) for key in arrays[0]}
    layers = merged["layer_remaining"].shape[2]
    names = runs[0].log.get("layerNames") or [f"layer {index + 1}" for index in range(layers)]
    return Experiment(directory, runs[0].config, layer_names=list(names), runs=tuple(runs), **merged)


def experiment_directories(root: Path) -> list[Path]:
    """Every directory under `root` that holds at least one run log of its own, in sorted order: a log that is a
    link (a study view's `runs/` links its study's runs) is that of a run found where it lives."""
    found = sorted({path.parent for path in root.rglob("TrainLogs_ID*.json") if not path.is_symlink()})
    if not found:
        raise ValueError(f"{root}: no experiment directories (no TrainLogs_ID*.json) found")
    return found


def distinct(directories: list[Path]) -> list[Path]:
    """Each directory once, in the order given, however it was spelled (`D`, `./D`, its absolute path)."""
    first = {}
    for directory in directories:
        first.setdefault(directory.resolve(), directory)
    return list(first.values())


def legend_labels(experiments: list[Experiment]) -> list[str]:
    """Each experiment's configuration label, with its directory name added where two labels would coincide."""
    labels = [experiment.label for experiment in experiments]
    if len(set(labels)) < len(labels):
        labels = [f"{label}, {experiment.directory.name}" for label, experiment in zip(labels, experiments)]
    return labels


def changed_word(experiments: list[Experiment]) -> str:
    """What "changed" means on the lower axis: pruned, flipped, or both when pruning and flipping are compared
    (or a signed supermask, which does both)."""
    present = {kind for experiment in experiments for kind in experiment.config["changedMeans"].split(" and ")}
    kinds = [kind for kind in ("pruned", "flipped") if kind in present]
    if len(kinds) == 1:
        return kinds[0]
    if kinds:
        return f"changed ({' or '.join(kinds)})"
    return "changed"


def mean_min_max(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch, the mean, minimum and maximum over runs (axis 0)."""
    return values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def trained_epochs(experiment: Experiment) -> slice:
    """Epochs 1 on, leaving out the untrained network (at chance level), unless only epoch 0 was recorded."""
    return slice(1 if len(experiment.epochs) > 1 else 0, None)


def draw_band(axes: Axes, epochs: np.ndarray, values: np.ndarray, label: str | None = None) -> None:
    """The mean over runs as a line, the range from minimum to maximum over runs as a shaded band around it."""
    mean, low, high = mean_min_max(values)
    (line,) = axes.plot(epochs, mean, label=label, marker="." if len(epochs) < 30 else None)
    axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.25, linewidth=0)


def finish_axes(axes: Axes, ylabel: str) -> None:
    """The y label, a light grid and whole-number epoch ticks that every panel shares."""
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def accuracy_figure(experiments: list[Experiment], labels: list[str], title: str) -> Figure:
    """Test accuracy per epoch above the fraction of weights changed per epoch, one line and band per experiment."""
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 7), height_ratios=(3, 2))
    for experiment, label in zip(experiments, labels):
        trained = trained_epochs(experiment)  # the untrained network's accuracy would squash the axis
        draw_band(top, experiment.epochs[trained], experiment.test_accuracy[:, trained],
                  f"{label} ({experiment.runs_text})")
        draw_band(bottom, experiment.epochs, experiment.fraction_changed)
    finish_axes(top, "test accuracy (from epoch 1)")
    finish_axes(bottom, f"fraction of weights\n{changed_word(experiments)}")
    bottom.set_xlabel("epoch (0 = the untrained network)")
    top.set_title(f"{title}\n{BAND_NOTE}", fontsize=10)
    top.legend(fontsize=8)
    figure.tight_layout()
    return figure


LINES_UP_TO = 12  # masked layers drawn as one line each; a deeper network (the ResNets: 22 to 58) as a heat map


def layer_figure(experiment: Experiment, label: str) -> Figure:
    """The remaining (pruning) or unflipped (flipping) fraction of each masked layer per epoch: a line and band per
    layer, or for more than LINES_UP_TO layers, which no legend keeps apart, the mean as a heat map with one named
    row per layer."""
    kept = {"flipped": "signs unflipped", "pruned and flipped": "weights kept as drawn"}.get(
        experiment.config["changedMeans"], "weights remaining")
    names = experiment.layer_names
    if len(names) <= LINES_UP_TO:
        figure, axes = plt.subplots(figsize=(8, 5))
        for layer, name in enumerate(names):
            draw_band(axes, experiment.epochs, experiment.layer_remaining[:, :, layer], name)
        finish_axes(axes, f"fraction of {kept} (positive masks)")
        axes.set_title(f"{label}: {experiment.runs_text}\n{BAND_NOTE}", fontsize=10)
        axes.legend(title="masked layer", fontsize=8)
    else:
        figure, axes = plt.subplots(figsize=(8, 1.5 + 0.15 * len(names)))
        epochs = experiment.epochs
        image = axes.imshow(experiment.layer_remaining.mean(axis=0).T, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                            interpolation="nearest", extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(names) - 0.5, -0.5))
        axes.set_yticks(range(len(names)), names, fontsize=6)
        axes.set_ylabel("masked layer (input at the top)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.colorbar(image, ax=axes, label=f"fraction of {kept} (positive masks)")
        axes.set_title(f"{label}: {experiment.runs_text}\nmean over runs", fontsize=10)
    axes.set_xlabel("epoch (0 = the untrained network)")
    figure.tight_layout()
    return figure


def figure_files(stem: Path) -> list[Path]:
    """`stem`.png and `stem`.pdf, or ValueError where either is a link: a figure never writes through a link to a
    file elsewhere (`runlog.inside`, the check Summary.md and Summary.csv pass)."""
    files = [stem.parent / f"{stem.name}{suffix}" for suffix in summary.FIGURE_SUFFIXES]
    for file in files:
        if runlog.inside(file.parent, file.name) is None:
            raise ValueError(f"{file}: a link or not a usable file name; nothing written, remove it or choose "
                             "another place")
    return files


def check_outputs(stems: list[Path], summary_directory: Path) -> None:
    """Every figure and summary file the plot will write, checked before the first is written, so a link among
    them stops the plot with nothing overwritten (ValueError)."""
    for stem in stems:
        figure_files(stem)
    for name in summary.SUMMARY_FILES:
        contained(summary_directory, name)


def save(figure: Figure, stem: Path, show: bool) -> None:
    """Write `stem`.png and `stem`.pdf, each atomically and never through a link; close the figure unless it is to
    be shown in a window."""
    for path in figure_files(stem):
        runlog.write_atomically(path, lambda file: figure.savefig(file, format=path.suffix[1:], dpi=150))
    if not show:
        plt.close(figure)


def summary_row(experiment: Experiment, label: str) -> summary.Row:
    """One line of the summary table: every run with its own last epoch."""
    return summary.summarise(label, list(experiment.runs), str(experiment.directory))


def write_summary(rows: list[summary.Row], directory: Path) -> None:
    """Print the summary table and write it as `Summary.md` and `Summary.csv` (full precision) in `directory`."""
    print(summary.write(rows, directory))


def plot_experiments(directories: list[Path], comparison: Path, show: bool) -> None:
    """Read every directory first (so bad input stops before anything is written), then draw and tabulate."""
    experiments = [load_experiment(directory) for directory in directories]
    labels = legend_labels(experiments)
    rows = [summary_row(experiment, label) for experiment, label in zip(experiments, labels)]  # reads Weights, Masks
    check_outputs([experiment.directory / name for experiment in experiments for name in summary.EXPERIMENT_FIGURES]
                  + ([comparison] if len(experiments) > 1 else []), comparison.parent)
    for experiment, label in zip(experiments, labels):
        title = "/".join(experiment.directory.resolve().parts[-4:])
        accuracy_stem, layer_stem = (experiment.directory / name for name in summary.EXPERIMENT_FIGURES)
        save(accuracy_figure([experiment], [label], title), accuracy_stem, show)
        save(layer_figure(experiment, label), layer_stem, show)
    comparison.parent.mkdir(parents=True, exist_ok=True)
    if len(experiments) > 1:
        save(accuracy_figure(experiments, labels, f"Comparison of {len(experiments)} experiments"), comparison, show)
    write_summary(rows, comparison.parent)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="Plotter.py", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="*", type=Path, metavar="DIR",
                        help=f"experiment directories (default: {DEFAULT_EXPERIMENT})")
    parser.add_argument("--all", type=Path, metavar="ROOT", help="also every experiment directory under ROOT")
    parser.add_argument("--out", type=Path, metavar="PATH",
                        help="comparison figure, written as PATH.png and PATH.pdf, with Summary.md and Summary.csv "
                             "beside it (default: ROOT/Comparison with --all, else Outputs/Comparison)")
    parser.add_argument("--show", action="store_true", help="also open the figures in windows")
    args = parser.parse_args(argv)
    if not args.show:
        matplotlib.use("Agg")
    comparison = args.out or Path(args.all or "Outputs") / "Comparison"
    if comparison.suffix in (".png", ".pdf"):
        comparison = comparison.with_suffix("")
    try:
        directories = distinct(args.directories + (experiment_directories(args.all) if args.all else []))
        plot_experiments(directories or [DEFAULT_EXPERIMENT], comparison, args.show)
    except (ValueError, OSError) as error:
        print(f"Plotter.py: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.show:
        plt.show()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
