"""Weight draws: reproducible per seed, the right distributions, p1 respected."""
import math

import numpy as np
import pytest

import initializers

SHAPE = (3, 3, 16, 32)  # fan_in = 144


@pytest.mark.parametrize("name", sorted(initializers.INITIALIZERS))
def test_same_seed_gives_bit_identical_weights(name):
    first = np.asarray(initializers.get(name)(seed=5, p1=0.3)(SHAPE))
    second = np.asarray(initializers.get(name)(seed=5, p1=0.3)(SHAPE))
    other = np.asarray(initializers.get(name)(seed=6, p1=0.3)(SHAPE))
    assert first.dtype == np.float32 and first.shape == SHAPE
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name, std", [("he", math.sqrt(2 / 144)), ("glorot", math.sqrt(2 / (144 + 288)))])
def test_normal_initializers_have_their_standard_deviation(name, std):
    weights = np.asarray(initializers.get(name)(seed=1)((3, 3, 16, 32)))
    assert abs(weights.std() / std - 1) < 0.05
    assert abs(weights.mean()) < 0.05 * std


@pytest.mark.parametrize("p1", [0.5, 0.9, 0.05])
def test_heconstant_has_one_magnitude_and_positive_fraction_p1(p1):
    weights = np.asarray(initializers.get("heconstant")(seed=2, p1=p1)(SHAPE))
    np.testing.assert_allclose(np.abs(weights), np.float32(math.sqrt(2 / 144)))
    assert abs(np.mean(weights > 0) - p1) < 0.02


@pytest.mark.parametrize("p1, expected", [(0.0, -1.0), (1.0, 1.0)])
def test_binary_at_p1_extremes_is_all_one_sign(p1, expected):
    weights = np.asarray(initializers.get("binary")(seed=3, p1=p1)(SHAPE))
    np.testing.assert_array_equal(weights, expected)


def test_binary_input_scale_is_product_of_he_magnitudes():
    shapes = [(784, 300), (300, 100), (100, 10)]
    expected = math.sqrt(2 / 784) * math.sqrt(2 / 300) * math.sqrt(2 / 100)
    assert initializers.get("binary").input_scale(shapes) == pytest.approx(expected)
    assert initializers.get("he").input_scale(shapes) == 1.0


def test_scores_start_inside_the_open_interval():
    scores = np.asarray(initializers.UniformScores(seed=4)((300, 100)))
    assert scores.min() >= 0.01 and scores.max() <= 0.1


def test_unknown_initializer_lists_valid_names():
    with pytest.raises(ValueError, match="heconstant"):
        initializers.get("orthogonal")
