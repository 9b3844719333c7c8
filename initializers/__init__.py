"""Weight draws for the frozen random weights (SPEC.md section 3).

The draws use NumPy's seeded generator rather than TensorFlow's random ops, so a seed gives bit-identical
weights on every machine, device and TensorFlow version. Each initializer is a Keras initializer (it
serialises with `get_config`), and each layer gets its own seed so no two layers share a draw.
"""
import math

import keras
import numpy as np

_PACKAGE = "masktrainer"


def fan_in(shape) -> int:
    """Product of all kernel dimensions except the last (inputs feeding one unit)."""
    return int(np.prod(shape[:-1]))


def he_constant_magnitude(shape) -> float:
    """The single weight magnitude sqrt(2 / fan_in) of a signed He-constant layer."""
    return math.sqrt(2.0 / fan_in(shape))


class SeededInitializer(keras.initializers.Initializer):
    """Base class: draws with `numpy.random.default_rng(seed)`; subclasses implement `draw`."""

    def __init__(self, seed: int, p1: float = 0.5):
        self.seed = int(seed)
        self.p1 = float(p1)

    def draw(self, rng: np.random.Generator, shape) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, shape, dtype=None):
        values = self.draw(np.random.default_rng(self.seed), tuple(shape)).astype(np.float32)
        return keras.ops.convert_to_tensor(values, dtype=dtype or "float32")

    def get_config(self) -> dict:
        return {"seed": self.seed, "p1": self.p1}

    @staticmethod
    def input_scale(kernel_shapes) -> float:
        """Factor applied to the network's input; 1 except for `binary`."""
        return 1.0


def _random_signs(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    return np.where(rng.random(shape) < p1, 1.0, -1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GlorotNormal(SeededInitializer):
    """Normal with std sqrt(2 / (fan_in + fan_out)), fan_out = receptive field x output channels."""

    def draw(self, rng, shape):
        fan_out = int(np.prod(shape[:-2])) * shape[-1] if len(shape) > 2 else shape[-1]
        return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in(shape) + fan_out))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HeNormal(SeededInitializer):
    """Normal with std sqrt(2 / fan_in) (not truncated)."""

    def draw(self, rng, shape):
        return rng.standard_normal(shape) * he_constant_magnitude(shape)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HeConstant(SeededInitializer):
    """Signed He constant: +sqrt(2 / fan_in) with probability p1, else -sqrt(2 / fan_in)."""

    def draw(self, rng, shape):
        return _random_signs(rng, shape, self.p1) * he_constant_magnitude(shape)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Binary(SeededInitializer):
    """+1 with probability p1, else -1; the input is scaled by the product of the He magnitudes."""

    def draw(self, rng, shape):
        return _random_signs(rng, shape, self.p1)

    @staticmethod
    def input_scale(kernel_shapes) -> float:
        return float(np.prod([he_constant_magnitude(shape) for shape in kernel_shapes]))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class UniformScores(SeededInitializer):
    """Scores uniform in [0.01, 0.1]: every connection starts on and every sign kept (SPEC.md section 1)."""

    def draw(self, rng, shape):
        return rng.uniform(0.01, 0.1, shape)


INITIALIZERS: dict[str, type[SeededInitializer]] = {
    "glorot": GlorotNormal,
    "he": HeNormal,
    "heconstant": HeConstant,
    "binary": Binary,
}


def get(name: str) -> type[SeededInitializer]:
    """The initializer class registered as `name`; a ValueError lists the valid names."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose one of {', '.join(INITIALIZERS)}")
    return INITIALIZERS[name]
