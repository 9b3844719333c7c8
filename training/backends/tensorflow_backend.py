"""The TensorFlow implementation of `CompiledSteps`: `tf.function` (XLA when `jit`) over a `tf.while_loop`.

One compiled call runs many optimizer steps, gathering each batch from the training set held as a tensor on
the device. The loop is built from the Keras model, its trainable variables and a Keras optimizer, so custom
layers and losses (`add_loss`) work as they do under `model.fit`. BENCHMARKS.md measures what each choice buys.
"""
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from training import recipe
from training.backends.compiled_steps import STEPS_PER_CALL, CompiledSteps, evaluation_slices

NAME = "tensorflow"
# `--jit auto` per device (BENCHMARKS.md): on CPU XLA makes the LeNet loop about 3 times faster and ConvN steps
# 15-26% faster, but a ResNet step 3 times slower (the registry's `xla_on_cpu`); on GPU it is measured for no
# network yet, so only the dense networks take it.


def device() -> str:
    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def enable_determinism() -> None:
    tf.config.experimental.enable_op_determinism()


def versions() -> dict[str, str]:
    return {"tensorflow": tf.__version__}


def use_jit(jit: str, network) -> bool:
    if jit != "auto":
        return jit == "on"
    return network.xla_on_cpu if device() == "CPU" else not network.convolutional


def steps_per_call(jit: bool, convolutional: bool) -> int:
    """STEPS_PER_CALL, but 1 (a call without a loop) for convolutional networks compiled by XLA on CPU.

    XLA on CPU rewrites convolutions into the form its fast library kernels take only outside loops; inside a
    loop it runs them as naive loops, over 20 times slower (BENCHMARKS.md). A one-step call costs nothing
    noticeable next to a convolutional step.
    """
    return 1 if jit and convolutional and device() == "CPU" else STEPS_PER_CALL


def compiled_masks(layers: list) -> Callable[[], list[np.ndarray]]:
    """m(S) of the masked `layers` as evaluated, read by one graph function (TensorFlow's kernels, as eagerly):
    read op by op, a top-k mask's search loop runs in Python."""
    masks = tf.function(lambda: [layer.mask() for layer in layers])
    return lambda: [mask.numpy() for mask in masks()]


class Steps(CompiledSteps):
    """Compiled with `tf.function`; the state lives in the Keras variables throughout."""

    def __init__(self, model, optimizer, x_train, y_train, batch_size, jit, steps_per_call, weight_decay=0.0):
        super().__init__(model, optimizer, x_train, y_train, batch_size, jit, steps_per_call, weight_decay)
        self.x_train = tf.convert_to_tensor(x_train)
        self.y_train = tf.convert_to_tensor(y_train)
        self._compiled_shapes: set[tuple[tuple[int, int], bool]] = set()  # (index rows, augmented)
        self._train_steps = tf.function(self._train_steps_python, jit_compile=jit)
        self._evaluate_batch = tf.function(self._evaluate_batch_python, jit_compile=jit, reduce_retracing=True)

    def _train_step(self, indices, augmentation):
        """One optimizer step on the training images at `indices`; returns the batch's cross-entropy.

        The step minimises the cross-entropy plus every loss the layers added (the Min* term). It reports
        the cross-entropy alone, the quantity the run logs: the gradient of -mean(m(S)) does not need its
        value, so XLA then drops that reduction, which cost a LeNet Min* step a fifth of its time.
        """
        x, y = tf.gather(self.x_train, indices), tf.gather(self.y_train, indices)
        if augmentation is not None:
            x = recipe.augment(x, tf.gather(augmentation, indices))
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probabilities = tf.cast(self.model(x, training=True), tf.float32)
            cross_entropy = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
            added = self.model.losses + ([recipe.weight_penalty(variables, self.weight_decay)]
                                         if self.weight_decay else [])
            loss = (cross_entropy + tf.add_n(added)) if added else cross_entropy
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                loss = self.optimizer.scale_loss(loss)
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return cross_entropy

    def _train_steps_python(self, batches, augmentation):
        """One optimizer step per row of `batches` (indices); returns the summed batch cross-entropies.

        The number of rows is part of the traced shape, so a one-row call is traced without a loop.
        """
        if batches.shape[0] == 1:
            return self._train_step(batches[0], augmentation)
        _, loss_sum = tf.while_loop(
            lambda i, _: i < batches.shape[0],
            lambda i, loss_sum: (i + 1, loss_sum + self._train_step(batches[i], augmentation)),
            (tf.constant(0), tf.constant(0.0)))
        return loss_sum

    def _evaluate_batch_python(self, x, y):
        probabilities = tf.cast(self.model(x, training=False), tf.float32)
        loss_sum = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, probabilities))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), y),
                                        tf.float32))
        return loss_sum, correct

    def compile(self, order: np.ndarray, augmentation: np.ndarray | None = None) -> None:
        """XLA compiles a function when it first runs, so each new shape runs once on a snapshot of the model
        and optimizer variables, which is then restored exactly."""
        augmented = augmentation is not None
        shapes = [shape for shape in dict.fromkeys(call.shape for call in self.calls(order))
                  if (shape, augmented) not in self._compiled_shapes]
        if not shapes:
            return
        variables = self.model.weights + self.optimizer.variables
        snapshot = [variable.numpy() for variable in variables]
        for shape in shapes:
            self._train_steps(tf.zeros(shape, tf.int32), tf.constant(augmentation) if augmented else None)
            self._compiled_shapes.add((shape, augmented))
        for variable, value in zip(variables, snapshot):
            variable.assign(value)

    def train_epoch(self, order: np.ndarray, augmentation: np.ndarray | None = None,
                    on_progress: Callable[[int, float], None] | None = None,
                    between_calls: Callable[[], None] | None = None) -> float:
        loss_sum, steps_done = tf.constant(0.0), 0
        # On the device once for the epoch (a host constant would be copied into every call on a GPU)
        augmentation = None if augmentation is None else tf.identity(tf.constant(augmentation))
        for call in self.calls(order):
            loss_sum += self._train_steps(tf.constant(call), augmentation)
            steps_done += len(call)
            if on_progress is not None:
                on_progress(steps_done, float(loss_sum) / steps_done)
            if between_calls is not None:
                between_calls()
        return float(loss_sum) / max(steps_done, 1)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for part in evaluation_slices(len(y)):
            batch_loss, batch_correct = self._evaluate_batch(x[part], y[part])
            loss_sum += batch_loss
            correct += batch_correct
        return float(loss_sum) / len(y), float(correct) / len(y)
