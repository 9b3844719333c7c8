"""Mask functions and masked layers: a Keras 3 library for training connectivity.

Importing the package loads only the registry of mask functions (no Keras); the layers are in `masks.layers`.
"""
from masks.functions import MASK_FUNCTIONS, get

__all__ = ["MASK_FUNCTIONS", "get"]
