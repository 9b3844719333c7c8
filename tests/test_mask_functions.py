"""Forward values and straight-through gradients of every mask function, the rivals' defining behaviour included:
edge-popup's exact per-layer count, the supermask's Bernoulli mean, the signed supermask's three values."""
import numpy as np
import pytest
from keras import ops

from masks import functions
from masks.layers import MaskedDense
from tests.helpers import output_and_gradient
from training import backends

SCORES = np.array([-0.5, -0.01, 0.0, 0.02, 0.7, 3.0], np.float32)
EXPECTED_HARD = {
    "mask": np.array([0, 0, 0, 1, 1, 1], np.float32),
    "mask_rs": np.array([0, 0, 0, 1, 1, 1], np.float32) * 6 / (1 + 3),
    "flip": np.array([-1, -1, 0, 1, 1, 1], np.float32),
}
PAPER_MASKS = sorted(EXPECTED_HARD)


def forward_and_gradient(name: str, scores: np.ndarray, upstream: np.ndarray,
                         inputs: functions.MaskInputs = functions.NO_INPUTS):
    def masked(variable):
        mask = functions.get(name)(variable, inputs)
        return mask, ops.sum(mask * upstream)
    return output_and_gradient(masked, scores)


def test_registry_lists_the_paper_masks_and_the_rivals():
    assert sorted(functions.MASK_TYPES) == ["bernoulli", "flip", "mask", "mask_rs", "signed", "topk"]


def test_masktype_choices_are_the_registry_s():
    """`--masktype` takes its choices from the training types (the settings floor reads nothing of `masks`):
    they must be exactly the registered mask functions."""
    from settings.config import RunConfig
    from settings.types import TRAINING_TYPES
    assert {name for kind in TRAINING_TYPES.values() for name in kind.mask_types} == set(functions.MASK_TYPES)
    assert all(RunConfig.problem("masktype", name) is None for name in functions.MASK_TYPES)


@pytest.mark.parametrize("name", PAPER_MASKS)
def test_forward_is_exactly_the_hard_mask(name):
    mask, _ = forward_and_gradient(name, SCORES, np.ones_like(SCORES))
    np.testing.assert_array_equal(mask, EXPECTED_HARD[name])


@pytest.mark.parametrize("name", PAPER_MASKS)
def test_gradient_is_straight_through(name):
    upstream = np.array([0.3, -1.0, 2.0, 0.5, -0.25, 4.0], np.float32)
    _, gradient = forward_and_gradient(name, SCORES, upstream)
    np.testing.assert_array_equal(gradient, upstream)


def test_rescaled_mask_keeps_total_size_as_layer_is_pruned():
    scores = np.array([1.0] * 4 + [-1.0] * 4, np.float32)  # half of 8 on
    mask, _ = forward_and_gradient("mask_rs", scores, np.ones_like(scores))
    np.testing.assert_allclose(mask[:4], 8 / 5)
    np.testing.assert_array_equal(mask[4:], 0)


def test_all_on_binary_mask_multiplies_weights_by_exactly_one():
    scores = np.random.default_rng(0).uniform(0.01, 0.1, 1000).astype(np.float32)
    weights = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    mask, _ = forward_and_gradient("mask", scores, np.ones_like(scores))
    np.testing.assert_array_equal(weights * mask, weights)


def test_unknown_mask_type_lists_valid_names():
    with pytest.raises(ValueError, match="flip"):
        functions.get("dropout")


def reference_top_k(scores: np.ndarray, keep: float) -> np.ndarray:
    """Edge-popup's mask by a full sort: largest |s| first, ties in row-major order."""
    flat = np.abs(scores).ravel()
    order = np.lexsort((np.arange(flat.size), -flat))  # by -|s|, then by position
    kept = np.zeros(flat.size, np.float32)
    kept[order[:functions.kept_count(keep, flat.size)]] = 1
    return kept.reshape(scores.shape)


TIED = np.repeat(np.array([0.5, -0.25, 0.25, 0.0, 1.0, -1.0], np.float32), 7).reshape(6, 7)  # runs of equal |s|


