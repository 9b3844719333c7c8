"""The JAX implementation of `CompiledSteps`: stateless steps in a jitted `lax.scan`, the state donated.

This is Keras 3's own JAX training pattern (`model.stateless_call`, then `optimizer.stateless_apply`, state
passed in and returned) with many steps per compiled call and each batch gathered from the training set held
on the device. Between epochs the state lives in the Keras variables, so checkpoints, statistics and saving
read them as on any backend. Nothing here imports TensorFlow.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import keras
import numpy as np

from training import recipe
from training.backends import add_xla_flag
from training.backends.compiled_steps import STEPS_PER_CALL, CompiledSteps, evaluation_slices

NAME = "jax"
DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"


def device() -> str:
    return "CPU" if jax.default_backend() == "cpu" else "GPU"


def enable_determinism() -> None:
    """Deterministic XLA kernels on GPU (reductions, scatter). XLA reads the flag when JAX first starts a
    device, so this must run before the first array is made; the run calls it before building its model."""
    add_xla_flag(DETERMINISM_FLAG)


def versions() -> dict[str, str]:
    import jaxlib
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


def use_jit(jit: str, network) -> bool:
    """Always compiled unless `--jit off` asks for op-by-op execution (for debugging: many times slower)."""
    return jit != "off"


def steps_per_call(jit: bool, convolutional: bool) -> int:
    """As on TensorFlow, and for the same reason (XLA's CPU convolutions are slow inside loops, BENCHMARKS.md):
    one step per call for convolutional networks on CPU, STEPS_PER_CALL otherwise."""
    return 1 if convolutional and device() == "CPU" else STEPS_PER_CALL


def compiled_masks(layers: list) -> Callable[[], list[np.ndarray]]:
    """m(S) of the masked `layers` as evaluated, read by one jitted function (compiled at its first read): read op
    by op, a top-k mask's search loop would be compiled anew at every read, a second or so per layer."""
    variables = [variable for layer in layers for variable in layer.weights]

    def masks(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return [layer.mask() for layer in layers]
    masks = jax.jit(masks)
    return lambda: [np.asarray(mask) for mask in masks([variable.value for variable in variables])]


class Steps(CompiledSteps):
    """Compiled with `jax.jit`; within an epoch the state is a pytree of arrays handed from call to call."""

    def __init__(self, model, optimizer, x_train, y_train, batch_size, jit, steps_per_call, weight_decay=0.0):
        super().__init__(model, optimizer, x_train, y_train, batch_size, jit, steps_per_call, weight_decay)
        self.x_train, self.y_train = jnp.asarray(x_train), jnp.asarray(y_train)
        self._loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        donate = (0,) if device() != "CPU" else ()  # the CPU client cannot reuse donated buffers
        self._train_calls = jax.jit(self._train_calls_python, donate_argnums=donate) if jit \
            else self._train_calls_python
        self._evaluate_batch = jax.jit(self._evaluate_batch_python) if jit else self._evaluate_batch_python
        self._compiled: dict[tuple[tuple[int, int], bool], Callable] = {}  # (index rows, augmented) -> call

    def _variables(self) -> tuple[list, list, list]:
        return self.model.trainable_variables, self.model.non_trainable_variables, self.optimizer.variables

    def _read_state(self) -> tuple[list, list, list]:
        return tuple([variable.value for variable in group] for group in self._variables())

    def _write_state(self, state) -> None:
        for group, values in zip(self._variables(), state):
            for variable, value in zip(group, values):
                variable.assign(value)

    def _loss(self, trainable, non_trainable, optimizer_values, x, y):
        """The loss to minimise (cross-entropy plus the layers' added losses), and the cross-entropy alone."""
        probabilities, non_trainable, added = self.model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True)
        cross_entropy = jnp.mean(keras.losses.sparse_categorical_crossentropy(y, probabilities.astype("float32")))
        if self.weight_decay:
            added = [*added, recipe.weight_penalty(trainable, self.weight_decay)]
        loss = cross_entropy + sum(added) if added else cross_entropy
        if self._loss_scaled:
            with keras.StatelessScope(state_mapping=list(zip(self.optimizer.variables, optimizer_values))):
                loss = self.optimizer.scale_loss(loss)
        return loss, (cross_entropy, non_trainable)

    def _train_step(self, state, x_train, y_train, augmentation, indices):
        x, y = x_train[indices], y_train[indices]
        if augmentation is not None:
            x = recipe.augment(x, augmentation[indices])
        trainable, non_trainable, optimizer_values = state
        gradients, (cross_entropy, non_trainable) = jax.grad(self._loss, has_aux=True)(
            trainable, non_trainable, optimizer_values, x, y)
        trainable, optimizer_values = self.optimizer.stateless_apply(optimizer_values, gradients, trainable)
        return (trainable, non_trainable, optimizer_values), cross_entropy

    def _train_calls_python(self, state, x_train, y_train, augmentation, batches):
        """One step per row of `batches`; returns the new state and the summed batch cross-entropies.

        The number of rows is part of the traced shape, so a one-row call is traced without a loop.
        """
        if batches.shape[0] == 1:
            return self._train_step(state, x_train, y_train, augmentation, batches[0])

        def step(carry, indices):
            state, loss_sum = carry
            state, cross_entropy = self._train_step(state, x_train, y_train, augmentation, indices)
            return (state, loss_sum + cross_entropy), None

        (state, loss_sum), _ = jax.lax.scan(step, (state, jnp.float32(0.0)), batches)
        return state, loss_sum

    def _evaluate_batch_python(self, trainable, non_trainable, x, y):
        probabilities, _ = self.model.stateless_call(trainable, non_trainable, x, training=False)
        probabilities = probabilities.astype("float32")
        loss_sum = jnp.sum(keras.losses.sparse_categorical_crossentropy(y, probabilities))
        correct = jnp.sum((jnp.argmax(probabilities, axis=-1) == y).astype("float32"))
        return loss_sum, correct

    def _call_for(self, shape: tuple[int, int], state, augmentation) -> Callable:
        """The compiled call for `shape` index rows, compiled from the state's shapes (no values are read)."""
        key = (shape, augmentation is not None)
        if key not in self._compiled:
            abstract = jax.tree.map(lambda value: jax.ShapeDtypeStruct(value.shape, value.dtype), state)
            self._compiled[key] = self._train_calls.lower(
                abstract, self.x_train, self.y_train, augmentation, jax.ShapeDtypeStruct(shape, jnp.int32)).compile() \
                if self.jit else self._train_calls
        return self._compiled[key]

    def compile(self, order: np.ndarray, augmentation: np.ndarray | None = None) -> None:
        """Ahead-of-time compilation: nothing runs, so no variable changes."""
        state = self._read_state()
        augmentation = None if augmentation is None else jax.ShapeDtypeStruct(augmentation.shape, augmentation.dtype)
        for call in self.calls(order):
            self._call_for(call.shape, state, augmentation)

    def train_epoch(self, order: np.ndarray, augmentation: np.ndarray | None = None,
                    on_progress: Callable[[int, float], None] | None = None,
                    between_calls: Callable[[], None] | None = None) -> float:
        state, loss_sum, steps_done = self._read_state(), jnp.float32(0.0), 0
        augmentation = None if augmentation is None else jnp.asarray(augmentation)
        try:
            for call in self.calls(order):
                state, call_loss = self._call_for(call.shape, state, augmentation)(
                    state, self.x_train, self.y_train, augmentation, jnp.asarray(call))
                loss_sum += call_loss
                steps_done += len(call)
                if on_progress is not None:
                    on_progress(steps_done, float(loss_sum) / steps_done)
                if between_calls is not None:
                    between_calls()
        finally:  # also when interrupted: the variables must hold live arrays, not donated ones (as on TensorFlow)
            self._write_state(state)
        return float(loss_sum) / max(steps_done, 1)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        trainable, non_trainable, _ = self._read_state()
        loss_sum, correct = jnp.float32(0.0), jnp.float32(0.0)
        for part in evaluation_slices(len(y)):
            batch_loss, batch_correct = self._evaluate_batch(trainable, non_trainable, x[part], y[part])
            loss_sum += batch_loss
            correct += batch_correct
        return float(loss_sum) / len(y), float(correct) / len(y)
