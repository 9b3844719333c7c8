"""The compiled steps: compiling leaves the state untouched; conv nets under XLA on CPU take one step per call."""
import keras
import numpy as np
import pytest

import networks
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
