"""A trained run as a plain Keras model: standard layers, the run's preprocessing inside, no project code needed.

- `export.compaction`: which units and filters can affect the output, and the effective size of the network
  without the others (NumPy only; importing `export` loads nothing else, so the plotter stays TensorFlow-free).
- `export.trained_run`: a run's trained kernels, read from its files and checked against each other.
- `export.plain_model`: the plain Keras model (full or compact) and its preprocessing layers.
- `export.writer`: writing the `.keras` file and its size report.
"""
from export.compaction import (ACTIVATION_AT_ZERO, EffectiveSize, LayerSize, compact_kernels, effective_size,
                               maps_zero_to_zero)
from export.errors import ExportError


__all__ = ["ACTIVATION_AT_ZERO", "EffectiveSize", "ExportError", "LayerSize", "compact_kernels",
           "effective_size", "maps_zero_to_zero"]
