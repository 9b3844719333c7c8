#!/usr/bin/env bash
# The test suite on both Keras backends: `bash tests/run_both_backends.sh [PYTHON]`.
set -euo pipefail
PYTHON=${1:-python}
KERAS_BACKEND=tensorflow "$PYTHON" -m pytest -q --durations=5
KERAS_BACKEND=jax "$PYTHON" -m pytest -q --durations=5
