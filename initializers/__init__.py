"""Weight draws for the frozen random weights (SPEC.md section 3) and their registry: `initializers.draws`.

NumPy only, so the command line lists and checks the names without loading Keras; `initializers.keras_initializer`
makes a draw a Keras initializer. This file only gathers the public names.
"""
from initializers.draws import (SCORES, Draw, fan_in, fan_out, he_constant_magnitude, random_signs, glorot_normal,
                                he_normal, he_constant, uniform_scores, kaiming_uniform_scores, zero_scores,
                                glorot_uniform_scores, SCORE_DRAWS, unscaled_input, binary_input_scale,
                                InitializerSpec, INITIALIZERS, get, layer_seed, draw)

__all__ = ["SCORES", "Draw", "fan_in", "fan_out", "he_constant_magnitude", "random_signs", "glorot_normal",
           "he_normal", "he_constant", "uniform_scores", "kaiming_uniform_scores", "zero_scores",
           "glorot_uniform_scores", "SCORE_DRAWS", "unscaled_input", "binary_input_scale", "InitializerSpec",
           "INITIALIZERS", "get", "layer_seed", "draw"]
