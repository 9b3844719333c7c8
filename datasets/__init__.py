"""Loading and preprocessing of MNIST, Fashion-MNIST and CIFAR-10 (SPEC.md section 5).

Sources, in order: the data directory (`--datadir`, else the environment variable `MASKTRAINER_DATA`) in
the standard file formats, any system folder a dataset lists (Debian's Fashion-MNIST package), then the
standard Keras download. Images come back as float32 [N, H, W, C], labels as int32.
"""
import gzip
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DATA_ENV = "MASKTRAINER_DATA"
VALIDATION_SIZE = 5000
RawData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


class DataNotFoundError(RuntimeError):
    """The dataset is in none of the places looked in."""


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a NumPy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {array.size}")
    return array.reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def load_idx_directory(directory: Path) -> RawData | None:
    """The four standard MNIST-layout IDX files in `directory`, or None when any is missing."""
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(directory, stem) for stem in stems]
    if None in paths:
        return None
    x_train, y_train, x_test, y_test = (read_idx(path) for path in paths)
    return x_train[..., None], y_train, x_test[..., None], y_test


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles the standard CIFAR-10 batches while refusing every class but NumPy's array rebuilders."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _ArrayOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b"labels"], dtype=np.uint8)


def load_cifar10_directory(directory: Path) -> RawData | None:
    """CIFAR-10 from the standard `cifar-10-batches-py` folder, or None when it is missing."""
    folder = directory / "cifar-10-batches-py"
    train_paths = [folder / f"data_batch_{i}" for i in range(1, 6)]
    if not all(path.is_file() for path in train_paths + [folder / "test_batch"]):
        return None
    train = [_read_cifar_batch(path) for path in train_paths]
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test)


def _keras_download(name: str) -> Callable[[], RawData]:
    def download() -> RawData:
        import keras  # imported late: keeps `datasets` usable without starting TensorFlow
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
        if x_train.ndim == 3:
            x_train, x_test = x_train[..., None], x_test[..., None]
        return x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)
    return download


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset is looked for and how each place is read."""
    subdirectory: str  # inside the data directory
    read_directory: Callable[[Path], RawData | None]
    download: Callable[[], RawData]
    system_directories: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", load_idx_directory, _keras_download("mnist")),
    "fashion_mnist": DatasetSpec("fashion-mnist", load_idx_directory, _keras_download("fashion_mnist"),
                                 ("/usr/share/datasets/fashion-mnist",)),
    "cifar10": DatasetSpec("cifar10", load_cifar10_directory, _keras_download("cifar10")),
}


def get(name: str) -> DatasetSpec:
    """The dataset registered as `name`; a ValueError lists the valid names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_data_directory(datadir: str | None) -> Path | None:
    """`--datadir` if given (it must exist), else `$MASKTRAINER_DATA`, else None."""
    if datadir is not None:
        path = Path(datadir).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"--datadir {datadir} is not a directory")
        return path
    from_env = os.environ.get(DATA_ENV)
    return Path(from_env).expanduser() if from_env else None


def load_raw(name: str, data_directory: Path | None) -> tuple[RawData, str]:
    """The raw uint8 dataset and a description of where it was read from."""
    spec = get(name)
    places = ([data_directory / spec.subdirectory] if data_directory else []) + \
        [Path(folder) for folder in spec.system_directories]
    for place in places:
        if place.is_dir():
            raw = spec.read_directory(place)
            if raw is not None:
                return raw, str(place)
    try:
        return spec.download(), "keras download"
    except Exception as error:  # any failure of the download means: not available here
        looked = ", ".join(str(place) for place in places) or f"no data directory (--datadir or ${DATA_ENV})"
        raise DataNotFoundError(
            f"{name} not found (looked in: {looked}; Keras download failed: {type(error).__name__}); "
            f"put the standard files in DIR/{spec.subdirectory}/ and pass --datadir DIR or set {DATA_ENV}=DIR"
        ) from None


@dataclass(frozen=True)
class Splits:
    """Preprocessed train / validation / test arrays and the statistics used to normalise them."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    std: float

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}


def preprocess(raw: RawData, trainsize: int | None = None, validation_size: int = VALIDATION_SIZE) -> Splits:
    """Validation = first `validation_size` training images; normalise with the training split's statistics.

    Pixels are scaled to [0, 1], the per-pixel mean image of the training split is subtracted, and the result
    is divided by the standard deviation of all centred training pixels. The statistics come from the whole
    training split, before `trainsize` keeps its first images, so a quick run sees the inputs of a full one.
    """
    x_all, y_all, x_test, y_test = raw
    x_all = x_all.astype(np.float32) / 255.0
    x_val, x_train = x_all[:validation_size], x_all[validation_size:]
    y_val, y_train = y_all[:validation_size], y_all[validation_size:]
    mean_image = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = float(np.sqrt(np.mean(np.square(x_train - mean_image), dtype=np.float64)))
    if trainsize is not None:
        x_train, y_train = x_train[:trainsize], y_train[:trainsize]

    def normalise(x):
        return ((x - mean_image) / np.float32(std)).astype(np.float32)

    def labels(y):
        return np.asarray(y, dtype=np.int32).reshape(-1)

    return Splits(normalise(x_train), labels(y_train), normalise(x_val), labels(y_val),
                  normalise(x_test.astype(np.float32) / 255.0), labels(y_test), std)
