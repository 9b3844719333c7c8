"""Grid points as Ray tasks: each task claims its point and runs MaskTrainer as a subprocess on its worker.

Imported only for `run --ray`, so nothing else needs Ray. Every worker must see the output path and this
repository at the same paths as the driver (a shared filesystem, or the same image and mounts): the task imports
`experiments` from there and the runs are written there, where claims keep two drivers from training one point.
"""
import os
import sys
from pathlib import Path
from typing import Callable

from experiments import runner
from experiments.points import REPO_ROOT
from experiments.studies import StudyError


def train_task(point: dict, outputpath: str, number: int, total: int, stale_after: float, cpus: float,
               gpus: float) -> runner.Outcome:
    """One point on a Ray worker: threads capped at the task's CPUs; Ray has set CUDA_VISIBLE_DEVICES."""
    environment = runner.thread_environment(max(1, int(cpus)))
    if 0 < gpus < 1:
        environment.update(runner.SHARED_GPU_ENVIRONMENT)
    return runner.train_point(point, Path(outputpath), number, total, stale_after, environment)


class RayPool:
    """The same interface as runner.LocalPool, over a Ray cluster."""

    def __init__(self, address: str, outputpath: Path, stale_after: float, cpus: float, gpus: float,
                 say: Callable[[str], None]):
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every run's epoch lines, not "[repeated 3x]"
        if not sys.stdout.isatty():
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in a log file
        try:
            import ray
        except ImportError:
            raise StudyError("--ray needs Ray: pip install 'ray>=2.40,<3'") from None
        self.ray, self.cpus, self.gpus, self.say = ray, cpus, gpus, say
        self.outputpath, self.stale_after = str(outputpath.resolve()), stale_after
        code = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        options = dict(runtime_env={"env_vars": {"PYTHONPATH": code}}, log_to_driver=True, include_dashboard=False)
        if address == "local":
            options["num_cpus"] = runner.available_cores()
        try:
            ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise StudyError(f"--ray {address}: cannot start or reach a Ray cluster ({error})") from None
        self.remote = ray.remote(train_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        self.description = (f"as Ray tasks of {cpus:g} CPU{'s' if cpus != 1 else ''}"
                            + (f" and {gpus:g} GPU" if gpus else "") + f" on {self.cluster()}")

    def cluster(self) -> str:
        resources = self.ray.cluster_resources()
        return f"a cluster of {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs"

    def slots(self) -> int:
        """How many tasks the cluster can run at once now (it may grow: asked again at every scheduling step)."""
        resources = self.ray.cluster_resources()
        fits = [resources.get("CPU", 0) / self.cpus] + ([resources.get("GPU", 0) / self.gpus] if self.gpus else [])
        return max(1, int(min(fits) + 1e-9))

    def submit(self, number: int, total: int, point: dict):
        return self.remote.remote(point, self.outputpath, number, total, self.stale_after, self.cpus, self.gpus)

    def wait(self, handles: list, timeout: float) -> dict:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        results = {}
        for handle in done:
            try:
                results[handle] = self.ray.get(handle)
            except self.ray.exceptions.RayError as error:  # the worker died, or the task raised
                last = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                results[handle] = runner.Outcome("error", message=f"Ray task failed: {last}")
        return results

    def interrupt(self, handles: list) -> None:
        """Cancel the tasks: each stops its trainer (which keeps its last finished epoch) and releases its claim.
        A second Ctrl-C cancels again, which stops the trainers at once; a third kills the workers."""
        for force in (False, False, True):
            for handle in handles:
                self.ray.cancel(handle, force=force)
            try:
                self.ray.wait(handles, num_returns=len(handles), timeout=150)
                return
            except KeyboardInterrupt:
                continue

    def close(self) -> None:
        self.ray.shutdown()
        sys.stdout.flush()
