"""The architectures of SPEC.md section 4, and the registry of networks.

A network is a small function from an input tensor and a layer factory (`networks.assembly.LayerFactory`) to
the output tensor; Keras infers every shape. Written only over the factory, the architectures and the registry
load without Keras, so the command line lists and checks the networks quickly; `build` loads Keras.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

ACTIVATIONS = ("relu", "swish", "sigmoid", "elu", "selu")  # hidden-layer activations (SPEC.md section 4)


def lenet(x, layers, num_classes: int):
    """LeNet 300-100: dense 300, dense 100, dense 10 on the flattened input."""
    x = layers.flatten()(x)
    x = layers.dense(300)(x)
    x = layers.dense(100)(x)
    return layers.classifier(num_classes)(x)


def conv_net(x, layers, num_classes: int, block_filters: tuple[int, ...]):
    """ConvN: per block two 3x3 convolutions and a 2x2 max-pool, then dense 256, dense 256, dense 10."""
    for filters in block_filters:
        x = layers.conv(filters)(x)
        x = layers.conv(filters)(x)
        x = layers.max_pool()(x)
    x = layers.flatten()(x)
    x = layers.dense(256)(x)
    x = layers.dense(256)(x)
    return layers.classifier(num_classes)(x)


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network: its builder, the dataset it is trained on by default, whether it convolves (the
    training backends choose XLA and steps per compiled call by it, as measured in BENCHMARKS.md), whether it
    has BatchNorm (so `--batchnorm` applies), and the run settings whose defaults differ from the paper's for it
    (`recipe`, keyed by `settings.config.RunConfig` field names)."""
    builder: Callable
    default_dataset: str
    convolutional: bool
    batchnorm: bool = False
    recipe: Mapping[str, object] = field(default_factory=dict)


NETWORKS: dict[str, NetworkSpec] = {
    "LeNet": NetworkSpec(lenet, "mnist", convolutional=False),
    "Conv2": NetworkSpec(partial(conv_net, block_filters=(64,)), "cifar10", convolutional=True),
    "Conv4": NetworkSpec(partial(conv_net, block_filters=(64, 128)), "cifar10", convolutional=True),
    "Conv6": NetworkSpec(partial(conv_net, block_filters=(64, 128, 256)), "cifar10", convolutional=True),
}


def with_batchnorm() -> list[str]:
    """The networks that have BatchNorm layers."""
    return [name for name, spec in NETWORKS.items() if spec.batchnorm]


def get(name: str) -> NetworkSpec:
    """The network registered as `name`; a ValueError lists the valid names."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    return NETWORKS[name]


def build(name: str, input_shape: tuple, **options):
    """Network `name` as a Keras model of masked layers (options: `networks.assembly.build_model`'s)."""
    from networks.assembly import build_model
    return build_model(name, input_shape, **options)
