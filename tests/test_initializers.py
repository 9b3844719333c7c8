"""Weight draws: reproducible per seed, the right distributions, p1 respected; the Keras initializer."""
import math

import keras
import numpy as np
import pytest

import initializers
from initializers.keras_initializer import SeededInitializer

SHAPE = (3, 3, 16, 32)  # fan_in = 144


@pytest.mark.parametrize("name", sorted(initializers.INITIALIZERS))
def test_same_seed_gives_bit_identical_weights(name):
    first = np.asarray(initializers.draw(name, 5, SHAPE, p1=0.3))
    second = np.asarray(initializers.draw(name, 5, SHAPE, p1=0.3))
    other = np.asarray(initializers.draw(name, 6, SHAPE, p1=0.3))
    assert first.dtype == np.float32 and first.shape == SHAPE
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name, std", [("he", math.sqrt(2 / 144)), ("glorot", math.sqrt(2 / (144 + 288)))])
def test_normal_initializers_have_their_standard_deviation(name, std):
    weights = np.asarray(initializers.draw(name, 1, (3, 3, 16, 32)))
    assert abs(weights.std() / std - 1) < 0.05
    assert abs(weights.mean()) < 0.05 * std


@pytest.mark.parametrize("p1", [0.5, 0.9, 0.05])
def test_heconstant_has_one_magnitude_and_positive_fraction_p1(p1):
    weights = np.asarray(initializers.draw("heconstant", 2, SHAPE, p1=p1))
    np.testing.assert_allclose(np.abs(weights), np.float32(math.sqrt(2 / 144)))
    assert abs(np.mean(weights > 0) - p1) < 0.02


@pytest.mark.parametrize("p1, expected", [(0.0, -1.0), (1.0, 1.0)])
def test_binary_at_p1_extremes_is_all_one_sign(p1, expected):
    weights = np.asarray(initializers.draw("binary", 3, SHAPE, p1=p1))
    np.testing.assert_array_equal(weights, expected)


def test_binary_input_scale_is_product_of_he_magnitudes():
    shapes = [(784, 300), (300, 100), (100, 10)]
    expected = math.sqrt(2 / 784) * math.sqrt(2 / 300) * math.sqrt(2 / 100)
    assert initializers.get("binary").input_scale(shapes) == pytest.approx(expected)
    assert initializers.get("he").input_scale(shapes) == 1.0


def test_scores_start_inside_the_open_interval():
    scores = np.asarray(initializers.draw(initializers.SCORES, 4, (300, 100)))
    assert scores.min() >= 0.01 and scores.max() <= 0.1


def test_unknown_initializer_lists_valid_names():
    with pytest.raises(ValueError, match="heconstant"):
        initializers.get("orthogonal")


@pytest.mark.parametrize("name", [*initializers.INITIALIZERS, initializers.SCORES])
def test_keras_initializer_draws_the_registry_values_and_round_trips_through_its_config(name):
    initializer = SeededInitializer(name, 7, p1=0.3)
    expected = initializers.draw(name, 7, SHAPE, p1=0.3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(initializer(SHAPE)), expected)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(initializer))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(SHAPE)), expected)


@pytest.mark.parametrize("class_name, name", [("HeNormal", "he"), ("GlorotNormal", "glorot"),
                                              ("HeConstant", "heconstant"), ("Binary", "binary"),
                                              ("UniformScores", initializers.SCORES)])
def test_an_initializer_saved_by_a_former_version_reads_as_the_same_draw(class_name, name):
    saved = {"module": None, "class_name": class_name, "registered_name": f"masktrainer>{class_name}",
             "config": {"seed": 3, "p1": 0.2}}
    restored = keras.saving.deserialize_keras_object(saved)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(SHAPE)),
                                  initializers.draw(name, 3, SHAPE, p1=0.2))
