"""Training a study's grid points: claim each point, run MaskTrainer on it as a subprocess, report progress.

`train_point` does one point from claim to release; it is what a local job slot runs in a thread and what a Ray
task runs on a worker. `Scheduler` keeps up to as many points in flight as its pool has slots, puts points that
another runner holds aside and looks at them again later, and prints the progress lines. `LocalPool` runs points
in threads on this machine (`--jobs`, GPUs round-robin through CUDA_VISIBLE_DEVICES); `experiments.ray_pool`
runs them as Ray tasks (`--ray`).
"""
import concurrent.futures
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from experiments import claims, points
from experiments.studies import Study
# MaskTrainer's exit status after Ctrl-C (at its next safe point; finished epochs are kept)
from settings.commands import EXIT_INTERRUPTED as INTERRUPTED
from settings.names import CLAIM_ENV, THREAD_ENV


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_devices(environ: dict | None = None) -> list[str]:
    """The GPUs runs may use: CUDA_VISIBLE_DEVICES when set, else what `nvidia-smi -L` lists (no TF/JAX import)."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = []
        for device in (entry.strip() for entry in visible.split(",")):
            if not device or device.startswith("-"):
                break  # CUDA ignores everything from an invalid entry on ("-1" hides every GPU)
            devices.append(device)
        return devices
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return re.findall(r"^GPU (\d+):", listing.stdout, re.MULTILINE) if listing.returncode == 0 else []


def thread_environment(threads: int) -> dict[str, str]:
    """Variables that cap a trainer's CPU threads: TensorFlow's thread pools (which also run its XLA-compiled
    loop), XLA:CPU under JAX (PJRT_NPROC) and OpenMP / OpenBLAS in NumPy. XLA_FLAGS'
    --xla_cpu_multi_thread_eigen changed nothing measurable in TF 2.21 or jaxlib 0.10, so it is not set.
    TensorFlow's results differ in the last bits between thread counts, so a run trained with `--jobs 2` is not
    bit-identical to one trained with `--jobs 1` (each is repeatable with the same setting)."""
    return {name: str(threads) for name in THREAD_ENV}


# Several runs on one GPU: each takes GPU memory as it needs it instead of all of it at start.
SHARED_GPU_ENVIRONMENT = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt at a point.

    kind: "trained" (this runner ran MaskTrainer; see returncode), "held" (another runner holds a live claim),
    "finished" or "failed" (found so once claimed: another runner completed it meanwhile), "error" (the runner
    itself could not go on with the point, say an output path it cannot write).
    """
    kind: str
    action: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    message: str = ""  # who holds the point ("held"), or what went wrong ("error")
    lost_claim: bool = False


def heartbeat_seconds(stale_after: float) -> float:
    """How often a runner refreshes its claims: several times within the stale time."""
    return max(0.2, min(60.0, stale_after / 5))


def _forward(stream, prefix: str, say: Callable[[str], None]) -> None:
    for line in stream:
        say(prefix + line.rstrip("\n"))
    stream.close()


def _stop(process: subprocess.Popen, hurry: threading.Event | None = None) -> None:
    """Stop a trainer as Ctrl-C does: one SIGINT, which it obeys at its next safe point (between compiled calls,
    after an epoch's files are written). A second SIGINT, after a minute or at once when `hurry` is set or this
    thread is interrupted again, stops it where it is; SIGKILL comes half a minute later. Whatever ends it, the
    trainer keeps its last finished epoch."""
    for step, (send, patience) in enumerate(((signal.SIGINT, 60.0), (signal.SIGINT, 30.0), (signal.SIGKILL, 30.0))):
        try:
            process.send_signal(send)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + patience
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    return
                if step == 0 and hurry is not None and hurry.is_set():
                    break
                time.sleep(0.1)
        except KeyboardInterrupt:
            continue


def _start(command: list[str], environment: dict[str, str]) -> subprocess.Popen:
    """MaskTrainer with its output piped to us, in its own process group: Ctrl-C reaches the runner alone, which
    passes exactly one SIGINT on (`_stop`); a second one would cut the trainer's deferred stop short. SIGINT is
    unblocked for it: Ray's workers block it and a child inherits the blocked set."""
    unblocked = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}) if unblocked else None
    try:
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", process_group=0)
    finally:
        if unblocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def train_point(point: dict, outputpath: Path, number: int, total: int, stale_after: float,
                environment: dict[str, str], stop: threading.Event | None = None,
                hurry: threading.Event | None = None, say: Callable[[str], None] = print) -> Outcome:
    """Claim `point`, train or resume it in a MaskTrainer subprocess while refreshing the claim, release it.

    `stop` set: stop the trainer as Ctrl-C does; `hurry` set as well: at once (see `_stop`)."""
    try:
        return _train_point(point, outputpath, number, total, stale_after, environment, stop, hurry, say)
    except (OSError, ValueError) as error:  # an output path that cannot be written, an unreadable run file
        return Outcome("error", message=str(error))


