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


def _patterns(values):
    """The int32 patterns a search compares: of float32 values, |value|'s (the sign bit cleared); int32 patterns
    (a band's) as they are."""
    from keras import backend, ops
    if backend.standardize_dtype(values.dtype) == "int32":
        return values
    return ops.bitwise_and(ops.view(values, "int32"), 0x7FFFFFFF)


# Layers of at least this many weights count their rows as a ones row times the transposed comparisons
_TRANSPOSED_COUNT_SIZE = 1 << 16


def _patterns_in_pass(values, low):
    """`_patterns(values)`, read within a search pass: selecting on `low >= 0` (always true) ties the patterns to
    the loop, so XLA reads the layer within each pass instead of hoisting its patterns out of the search's loop
    into an array of their own (one more pass)."""
    from keras import ops
    return _patterns(ops.where(low >= 0, values, ops.zeros_like(values)))


def _row_counts(rows, low, high):
    """Per row of an [r, c] view (`_patterns`), (count(>= low), count(>= high)). Where c < 1024, both counts
    come from one product of the 0/1 comparisons with ones, the second scaled by a power of two above c (XLA:CPU
    sums rows that way about five times faster than by a reduction, BENCHMARKS.md): the packed values need at
    most 11 significant bits, so the product is exact even where a GPU rounds float32 products to TF32. From
    2^16 weights on, the product is a ones row times the transposed comparisons, which XLA:CPU under JAX runs
    2-4 times faster there (and slower below). Longer rows are counted by integer reductions, exact on every
    device."""
    from keras import ops
    rows = _patterns_in_pass(rows, low)
    columns = rows.shape[1]
    shift = columns.bit_length()
    if shift <= 10:
        packed = ops.cast(rows >= low, "float32") + ops.cast(rows >= high, "float32") * float(1 << shift)
        if rows.shape[0] * columns >= _TRANSPOSED_COUNT_SIZE:
            sums = ops.matmul(np.ones((1, columns), np.float32), ops.transpose(packed))[0]
        else:
            sums = ops.matmul(packed, np.ones((columns, 1), np.float32))[:, 0]
        sums = ops.cast(sums, "int32")
        return ops.bitwise_and(sums, (1 << shift) - 1), ops.right_shift(sums, shift)
    return tuple(ops.sum(ops.cast(rows >= bound, "int32"), axis=1) for bound in (low, high))


# One above the bit pattern of +inf: no magnitude (NaN aside) is at or above it, so the search's range is known
# to hold every weight at its low end (pattern 0) and none at its high end, without a pass over the layer
_ABOVE_EVERY_MAGNITUDE = 0x7F800001
# Layers of at least this many weights finish their search on the few rows that hold the bracket's values
_BAND_LAYER_SIZE = 1 << 17
_BAND_ROWS = 192


# Arrays of fewer values than this count as one row: a product of two rows of 0/1 comparisons with a ones column,
# 4 times faster than by rows on LeNet's 1,000-weight layer; from about 4,000 values on, counting by rows
# (`_row_counts`) is as fast or faster (a quarter at 30,000, measured under JAX). Its float32 sums are exact: far
# below 2^24, and 0/1 inputs lose nothing where a GPU rounds products to TF32
_ONE_ROW_COUNT_SIZE = 1 << 12


def _total_counts(values, low, high):
    """(count(>= low), count(>= high)) over all of `values` (as `_row_counts` reads them), in fewer operations
    than summing `_row_counts`'s two results apart."""
    from keras import ops
    if int(np.prod(values.shape)) >= _ONE_ROW_COUNT_SIZE:
        totals = ops.sum(ops.stack(_row_counts(values, low, high)), axis=1)
        return totals[0], totals[1]
    flat = ops.reshape(_patterns_in_pass(values, low), (1, -1))
    comparisons = ops.cast(ops.concatenate([flat >= low, flat >= high], axis=0), "float32")
    sums = ops.cast(ops.matmul(comparisons, np.ones((flat.shape[1], 1), np.float32)), "int32")
    return sums[0, 0], sums[1, 0]


