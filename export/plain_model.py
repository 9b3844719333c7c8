"""The trained network as plain Keras: standard layers only, the run's preprocessing inside, raw pixels in.

Each masked layer becomes a `Dense` / `Conv2D` without bias whose kernel is the effective kernel W * m(S) (the
layer `masks.layers.standard_layer` makes, which `masks.strip` uses too); the
project's `MaxPool2x2` becomes `MaxPooling2D(2)` (same values); `Flatten` and binary's `input_scale`
`Rescaling` stay. In front come three `Normalization` layers that repeat the trainer's float32 arithmetic
operation by operation, `(raw / 255 - mean_image) / std`: a `Normalization` divides, whereas `Rescaling(1 / 255)`
multiplies by a rounded reciprocal and differs from `raw / 255` in the last bit for most pixels, which can flip
a prediction. The file loads with `keras.saving.load_model` in safe mode, without this project.
"""
from collections.abc import Mapping

import keras
import numpy as np

from export.errors import ExportError
from export.compaction import compact_kernels, effective_size
from datasets.preprocessing import Preprocessing
from masks.layers import MaskedConv2D, MaskedDense, masked_layers, standard_layer
from networks.assembly import MaxPool2x2

RAW_INPUT_DTYPE = "uint8"


def variance_for_std(std: np.float32) -> float:
    """A float32 variance whose float32 square root is exactly `std` (so `Normalization` divides by `std`)."""
    std = np.float32(std)
    candidate = np.float32(std * std)
    for _ in range(4):  # sqrt(round(s * s)) == s in binary floating point; the search is a safeguard
        root = np.sqrt(candidate)
        if root == std:
            return float(candidate)
        candidate = np.nextafter(candidate, np.float32(np.inf) if root < std else np.float32(0))
    raise ValueError(f"no float32 variance has the square root {std!r}")


def preprocessing_layers(preprocessing: Preprocessing) -> list[keras.layers.Layer]:
    """Raw pixels to the network's input, one trainer operation per layer (binary's scale is the network's)."""
    mean_image = preprocessing.mean_image.astype(np.float32)
    return [
        keras.layers.Normalization(axis=None, mean=0.0, variance=255.0 ** 2, name="scale_to_unit", dtype="float32"),
        keras.layers.Normalization(axis=(-3, -2, -1), mean=mean_image, variance=np.ones_like(mean_image),
                                   name="subtract_mean_image", dtype="float32"),
        keras.layers.Normalization(axis=None, mean=0.0, variance=variance_for_std(preprocessing.std),
                                   name="divide_by_std", dtype="float32"),
    ]


def _plain_masked(layer: MaskedDense | MaskedConv2D, kernel: np.ndarray, dtype: str) -> keras.layers.Layer:
    """The standard Dense or Conv2D for an exported (possibly compacted) kernel, as `masks.strip` makes it."""
    return standard_layer(layer, units=kernel.shape[-1], dtype=dtype)


# Plain counterparts: of the masked layers (given their exported kernel), and of the layers without weights.
PLAIN_MASKED_LAYERS = {MaskedDense: _plain_masked, MaskedConv2D: _plain_masked}
PLAIN_LAYERS = {
    MaxPool2x2: lambda layer, dtype: keras.layers.MaxPooling2D(2, name=layer.name, dtype=dtype),
    keras.layers.Flatten: lambda layer, dtype: keras.layers.Flatten(name=layer.name, dtype=dtype),
    # the input scale keeps the trainer's own dtype (float32 whatever the precision: networks.assembly)
    keras.layers.Rescaling: lambda layer, dtype: keras.layers.Rescaling(layer.scale, layer.offset, name=layer.name,
                                                                        dtype=layer.dtype_policy),
}


def _chain(template: keras.Model) -> list[keras.layers.Layer]:
    """The template's layers after its input, checked to form a chain (each reads the previous one's output)."""
    layers = template.layers
    for previous, layer in zip(layers, layers[1:]):
        if layer.input is not previous.output:
            raise ExportError(f"network {template.name}: layer {layer.name} does not read {previous.name}; "
                              f"only chains of layers can be exported")
    return layers[1:]


def hidden_activation(template: keras.Model) -> str:
    """The name of the hidden layers' activation (the first masked layer's)."""
    return keras.activations.serialize(masked_layers(template)[0].activation)


def plain_model(template: keras.Model, kernels: Mapping[str, np.ndarray], preprocessing: Preprocessing, *,
                compact: bool = False, dtype: str = "float32") -> keras.Model:
    """The plain Keras model of the masked network `template` with effective kernels `kernels`.

    `compact` removes the units and filters that cannot affect the output (`export.compaction`); `dtype` is
    the dtype policy of the network's layers (the run's precision; the preprocessing is always float32).
    """
    names = [layer.name for layer in masked_layers(template)]
    if list(kernels) != names:
        raise ExportError(f"kernels for {', '.join(kernels)} given; network {template.name} has {', '.join(names)}")
    exported = [np.asarray(kernel, dtype=np.float32) for kernel in kernels.values()]
    if compact:
        exported = compact_kernels(exported, effective_size(exported, hidden_activation(template)).kept)
    exported = dict(zip(names, exported))

    inputs = keras.Input(preprocessing.input_shape, dtype=RAW_INPUT_DTYPE, name="raw_pixels")
    x = inputs
    for layer in preprocessing_layers(preprocessing):
        x = layer(x)
    for layer in _chain(template):
        if type(layer) in PLAIN_MASKED_LAYERS:
            plain = PLAIN_MASKED_LAYERS[type(layer)](layer, exported[layer.name], dtype)
            x = plain(x)
            plain.set_weights([exported[layer.name]])
        elif type(layer) in PLAIN_LAYERS:
            x = PLAIN_LAYERS[type(layer)](layer, dtype)(x)
        else:
            raise ExportError(f"network {template.name}: no plain Keras counterpart for layer {layer.name} "
                              f"({type(layer).__name__})")
    return keras.Model(inputs, x, name=f"{template.name}_export")
