"""Ctrl-C during training is never lost: it stops the run at the next safe point.

A KeyboardInterrupt raised inside a library call (a compiled step, a file write) can be swallowed or leave a
half-made state; instead the first SIGINT only sets a flag, which the run checks between compiled calls and
after every epoch's files are written. A second Ctrl-C interrupts at once.
"""
import signal
import threading


class DeferredInterrupt:
    """Context manager: SIGINT sets `requested`; `check()` raises KeyboardInterrupt once it is set."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exception) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
