"""Shared test setup: the repository root on sys.path, quiet TensorFlow, and the data directory."""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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
