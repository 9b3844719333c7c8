"""Mask functions and masked layers: a Keras 3 library for training connectivity."""
from masks.functions import MASK_FUNCTIONS, binary_mask, rescaled_binary_mask, sign_mask
from masks.layers import KeptFractionReward, MaskedConv2D, MaskedDense, MaskedLayer, masked_layers

__all__ = ["MASK_FUNCTIONS", "binary_mask", "rescaled_binary_mask", "sign_mask", "KeptFractionReward",
           "MaskedConv2D", "MaskedDense", "MaskedLayer", "masked_layers"]
