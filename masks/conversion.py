"""Masks on your own Keras model: `convert` a Sequential or functional model to masked layers, `strip` them off.

`convert` replaces every `keras.layers.Dense` and `keras.layers.Conv2D` (exactly these classes, not subclasses)
by its masked twin (`MaskedDense`, `MaskedConv2D`) with the same units or filters, kernel size, strides, padding,
activation, bias, name, dtype policy and `trainable` flag; every other layer (BatchNormalization, pooling,
DepthwiseConv2D, SeparableConv2D, Conv1D/3D, Add, Dropout, preprocessing, ...) is cloned with its weights, and
nested Sequential or functional models are converted in turn. The new model shares no variable with the original.
The Min* reward is a layer loss (`add_loss`), so `model.compile(optimizer, loss)` and `model.fit` train any
training type on either backend.

`strip` makes the trained model plain Keras again: each masked layer becomes the standard `Dense` / `Conv2D` with
kernel W * m(S) and its bias (`masks.layers.standard_layer`, which the Exporter uses too), and the project's
`MaxPool2x2` becomes `MaxPooling2D(2)` (same values; any layer with a `standard_layer()` method is replaced by what
it returns), so the saved file loads where this project is not installed.

Seeds follow `networks.assembly.LayerFactory` (`initializers.layer_seed`): the i-th converted layer (counting Dense and Conv2D layers in
`model.layers` order, a nested model's layers in its place) draws its scores from `layer_seed(seed, i, 1)`, a
sampled mask's draws from `layer_seed(seed, i, 2)`, and with `weights=<initializer>` W from
`layer_seed(seed, i, 0)`.
"""
from typing import Callable

import keras
import numpy as np
from keras.src.models.functional import Functional

import initializers
from initializers import layer_seed
from initializers.keras_initializer import SeededInitializer
from masks import functions
from masks.layers import (KeptFractionReward, MaskedConv2D, MaskedDense, MaskedLayer, standard_layer,
                          standard_weights)
from settings import types as training_types  # plain data, no imports: the training types' names and options

CONVERTED = (keras.layers.Dense, keras.layers.Conv2D)  # the layer classes `convert` replaces
KEEP = "keep"  # `weights=KEEP`: the layer's current kernel and bias become the frozen W and bias


