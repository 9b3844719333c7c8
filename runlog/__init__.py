"""The files of one run (SPEC.md section 7): where they live, how they are written and read back.

The trainer writes through this module and the plotter reads through it, so the two always agree on names
and keys. Every write is atomic (a temporary file in the same folder, then `os.replace`), so an interrupted
run leaves either the previous complete file or the new one, never half a file. Nothing here uses pickle.
"""
import csv
import io
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPOCH_KEYS = ("trainLoss", "valLoss", "testLoss", "trainAccuracy", "valAccuracy", "testAccuracy",
              "remainingWeights", "changedWeights", "epochSeconds")
LAYER_COUNT_NAMES = ("negativeMasks", "zeroMasks", "positiveMasks",
                     "negativeWeights", "zeroWeights", "positiveWeights")
REQUIRED_LOG_KEYS = EPOCH_KEYS + ("totalWeights", "remainingWeightsPerLayer")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class RunLogError(ValueError):
    """A run file that is missing, unreadable or not in the expected form; the message names the file."""


def format_number(value: float) -> str:
    """How p1 and lr appear in directory names: the shortest float form (0.5, 0.001, 1e-05)."""
    return repr(float(value))


def experiment_directory(outputpath: str | Path, traintype: str, nettype: str, p1: float, masktype: str,
                         activation: str, initializer: str, lr: float) -> Path:
    """`<outputpath>/<traintype>/<nettype>/P1_<p1>/<masktype>_<activation>_<initializer>_LR<lr>/`."""
    return (Path(outputpath) / traintype / nettype / f"P1_{format_number(p1)}"
            / f"{masktype}_{activation}_{initializer}_LR{format_number(lr)}")


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

    @classmethod
    def from_config_path(cls, config_path: str | Path) -> "RunFiles":
        path = Path(config_path)
        name = path.name
        if not (name.startswith("Config_ID") and name.endswith(".json")):
            raise RunLogError(f"{path}: not a Config_ID<id>.json file")
        return cls(path.parent, name[len("Config_ID"):-len(".json")])


def _atomic_write(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be readable like any file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: dict) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def read_json(path: Path) -> dict:
    """A JSON object from `path`; RunLogError naming the file if it is missing, corrupt or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunLogError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunLogError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise RunLogError(f"{path}: expected a JSON object")
    return data


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` file, loaded without pickle."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise RunLogError(f"{path}: not a readable .npz file ({error})") from None


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
    _atomic_write(files.log_csv, lambda f: f.write(log_csv_text(log).encode()))


def read_log(path: Path) -> dict:
    """A TrainLogs JSON file, checked for the keys and list lengths of SPEC.md section 7."""
    log = read_json(path)
    missing = [key for key in REQUIRED_LOG_KEYS if key not in log]
    if missing:
        raise RunLogError(f"{path}: missing keys {', '.join(missing)}")
    if not isinstance(log["testAccuracy"], list):
        raise RunLogError(f"{path}: 'testAccuracy' should be a list of epochs")
    epochs = len(log["testAccuracy"])
    for key in EPOCH_KEYS + ("remainingWeightsPerLayer",):
        if not isinstance(log[key], list) or len(log[key]) != epochs:
            raise RunLogError(f"{path}: '{key}' should be a list of {epochs} epochs")
    if epochs == 0:
        raise RunLogError(f"{path}: no epochs recorded")
    return log


@dataclass(frozen=True)
class Run:
    """One run read back: its files, configuration and log."""
    files: RunFiles
    config: dict
    log: dict

    @property
    def run_id(self) -> str:
        return self.files.run_id


def read_runs(directory: Path) -> list[Run]:
    """Every run in an experiment directory that has a log (a run killed before epoch 0 has none)."""
    runs = []
    for config_path in sorted(Path(directory).glob("Config_ID*.json")):
        files = RunFiles.from_config_path(config_path)
        if files.log_json.exists():
            runs.append(Run(files, read_json(config_path), read_log(files.log_json)))
    return runs
