"""What every backend's compiled loop shares: the `CompiledSteps` interface, its batching and its constants.

The implementations (`tensorflow_backend`, `jax_backend`) subclass `CompiledSteps`; `training.backends` re-exports
these names for the run.
"""
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

EVALUATION_BATCH = 1000
STEPS_PER_CALL = 100


class CompiledSteps(ABC):
    """Training epochs and evaluations of one model and optimizer on one training set, compiled once.

    An epoch is a list of compiled calls, each running `steps_per_call` optimizer steps on batches gathered
    from the training set held on the device; the losses are summed on the device and read once at the end
    of the epoch, so the host waits nowhere inside it. `compile` compiles ahead of the timed epoch and leaves
    every variable as it was; after `train_epoch` the Keras variables hold the new state. The loss minimised is
    the cross-entropy, the layers' added losses and `weight_decay`'s penalty (`training.recipe.weight_penalty`);
    an epoch's `augmentation` draws (`training.recipe.augmentation_draws`), when given, move each batch's images
    inside the step.
    """

    def __init__(self, model, optimizer, x_train: np.ndarray, y_train: np.ndarray, batch_size: int, jit: bool,
                 steps_per_call: int, weight_decay: float = 0.0):
        self.model, self.optimizer, self.batch_size, self.jit = model, optimizer, batch_size, jit
        self.steps_per_call, self.weight_decay = steps_per_call, weight_decay
        optimizer.build(model.trainable_variables)

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

    @abstractmethod
    def compile(self, order: np.ndarray, augmentation: np.ndarray | None = None) -> None:
        """Compile the training calls for this epoch's shapes, leaving every variable as it was."""

    @abstractmethod
    def train_epoch(self, order: np.ndarray, augmentation: np.ndarray | None = None,
                    on_progress: Callable[[int, float], None] | None = None,
                    between_calls: Callable[[], None] | None = None) -> float:
        """One pass over the training images in `order`; returns the mean cross-entropy of its batches.

        `on_progress(steps done, mean loss so far)` is called after every compiled call; it makes the host
        wait for each call, so leave it out when only speed matters. `between_calls()` is called after each
        call is launched, without waiting for it (the run checks for Ctrl-C there).
        """

    @abstractmethod
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over (x, y), in batches of EVALUATION_BATCH."""


def evaluation_slices(size: int) -> list[slice]:
    """The batches an evaluation of `size` images runs in."""
    return [slice(start, start + EVALUATION_BATCH) for start in range(0, size, EVALUATION_BATCH)]
