"""The state of a run after its latest finished epoch, and the model a finished run leaves.

A checkpoint is one `.npz` (no pickle) of the model's and optimizer's variables, keyed by their Keras 3 variable
path (`model/dense_1/scores`, `optimizer/adam/dense_1_scores_momentum`), so a mismatch names the variable and the
file reads the same on every backend. It also names its owner (run id and settings digest), so a checkpoint
copied from another run is refused, and carries the SHA-256 digest of each of its arrays, so an edited one is
refused too (`training.provenance`); a masked run's frozen kernels must moreover be the draw from its seed. The
epoch's shuffle is derived from (seed, epoch), so no random-generator state needs saving: restoring the variables
and continuing with the next epoch reproduces an uninterrupted run.
"""
import json
import os
import secrets
from pathlib import Path

import keras
import numpy as np

import networks.assembly  # noqa: F401  registers the layers and initializers a Model file holds
import runlog
from masks.layers import masked_layers
from training import backends, provenance

DIGESTS_KEY = "arrayDigests"  # a JSON text: the digest of every other array of the checkpoint, by key
LOG_DIGEST_KEY = "logDigest"  # the run's log up to the checkpoint's epoch (absent from older checkpoints)


def _variables(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict[str, keras.Variable]:
    return {**{f"model/{v.path}": v for v in model.weights}, **{f"optimizer/{v.path}": v for v in optimizer.variables}}


def save(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer, epoch: int,
         owner: tuple[str, str], log_digest: str | None = None) -> None:
    """Write the checkpoint of epoch `epoch`; `owner` is (run id, settings digest), `log_digest` that of the run's
    log as written beside it (`provenance.log_digest`)."""
    arrays = {key: keras.ops.convert_to_numpy(v) for key, v in _variables(model, optimizer).items()}
    arrays.update(epoch=np.array(epoch), runId=np.array(owner[0]), settingsDigest=np.array(owner[1]))
    if log_digest is not None:
        arrays[LOG_DIGEST_KEY] = np.array(log_digest)
    arrays[DIGESTS_KEY] = np.array(json.dumps(provenance.array_digests(arrays)))
    runlog.write_npz(path, arrays)


def _assign(source: Path, arrays: dict[str, np.ndarray], variables: dict[str, keras.Variable],
            model: keras.Model, drawn: dict[str, np.ndarray] | None) -> None:
    """Assign every variable its array by path; RunLogError naming the first variable that does not fit, or the
    first frozen kernel of `model` that is not the draw from the seed (`drawn`; None: Baseline), before any is."""
    unknown = sorted(key for key in set(arrays) - set(variables) if "/" in key)
    if unknown:
        raise runlog.RunLogError(f"{source}: holds {unknown[0]}, which the model built from its configuration lacks")
    for key, variable in variables.items():
        if key not in arrays:
            raise runlog.RunLogError(f"{source}: lacks {key} of the model built from its configuration")
        if tuple(arrays[key].shape) != tuple(variable.shape):
            raise runlog.RunLogError(
                f"{source}: {key} has shape {tuple(arrays[key].shape)}, the model's is {tuple(variable.shape)}")
    if drawn is not None:
        provenance.check_frozen_weights(
            {layer.name: arrays[f"model/{layer.kernel.path}"] for layer in masked_layers(model)}, drawn, source)
    for key, variable in variables.items():
        variable.assign(arrays[key])


def _check_digests(path: Path, arrays: dict[str, np.ndarray], run_id: str, legacy: bool) -> None:
    """The arrays must be those the run wrote: the digests saved with them say so. A checkpoint without them is
    accepted only for a `legacy` run (one whose record has no digests, from before they were written)."""
    if DIGESTS_KEY not in arrays:
        if legacy:
            return
        raise runlog.RunLogError(f"{path}: carries no digests of its arrays, which every checkpoint of run {run_id} "
                                 f"has; refusing it")
    try:
        digests = json.loads(str(arrays.pop(DIGESTS_KEY)))
    except (ValueError, RecursionError):
        digests = None
    if not provenance.is_digest_table(digests):
        raise runlog.RunLogError(f"{path}: {DIGESTS_KEY} is not a table of SHA-256 digests")
    provenance.check_arrays(path, digests, arrays, f"the checkpoint run {run_id} wrote")


def _read_owned(path: Path, owner: tuple[str, str], legacy: bool) -> dict[str, np.ndarray]:
    """A checkpoint's arrays, after checking that it belongs to `owner`, is as written and names its epoch."""
    arrays = runlog.read_npz(path)
    recorded = tuple(str(arrays[key]) if key in arrays else None for key in ("runId", "settingsDigest"))
    if recorded == (None, None):
        raise runlog.RunLogError(f"{path}: names no owning run (written before checkpoints did), so it cannot be "
                                 f"told from another run's; resume it with the version that wrote it")
    if recorded != tuple(owner):
        raise runlog.RunLogError(f"{path}: belongs to another run (run {recorded[0]}, settings {recorded[1]}), "
                                 f"not to run {owner[0]} with settings {owner[1]}; refusing to resume from it")
    _check_digests(path, arrays, owner[0], legacy)
    if "epoch" not in arrays or arrays["epoch"].shape != () or not np.issubdtype(arrays["epoch"].dtype, np.integer):
        raise runlog.RunLogError(f"{path}: lacks the epoch it was written after")
    return arrays


def restore(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer, owner: tuple[str, str],
            drawn: dict[str, np.ndarray] | None, legacy: bool = False) -> tuple[int, str | None]:
    """Load a checkpoint into a freshly built model and optimizer; returns its epoch and the digest of the log it
    was written with (None from a checkpoint older than that).

    RunLogError when the file belongs to another run (another id or other settings), was edited, holds frozen
    kernels other than `drawn` (the seed's, by layer name; None for Baseline) or does not fit the model.
    """
    arrays = _read_owned(path, owner, legacy)
    _assign(path, arrays, _variables(model, optimizer), model, drawn)
    return int(arrays["epoch"]), str(arrays[LOG_DIGEST_KEY]) if LOG_DIGEST_KEY in arrays else None


def restore_model(path: Path, model: keras.Model, owner: tuple[str, str], drawn: dict[str, np.ndarray] | None,
                  legacy: bool = False) -> int:
    """Load only the model's variables from a checkpoint (the optimizer's are left out); returns its epoch."""
    arrays = _read_owned(path, owner, legacy)
    _assign(path, {key: value for key, value in arrays.items() if not key.startswith("optimizer/")},
            {f"model/{v.path}": v for v in model.weights}, model, drawn)
    return int(arrays["epoch"])


def save_model(path: Path, model: keras.Model) -> None:
    """`model.save` to a temporary `.keras` file beside `path`, then renamed over it (a kill leaves no half file)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp.keras")
    try:
        with backends.quiet_library_notices():
            model.save(temporary)
        os.replace(temporary, path)
    except OSError as error:  # a full disk, named by the model file rather than its temporary
        raise runlog.write_failure(path, error) from None
    finally:
        temporary.unlink(missing_ok=True)


def load_model(path: Path, compile: bool = True) -> keras.Model:
    """`keras.saving.load_model` (safe mode), quietly: Keras may import TensorFlow to read the file, even on JAX."""
    with backends.quiet_library_notices():
        return keras.saving.load_model(path, compile=compile)


def restore_from_model(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer, digest: str | None,
                       drawn: dict[str, np.ndarray] | None) -> None:
    """Load a finished run's saved model (weights, scores and optimizer state) to extend it: the file must have
    the `digest` the run recorded (None: from before digests), its frozen kernels be `drawn` (as in `restore`)."""
    if not path.exists():
        raise runlog.RunLogError(f"{path}: file not found, so the finished run cannot be extended")
    provenance.check_file(path, digest, "the model the run saved")
    try:
        saved = load_model(path)
    except Exception as error:  # a damaged zip, a foreign file: Keras raises many kinds
        raise runlog.RunLogError(f"{path}: not a readable model of this run ({type(error).__name__})") from None
    if saved.optimizer is None:
        raise runlog.RunLogError(f"{path}: holds no optimizer state, so the run cannot be extended exactly")
    arrays = {key: keras.ops.convert_to_numpy(v) for key, v in _variables(saved, saved.optimizer).items()}
    _assign(path, arrays, _variables(model, optimizer), model, drawn)