class _Bracket(NamedTuple):
    """low < high with count(bits >= low) >= k > count(bits >= high), and, where a band is to be cut from it, the
    per-row counts at both ends (else None: a search that needs no rows counts whole layers, in fewer operations
    per pass)."""
    low: object
    high: object
    count_low: object
    count_high: object
    row_low: object = None
    row_high: object = None


def _search_fields(state):
    """(low, high, count_low, count_high, width, thirds): the search's state is one int32 vector of these, so that
    XLA:CPU updates it in a few fused kernels per pass instead of a dozen scalar ones: on a small layer such fixed
    costs are most of a pass (BENCHMARKS.md)."""
    return tuple(state[field] for field in range(6))


def _search(rows, k: int, offset, bracket: _Bracket, center, width, band: int = 0) -> _Bracket:
    """Narrow `bracket` until count(bits >= low) = k or high = low + 1, counting bits >= t as `offset` plus the
    count in `rows`. While `width` > 0 each pass probes center +- width, fourfold wider until the two probes
    bracket k; then it interpolates in the space of the bit patterns (roughly the logarithm of the value, so a
    heavy tail of large scores does not spoil it), two probes just below and above where the counts' line
    crosses k, so a good guess shrinks the bracket some sixteenfold. A pass that does not halve the bracket is
    followed by one that cuts it in thirds, so adversarial values take at most about 40 passes. With `band`,
    it also stops once at most `band` weights lie in the bracket."""
    from keras import ops
    top = _ABOVE_EVERY_MAGNITUDE
    per_row = bracket.row_low is not None

    def probes(state):
        """[below, above]: the two thresholds this pass counts at, inside (low, high)."""
        low, high, count_low, count_high, width, thirds = _search_fields(state)
        span = high - low
        crossing = low + ops.cast(ops.cast(span, "float32") * ops.cast(count_low - k, "float32")
                                  / ops.cast(count_low - count_high, "float32"), "int32")
        margin = ops.maximum(ops.right_shift(span, 5), 1)
        third = ops.cast(ops.cast(span, "float32") * (1 / 3), "int32")  # rounded: it only places a probe
        guessed = ops.where(thirds > 0, ops.stack([low + third, high - third]),
                            ops.stack([crossing - margin, crossing + margin]))
        hinted = ops.stack([ops.where(width >= center, 0, center - width),
                            ops.where(width >= top - center, top, center + width)])
        return ops.clip(ops.where(width > 0, hinted, guessed), low + 1, high - 1)

    def searching(state, *_):
        low, high, count_low, count_high, width = _search_fields(state)[:5]
        going = ops.logical_and(high - low > 1, count_low != k)
        if band:
            narrow = ops.logical_and(width == 0, count_low - count_high <= band)
            going = ops.logical_and(going, ops.logical_not(narrow))
        return going

    def step(state, *row_counts):
        below, above = ops.unstack(probes(state))
        if per_row:
            row_below, row_above = _row_counts(rows, below, above)
            count_below, count_above = offset + ops.sum(row_below), offset + ops.sum(row_above)
        else:
            count_below, count_above = (offset + count for count in _total_counts(rows, below, above))
        low, high, count_low, count_high, width, thirds = _search_fields(state)
        above_kept, below_kept = count_above >= k, count_below >= k
        # the new bracket: [above, high) where k weights are at or above `above`, else [below, above) where they
        # are at or above `below`, else [low, below)
        ends = ops.where(above_kept, ops.stack([above, high, count_above, count_high]),
                         ops.where(below_kept, ops.stack([below, above, count_below, count_above]),
                                   ops.stack([low, below, count_low, count_below])))
        hinted = width > 0
        width = ops.where(ops.logical_and(hinted, ops.logical_or(above_kept, ops.logical_not(below_kept))),
                          ops.where(width > top // 4, top, width * 4), 0)
        unhalved = ends[1] - ends[0] > ops.right_shift(high - low, 1)  # the new high - low
        thirds = ops.logical_and(ops.logical_not(hinted), ops.logical_and(unhalved, thirds == 0))
        state = ops.concatenate([ends, ops.stack([width, ops.cast(thirds, "int32")])])
        if not per_row:
            return (state,)
        row_low, row_high = row_counts
        return (state, ops.where(above_kept, row_above, ops.where(below_kept, row_below, row_low)),
                ops.where(above_kept, row_high, ops.where(below_kept, row_above, row_below)))
    state = ops.stack([bracket.low, bracket.high, bracket.count_low, bracket.count_high, width,
                       ops.convert_to_tensor(0, "int32")])
    found = ops.while_loop(searching, step, (state, bracket.row_low, bracket.row_high) if per_row else (state,))
    ends = _search_fields(found[0])[:4]
    return _Bracket(*ends, *found[1:]) if per_row else _Bracket(*ends)


def _band_rows(rows, bracket: _Bracket, slots: int):
    """(patterns, row numbers): the first `slots` rows that hold patterns in [low, high), in order, as
    `_patterns`, with every one outside the bracket set to -1, and a bracket over them; a search on these rows
    alone, its counts offset by count(patterns >= high), finishes as one on the whole layer would (every pattern
    in the bracket is in them)."""
    from keras import ops
    in_band = bracket.row_low - bracket.row_high
    cumulative = ops.cumsum(ops.cast(in_band > 0, "int32"))
    wanted = ops.arange(1, slots + 1, dtype="int32")
    found = ops.zeros((slots,), "int32")  # rows before the one holding the wanted-th band row: a bisection
    for bit in reversed(range(int(rows.shape[0]).bit_length())):
        candidate = found + (1 << bit)
        before = ops.take(cumulative, ops.minimum(candidate, rows.shape[0]) - 1)
        found = ops.where(ops.logical_and(candidate <= rows.shape[0], before < wanted), candidate, found)
    valid = found < rows.shape[0]
    numbers = ops.minimum(found, rows.shape[0] - 1)
    values = _patterns(ops.take(rows, numbers, axis=0))
    keep = ops.logical_and(ops.logical_and(valid[:, None], values >= bracket.low), values < bracket.high)
    return ops.where(keep, values, -1), numbers, bracket._replace(row_low=None, row_high=None)


def _last_tie_kept(rows, numbers, bracket: _Bracket, k: int):
    """The index in the layer of the last weight kept among those whose pattern is `low`, when ties there
    straddle the k-th largest (first ones in row-major order kept): found from the bracket's per-row counts
    (counted here if it has none), then within one row. Meaningless where no ties straddle."""
    from keras import ops
    per_row = bracket.row_low is not None
    row_low, row_high = (bracket.row_low, bracket.row_high) if per_row else _row_counts(rows, bracket.low, bracket.high)
    ties = row_low - row_high
    needed = k - bracket.count_high
    cumulative = ops.cumsum(ties)
    row = ops.minimum(_count(cumulative < needed), rows.shape[0] - 1)
    needed_in_row = needed - (ops.take(cumulative, row) - ops.take(ties, row))
    in_row = ops.cumsum(ops.cast(_patterns(ops.take(rows, row, axis=0)) == bracket.low, "int32"))
    return ops.take(numbers, row) * rows.shape[1] + _count(in_row < needed_in_row)


def top_k_search(values, keep: float, hint=None):
    """(found, next hint): found = int32 [t, last] such that the kept_count(keep, n) largest |values| (float32)
    are those whose |value| has a pattern above t, and those at t up to index `last` in row-major order (ties
    broken by position); `top_k_indicator` reads it in one expression.

    A search on the counts, in linear time with no sort: non-negative floats order as their int32 bit patterns.
    It starts from around the previous step's threshold (`hint`, int32 [pattern, width]; [0, 0] or None: the
    whole range) and narrows by interpolation (`_search`), each pass counting at two thresholds. On a layer of
    2^17 weights or more, once some sqrt(n)/4 weights are left in the bracket, it finishes on the rows that hold
    them (`_band_rows`). The result is exact whatever the hint: the hint only saves passes. NaN magnitudes (a
    diverged run) rank above every number: where there are k or more, all of them are kept.
    """
    from keras import ops
    size = int(np.prod(values.shape))
    rows = ops.reshape(values, (-1, values.shape[-1]))
    k = kept_count(keep, size)
    hint = ops.zeros((2,), "int32") if hint is None else hint
    if k == 0:
        return ops.stack([ops.convert_to_tensor(_ABOVE_EVERY_MAGNITUDE, "int32"), -1]), hint
    cold = hint[0] <= 0
    center = ops.where(cold, 0, ops.minimum(hint[0], _ABOVE_EVERY_MAGNITUDE))
    width = ops.where(cold, 0, ops.maximum(hint[1], 1))
    zero, row_count = ops.convert_to_tensor(0, "int32"), int(rows.shape[0])
    band = min(_BAND_ROWS, math.isqrt(size) // 4) if size >= _BAND_LAYER_SIZE else 0
    whole = _Bracket(zero, ops.convert_to_tensor(_ABOVE_EVERY_MAGNITUDE, "int32"),
                     ops.convert_to_tensor(size, "int32"), zero)
    if band:  # the band is cut from the rows' counts
        whole = whole._replace(row_low=ops.full((row_count,), int(rows.shape[1]), "int32"),
                               row_high=ops.zeros((row_count,), "int32"))
    numbers = ops.arange(row_count, dtype="int32")
    found = final = _search(rows, k, 0, whole, center, width, band)
    if band:
        band_values, band_numbers, narrowed = _band_rows(rows, found, min(band, row_count))
        final = _search(band_values, k, found.count_high, narrowed, center, zero)

    def last_tie_kept():
        whole_layer = _last_tie_kept(rows, numbers, found, k)
        if not band:
            return whole_layer
        # a search stopped on a band wider than `band` was already over: its ties may fill many rows
        return ops.where(found.count_low - found.count_high > band, whole_layer,
                         _last_tie_kept(band_values, band_numbers, final, k))
    # Only where ties straddle the k-th largest (count_low > k, rare with real-valued scores) must the last one
    # kept be found; a `cond` skips that work (running sums over the rows) on every other step
    last = ops.cond(final.count_low == k, lambda: ops.convert_to_tensor(size - 1, "int32"), last_tie_kept)
    moved = ops.abs(final.low - ops.where(cold, final.low, hint[0]))
    return (ops.stack([final.low, last]),
            ops.stack([final.low, ops.maximum(2 * ops.minimum(moved, 1 << 28), 16)]))


def top_k_indicator(values, keep: float, threshold=None):
    """1 for the `kept_count(keep, n)` largest |values| (float32), else 0 (int32).

    `threshold` is `top_k_search`'s result [t, last], searched here when not given: ties at the k-th largest
    value are broken by position (the first ones in row-major order are kept), so exactly k are kept, in one
    elementwise expression.
    """
    from keras import ops
    shape, size = values.shape, int(np.prod(values.shape))
    bits = _patterns(ops.reshape(values, (-1,)))
    found = top_k_search(values, keep)[0] if threshold is None else threshold
    kept = ops.logical_or(bits > found[0], ops.logical_and(bits == found[0],
                                                           ops.arange(size, dtype="int32") <= found[1]))
    return ops.reshape(ops.cast(kept, "int32"), shape)


def top_k_mask(scores, inputs: MaskInputs):
    """`topk` (edge-popup, Ramanujan et al. 2020): 1 for the fraction `keep` of the layer's weights with the
    largest |score|, else 0; the gradient passes straight through to |s| (allenai/hidden-networks,
    utils/conv_type.py: `GetSubnet.apply(self.scores.abs(), k)` returns the gradient unchanged)."""
    from keras import ops
    hard = ops.cast(top_k_indicator(ops.cast(scores, "float32"), inputs.keep, inputs.threshold), scores.dtype)
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
