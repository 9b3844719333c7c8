"""The one summary of runs that Plotter.py and `python -m experiments table` both print.

Per configuration: how many runs (one per seed: where a seed was trained twice with the same settings, the run
with more epochs counts and a warning says so), the final test accuracy over runs, the test accuracy at the epoch
of best validation accuracy (early stopping), the fraction of weights pruned or flipped, and training seconds
per epoch; and the effective size: units alive per layer and the parameters of the compact network (those that
can affect the output, `export.compaction`), for the runs that finished. Each run counts with its own last epoch.
Only NumPy and `runlog`: no TensorFlow, no trainer.
"""
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import networks
import runlog
from experiments.studies import contained
from export import compaction
from settings.config import MATCHED_SETTINGS as MATCHED_KEYS, default  # with DIRECTORY_KEYS: a run's identity
from settings.identity import DIRECTORY_SETTINGS as DIRECTORY_KEYS
from training import provenance
# The figures Plotter.py writes into each experiment directory it plots (as .png and .pdf).
EXPERIMENT_FIGURES = ("Accuracy_Sparsity", "Layer_Remaining")
FIGURE_SUFFIXES = (".png", ".pdf")
COMPARISON = "Comparison"  # the comparison figure's stem in each plot group's folder of `python -m experiments plot`
SUMMARY_FILES = ("Summary.md", "Summary.csv")

COLUMNS = ("configuration", "runs", "epochs", "final test acc. mean [min, max]",
           "test acc. at best val. mean [min, max]", "changed", "units alive", "effective params", "s / epoch")
CSV_COLUMNS = ("directory", "configuration", "runs", "epochs", "final test accuracy mean", "std", "min", "max",
               "test accuracy at best validation", "test accuracy at best validation min",
               "test accuracy at best validation max", "fraction changed", "units alive", "effective parameters",
               "parameters", "seconds per epoch")


def run_identity(config: dict) -> tuple | None:
    """What makes two recorded runs the same run (settings and seed); None for a run with no recorded seed. A
    setting added since an older run was recorded counts at its default."""
    if config.get("seed") is None:
        return None
    return tuple(str(config.get(key, default(key))) for key in DIRECTORY_KEYS + MATCHED_KEYS)


def one_run_per_seed(runs: list[runlog.RecordedRun]) -> tuple[list[runlog.RecordedRun], str | None]:
    """The runs with each (configuration, seed) once, the one with more epochs kept (the first of equals), and
    a one-line description of what was left out (None when nothing was)."""
    groups: dict = {}
    for run in runs:
        identity = run_identity(run.config)
        groups.setdefault(identity if identity is not None else id(run), []).append(run)
    kept, repeats = [], []
    for group in groups.values():
        best = max(group, key=lambda run: len(run.log["testAccuracy"]))
        kept.append(best)
        if len(group) > 1:
            others = ", ".join(run.run_id for run in group if run is not best)
            repeats.append(f"seed {best.config['seed']}: {best.run_id} counted, {others} left out")
    order = {id(run): index for index, run in enumerate(runs)}
    kept.sort(key=lambda run: order[id(run)])
    if not repeats:
        return kept, None
    return kept, (f"{len(repeats)} (configuration, seed) trained more than once, counting the run with more "
                  f"epochs ({'; '.join(repeats)})")


def test_accuracy_at_best_validation(log: dict) -> float:
    """The test accuracy at the first trained epoch (>= 1) with the highest validation accuracy; epoch 0 only
    when nothing else was recorded."""
    first = 1 if len(log["valAccuracy"]) > 1 else 0
    best = first + int(np.argmax(log["valAccuracy"][first:]))
    return log["testAccuracy"][best]


@dataclass(frozen=True)
class Row:
    """One configuration's runs, summarised over seeds (arrays hold one value per run)."""
    label: str
    runs: int
    epochs: str  # the epochs the runs reached, "20" or "3/20"
    final: np.ndarray
    at_best_validation: np.ndarray
    changed: np.ndarray  # fraction of weights pruned or flipped at the last epoch
    flipped: np.ndarray  # of those, the fraction flipped (negative masks)
    changed_means: str
    epoch_seconds: float  # mean training seconds per epoch (evaluation excluded)
    directory: str = ""
    sizes: tuple[compaction.EffectiveSize, ...] = ()  # of the finished runs

    @property
    def units_alive(self) -> str:
        """Units alive per layer, averaged over the finished runs ("300/98/10"); "-" without one."""
        if not self.sizes:
            return "-"
        return "/".join(f"{np.mean(column):.0f}" for column in zip(*(size.units_kept for size in self.sizes)))

    @property
    def effective_parameters(self) -> float | None:
        return float(np.mean([size.parameters_kept for size in self.sizes])) if self.sizes else None

    @property
    def parameters(self) -> int | None:
        return self.sizes[0].parameters if self.sizes else None

    def changed_text(self) -> str:
        """The fraction changed in words; a signed supermask's pruned and flipped apart."""
        if self.changed_means == "none":
            return "-"
        if self.changed_means == "pruned and flipped":
            return f"{(self.changed - self.flipped).mean():.2%} pruned, {self.flipped.mean():.2%} flipped"
        return f"{self.changed.mean():.2%} {self.changed_means}"

    def effective_text(self) -> str:
        if not self.sizes:
            return "-"
        return f"{self.effective_parameters:,.0f} of {self.parameters:,} ({self.effective_parameters / self.parameters:.1%})"


