"""Compiled training epochs and evaluations: one interface, one implementation per Keras backend.

Everything above this package (the run, its logs and checkpoints, the layers) is written once in `keras.ops`
and never asks which backend it runs on; the backend is chosen the Keras way, by `KERAS_BACKEND`. Each
implementation module (`tensorflow_backend`, `jax_backend`) provides the same names: `NAME`, a `CompiledSteps`
subclass `Steps`, `enable_determinism()`, `device()`, `versions()`, `use_jit(jit, network)` (a `networks.NetworkSpec`) and
`steps_per_call(jit, convolutional)`.
"""
import importlib
import os
import re
import sys
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from types import ModuleType
from typing import Callable

import numpy as np

SUPPORTED = {"tensorflow": "training.backends.tensorflow_backend", "jax": "training.backends.jax_backend"}
EVALUATION_BATCH = 1000
STEPS_PER_CALL = 100


def requested() -> str:
    """The backend Keras will load: `$KERAS_BACKEND`, else Keras's own default (TensorFlow)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def check_supported(name: str | None = None) -> str:
    """`name` (default: the requested backend) if this project runs on it; else a one-line ConfigError."""
    from settings.config import ConfigError
    name = name or requested()
    if name not in SUPPORTED:
        raise ConfigError(f"KERAS_BACKEND={name} is not supported; use {' or '.join(SUPPORTED)}")
    return name


def current() -> ModuleType:
    """The implementation module of the backend Keras has loaded."""
    import keras  # imported here so `check_supported` can run before Keras loads a backend that is missing
    return importlib.import_module(SUPPORTED[check_supported(keras.backend.backend())])


# Lines TensorFlow prints on every CPU-only start, before its own log level applies: not the user's business.
STARTUP_NOISE = re.compile(r"absl::InitializeLog|cudart_stub|cuda_platform|cuInit|cuda drivers|oneDNN custom operations|"
                           r"TF_ENABLE_ONEDNN_OPTS|Unable to register cu(DNN|FFT|BLAS) factory|computation placer|"
                           r"cuda_(dnn|fft|blas)\.cc|This TensorFlow binary is optimized|rebuild TensorFlow")


@contextmanager
def quiet_library_notices():
    """Keep TensorFlow's start-up notices (cuInit on a CPU machine, oneDNN) off the terminal while the body runs;
    they are printed by C++ code before its log level applies. Every other line written to stderr is kept."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not STARTUP_NOISE.search(line)]
            sys.stderr.write("".join(kept))


def load_keras() -> ModuleType:
    """Import Keras, let its backend find its devices and make them deterministic, quietly; returns the backend.

    Keras imports TensorFlow whenever it is installed, even to save a model on JAX, hence the quiet load there too
    (`training.checkpoint.save_model`).
    """
    with quiet_library_notices():
        backend = current()
        backend.enable_determinism()
        backend.device()
    return backend


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