@pytest.mark.parametrize("scores", [
    np.random.default_rng(5).standard_normal((300, 100)).astype(np.float32),
    np.random.default_rng(6).uniform(-0.1, 0.1, (3, 3, 16, 8)).astype(np.float32),
    TIED, np.random.default_rng(7).permutation(TIED.ravel()).reshape(7, 6), np.zeros((5, 4), np.float32)],
    ids=["dense", "conv", "ties", "shuffled ties", "all equal"])
@pytest.mark.parametrize("keep", [0.01, 0.3, 0.5, 0.7, 1.0])
def test_top_k_keeps_exactly_round_k_n_weights_with_ties_broken_by_position(scores, keep):
    mask, _ = forward_and_gradient("topk", scores, np.ones_like(scores), functions.MaskInputs(keep=keep))
    assert mask.sum() == functions.kept_count(keep, scores.size)
    np.testing.assert_array_equal(mask, reference_top_k(scores, keep))


def test_kept_count_rounds_to_the_nearest_halves_up():
    assert [functions.kept_count(k, 10) for k in (0.3, 0.25, 0.35, 1.0)] == [3, 3, 4, 10]
    assert functions.kept_count(0.5, 7) == 4


def test_top_k_gradient_passes_straight_through_the_magnitude():
    upstream = np.array([0.3, -1.0, 2.0, 0.5, -0.25, 4.0], np.float32)
    _, gradient = forward_and_gradient("topk", SCORES, upstream, functions.MaskInputs(keep=0.5))
    np.testing.assert_array_equal(gradient, upstream * np.sign(SCORES))


def numpy_uniform_noise(shape: tuple, seed: int, draw: int) -> np.ndarray:
    """The counter-based generator in NumPy's wrapping uint32 arithmetic: the reference for every backend."""
    def mix(x):
        x = x ^ (x >> np.uint32(16))
        x = x * np.uint32(0x7FEB352D)
        x = x ^ (x >> np.uint32(15))
        x = x * np.uint32(0x846CA68B)
        return x ^ (x >> np.uint32(16))
    with np.errstate(over="ignore"):
        key = mix(mix(np.array([draw], np.uint32)) ^ np.uint32(seed))
        bits = mix(np.arange(int(np.prod(shape)), dtype=np.uint32) * np.uint32(0x9E3779B9) + key)
    return ((bits >> np.uint32(8)).astype(np.float32) / (1 << 24)).reshape(shape)


@pytest.mark.parametrize("seed, draw, shape", [(0, 0, (40, 25)), (12345, 1, (7, 3)), (2**32 - 1, 77, (3, 3, 5, 7))])
def test_uniform_noise_has_the_same_bits_on_every_backend(seed, draw, shape):
    noise = np.asarray(functions.uniform_noise(shape, seed, draw))
    np.testing.assert_array_equal(noise, numpy_uniform_noise(shape, seed, draw))
    assert noise.min() >= 0 and noise.max() < 1 and (noise.size < 1000 or abs(noise.mean() - 0.5) < 0.03)


def test_uniform_noise_differs_between_draws_and_seeds():
    draws = [np.asarray(functions.uniform_noise((1000,), seed, draw)) for seed, draw in ((1, 1), (1, 2), (2, 1))]
    assert all(np.mean(a == b) < 0.01 for i, a in enumerate(draws) for b in draws[i + 1:])


def test_supermask_sample_has_mean_sigmoid_of_the_scores_over_many_draws():
    scores = np.linspace(-3, 3, 13).astype(np.float32)
    draws = 20000

    def sample(draw):
        uniforms = functions.uniform_noise(scores.shape, 9, draw)
        return functions.get("bernoulli")(ops.convert_to_tensor(scores), functions.MaskInputs(uniforms=uniforms))
    samples = np.asarray(ops.vectorized_map(sample, ops.arange(1, draws + 1, dtype="int32")))  # draws 1 to 20,000
    assert set(np.unique(samples)) <= {0.0, 1.0}
    expected = 1 / (1 + np.exp(-scores))
    np.testing.assert_allclose(samples.mean(axis=0), expected, atol=4 * np.sqrt(0.25 / draws))


def test_supermask_gradient_is_that_of_the_sigmoid():
    upstream = np.array([0.3, -1.0, 2.0, 0.5, -0.25, 4.0], np.float32)
    inputs = functions.MaskInputs(uniforms=functions.uniform_noise(SCORES.shape, 3, 1))
    _, gradient = forward_and_gradient("bernoulli", SCORES, upstream, inputs)
    sigmoid = 1 / (1 + np.exp(-SCORES.astype(np.float64)))
    np.testing.assert_allclose(gradient, upstream * sigmoid * (1 - sigmoid), rtol=1e-6)