def effective_size(run: runlog.RecordedRun) -> compaction.EffectiveSize | None:
    """The compact network's size, from the run's initial weights and final masks; None before the run finished.
    A finished run's weights, masks and log (the row's accuracies) are first checked against its digests."""
    if run.config.get("status") != "finished" or not run.files.masks.exists():
        return None
    weights, masks = runlog.read_npz(run.files.weights), runlog.read_npz(run.files.masks)
    digests, origin = provenance.recorded(run.config, run.files.config), f"the file run {run.files.run_id} wrote"
    provenance.check_arrays(run.files.weights, digests.get("weights"), weights, origin)  # none from a legacy run
    provenance.check_arrays(run.files.masks, digests.get("masks"), masks, origin)
    provenance.check_log(run.files.log_json, run.log, digests.get("log"), run.files.run_id)
    if set(weights) != set(masks):
        raise runlog.RunLogError(f"{run.files.masks}: its layers are not those of {run.files.weights}")
    return compaction.effective_size({name: weights[name] * masks[name] for name in weights},
                                     run.config.get("activation", "relu"),
                                     chain=networks.get(run.config["nettype"]).compactable)


def summarise(label: str, runs: list[runlog.RecordedRun], directory: str = "") -> Row:
    """A row from runs of one configuration (different seeds)."""
    epochs = sorted({len(run.log["testAccuracy"]) - 1 for run in runs})
    seconds = [np.mean(run.log["epochSeconds"][1:]) for run in runs if len(run.log["epochSeconds"]) > 1]
    return Row(label, len(runs), "/".join(map(str, epochs)),
               np.array([run.log["testAccuracy"][-1] for run in runs], dtype=float),
               np.array([test_accuracy_at_best_validation(run.log) for run in runs], dtype=float),
               np.array([run.log["changedWeights"][-1] / run.log["totalWeights"] for run in runs], dtype=float),
               np.array([runlog.flipped_weights(run.log, -1) / run.log["totalWeights"] for run in runs], dtype=float),
               runs[0].config.get("changedMeans", "changed"), float(np.mean(seconds)) if seconds else 0.0,
               directory, tuple(size for size in map(effective_size, runs) if size is not None))


def percent_range(values: np.ndarray) -> str:
    return f"{values.mean():.2%} [{values.min():.2%}, {values.max():.2%}]"


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table (accuracies in percent), with a directory column when rows name one."""
    columns = (("directory",) if any(row.directory for row in rows) else ()) + COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        changed = row.changed_text()
        cells = ([row.directory] if len(columns) > len(COLUMNS) else []) + [
            row.label, str(row.runs), row.epochs, percent_range(row.final), percent_range(row.at_best_validation),
            changed, row.units_alive, row.effective_text(), f"{row.epoch_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_record(row: Row) -> dict:
    """The row at full precision (fractions, not percent; std over runs with ddof=0)."""
    values = (row.directory, row.label, row.runs, row.epochs, row.final.mean(), row.final.std(), row.final.min(),
              row.final.max(), row.at_best_validation.mean(), row.at_best_validation.min(),
              row.at_best_validation.max(), row.changed.mean(), row.units_alive, row.effective_parameters,
              row.parameters, row.epoch_seconds)
    return dict(zip(CSV_COLUMNS, (float(value) if isinstance(value, np.floating) else value for value in values)))


def write(rows: list[Row], directory: Path) -> str:
    """Write `Summary.md` and `Summary.csv` in `directory`, each atomically and never through a link (StudyError);
    returns the Markdown table."""
    table = markdown(rows)
    records = io.StringIO()
    writer = csv.DictWriter(records, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_record(row) for row in rows)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in zip(SUMMARY_FILES, (table, records.getvalue())):
        runlog.write_text(contained(directory, name), text)
    return table
