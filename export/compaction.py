"""Which units and filters of a trained network can affect its output, and how big the network is without the rest.

NumPy only (no Keras, no TensorFlow): the plotter and the study tables call `effective_size` on the effective
kernels of `Weights_ID * Masks_ID` and must stay fast and TensorFlow-free. The plain-model builder of
`export.plain_model` slices its kernels with `compact_kernels`, so the pruning rule has one implementation.

The network is read from its kernels alone, in layer order: dense kernels `[fan_in, units]` and conv kernels
`[kh, kw, c_in, filters]`; a dense layer after a conv layer reads its output flattened in NHWC order (channel
fastest), whatever pooling lies between. A hidden unit (or filter) is removed when it
- has no non-zero effective weight to a kept unit of the next layer (nothing it computes reaches the output), or
- has no non-zero effective weight from a kept unit of the previous layer (or from the input) and the hidden
  activation maps 0 to 0, so it always outputs 0 (relu, elu, selu, swish; not sigmoid, whose constant 0.5
  still feeds the next layer: such a unit is kept).
Both rules are applied until nothing changes. A removed unit contributes exactly zero to the next layer, so the
compact network computes the same function. The output units are never removed, nor the input.

The rules hold for a chain of masked layers with only pooling and flattening between them. In a network that is not
one (`networks.NetworkSpec.compactable`: the ResNets), a residual add carries a unit's input past its kernels and a
BatchNorm turns a filter without weights into a constant, so nothing is removed there (`chain=False`): the sizes
are the full ones, which is exact, if not the smallest.
"""
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# The value of each hidden activation at 0; the zero-input rule applies only where it is 0.
ACTIVATION_AT_ZERO: dict[str, float] = {
    "relu": 0.0, "elu": 0.0, "selu": 0.0, "swish": 0.0, "silu": 0.0, "tanh": 0.0, "linear": 0.0,
    "sigmoid": 0.5,
}


def maps_zero_to_zero(activation: str) -> bool:
    """Whether `activation(0) == 0`; a ValueError lists the activations known here."""
    if activation not in ACTIVATION_AT_ZERO:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATION_AT_ZERO)}")
    return ACTIVATION_AT_ZERO[activation] == 0.0


@dataclass(frozen=True)
class LayerSize:
    """One masked layer before and after compaction. `units` are units (dense) or filters (conv)."""
    kind: str  # "dense" or "conv"
    units: int
    units_kept: int
    parameters: int  # kernel elements
    parameters_kept: int  # kernel elements of the compact layer
    nonzero: int  # non-zero effective weights
    nonzero_kept: int


