"""Loading and preprocessing of MNIST, Fashion-MNIST and CIFAR-10 (SPEC.md section 5).

Sources, in order: the data directory (`--datadir`, else the environment variable `MASKTRAINER_DATA`) in
the standard file formats, any system folder a dataset lists (Debian's Fashion-MNIST package), then the
standard Keras download. Images come back as float32 [N, H, W, C], labels as int32. Every file is checked as
it is read and the data validated against its registry entry before any training: anything damaged or invalid
raises DatasetError, one line naming the file or folder.
"""
import gzip
import io
import math
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from datasets import preprocessing

DATA_ENV = "MASKTRAINER_DATA"
VALIDATION_SIZE = 5000
RawData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


class DatasetError(ValueError):
    """A data file or folder that is damaged or not what its dataset should be; the message starts with it."""


class DataNotFoundError(RuntimeError):
    """The dataset is in none of the places looked in."""


def _read_bytes(path: Path) -> bytes:
    """The contents of a data file, gunzipped when its name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip reports damage as all three
        reason = getattr(error, "strerror", None) or error
        raise DatasetError(f"{path}: cannot be read ({reason})") from None


def read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip-compressed or not) into a NumPy array."""
    data = _read_bytes(path)
    if not data:
        raise DatasetError(f"{path}: empty file")
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DatasetError(f"{path}: not an IDX file (no IDX magic number)")
    if data[2] != 0x08:
        raise DatasetError(f"{path}: IDX values of type 0x{data[2]:02x}, expected unsigned bytes (0x08)")
    ndim, offset = data[3], 4 + 4 * data[3]
    if len(data) < offset:
        raise DatasetError(f"{path}: truncated header: {ndim} dimensions need {offset} bytes, "
                           f"found {len(data)}")
    shape = tuple(int.from_bytes(data[4 * i:4 * i + 4], "big") for i in range(1, ndim + 1))
    expected, found = math.prod(shape), len(data) - offset
    if found != expected:
        problem = "truncated" if found < expected else "longer than its header says"
        raise DatasetError(f"{path}: {problem}: shape {shape} needs {expected} values, found {found}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


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
            raise pickle.UnpicklingError(f"refusing to load {module + '.' + name!r} from a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle_batch(path: Path) -> dict:
    """The dict a CIFAR-10 batch file holds, unpickled with nothing but NumPy's array rebuilders."""
    data = _read_bytes(path)
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # damaged pickles fail in every way; repr keeps their text on one line
        raise DatasetError(f"{path}: not a CIFAR-10 batch ({error!r})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    return batch


def _integer_vector(values) -> np.ndarray | None:
    """`values` as a 1-D integer array, or None when they are not a flat sequence of integers."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):  # ragged nesting
        return None
    return array if array.ndim == 1 and array.dtype.kind in "iu" else None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images [N, 32, 32, 3] and labels of one batch file, checked against the standard layout."""
    batch = _unpickle_batch(path)
    images = batch[b"data"]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == 3072):
        found = f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray) \
            else type(images).__name__
        raise DatasetError(f"{path}: b'data' should be a uint8 array of shape (N, 3072), found {found}")
    labels = _integer_vector(batch[b"labels"])
    if labels is None or len(labels) != len(images):
        raise DatasetError(f"{path}: b'labels' should be a flat list of {len(images)} integers, "
                           f"one per image")
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


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
    """Where a dataset is looked for, how each place is read, and what its data must look like."""
    subdirectory: str  # inside the data directory
    read_directory: Callable[[Path], RawData | None]
    download: Callable[[], RawData]
    system_directories: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = (28, 28, 1)  # height, width, channels
    num_classes: int = 10
    mirror_symmetric: bool = True  # a left-right flip keeps the label, so `--augment` may flip these images


DATASETS: dict[str, DatasetSpec] = {
    # a mirrored digit is no digit (2, 3, 7 ...): `--augment` only translates MNIST
    "mnist": DatasetSpec("mnist", load_idx_directory, _keras_download("mnist"), image_shape=(28, 28, 1),
                         mirror_symmetric=False),
    "fashion_mnist": DatasetSpec("fashion-mnist", load_idx_directory, _keras_download("fashion_mnist"),
                                 ("/usr/share/datasets/fashion-mnist",), image_shape=(28, 28, 1)),
    "cifar10": DatasetSpec("cifar10", load_cifar10_directory, _keras_download("cifar10"),
                           image_shape=(32, 32, 3)),
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


def _split_problem(images: np.ndarray, labels: np.ndarray, spec: DatasetSpec) -> str | None:
    """What is wrong with one split's images and labels, or None."""
    shape = (len(images), *spec.image_shape)
    if images.dtype != np.uint8 or images.shape != shape:
        return f"images: {images.dtype} array of shape {images.shape}, expected uint8 of shape {shape}"
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
        return f"labels: {labels.dtype} array of shape {labels.shape}, expected {len(images)} integers"
    if len(labels) and not 0 <= labels.min() <= labels.max() < spec.num_classes:
        outside = labels[(labels < 0) | (labels >= spec.num_classes)][0]
        return f"label {outside} is outside the classes 0..{spec.num_classes - 1}"
    return None


def validate(raw: RawData, spec: DatasetSpec, source: str) -> None:
    """Refuse data that would train wrongly rather than fail: DatasetError naming `source` and the problem.

    The training split must hold more than the VALIDATION_SIZE images that `preprocess` takes off it, and
    not only copies of one image (their standard deviation, which `preprocess` divides by, would be zero).
    """
    x_train, y_train, x_test, y_test = raw
    for split, images, labels in (("training", x_train, y_train), ("test", x_test, y_test)):
        problem = _split_problem(images, labels, spec)
        if problem:
            raise DatasetError(f"{source}: {split} {problem}")
    if len(x_test) == 0:
        raise DatasetError(f"{source}: the test split is empty")
    if len(x_train) <= VALIDATION_SIZE:
        raise DatasetError(f"{source}: {len(x_train)} training images, but the first {VALIDATION_SIZE} are "
                           f"the validation split: none would be left to train on")
    if not np.ptp(x_train[VALIDATION_SIZE:], axis=0).any():
        raise DatasetError(f"{source}: the training images after the validation split are all the same image")


def load_raw(name: str, data_directory: Path | None) -> tuple[RawData, str]:
    """The raw uint8 dataset, validated, and a description of where it was read from."""
    raw, source = _find_raw(name, data_directory)
    validate(raw, get(name), source)
    return raw, source


def _find_raw(name: str, data_directory: Path | None) -> tuple[RawData, str]:
    """The dataset from the first place that has it, else the Keras download; else DataNotFoundError."""
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
        failure = f"{type(error).__name__}: {error}".splitlines()[0]  # its first line: the refusal stays one
        raise DataNotFoundError(
            f"{name} not found (looked in: {looked}; Keras download failed: {failure}); "
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
    mean_image: np.ndarray  # [H, W, C] float32, subtracted from the pixels scaled to [0, 1]
    std: float

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}


def preprocess(raw: RawData, trainsize: int | None = None, validation_size: int = VALIDATION_SIZE) -> Splits:
    """Validation = first `validation_size` training images; normalise with the training split's statistics.

    Pixels are scaled to [0, 1], the per-pixel mean image of the training split is subtracted, and the result
    is divided by the standard deviation of all centred training pixels. The statistics come from the whole
    training split, before `trainsize` keeps its first images, so a quick run sees the inputs of a full one. A
    `trainsize` beyond the split is refused (DatasetError): the run would record a size it never trained on.
    """
    x_all, y_all, x_test, y_test = raw
    available = len(x_all) - validation_size
    if trainsize is not None and trainsize > available:
        raise DatasetError(f"--trainsize {trainsize} is more than the {available:,} images of the training split "
                           f"(the first {validation_size:,} of {len(x_all):,} are the validation split)")
    x_all = preprocessing.unit_pixels(x_all)
    x_val, x_train = x_all[:validation_size], x_all[validation_size:]
    y_val, y_train = y_all[:validation_size], y_all[validation_size:]
    mean_image = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = float(np.sqrt(np.mean(np.square(x_train - mean_image), dtype=np.float64)))
    if trainsize is not None:
        x_train, y_train = x_train[:trainsize], y_train[:trainsize]

    def normalise(x):
        return preprocessing.standardise(x, mean_image, std)

    def labels(y):
        return np.asarray(y, dtype=np.int32).reshape(-1)

    return Splits(normalise(x_train), labels(y_train), normalise(x_val), labels(y_val),
                  normalise(preprocessing.unit_pixels(x_test)), labels(y_test), mean_image, std)