def _check_model(model: keras.Model, caller: str) -> None:
    """Only models whose layers and wiring are known without running their `call` can be rebuilt."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"masks.{caller}: expected a keras.Model, not {type(model).__name__}")
    if not (isinstance(model, keras.Sequential) or type(model) is Functional):
        raise ValueError(f"masks.{caller}: model {model.name!r} is a subclassed keras.Model "
                         f"({type(model).__name__}); only Sequential and functional models can be converted, "
                         f"since a subclass's call() may use its layers in any way")
    if not model.built:
        raise ValueError(f"masks.{caller}: model {model.name!r} is not built; give it a keras.Input or call it "
                         f"on a batch first")


def _converted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The Dense and Conv2D layers `convert` replaces, in the order their seeds are numbered."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_model(layer, "convert")
            found.extend(_converted_layers(layer))
        elif type(layer) in CONVERTED and not any(layer is seen for seen in found):
            found.append(layer)
    return found


def _clone(model: keras.Model, replace: Callable) -> keras.Model:
    """`model` rebuilt with `replace(layer)` -> (new layer, fill(new layer)) where it returns one, else with a
    copy of the layer and its weights; nested models are rebuilt the same way."""
    fills = []

    def clone_function(layer):
        if isinstance(layer, keras.Model):
            return _clone(layer, replace)
        replaced = replace(layer)
        if replaced is None:
            weights = layer.get_weights()
            new = layer.__class__.from_config(layer.get_config())
            replaced = new, lambda built: built.set_weights(weights)
        fills.append(replaced)
        return replaced[0]

    clone = keras.models.clone_model(model, clone_function=clone_function)
    if not clone.built:  # a Sequential built by a call, without an Input
        clone.build(model.input_shape)
    for layer, fill in fills:
        fill(layer)
    return clone


def _unsupported(layer: keras.layers.Layer) -> str | None:
    """Why `layer` has no masked twin (options the masked layers do not implement), or None."""
    config = layer.get_config()
    if getattr(layer, "quantization_mode", None):
        return f"it is quantized ({layer.quantization_mode})"
    if config.get("lora_rank"):
        return "it has LoRA enabled"
    if isinstance(layer, keras.layers.Conv2D):
        if config.get("data_format", "channels_last") != "channels_last":
            return "its data_format is channels_first"
        if tuple(layer.dilation_rate) != (1, 1):
            return f"its dilation_rate is {tuple(layer.dilation_rate)}"
        if layer.groups != 1:
            return f"it has groups={layer.groups}"
    return None


def _masked_twin(layer, index: int, options: dict, weights: str, seed: int, p1: float) -> tuple:
    """The masked layer replacing `layer`, and what fills its frozen W (and bias) once it is built."""
    problem = _unsupported(layer)
    if problem:
        raise ValueError(f"masks.convert: layer {layer.name!r} ({type(layer).__name__}) cannot be masked: {problem}")
    config = layer.get_config()
    mask_type = options["mask_type"]
    kernel_initializer = (keras.initializers.get(config["kernel_initializer"]) if weights == KEEP
                          else SeededInitializer(weights, layer_seed(seed, index, 0), p1))
    common = dict(
        name=layer.name, dtype=layer.dtype_policy, trainable=layer.trainable,
        activation=layer.activation, use_bias=layer.use_bias,
        bias_initializer=keras.initializers.get(config["bias_initializer"]),
        mask_type=mask_type,
        kernel_initializer=kernel_initializer,
        score_initializer=SeededInitializer(options["score_initializer"], layer_seed(seed, index, 1)),
        mask_regularizer=KeptFractionReward() if options["rewards_unchanged"] and mask_type else None,
        keep=options["keep"],
        noise_seed=layer_seed(seed, index, 2),
    )
    if isinstance(layer, keras.layers.Dense):
        twin = MaskedDense(layer.units, **common)
    else:
        twin = MaskedConv2D(layer.filters, kernel_size=layer.kernel_size, strides=layer.strides,
                            padding=layer.padding, **common)
    if weights != KEEP:
        return twin, lambda built: None
    values = [np.array(keras.ops.convert_to_numpy(variable)) for variable in layer.weights]

    def fill(built):
        built.kernel.assign(values[0])
        if built.use_bias:
            built.bias.assign(values[1])
    return twin, fill


def convert(model: keras.Model, traintype: str = "FreePruning", weights: str = KEEP, seed: int = 0, *,
            masktype: str | None = None, keep: float | None = None, p1: float = 0.5) -> keras.Model:
    """A new model in which every `Dense` and `Conv2D` of `model` is masked for training type `traintype`
    (any name of `settings.types.TRAINING_TYPES`; `masktype` and EdgePopup's `keep` as on the command line).

    `weights="keep"` freezes each layer's current kernel and bias as W and bias; an initializer name
    (`initializers.INITIALIZERS`: he, glorot, heconstant, binary; `p1` for the signed ones) redraws W with
    the project's seeded draws and starts the bias from the layer's bias initializer (binary's input scale is
    not applied). With an all-on initial mask (FreePruning, MinPruning, SignFlipping, MinFlipping) and with
    Baseline, the converted model computes exactly what the original does. ValueError (one line) for a
    subclassed or unbuilt model, an unknown name, or a Dense/Conv2D option the masked layers lack.
    """
    _check_model(model, "convert")
    if weights != KEEP and weights not in initializers.INITIALIZERS:
        raise ValueError(f"masks.convert: weights must be {KEEP!r} or one of "
                         f"{', '.join(initializers.INITIALIZERS)}, not {weights!r}")
    try:
        training_type = training_types.get(traintype)
        options = training_type.layer_options(training_type.resolve_mask_type(masktype),
                                              training_type.resolve_keep(keep))
        if options["keep"] is not None:
            functions.checked_keep(options["keep"])
    except ValueError as error:
        raise ValueError(f"masks.convert: {error}") from None
    indices = {id(layer): index for index, layer in enumerate(_converted_layers(model))}

    def replace(layer):
        if id(layer) in indices:
            return _masked_twin(layer, indices[id(layer)], options, weights, int(seed), float(p1))
        return None
    return _clone(model, replace)


def strip(model: keras.Model) -> keras.Model:
    """A plain Keras model computing what the masked `model` computes (as evaluated): each masked layer becomes
    the standard `Dense` / `Conv2D` with kernel W * m(S) and its bias, `MaxPool2x2` becomes `MaxPooling2D(2)`,
    every other layer is copied with its weights. The saved file loads without this project."""
    _check_model(model, "strip")

    def replace(layer):
        if isinstance(layer, MaskedLayer):
            values = standard_weights(layer)
            return standard_layer(layer), lambda built: built.set_weights(values)
        if hasattr(layer, "standard_layer"):  # the project's other layers (MaxPool2x2) say their standard twin
            return layer.standard_layer(), lambda built: None
        return None
    return _clone(model, replace)
