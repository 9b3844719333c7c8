"""The files of one run (SPEC.md section 7): where they live, how they are written and read back.

The trainer writes through this module and the plotter reads through it, so the two always agree on names
and keys. Every write is atomic (a temporary file in the same folder, then `os.replace`), so an interrupted
run leaves either the previous complete file or the new one, never half a file; a kill -9 mid-write can leave
the temporary, which `clean_temporaries` removes. Nothing here uses pickle. Every reader refuses a damaged or
invalid file with a RunLogError, one line naming the file.
"""
import contextlib
import csv
import io
import json
import math
import os
import re
import reprlib
import secrets
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from settings import types as training_types
from settings.config import RunConfig

EPOCH_KEYS = ("trainLoss", "valLoss", "testLoss", "trainAccuracy", "valAccuracy", "testAccuracy",
              "remainingWeights", "changedWeights", "epochSeconds")
LAYER_COUNT_NAMES = ("negativeMasks", "zeroMasks", "positiveMasks",
                     "negativeWeights", "zeroWeights", "positiveWeights")
PER_EPOCH_KEYS = EPOCH_KEYS + ("remainingWeightsPerLayer",)  # the lists with one entry per epoch
REQUIRED_LOG_KEYS = PER_EPOCH_KEYS + ("totalWeights",)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class RunLogError(ValueError):
    """A run file that is missing, unreadable, not in the expected form, or data that cannot be written in it;
    the message names the file."""


def new_run_id() -> str:
    """A fresh 7-hex-character run id."""
    return secrets.token_hex(4)[:7]


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run's files."""
    directory: Path
    run_id: str

    def _path(self, stem: str, suffix: str) -> Path:
        return self.directory / f"{stem}_ID{self.run_id}{suffix}"

    @property
    def config(self) -> Path:
        return self._path("Config", ".json")

    @property
    def log_json(self) -> Path:
        return self._path("TrainLogs", ".json")

    @property
    def log_csv(self) -> Path:
        return self._path("TrainLogs", ".csv")

    @property
    def weights(self) -> Path:
        return self._path("Weights", ".npz")

    @property
    def masks(self) -> Path:
        return self._path("Masks", ".npz")

    @property
    def checkpoint(self) -> Path:
        return self._path("Checkpoint", ".npz")

    @property
    def preprocessing(self) -> Path:
        """The input normalisation the run trained with: `mean_image`, `std` and `input_scale`."""
        return self._path("Preprocessing", ".npz")

    @property
    def model(self) -> Path:
        """The finished run's masked model (scores and optimizer state included), a `.keras` file."""
        return self._path("Model", ".keras")

    def paths(self) -> tuple[Path, ...]:
        """Every file a run may have, in the order of the properties above."""
        return tuple(getattr(self, name) for name, value in vars(RunFiles).items() if isinstance(value, property))

    @classmethod
    def from_config_path(cls, config_path: str | Path) -> "RunFiles":
        path = Path(config_path)
        name = path.name
        if not (name.startswith("Config_ID") and name.endswith(".json")):
            raise RunLogError(f"{path}: not a Config_ID<id>.json file")
        return cls(path.parent, name[len("Config_ID"):-len(".json")])


def _run_file_name_pattern() -> re.Pattern:
    """`<stem>_ID<any id><suffix>` for every stem and suffix of RunFiles (`Config`, ..., `.json`, `.keras`), in any
    combination and any letter case (some file systems ignore case)."""
    probe = RunFiles(Path(), "")
    stems = "|".join(sorted({re.escape(path.name.split("_ID")[0]) for path in probe.paths()}))
    suffixes = "|".join(sorted({re.escape(path.suffix) for path in probe.paths()}))
    return re.compile(rf"({stems})_ID.*({suffixes})", re.IGNORECASE | re.DOTALL)


_RUN_FILE_NAME = _run_file_name_pattern()


