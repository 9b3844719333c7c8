"""The two backends: the same run on each, a JAX run where TensorFlow cannot load, and the backend checks."""
import json
import os
import subprocess
import sys

import keras
import pytest

import MaskTrainer
import runlog
from tests.helpers import REPO_ROOT, only_run

# Runs a script with TensorFlow unimportable, as on a GPU machine that has only JAX.
WITHOUT_TENSORFLOW = """
import runpy, sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("TensorFlow is not installed here")
sys.meta_path.insert(0, NoTensorFlow())
script, *sys.argv = sys.argv[1:]
sys.argv.insert(0, script)
runpy.run_path(script, run_name="__main__") if script.endswith(".py") else runpy.run_module(script, run_name="__main__")
"""


def run_script(*args: str, backend: str, cwd=REPO_ROOT, blocked: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", WITHOUT_TENSORFLOW, *args] if blocked else [sys.executable, *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO_ROOT)})


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() == "jax", reason="runs both backends itself: once, in the TensorFlow pass")
@pytest.mark.parametrize("traintype", ["FreePruning", "EdgePopup", "Supermask", "SignedSupermask"])
def test_one_lenet_epoch_agrees_between_the_backends(tmp_path, mnist_directory, capsys, traintype):
    """One epoch of a 10,000-image slice (400 steps) on each backend, scored on the whole test set; TensorFlow's
    run in this process (the pass is TensorFlow's), JAX's in a process of its own. Supermask at Zhou et al.'s large
    step size, without which 400 steps leave it near chance (0.17), where agreeing would say little."""
    lr = "0.1" if traintype == "Supermask" else "0.001"
    flags = ["--maxepochs", "1", "--trainsize", "10000", "--lr", lr, "--seed", "11", "--datadir", str(mnist_directory),
             "--traintype", traintype]
    assert MaskTrainer.main([*flags, "--outputpath", str(tmp_path / "tensorflow")]) == 0, capsys.readouterr().err
    result = run_script("MaskTrainer.py", *flags, "--outputpath", str(tmp_path / "jax"), backend="jax")
    assert result.returncode == 0, result.stderr[-2000:]
    accuracies = {}
    for backend in ("tensorflow", "jax"):
        files = only_run(tmp_path / backend)
        assert json.loads(files.config.read_text())["backend"] == backend
        accuracies[backend] = runlog.read_log(files.log_json)["testAccuracy"]
    assert accuracies["tensorflow"][0] == accuracies["jax"][0], "the same seed draws the same network"
    assert abs(accuracies["tensorflow"][1] - accuracies["jax"][1]) <= 0.01


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs JAX itself: once, in the JAX pass")
def test_a_jax_run_needs_no_tensorflow(tmp_path, mnist_directory):
    result = run_script("MaskTrainer.py", "--maxepochs", "1", "--trainsize", "2000", "--seed", "2", "--tensorboard",
                        "--datadir", str(mnist_directory), "--outputpath", str(tmp_path), backend="jax", blocked=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--tensorboard needs TensorFlow" in result.stderr and "Traceback" not in result.stderr
    files = only_run(tmp_path)
    assert json.loads(files.config.read_text())["status"] == "finished" and files.model.exists()
    for tool in ([str(REPO_ROOT / "Plotter.py"), str(files.directory)], ["experiments", "list"]):
        result = run_script(*tool, backend="jax", blocked=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("before, after", [
    ("", "--xla_cpu_prefer_vector_width=512"),
    ("--xla_dump_to=d", "--xla_dump_to=d --xla_cpu_prefer_vector_width=512"),
    ("--xla_cpu_prefer_vector_width=256", "--xla_cpu_prefer_vector_width=256"),  # the user's choice stands
    ("--xla_cpu_prefer_vector_width=512", "--xla_cpu_prefer_vector_width=512")])
def test_the_wide_vectors_flag_is_added_once_and_never_over_the_users(monkeypatch, before, after):
    from training import backends
    monkeypatch.setenv("XLA_FLAGS", before)
    backends.add_xla_flag(backends.WIDE_VECTORS_FLAG)
    assert os.environ["XLA_FLAGS"] == after


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="runs its own processes: once, in the TensorFlow pass")
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_an_unsupported_backend_is_refused_before_any_work(tmp_path, backend):
    result = run_script("MaskTrainer.py", "--outputpath", str(tmp_path), backend=backend)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith(f"KERAS_BACKEND={backend} is not supported; use tensorflow or jax")
    assert not any(tmp_path.iterdir())


def test_resuming_with_the_other_backend_is_refused(tmp_path, mnist_directory, capsys):
    assert MaskTrainer.main(["--maxepochs", "1", "--trainsize", "1000", "--seed", "3", "--datadir",
                             str(mnist_directory), "--outputpath", str(tmp_path)]) == 0
    files = only_run(tmp_path)
    config = json.loads(files.config.read_text())
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    config.update(backend=other, status="running")
    files.config.write_text(json.dumps(config))
    assert MaskTrainer.main(["--resume", str(files.config)]) == 2
    assert f"trained with KERAS_BACKEND={other}; resume it with that backend" in capsys.readouterr().err


def test_checkpoints_are_keyed_by_variable_path(tmp_path, mnist_directory):
    from tests.helpers import new_run
    from training import checkpoint
    run = new_run(tmp_path, mnist_directory, "--trainsize", "1000", "--maxepochs", "1", "--seed", "3")
    checkpoint.save(tmp_path / "c.npz", run.model, run.optimizer, 0, owner=("abc", "def"))
    keys = set(runlog.read_npz(tmp_path / "c.npz"))
    assert {"model/dense_1/kernel", "model/dense_3/scores", "optimizer/adam/dense_2_scores_momentum",
            "optimizer/adam/iteration", "epoch", "runId", "settingsDigest"} <= keys


def test_mask_rs_under_float16_stays_finite():
    import numpy as np
    from masks import functions
    scores = keras.ops.convert_to_tensor(np.linspace(-1, 1, 300 * 300, dtype=np.float32).reshape(300, 300),
                                         dtype="float16")
    mask = keras.ops.convert_to_numpy(functions.rescaled_binary_mask(scores)).astype(np.float32)
    on = np.count_nonzero(mask)
    assert np.all(np.isfinite(mask)) and np.allclose(mask[mask > 0], 90000 / (1 + on), rtol=1e-3)
