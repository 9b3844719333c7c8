"""Masked dense and convolution layers: frozen random kernel W, trainable scores S, kernel W * m(S).

Both layers subclass `keras.layers.Layer` directly (a `Dense` subclass would save only kernel and bias and
lose the scores). They share one mechanism in `MaskedLayer`; a subclass only says the kernel's shape and
how to apply it. The project's networks have no biases (SPEC.md section 1); `use_bias=True` adds one, frozen like
W in a masked layer and trained in an unmasked one, for models converted from standard Keras layers
(`masks.convert`). What a mask type needs beside the scores
(`masks.functions.MaskType`) is made here once for every mask type: the fraction kept, a threshold fixed from
the initial scores, or uniform draws counted by a weight of the layer.
"""
import keras
import numpy as np
from keras import ops

import initializers.keras_initializer  # noqa: F401  registers SeededInitializer, which masked layers' configs name
from initializers.keras_initializer import KERAS_PACKAGE as _PACKAGE
from masks import functions


@keras.saving.register_keras_serializable(package=_PACKAGE)
class KeptFractionReward(keras.regularizers.Regularizer):
    """The Min* loss term of one layer: -mean(m(S)), rewarding connections kept on or signs kept.

    Averaged in float32, like the cross-entropy it is added to, whatever the layer's compute dtype.
    """

    def __call__(self, mask):
        return -ops.mean(ops.cast(mask, "float32"))

    def get_config(self) -> dict:
        return {}


