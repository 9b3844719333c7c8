"""A Keras callback that puts the masks' kept fractions into each epoch's logs (History, CSVLogger, TensorBoard)."""
import keras
import numpy as np

from masks.layers import masked_layers_within

PREFIX = "kept_fraction"


def kept_fractions(model: keras.Model) -> dict[str, float]:
    """The fraction of mask entries m(S) > 0 as evaluated: per masked layer (`kept_fraction/<layer name>`,
    nested models included) and over all of them (`kept_fraction`). A kept entry is one the random network
    has as it is: for the pruning types m = 1 (or mask_rs's scale), for the flipping types an unflipped sign;
    an unmasked (Baseline) layer keeps everything."""
    fractions, kept, total = {}, 0, 0
    for layer in masked_layers_within(model):
        mask = layer.mask()
        size = int(np.prod(layer.kernel.shape))
        positive = size if mask is None else int(np.count_nonzero(keras.ops.convert_to_numpy(mask) > 0))
        fractions[f"{PREFIX}/{layer.name}"] = positive / size
        kept, total = kept + positive, total + size
    fractions[PREFIX] = kept / total if total else 1.0
    return fractions


class MaskStatistics(keras.callbacks.Callback):
    """At each epoch's end adds `kept_fraction` and `kept_fraction/<layer name>` to the logs. Put it before the
    callbacks that should see them (CSVLogger, TensorBoard, EarlyStopping(monitor="kept_fraction", mode="max")) in the list;
    fit's History comes last and records them."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(kept_fractions(self.model))
