"""The preprocessing file, `Preprocessing_ID<id>.npz`: its arrays, their check and the arithmetic they stand for.

One owner for the trainer that computes and writes it (`datasets.preprocess`, `training.run`) and the readers
that load it back (`export.run_files`, and `export.plain_model`, which repeats the arithmetic as Keras layers).
What the trainer does to raw pixels: `(raw / 255 - mean_image) / std` in float32; the network then scales by
`input_scale` in its own first layer when that is not 1 (the `binary` initializer). NumPy only.
"""
from dataclasses import dataclass

import numpy as np

KEYS = ("mean_image", "std", "input_scale")  # the file's arrays, in the order they are written


def unit_pixels(raw: np.ndarray) -> np.ndarray:
    """Raw pixels (uint8) scaled to [0, 1] in float32."""
    return raw.astype(np.float32) / 255.0


def standardise(pixels: np.ndarray, mean_image: np.ndarray, std) -> np.ndarray:
    """Pixels in [0, 1] less the mean image, over std: the network's input (float32)."""
    return ((pixels - mean_image) / np.float32(std)).astype(np.float32)


def network_input(raw: np.ndarray, mean_image: np.ndarray, std) -> np.ndarray:
    """The trainer's float32 arithmetic on raw pixels (uint8, NHWC): what its network was fed."""
    return standardise(unit_pixels(np.asarray(raw)), mean_image, std)


class PreprocessingError(ValueError):
    """Arrays that are not a preprocessing file; the message says which array and why (the reader names the file)."""


@dataclass(frozen=True)
class Preprocessing:
    """What the trainer does to raw pixels (`network_input`), and the input scale of its network's first layer."""
    mean_image: np.ndarray  # [H, W, C] float32
    std: np.float32
    input_scale: np.float32

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.mean_image.shape)

    def arrays(self) -> dict[str, np.ndarray]:
        """The file's arrays, as the trainer writes them."""
        return {"mean_image": self.mean_image, "std": self.std, "input_scale": self.input_scale}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Preprocessing":
        """The preprocessing of a file's arrays; PreprocessingError when they are not usable."""
        missing = [key for key in KEYS if key not in arrays]
        if missing:
            raise PreprocessingError(f"lacks {', '.join(missing)}")
        mean_image = arrays["mean_image"]
        if mean_image.ndim != 3 or not np.all(np.isfinite(mean_image)):
            raise PreprocessingError(f"mean_image should be a finite [height, width, channels] array, "
                                     f"found shape {mean_image.shape}")
        scalars = {}
        for key in ("std", "input_scale"):
            value = arrays[key]
            if value.shape != () or not np.isfinite(value) or not value > 0:
                raise PreprocessingError(f"{key} should be one positive number, found {value!r}")
            scalars[key] = np.float32(value)
        return cls(mean_image.astype(np.float32), scalars["std"], scalars["input_scale"])
