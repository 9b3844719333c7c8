"""Masked dense and convolution layers: frozen random kernel W, trainable scores S, kernel W * m(S).

Both layers subclass `keras.layers.Layer` directly (a `Dense` subclass would save only kernel and bias and
lose the scores). They share one mechanism in `MaskedLayer`; a subclass only says the kernel's shape and
how to apply it. There are no biases anywhere (SPEC.md section 1).
"""
import keras
from keras import ops

from masks import functions

_PACKAGE = "masktrainer"


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
    once per call and serves both the kernel and the regularizer.
    """

    def __init__(self, activation=None, mask_type: str | None = "mask", kernel_initializer="he_normal",
                 score_initializer=None, mask_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.mask_type = mask_type
        self.mask_function = None if mask_type is None else functions.get(mask_type)
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
        self.scores = None
        if self.mask_type is not None:
            self.scores = self.add_weight(name="scores", shape=shape, initializer=self.score_initializer,
                                          trainable=True)

    @property
    def mask(self):
        """m(S), or None for an unmasked (Baseline) layer."""
        return None if self.mask_type is None else self.mask_function(self.scores)

    @property
    def effective_kernel(self):
        """The kernel the layer computes with: W * m(S), or W for an unmasked layer."""
        mask = self.mask
        return self.kernel if mask is None else self.kernel * mask

    def call(self, inputs):
        kernel = self.kernel
        if self.mask_type is not None:
            mask = self.mask_function(self.scores)
            if self.mask_regularizer is not None:
                self.add_loss(self.mask_regularizer(mask))
            kernel = kernel * mask
        return self.activation(self.apply_kernel(inputs, kernel))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "activation": keras.activations.serialize(self.activation),
            "mask_type": self.mask_type,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "score_initializer": keras.initializers.serialize(self.score_initializer),
            "mask_regularizer": keras.regularizers.serialize(self.mask_regularizer),
        })
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedDense(MaskedLayer):
    """Dense layer without bias on a masked kernel of shape [fan_in, units]."""

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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedConv2D(MaskedLayer):
    """3x3 convolution, stride 1, `same` padding, no bias, on a masked kernel [3, 3, c_in, filters]."""

    def __init__(self, filters: int, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)

    def kernel_shape(self, input_shape) -> tuple:
        return (self.kernel_size, self.kernel_size, int(input_shape[-1]), self.filters)

    def apply_kernel(self, inputs, kernel):
        return ops.conv(inputs, kernel, strides=1, padding="same")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}


def masked_layers(model: keras.Model) -> list[MaskedLayer]:
    """The model's masked layers in order (the order of the saved weight and mask keys)."""
    return [layer for layer in model.layers if isinstance(layer, MaskedLayer)]
