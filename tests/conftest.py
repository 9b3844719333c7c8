"""Shared test setup: the repository root on sys.path, quiet TensorFlow, Ctrl-C as in a terminal, the data."""
import os
import signal
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from training import backends  # noqa: E402  (the repository root is on sys.path now)

backends.add_xla_flag(backends.WIDE_VECTORS_FLAG)  # XLA's settings as in every run (`backends.load_keras`)
# A shell script's background job ignores SIGINT, and so would every trainer the tests start (ignored signals are
# inherited), and `_thread.interrupt_main` would do nothing here; restoring Python's handler gives this process
# and its children a terminal's Ctrl-C, which the tests send.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def data_directory() -> Path | None:
    """`$MASKTRAINER_DATA`, else `../shared/data` beside the repository, when it holds MNIST."""
    for candidate in (os.environ.get("MASKTRAINER_DATA"), REPO_ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def mnist_directory() -> Path:
    directory = data_directory()
    if directory is None:
        pytest.skip("no MNIST found: set MASKTRAINER_DATA to a folder holding mnist/*.gz")
    return directory