def is_run_file_name(name: str) -> bool:
    """Whether `name` has the form of a run's file (`Config_ID<id>.json`, `Model_ID<id>.keras`, `Config_ID<id>.keras`,
    ...): only that run's trainer writes such a file, so every other writer refuses the name."""
    return _RUN_FILE_NAME.fullmatch(name) is not None


def inside(root: str | Path, name: str | Path) -> Path | None:
    """`root / name` when it stays inside `root` without passing through a link, else None: `name` must be
    relative, without `..`, and no existing component of it (the last included) may be a symbolic link, nor one
    before the last anything but a folder. What a command writes or deletes in a folder it owns goes through here."""
    if not isinstance(name, (str, Path)) or not str(name):
        return None
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    path = Path(root)
    for number, part in enumerate(relative.parts, start=1):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            break  # nothing below exists yet: whatever is made there is made inside
        except (OSError, ValueError):  # a file on the way, a name too long, a NUL byte
            return None
        if stat.S_ISLNK(mode) or (number < len(relative.parts) and not stat.S_ISDIR(mode)):
            return None
    return Path(root) / relative


def reached_through_link(root: str | Path, path: str | Path) -> bool:
    """Whether `path`, below `root` (both made absolute, lexically: a link stays a link), is reached from `root`
    through a symbolic link or a file (`inside`); False for a path that is not below `root`."""
    root = os.path.abspath(root)
    try:
        below = Path(os.path.abspath(path)).relative_to(root)
    except ValueError:
        return False
    return inside(root, below) is None


_TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, flush it to disk, then rename it over `path`.

    An OSError (disk full, read-only file system, no permission) comes back naming `path`, not the temporary.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be readable like any file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise write_failure(path, error) from None
        raise


def write_failure(path: Path, error: OSError) -> OSError:
    """`error` (disk full, read-only file system, no permission) as an OSError naming `path`, the file that could
    not be written, rather than a temporary beside it or no file at all."""
    return OSError(error.errno, f"cannot write {path}: {error.strerror or error}")


def clean_temporaries(files: RunFiles) -> list[Path]:
    """Delete the temporaries that writes of this run left behind when killed mid-write; returns their paths.

    Only this run's: other runs of the configuration share the directory and may be writing at this moment.
    """
    if not files.directory.is_dir():
        return []
    # `.<stem>_ID<run id><suffix>.<random part>.tmp`, the names that write_atomically gives them; a model saved by
    # Keras, which insists on the `.keras` suffix, adds it after `.tmp` (training.checkpoint.save_model)
    pattern = re.compile(rf"\.\w+_ID{re.escape(files.run_id)}\.\w+\.\w+{re.escape(_TEMPORARY_SUFFIX)}(\.keras)?")
    leftovers = sorted(path for path in files.directory.iterdir()
                       if pattern.fullmatch(path.name) and path.is_file())
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def write_json(path: Path, data: dict) -> None:
    """Write `data` as standard JSON: NaN and infinity have no JSON form, so they are refused, not written."""
    try:
        text = json.dumps(data, indent=1, allow_nan=False)
    except ValueError as error:
        raise RunLogError(f"{path}: not written: {error}") from None
    write_atomically(path, lambda f: f.write(text.encode()))


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode()))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    write_atomically(path, lambda f: np.savez(f, **arrays))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the range of a float")
    return value


