"""A run's trained network read back from its files, each file checked against the others.

The layer sequence always comes from the configuration (`networks.build` with the run's settings, which also
redraws the frozen W from the seed); the trained effective kernels W * m(S) come from the source that
`export.run_files` chose (Model, Checkpoint, or Weights * Masks). The kernels must have the shapes of the network
the configuration builds, a frozen W must be the one drawn from the seed, and the counts of negative, zero and
positive effective weights must be those the log recorded for the epoch exported, and each file must have the
digest the run recorded for it (`training.provenance`, the trainer's own checks): files of another network or
another run, or edited ones, are refused with a line naming the file. The trained values of the layers that are
not masked (a ResNet's BatchNorm: gamma, beta and moving statistics) are put into the template from the Model
or Checkpoint file; Weights and Masks files do not hold them, so such a network is not exported from those.
"""
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import networks
import networks.assembly  # registers the layers and initializers a Model file holds
import runlog
from datasets.preprocessing import Preprocessing
from export.errors import ExportError
from export.run_files import RunRecord
from masks.layers import MaskedLayer, masked_layers
from settings import types as training_types
from training import checkpoint, provenance, statistics


@dataclass(frozen=True)
class TrainedRun:
    """A run's trained network: its record, the epoch, the layer sequence and the effective kernels."""
    record: RunRecord
    epoch: int  # the epoch whose network the kernels are
    template: keras.Model  # the masked network the configuration builds, with its trained unmasked layers
    kernels: dict[str, np.ndarray]  # effective kernels W * m(S) by layer name, in layer order

    @property
    def files(self) -> runlog.RunFiles:
        return self.record.files

    @property
    def config(self) -> dict:
        return self.record.config

    @property
    def preprocessing(self) -> Preprocessing:
        return self.record.preprocessing

    @property
    def source(self) -> Path:
        return self.record.source

    @property
    def test_accuracy(self) -> float:
        """The test accuracy the log recorded for the exported epoch."""
        return float(self.record.log["testAccuracy"][self.epoch])


def build_template(config: dict, config_path: Path, input_shape: tuple[int, ...]) -> keras.Model:
    """The masked network of the configuration, with W drawn from its seed and fresh scores."""
    try:
        training_type = training_types.get(config["traintype"])
        return networks.build(
            config["nettype"], input_shape, activation=config["activation"], initializer=config["initializer"],
            p1=config["p1"], seed=config["seed"], batchnorm=config.get("batchnorm") or "trainable",  # None: none
            **training_type.layer_options(config["masktype"], config.get("keep")))
    except (ValueError, TypeError, KeyError) as error:
        raise ExportError(f"{config_path}: cannot build its network ({error})") from None


def network_input_scale(template: keras.Model) -> np.float32:
    """The factor of the network's `input_scale` layer, as its float32 computation uses it (1 when absent)."""
    for layer in template.layers:
        if layer.name == "input_scale":
            return np.float32(layer.scale)
    return np.float32(1.0)


def _check_shapes(kernels: dict[str, np.ndarray], template: keras.Model, path: Path, what: str,
                  preprocessing_path: Path) -> None:
    expected = {layer.name: tuple(layer.kernel.shape) for layer in masked_layers(template)}
    found = {name: tuple(np.shape(kernel)) for name, kernel in kernels.items()}
    if list(found) != list(expected):
        raise ExportError(f"{path}: holds {what} {', '.join(found) or 'nothing'}; the {template.name} network "
                          f"of this run has {', '.join(expected)}")
    for name, shape in expected.items():
        if found[name] != shape:
            raise ExportError(f"{path}: {what} {name} has shape {found[name]}; the {template.name} network "
                              f"built for the input of {preprocessing_path.name} has {shape}")


def _check_logged_counts(kernels: dict[str, np.ndarray], log: dict, log_path: Path, epoch: int,
                         path: Path) -> None:
    """The effective weights must have the negative/zero/positive counts the log recorded for `epoch`."""
    per_layer = log["remainingWeightsPerLayer"][epoch]
    if len(per_layer) != len(kernels):
        raise ExportError(f"{log_path}: records {len(per_layer)} layers, the network has {len(kernels)}")
    for (name, kernel), counts in zip(kernels.items(), per_layer):
        found = statistics.sign_counts(kernel)
        if found != list(counts)[3:6]:
            raise ExportError(f"{path}: {name} has {found} negative/zero/positive effective "
                              f"weights, {log_path.name} records {list(counts)[3:6]} at epoch {epoch}: "
                              f"the files belong to different runs")


def effective_kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """W * m(S) of every masked layer of a masked model, by name, in layer order (as the layers compute it)."""
    kernels, masks = statistics.kernels(model), statistics.mask_reader(model)()
    return {name: kernels[name] * masks[name] for name in kernels}


