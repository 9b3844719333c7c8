"""Reproduction studies: one small TOML file per grid of MaskTrainer runs, and the runner that completes it.

A study file names a grid (`[grid]`: lists, expanded as a product in file order; or several `[[grid]]` tables,
each expanded alike and concatenated, for settings that apply to some runs only, such as EdgePopup's `keep`),
settings shared by every run (`[fixed]`) and optional plot groups (`[[plot]]`: a name and the grid values to
keep). Every grid point
is one MaskTrainer run, found again through its experiment directory and `Config_ID*.json`, so running a
study twice skips what is finished and resumes what was interrupted. Each run is a subprocess: a crash of
one run does not stop the study. A claim file beside each run (`experiments.claims`) makes every point train
once however many runners work on the study; `experiments.runner` runs points locally, `experiments.ray_pool`
on a Ray cluster. An optional `[ray]` table gives each run's Ray resources (`cpus`, `gpus`, fractions allowed).
"""
import hashlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import runlog
from training import types as training_types
from training.config import DIRECTORY_SETTINGS, SETTING_NAMES, ConfigError, RunConfig, default, network_recipe

STUDY_DIRECTORY = Path(__file__).resolve().parent
REPO_ROOT = STUDY_DIRECTORY.parent
# The settings a study may set: every RunConfig field but where the files and the data are.
STUDY_SETTINGS = tuple(name for name in SETTING_NAMES if name not in ("outputpath", "datadir"))
# Settings that a run's directory does not already name, and that must agree for a run to count: not `jit`,
# which changes how the loop is compiled, not the experiment, and not `maxepochs`, since a run is the same run
# however far it went (a finished run with fewer epochs than a study asks for is extended).
MATCHED_KEYS = tuple(name for name in STUDY_SETTINGS if name not in DIRECTORY_SETTINGS + ("jit", "maxepochs"))
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
        identity = tuple(str(setting(resolved(point), key)) for key in MATCHED_KEYS)
        twin = seen.setdefault((experiment_directory(point, Path(".")), identity), point)
        if twin is not point:
            both = describe(point) if describe(point) == describe(twin) else f"{describe(twin)} and {describe(point)}"
            raise StudyError(f"{path}: the grid gives one run twice ({both}); list each value once")
    if not isinstance(resources, dict) or not set(resources) <= {"cpus", "gpus"} or any(
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            for value in resources.values()) or resources.get("cpus", 1) <= 0:
        raise StudyError(f"{path}: [ray] takes cpus (> 0) and gpus (>= 0) per run, fractions allowed")
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


def setting(point: dict, key: str):
    """A run's setting: the study's value, else the network's recipe, else RunConfig's default (a `dataset` of
    None: the network's own)."""
    if key in point:
        return point[key]
    return network_recipe(point.get("nettype", default("nettype"))).get(key, default(key))


def resolved(point: dict) -> dict:
    """The point with its training type's canonical name and mask type, as the run's configuration records them."""
    config = RunConfig(**point).resolved("study")
    return dict(point, traintype=config.traintype, masktype=config.masktype, keep=config.keep)


def experiment_directory(point: dict, outputpath: Path) -> Path:
    """Where MaskTrainer writes this run (SPEC.md section 7)."""
    return RunConfig.from_dict(dict(point, outputpath=str(outputpath)), "study").experiment_directory()


def matches(config: dict, point: dict) -> bool:
    """Whether a recorded configuration is this point's run, trained this far or less (the directory already
    fixes the other settings)."""
    for key in MATCHED_KEYS:
        wanted = setting(point, key)
        if not (key == "dataset" and wanted is None) and config.get(key, default(key)) != wanted:
            return False
    recorded = config.get("maxepochs")
    return isinstance(recorded, int) and recorded <= setting(point, "maxepochs")


def claim_stem(point: dict) -> str:
    """The point's name among the claims in its experiment directory: its seed and a hash of the settings that
    `matches` compares (the directory holds the rest), so two studies that share a run share its claim."""
    p = resolved(point)
    identity = {key: setting(p, key) for key in MATCHED_KEYS}
    if identity["dataset"] is None:  # the network's own, named as the run's configuration records it
        identity["dataset"] = RunConfig(nettype=setting(p, "nettype")).dataset_name()
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"seed{setting(p, 'seed')}-{digest}"