def _read_bytes(path: Path) -> bytes:
    """The contents of a run file; RunLogError naming it when it is missing, cannot be read or is no regular file
    (opened without waiting: a FIFO in a run's place would block its reader forever)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise RunLogError(f"{path}: not a regular file")
            return file.read()
    except FileNotFoundError:
        raise RunLogError(f"{path}: file not found") from None
    except OSError as error:
        raise RunLogError(f"{path}: cannot be read ({error.strerror or error})") from None


def read_json(path: Path) -> dict:
    """A JSON object from `path`; RunLogError naming the file if it is missing, unreadable, not standard JSON
    (NaN, Infinity, numbers beyond float range) or not an object."""
    text = _read_bytes(path)
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunLogError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise RunLogError(f"{path}: expected a JSON object")
    return data


def _read_npy_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One array of an .npz archive; object arrays are refused, because loading them runs pickle."""
    if not name.endswith(".npy"):
        raise RunLogError(f"member {name!r} is not a .npy array")
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
            else np.lib.format.read_array_header_2_0  # 2.0 and 3.0 differ only in the header's text encoding
        if read_header(member)[2].hasobject:
            raise RunLogError(f"member {name!r} holds object arrays (pickled data), which are refused")
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` file, loaded without pickle; RunLogError naming the file for anything else."""
    data = _read_bytes(path)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name.removesuffix(".npy"): _read_npy_member(archive, name) for name in archive.namelist()}
    except RunLogError as refusal:
        raise RunLogError(f"{path}: {refusal}") from None
    except Exception as error:  # damage surfaces from zipfile, zlib and numpy as almost any exception type
        raise RunLogError(f"{path}: not a readable .npz file ({error!r})") from None


def flipped_weights(log: dict, epoch: int) -> int:
    """Connections with a negative mask at `epoch` (flipped), from the per-layer counts; `changedWeights` less
    these are the pruned ones (zero masks)."""
    return sum(counts[0] for counts in log["remainingWeightsPerLayer"][epoch])


def log_csv_text(log: dict) -> str:
    """The per-epoch log as CSV: one row per epoch, the per-layer counts as `<layer>_<count>` columns."""
    layers = log.get("layerNames") or [f"layer{i + 1}" for i in range(len(log["remainingWeightsPerLayer"][0]))]
    header = ["epoch", *EPOCH_KEYS, "totalWeights"] + [f"{layer}_{count}" for layer in layers
                                                       for count in LAYER_COUNT_NAMES]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for epoch in range(len(log["testAccuracy"])):
        per_layer = [value for counts in log["remainingWeightsPerLayer"][epoch] for value in counts]
        writer.writerow([epoch, *(log[key][epoch] for key in EPOCH_KEYS), log["totalWeights"], *per_layer])
    return out.getvalue()


def write_log(files: RunFiles, log: dict) -> None:
    """Rewrite the run's JSON and CSV logs (each atomically)."""
    write_json(files.log_json, log)
    write_atomically(files.log_csv, lambda f: f.write(log_csv_text(log).encode()))


def _is_finite_number(value) -> bool:
    """A JSON number usable as a float: a bool is not one, and an integer can exceed every float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_layer_counts(counts) -> bool:
    return isinstance(counts, list) and len(counts) == len(LAYER_COUNT_NAMES) and all(map(_is_count, counts))


def _epoch_values_problem(values: list) -> str | None:
    for epoch, value in enumerate(values):
        if not _is_finite_number(value):
            return f"epoch {epoch} holds {reprlib.repr(value)}, not a finite number"
    return None


def _per_layer_problem(per_epoch: list) -> str | None:
    """Every epoch must hold the six counts of LAYER_COUNT_NAMES for each of the same masked layers."""
    for epoch, layers in enumerate(per_epoch):
        if not (isinstance(layers, list) and all(map(_is_layer_counts, layers))):
            return f"epoch {epoch} holds {reprlib.repr(layers)}, not six non-negative integers per layer"
        if len(layers) != len(per_epoch[0]):
            return f"epoch {epoch} has {len(layers)} layers, epoch 0 has {len(per_epoch[0])}"
    return None


def _log_value_problems(log: dict):
    """(key, problem or None) for each value of a log whose lists have the right lengths; stop at the first
    problem, since a later check relies on the earlier ones (layerNames on remainingWeightsPerLayer)."""
    for key in EPOCH_KEYS:
        yield key, _epoch_values_problem(log[key])
    total = log["totalWeights"]
    yield "totalWeights", None if _is_count(total) and total > 0 else \
        f"{reprlib.repr(total)} is not a positive integer"
    yield "remainingWeightsPerLayer", _per_layer_problem(log["remainingWeightsPerLayer"])
    names, layer_count = log.get("layerNames"), len(log["remainingWeightsPerLayer"][0])
    if names is not None and not (isinstance(names, list) and len(names) == layer_count
                                  and all(isinstance(name, str) for name in names)):
        yield "layerNames", f"{reprlib.repr(names)} is not a list of {layer_count} layer names"


def read_log(path: Path) -> dict:
    """A TrainLogs JSON file, checked for the keys, list lengths and value types of SPEC.md section 7."""
    log = read_json(path)
    missing = [key for key in REQUIRED_LOG_KEYS if key not in log]
    if missing:
        raise RunLogError(f"{path}: missing keys {', '.join(missing)}")
    if not isinstance(log["testAccuracy"], list):
        raise RunLogError(f"{path}: 'testAccuracy' should be a list of epochs")
    epochs = len(log["testAccuracy"])
    for key in PER_EPOCH_KEYS:
        if not isinstance(log[key], list) or len(log[key]) != epochs:
            raise RunLogError(f"{path}: '{key}' should be a list of {epochs} epochs")
    if epochs == 0:
        raise RunLogError(f"{path}: no epochs recorded")
    for key, problem in _log_value_problems(log):
        if problem:
            raise RunLogError(f"{path}: malformed values in '{key}': {problem}")
    return log


@dataclass(frozen=True)
class ConfigRecord:
    """A run's `Config_ID<id>.json` read back: the record as MaskTrainer wrote it (its settings, the seed drawn,
    the data read, the backend, the status, ...) and, on asking, its settings checked."""
    files: RunFiles
    data: dict

    @property
    def settings(self) -> RunConfig:
        """The recorded settings, every one present and checked like the command line's (ConfigError naming the
        file; only a setting added since the file was written may be missing, `settings.config.ADDED_SINCE`)."""
        return RunConfig.from_dict(self.data, str(self.files.config), complete=True)


def read_config(files: RunFiles) -> ConfigRecord:
    """The one reader of a run's configuration file (the trainer resuming, the exporter, the plotter and the
    study runner); RunLogError naming the file when it is missing or not a JSON object."""
    return ConfigRecord(files, read_json(files.config))


@dataclass(frozen=True)
class RecordedRun:
    """One run read back from its files: its files, configuration and log."""
    files: RunFiles
    config: dict
    log: dict

    @property
    def run_id(self) -> str:
        return self.files.run_id


def _check_labels(files: RunFiles, config: dict) -> dict:
    """The record's names that the readers label and group runs by must be the registry's (RunLogError naming the
    file): an edited one would otherwise become a label, or a crash in the middle of a plot."""
    changed_means = dict.fromkeys(kind.changed_means for kind in training_types.TRAINING_TYPES.values())
    known = {"traintype": training_types.names(), "changedMeans": list(changed_means)}
    for key, values in known.items():
        if key in config and config[key] not in values:
            raise RunLogError(f"{files.config}: {key} {reprlib.repr(config[key])} is not one of {', '.join(values)}")
    return config


@contextlib.contextmanager
def held(files: RunFiles):
    """The run held by this process while it resumes it: an exclusive lock (`flock`) on its Weights file, which no
    write replaces after epoch 0 and which the system releases when the process ends, however it ends. RunLogError
    when another process holds it. A run without a Weights file is not held: it has not reached epoch 0; nor is one
    on a system without `flock` (Windows)."""
    try:
        import fcntl
        descriptor = os.open(files.weights, os.O_RDONLY | os.O_NONBLOCK)
    except (ImportError, FileNotFoundError):
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLogError(f"{files.config}: run {files.run_id} is being trained by another process, which holds "
                              f"its {files.weights.name}; wait for it or stop it") from None
        yield
    finally:
        os.close(descriptor)


def read_runs(directory: Path) -> list[RecordedRun]:
    """Every run in an experiment directory that has a log (a run killed before epoch 0 has none)."""
    runs = []
    for config_path in sorted(Path(directory).glob("Config_ID*.json")):
        files = RunFiles.from_config_path(config_path)
        if files.log_json.exists():
            runs.append(RecordedRun(files, _check_labels(files, read_config(files).data), read_log(files.log_json)))
    return runs
