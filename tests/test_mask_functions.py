"""Forward values and straight-through gradients of every mask function."""
import numpy as np
import pytest
from keras import ops

from masks import functions
from tests.helpers import output_and_gradient

SCORES = np.array([-0.5, -0.01, 0.0, 0.02, 0.7, 3.0], np.float32)
EXPECTED_HARD = {
    "mask": np.array([0, 0, 0, 1, 1, 1], np.float32),
    "mask_rs": np.array([0, 0, 0, 1, 1, 1], np.float32) * 6 / (1 + 3),
    "flip": np.array([-1, -1, 0, 1, 1, 1], np.float32),
}


def forward_and_gradient(name: str, scores: np.ndarray, upstream: np.ndarray):
    def masked(variable):
        mask = functions.get(name)(variable)
        return mask, ops.sum(mask * upstream)
    return output_and_gradient(masked, scores)


def test_registry_lists_the_three_mask_types():
    assert sorted(functions.MASK_FUNCTIONS) == ["flip", "mask", "mask_rs"]


@pytest.mark.parametrize("name", sorted(functions.MASK_FUNCTIONS))
def test_forward_is_exactly_the_hard_mask(name):
    mask, _ = forward_and_gradient(name, SCORES, np.ones_like(SCORES))
    np.testing.assert_array_equal(mask, EXPECTED_HARD[name])


@pytest.mark.parametrize("name", sorted(functions.MASK_FUNCTIONS))
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
