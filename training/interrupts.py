"""Ctrl-C, SIGTERM and SIGHUP during training are never lost: they stop the run at the next safe point.

A KeyboardInterrupt raised inside a library call (a compiled step, a file write) can be swallowed or leave a
half-made state; instead the first stop signal only sets a flag, which the run checks between compiled calls and
after every epoch's files are written. A second one interrupts at once. SIGTERM (`timeout`, Slurm, Kubernetes)
and SIGHUP (a closed terminal) stop a run as Ctrl-C does, and the exit status, 128 + the signal's number, says
which came; a signal the process was started ignoring (SIGHUP under `nohup`) stays ignored.
"""
import signal
import threading

# Ctrl-C, a batch system's or a container's stop, a closed terminal (Windows has no SIGHUP)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal as Python's Ctrl-C exception, so that everything that handles Ctrl-C handles it too."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


def exit_status(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports it: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + getattr(stop, "signum", signal.SIGINT)


def describe(stop: KeyboardInterrupt) -> str:
    """"interrupted" for Ctrl-C, else which signal stopped the command."""
    signum = getattr(stop, "signum", signal.SIGINT)
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


def _raise(signum, frame):
    raise Interrupted(signum)


def _taken(signum: int) -> bool:
    """Ctrl-C is always taken (a study runner stops its trainers with it); another signal unless it is ignored."""
    return signum == signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN


def raise_on_stop_signals() -> None:
    """From now on SIGTERM and SIGHUP raise Interrupted where Ctrl-C raises KeyboardInterrupt (a command's start)."""
    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT and _taken(signum):
            signal.signal(signum, _raise)


class DeferredInterrupt:
    """Context manager: a stop signal sets `requested` (its number); `check()` raises Interrupted once it is set."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise Interrupted(signum)
        self.requested = signum

    def check(self) -> None:
        if self.requested is not None:
            raise Interrupted(self.requested)

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS if _taken(signum)}
        return self

    def __exit__(self, *exception) -> None:
        for signum, previous in self._previous.items():
            # None: a handler set outside Python, which cannot be put back; the default then, never a dead handler
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous = {}
