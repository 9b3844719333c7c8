"""The files of a run to export, read and checked without Keras (so a refusal comes before TensorFlow loads).

Which file holds the trained network:
- a finished run: its `Model_ID<id>.keras` (the masked model), else `Weights_ID * Masks_ID` (not for Baseline,
  whose trained W is only in the model file);
- with `checkpoint`: its `Checkpoint_ID<id>.npz` (the last finished epoch of an unfinished run).
An unfinished run without `checkpoint` is refused with the epoch it reached and how to export its checkpoint.
Each file read is checked against the digest the run recorded for it, if any (`training.provenance`).
"""
from dataclasses import dataclass
from pathlib import Path

import runlog
from datasets.preprocessing import Preprocessing, PreprocessingError
from export.errors import ExportError
from settings.config import RunConfig
from training import provenance


def read_preprocessing(path: Path, digests: dict[str, str] | None) -> Preprocessing:
    """A run's `Preprocessing_ID<id>.npz`, with the array `digests` the run recorded (None: from before digests);
    ExportError (or RunLogError) naming the file when it is not usable."""
    arrays = runlog.read_npz(path)
    provenance.check_arrays(path, digests, arrays, "the file the run wrote")
    try:
        return Preprocessing.from_arrays(arrays)
    except PreprocessingError as error:
        raise ExportError(f"{path}: {error}") from None


@dataclass(frozen=True)
class RunRecord:
    """A run's configuration (as recorded, and its settings checked), log and preprocessing, and the file its
    trained network is to be read from."""
    files: runlog.RunFiles
    config: dict
    settings: RunConfig
    log: dict
    digests: dict  # what the run recorded (`training.provenance`); {} for a run from before digests
    preprocessing: Preprocessing
    source: Path  # Model_ID, Checkpoint_ID, or Masks_ID (read with Weights_ID)

    @property
    def trains_weights(self) -> bool:
        return self.settings.training_type.trains_weights

    @property
    def logged_epochs(self) -> int:
        """The last epoch the log records."""
        return len(self.log["testAccuracy"]) - 1


def unfinished_message(files: runlog.RunFiles, config: dict, log: dict) -> str:
    """Why an unfinished run is refused, and how to export its last checkpoint."""
    reached = len(log["testAccuracy"]) - 1
    reason = f": {config['stopReason']}" if config.get("stopReason") else ""
    state = f"{config.get('status')}{reason}, reached epoch {reached} of {config.get('maxepochs', '?')}"
    if not files.checkpoint.exists():
        return f"run {files.run_id} is unfinished ({state}) and has no checkpoint to export"
    return (f"run {files.run_id} is unfinished ({state}); export its last checkpoint with "
            f"python Exporter.py {files.config} --checkpoint --out FILE.keras")


def _require(path: Path) -> Path:
    if not path.exists():
        raise ExportError(f"{path}: file not found")
    return path


def read_run_record(config_path: str | Path, checkpoint: bool = False) -> RunRecord:
    """The run of `config_path`, checked as far as it can be without Keras; ExportError or RunLogError
    (one line naming the file) when it cannot be exported as asked."""
    files = runlog.RunFiles.from_config_path(config_path)
    record = runlog.read_config(files)
    config, settings = record.data, record.settings
    digests = provenance.recorded(config, files.config)
    if "status" not in config:  # the record beside the settings that the export needs
        raise ExportError(f"{files.config}: lacks status")
    log = runlog.read_log(files.log_json)
    finished = config["status"] == "finished"
    if finished:  # the logged test accuracy that --verify compares with is the one the run wrote
        provenance.check_log(files.log_json, log, digests.get("log"), files.run_id)
    if checkpoint:
        if not files.checkpoint.exists():
            state = ("finished, so its checkpoint was removed: export it without --checkpoint" if finished
                     else "not trained for one epoch yet")
            raise ExportError(f"{files.checkpoint}: file not found (run {files.run_id} is {state})")
        source = files.checkpoint
    elif not finished:
        raise ExportError(unfinished_message(files, config, log))
    elif files.model.exists():
        source = files.model
    elif settings.training_type.trains_weights:
        raise ExportError(f"{files.model}: file not found (a {config['traintype']} run's trained weights are "
                          f"only in its Model file, or in its checkpoint while unfinished)")
    else:
        _require(files.weights)
        source = _require(files.masks)
    preprocessing = read_preprocessing(files.preprocessing, digests.get("preprocessing"))
    return RunRecord(files, config, settings, log, digests, preprocessing, source)
