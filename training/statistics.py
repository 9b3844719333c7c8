"""What a run records about its masks (SPEC.md section 7), computed from the layers' current values."""
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from masks.layers import masked_layers
from training import backends


def mask_reader(model: keras.Model) -> Callable[[], dict[str, np.ndarray]]:
    """A function that reads m(S) of every masked layer, keyed by layer name (all ones for an unmasked, Baseline,
    layer), through one compiled function of the backend (`compiled_masks`), compiled at the first read."""
    layers = masked_layers(model)
    compiled = backends.current().compiled_masks([layer for layer in layers if layer.mask_type is not None])

    def read() -> dict[str, np.ndarray]:
        masks = iter(compiled())
        return {layer.name: np.ones(layer.kernel.shape, np.float32) if layer.mask_type is None else next(masks)
                for layer in layers}
    return read


def kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """W of every masked layer, keyed by layer name."""
    return {layer.name: keras.ops.convert_to_numpy(layer.kernel) for layer in masked_layers(model)}


def sign_counts(values: np.ndarray) -> list[int]:
    """Negative, zero and positive entries: the counts the log keeps per layer."""
    return [int(np.count_nonzero(values < 0)), int(np.count_nonzero(values == 0)),
            int(np.count_nonzero(values > 0))]


@dataclass(frozen=True)
class MaskStatistics:
    """The mask figures of one epoch."""
    remaining_weights: int
    changed_weights: int
    total_weights: int
    per_layer: list[list[int]]  # per layer: negative/zero/positive masks, negative/zero/positive weights


def mask_statistics(masks: dict[str, np.ndarray], weights: dict[str, np.ndarray]) -> MaskStatistics:
    """Counts of the effective weights W * m(S) (`masks` and the kernels `weights`, by layer name), and of the
    connections not kept as the random network has them.

    A connection is "changed" when sign(m) is not +1: pruned (m = 0) or flipped (m < 0). The paper's types start
    with every mask at +1, so for them this counts the changes since epoch 0; the rivals start from their own
    masks (edge-popup's top K, a Bernoulli sample, the signed supermask's thresholds), and for them it counts
    what their network lacks or inverts against the random one. Baseline has no mask, so nothing is changed.
    """
    per_layer, remaining, changed = [], 0, 0
    for name, mask in masks.items():
        effective = weights[name] * mask
        per_layer.append(sign_counts(mask) + sign_counts(effective))
        remaining += int(np.count_nonzero(effective))
        changed += int(np.count_nonzero(mask <= 0))
    total = sum(mask.size for mask in masks.values())
    return MaskStatistics(remaining, changed, total, per_layer)
