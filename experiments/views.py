"""A study's results: a view of its own runs (links laid out like the output path), its plots and its table.
"""
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import runlog
from experiments.points import REPO_ROOT, experiment_directory, matches
from experiments.studies import Study, StudyError, contained


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
                 warn: Callable[[str], None] = warn) -> list[tuple[dict, runlog.RecordedRun]]:
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
    groups: dict[str, list[runlog.RecordedRun]] = {}
    for point, run in counted_runs(study, outputpath, finished_only, warn):
        label = " ".join(f"{key}={point[key]}" if key == "keep" else str(point[key]) for key in varying if key in point)
        groups.setdefault(label or study.name, []).append(run)
    rows = [summary.summarise(label, runs) for label, runs in groups.items()]
    if not rows:
        raise StudyError(f"study {study.name}: no {'finished ' if finished_only else ''}runs under {outputpath}")
    return summary.markdown(rows)
