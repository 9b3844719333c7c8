#!/usr/bin/env bash
# The test suite on both Keras backends: `bash tests/run_both_backends.sh [PYTHON]`.
# The JAX pass leaves out the tests that only read and write files (plots, run files, datasets, claims) and the
# study runners' process tests, which the TensorFlow pass covers; every test that trains or differentiates runs twice.
set -euo pipefail
PYTHON=${1:-python}
KERAS_BACKEND=tensorflow "$PYTHON" -m pytest -q --durations=5
KERAS_BACKEND=jax "$PYTHON" -m pytest -q --durations=5 --ignore=tests/test_plotter.py --ignore=tests/test_runlog.py \
    --ignore=tests/test_datasets.py --ignore=tests/test_studies_claims.py --ignore=tests/test_studies_runners.py \
    --ignore=tests/test_experiments.py
