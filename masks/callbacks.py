"""A Keras callback that puts the masks' kept fractions into each epoch's logs (History, CSVLogger, TensorBoard)."""
from collections.abc import Callable, Sequence

import keras
import numpy as np

from masks.layers import MaskedLayer, masked_layers_within

PREFIX = "kept_fraction"


def kept_fractions(model: keras.Model, masks: Sequence[np.ndarray | None] | None = None) -> dict[str, float]:
    """The fraction of mask entries m(S) > 0 as evaluated: per masked layer (`kept_fraction/<layer name>`,
    nested models included) and over all of them (`kept_fraction`). A kept entry is one the random network
    has as it is: for the pruning types m = 1 (or mask_rs's scale), for the flipping types an unflipped sign;
    an unmasked (Baseline) layer keeps everything. `masks`, in the order of `masked_layers_within` (names may
    repeat across nested models), are those a compiled reader read; without them each layer computes its mask
    here, op by op."""
    layers = masked_layers_within(model)
    masks = [layer.mask() for layer in layers] if masks is None else masks
    counts = []
    for layer, mask in zip(layers, masks, strict=True):
        size = int(np.prod(layer.kernel.shape))
        positive = size if mask is None else int(np.count_nonzero(keras.ops.convert_to_numpy(mask) > 0))
        counts.append((layer.name, positive, size))
    return kept_fraction_logs(counts)


def kept_fraction_logs(counts: Sequence[tuple[str, int, int]]) -> dict[str, float]:
    """`kept_fraction/<name>` for each (layer name, entries kept, size), and `kept_fraction` over all of them:
    from masks (`kept_fractions`) or from a run log's per-layer counts (MaskTrainer's runs)."""
    fractions = {f"{PREFIX}/{name}": kept / size for name, kept, size in counts}
    kept, total = sum(count[1] for count in counts), sum(count[2] for count in counts)
    fractions[PREFIX] = kept / total if total else 1.0
    return fractions


class _MasksAsOutputs(keras.layers.Layer):
    """Outputs m(S) of its masked layers whatever its input, so that a model of it reads them all in one call of
    Keras's compiled predict, on any backend. float32 whatever the global policy: the masks as the layers
    compute them."""

    def __init__(self, masked_layers: list[MaskedLayer]):
        super().__init__(dtype="float32", name="masks_as_outputs")
        self.masked_layers = masked_layers

    def call(self, inputs):
        return [layer.mask() for layer in self.masked_layers]


def compiled_mask_reader(model: keras.Model) -> Callable[[], list[np.ndarray | None]]:
    """A function that reads m(S) of the masked layers of `model` (`masked_layers_within`; None for an unmasked
    one) through Keras's compiled predict, compiled at the first read. Op by op, JAX compiles a top-k mask's
    search loop anew at every read, about a second per layer. The project's runs read through their backend
    instead (`training.statistics.mask_reader`, which this package, below `training`, cannot import): there
    TensorFlow runs its own kernels, as eagerly, where predict would choose XLA on a GPU."""
    layers = masked_layers_within(model)
    with_masks = [layer for layer in layers if layer.mask_type is not None]
    # named, so that the reader takes no automatic names from the user's next layers and models
    inputs = keras.Input((1,), name="mask_reader_input")
    reader = keras.Model(inputs, _MasksAsOutputs(with_masks)(inputs), name="mask_reader") if with_masks else None
    unused_input = np.zeros((1, 1), np.float32)

    def read() -> list[np.ndarray | None]:
        predicted = iter([])
        if reader is not None:
            outputs = reader.predict_on_batch(unused_input)
            predicted = iter(outputs if len(with_masks) > 1 else [outputs])  # a lone output comes unlisted
        return [None if layer.mask_type is None else next(predicted) for layer in layers]
    return read


class MaskStatistics(keras.callbacks.Callback):
    """At each epoch's end adds `kept_fraction` and `kept_fraction/<layer name>` to the logs. Put it before the
    callbacks that should see them (CSVLogger, TensorBoard, EarlyStopping(monitor="kept_fraction", mode="max")) in the list;
    fit's History comes last and records them. The masks are read by one compiled function per model."""

    def __init__(self):
        super().__init__()
        self._read_masks = None

    def set_model(self, model):
        if model is not self.model:
            self._read_masks = None
        super().set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            if self._read_masks is None:
                self._read_masks = compiled_mask_reader(self.model)
            logs.update(kept_fractions(self.model, self._read_masks()))
