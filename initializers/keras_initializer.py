"""The registry's draws as a Keras initializer, so a masked layer saves and reloads with its draw."""
import keras

from initializers import draws

# The package under which the project's layers and initializers are registered with Keras's serialization
# (here, `masks.layers` and `networks.assembly`): a saved model names its objects `masktrainer>...`.
KERAS_PACKAGE = "masktrainer"


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class SeededInitializer(keras.initializers.Initializer):
    """Draws with `draws.draw(draw, seed, shape, p1)`; `draw` names a registered initializer, or SCORES."""

    def __init__(self, draw: str, seed: int, p1: float = 0.5):
        self.draw = draw
        self.seed = int(seed)
        self.p1 = float(p1)

    def __call__(self, shape, dtype=None):
        values = draws.draw(self.draw, self.seed, shape, self.p1)
        return keras.ops.convert_to_tensor(values, dtype=dtype or "float32")

    def get_config(self) -> dict:
        return {"draw": self.draw, "seed": self.seed, "p1": self.p1}


class _FormerInitializerClass:
    """Reads an initializer saved as one of the classes per draw that Model files held before 2026-11-26."""

    def __init__(self, draw: str):
        self.draw = draw

    def from_config(self, config: dict) -> SeededInitializer:
        return SeededInitializer(self.draw, **config)


def _register_former_classes() -> None:
    """Keras finds a saved object by its registered name and calls `from_config` on what is registered there."""
    former = {"GlorotNormal": "glorot", "HeNormal": "he", "HeConstant": "heconstant", "Binary": "binary",
              "UniformScores": draws.SCORES}
    for class_name, draw in former.items():
        keras.saving.get_custom_objects()[f"{KERAS_PACKAGE}>{class_name}"] = _FormerInitializerClass(draw)


_register_former_classes()
