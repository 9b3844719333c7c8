"""The numbers a study answers with: per configuration, accuracy over seeds, weights changed and time per epoch.

Unlike Plotter's table, this gives minimum and maximum for both the final test accuracy and the test accuracy
at the epoch of best validation accuracy (early stopping), and counts only the runs that are finished.
"""
from dataclasses import dataclass
import numpy as np

import runlog

COLUMNS = ("configuration", "runs", "epochs", "final test acc. mean [min, max]",
           "test acc. at best val. mean [min, max]", "changed", "s / epoch")


@dataclass(frozen=True)
class Row:
    """One configuration's runs, summarised over seeds."""
    label: str
    runs: int
    epochs: str
    final: np.ndarray  # per run
    at_best_validation: np.ndarray  # per run
    changed: float  # mean fraction of weights pruned or flipped at the last epoch
    changed_means: str
    epoch_seconds: float  # mean training seconds per epoch (evaluation excluded)


def test_accuracy_at_best_validation(log: dict) -> float:
    """The test accuracy at the first trained epoch (>= 1) with the highest validation accuracy."""
    validation = log["valAccuracy"][1:] or log["valAccuracy"]
    best = int(np.argmax(validation)) + (1 if len(log["valAccuracy"]) > 1 else 0)
    return log["testAccuracy"][best]


def summarise(label: str, runs: list[runlog.Run]) -> Row:
    """A row from runs of one configuration (different seeds)."""
    epochs = sorted({len(run.log["testAccuracy"]) - 1 for run in runs})
    changed = [run.log["changedWeights"][-1] / run.log["totalWeights"] for run in runs]
    seconds = [np.mean(run.log["epochSeconds"][1:]) for run in runs if len(run.log["epochSeconds"]) > 1]
    return Row(label, len(runs), "/".join(map(str, epochs)),
               np.array([run.log["testAccuracy"][-1] for run in runs]),
               np.array([test_accuracy_at_best_validation(run.log) for run in runs]),
               float(np.mean(changed)), runs[0].config["changedMeans"], float(np.mean(seconds)) if seconds else 0.0)


def percent_range(values: np.ndarray) -> str:
    return f"{values.mean():.2%} [{values.min():.2%}, {values.max():.2%}]"


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table (accuracies in percent)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        changed = "-" if row.changed_means == "none" else f"{row.changed:.2%} {row.changed_means}"
        lines.append(f"| {row.label} | {row.runs} | {row.epochs} | {percent_range(row.final)} | "
                     f"{percent_range(row.at_best_validation)} | {changed} | {row.epoch_seconds:.1f} |")
    return "\n".join(lines) + "\n"
