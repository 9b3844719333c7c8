"""The architectures of SPEC.md section 4, built from a registry.

A network is a small function from an input tensor and a `MaskedLayerFactory` to the output tensor; Keras
infers every shape. The factory gives each masked layer its own seeds, derived from the run seed and the
layer's position, so the same seed always draws the same weights and no two layers share a draw.
"""
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import keras
import numpy as np
from keras import ops

import initializers
from masks import KeptFractionReward, MaskedConv2D, MaskedDense, masked_layers


ACTIVATIONS = ("relu", "swish", "sigmoid", "elu", "selu")  # hidden-layer activations (SPEC.md section 4)


def layer_seed(run_seed: int, layer_index: int, role: int) -> int:
    """A 32-bit seed for one draw (role 0: weights, 1: scores) of one layer."""
    return int(np.random.SeedSequence([run_seed, layer_index, role]).generate_state(1)[0])


@dataclass
class MaskedLayerFactory:
    """Makes the masked layers of one network, numbering them to derive their seeds."""
    mask_type: str | None
    initializer: str
    p1: float
    seed: int
    activation: str
    rewards_unchanged: bool = False
    count: int = field(default=0, init=False)

    def _common(self, prefix: str, activation: str) -> dict:
        index = self.count
        self.count += 1
        init_class = initializers.get(self.initializer)
        return dict(
            name=f"{prefix}_{index + 1}",
            activation=activation,
            mask_type=self.mask_type,
            kernel_initializer=init_class(seed=layer_seed(self.seed, index, 0), p1=self.p1),
            score_initializer=initializers.UniformScores(seed=layer_seed(self.seed, index, 1)),
            mask_regularizer=KeptFractionReward() if self.rewards_unchanged and self.mask_type else None,
        )

    def dense(self, units: int, activation: str | None = None) -> MaskedDense:
        return MaskedDense(units, **self._common("dense", activation or self.activation))

    def conv(self, filters: int) -> MaskedConv2D:
        return MaskedConv2D(filters, **self._common("conv", self.activation))

    def classifier(self, num_classes: int) -> MaskedDense:
        return self.dense(num_classes, activation="softmax")


@keras.saving.register_keras_serializable(package="masktrainer")
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


def lenet(x, layers: MaskedLayerFactory, num_classes: int):
    """LeNet 300-100: dense 300, dense 100, dense 10 on the flattened input."""
    x = keras.layers.Flatten()(x)
    x = layers.dense(300)(x)
    x = layers.dense(100)(x)
    return layers.classifier(num_classes)(x)


def conv_net(x, layers: MaskedLayerFactory, num_classes: int, block_filters: tuple[int, ...]):
    """ConvN: per block two 3x3 convolutions and a 2x2 max-pool, then dense 256, dense 256, dense 10."""
    for filters in block_filters:
        x = layers.conv(filters)(x)
        x = layers.conv(filters)(x)
        x = MaxPool2x2()(x)
    x = keras.layers.Flatten()(x)
    x = layers.dense(256)(x)
    x = layers.dense(256)(x)
    return layers.classifier(num_classes)(x)


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network: its builder, the dataset it is trained on by default, and whether it convolves
    (the training backends choose XLA and steps per compiled call by it, as measured in BENCHMARKS.md)."""
    builder: Callable
    default_dataset: str
    convolutional: bool


NETWORKS: dict[str, NetworkSpec] = {
    "LeNet": NetworkSpec(lenet, "mnist", convolutional=False),
    "Conv2": NetworkSpec(partial(conv_net, block_filters=(64,)), "cifar10", convolutional=True),
    "Conv4": NetworkSpec(partial(conv_net, block_filters=(64, 128)), "cifar10", convolutional=True),
    "Conv6": NetworkSpec(partial(conv_net, block_filters=(64, 128, 256)), "cifar10", convolutional=True),
}


def get(name: str) -> NetworkSpec:
    """The network registered as `name`; a ValueError lists the valid names."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    return NETWORKS[name]


def _assemble(name: str, input_shape: tuple, num_classes: int, layers: MaskedLayerFactory,
              input_scale: float) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs if input_scale == 1.0 else keras.layers.Rescaling(input_scale, name="input_scale")(inputs)
    return keras.Model(inputs, get(name).builder(x, layers, num_classes), name=name)


def build(name: str, input_shape: tuple, *, activation: str = "relu", mask_type: str | None = "mask",
          initializer: str = "he", p1: float = 0.5, seed: int = 1, rewards_unchanged: bool = False,
          num_classes: int = 10) -> keras.Model:
    """Build network `name` with masked layers; weights drawn from `initializer` with per-layer seeds.

    For initializers that scale the input (`binary`), the scale is computed from the kernel shapes of a
    first build, then the network is built again with it (same seeds, so the same weights).
    """
    def factory():
        return MaskedLayerFactory(mask_type, initializer, p1, seed, activation, rewards_unchanged)

    model = _assemble(name, input_shape, num_classes, factory(), 1.0)
    scale = initializers.get(initializer).input_scale(
        [tuple(layer.kernel.shape) for layer in masked_layers(model)])
    if scale != 1.0:
        model = _assemble(name, input_shape, num_classes, factory(), scale)
    return model