@dataclass(frozen=True)
class EffectiveSize:
    """The result of `effective_size`: per layer sizes and which units survive (`kept[i]`: bool per unit)."""
    layers: tuple[LayerSize, ...]
    kept: tuple[np.ndarray, ...]

    @property
    def units(self) -> list[int]:
        return [layer.units for layer in self.layers]

    @property
    def units_kept(self) -> list[int]:
        return [layer.units_kept for layer in self.layers]

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    @property
    def parameters_kept(self) -> int:
        """The effective parameter count: kernel elements of the compact network (zeros inside it included)."""
        return sum(layer.parameters_kept for layer in self.layers)

    @property
    def nonzero(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    @property
    def nonzero_kept(self) -> int:
        return sum(layer.nonzero_kept for layer in self.layers)


def _as_list(kernels: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
    values = list(kernels.values()) if isinstance(kernels, Mapping) else list(kernels)
    if not values:
        raise ValueError("no kernels given")
    return [np.asarray(kernel) for kernel in values]


def _input_groups(kernels: list[np.ndarray]) -> list[int]:
    """Per layer, how many kernel rows each input unit of the layer owns (1 unless a flatten lies before it).

    Checks that consecutive kernels fit together; a ValueError names the first layer that does not.
    """
    groups = []
    for index, kernel in enumerate(kernels):
        if kernel.ndim not in (2, 4):
            raise ValueError(f"layer {index + 1}: kernel of shape {kernel.shape} is neither dense nor conv")
        if index == 0:
            groups.append(1)
            continue
        previous_units = kernels[index - 1].shape[-1]
        fan_in = kernel.shape[-2]
        if kernel.ndim == 4:
            if kernels[index - 1].ndim != 4:
                raise ValueError(f"layer {index + 1}: a convolution after a dense layer is not supported")
            ok, group = fan_in == previous_units, 1
        elif kernels[index - 1].ndim == 4:  # dense on the flattened conv output: fan_in = positions x channels
            ok, group = fan_in % previous_units == 0, fan_in // previous_units
        else:
            ok, group = fan_in == previous_units, 1
        if not ok:
            raise ValueError(f"layer {index + 1}: kernel of shape {kernel.shape} does not fit the "
                             f"{previous_units} outputs of layer {index}")
        groups.append(group)
    return groups


def _connections(kernel: np.ndarray, group: int) -> np.ndarray:
    """[input units, output units]: whether any non-zero effective weight joins the two."""
    nonzero = kernel != 0
    if kernel.ndim == 4:
        return nonzero.any(axis=(0, 1))
    if group > 1:  # NHWC flatten: row = position * channels + channel
        return nonzero.reshape(group, -1, kernel.shape[-1]).any(axis=0)
    return nonzero


def _row_selection(kept_inputs: np.ndarray | None, group: int) -> np.ndarray | slice:
    if kept_inputs is None:
        return slice(None)
    return np.tile(kept_inputs, group) if group > 1 else kept_inputs


def compact_kernels(kernels: Sequence[np.ndarray] | Mapping[str, np.ndarray],
                    kept: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The kernels with the removed units' columns and the matching input rows (or channels) taken out.

    A layer left with no unit keeps its first one with zero weights in and out, so every layer of the compact
    network has a width; that unit outputs a constant that reaches nothing, as in the full network.
    """
    kernels = _as_list(kernels)
    groups = _input_groups(kernels)
    kept = [np.asarray(k, dtype=bool).copy() for k in kept]
    if [k.shape for k in kept] != [(kernel.shape[-1],) for kernel in kernels]:
        raise ValueError(f"kept marks {[k.size for k in kept]} units; the kernels have "
                         f"{[kernel.shape[-1] for kernel in kernels]}")
    placeholders = [not k.any() for k in kept]
    for k, empty in zip(kept, placeholders):
        if empty:
            k[0] = True
    compact = []
    for index, (kernel, group) in enumerate(zip(kernels, groups)):
        rows = _row_selection(kept[index - 1] if index else None, group)
        sliced = kernel[..., rows, :][..., kept[index]].copy()
        if placeholders[index] or (index and placeholders[index - 1]):
            sliced[...] = 0
        compact.append(sliced)
    return compact


def _full_size(kernel: np.ndarray) -> LayerSize:
    """A layer of which nothing is removed."""
    units, nonzero = int(kernel.shape[-1]), int(np.count_nonzero(kernel))
    return LayerSize(kind="conv" if kernel.ndim == 4 else "dense", units=units, units_kept=units,
                     parameters=int(kernel.size), parameters_kept=int(kernel.size), nonzero=nonzero,
                     nonzero_kept=nonzero)


def effective_size(kernels: Sequence[np.ndarray] | Mapping[str, np.ndarray], activation: str,
                   chain: bool = True) -> EffectiveSize:
    """Per-layer units kept and the effective parameter count of the compact network.

    `kernels`: the effective kernels W * m(S) of the masked layers in layer order (a list, or a mapping such as
    `{name: weights[name] * masks[name]}` read from a run's Weights and Masks files); `activation`: the hidden
    layers' activation (the last layer's units are never removed, so its activation does not matter); `chain`:
    whether the masked layers form a chain whose units may be removed (see the module's docstring).
    """
    kernels = _as_list(kernels)
    if not chain:
        return EffectiveSize(tuple(_full_size(kernel) for kernel in kernels),
                             tuple(np.ones(kernel.shape[-1], dtype=bool) for kernel in kernels))
    groups = _input_groups(kernels)
    connections = [_connections(kernel, group) for kernel, group in zip(kernels, groups)]
    zero_rule = maps_zero_to_zero(activation)
    kept = [np.ones(kernel.shape[-1], dtype=bool) for kernel in kernels]
    last = len(kernels) - 1
    changed = True
    while changed:
        changed = False
        for index in range(last):
            alive = kept[index] & connections[index + 1][:, kept[index + 1]].any(axis=1)
            if zero_rule:
                incoming = connections[index] if index == 0 else connections[index][kept[index - 1]]
                alive &= incoming.any(axis=0)
            if not np.array_equal(alive, kept[index]):
                kept[index], changed = alive, True
    compact = compact_kernels(kernels, kept)
    layers = []
    for index, (kernel, small) in enumerate(zip(kernels, compact)):
        units_kept = int(kept[index].sum())
        group = groups[index]
        inputs_kept = (kernel.shape[-2] // group if index == 0 else int(kept[index - 1].sum())) * group
        spatial = int(np.prod(kernel.shape[:-2]))
        layers.append(LayerSize(
            kind="conv" if kernel.ndim == 4 else "dense", units=int(kernel.shape[-1]), units_kept=units_kept,
            parameters=int(kernel.size), parameters_kept=spatial * inputs_kept * units_kept,
            nonzero=int(np.count_nonzero(kernel)), nonzero_kept=int(np.count_nonzero(small))))
    return EffectiveSize(tuple(layers), tuple(kept))
