"""The training recipe around the masks: optimizer, learning rate per epoch, weight decay, augmentation.

The paper trains with Adam at a constant rate on the images as they are; the field's later work (the authors'
ResNet, edge-popup, the signed supermask) uses SGD with momentum and weight decay, a schedule and augmentation.
Every piece is a function of the settings and the epoch alone, so a resumed run continues exactly: the rate is
set before each epoch, and the augmentation of an epoch is drawn from (seed, epoch) on the host and applied
inside the compiled step (`training.backends`), in `keras.ops`, on either backend.
"""
import math

import keras
import numpy as np
from keras import ops

MAX_SHIFT = 4  # pixels an image moves at most along each axis (pad by 4 and crop, as the field's CIFAR recipes)
AUGMENTATION_STREAM = 0x617567  # ("aug") (seed, epoch, this) draws augmentations; (seed, epoch) draws the order
# `steps` (the Keras CIFAR-10 ResNet example's `lr_schedule`, made relative to its 200 epochs): after this
# fraction of maxepochs, the rate is the initial one times the factor.
STEP_DECAY = ((0.9, 0.5e-3), (0.8, 1e-3), (0.6, 1e-2), (0.4, 1e-1))


def make_optimizer(name: str, learning_rate: float, momentum: float) -> keras.optimizers.Optimizer:
    """Keras's Adam or SGD, named by the optimizer (checkpoint keys start with its name). Keras's SGD keeps
    m = momentum * m - lr * g, which equals PyTorch's at a constant rate."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, name="sgd")
    return keras.optimizers.Adam(learning_rate=learning_rate, name="adam")


def learning_rate(schedule: str, initial: float, epoch: int, epochs: int) -> float:
    """The rate of training epoch `epoch` (1 to `epochs`): constant; cosine, per epoch as hidden-networks'
    `utils/schedulers.py` `cosine_lr` (the initial rate in the first epoch, towards 0 in the last); or steps."""
    elapsed = epoch - 1
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * elapsed / epochs)) * initial
    if schedule == "steps":
        return initial * next((factor for fraction, factor in STEP_DECAY if elapsed > fraction * epochs), 1.0)
    return initial


def weight_penalty(variables, rate: float):
    """rate / 2 x the squared norm of `variables`: added to the loss, it adds rate x value to each gradient,
    the coupled weight decay of PyTorch's optimizers (the rivals' code) and of Keras's L2 regularizer."""
    return (rate / 2) * sum(ops.sum(ops.square(ops.cast(variable, "float32"))) for variable in variables)


def augmentation_draws(seed: int, epoch: int, size: int, flips: bool = True) -> np.ndarray:
    """Per training image (by index), its shift down, shift right (each in [-4, 4]) and flip (0 or 1; always 0
    without `flips`) for epoch `epoch`: int32 [size, 3], a function of (seed, epoch) alone. The flips are drawn
    either way, so a dataset that is not flipped gets the shifts that one that is would get."""
    rng = np.random.default_rng([seed, epoch, AUGMENTATION_STREAM])
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(size, 2))
    flipped = rng.integers(0, 2, size=(size, 1)) * int(flips)
    return np.concatenate([shifts, flipped], axis=1).astype(np.int32)


def augment(images, draws):
    """`images` [batch, height, width, channels] translated and flipped by `draws` [batch, 3]: what padding
    by 4 with zeros (the mean after normalisation), cropping at the shifted corner and then flipping gives.
    A gather, so every pixel is copied exactly on any device (a one-hot matmul would round under TF32)."""
    batch, height, width, channels = images.shape  # static in both backends' compiled steps
    rows = ops.arange(height, dtype="int32")[None, :, None] + draws[:, 0, None, None]
    columns = ops.arange(width, dtype="int32")[None, None, :]
    columns = ops.where(draws[:, 2, None, None] == 1, width - 1 - columns, columns) + draws[:, 1, None, None]
    inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)
    source = (ops.arange(batch, dtype="int32")[:, None, None] * height + ops.clip(rows, 0, height - 1)) * width \
        + ops.clip(columns, 0, width - 1)
    pixels = ops.take(ops.reshape(images, (-1, channels)), ops.reshape(source, (-1,)), axis=0)
    pixels = ops.reshape(pixels, (batch, height, width, channels))
    return ops.where(inside[..., None], pixels, ops.zeros_like(pixels))
