"""Claims: the files that make every grid point train once, however many runners work on a study at a time.

Before it trains a point, a runner creates `Claim_<point>_g<n>.json` in the point's experiment directory with
`O_CREAT | O_EXCL`, which only one process can do; it holds the runner's host and pid and the time. The runner
hands the path to MaskTrainer in `MASKTRAINER_CLAIM` (`settings.names.CLAIM_ENV`); the trainer refreshes its
modification time when the run starts and after every epoch, and the runner refreshes it while its trainer lives. The claim with the highest
`<n>` is the point's claim. It is stale when it has not been refreshed for `stale_after` seconds (or at once
when it was made on this host and both its runner and its trainer are gone, or when it is damaged, so that nobody
can tell who holds it): a later runner then takes the
point over by creating generation `<n> + 1`, again with `O_EXCL`, so of two takers only one wins, and nobody
ever deletes or renames a claim it does not own. The runner that ends a point's run removes its claim and the
older generations.
"""
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

STALE_AFTER = 600.0  # seconds without a refresh after which a claim is abandoned (`--stale-after`)
MAX_PID = 2**22  # Linux's largest pid_max


def _pid_namespace() -> str | None:
    """This process's pid namespace ("pid:[4026531836]"): pids mean the same only inside one (Linux)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _is_pid(value) -> bool:
    """Whether `value` can be a process id (a claim's number may be anything: 10**30 overflows os.kill)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_PID


def _process_alive(pid) -> bool:
    """Whether `pid` names a live process here (a zombie, exited but not yet reaped, counts as gone)."""
    if not _is_pid(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass(frozen=True)
class Holder:
    """A claim that another runner holds and that is not stale: the point is skipped for now."""
    path: Path
    host: str
    pid: int | None
    age: float  # seconds since its last refresh

    def describe(self) -> str:
        return f"claimed by {self.host} pid {self.pid}, refreshed {self.age:.0f} s ago"


@dataclass(frozen=True)
class Claim:
    """A claim this process owns."""
    path: Path
    stem: str
    generation: int

    def refresh(self) -> bool:
        """Mark the claim alive; False when the file is gone (the claim was taken over and released)."""
        try:
            os.utime(self.path)
            return True
        except FileNotFoundError:
            return False

    def still_ours(self) -> bool:
        """Whether no other runner has taken the point over (a higher generation exists once one has)."""
        return self.path.exists() and all(generation <= self.generation
                                          for generation, _ in generations(self.path.parent, self.stem))

    def record_trainer(self, pid: int) -> None:
        """Add the trainer's pid, so that this host can tell a dead claim from a live orphaned trainer. The claim is
        replaced whole: another runner reading it half-written would take it for a damaged, stale one."""
        content = _read(self.path)
        if content is None:
            return
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            _create(temporary, {**content, "trainerPid": pid})
            if self.path.exists():  # not released meanwhile
                os.replace(temporary, self.path)
        except OSError:
            pass
        temporary.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove this claim and every older generation of it (whose owners are gone or superseded)."""
        for generation, path in generations(self.path.parent, self.stem):
            if generation <= self.generation:
                path.unlink(missing_ok=True)


def _create(path: Path, content: dict) -> None:
    """Create `path` holding `content`, in one write so that a reader finds it empty or whole; O_EXCL: never over
    another file or through a link (FileExistsError)."""
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(json.dumps(content).encode())


def claim_name(stem: str, generation: int) -> str:
    return f"Claim_{stem}_g{generation}.json"


def generations(directory: Path, stem: str) -> list[tuple[int, Path]]:
    """The point's claim files in `directory`, oldest generation first."""
    pattern = re.compile(rf"Claim_{re.escape(stem)}_g(\d+)\.json")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(match.group(1)), directory / name) for name in names if (match := pattern.fullmatch(name))]
    return sorted(found)


def _read(path: Path) -> dict | None:
    """A claim's content; {} while its runner is still writing it (empty); None when it is damaged: not a JSON
    object naming a host and a process id, whatever it holds instead (deep nesting, binary, a pid of 10**30)."""
    try:
        text = path.read_bytes()
        if not text:
            return {}
        content = json.loads(text)
    except (OSError, ValueError, RecursionError):  # decoding errors are ValueErrors
        return None
    well_formed = isinstance(content, dict) and isinstance(content.get("host"), str) and _is_pid(content.get("pid")) \
        and (content.get("trainerPid") is None or _is_pid(content["trainerPid"]))
    return content if well_formed else None


def _abandoned_here(content: dict) -> bool:
    """A claim made on this host, in this pid namespace, whose runner and trainer have both exited."""
    namespace = _pid_namespace()
    return (namespace is not None and content.get("host") == socket.gethostname()
            and content.get("pidNamespace") == namespace
            and not any(_process_alive(content.get(key)) for key in ("pid", "trainerPid")))


def acquire(directory: Path, stem: str, stale_after: float, note: dict | None = None) -> Claim | Holder:
    """Claim the point `stem` in `directory`: a Claim when this process now owns it, else the live Holder."""
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # retried when the current claim disappears between listing and reading it
        existing = generations(directory, stem)
        generation = 0
        if existing:
            top, path = existing[-1]
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            content = _read(path)  # a damaged claim is stale: nobody can tell who holds it
            if content is not None and age < stale_after and not _abandoned_here(content):
                return Holder(path, str(content.get("host", "?")), content.get("pid"), age)
            generation = top + 1
        path = directory / claim_name(stem, generation)
        content = {"host": socket.gethostname(), "pid": os.getpid(), "pidNamespace": _pid_namespace(),
                   "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(note or {})}
        try:
            _create(path, content)
        except FileExistsError:
            continue  # another runner claimed it first; look at its claim
        claim = Claim(path, stem, generation)
        if claim.still_ours():
            return claim
        path.unlink(missing_ok=True)  # a runner that listed later took over a newer generation meanwhile
    existing = generations(directory, stem)
    path = existing[-1][1] if existing else directory / claim_name(stem, 0)
    content = _read(path) or {}
    return Holder(path, str(content.get("host", "?")), content.get("pid"), 0.0)
