"""The trained network as plain Keras: standard layers only, the run's preprocessing inside, raw pixels in.

Each masked layer becomes a `Dense` / `Conv2D` without bias whose kernel is the effective kernel W * m(S) (the
layer `masks.layers.standard_layer` makes, which `masks.strip` uses too); the
project's `MaxPool2x2` becomes `MaxPooling2D(2)` (same values); `Flatten`, binary's `input_scale` `Rescaling`,
and a ResNet's BatchNorm (with its trained values), adds, activations and average pooling stay. The network is
cloned along its functional graph (as `masks.strip` clones), so residual networks export as they are. In front
come three `Normalization` layers that repeat the trainer's float32 arithmetic operation by operation, `(raw / 255 - mean_image) / std`: a `Normalization` divides, whereas `Rescaling(1 / 255)`
multiplies by a rounded reciprocal and differs from `raw / 255` in the last bit for most pixels, which can flip
a prediction. The file loads with `keras.saving.load_model` in safe mode, without this project.
"""
from collections.abc import Mapping

import keras
import numpy as np

import networks
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


# Layers of the networks that are standard Keras already: copied with their weights (BatchNorm's trained gamma,
# beta and moving statistics) in the export's dtype policy.
STANDARD_LAYERS = (keras.layers.Flatten, keras.layers.BatchNormalization, keras.layers.Add, keras.layers.Activation,
                   keras.layers.AveragePooling2D)


def _plain_layer(layer: keras.layers.Layer, kernels: Mapping[str, np.ndarray], dtype: str) -> tuple:
    """The standard Keras layer standing for `layer` in the export, and the weights it is given once built."""
    if isinstance(layer, (MaskedDense, MaskedConv2D)):  # as `masks.strip` makes it, for a possibly compacted kernel
        kernel = kernels[layer.name]
        return standard_layer(layer, units=kernel.shape[-1], dtype=dtype), [kernel]
    if isinstance(layer, MaxPool2x2):
        return keras.layers.MaxPooling2D(2, name=layer.name, dtype=dtype), []
    if isinstance(layer, keras.layers.Rescaling):  # the input scale keeps the trainer's float32 (networks.assembly)
        return keras.layers.Rescaling.from_config(layer.get_config()), []
    if isinstance(layer, STANDARD_LAYERS):
        return type(layer).from_config({**layer.get_config(), "dtype": dtype}), layer.get_weights()
    raise ExportError(f"layer {layer.name}: no plain Keras counterpart for {type(layer).__name__}")


def hidden_activation(template: keras.Model) -> str:
    """The name of the hidden layers' activation (the first masked layer's)."""
    return keras.activations.serialize(masked_layers(template)[0].activation)


def plain_model(template: keras.Model, kernels: Mapping[str, np.ndarray], preprocessing: Preprocessing, *,
                compact: bool = False, dtype: str = "float32") -> keras.Model:
    """The plain Keras model of the masked network `template` with effective kernels `kernels`.

    `compact` removes the units and filters that cannot affect the output (`export.compaction`; none in a network
    that is not `compactable`, such as the ResNets); `template` holds the trained values of its other layers
    (BatchNorm's); `dtype` is the dtype policy of the network's layers (the run's precision; the preprocessing is
    always float32).
    """
    names = [layer.name for layer in masked_layers(template)]
    if list(kernels) != names:
        raise ExportError(f"kernels for {', '.join(kernels)} given; network {template.name} has {', '.join(names)}")
    exported = [np.asarray(kernel, dtype=np.float32) for kernel in kernels.values()]
    if compact and networks.get(template.name).compactable:
        exported = compact_kernels(exported, effective_size(exported, hidden_activation(template)).kept)
    exported = dict(zip(names, exported))

    inputs = keras.Input(preprocessing.input_shape, dtype=RAW_INPUT_DTYPE, name="raw_pixels")
    x = inputs
    for layer in preprocessing_layers(preprocessing):
        x = layer(x)
    filled = []

    def clone_function(layer):
        plain, weights = _plain_layer(layer, exported, dtype)
        filled.append((plain, weights))
        return plain

    # What keras.models.clone_model does inside; its public form rebuilds the graph from the preprocessed tensor
    # anew, whose output is then not the one that reaches the raw input here
    outputs = template._run_through_graph(x, operation_fn=clone_function)
    for plain, weights in filled:
        plain.set_weights(weights)
    return keras.Model(inputs, outputs, name=f"{template.name}_export")