def _train_point(point: dict, outputpath: Path, number: int, total: int, stale_after: float,
                 environment: dict[str, str], stop: threading.Event | None, hurry: threading.Event | None,
                 say: Callable[[str], None]) -> Outcome:
    claim = claims.acquire(points.experiment_directory(point, outputpath), points.claim_stem(point),
                           stale_after, note={"point": points.describe(point)})
    if isinstance(claim, claims.Holder):
        return Outcome("held", message=claim.describe())
    process = None
    try:
        action, config_path = points.find_run(point, outputpath)
        if action in ("finished", "failed"):
            return Outcome(action)
        say(f"[{number}/{total}] {action}: {points.describe(point)}")
        command = points.trainer_command(point, outputpath, action, config_path)
        began = time.monotonic()
        process = _start(command, {**os.environ, **environment, CLAIM_ENV: str(claim.path),
                                   "PYTHONUNBUFFERED": "1"})
        claim.record_trainer(process.pid)
        forwarder = threading.Thread(target=_forward, args=(process.stdout, f"    [{number}] ", say), daemon=True)
        forwarder.start()
        interval, refreshed, lost = heartbeat_seconds(stale_after), time.monotonic(), False
        while process.poll() is None:
            try:
                process.wait(timeout=min(0.5, interval))
            except subprocess.TimeoutExpired:
                pass
            if stop is not None and stop.is_set():
                _stop(process, hurry)
            elif time.monotonic() - refreshed >= interval:
                refreshed = time.monotonic()
                if not (claim.refresh() and claim.still_ours()):
                    say(f"[{number}/{total}] another runner took this point over; stopping here")
                    lost = True
                    _stop(process)
        forwarder.join(timeout=10)
        return Outcome("trained", action, process.returncode, time.monotonic() - began, lost_claim=lost)
    finally:
        try:
            if process is not None and process.poll() is None:  # interrupted (a cancelled Ray task)
                _stop(process, hurry)
        finally:
            claim.release()


