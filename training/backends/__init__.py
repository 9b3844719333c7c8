"""Compiled training epochs and evaluations: one interface, one implementation per Keras backend.

Everything above this package (the run, its logs and checkpoints, the layers) is written once in `keras.ops`
and never asks which backend it runs on; the backend is chosen the Keras way, by `KERAS_BACKEND`. Each
implementation module (`tensorflow_backend`, `jax_backend`) provides the same names: `NAME`, a `CompiledSteps`
subclass `Steps` (`training.backends.compiled_steps`), `enable_determinism()`, `device()`, `versions()`,
`use_jit(jit, network)` (a `networks.NetworkSpec`), `steps_per_call(jit, convolutional)` and
`compiled_masks(layers)`.
"""
import importlib
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from types import ModuleType

# re-exported: the interface every implementation subclasses
from training.backends.compiled_steps import (EVALUATION_BATCH, STEPS_PER_CALL, CompiledSteps,  # noqa: F401
                                              evaluation_slices)

SUPPORTED = {"tensorflow": "training.backends.tensorflow_backend", "jax": "training.backends.jax_backend"}
# XLA:CPU compiles its elementwise loops for 256-bit vectors unless told otherwise (LLVM's default, against the
# clock penalty of 512-bit code on older Xeons, which the matrix products' libraries already pay). On a CPU with
# AVX-512, 512-bit loops make the supermask's sampler (a hash and a sigmoid per weight) markedly cheaper, with
# bit-identical results (BENCHMARKS.md); on other CPUs the flag changes nothing.
WIDE_VECTORS_FLAG = "--xla_cpu_prefer_vector_width=512"


def add_xla_flag(flag: str) -> None:
    """Append `flag` to XLA_FLAGS unless the user already set that option. XLA reads the variable once, when a
    backend first compiles (TensorFlow) or makes an array (JAX), so this must run before then."""
    flags = os.environ.get("XLA_FLAGS", "")
    if flag.split("=")[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


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
    add_xla_flag(WIDE_VECTORS_FLAG)
    with quiet_library_notices():
        backend = current()
        backend.enable_determinism()
        backend.device()
    return backend
