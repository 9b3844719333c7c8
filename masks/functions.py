"""Mask functions m(s) with straight-through gradients (SPEC.md section 1).

Each function returns a tensor whose forward value is exactly the hard mask and whose gradient with
respect to the scores is the identity. The trick `hard + (s - stop_gradient(s))` adds an exact zero in the
forward pass, so an all-on mask multiplies the weights by exactly 1.0 (the epoch-0 network is bit-identical
to the random network), while the backward pass sees d m / d s = 1.

The registry at the end loads without Keras, so the command line lists and checks mask types quickly; the
functions import `keras.ops` when they run (once Keras is loaded, a dictionary lookup).
"""
from typing import Callable

MaskFunction = Callable[[object], object]


def _straight_through(scores, hard):
    """Forward `hard`, backward identity with respect to `scores`."""
    from keras import ops
    return hard + (scores - ops.stop_gradient(scores))


def binary_mask(scores):
    """`mask`: 1 where the score is positive (connection on), else 0."""
    from keras import ops
    hard = ops.cast(ops.greater(scores, 0), scores.dtype)
    return _straight_through(scores, hard)


def rescaled_binary_mask(scores):
    """`mask_rs`: the binary mask times N / (1 + n_on), so a pruned layer keeps the size of its input.

    N and n_on are counted in float32 whatever the compute dtype: in float16 a layer of over 65,504 weights
    would make N infinite.
    """
    from keras import ops
    hard = ops.cast(ops.greater(scores, 0), "float32")
    scale = ops.cast(ops.size(scores), "float32") / (1.0 + ops.sum(hard))
    return _straight_through(scores, ops.stop_gradient(ops.cast(hard * scale, scores.dtype)))


def sign_mask(scores):
    """`flip`: +1 keeps the weight's sign, -1 flips it, 0 (score exactly 0) removes it."""
    from keras import ops
    return _straight_through(scores, ops.sign(scores))


MASK_FUNCTIONS: dict[str, MaskFunction] = {
    "mask": binary_mask,
    "mask_rs": rescaled_binary_mask,
    "flip": sign_mask,
}


def get(name: str) -> MaskFunction:
    """The mask function registered as `name`; a ValueError lists the valid names."""
    if name not in MASK_FUNCTIONS:
        raise ValueError(f"unknown mask type {name!r}; choose one of {', '.join(MASK_FUNCTIONS)}")
    return MASK_FUNCTIONS[name]
