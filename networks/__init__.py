"""The architectures of SPEC.md section 4, and the registry of networks.

A network is a small function from an input tensor and a layer factory (`networks.assembly.LayerFactory`) to
the output tensor; Keras infers every shape. Written only over the factory, the architectures and the registry
load without Keras, so the command line lists and checks the networks quickly; `build` loads Keras.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
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


def resnet(x, layers, num_classes: int, blocks_per_stage: int):
    """ResNet v1 of depth 6n+2 for CIFAR-10 (He et al. 2016, section 4.2), as the authors' `ResNetBuilder.py`
    builds it from the Keras CIFAR-10 ResNet example: three stages of n blocks with 16, 32, 64 filters; a block
    is conv-BN-activation, conv-BN, added to its input, then the activation; a stage's first block halves the
    image with stride 2 and its input reaches the add through a masked 1x1 stride-2 projection (no BN); then
    8x8 average pooling and the masked classifier (softmax once, where the authors' applies it twice)."""
    x = layers.activation_layer()(layers.batch_norm()(layers.conv(16, activation="linear")(x)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            y = layers.conv(filters, strides=strides, activation="linear")(x)
            y = layers.activation_layer()(layers.batch_norm()(y))
            y = layers.batch_norm()(layers.conv(filters, activation="linear")(y))
            if strides == 2:
                x = layers.conv(filters, kernel_size=1, strides=2, activation="linear", prefix="shortcut")(x)
            x = layers.activation_layer()(layers.add()([x, y]))
    x = layers.flatten()(layers.average_pool(8)(x))
    return layers.classifier(num_classes)(x)


# The authors' ResNet training (`ResNetTrainer` and `main` in their MaskTrainer.py, commit d2b256f): Adam at 1e-3
# on batches of 64 for 200 epochs, the rate divided by 10 at epochs 80, 120 and 160, images shifted by up to 10%
# and flipped left-right (the Keras CIFAR-10 ResNet example's augmentation, which their builder comes from). Here
# `steps` is the Keras example's decay, which also halves the rate after epoch 180, and `augment` the field's
# pad-by-4-and-crop (README, "Choices and deviations").
RESNET_RECIPE = MappingProxyType({"optimizer": "adam", "lr": 1e-3, "lrschedule": "steps", "batchsize": 64,
                                  "maxepochs": 200, "augment": True})


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network: its builder, the dataset it is trained on by default, whether it convolves
    (the training backends choose XLA and steps per compiled call by it, as measured in BENCHMARKS.md), whether
    it has BatchNorm layers (which `--batchnorm` sets up), whether `export.compaction` may remove its units (only
    a chain of masked layers with nothing but pooling between them: a residual add or a BatchNorm lets a unit with
    no weights left still move the output), and its `recipe`: the training settings, by
    `settings.config.RunConfig` field name, whose defaults for this network differ from the paper's."""
    builder: Callable
    default_dataset: str
    convolutional: bool
    batchnorm: bool = False
    compactable: bool = True
    xla_on_cpu: bool = True  # TensorFlow's `--jit auto` on a CPU: XLA slows a ResNet step 3x (BENCHMARKS.md)
    image_size: int | None = None  # the only image height and width it takes (a ResNet's 8x8 pooling), or any
    recipe: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


NETWORKS: dict[str, NetworkSpec] = {
    "LeNet": NetworkSpec(lenet, "mnist", convolutional=False),
    "Conv2": NetworkSpec(partial(conv_net, block_filters=(64,)), "cifar10", convolutional=True),
    "Conv4": NetworkSpec(partial(conv_net, block_filters=(64, 128)), "cifar10", convolutional=True),
    "Conv6": NetworkSpec(partial(conv_net, block_filters=(64, 128, 256)), "cifar10", convolutional=True),
    "Conv8": NetworkSpec(partial(conv_net, block_filters=(64, 128, 256, 512)), "cifar10", convolutional=True),
    **{f"ResNet{6 * n + 2}": NetworkSpec(partial(resnet, blocks_per_stage=n), "cifar10", convolutional=True,
                                         batchnorm=True, compactable=False, xla_on_cpu=False,
                                         image_size=32, recipe=RESNET_RECIPE)
       for n in (3, 5, 7, 9)},
}
BATCHNORM_MODES = ("trainable", "frozen")  # `build(..., batchnorm=...)`: learned gamma and beta, or none


def with_batchnorm() -> list[str]:
    """The networks that have BatchNorm layers."""
    return [name for name, spec in NETWORKS.items() if spec.batchnorm]


def get(name: str) -> NetworkSpec:
    """The network registered as `name`; a ValueError lists the valid names."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    return NETWORKS[name]


def build(name: str, input_shape: tuple, *, batchnorm: str = "trainable", **options):
    """Network `name` as a Keras model of masked layers (options: `networks.assembly.build_model`'s); a
    ValueError for an unknown name or BatchNorm mode."""
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, not {batchnorm!r}")
    from networks.assembly import build_model
    return build_model(get(name).builder, name, input_shape, batchnorm=batchnorm, **options)