def logged_epochs(config_path: Path) -> int:
    """How many epochs an unfinished run has logged (-1: none, not even epoch 0)."""
    try:
        return len(runlog.read_log(runlog.RunFiles.from_config_path(config_path).log_json)["testAccuracy"]) - 1
    except runlog.RunLogError:
        return -1


def find_run(point: dict, outputpath: Path) -> tuple[str, Path | None]:
    """("finished" or "failed", config) to skip; ("resume", config) for the furthest unfinished run, or for a
    finished one to extend to the point's maxepochs; ("new", None)."""
    found = []
    for config_path in sorted(experiment_directory(point, outputpath).glob("Config_ID*.json")):
        try:
            config = runlog.read_json(config_path)
        except runlog.RunLogError:
            continue
        if matches(config, point):
            if config.get("status") == "failed" or (config.get("status") == "finished"
                                                     and config.get("maxepochs") == setting(point, "maxepochs")):
                return config["status"], config_path
            found.append(config_path)
    if found:
        return "resume", max(found, key=logged_epochs)
    return "new", None


def trainer_command(point: dict, outputpath: Path, action: str, config_path: Path | None) -> list[str]:
    """The MaskTrainer command line for a new run, or for resuming `config_path`."""
    trainer = [sys.executable, str(REPO_ROOT / "MaskTrainer.py")]
    if action == "resume":  # with the point's epochs: a finished run asked for more is extended
        return trainer + ["--resume", str(config_path), "--maxepochs", str(setting(point, "maxepochs"))]
    flags = [item for key, value in point.items() for item in (f"--{key}", str(value))]
    return trainer + flags + ["--outputpath", str(outputpath)]


def describe(point: dict) -> str:
    """A run in a few words for progress lines."""
    words = [f"{key}={value}" for key, value in point.items() if key not in ("maxepochs", "batchsize", "lr")]
    return " ".join(words)


def run_study(study: Study, outputpath: Path, dry_run: bool = False, say: Callable[[str], None] = print,
              jobs: int | None = None, runs_per_gpu: int = 1, stale_after: float | None = None,
              ray: str | None = None, ray_cpus: float | None = None, ray_gpus: float | None = None) -> int:
    """Complete every run of `study`; returns how many runs failed or are left unfinished.

    Up to `jobs` runs at a time on this machine (GPUs round-robin, `runs_per_gpu` on each), or as Ray tasks
    when `ray` names a cluster address ("local": a new cluster on this machine). Each point is claimed before
    it is trained; a point whose claim another runner keeps fresh is looked at again later.
    """
    from experiments import claims, runner
    stale_after = claims.STALE_AFTER if stale_after is None else stale_after
    plan = [(point, *find_run(point, outputpath)) for point in study.points]
    todo = [point for point, action, _ in plan if action in ("resume", "new")]
    counts = {action: sum(entry[1] == action for entry in plan) for action in ("finished", "failed", "resume", "new")}
    say(f"study {study.name}: {len(plan)} runs: " + ", ".join(f"{n} {action}" for action, n in counts.items()))
    if dry_run:
        for number, (point, action, config_path) in enumerate((e for e in plan if e[1] in ("resume", "new")), 1):
            say(f"[{number}/{len(todo)}] {action}: {describe(point)}")
            say("    " + " ".join(trainer_command(point, outputpath, action, config_path)[1:]))
        return 0
    if not todo:
        failed = f" ({counts['failed']} failed in an earlier session: their configurations say why)" \
            if counts["failed"] else ""
        say(f"study {study.name}: every run is done{failed}; nothing to train")
        return 0
    if ray is not None:
        from experiments import ray_pool
        cpus = study.resources.get("cpus", 1.0) if ray_cpus is None else ray_cpus
        gpus = study.resources.get("gpus", 0.0) if ray_gpus is None else ray_gpus
        pool = ray_pool.RayPool(ray, outputpath, stale_after, cpus, gpus, say)
    else:
        pool = runner.LocalPool(outputpath, stale_after, jobs, runs_per_gpu, say)
    say(f"study {study.name}: training {pool.description}")
    try:
        return runner.Scheduler(study, todo, counts["finished"], counts["failed"], pool, stale_after, say).run()
    finally:
        pool.close()


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


