"""What several test files share: running MaskTrainer (in-process for speed, as a subprocess where the process
itself matters), synthetic data and run files, and the checks of a refusal. Keras and the trainer are imported
only by the helpers that need them, so the tests of the light modules stay light."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import datasets
import experiments
import runlog

if TYPE_CHECKING:
    from training.run import Run

REPO_ROOT = Path(__file__).resolve().parent.parent


def new_run(output: Path, data: Path, *flags: str, callbacks=None) -> "Run":
    """A Run built exactly as `MaskTrainer.py --outputpath output --datadir data flags...` builds it."""
    import MaskTrainer
    from training.run import Run
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


def small_resnet_jit() -> list[str]:
    """`--jit` for a ResNet20 that trains a few steps: on TensorFlow, compiling with XLA costs more than it saves
    (a fifth of a two-epoch run: 31.7 s against 25.2); JAX without it runs op by op."""
    import keras
    return ["--jit", "off" if keras.backend.backend() == "tensorflow" else "auto"]


def comparable_log(path: Path) -> dict:
    """A log without its timings, which differ between identical runs."""
    log = json.loads(path.read_text())
    del log["epochSeconds"]
    return log


def output_and_gradient(function, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`function(x)` returns (output, scalar): the output (an array or a tuple of arrays) and d scalar / d x at
    x = `value`, on Keras's backend. The one place the tests differentiate, so gradient tests run on both backends.
    """
    import keras
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


RANDOM_BYTES = np.random.default_rng(7).integers(0, 256, 300, dtype=np.uint8).tobytes()


def refusal(call, path: Path, error_type: type[ValueError] = datasets.DatasetError) -> str:
    """The message of the `error_type` that `call()` raises; it must be one line naming `path`."""
    with pytest.raises(error_type) as raised:
        call()
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert "\n" not in message and str(path) in message, message
    return message


def unreadable(path: Path) -> None:
    """Make `path` a file whose every read fails with an I/O error, as on a failing disk."""
    if not Path("/proc/self/mem").is_file():
        pytest.skip("needs Linux's /proc/self/mem, a file that refuses reads")
    path.unlink(missing_ok=True)
    path.symlink_to("/proc/self/mem")


def write_cifar_batches(root, train: int, test: int, payload=None) -> None:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in [(f"data_batch_{i}", train // 5) for i in range(1, 6)] + [("test_batch", test)]:
        batch = payload or {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                            b"labels": [int(v) for v in rng.integers(0, 10, count)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)


POINT = {"nettype": "LeNet", "traintype": "FreeFlipping", "initializer": "heconstant", "seed": 2,
         "dataset": "mnist", "maxepochs": 3, "batchsize": 25, "lr": 0.001}


def write_run(outputpath: Path, point: dict, run_id: str, status: str | None, epochs: int | None, **changes) -> Path:
    """A synthetic run: its Config_ID file (as MaskTrainer records it) and, for `epochs`, a log of that length."""
    directory = experiments.experiment_directory(point, outputpath)
    files = runlog.RunFiles(directory, run_id)
    config = {**experiments.resolved(point), "p1": 0.5, "trainsize": None, "precision": "float32",
              "status": status, "changedMeans": "flipped", **changes}
    runlog.write_json(files.config, config)
    if epochs is not None:
        log = {key: [0.1] * (epochs + 1) for key in runlog.EPOCH_KEYS}
        runlog.write_log(files, dict(log, totalWeights=10, remainingWeightsPerLayer=[[[0, 0, 10] * 2]] * (epochs + 1)))
    return files.config
