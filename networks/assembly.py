"""A registered architecture made into a Keras model of masked layers, each with its own seeds.

The factory gives each masked layer its own seeds, derived from the run seed and the layer's position, so the
same seed always draws the same weights and no two layers share a draw. Importing this module registers every
layer and initializer a saved model of this project holds.
"""
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import keras
from keras import ops

import initializers
from initializers import layer_seed
from initializers.keras_initializer import KERAS_PACKAGE, SeededInitializer
from masks.layers import KeptFractionReward, MaskedConv2D, MaskedDense, masked_layers


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class MaxPool2x2(keras.layers.Layer):
    """2x2 max-pooling, stride 2, `valid`, computed as a reshape and a max.

    Same forward values as `keras.layers.MaxPooling2D(2)`; its gradient is deterministic on every device,
    whereas TensorFlow refuses MaxPoolGrad under XLA once op determinism is on.
    """

    def call(self, x):
        height, width, channels = x.shape[1] // 2, x.shape[2] // 2, x.shape[3]
        x = x[:, :2 * height, :2 * width, :]
        return ops.max(ops.reshape(x, (-1, height, 2, width, 2, channels)), axis=(2, 4))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] // 2, input_shape[2] // 2, input_shape[3])

    def standard_layer(self) -> keras.layers.MaxPooling2D:
        """The standard Keras layer computing the same values (`masks.strip`), which loads without this project."""
        return keras.layers.MaxPooling2D(2, name=self.name, dtype=self.dtype_policy)


@dataclass
class LayerFactory:
    """Makes the layers of one network, numbering the masked ones to derive their seeds, and naming the others
    in order of their kind (bn_1, add_1, ...) so their variables' paths are the same in every build."""
    mask_type: str | None
    initializer: str
    p1: float
    seed: int
    activation: str
    rewards_unchanged: bool = False
    score_initializer: str = initializers.SCORES
    keep: float | None = None
    batchnorm: str = "trainable"
    count: int = field(default=0, init=False)
    named: Counter = field(default_factory=Counter, init=False)

    def _name(self, kind: str) -> str:
        self.named[kind] += 1
        return f"{kind}_{self.named[kind]}"

    def _common(self, prefix: str, activation: str) -> dict:
        index = self.count
        self.count += 1
        return dict(
            name=f"{prefix}_{index + 1}",
            activation=activation,
            mask_type=self.mask_type,
            kernel_initializer=SeededInitializer(self.initializer, layer_seed(self.seed, index, 0), self.p1),
            score_initializer=SeededInitializer(self.score_initializer, layer_seed(self.seed, index, 1)),
            mask_regularizer=KeptFractionReward() if self.rewards_unchanged and self.mask_type else None,
            keep=self.keep,
            noise_seed=layer_seed(self.seed, index, 2),
        )

    def dense(self, units: int, activation: str | None = None) -> MaskedDense:
        return MaskedDense(units, **self._common("dense", activation or self.activation))

    def conv(self, filters: int, kernel_size: int = 3, strides: int = 1, activation: str | None = None,
             prefix: str = "conv") -> MaskedConv2D:
        """A masked convolution, `same` padding; activation None: the hidden one ("linear" for none)."""
        return MaskedConv2D(filters, kernel_size=kernel_size, strides=strides,
                            **self._common(prefix, activation or self.activation))

    def classifier(self, num_classes: int) -> MaskedDense:
        return self.dense(num_classes, activation="softmax")

    def max_pool(self) -> MaxPool2x2:
        return MaxPool2x2()

    def flatten(self) -> keras.layers.Flatten:
        return keras.layers.Flatten()

    def batch_norm(self) -> keras.layers.BatchNormalization:
        """Keras's BatchNormalization (moving statistics tracked); `frozen` has no gamma and beta to learn."""
        learned = self.batchnorm == "trainable"
        return keras.layers.BatchNormalization(center=learned, scale=learned, name=self._name("bn"))

    def activation_layer(self) -> keras.layers.Activation:
        """The hidden activation as a layer of its own (after a BatchNorm or an add)."""
        return keras.layers.Activation(self.activation, name=self._name(self.activation))

    def add(self) -> keras.layers.Add:
        return keras.layers.Add(name=self._name("add"))

    def average_pool(self, size: int) -> keras.layers.AveragePooling2D:
        return keras.layers.AveragePooling2D(size, name=self._name("average_pool"))


def _assemble(builder: Callable, name: str, input_shape: tuple, num_classes: int, layers: LayerFactory,
              input_scale: float) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs if input_scale == 1.0 else keras.layers.Rescaling(input_scale, name="input_scale", dtype="float32")(
        inputs)  # scaled in float32 whatever the policy (where float16 cannot go on: training.run.check_precision)
    return keras.Model(inputs, builder(x, layers, num_classes), name=name)


def build_model(builder: Callable, name: str, input_shape: tuple, *, activation: str = "relu", mask_type: str | None = "mask",
                initializer: str = "he", p1: float = 0.5, seed: int = 1, rewards_unchanged: bool = False,
                score_initializer: str = initializers.SCORES, keep: float | None = None,
                batchnorm: str = "trainable", num_classes: int = 10) -> keras.Model:
    """Build network `name` (its registered `builder`) with masked layers; weights drawn from `initializer` with per-layer seeds, the same
    for every training type (`score_initializer`, `keep` and the mask type say how the connectivity is trained);
    `batchnorm` (`networks.BATCHNORM_MODES`) says whether the BatchNorm layers of a network with them learn gamma
    and beta.

    For initializers that scale the input (`binary`), the scale is computed from the kernel shapes of a
    first build, then the network is built again with it (same seeds, so the same weights).
    """
    def factory():
        return LayerFactory(mask_type, initializer, p1, seed, activation, rewards_unchanged, score_initializer, keep,
                            batchnorm)

    model = _assemble(builder, name, input_shape, num_classes, factory(), 1.0)
    scale = initializers.get(initializer).input_scale(
        [tuple(layer.kernel.shape) for layer in masked_layers(model)])
    if scale != 1.0:
        model = _assemble(builder, name, input_shape, num_classes, factory(), scale)
    return model