class MaskedLayer(keras.layers.Layer):
    """Computes `activation(apply_kernel(x, W * m(S)))`.

    With `mask_type=None` there are no scores and W itself is trained (the Baseline training type).
    `mask_regularizer`, if given, is called on m(S) and added to the model's losses; the mask is computed
    once per call and serves both the kernel and the regularizer. `keep` is the fraction a `topk` mask keeps;
    `noise_seed` seeds a `bernoulli` mask's draws: training step t draws with counter t (1, 2, ...), evaluation
    always with counter 0, so the evaluated and exported mask is one fixed Bernoulli(sigmoid(S)) sample.
    `use_bias` adds a bias b after the kernel (before the activation): frozen when masked, trained when not.
    """

    def __init__(self, activation=None, mask_type: str | None = "mask", kernel_initializer="he_normal",
                 score_initializer=None, mask_regularizer=None, keep: float | None = None, noise_seed: int = 0,
                 use_bias: bool = False, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.activation = keras.activations.get(activation)
        self.mask_type = mask_type
        self.mask_function = None if mask_type is None else functions.get(mask_type)
        keeps_fraction = self.mask_function is not None and self.mask_function.keeps_fraction
        self.keep = functions.checked_keep(keep) if keeps_fraction else None if keep is None else float(keep)
        self.noise_seed = int(noise_seed)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.score_initializer = keras.initializers.get(
            score_initializer or keras.initializers.RandomUniform(0.01, 0.1))
        self.mask_regularizer = keras.regularizers.get(mask_regularizer)

    def kernel_shape(self, input_shape) -> tuple:
        raise NotImplementedError

    def apply_kernel(self, inputs, kernel):
        raise NotImplementedError

    def build(self, input_shape):
        shape = self.kernel_shape(input_shape)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer,
                                      trainable=self.mask_type is None)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(shape[-1],), initializer=self.bias_initializer,
                                        trainable=self.mask_type is None)
        self.scores = self.threshold = self.draws = self.search_hint = None
        if self.mask_type is None:
            return
        # Read in float32 even under a mixed policy (autocast off): the mask trained with is the one logged,
        # saved and exported, whatever the compute dtype
        self.scores = self.add_weight(name="scores", shape=shape, initializer=self.score_initializer, trainable=True,
                                      autocast=False)
        if self.mask_function.thresholded:
            self.threshold = self.add_weight(
                name="threshold", shape=(), trainable=False, autocast=False,
                initializer=lambda shape, dtype=None: functions.SIGNED_THRESHOLD_FRACTION * ops.max(
                    ops.abs(self.scores)))
        if self.mask_function.sampled:
            self.draws = self.add_weight(name="draws", shape=(), dtype="int32", initializer="zeros", trainable=False)
        if self.mask_function.keeps_fraction:  # where the last training step found the top-k threshold
            self.search_hint = self.add_weight(name="search_hint", shape=(2,), dtype="int32", initializer="zeros",
                                               trainable=False)

    def mask_inputs(self, training: bool) -> functions.MaskInputs:
        """What the mask function needs beside the scores; a training call of a sampled mask counts its draw, and
        of a top-k mask keeps where it found its threshold (which saves the next search passes, not values)."""
        uniforms, threshold = None, self.threshold
        if self.mask_function.sampled:
            draw = 0
            if training:
                draw = self.draws + 1
                self.draws.assign(draw)
            uniforms = functions.uniform_noise(tuple(self.scores.shape), self.noise_seed, draw)
        if self.mask_function.keeps_fraction:
            threshold, hint = functions.top_k_search(ops.cast(self.scores, "float32"), self.keep, self.search_hint)
            if training:
                self.search_hint.assign(hint)
        return functions.MaskInputs(keep=self.keep, threshold=threshold, uniforms=uniforms)

    def mask_at(self, training: bool):
        """m(S) as a training step (`training`) or an evaluation sees it."""
        return self.mask_function(self.scores, self.mask_inputs(training))

    # Methods, not properties: Keras's saving reads every attribute of a layer, so a property would compute the
    # mask (a top-k search, a Bernoulli draw) on every save
    def mask(self):
        """m(S) as evaluated, or None for an unmasked (Baseline) layer."""
        return None if self.mask_type is None else self.mask_at(training=False)

    def effective_kernel(self):
        """The kernel the layer computes with: W * m(S), or W for an unmasked layer."""
        mask = self.mask()
        return self.kernel if mask is None else self.kernel * mask

    def call(self, inputs, training=None):
        kernel = self.kernel
        if self.mask_type is not None:
            mask = self.mask_at(bool(training))
            if self.mask_regularizer is not None:
                self.add_loss(self.mask_regularizer(mask))
            kernel = kernel * ops.cast(mask, kernel.dtype)
        outputs = self.apply_kernel(inputs, kernel)
        if self.use_bias:  # as keras.layers.Dense / Conv2D add it, so a converted layer computes the same values
            outputs = ops.add(outputs, ops.reshape(self.bias, (1,) * (len(outputs.shape) - 1) + (-1,)))
        return self.activation(outputs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "activation": keras.activations.serialize(self.activation),
            "mask_type": self.mask_type,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "score_initializer": keras.initializers.serialize(self.score_initializer),
            "mask_regularizer": keras.regularizers.serialize(self.mask_regularizer),
            "keep": self.keep,
            "noise_seed": self.noise_seed,
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedDense(MaskedLayer):
    """Dense layer on a masked kernel of shape [fan_in, units] (bias only with `use_bias`)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def kernel_shape(self, input_shape) -> tuple:
        return (int(input_shape[-1]), self.units)

    def apply_kernel(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


def _pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair (Keras's convention for kernel sizes and strides)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(item, (int, np.integer)) and item > 0 for item in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, not {value!r}")
    return int(pair[0]), int(pair[1])


def _convolved_length(length, kernel: int, stride: int, padding: str):
    if length is None:
        return None
    return -(-length // stride) if padding == "same" else (length - kernel) // stride + 1


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedConv2D(MaskedLayer):
    """2D convolution (channels last) on a masked kernel [kh, kw, c_in, filters]; the project's networks use
    the defaults: 3x3, stride 1, `same` padding, no bias."""

    def __init__(self, filters: int, kernel_size=3, strides=1, padding: str = "same", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = str(padding).lower()
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', not {padding!r}")

    def kernel_shape(self, input_shape) -> tuple:
        return (*self.kernel_size, int(input_shape[-1]), self.filters)

    def apply_kernel(self, inputs, kernel):
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding)

    def compute_output_shape(self, input_shape):
        spatial = [_convolved_length(length, kernel, stride, self.padding)
                   for length, kernel, stride in zip(input_shape[1:3], self.kernel_size, self.strides)]
        return (input_shape[0], *spatial, self.filters)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


def masked_layers(model: keras.Model) -> list[MaskedLayer]:
    """The model's masked layers in order (the order of the saved weight and mask keys)."""
    return [layer for layer in model.layers if isinstance(layer, MaskedLayer)]


def masked_layers_within(model: keras.Model) -> list[MaskedLayer]:
    """The masked layers of `model` and of the models nested in it, depth first in layer order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, MaskedLayer):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(masked_layers_within(layer))
    return found


def standard_layer(layer: MaskedLayer, units: int | None = None, dtype=None) -> keras.layers.Layer:
    """The standard Keras layer (`Dense` / `Conv2D`, not built) that computes what `layer` computes once its
    weights are the effective kernel W * m(S) and the bias (`standard_weights`): same name, activation, kernel
    size, strides, padding and bias. `units` (filters) overrides the layer's, for a compacted kernel; `dtype`
    the dtype policy (default: the layer's)."""
    dtype = layer.dtype_policy if dtype is None else dtype
    common = dict(activation=layer.activation, use_bias=layer.use_bias, name=layer.name, dtype=dtype)
    if isinstance(layer, MaskedDense):
        return keras.layers.Dense(int(layer.units if units is None else units), **common)
    if isinstance(layer, MaskedConv2D):
        return keras.layers.Conv2D(int(layer.filters if units is None else units), layer.kernel_size,
                                   strides=layer.strides, padding=layer.padding, **common)
    raise TypeError(f"no standard Keras layer for {type(layer).__name__}")


def standard_weights(layer: MaskedLayer) -> list[np.ndarray]:
    """The weights of `standard_layer(layer)`: the effective kernel W * m(S) as evaluated, and the bias."""
    weights = [ops.convert_to_numpy(layer.effective_kernel())]
    if layer.use_bias:
        weights.append(ops.convert_to_numpy(layer.bias))
    return weights