def warn(message: str) -> None:
    """A one-line warning on stderr; the command goes on."""
    print(f"python -m experiments: warning: {message}", file=sys.stderr)


def counted_runs(study: Study, outputpath: Path, finished_only: bool = False,
                 warn: Callable[[str], None] = warn) -> list[tuple[dict, runlog.Run]]:
    """Per grid point, its run: one per (configuration, seed), the one with more epochs where a point was trained
    twice (with one warning line)."""
    from experiments import summary
    found = []
    for point in study.points:
        for run in runlog.read_runs(experiment_directory(point, outputpath)):
            if matches(run.config, point) and (run.config.get("status") == "finished" or not finished_only):
                found.append((point, run))
    kept, repeated = summary.one_run_per_seed([run for _, run in found])
    if repeated:
        warn(f"{outputpath}: {repeated}")
    kept_ids = {id(run) for run in kept}
    return [(point, run) for point, run in found if id(run) in kept_ids]


VIEW_MANIFEST = ".study-view.json"  # what a study view holds: a hint to the next view of what to remove


def contained(root: Path, name: str | Path) -> Path:
    """`root / name` for the experiments package to write, or StudyError when it would leave `root` or pass
    through a link (`runlog.inside`)."""
    path = runlog.inside(root, name)
    if path is None:
        raise StudyError(f"{root / name}: leaves {root} or passes through a link; not written, choose another --out")
    return path


def _manifest_names(made: dict, key: str) -> list[str]:
    """The names a manifest lists under `key`; whatever is not a list of names lists nothing."""
    names = made.get(key)
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def _view_link(view: Path, name: str, outputpath) -> Path | None:
    """`view / name` if it is a link such as a view makes: a run file's name, reached inside the view without a
    link, pointing at the file of that name inside the recorded output path (removing it leaves that file)."""
    folder = runlog.inside(view, Path(name).parent)
    path = None if folder is None else folder / Path(name).name
    if path is None or not runlog.is_run_file_name(path.name) or not path.is_symlink() \
            or not isinstance(outputpath, str) or not Path(outputpath).is_absolute():
        return None
    target = Path(os.readlink(path))
    return path if target.name == path.name and ".." not in target.parts and target.is_relative_to(outputpath) \
        else None


def _view_figure(view: Path, name: str) -> Path | None:
    """`view / name` if it is a regular file, reached without a link, named as Plotter names its figures."""
    from experiments import summary
    path = runlog.inside(view, name)
    made = Path(name).stem in summary.EXPERIMENT_FIGURES and Path(name).suffix in summary.FIGURE_SUFFIXES
    return path if made and path is not None and path.is_file() else None


def _clear_view(view: Path) -> None:
    """Remove a previous study view: of what its manifest lists, only the links, figures and empty folders that a
    view makes, inside the view, reached without following a link (`runlog.inside`); anything else stays, and a
    view that holds anything else is refused (StudyError)."""
    if not os.path.lexists(view):
        return
    if view.is_symlink() or not view.is_dir():
        raise StudyError(f"{view}: not a folder that `plot` made; remove it or choose another --out")
    manifest = view / VIEW_MANIFEST
    if manifest.is_file() and not manifest.is_symlink():
        try:
            made = runlog.read_json(manifest)
        except runlog.RunLogError as error:
            raise StudyError(f"{error}; remove {view} or choose another --out") from None
        made_files = [_view_link(view, name, made.get("outputpath")) for name in _manifest_names(made, "links")]
        made_files += [_view_figure(view, name) for name in _manifest_names(made, "files")]
        for path in made_files:
            if path is not None:
                path.unlink()
        for name in sorted(_manifest_names(made, "directories"), key=lambda name: len(Path(name).parts), reverse=True):
            path = runlog.inside(view, name)
            if path is not None and path != view and path.is_dir():
                try:
                    path.rmdir()
                except OSError:  # not empty: what is left is reported below
                    pass
        manifest.unlink()
    left = sorted(view.iterdir())
    if left:
        raise StudyError(f"{view}: holds files that `plot` did not make ({left[0].name}"
                         f"{f' and {len(left) - 1} more' if len(left) > 1 else ''}); move them away or choose "
                         "another --out")


