"""Compiled training and evaluation steps.

One compiled call runs many optimizer steps in a `tf.while_loop`, gathering each batch from the training
set held as a tensor on the device: no input pipeline, no per-step Python. The loop is built from the
Keras model, its trainable variables and a Keras optimizer, so custom layers and losses (`add_loss`) work
as they do under `model.fit`.
"""
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

EVALUATION_BATCH = 1000


class CompiledSteps:
    """Training epochs and evaluations of one model, compiled once (with XLA when `jit`)."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, x_train: np.ndarray,
                 y_train: np.ndarray, batch_size: int, jit: bool, steps_per_call: int = 100):
        self.model = model
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.steps_per_call = steps_per_call
        self.x_train = tf.convert_to_tensor(x_train)
        self.y_train = tf.convert_to_tensor(y_train)
        optimizer.build(model.trainable_variables)
        self._train_steps = tf.function(self._train_steps_python, jit_compile=jit, reduce_retracing=True)
        self._evaluate_batch = tf.function(self._evaluate_batch_python, jit_compile=jit,
                                           reduce_retracing=True)

    def loss(self, labels, probabilities):
        """Mean cross-entropy of the batch plus every loss the layers added (the Min* term)."""
        probabilities = tf.cast(probabilities, tf.float32)
        cross_entropy = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        extra = self.model.losses
        return tf.reduce_mean(cross_entropy) + (tf.add_n(extra) if extra else 0.0)

    def _train_steps_python(self, batches, start, stop):
        """Optimizer steps on `batches[start:stop]` (rows of indices); returns the summed batch losses."""
        variables = self.model.trainable_variables

        def step(i, loss_sum):
            indices = batches[i]
            x, y = tf.gather(self.x_train, indices), tf.gather(self.y_train, indices)
            with tf.GradientTape() as tape:
                loss = self.loss(y, self.model(x, training=True))
            self.optimizer.apply(tape.gradient(loss, variables), variables)
            return i + 1, loss_sum + loss

        _, loss_sum = tf.while_loop(lambda i, _: i < stop, step, (start, tf.constant(0.0)))
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

    def compile(self, order: np.ndarray) -> None:
        """Trace and compile the training loop for this epoch's shapes without taking a step."""
        for part in self.batches(order):
            self._train_steps(tf.constant(part), tf.constant(0), tf.constant(0))

    def train_epoch(self, order: np.ndarray, on_progress: Callable[[int, float], None] | None = None) -> float:
        """One pass over the training images in `order`; returns the mean training loss of its batches."""
        loss_sum, steps_done = 0.0, 0
        for part in self.batches(order):
            part_tensor = tf.constant(part)
            for start in range(0, len(part), self.steps_per_call):
                stop = min(start + self.steps_per_call, len(part))
                loss_sum += float(self._train_steps(part_tensor, tf.constant(start), tf.constant(stop)))
                steps_done += stop - start
                if on_progress is not None:
                    on_progress(steps_done, loss_sum / steps_done)
        return loss_sum / max(steps_done, 1)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over (x, y), in large batches."""
        loss_sum, correct = 0.0, 0.0
        for start in range(0, len(y), EVALUATION_BATCH):
            batch_loss, batch_correct = self._evaluate_batch(x[start:start + EVALUATION_BATCH],
                                                             y[start:start + EVALUATION_BATCH])
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
        return loss_sum / len(y), correct / len(y)
