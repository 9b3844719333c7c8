"""Weight draws for the frozen random weights (SPEC.md section 3), and the registry of initializers (the one place
an initializer is added; `initializers` re-exports it).

The draws use NumPy's seeded generator rather than a framework's random ops, so a seed gives bit-identical
weights on every machine, device, backend and version. This module needs NumPy only (the command line lists
and checks the names without loading Keras); `initializers.keras_initializer` makes a draw a Keras initializer.
"""
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

SCORES = "scores"  # the paper's draw of the trainable scores, apart from the registered weight initializers

Draw = Callable[[np.random.Generator, tuple, float], np.ndarray]  # (generator, kernel shape, p1) -> values


def fan_in(shape) -> int:
    """Product of all kernel dimensions except the last (inputs feeding one unit)."""
    return int(np.prod(shape[:-1]))


def fan_out(shape) -> int:
    """Receptive field x output channels (units fed by one input)."""
    return int(np.prod(shape[:-2])) * shape[-1] if len(shape) > 2 else shape[-1]


def he_constant_magnitude(shape) -> float:
    """The single weight magnitude sqrt(2 / fan_in) of a signed He-constant layer."""
    return math.sqrt(2.0 / fan_in(shape))


def random_signs(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    """+1 with probability p1, else -1."""
    return np.where(rng.random(shape) < p1, 1.0, -1.0)


def glorot_normal(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    """Normal with std sqrt(2 / (fan_in + fan_out)), fan_out = receptive field x output channels."""
    return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in(shape) + fan_out(shape)))


def he_normal(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    """Normal with std sqrt(2 / fan_in) (not truncated)."""
    return rng.standard_normal(shape) * he_constant_magnitude(shape)


def he_constant(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    """Signed He constant: +sqrt(2 / fan_in) with probability p1, else -sqrt(2 / fan_in)."""
    return random_signs(rng, shape, p1) * he_constant_magnitude(shape)


def uniform_scores(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    """Scores uniform in [0.01, 0.1]: every connection starts on and every sign kept (SPEC.md section 1)."""
    return rng.uniform(0.01, 0.1, shape)


def kaiming_uniform_scores(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    """Edge-popup's scores: PyTorch's `kaiming_uniform_(scores, a=sqrt(5))`, uniform in +-1/sqrt(fan_in)
    (allenai/hidden-networks, utils/conv_type.py `SubnetConv.__init__`)."""
    bound = 1.0 / math.sqrt(fan_in(shape))
    return rng.uniform(-bound, bound, shape)


def zero_scores(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    """Zhou et al.'s supermask scores: the constant `sigmoid_bias`, 0 by default, so every connection starts on
    with probability 1/2 (deconstructing-lottery-tickets, masked_networks.py `mask_init`, train_supermask.py)."""
    return np.zeros(shape)


def glorot_uniform_scores(rng: np.random.Generator, shape, p1: float) -> np.ndarray:
    """The signed supermask's scores: uniform in +-sqrt(6 / (fan_in + fan_out)), its "uniform/xavier" masks
    (kosnil/signed_supermasks, weight_initializer.py `initialize_weights("uniform", sigma=-7)`)."""
    bound = math.sqrt(6.0) / math.sqrt(fan_in(shape) + fan_out(shape))
    return rng.uniform(-bound, bound, shape)


# The draws of the trainable scores, one per training type (`settings.types`), apart from the weight initializers.
SCORE_DRAWS: dict[str, Draw] = {
    SCORES: uniform_scores,
    "kaiming_uniform": kaiming_uniform_scores,
    "zero": zero_scores,
    "glorot_uniform": glorot_uniform_scores,
}


def unscaled_input(kernel_shapes) -> float:
    """Every initializer but `binary` feeds the network its input unchanged."""
    return 1.0


def binary_input_scale(kernel_shapes) -> float:
    """`binary`'s weights are +-1, so the input is scaled by the product of the layers' He magnitudes."""
    return float(np.prod([he_constant_magnitude(shape) for shape in kernel_shapes]))


@dataclass(frozen=True)
class InitializerSpec:
    """A registered weight initializer: its draw, and the factor it applies to the network's input (given the
    kernel shapes of the network in order)."""
    draw: Draw
    input_scale: Callable[[list], float] = unscaled_input


INITIALIZERS: dict[str, InitializerSpec] = {
    "glorot": InitializerSpec(glorot_normal),
    "he": InitializerSpec(he_normal),
    "heconstant": InitializerSpec(he_constant),
    "binary": InitializerSpec(random_signs, binary_input_scale),
}


def get(name: str) -> InitializerSpec:
    """The initializer registered as `name`; a ValueError lists the valid names."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose one of {', '.join(INITIALIZERS)}")
    return INITIALIZERS[name]


def layer_seed(run_seed: int, layer_index: int, role: int) -> int:
    """A 32-bit seed for one draw (role 0: weights, 1: scores, 2: a sampled mask's draws) of one layer, derived
    from the run seed and the layer's position, so the same seed always draws the same network."""
    return int(np.random.SeedSequence([run_seed, layer_index, role]).generate_state(1)[0])


def draw(name: str, seed: int, shape, p1: float = 0.5) -> np.ndarray:
    """Initializer `name`'s float32 values for a kernel of `shape` (a name of SCORE_DRAWS: initial scores)."""
    function = SCORE_DRAWS[name] if name in SCORE_DRAWS else get(name).draw
    return function(np.random.default_rng(seed), tuple(shape), p1).astype(np.float32)
