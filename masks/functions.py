"""Mask functions m(s) with straight-through gradients (SPEC.md section 1), and those of the field's rivals.

Each function returns a tensor whose forward value is exactly the hard mask and whose gradient with respect to
the scores is a straight-through estimate. The trick `hard + (f(s) - stop_gradient(f(s)))` adds an exact zero
in the forward pass, so an all-on mask multiplies the weights by exactly 1.0 (the epoch-0 network of the paper's
types is bit-identical to the random network), while the backward pass sees d m / d s = f'(s): the identity for
the paper's masks and the signed supermask, sign(s) for edge-popup (it thresholds |s|), sigmoid'(s) for Zhou et
al.'s supermask.

The registry at the end loads without Keras, so the command line lists and checks mask types quickly; the
functions import `keras.ops` when they run (once Keras is loaded, a dictionary lookup).
"""
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

# The signed supermask's threshold: this fraction of the layer's largest initial |score|, fixed from then on
# (kosnil/signed_supermasks: `update_tanh_th(percentage=config["model"]["tanh_th"])` in experiment_looper.py,
# once the masks are loaded, with tanh_th: .4 in configs/Conv2/fixed_mask/conv2_weight_sc_he_mask_xavier_var.yaml).
SIGNED_THRESHOLD_FRACTION = 0.4


class MaskInputs(NamedTuple):
    """What a mask function needs beside the scores; each mask type uses at most one of them."""
    keep: float | None = None  # `topk`: the fraction of the layer kept
    threshold: object = None  # `signed`: the layer's fixed threshold; `topk`: its search's result, if it has one
    uniforms: object = None  # `bernoulli`: U[0, 1) draws of the scores' shape


NO_INPUTS = MaskInputs()


def _straight_through(scores, hard, surrogate=None):
    """Forward `hard`, backward the gradient of `surrogate` (default: the scores themselves)."""
    from keras import ops
    surrogate = scores if surrogate is None else surrogate
    return ops.stop_gradient(hard) + (surrogate - ops.stop_gradient(surrogate))


def binary_mask(scores, inputs: MaskInputs = NO_INPUTS):
    """`mask`: 1 where the score is positive (connection on), else 0."""
    from keras import ops
    hard = ops.cast(ops.greater(scores, 0), scores.dtype)
    return _straight_through(scores, hard)


def rescaled_binary_mask(scores, inputs: MaskInputs = NO_INPUTS):
    """`mask_rs`: the binary mask times N / (1 + n_on), so a pruned layer keeps the size of its input.

    N and n_on are counted in float32 whatever the compute dtype: in float16 a layer of over 65,504 weights
    would make N infinite.
    """
    from keras import ops
    hard = ops.cast(ops.greater(scores, 0), "float32")
    scale = ops.cast(ops.size(scores), "float32") / (1.0 + ops.sum(hard))
    return _straight_through(scores, ops.cast(hard * scale, scores.dtype))


def sign_mask(scores, inputs: MaskInputs = NO_INPUTS):
    """`flip`: +1 keeps the weight's sign, -1 flips it, 0 (score exactly 0) removes it."""
    from keras import ops
    return _straight_through(scores, ops.sign(scores))


def checked_keep(keep) -> float:
    """`keep` as edge-popup's kept fraction, in (0, 1]; a ValueError for anything else (a bool is no fraction)."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"mask type topk needs keep in (0, 1], not {keep!r}")
    return float(keep)


def kept_count(keep: float, size: int) -> int:
    """How many of a layer's `size` weights edge-popup keeps: K x size rounded to the nearest, halves up."""
    return int(math.floor(keep * size + 0.5))


def _count(condition):
    from keras import ops
    return ops.sum(ops.cast(condition, "int32"))


def _two_counts(rows, low, high):
    """(count(rows >= low), count(rows >= high)) over an int32 [r, c] view, in one pass where c < 2^15: each
    row sums both counts in one int32, the second 16 bits above the first (a pass costs as much as a count)."""
    from keras import ops
    if rows.shape[1] >= 1 << 15:
        return _count(rows >= low), _count(rows >= high)
    packed = ops.sum(ops.cast(rows >= low, "int32") + ops.cast(rows >= high, "int32") * (1 << 16), axis=1)
    return ops.sum(ops.bitwise_and(packed, (1 << 16) - 1)), ops.sum(ops.right_shift(packed, 16))


