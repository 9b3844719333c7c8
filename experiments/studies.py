"""Study files: one small TOML file per grid of MaskTrainer runs, read, checked and expanded into grid points.

A study file names a grid (`[grid]`: lists, expanded as a product in file order; or several `[[grid]]` tables,
each expanded alike and concatenated, for settings that apply to some runs only, such as EdgePopup's `keep`),
settings shared by every run (`[fixed]`) and optional plot groups (`[[plot]]`: a name and the grid values to
keep). An optional `[ray]` table gives each run's Ray resources (`cpus`, `gpus`, fractions allowed).
"""
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import runlog
from experiments.points import MATCHED_KEYS, describe, experiment_directory, point_value, resolved
from settings import types as training_types
from settings.config import SETTING_NAMES, ConfigError, RunConfig

STUDY_DIRECTORY = Path(__file__).resolve().parent
# The settings a study may set: every RunConfig field but where the files and the data are.
STUDY_SETTINGS = tuple(name for name in SETTING_NAMES if name not in ("outputpath", "datadir"))
# The most runs a study may give: its grid is expanded in memory, and a product of a few long lists is enormous.
MAX_STUDY_POINTS = 100_000
# A plot group's name is a folder under the study's: a plain name, and neither the view's folder nor "all".
PLOT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
RESERVED_PLOT_NAMES = ("all", "runs")


class StudyError(ValueError):
    """A study that cannot be found or read; the message is one line naming the file."""


@dataclass(frozen=True)
class Study:
    """A study file read and expanded: one dict of MaskTrainer flags per run, in file order."""
    name: str
    description: str
    points: list[dict]
    plots: dict[str, dict[str, list]]  # plot group name -> the grid values it keeps
    resources: dict[str, float] = field(default_factory=dict)  # [ray]: cpus and gpus per run
    path: Path = Path()  # the study file


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
    """Every key a MaskTrainer setting; grid values non-empty lists of scalars, fixed values scalars; seeds >= 1;
    every value passes RunConfig's check (`check_points` then checks each point whole)."""
    for key, value in table.items():
        if key not in STUDY_SETTINGS:
            raise StudyError(f"{path}: [{section}] {key} is not a MaskTrainer setting ({', '.join(STUDY_SETTINGS)})")
        values = value if lists else [value]
        if not isinstance(values, list) or not values or any(isinstance(v, (list, dict)) for v in values):
            raise StudyError(f"{path}: [{section}] {key} should be {'a non-empty list' if lists else 'one value'}")
        if key == "seed" and any(not isinstance(v, int) or v < 1 for v in values):
            raise StudyError(f"{path}: seeds must be explicit integers >= 1 so runs can be repeated")
        if key == "traintype" and any(v not in training_types.names() for v in values):
            raise StudyError(f"{path}: unknown traintype in {values}; choose from {', '.join(training_types.names())}")
        for item in values:
            reason = RunConfig.problem(key, item)
            if reason:
                raise StudyError(f"{path}: [{section}] {key} {item!r} is {reason}")


def check_points(study: "Study") -> None:
    """Every point through RunConfig's whole check, registries included, before anything runs; StudyError names
    the first point that fails."""
    for number, point in enumerate(study.points, start=1):
        try:
            RunConfig.from_dict(point, f"{study.path}: run {number} ({describe(point)})")
        except ConfigError as error:
            raise StudyError(str(error)) from None


def load_study(study: str) -> Study:
    """Read, check and expand a study file; StudyError with one line for anything wrong."""
    path = study_path(study)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StudyError(f"{path}: not a readable TOML file ({error})") from None
    grids, fixed, plots, resources = data.get("grid"), data.get("fixed", {}), data.get("plot", []), data.get("ray", {})
    grids = [grids] if isinstance(grids, dict) else grids  # one [grid] table, or several [[grid]] tables
    if not isinstance(grids, list) or not grids or not all(isinstance(grid, dict) and grid for grid in grids) \
            or not isinstance(fixed, dict) or not isinstance(plots, list):
        raise StudyError(f"{path}: needs a [grid] table of lists (or [[grid]] tables), an optional [fixed] table and "
                         "[[plot]] entries")
    for grid in grids:
        _check_settings(path, grid, "grid", lists=True)
    _check_settings(path, fixed, "fixed", lists=False)
    if any(set(grid) & set(fixed) or "seed" not in set(grid) | set(fixed) for grid in grids):
        raise StudyError(f"{path}: a setting is in both [grid] and [fixed], or no seed is given")
    size = sum(math.prod(len(values) for values in grid.values()) for grid in grids)  # before the product is made
    if size > MAX_STUDY_POINTS:
        raise StudyError(f"{path}: the grid gives {size:,} runs, more than the limit of {MAX_STUDY_POINTS:,}; "
                         "split it into several studies")
    points = [dict(zip(grid, values), **fixed) for grid in grids for values in itertools.product(*grid.values())]
    try:
        for point in points:
            resolved(point)
    except ValueError as error:  # a mask type that does not fit a training type
        raise StudyError(f"{path}: {error}") from None
    seen = {}
    for point in points:
        identity = tuple(str(point_value(resolved(point), key)) for key in MATCHED_KEYS)
        twin = seen.setdefault((experiment_directory(point, Path(".")), identity), point)
        if twin is not point:
            both = describe(point) if describe(point) == describe(twin) else f"{describe(twin)} and {describe(point)}"
            raise StudyError(f"{path}: the grid gives one run twice ({both}); list each value once")
    if not isinstance(resources, dict) or not set(resources) <= {"cpus", "gpus"} or any(
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
            for value in resources.values()) or resources.get("cpus", 1) <= 0:
        raise StudyError(f"{path}: [ray] takes cpus (> 0) and gpus (>= 0) per run, finite, fractions allowed")
    grid_keys = {key: None for grid in grids for key in grid}
    return Study(path.stem, str(data.get("description", "")), points, plot_groups_of(path, plots, grid_keys),
                 {key: float(value) for key, value in resources.items()}, path)


def plot_groups_of(path: Path, plots: list, grid: dict) -> dict[str, dict[str, list]]:
    """The [[plot]] entries by name; each name a plain folder name (PLOT_NAME), given once and not reserved, since
    its figures and summary go to a folder of that name beside the others."""
    groups = {}
    for plot in plots:
        keep = {key: value for key, value in plot.items() if key != "name"} if isinstance(plot, dict) else None
        if keep is None or not isinstance(plot.get("name"), str) or not set(keep) <= set(grid):
            raise StudyError(f"{path}: each [[plot]] needs a name and lists of [grid] values to keep")
        name = plot["name"]
        if not PLOT_NAME.fullmatch(name) or name.lower() in RESERVED_PLOT_NAMES:
            raise StudyError(f"{path}: [[plot]] name {name!r} should be a plain folder name of letters, digits, -, _ "
                             f"and . (not first, 100 at most) other than {' and '.join(RESERVED_PLOT_NAMES)}")
        if name.lower() in map(str.lower, groups):
            raise StudyError(f"{path}: two [[plot]] entries are named {name!r}; give each group its own name")
        groups[name] = keep
    return groups


def contained(root: Path, name: str | Path) -> Path:
    """`root / name` for the experiments package to write, or StudyError when it would leave `root` or pass
    through a link (`runlog.inside`)."""
    path = runlog.inside(root, name)
    if path is None:
        raise StudyError(f"{root / name}: leaves {root}, or passes through a link or a file; not written, choose "
                         f"another --out")
    return path
