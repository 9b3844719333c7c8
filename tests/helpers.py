"""Running MaskTrainer from tests: in-process for speed, as a subprocess where the process itself matters."""
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

import MaskTrainer
import runlog
from training.run import Run

REPO_ROOT = Path(__file__).resolve().parent.parent


def new_run(output: Path, data: Path, *flags: str, callbacks=None) -> Run:
    """A Run built exactly as `MaskTrainer.py --outputpath output --datadir data flags...` builds it."""
    args = MaskTrainer.build_parser().parse_args(["--outputpath", str(output), "--datadir", str(data), *flags])
    settings, record, files = MaskTrainer.resolve_run(args)
    return Run(settings, record, files, callbacks=callbacks, print_line=lambda line: None)


def only_run(output: Path) -> runlog.RunFiles:
    """The files of the single run under `output`."""
    (config_path,) = output.rglob("Config_ID*.json")
    return runlog.RunFiles.from_config_path(config_path)


def trainer_process(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """MaskTrainer.py as a child process, its output captured as text."""
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "MaskTrainer.py"), *args], cwd=REPO_ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def comparable_log(path: Path) -> dict:
    """A log without its timings, which differ between identical runs."""
    log = json.loads(path.read_text())
    del log["epochSeconds"]
    return log


def output_and_gradient(function, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`function(x)` returns (output, scalar): the output (an array or a tuple of arrays) and d scalar / d x at
    x = `value`, on Keras's backend. The one place the tests differentiate, so gradient tests run on both backends.
    """
    if keras.backend.backend() == "jax":
        import jax
        (_, output), gradient = jax.value_and_grad(lambda x: tuple(reversed(function(x))), has_aux=True)(
            jax.numpy.asarray(value))
        return _numpy(output), np.asarray(gradient)
    import tensorflow as tf
    variable = tf.Variable(value)
    with tf.GradientTape() as tape:
        output, scalar = function(variable)
    return _numpy(output), tape.gradient(scalar, variable).numpy()


def _numpy(output):
    return tuple(map(np.asarray, output)) if isinstance(output, tuple) else np.asarray(output)
