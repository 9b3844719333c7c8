"""Reproduction studies: one small TOML file per grid of MaskTrainer runs, and the runner that completes it.

A study file names a grid (`[grid]`: lists, expanded as a product in file order), settings shared by every
run (`[fixed]`) and optional plot groups (`[[plot]]`: a name and the grid values to keep). Every grid point
is one MaskTrainer run, found again through its experiment directory and `Config_ID*.json`, so running a
study twice skips what is finished and resumes what was interrupted. Each run is a subprocess: a crash of
one run does not stop the study.
"""
import itertools
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import runlog
from masks import training_types

STUDY_DIRECTORY = Path(__file__).resolve().parent
REPO_ROOT = STUDY_DIRECTORY.parent
# MaskTrainer's defaults for the flags a study may set; None for dataset: the network's own dataset.
DEFAULTS: dict[str, object] = {
    "nettype": "LeNet", "traintype": "FreePruning", "initializer": "he", "activation": "relu", "masktype": None,
    "p1": 0.5, "lr": 1e-3, "batchsize": 25, "maxepochs": 20, "seed": None, "dataset": None, "trainsize": None,
    "jit": "auto", "precision": "float32"}
# Settings that a run's directory does not already name, and that must agree for a run to count.
MATCHED_KEYS = ("seed", "maxepochs", "batchsize", "trainsize", "dataset", "precision")


class StudyError(ValueError):
    """A study that cannot be found or read; the message is one line naming the file."""




@dataclass(frozen=True)
class Study:
    """A study file read and expanded: one dict of MaskTrainer flags per run, in file order."""
    name: str
    description: str
    points: list[dict]
    plots: dict[str, dict[str, list]]  # plot group name -> the grid values it keeps


def study_names() -> list[str]:
    """The studies shipped in this package."""
    return sorted(path.stem for path in STUDY_DIRECTORY.glob("*.toml"))


def study_path(study: str) -> Path:
    """A shipped study by name, or any study file by path."""
    if study.endswith(".toml"):
        path = Path(study)
    else:
        path = STUDY_DIRECTORY / f"{study}.toml"
        if not path.is_file():
            raise StudyError(f"unknown study {study!r}; choose one of {', '.join(study_names())} or a .toml path")
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    return path


def _check_settings(path: Path, table: dict, section: str, lists: bool) -> None:
    """Every key a MaskTrainer flag; grid values non-empty lists of scalars, fixed values scalars; seeds >= 1."""
    for key, value in table.items():
        if key not in DEFAULTS:
            raise StudyError(f"{path}: [{section}] {key} is not a MaskTrainer setting ({', '.join(DEFAULTS)})")
        values = value if lists else [value]
        if not isinstance(values, list) or not values or any(isinstance(v, (list, dict)) for v in values):
            raise StudyError(f"{path}: [{section}] {key} should be {'a non-empty list' if lists else 'one value'}")
        if key == "seed" and any(not isinstance(v, int) or v < 1 for v in values):
            raise StudyError(f"{path}: seeds must be explicit integers >= 1 so runs can be repeated")
        if key == "traintype" and any(v not in training_types.names() for v in values):
            raise StudyError(f"{path}: unknown traintype in {values}; choose from {', '.join(training_types.names())}")


def load_study(study: str) -> Study:
    """Read, check and expand a study file; StudyError with one line for anything wrong."""
    path = study_path(study)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StudyError(f"{path}: not a readable TOML file ({error})") from None
    grid, fixed, plots = data.get("grid"), data.get("fixed", {}), data.get("plot", [])
    if not isinstance(grid, dict) or not grid or not isinstance(fixed, dict) or not isinstance(plots, list):
        raise StudyError(f"{path}: needs a [grid] table of lists, an optional [fixed] table and [[plot]] entries")
    _check_settings(path, grid, "grid", lists=True)
    _check_settings(path, fixed, "fixed", lists=False)
    if set(grid) & set(fixed) or "seed" not in set(grid) | set(fixed):
        raise StudyError(f"{path}: a setting is in both [grid] and [fixed], or no seed is given")
    points = [dict(zip(grid, values), **fixed) for values in itertools.product(*grid.values())]
    try:
        for point in points:
            resolved(point)
    except ValueError as error:  # a mask type that does not fit a training type
        raise StudyError(f"{path}: {error}") from None
    groups = {}
    for plot in plots:
        keep = {key: value for key, value in plot.items() if key != "name"} if isinstance(plot, dict) else None
        if keep is None or not isinstance(plot.get("name"), str) or not set(keep) <= set(grid):
            raise StudyError(f"{path}: each [[plot]] needs a name and lists of [grid] values to keep")
        groups[plot["name"]] = keep
    return Study(path.stem, str(data.get("description", "")), points, groups)