def study_view(study: Study, outputpath: Path, view: Path, warn: Callable[[str], None] = warn) -> Path:
    """A folder of links to the study's own runs, laid out like `outputpath`, so plots never merge other runs.

    Each run's files are all linked (the summary's effective size reads its Weights and Masks). The folder's
    manifest lists every link, figure and folder it holds, as a hint: a new view removes of those only what a view
    makes (a folder with anything else in it is refused), so no run is ever deleted, even with --outputpath inside it.
    """
    if outputpath.resolve().is_relative_to(view.resolve()):
        raise StudyError(f"--outputpath {outputpath} lies inside the study view {view}, which `plot` rebuilds; "
                         "choose another --out")
    _clear_view(view)
    links, directories = {}, {Path(".")}
    for point, run in counted_runs(study, outputpath, warn=warn):
        directory = experiment_directory(point, Path("."))
        directories.update(directory.parents)
        directories.add(directory)
        for path in run.files.paths():
            if path.exists():
                links[directory / path.name] = path.resolve()
    from experiments import summary
    figures = [directory / f"{stem}{suffix}" for directory in {name.parent for name in links}
               for stem in summary.EXPERIMENT_FIGURES for suffix in summary.FIGURE_SUFFIXES]
    view.mkdir(parents=True, exist_ok=True)
    runlog.write_json(contained(view, VIEW_MANIFEST), {
        "study": study.name, "outputpath": str(outputpath.resolve()), "links": sorted(map(str, links)),
        "files": sorted(map(str, figures)), "directories": sorted(str(name) for name in directories if name.parts)})
    for name, target in links.items():
        link = contained(view, name)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    return view


def comparison_stem(root: Path, name: str) -> Path:
    """Where Plotter draws plot group `name`'s comparison (the summary goes beside it), once that folder and every
    file Plotter writes there are found inside `root` and no link (`contained`)."""
    from experiments import summary
    for file in (*(f"{summary.COMPARISON}{suffix}" for suffix in summary.FIGURE_SUFFIXES), *summary.SUMMARY_FILES):
        contained(root, Path(name) / file)
    return contained(root, Path(name) / summary.COMPARISON)


def plot_study(study: Study, outputpath: Path, out: Path | None = None) -> int:
    """Run Plotter.py once per plot group; everything goes under `out`/<study> (default <outputpath>/studies)."""
    root = contained(out or outputpath / "studies", study.name)
    view = study_view(study, outputpath, contained(root, "runs"))
    groups = plot_groups(study, view)
    if not groups["all"]:
        raise StudyError(f"study {study.name}: no runs under {outputpath} yet; run it first")
    for name, directories in groups.items():
        if directories:
            command = [sys.executable, str(REPO_ROOT / "Plotter.py"), *map(str, directories),
                       "--out", str(comparison_stem(root, name))]
            if subprocess.run(command).returncode != 0:
                return 1
            print(f"plot group {name}: {len(directories)} experiment directories -> {root / name}")
    return 0


def table_study(study: Study, outputpath: Path, finished_only: bool = True, warn: Callable[[str], None] = warn) -> str:
    """The study's numbers as a Markdown table, one row per configuration, over the runs of its grid points only."""
    from experiments import summary  # numpy arithmetic, only needed here
    keys = dict.fromkeys(key for point in study.points for key in point)  # several [[grid]]s may name different ones
    varying = [key for key in keys if key != "seed" and len({str(p.get(key)) for p in study.points}) > 1]
    groups: dict[str, list[runlog.Run]] = {}
    for point, run in counted_runs(study, outputpath, finished_only, warn):
        label = " ".join(f"{key}={point[key]}" if key == "keep" else str(point[key]) for key in varying if key in point)
        groups.setdefault(label or study.name, []).append(run)
    rows = [summary.summarise(label, runs) for label, runs in groups.items()]
    if not rows:
        raise StudyError(f"study {study.name}: no {'finished ' if finished_only else ''}runs under {outputpath}")
    return summary.markdown(rows)