class LocalPool:
    """Job slots on this machine: each a thread running `train_point`, with its own GPU where there are GPUs."""

    def __init__(self, outputpath: Path, stale_after: float, jobs: int | None, runs_per_gpu: int,
                 say: Callable[[str], None], devices: list[str] | None = None):
        devices = gpu_devices() if devices is None else devices
        if devices:
            slots = [device for _ in range(runs_per_gpu) for device in devices]  # round-robin over the GPUs
            if jobs is not None and jobs > len(slots):
                say(f"--jobs {jobs} lowered to {len(slots)}: {len(devices)} GPUs x --runs-per-gpu {runs_per_gpu}")
            slots = slots[:jobs or len(slots)]
        else:
            slots = [None] * (jobs or 1)
        self.outputpath, self.stale_after, self.say, self.capacity = outputpath, stale_after, say, len(slots)
        threads = max(1, available_cores() // len(slots))
        self.common = thread_environment(threads) if len(slots) > 1 else {}  # one job: the machine, as before
        self.shared_gpus = runs_per_gpu > 1
        self.free = queue.SimpleQueue()
        for slot in slots:
            self.free.put(slot)
        self.stop, self.hurry = threading.Event(), threading.Event()
        self.executor = concurrent.futures.ThreadPoolExecutor(len(slots), thread_name_prefix="job")
        where = f" on GPUs {', '.join(dict.fromkeys(slots))}" if devices else ""
        self.description = (f"{len(slots)} at a time{where}" +
                            (f", {threads} CPU thread{'s' if threads > 1 else ''} each" if len(slots) > 1 else ""))

    def submit(self, number: int, total: int, point: dict) -> concurrent.futures.Future:
        return self.executor.submit(self._train, number, total, point)

    def _train(self, number: int, total: int, point: dict) -> Outcome:
        device = self.free.get()
        try:
            environment = dict(self.common)
            if device is not None:
                environment["CUDA_VISIBLE_DEVICES"] = device
                if self.shared_gpus:
                    environment.update(SHARED_GPU_ENVIRONMENT)
            return train_point(point, self.outputpath, number, total, self.stale_after, environment, self.stop,
                               self.hurry, self.say)
        finally:
            self.free.put(device)

    def wait(self, handles: list, timeout: float) -> dict:
        done, _ = concurrent.futures.wait(handles, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        return {handle: handle.result() for handle in done}

    def slots(self) -> int:
        return self.capacity

    def interrupt(self, handles: list) -> None:
        """Stop every trainer (each keeps its last finished epoch) and release their claims; a second Ctrl-C
        meanwhile stops them at once."""
        self.stop.set()
        try:
            concurrent.futures.wait(handles)
        except KeyboardInterrupt:
            self.hurry.set()
            concurrent.futures.wait(handles)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def recheck_seconds(stale_after: float) -> float:
    """How long a point that another runner holds is left alone before it is looked at again."""
    return max(1.0, min(30.0, stale_after / 10))


class Scheduler:
    """Keeps the pool busy with the study's unfinished points and says how far the study is."""

    def __init__(self, study: Study, todo: list[dict], already: int, failed_before: int, pool,
                 stale_after: float, say: Callable[[str], None]):
        self.study, self.todo, self.pool, self.say = study, todo, pool, say
        self.already, self.failed_before = already, failed_before  # finished and failed before this session
        self.by_others: set[int] = set()
        self.recheck = recheck_seconds(stale_after)
        self.durations: list[float] = []
        self.result: dict[int, str] = {}  # number -> "finished", "failed" or "unfinished"
        self.trained_here = 0
        self.start = time.monotonic()

    def run(self) -> int:
        """Train until every point is finished or failed; returns how many points did not finish."""
        ready = deque(range(1, len(self.todo) + 1))
        waiting: dict[int, float] = {}  # number -> when to look again
        held_said: set[int] = set()
        in_flight: dict = {}  # handle -> number
        try:
            while ready or waiting or in_flight:
                now = time.monotonic()
                for number, when in list(waiting.items()):
                    if when <= now:
                        del waiting[number]
                        ready.append(number)
                while ready and len(in_flight) < self.pool.slots():
                    number = ready.popleft()
                    in_flight[self.pool.submit(number, len(self.todo), self.todo[number - 1])] = number
                if not in_flight:
                    time.sleep(max(0.05, min(waiting.values()) - time.monotonic()))
                    continue
                timeout = max(0.05, min(waiting.values()) - now) if waiting else 5.0
                for handle, outcome in self.pool.wait(list(in_flight), timeout).items():
                    number = in_flight.pop(handle)
                    if outcome.kind == "held":
                        waiting[number] = time.monotonic() + self.recheck
                        if number not in held_said:
                            held_said.add(number)
                            self.say(f"[{number}/{len(self.todo)}] {outcome.message}; looking again every "
                                     f"{minutes(self.recheck)}: {points.describe(self.todo[number - 1])}")
                    elif outcome.lost_claim:
                        waiting[number] = time.monotonic() + self.recheck
                    else:
                        self.report(number, outcome, len(in_flight), len(ready) + len(waiting))
                        if outcome.kind == "trained" and outcome.returncode == INTERRUPTED:
                            raise KeyboardInterrupt  # Ctrl-C reached the trainer: stop the study as it would
        except KeyboardInterrupt:
            self.say(f"study {self.study.name}: interrupting {len(in_flight)} runs; each keeps its last "
                     "finished epoch")
            self.pool.interrupt(list(in_flight))
            raise
        return self.close()

    def report(self, number: int, outcome: Outcome, running: int, left: int) -> None:
        total = len(self.todo)
        if outcome.kind == "error":
            self.result[number] = "failed"
            what = f"FAILED ({outcome.message})"
        elif outcome.kind != "trained":
            self.result[number] = outcome.kind
            self.by_others.add(number)
            what = f"{outcome.kind} by another runner"
        else:
            self.trained_here += 1
            code = outcome.returncode
            self.result[number] = "finished" if code == 0 else "unfinished" if code == INTERRUPTED else "failed"
            if code == 0:
                self.durations.append(outcome.seconds)
            what = ("done" if code == 0 else "interrupted" if code == INTERRUPTED else
                    f"killed by signal {-code}" if code < 0 else f"FAILED (exit {code})")
            what += f" in {minutes(outcome.seconds)}"
        complete = self.already + sum(result == "finished" for result in self.result.values())
        failed = sum(result == "failed" for result in self.result.values())
        line = (f"[{number}/{total}] {what}; {complete}/{len(self.study.points)} runs complete, "
                f"{running} running, {left} left")
        if failed:
            line += f", {failed} failed"
        if self.durations and (running or left):
            parallel = max(1, min(self.pool.slots(), running + left))
            line += f"; about {minutes(sum(self.durations) / len(self.durations) * (running + left) / parallel)} left"
        self.say(line)

    def close(self) -> int:
        results = self.result.items()
        finished = self.already + sum(result == "finished" for _, result in results)
        failed = [number for number, result in sorted(results) if result == "failed"]
        unfinished = [number for number, result in sorted(results) if result == "unfinished"]
        elsewhere = len(self.by_others)
        line = (f"study {self.study.name}: {finished}/{len(self.study.points)} runs finished; "
                f"{self.trained_here} trained here in {minutes(time.monotonic() - self.start)}"
                + (f", {elsewhere} by other runners" if elsewhere else ""))
        if failed:
            line += f"; {len(failed)} FAILED: " + " ".join(f"[{number}]" for number in failed)
        if self.failed_before:
            line += f"; {self.failed_before} failed in an earlier session (their configurations say why)"
        if unfinished:
            line += f"; {len(unfinished)} unfinished: run the same command again to resume"
        self.say(line)
        return len(failed) + len(unfinished)