def setting(point: dict, key: str):
    """A run's setting: the study's value, else MaskTrainer's default."""
    return point.get(key, DEFAULTS[key])


def resolved(point: dict) -> dict:
    """The point with its training type's canonical name and mask type, as the run's configuration records them."""
    training_type = training_types.get(setting(point, "traintype"))
    return dict(point, traintype=training_type.name, masktype=training_type.resolve_mask_type(point.get("masktype")))


def experiment_directory(point: dict, outputpath: Path) -> Path:
    """Where MaskTrainer writes this run (SPEC.md section 7)."""
    p = resolved(point)
    return runlog.experiment_directory(outputpath, p["traintype"], setting(p, "nettype"), setting(p, "p1"),
                                       p["masktype"], setting(p, "activation"), setting(p, "initializer"),
                                       setting(p, "lr"))


def matches(config: dict, point: dict) -> bool:
    """Whether a recorded configuration is this point's run (the directory already fixes the other settings)."""
    for key in MATCHED_KEYS:
        wanted = setting(point, key)
        if not (key == "dataset" and wanted is None) and config.get(key, DEFAULTS[key]) != wanted:
            return False
    return True


def logged_epochs(config_path: Path) -> int:
    """How many epochs an unfinished run has logged (-1: none, not even epoch 0)."""
    try:
        return len(runlog.read_log(runlog.RunFiles.from_config_path(config_path).log_json)["testAccuracy"]) - 1
    except runlog.RunLogError:
        return -1


def find_run(point: dict, outputpath: Path) -> tuple[str, Path | None]:
    """("finished" or "failed", config) to skip; ("resume", config) for the furthest unfinished run; ("new", None)."""
    found = []
    for config_path in sorted(experiment_directory(point, outputpath).glob("Config_ID*.json")):
        try:
            config = runlog.read_json(config_path)
        except runlog.RunLogError:
            continue
        if matches(config, point):
            if config.get("status") in ("finished", "failed"):
                return config["status"], config_path
            found.append(config_path)
    if found:
        return "resume", max(found, key=logged_epochs)
    return "new", None


def trainer_command(point: dict, outputpath: Path, action: str, config_path: Path | None) -> list[str]:
    """The MaskTrainer command line for a new run, or for resuming `config_path`."""
    trainer = [sys.executable, str(REPO_ROOT / "MaskTrainer.py")]
    if action == "resume":
        return trainer + ["--resume", str(config_path)]
    flags = [item for key, value in point.items() for item in (f"--{key}", str(value))]
    return trainer + flags + ["--outputpath", str(outputpath)]


