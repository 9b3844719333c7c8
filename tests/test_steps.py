"""The compiled steps of the backend Keras runs on: compiling leaves the state untouched, conv nets on CPU take
one step per call, and the Min* term acts on the gradient while the step reports the cross-entropy."""
import keras
import numpy as np
import pytest

import networks
from masks.layers import masked_layers
from training import backends

BACKEND = backends.current()


def make_steps(model, x, y, batch_size=25):
    return BACKEND.Steps(model, keras.optimizers.Adam(1e-3), x, y, batch_size, True,
                         BACKEND.steps_per_call(True, False))


def test_compiling_leaves_every_variable_bit_identical():
    model = networks.build("LeNet", (28, 28, 1), seed=4)
    x = np.random.default_rng(0).standard_normal((60, 28, 28, 1)).astype(np.float32)
    steps = make_steps(model, x, np.arange(60, dtype=np.int32) % 10)
    variables = model.weights + steps.optimizer.variables
    before = [keras.ops.convert_to_numpy(variable) for variable in variables]
    steps.compile(np.arange(60))  # two shapes: 2 full batches in one call, then a partial batch of 10
    after = [keras.ops.convert_to_numpy(variable) for variable in variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("convolutional, jit, expected", [(True, True, 1), (False, True, backends.STEPS_PER_CALL)])
def test_steps_per_call_on_cpu(convolutional, jit, expected):
    assert BACKEND.device() == "CPU"
    assert BACKEND.steps_per_call(jit, convolutional) == expected


def test_min_term_moves_the_scores_but_the_step_reports_the_cross_entropy():
    x = np.random.default_rng(1).standard_normal((25, 28, 28, 1)).astype(np.float32)
    y = np.arange(25, dtype=np.int32) % 10
    scores, reported = {}, {}
    for rewards_unchanged in (False, True):
        model = networks.build("LeNet", (28, 28, 1), seed=4, rewards_unchanged=rewards_unchanged)
        expected = float(keras.losses.SparseCategoricalCrossentropy()(y, model(x)))
        reported[rewards_unchanged] = make_steps(model, x, y).train_epoch(np.arange(25))
        np.testing.assert_allclose(reported[rewards_unchanged], expected, rtol=1e-5)
        scores[rewards_unchanged] = np.concatenate([np.ravel(layer.scores) for layer in masked_layers(model)])
    assert np.mean(scores[True]) > np.mean(scores[False])  # -mean(m) pushes every score up


def test_an_epoch_in_many_calls_equals_the_same_epoch_in_one():
    x = np.random.default_rng(2).standard_normal((100, 28, 28, 1)).astype(np.float32)
    y = np.arange(100, dtype=np.int32) % 10
    kernels = []
    for steps_per_call in (1, 100):
        model = networks.build("LeNet", (28, 28, 1), seed=4, rewards_unchanged=True)
        steps = BACKEND.Steps(model, keras.optimizers.Adam(1e-3), x, y, 10, True, steps_per_call)
        steps.train_epoch(np.random.default_rng(0).permutation(100))
        kernels.append([keras.ops.convert_to_numpy(layer.effective_kernel()) for layer in masked_layers(model)])
    for one, many in zip(*kernels):
        np.testing.assert_allclose(one, many, atol=1e-6)
