"""Where a run's state came from: digests written with the state and checked on every load (issue 25).

A run's configuration holds a `digests` table of SHA-256 digests: `data` (the dataset as read, per array),
`weights` and `preprocessing` (the arrays of the files written at epoch 0), and once it finishes `masks` (arrays)
and `model` (the file's bytes). A checkpoint carries the digests of its own arrays, so a kill between writing it
and any other file leaves nothing to reconcile. A masked run's frozen weights are also checked against the draw
from its seed, wherever they are read. Every mismatch is a RunLogError, one line naming the file and what differs.
NumPy only (no Keras), so Exporter refuses a file before TensorFlow loads.
"""
import hashlib
import json
from pathlib import Path

import numpy as np

import runlog

RECORD_KEY = "digests"
# one digest each: the Model file's bytes, the log's epochs (`log_digest`), the settings (`RunConfig.digest`)
SINGLE_DIGESTS = ("model", "log", "settings")


def array_digest(array) -> str:
    """SHA-256 of an array's dtype, shape and bytes, so that a cast or reshape also counts as a change."""
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array)
    return digest.hexdigest()


def array_digests(arrays: dict) -> dict[str, str]:
    return {key: array_digest(value) for key, value in arrays.items()}


def data_digests(raw: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> dict[str, str]:
    """The dataset as read, before the split and `trainsize`: every training image enters the normalisation.

    Labels are hashed as int64, whatever integer type the source gave them, so the digest does not depend on it.
    """
    x_train, y_train, x_test, y_test = raw
    return array_digests({"trainImages": x_train, "trainLabels": np.asarray(y_train, "<i8"),
                          "testImages": x_test, "testLabels": np.asarray(y_test, "<i8")})


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (a `.keras` model, whose arrays Keras alone can read)."""
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise runlog.RunLogError(f"{path}: cannot be read ({error.strerror or error})") from None


def is_digest_table(value) -> bool:
    """A JSON table of digests: {name: SHA-256 hex text}."""
    return isinstance(value, dict) and all(isinstance(digest, str) for digest in value.values())


def log_digest(log: dict) -> str:
    """SHA-256 of a log's per-epoch lists (as JSON): a checkpoint carries that of the log as it was written beside
    it, and a finished run's record that of its whole log, so a log copied from another run, or edited, is refused
    (a log being resumed is first cut back to the checkpoint's or model's epoch)."""
    epochs = {key: log[key] for key in runlog.PER_EPOCH_KEYS}
    return hashlib.sha256(json.dumps(epochs, sort_keys=True, allow_nan=False).encode()).hexdigest()


def check_log(path, log: dict, expected: str | None, run_id: str) -> None:
    """RunLogError naming `path` unless the log has the digest `expected` (None: not recorded, from before logs
    had one)."""
    found = log_digest(log)
    if expected is not None and found != expected:
        raise runlog.RunLogError(f"{path}: epochs 0-{len(log['testAccuracy']) - 1} differ from those run {run_id} "
                                 f"logged (SHA-256 {expected[:12]}..., found {found[:12]}...)")


def recorded(record: dict, config_path: Path) -> dict:
    """The record's digest table ({} for a run from before digests); RunLogError naming the file if malformed, or
    if it lacks the table although it names its score initializer, which only versions that record digests write,
    and has a log, which they write after the digests (a table deleted to skip the checks)."""
    if RECORD_KEY not in record and "scoreInitializer" in record and \
            runlog.RunFiles.from_config_path(config_path).log_json.exists():
        raise runlog.RunLogError(f"{config_path}: records no '{RECORD_KEY}', which the version that wrote it (one "
                                 f"that records scoreInitializer) always records; refusing it")
    digests = record.get(RECORD_KEY, {})
    if not (isinstance(digests, dict) and all(
            isinstance(value, str) if key in SINGLE_DIGESTS else is_digest_table(value)
            for key, value in digests.items())):
        raise runlog.RunLogError(f"{config_path}: '{RECORD_KEY}' should map data, weights, preprocessing and "
                                 f"masks to tables of SHA-256 digests and model, log and settings to one each")
    return digests


def records_digest(record: dict, kind: str) -> bool:
    """Whether the record's digest table (checked where it is read, `recorded`) holds `kind`: "data" once the run
    recorded its digests at epoch 0 (runs from before issue 25 did not), "model" once it has finished."""
    digests = record.get(RECORD_KEY)
    return isinstance(digests, dict) and kind in digests


def legacy_warning(run_id: str) -> str:
    """The line a resume of such a run prints: it is accepted, on fewer checks than a run with digests gets."""
    return (f"warning: run {run_id} records no digests (written before they were): its data, checkpoint and model "
            f"are checked only against its seed's weights and its preprocessing")


def check_arrays(path, expected: dict[str, str] | None, arrays: dict, origin: str) -> None:
    """RunLogError naming `path` and the first of its arrays whose digest is not the `expected` one."""
    check_digests(path, expected, array_digests(arrays), origin)


def check_digests(path, expected: dict[str, str] | None, found: dict[str, str], origin: str) -> None:
    """RunLogError naming `path` and the first key whose digest in `found` is not the `expected` one (None: not
    recorded, nothing to check); `origin` says where the expected ones came from ("the file run 1a2b3c4 wrote")."""
    if expected is None:
        return
    for key in dict.fromkeys([*expected, *found]):
        if key not in found:
            raise runlog.RunLogError(f"{path}: lacks {key} of {origin}")
        if key not in expected:
            raise runlog.RunLogError(f"{path}: holds {key}, which {origin} lacks")
        if found[key] != expected[key]:
            raise runlog.RunLogError(f"{path}: {key} differs from {origin} "
                                     f"(SHA-256 {expected[key][:12]}..., found {found[key][:12]}...)")


def check_file(path: Path, expected: str | None, origin: str) -> None:
    """RunLogError naming `path` when its bytes are not those of `expected` (None: not recorded)."""
    if expected is None:
        return
    found = file_digest(path)
    if found != expected:
        raise runlog.RunLogError(f"{path}: not {origin} (SHA-256 {expected[:12]}..., found {found[:12]}...)")


def check_frozen_weights(found: dict[str, np.ndarray], drawn: dict[str, np.ndarray], path) -> None:
    """A masked layer's frozen W must be exactly the one drawn from the run's seed (`drawn`, by layer name):
    the trainer and Exporter both call this before using a file's weights."""
    for name, kernel in drawn.items():
        if name not in found:
            raise runlog.RunLogError(f"{path}: lacks the weights of {name}")
        if not np.array_equal(found[name], kernel):
            raise runlog.RunLogError(f"{path}: the weights of {name} are not those drawn from the run's seed: "
                                     f"the file belongs to another run, or was edited")


def check_saved_inputs(files: runlog.RunFiles, record: dict, data: dict[str, str], drawn: dict[str, np.ndarray],
                       preprocessing: dict[str, np.ndarray]) -> None:
    """Before a run resumes: its data (`data`, digests) is what it trained on; its Weights file is what it wrote at
    epoch 0 and the draw from its seed (`drawn`); its Preprocessing file is what it wrote and the statistics of
    the data (`preprocessing`, as computed now). A run from before digests gets the seed and statistics checks."""
    digests, run = recorded(record, files.config), f"run {files.run_id}"
    check_digests(record["datasetSource"], digests.get("data"), data, f"the data {run} trained on")
    weights = runlog.read_npz(files.weights)
    check_arrays(files.weights, digests.get("weights"), weights, f"the file {run} wrote")
    check_frozen_weights(weights, drawn, files.weights)
    saved = runlog.read_npz(files.preprocessing)
    check_arrays(files.preprocessing, digests.get("preprocessing"), saved, f"the file {run} wrote")
    check_arrays(files.preprocessing, array_digests(preprocessing), saved,
                 f"the statistics of the data in {record['datasetSource']}")
