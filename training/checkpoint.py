"""The state of a run after its latest finished epoch, and the model a finished run leaves.

A checkpoint is one `.npz` (no pickle) of the model's and optimizer's variables, keyed by their Keras 3 variable
path (`model/dense_1/scores`, `optimizer/adam/dense_1_scores_momentum`), so a mismatch names the variable and the
file reads the same on every backend. It also names its owner (run id and settings digest), so a checkpoint
copied from another run is refused. The epoch's shuffle is derived from (seed, epoch), so no random-generator
state needs saving: restoring the variables and continuing with the next epoch reproduces an uninterrupted run.
"""
import os
import secrets
from pathlib import Path

import keras
import numpy as np

import networks.assembly  # noqa: F401  registers the layers and initializers a Model file holds
import runlog
from training import backends


def _variables(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict[str, keras.Variable]:
    return {**{f"model/{v.path}": v for v in model.weights}, **{f"optimizer/{v.path}": v for v in optimizer.variables}}


def save(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer, epoch: int,
         owner: tuple[str, str]) -> None:
    """Write the checkpoint of epoch `epoch`; `owner` is (run id, settings digest)."""
    arrays = {key: keras.ops.convert_to_numpy(v) for key, v in _variables(model, optimizer).items()}
    arrays.update(epoch=np.array(epoch), runId=np.array(owner[0]), settingsDigest=np.array(owner[1]))
    runlog.write_npz(path, arrays)


def _assign(source: Path, arrays: dict[str, np.ndarray], variables: dict[str, keras.Variable]) -> None:
    """Assign every variable its array by path; RunLogError naming the first variable that does not fit."""
    unknown = sorted(key for key in set(arrays) - set(variables) if "/" in key)
    if unknown:
        raise runlog.RunLogError(f"{source}: holds {unknown[0]}, which the model built from its configuration lacks")
    for key, variable in variables.items():
        if key not in arrays:
            raise runlog.RunLogError(f"{source}: lacks {key} of the model built from its configuration")
        if tuple(arrays[key].shape) != tuple(variable.shape):
            raise runlog.RunLogError(
                f"{source}: {key} has shape {tuple(arrays[key].shape)}, the model's is {tuple(variable.shape)}")
        variable.assign(arrays[key])


def _read_owned(path: Path, owner: tuple[str, str]) -> dict[str, np.ndarray]:
    """A checkpoint's arrays, after checking that it belongs to `owner` and names its epoch."""
    arrays = runlog.read_npz(path)
    recorded = tuple(str(arrays[key]) if key in arrays else None for key in ("runId", "settingsDigest"))
    if recorded == (None, None):
        raise runlog.RunLogError(f"{path}: names no owning run (written before checkpoints did), so it cannot be "
                                 f"told from another run's; resume it with the version that wrote it")
    if recorded != tuple(owner):
        raise runlog.RunLogError(f"{path}: belongs to another run (run {recorded[0]}, settings {recorded[1]}), "
                                 f"not to run {owner[0]} with settings {owner[1]}; refusing to resume from it")
    if "epoch" not in arrays or arrays["epoch"].shape != () or not np.issubdtype(arrays["epoch"].dtype, np.integer):
        raise runlog.RunLogError(f"{path}: lacks the epoch it was written after")
    return arrays


def restore(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer, owner: tuple[str, str]) -> int:
    """Load a checkpoint into a freshly built model and optimizer; returns its epoch.

    RunLogError when the file belongs to another run (another id or other settings) or does not fit the model.
    """
    arrays = _read_owned(path, owner)
    _assign(path, arrays, _variables(model, optimizer))
    return int(arrays["epoch"])


def restore_model(path: Path, model: keras.Model, owner: tuple[str, str]) -> int:
    """Load only the model's variables from a checkpoint (the optimizer's are left out); returns its epoch."""
    arrays = _read_owned(path, owner)
    _assign(path, {key: value for key, value in arrays.items() if not key.startswith("optimizer/")},
            {f"model/{v.path}": v for v in model.weights})
    return int(arrays["epoch"])


def save_model(path: Path, model: keras.Model) -> None:
    """`model.save` to a temporary `.keras` file beside `path`, then renamed over it (a kill leaves no half file)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp.keras")
    try:
        with backends.quiet_library_notices():
            model.save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_model(path: Path, compile: bool = True) -> keras.Model:
    """`keras.saving.load_model` (safe mode), quietly: Keras may import TensorFlow to read the file, even on JAX."""
    with backends.quiet_library_notices():
        return keras.saving.load_model(path, compile=compile)


def restore_from_model(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Load a finished run's saved model (weights, scores and optimizer state) to extend it."""
    if not path.exists():
        raise runlog.RunLogError(f"{path}: file not found, so the finished run cannot be extended")
    try:
        saved = load_model(path)
    except Exception as error:  # a damaged zip, a foreign file: Keras raises many kinds
        raise runlog.RunLogError(f"{path}: not a readable model of this run ({type(error).__name__})") from None
    if saved.optimizer is None:
        raise runlog.RunLogError(f"{path}: holds no optimizer state, so the run cannot be extended exactly")
    arrays = {key: keras.ops.convert_to_numpy(v) for key, v in _variables(saved, saved.optimizer).items()}
    _assign(path, arrays, _variables(model, optimizer))