def describe(point: dict) -> str:
    """A run in a few words for progress lines."""
    words = [f"{key}={value}" for key, value in point.items() if key not in ("maxepochs", "batchsize", "lr")]
    return " ".join(words)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run_study(study: Study, outputpath: Path, dry_run: bool = False, say: Callable[[str], None] = print) -> int:
    """Complete every run of `study`, one subprocess at a time; returns how many runs failed or stopped."""
    plan = [(point, *find_run(point, outputpath)) for point in study.points]
    todo = [entry for entry in plan if entry[1] in ("resume", "new")]
    counts = {action: sum(entry[1] == action for entry in plan) for action in ("finished", "failed", "resume", "new")}
    say(f"study {study.name}: {len(plan)} runs: " + ", ".join(f"{n} {action}" for action, n in counts.items()))
    failures, durations, start = 0, [], time.monotonic()
    for index, (point, action, config_path) in enumerate(todo, start=1):
        command = trainer_command(point, outputpath, action, config_path)
        say(f"[{index}/{len(todo)}] {action}: {describe(point)}")
        if dry_run:
            say("    " + " ".join(command[1:]))
            continue
        began = time.monotonic()
        returncode = subprocess.run(command).returncode
        durations.append(time.monotonic() - began)
        if returncode == 130:
            say(f"study {study.name}: interrupted; run the same command again to resume")
            return failures + 1
        failures += returncode != 0
        left = sum(durations) / len(durations) * (len(todo) - index)
        say(f"[{index}/{len(todo)}] {'done' if returncode == 0 else f'exit {returncode}'} in "
            f"{minutes(durations[-1])}; {len(plan) - len(todo) + index}/{len(plan)} runs complete; "
            f"about {minutes(left)} left")
    if not todo:
        say(f"study {study.name}: every run is complete; nothing to train")
    elif not dry_run:
        say(f"study {study.name}: {len(todo)} runs trained in {minutes(time.monotonic() - start)}, {failures} failed")
    return failures


def plot_groups(study: Study, outputpath: Path) -> dict[str, list[Path]]:
    """Per plot group ("all" first), the experiment directories that hold at least one run log."""
    groups = {"all": {}, **study.plots}
    directories = {}
    for name, keep in groups.items():
        chosen = [point for point in study.points
                  if all(point.get(key) in values for key, values in keep.items())]
        found = dict.fromkeys(experiment_directory(point, outputpath) for point in chosen)
        directories[name] = [path for path in found if any(path.glob("TrainLogs_ID*.json"))]
    return directories


def study_view(study: Study, outputpath: Path, view: Path) -> Path:
    """A fresh folder of links to the study's own runs, laid out like `outputpath`: plots never merge other runs."""
    shutil.rmtree(view, ignore_errors=True)
    for point in study.points:
        for run in runlog.read_runs(experiment_directory(point, outputpath)):
            if matches(run.config, point):
                directory = experiment_directory(point, view)
                directory.mkdir(parents=True, exist_ok=True)
                for path in (run.files.config, run.files.log_json):
                    (directory / path.name).symlink_to(path.resolve())
    return view


def plot_study(study: Study, outputpath: Path, out: Path | None = None) -> int:
    """Run Plotter.py once per plot group; everything goes under `out`/<study> (default <outputpath>/studies)."""
    root = (out or outputpath / "studies") / study.name
    view = study_view(study, outputpath, root / "runs")
    groups = plot_groups(study, view)
    if not groups["all"]:
        raise StudyError(f"study {study.name}: no runs under {outputpath} yet; run it first")
    for name, directories in groups.items():
        if directories:
            command = [sys.executable, str(REPO_ROOT / "Plotter.py"), *map(str, directories),
                       "--out", str(root / name / "Comparison")]
            if subprocess.run(command).returncode != 0:
                return 1
            print(f"plot group {name}: {len(directories)} experiment directories -> {root / name}")
    return 0


def table_study(study: Study, outputpath: Path, finished_only: bool = True) -> str:
    """The study's numbers as a Markdown table, one row per configuration, over the runs of its grid points only."""
    from experiments import summary  # numpy arithmetic, only needed here
    varying = [key for key in study.points[0] if key != "seed" and len({str(p[key]) for p in study.points}) > 1]
    groups: dict[str, list[runlog.Run]] = {}
    for point in study.points:
        label = " ".join(str(point[key]) for key in varying) or study.name
        runs = [run for run in runlog.read_runs(experiment_directory(point, outputpath)) if matches(run.config, point)
                and (run.config.get("status") == "finished" or not finished_only)]
        groups.setdefault(label, []).extend(runs)
    rows = [summary.summarise(label, runs) for label, runs in groups.items() if runs]
    if not rows:
        raise StudyError(f"study {study.name}: no {'finished ' if finished_only else ''}runs under {outputpath}")
    return summary.markdown(rows)