def test_signed_supermask_keeps_hides_or_inverts_with_identity_gradient():
    threshold = np.float32(0.015)
    upstream = np.array([0.3, -1.0, 2.0, 0.5, -0.25, 4.0], np.float32)
    mask, gradient = forward_and_gradient("signed", SCORES, upstream, functions.MaskInputs(threshold=threshold))
    np.testing.assert_array_equal(mask, [-1, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(gradient, upstream)


def assert_search_is_exact(scores: np.ndarray, keep: float, hint=None):
    """`top_k_search` from `hint` gives a threshold t with count(> t) <= k <= count(>= t), and the indicator
    built from it is the sorted reference; the signed scores (as the layer passes them) give what their
    magnitudes give."""
    magnitudes = np.abs(scores)
    hint = None if hint is None else ops.convert_to_tensor(np.array(hint, np.int32))
    found, next_hint = functions.top_k_search(ops.convert_to_tensor(scores), keep, hint)
    np.testing.assert_array_equal(found, functions.top_k_search(ops.convert_to_tensor(magnitudes), keep, hint)[0])
    mask = np.asarray(functions.top_k_indicator(ops.convert_to_tensor(scores), keep, found))
    np.testing.assert_array_equal(mask, reference_top_k(scores, keep))
    threshold, bits, k = int(np.asarray(found)[0]), magnitudes.view(np.int32), functions.kept_count(keep, scores.size)
    assert np.sum(bits > threshold) <= k <= np.sum(bits >= threshold) or k == 0
    return threshold, np.asarray(next_hint)


# Hints as the layer keeps them ([pattern, width]; checkpoints of earlier runs hold the same), good and bad
HINTS = ["none", "at the answer", "near", "far above", "far below", "past the largest", "widest"]


def hint_for(name: str, answer: int) -> list[int]:
    return {"none": [0, 0], "at the answer": [answer, 16], "near": [answer + 5000, 64],
            "far above": [answer + 2**26, 16], "far below": [1, 3], "past the largest": [2**31 - 2, 1],
            "widest": [answer, 2**29]}[name]


def kth_largest_pattern(magnitudes: np.ndarray, keep: float) -> int:
    return int(np.sort(magnitudes.ravel())[::-1][functions.kept_count(keep, magnitudes.size) - 1].view(np.int32))


@pytest.mark.parametrize("hint", HINTS)
def test_top_k_search_is_exact_from_any_previous_threshold(hint):
    scores = np.random.default_rng(8).standard_normal((300, 100)).astype(np.float32)
    answer = kth_largest_pattern(np.abs(scores), 0.3)
    threshold, next_hint = assert_search_is_exact(scores, 0.3, hint_for(hint, answer))
    assert next_hint[0] == threshold and next_hint[1] >= 16


LARGE = np.random.default_rng(10).standard_normal((784, 300)).astype(np.float32)  # 2^17 weights or more: band path


@pytest.mark.parametrize("hint", HINTS)
@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_top_k_search_of_a_large_layer_finishes_exactly_on_the_band_s_rows(hint, keep):
    assert LARGE.size >= 1 << 17
    assert_search_is_exact(LARGE, keep, hint_for(hint, kth_largest_pattern(np.abs(LARGE), keep)))


def rounded(scores: np.ndarray, decimals: int) -> np.ndarray:
    return np.round(scores, decimals).astype(np.float32)


def ties_straddle_the_kth_largest(scores: np.ndarray, keep: float) -> bool:
    magnitudes = np.sort(np.abs(scores), axis=None)[::-1]
    k = functions.kept_count(keep, scores.size)
    return k < scores.size and magnitudes[k - 1] == magnitudes[k]


@pytest.mark.parametrize("hint", ["none", "near"])
@pytest.mark.parametrize("scores, ties", [
    (LARGE, False), (rounded(LARGE, 1), True),  # many ties: more than a band holds
    (rounded(LARGE, 3), True),  # ties within the band's rows
    (rounded(np.random.default_rng(16).standard_normal((16384, 8)), 4), True),  # a band of 90 x 8: one row
    (np.random.default_rng(14).standard_normal((300, 100)).astype(np.float32), False),  # counted by rows
    (rounded(np.random.default_rng(15).standard_normal((100, 10)), 1), True)],  # counted as one row
    ids=["band", "band, many ties", "band, ties in it", "narrow band", "small", "smallest, ties"])
def test_compiled_top_k_mask_is_the_sorted_reference(scores, ties, hint):
    """The search as the run compiles it (a TensorFlow graph, `jax.jit`), which traces what eager calls only run."""
    assert ties_straddle_the_kth_largest(scores, 0.3) == ties
    layer = MaskedDense(scores.shape[1], mask_type="topk", keep=0.3)
    layer.build((None, scores.shape[0]))
    layer.scores.assign(scores)
    layer.search_hint.assign(np.array(hint_for(hint, kth_largest_pattern(np.abs(scores), 0.3)), np.int32))
    (mask,) = backends.current().compiled_masks([layer])()
    np.testing.assert_array_equal(mask, reference_top_k(scores, 0.3))


@pytest.mark.parametrize("scores", [
    rounded(LARGE, 1),  # ties straddle the threshold and fill hundreds of rows
    rounded(LARGE, 3),  # a few ties in the band
    np.full((512, 300), 0.25, np.float32),  # all equal: the last tie kept is the k-th weight
    np.where(np.arange(600 * 256).reshape(600, 256) < 300 * 256, 1.0, 0.0).astype(np.float32),  # two values
    np.random.default_rng(11).standard_normal((2, 70000)).astype(np.float32)],  # rows too long to pack two counts
    ids=["many ties", "few ties", "all equal", "two values", "long rows"])
@pytest.mark.parametrize("keep", [0.5, 0.3, 0.9])
def test_top_k_search_of_a_large_layer_breaks_ties_by_position(scores, keep):
    for hint in (None, [kth_largest_pattern(np.abs(scores), keep), 16]):
        assert_search_is_exact(scores, keep, hint)


@pytest.mark.parametrize("shape", [(6, 7), (784, 300)])
@pytest.mark.parametrize("kept", ["one", "all", "none"])
def test_top_k_search_keeps_one_all_or_none(shape, kept):
    scores = np.random.default_rng(12).permutation(np.tile(TIED.ravel(), -(-np.prod(shape) // TIED.size))
                                                   [:np.prod(shape)]).reshape(shape)
    keep = {"one": 1 / scores.size, "all": 1.0, "none": 0.4 / scores.size}[kept]
    assert functions.kept_count(keep, scores.size) == {"one": 1, "all": scores.size, "none": 0}[kept]
    assert_search_is_exact(scores, keep)


@pytest.mark.parametrize("shape", [(784, 300), (5, 1023), (3, 5000)])
def test_row_counts_count_each_row_at_both_thresholds(shape):
    rows = np.random.default_rng(13).integers(0, 100, shape).astype(np.int32)
    low, high = functions._row_counts(ops.convert_to_tensor(rows), np.int32(40), np.int32(60))
    np.testing.assert_array_equal(np.asarray(low), np.sum(rows >= 40, axis=1))
    np.testing.assert_array_equal(np.asarray(high), np.sum(rows >= 60, axis=1))


def test_top_k_search_reaches_tiny_scores_from_a_hint_near_the_largest_pattern():
    magnitudes = np.abs(np.random.default_rng(9).standard_normal((300, 100))).astype(np.float32) * 1e-30
    found, _ = functions.top_k_search(ops.convert_to_tensor(magnitudes), 0.3,
                                      ops.convert_to_tensor(np.array([0x7F000000, 1], np.int32)))
    mask = np.asarray(functions.top_k_indicator(ops.convert_to_tensor(magnitudes), 0.3, found))
    np.testing.assert_array_equal(mask, reference_top_k(magnitudes, 0.3))


def test_top_k_counts_negative_zero_as_zero():
    scores = np.array([-0.0, 0.0, -0.0, 0.5, -0.25, 0.0], np.float32)
    mask, _ = forward_and_gradient("topk", scores, np.ones_like(scores), functions.MaskInputs(keep=0.5))
    np.testing.assert_array_equal(mask, [1, 0, 0, 1, 1, 0])  # the first zero by position
