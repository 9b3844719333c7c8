"""Completing a study: every point claimed, then trained or resumed, on this machine or on a Ray cluster.

Every grid point is one MaskTrainer run, found again through its experiment directory and `Config_ID*.json`, so
running a study twice skips what is finished and resumes what was interrupted. Each run is a subprocess: a crash
of one run does not stop the study. A claim file beside each run (`experiments.claims`) makes every point train
once however many runners work on the study; `experiments.runner` runs points locally, `experiments.ray_pool`
on a Ray cluster.
"""
import os
from pathlib import Path
from typing import Callable

import runlog
from experiments.points import describe, experiment_directory, find_run, trainer_command
from experiments.studies import Study, StudyError


def nearest_existing(path: Path) -> Path:
    """`path` itself if it exists (a dangling link included), else the closest of its parents that does."""
    absolute = path.absolute()
    return next(folder for folder in (absolute, *absolute.parents) if os.path.lexists(folder))


def check_writable(study: Study, outputpath: Path) -> None:
    """StudyError unless every run's directory is a folder this user can write in, or can make, reached without a
    link below `outputpath` (which MaskTrainer refuses): an output path that is a file or a read-only folder is bad
    input, one line before any point runs, not a failure per point."""
    for directory in dict.fromkeys(experiment_directory(point, outputpath) for point in study.points):
        folder = nearest_existing(directory)
        if not folder.is_dir():
            raise StudyError(f"cannot write to output path {outputpath}: {folder} is not a folder")
        if runlog.reached_through_link(outputpath, directory):
            raise StudyError(f"cannot write to output path {outputpath}: the way to {directory} passes through a "
                             f"symbolic link")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StudyError(f"cannot write to output path {outputpath}: {folder} is not writable")


def run_study(study: Study, outputpath: Path, dry_run: bool = False, say: Callable[[str], None] = print,
              jobs: int | None = None, runs_per_gpu: int = 1, stale_after: float | None = None,
              ray: str | None = None, ray_cpus: float | None = None, ray_gpus: float | None = None) -> int:
    """Complete every run of `study`; returns how many runs failed or are left unfinished.

    Up to `jobs` runs at a time on this machine (GPUs round-robin, `runs_per_gpu` on each), or as Ray tasks
    when `ray` names a cluster address ("local": a new cluster on this machine). Each point is claimed before
    it is trained; a point whose claim another runner keeps fresh is looked at again later. StudyError, before
    anything runs, where runs cannot be written under `outputpath`.
    """
    from experiments import claims, runner
    check_writable(study, outputpath)  # with --dry-run too: it tells what a real run would meet
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
