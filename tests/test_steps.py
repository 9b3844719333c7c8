"""The compiled steps: compiling leaves the state untouched; conv nets under XLA on CPU take one step per call;
the Min* term acts on the gradient while the step reports the cross-entropy."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import networks
from masks import masked_layers
from training.steps import STEPS_PER_CALL, CompiledSteps, default_steps_per_call


def test_compiling_leaves_every_variable_bit_identical():
    model = networks.build("LeNet", (28, 28, 1), seed=4)
    optimizer = keras.optimizers.Adam(1e-3)
    x = np.random.default_rng(0).standard_normal((60, 28, 28, 1)).astype(np.float32)
    steps = CompiledSteps(model, optimizer, x, np.arange(60, dtype=np.int32) % 10, batch_size=25, jit=True)
    before = [np.array(variable) for variable in model.weights + optimizer.variables]
    steps.compile(np.arange(60))  # two shapes: 2 full batches in one call, then a partial batch of 10
    after = [np.array(variable) for variable in model.weights + optimizer.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("name, jit, expected", [("Conv2", True, 1), ("Conv2", False, STEPS_PER_CALL),
                                                 ("LeNet", True, STEPS_PER_CALL)])
def test_steps_per_call_on_cpu(name, jit, expected):
    shape = (28, 28, 1) if name == "LeNet" else (32, 32, 3)
    assert default_steps_per_call(networks.build(name, shape), jit) == expected


def test_min_term_moves_the_scores_but_the_step_reports_the_cross_entropy():
    x = np.random.default_rng(1).standard_normal((25, 28, 28, 1)).astype(np.float32)
    y = np.arange(25, dtype=np.int32) % 10
    scores, reported = {}, {}
    for rewards_unchanged in (False, True):
        model = networks.build("LeNet", (28, 28, 1), seed=4, rewards_unchanged=rewards_unchanged)
        expected = float(keras.losses.SparseCategoricalCrossentropy()(y, model(x)))
        steps = CompiledSteps(model, keras.optimizers.Adam(1e-3), x, y, batch_size=25, jit=True)
        reported[rewards_unchanged] = float(steps._train_steps(tf.constant(np.arange(25, dtype=np.int32)[None])))
        np.testing.assert_allclose(reported[rewards_unchanged], expected, rtol=1e-5)
        scores[rewards_unchanged] = np.concatenate([np.ravel(layer.scores) for layer in masked_layers(model)])
    assert np.mean(scores[True]) > np.mean(scores[False])  # -mean(m) pushes every score up
