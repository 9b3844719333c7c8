"""Compiled training and evaluation steps.

One compiled call runs many optimizer steps in a `tf.while_loop`, gathering each batch from the training
set held as a tensor on the device: no input pipeline, no per-step Python, and no waiting for the host
inside an epoch (the losses are summed on the device and read once at its end). The loop is built from
the Keras model, its trainable variables and a Keras optimizer, so custom layers and losses (`add_loss`)
work as they do under `model.fit`. BENCHMARKS.md measures what each of these choices buys.
"""
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from masks import MaskedConv2D

EVALUATION_BATCH = 1000
STEPS_PER_CALL = 100


def default_steps_per_call(model: keras.Model, jit: bool) -> int:
    """STEPS_PER_CALL, but 1 (a call without a loop) for convolutional networks compiled by XLA on CPU.

    XLA on CPU rewrites convolutions into the form its fast library kernels take only outside loops;
    inside a loop it runs them as naive loops, over 20 times slower (BENCHMARKS.md). A one-step call costs
    nothing noticeable next to a convolutional step.
    """
    on_cpu = not tf.config.list_physical_devices("GPU")
    has_convolutions = any(isinstance(layer, (MaskedConv2D, keras.layers.Conv2D)) for layer in model.layers)
    return 1 if jit and on_cpu and has_convolutions else STEPS_PER_CALL


class CompiledSteps:
    """Training epochs and evaluations of one model, compiled once (with XLA when `jit`).

    `steps_per_call` optimizer steps run in one compiled call (default: `default_steps_per_call`).
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, x_train: np.ndarray,
                 y_train: np.ndarray, batch_size: int, jit: bool, steps_per_call: int | None = None):
        self.model = model
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.steps_per_call = steps_per_call or default_steps_per_call(model, jit)
        self.x_train = tf.convert_to_tensor(x_train)
        self.y_train = tf.convert_to_tensor(y_train)
        optimizer.build(model.trainable_variables)
        self._compiled_shapes: set[tuple[int, int]] = set()
        self._train_steps = tf.function(self._train_steps_python, jit_compile=jit)
        self._evaluate_batch = tf.function(self._evaluate_batch_python, jit_compile=jit,
                                           reduce_retracing=True)

    def _train_step(self, indices):
        """One optimizer step on the training images at `indices`; returns the batch's cross-entropy.

        The step minimises the cross-entropy plus every loss the layers added (the Min* term). It reports
        the cross-entropy alone, the quantity the run logs: the gradient of -mean(m(S)) does not need its
        value, so XLA then drops that reduction, which cost a LeNet Min* step a fifth of its time.
        """
        x, y = tf.gather(self.x_train, indices), tf.gather(self.y_train, indices)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probabilities = tf.cast(self.model(x, training=True), tf.float32)
            cross_entropy = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
            added = self.model.losses
            loss = (cross_entropy + tf.add_n(added)) if added else cross_entropy
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return cross_entropy

    def _train_steps_python(self, batches):
        """One optimizer step per row of `batches` (indices); returns the summed batch cross-entropies.

        The number of rows is part of the traced shape, so a one-row call is traced without a loop.
        """
        if batches.shape[0] == 1:
            return self._train_step(batches[0])
        _, loss_sum = tf.while_loop(lambda i, _: i < batches.shape[0],
                                    lambda i, loss_sum: (i + 1, loss_sum + self._train_step(batches[i])),
                                    (tf.constant(0), tf.constant(0.0)))
        return loss_sum

    def _evaluate_batch_python(self, x, y):
        probabilities = tf.cast(self.model(x, training=False), tf.float32)
        loss_sum = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, probabilities))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), y),
                                        tf.float32))
        return loss_sum, correct

    def batches(self, order: np.ndarray) -> list[np.ndarray]:
        """The epoch's index rows: full batches as one [steps, batch] array, then the partial batch, if any."""
        full = len(order) // self.batch_size * self.batch_size
        parts = [order[:full].reshape(-1, self.batch_size)]
        if full < len(order):
            parts.append(order[full:].reshape(1, -1))
        return [part.astype(np.int32) for part in parts if len(part)]

    def calls(self, order: np.ndarray) -> list[np.ndarray]:
        """The epoch's batches grouped into the index arrays of its compiled calls, in training order."""
        return [part[start:start + self.steps_per_call] for part in self.batches(order)
                for start in range(0, len(part), self.steps_per_call)]

    def compile(self, order: np.ndarray) -> None:
        """Compile the training calls for this epoch's shapes, leaving every variable as it was.

        XLA compiles a function when it first runs, so each new shape runs once on a snapshot of the model
        and optimizer variables, which is then restored exactly.
        """
        shapes = [shape for shape in dict.fromkeys(call.shape for call in self.calls(order))
                  if shape not in self._compiled_shapes]
        if not shapes:
            return
        variables = self.model.weights + self.optimizer.variables
        snapshot = [variable.numpy() for variable in variables]
        for shape in shapes:
            self._train_steps(tf.zeros(shape, tf.int32))
            self._compiled_shapes.add(shape)
        for variable, value in zip(variables, snapshot):
            variable.assign(value)

    def train_epoch(self, order: np.ndarray, on_progress: Callable[[int, float], None] | None = None) -> float:
        """One pass over the training images in `order`; returns the mean cross-entropy of its batches.

        `on_progress(steps done, mean loss so far)` is called after every compiled call; it makes the host
        wait for each call, so leave it out when only speed matters.
        """
        loss_sum, steps_done = tf.constant(0.0), 0
        for call in self.calls(order):
            loss_sum += self._train_steps(tf.constant(call))
            steps_done += len(call)
            if on_progress is not None:
                on_progress(steps_done, float(loss_sum) / steps_done)
        return float(loss_sum) / max(steps_done, 1)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over (x, y), in large batches."""
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for start in range(0, len(y), EVALUATION_BATCH):
            batch_loss, batch_correct = self._evaluate_batch(x[start:start + EVALUATION_BATCH],
                                                             y[start:start + EVALUATION_BATCH])
            loss_sum += batch_loss
            correct += batch_correct
        return float(loss_sum) / len(y), float(correct) / len(y)
