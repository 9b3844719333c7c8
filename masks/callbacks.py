"""A Keras callback that puts the masks' kept fractions into each epoch's logs (History, CSVLogger, TensorBoard)."""
from collections.abc import Callable, Mapping

import keras
import numpy as np

from masks.layers import MaskedLayer, masked_layers_within

PREFIX = "kept_fraction"


def kept_fractions(model: keras.Model, masks: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """The fraction of mask entries m(S) > 0 as evaluated: per masked layer (`kept_fraction/<layer name>`,
    nested models included) and over all of them (`kept_fraction`). A kept entry is one the random network
    has as it is: for the pruning types m = 1 (or mask_rs's scale), for the flipping types an unflipped sign;
    an unmasked (Baseline) layer keeps everything. `masks`, keyed by layer name, are those already read (by a
    compiled reader); without them each layer computes its mask here, op by op."""
    fractions, kept, total = {}, 0, 0
    for layer in masked_layers_within(model):
        mask = layer.mask() if masks is None else masks[layer.name]
        size = int(np.prod(layer.kernel.shape))
        positive = size if mask is None else int(np.count_nonzero(keras.ops.convert_to_numpy(mask) > 0))
        fractions[f"{PREFIX}/{layer.name}"] = positive / size
        kept, total = kept + positive, total + size
    fractions[PREFIX] = kept / total if total else 1.0
    return fractions


class _MasksAsOutputs(keras.layers.Layer):
    """Outputs m(S) of its masked layers whatever its input, so that a model of it reads them all in one call of
    Keras's compiled predict, on any backend."""

    def __init__(self, layers: list[MaskedLayer]):
        super().__init__(dtype="float32")
        self.masked = layers

    def call(self, inputs):
        return [layer.mask() for layer in self.masked]


def predicted_masks(model: keras.Model) -> Callable[[], dict[str, np.ndarray | None]]:
    """A function that reads m(S) of the masked layers of `model` (nested models included; None for an unmasked
    one), keyed by layer name, through Keras's compiled predict (compiled at the first read). Op by op, JAX
    compiles a top-k mask's search loop anew at every read, about a second per layer; the project's own runs
    read through their backend (`training.statistics.mask_reader`), which this package, below `training`,
    cannot import."""
    layers = masked_layers_within(model)
    with_masks = [layer for layer in layers if layer.mask_type is not None]
    inputs = keras.Input((1,))
    reader = keras.Model(inputs, _MasksAsOutputs(with_masks)(inputs)) if with_masks else None
    unused_input = np.zeros((1, 1), np.float32)

    def read() -> dict[str, np.ndarray | None]:
        masks = dict.fromkeys(layer.name for layer in layers)
        if reader is not None:
            predicted = reader.predict_on_batch(unused_input)
            predicted = predicted if len(with_masks) > 1 else [predicted]  # a lone output comes unlisted
            masks.update(zip((layer.name for layer in with_masks), predicted))
        return masks
    return read


class MaskStatistics(keras.callbacks.Callback):
    """At each epoch's end adds `kept_fraction` and `kept_fraction/<layer name>` to the logs. Put it before the
    callbacks that should see them (CSVLogger, TensorBoard, EarlyStopping(monitor="kept_fraction", mode="max")) in the list;
    fit's History comes last and records them. The masks are read by one compiled function per model."""

    def __init__(self):
        super().__init__()
        self._read_masks = None

    def set_model(self, model):
        super().set_model(model)
        self._read_masks = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            if self._read_masks is None:
                self._read_masks = predicted_masks(self.model)
            logs.update(kept_fractions(self.model, self._read_masks()))