def unmasked_layers_with_weights(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers whose trained values are neither W nor m(S) (BatchNorm's), which only Model and Checkpoint hold."""
    return [layer for layer in model.layers if layer.weights and not isinstance(layer, MaskedLayer)]


def _from_model_file(path: Path, template: keras.Model, trains_weights: bool, preprocessing_path: Path,
                     digest: str | None) -> dict:
    provenance.check_file(path, digest, "the model the run saved")
    if not zipfile.is_zipfile(path):
        raise ExportError(f"{path}: not a Keras model file (not a zip archive; damaged or truncated?)")
    try:
        model = checkpoint.load_model(path, compile=False)
    except Exception as error:  # a damaged zip or JSON raises anything from zipfile, json, h5py or Keras
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise ExportError(f"{path}: not a loadable Keras model ({type(error).__name__}: {first_line})") from None
    layers = masked_layers(model)
    _check_shapes({layer.name: layer.kernel for layer in layers}, template, path, "layers", preprocessing_path)
    if not trains_weights:
        provenance.check_frozen_weights(statistics.kernels(model), statistics.kernels(template), path)
    for layer in unmasked_layers_with_weights(template):
        try:
            layer.set_weights(model.get_layer(layer.name).get_weights())
        except ValueError as error:  # no such layer, or other weights (another BatchNorm mode)
            raise ExportError(f"{path}: its {layer.name} does not fit the network of the run's configuration "
                              f"({(str(error).strip().splitlines() or [''])[0][:200]})") from None
    return effective_kernels(model)


def _from_weights_and_masks(files: runlog.RunFiles, template: keras.Model, preprocessing_path: Path,
                            digests: dict) -> dict:
    if unmasked_layers_with_weights(template):
        raise ExportError(f"{files.masks}: the {template.name} network's "
                          f"{unmasked_layers_with_weights(template)[0].name} was trained too, and only the run's "
                          f"Model or Checkpoint file holds it; neither is there")
    weights, mask_arrays = runlog.read_npz(files.weights), runlog.read_npz(files.masks)
    provenance.check_arrays(files.weights, digests.get("weights"), weights, "the file the run wrote")
    provenance.check_arrays(files.masks, digests.get("masks"), mask_arrays, "the file the run wrote")
    _check_shapes(weights, template, files.weights, "weights of", preprocessing_path)
    _check_shapes(mask_arrays, template, files.masks, "masks of", preprocessing_path)
    provenance.check_frozen_weights(weights, statistics.kernels(template), files.weights)
    return {name: (weights[name] * mask_arrays[name]).astype(np.float32) for name in weights}


def _from_checkpoint(path: Path, owner: tuple[str, str], template: keras.Model, trains_weights: bool,
                     legacy: bool) -> tuple[dict, int]:
    """Load the checkpoint's model variables into the template with the trainer's own reader: owner, digests
    (not for a `legacy` run, from before them) and a masked run's frozen W checked."""
    drawn = None if trains_weights else statistics.kernels(template)
    epoch = checkpoint.restore_model(path, template, owner, drawn, legacy)
    return effective_kernels(template), epoch


def read_trained_run(record: RunRecord) -> TrainedRun:
    """The trained network of a run whose files `export.run_files.read_run_record` has read; ExportError (or
    runlog.RunLogError) naming the file when a file is damaged or the files do not belong together."""
    files, config, log = record.files, record.config, record.log
    template = build_template(config, files.config, record.preprocessing.input_shape)
    if network_input_scale(template) != record.preprocessing.input_scale:
        raise ExportError(f"{files.preprocessing}: input_scale {record.preprocessing.input_scale} differs from "
                          f"the {network_input_scale(template)} of the run's {config['initializer']} network")
    epoch = record.logged_epochs
    if record.source == files.checkpoint:
        owner = (files.run_id, record.settings.digest())
        kernels, epoch = _from_checkpoint(files.checkpoint, owner, template, record.trains_weights,
                                          not provenance.records_digest(config, "data"))
        if epoch > record.logged_epochs:
            raise ExportError(f"{files.checkpoint}: written after epoch {epoch}, but {files.log_json.name} "
                              f"records only {record.logged_epochs}")
    elif record.source == files.model:
        kernels = _from_model_file(files.model, template, record.trains_weights, files.preprocessing,
                                   record.digests.get("model"))
    else:
        kernels = _from_weights_and_masks(files, template, files.preprocessing, record.digests)
    _check_logged_counts(kernels, log, files.log_json, epoch, record.source)
    return TrainedRun(record, epoch, template, kernels)
