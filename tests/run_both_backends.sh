#!/usr/bin/env bash
# The test suite on both Keras backends: `bash tests/run_both_backends.sh [PYTHON [PYTEST ARGUMENTS]]`, e.g.
# `bash tests/run_both_backends.sh .venv/bin/python -m "not slow"` for the quick tests alone (pytest.ini's `slow`).
# The JAX pass leaves out the tests that only read and write files (plots, run files, datasets, claims) and the
# study runners' process tests, which the TensorFlow pass covers; every test that trains or differentiates runs twice.
# TEST_WORKERS (default 2) test files run at once, each file in one process (pytest-xdist's `loadfile`), so a
# file's module fixtures train once; the longest files go first (tests/conftest.py, `LONGEST_FIRST`).
set -euo pipefail
PYTHON=${1:-python}
shift || true
PARALLEL=(-n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)
KERAS_BACKEND=tensorflow "$PYTHON" -m pytest -q --durations=5 "${PARALLEL[@]}" "$@"
KERAS_BACKEND=jax "$PYTHON" -m pytest -q --durations=5 "${PARALLEL[@]}" --ignore=tests/test_plotter.py --ignore=tests/test_runlog.py \
    --ignore=tests/test_datasets.py --ignore=tests/test_studies_claims.py --ignore=tests/test_studies_runners.py \
    --ignore=tests/test_experiments.py "$@"
