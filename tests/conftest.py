"""Shared test setup: the repository root on sys.path, quiet TensorFlow, one compilation cache per session, Ctrl-C
as in a terminal, the data."""
import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def share_compiled_programs() -> None:
    """The suite compiles the same steps again and again, in many tests and processes: one folder per session holds
    JAX's persistent compilation cache, which pytest-xdist's workers and every trainer a test starts inherit through
    the environment. A hit loads the executable that the miss compiled, so no result changes; the JAX pass takes a
    sixth less time (TensorFlow's XLA cache, `--tf_xla_persistent_cache_directory`, saved nothing measurable). The
    session that made the folder removes it."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="masktrainer-tests-xla-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=folder, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


share_compiled_programs()
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


# The files that take longest, longest first (a TensorFlow pass on 2 cores: 147, 128, 108, 97, 80 and 78 s of the
# pass's 928). pytest-xdist hands whole files to its workers in collection order (`--no-loadscope-reorder` in
# tests/run_both_backends.sh; its default hands out the files with the most tests first, which put these last), and
# a long file handed out last leaves the other worker idle until it ends.
LONGEST_FIRST = ("test_runs.py", "test_lifecycle.py", "test_studies_runners.py", "test_export.py", "test_backends.py",
                 "test_resnet.py")


def pytest_collection_modifyitems(items):
    place = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: place.get(item.path.name, len(place)))
