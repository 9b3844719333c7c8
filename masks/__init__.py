"""Mask functions and masked layers: a Keras 3 library for training connectivity.

Importing the package loads only the registry of mask functions (no Keras); the layers are in `masks.layers`.
`masks.convert`, `masks.strip` (`masks.conversion`) and `masks.MaskStatistics` (`masks.callbacks`) load Keras
when first used.
"""
from masks.functions import MASK_TYPES, get

__all__ = ["MASK_TYPES", "MaskStatistics", "convert", "get", "strip"]

_LAZY = {"convert": "masks.conversion", "strip": "masks.conversion", "MaskStatistics": "masks.callbacks"}


def __getattr__(name: str):
    """`convert`, `strip` and `MaskStatistics`, imported (with Keras) on first access."""
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'masks' has no attribute {name!r}")