def _largest_with_count(values, count, bits: int, counted: Callable):
    """The largest integer t in [0, 2^bits) with `counted(values, t)` >= `count`, for a `counted` that does not
    grow with t: a bisection over the bits of t, each step one linear pass (no sort)."""
    from keras import ops
    powers = ops.convert_to_tensor(np.array([1 << bit for bit in reversed(range(bits))], np.int32))

    def step(i, found):
        candidate = found + ops.take(powers, i)
        return ops.where(counted(values, candidate) >= count, candidate, found)
    return ops.fori_loop(0, bits, step, ops.convert_to_tensor(0, "int32"))


# One above the bit pattern of +inf: no magnitude (NaN aside) is at or above it, so no pass over the layer is
# needed to bound the search (a max over the layer costs as much as a count)
_ABOVE_EVERY_MAGNITUDE = 0x7F800001


def _bracket(rows, k: int, hint):
    """(low, high, count(rows >= low), count(rows >= high)) with the first count >= k > the second: around a
    previous threshold hint = [pattern, width] (widened fourfold until it brackets), else the whole range."""
    from keras import ops
    top = ops.convert_to_tensor(_ABOVE_EVERY_MAGNITUDE, "int32")

    def ends(center, width):
        low = ops.where(width >= center, 0, center - width)
        high = ops.where(width >= top - center, top, center + width)
        return low, high, *_two_counts(rows, low, high)

    def unbracketed(low, high, count_low, count_high, width):
        return ops.logical_not(ops.logical_and(count_low >= k, count_high < k))

    def widen(low, high, count_low, count_high, width):
        width = ops.where(width > top // 4, top, width * 4)  # at most the whole range, which brackets
        return (*ends(center, width), width)
    cold = hint[0] <= 0
    center = ops.where(cold, 0, ops.minimum(hint[0], top))
    width = ops.where(cold, top, ops.maximum(hint[1], 1))
    low, high, count_low, count_high, _ = ops.while_loop(unbracketed, widen, (*ends(center, width), width))
    return low, high, count_low, count_high


def top_k_search(magnitudes, keep: float, hint=None):
    """(found, next hint): found = int32 [t, count(bits >= t)] for a bit pattern t whose `bits >= t` are the
    kept_count(keep, n) largest of the non-negative float32 `magnitudes`, or else the k-th largest pattern
    itself, which ties straddle; the count tells `top_k_indicator` which, without one more pass.

    A search on the counts, in linear time with no sort: non-negative floats order as their int32 bit patterns.
    It starts from a bracket around the previous step's threshold (`hint`, int32 [pattern, width]; [0, 0] or
    None: the whole range), then narrows it by interpolation in the space of the bit patterns (roughly the
    logarithm of the value, so a heavy tail of large scores does not spoil it). Each pass counts at two
    thresholds at once (`_two_counts`): just below and just above where the counts' line crosses k, so a good
    guess shrinks the bracket some sixteenfold. Scores are smoothly distributed, so a few passes land in the gap
    between the k-th and (k+1)-th largest (BENCHMARKS.md); a pass that does not halve the bracket is followed by
    one that cuts it in thirds, so adversarial values take at most about 40 passes. The result is exact whatever
    the hint: the hint only saves passes.
    """
    from keras import ops
    bits = ops.view(ops.reshape(magnitudes, (-1,)), "int32")
    rows = ops.reshape(bits, (-1, magnitudes.shape[-1]))
    k = kept_count(keep, int(bits.shape[0]))
    hint = ops.zeros((2,), "int32") if hint is None else hint

    def probes(low, high, count_low, count_high, thirds):
        width = high - low
        crossing = low + ops.cast(ops.cast(width, "float32") * ops.cast(count_low - k, "float32")
                                  / ops.cast(count_low - count_high, "float32"), "int32")
        margin = ops.maximum(width // 32, 1)
        below = ops.where(thirds, low + width // 3, crossing - margin)
        above = ops.where(thirds, high - width // 3, crossing + margin)
        return ops.clip(below, low + 1, high - 1), ops.clip(above, low + 1, high - 1)

    def searching(low, high, count_low, count_high, thirds):
        return ops.logical_and(high - low > 1, count_low != k)

    def step(low, high, count_low, count_high, thirds):
        below, above = probes(low, high, count_low, count_high, thirds)
        count_below, count_above = _two_counts(rows, below, above)
        new_low = ops.where(count_above >= k, above, ops.where(count_below >= k, below, low))
        new_count_low = ops.where(count_above >= k, count_above, ops.where(count_below >= k, count_below, count_low))
        new_high = ops.where(count_above >= k, high, ops.where(count_below >= k, above, below))
        new_count_high = ops.where(count_above >= k, count_high,
                                   ops.where(count_below >= k, count_above, count_below))
        unhalved = new_high - new_low > (high - low) // 2
        return new_low, new_high, new_count_low, new_count_high, ops.logical_and(unhalved, ops.logical_not(thirds))
    if k == 0:
        return ops.stack([ops.max(bits) + 1, 0]), hint
    start = (*_bracket(rows, k, hint), ops.convert_to_tensor(False))
    threshold, _, count = ops.while_loop(searching, step, start)[:3]
    moved = ops.abs(threshold - ops.where(hint[0] <= 0, threshold, hint[0]))
    return ops.stack([threshold, count]), ops.stack([threshold, ops.maximum(2 * ops.minimum(moved, 1 << 28), 16)])


def top_k_indicator(magnitudes, keep: float, threshold=None):
    """1 for the `kept_count(keep, n)` largest of the non-negative float32 `magnitudes`, else 0 (int32).

    `threshold` is `top_k_search`'s result (pattern and count), searched here when not given. Ties at the k-th
    largest value are broken by position (the first ones in row-major order are kept), with a bisection over the
    index, so exactly k are kept.
    """
    from keras import ops
    shape, size = magnitudes.shape, int(np.prod(magnitudes.shape))
    k = kept_count(keep, size)
    bits = ops.view(ops.reshape(magnitudes, (-1,)), "int32")
    found = top_k_search(magnitudes, keep)[0] if threshold is None else threshold
    threshold, count = found[0], found[1]
    at_or_above = bits >= threshold
    index = ops.arange(size, dtype="int32")

    def with_first_ties():
        ties = ops.equal(bits, threshold)
        needed = k - _count(bits > threshold)
        last = _largest_with_count(index, 0, max(1, size.bit_length()),
                                   lambda values, j: needed - _count(ops.logical_and(ties, values < j)) - 1)
        return ops.logical_or(bits > threshold, ops.logical_and(ties, index <= last))
    kept = ops.cond(count == k, lambda: at_or_above, with_first_ties)
    return ops.reshape(ops.cast(kept, "int32"), shape)


def top_k_mask(scores, inputs: MaskInputs):
    """`topk` (edge-popup, Ramanujan et al. 2020): 1 for the fraction `keep` of the layer's weights with the
    largest |score|, else 0; the gradient passes straight through to |s| (allenai/hidden-networks,
    utils/conv_type.py: `GetSubnet.apply(self.scores.abs(), k)` returns the gradient unchanged)."""
    from keras import ops
    hard = ops.cast(top_k_indicator(ops.abs(ops.cast(scores, "float32")), inputs.keep, inputs.threshold),
                    scores.dtype)
    # |s| as s * sign(s) for the gradient: sign(s), 0 at s = 0 on every backend (JAX's abs has slope 1 there)
    return _straight_through(scores, hard, scores * ops.stop_gradient(ops.sign(scores)))


def bernoulli_mask(scores, inputs: MaskInputs):
    """`bernoulli` (supermask, Zhou et al. 2019): 1 where the uniform draw is below sigmoid(s), so m ~
    Bernoulli(sigmoid(s)); the gradient is that of sigmoid(s) (uber-research/deconstructing-lottery-tickets,
    masked_networks.py `get_effective_mask`: `Bernoulli(sigmoid(mask)).sample() + sigmoid(mask) -
    stop_gradient(sigmoid(mask))`)."""
    from keras import ops
    probabilities = ops.sigmoid(scores)
    hard = ops.cast(ops.less(ops.cast(inputs.uniforms, probabilities.dtype), probabilities), scores.dtype)
    return _straight_through(scores, hard, probabilities)


def ternary_mask(scores, inputs: MaskInputs):
    """`signed` (signed supermask, Koster et al. 2022): +1 keeps the weight where s > t, -1 inverts it where
    s < -t, 0 hides it in between; straight-through identity gradient (kosnil/signed_supermasks,
    custom_layers.py `signed_supermask`: `stop_gradient(effective_mask) + mask - stop_gradient(mask)`)."""
    from keras import ops
    threshold = ops.cast(inputs.threshold, scores.dtype)
    hard = ops.cast(ops.greater(scores, threshold), scores.dtype) - ops.cast(ops.less(scores, -threshold),
                                                                               scores.dtype)
    return _straight_through(scores, hard)


_MIX = (np.array(0x7FEB352D, np.uint32).view(np.int32), np.array(0x846CA68B, np.uint32).view(np.int32))
_GOLDEN = np.array(0x9E3779B9, np.uint32).view(np.int32)


def _mix32(x):
    """A 32-bit integer hash (Wellons' lowbias32) in int32 arithmetic: products wrap, and the right shifts are
    made logical by masking, so every backend computes the same bits."""
    from keras import ops

    def shifted_xor(value, shift):
        return ops.bitwise_xor(value, ops.bitwise_and(ops.right_shift(value, shift), (1 << (32 - shift)) - 1))
    x = shifted_xor(x, 16)
    x = ops.multiply(x, ops.convert_to_tensor(_MIX[0]))
    x = shifted_xor(x, 15)
    x = ops.multiply(x, ops.convert_to_tensor(_MIX[1]))
    return shifted_xor(x, 16)


def uniform_noise(shape: tuple, seed: int, draw):
    """U[0, 1) values (24 bits each) of `shape`, a function of (seed, draw number, position) alone: a counter-based
    generator, so the supermask's samples are the same on every backend and a resumed run needs no generator
    state beyond the draw number. `draw` may be a tensor (the layer's counter). One hash round per value: on
    LeNet the draws are a large part of a step (BENCHMARKS.md), and a second round measured 1.8 times slower."""
    from keras import ops
    seed32 = ops.convert_to_tensor(np.array(seed & 0xFFFFFFFF, np.uint32).view(np.int32))
    key = _mix32(ops.bitwise_xor(_mix32(ops.cast(draw, "int32")), seed32))
    index = ops.arange(int(np.prod(shape)), dtype="int32")
    bits = _mix32(ops.add(ops.multiply(index, ops.convert_to_tensor(_GOLDEN)), key))
    uniforms = ops.cast(ops.bitwise_and(ops.right_shift(bits, 8), 0xFFFFFF), "float32") * (1.0 / (1 << 24))
    return ops.reshape(uniforms, shape)


@dataclass(frozen=True)
class MaskType:
    """A registered mask function and what its layer must give it (`MaskInputs`): the fraction kept (`topk`),
    uniform draws (`bernoulli`: fresh ones every training step, fixed ones for evaluation) or a threshold fixed
    from the initial scores (`signed`)."""
    function: Callable
    keeps_fraction: bool = False  # and searches its threshold each call, from where the last training call found it
    sampled: bool = False
    thresholded: bool = False

    def __call__(self, scores, inputs: MaskInputs = NO_INPUTS):
        return self.function(scores, inputs)


MASK_TYPES: dict[str, MaskType] = {
    "mask": MaskType(binary_mask),
    "mask_rs": MaskType(rescaled_binary_mask),
    "flip": MaskType(sign_mask),
    "topk": MaskType(top_k_mask, keeps_fraction=True),
    "bernoulli": MaskType(bernoulli_mask, sampled=True),
    "signed": MaskType(ternary_mask, thresholded=True),
}


def get(name: str) -> MaskType:
    """The mask type registered as `name`; a ValueError lists the valid names."""
    if name not in MASK_TYPES:
        raise ValueError(f"unknown mask type {name!r}; choose one of {', '.join(MASK_TYPES)}")
    return MASK_TYPES[name]
