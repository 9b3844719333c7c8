"""Reading the standard formats, refusing damaged or invalid data, the validation split, the normalisation."""
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import datasets
from tests.helpers import RANDOM_BYTES, refusal, unreadable, write_cifar_batches


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, train: int = datasets.VALIDATION_SIZE + 10, test: int = 10,
                last_label: int = 9) -> Path:
    """An MNIST-layout folder of random images; the last training label is `last_label`."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("t10k", test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        labels = rng.integers(0, 10, count)
        if split == "train":
            labels[-1] = last_label
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def test_idx_files_are_read_with_a_channel_axis(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.array([3, 7]))
    x_train, y_train, _, _ = datasets.load_idx_directory(tmp_path)
    assert x_train.shape == (2, 28, 28, 1) and list(y_train) == [3, 7]
    np.testing.assert_array_equal(x_train[..., 0], images)


def test_truncated_idx_file_is_refused(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x01\x02")
    assert "truncated" in refusal(lambda: datasets.read_idx(path), path)


IDX = bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 4) + bytes(range(24))  # a valid 2 x 3 x 4 IDX file
IDX_DAMAGES = {
    "empty": b"",
    "cut inside the magic": IDX[:3],
    "cut inside the dimensions": IDX[:9],
    "cut after the header": IDX[:16],
    "cut inside the values": IDX[:-1],
    "trailing bytes": IDX + b"\x00",
    "wrong magic": b"\x01" + IDX[1:],
    "float dtype byte": IDX[:2] + b"\x0d" + IDX[3:],
    "more dimensions than the header holds": IDX[:3] + bytes([255]) + IDX[4:],
    "dimensions whose product wraps to 0 in 64 bits": bytes([0, 0, 8, 4]) + struct.pack(">4I", *[65536] * 4),
    "random bytes": RANDOM_BYTES,
}


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("damage", list(IDX_DAMAGES))
def test_damaged_idx_file_is_refused_naming_it(tmp_path, damage, compressed):
    path = tmp_path / ("x.gz" if compressed else "x")
    path.write_bytes(gzip.compress(IDX_DAMAGES[damage]) if compressed else IDX_DAMAGES[damage])
    refusal(lambda: datasets.read_idx(path), path)


GZ = gzip.compress(IDX, mtime=0)
GZIP_DAMAGES = {
    "not gzip at all": IDX,
    "zero length": b"",
    "header only": GZ[:10],
    "body cut in half": GZ[:len(GZ) // 2],
    "checksum cut off": GZ[:-4],
    "last byte cut off": GZ[:-1],
    "body overwritten": GZ[:12] + b"\xff" * 8 + GZ[20:],
    "wrong checksum": GZ[:-8] + b"\x00\x00\x00\x00" + GZ[-4:],
    "gzip magic then random bytes": GZ[:2] + RANDOM_BYTES,
}


@pytest.mark.parametrize("damage", list(GZIP_DAMAGES))
def test_damaged_gzip_file_is_refused_naming_it(tmp_path, damage):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(GZIP_DAMAGES[damage])
    refusal(lambda: datasets.read_idx(path), path)



@pytest.mark.parametrize("name", ["x.gz", "x"])
def test_unreadable_idx_file_is_refused_naming_it(tmp_path, name):
    unreadable(tmp_path / name)
    assert "Input/output error" in refusal(lambda: datasets.read_idx(tmp_path / name), tmp_path / name)


def test_idx_file_without_read_permission_is_refused_naming_it(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(GZ)
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as a user who can read anything (root)")
    assert "Permission denied" in refusal(lambda: datasets.read_idx(path), path)


def test_damaged_file_in_a_data_directory_is_named_by_load_raw(tmp_path):
    folder = write_mnist(tmp_path)
    damaged = folder / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-3])
    refusal(lambda: datasets.load_raw("mnist", tmp_path), damaged)


def test_cifar_batches_are_read_as_height_width_channels(tmp_path):
    write_cifar_batches(tmp_path, train=50, test=10)
    x_train, y_train, x_test, y_test = datasets.load_cifar10_directory(tmp_path / "cifar10")
    assert x_train.shape == (50, 32, 32, 3) and x_test.shape == (10, 32, 32, 3) and len(y_train) == 50
    with open(tmp_path / "cifar10/cifar-10-batches-py/data_batch_1", "rb") as f:
        first_row = pickle.load(f)[b"data"][0]  # the test itself wrote this file
    np.testing.assert_array_equal(x_train[0, :, :, 0].ravel(), first_row[:1024])  # red plane


class Exploit:
    """Unpickling this runs a shell command that leaves a file named `pwned` in the working directory."""
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_batch_with_foreign_objects_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar_batches(tmp_path, train=5, test=1, payload={b"data": Exploit(), b"labels": [0]})
    path = tmp_path / "cifar10/cifar-10-batches-py/data_batch_1"
    assert "refusing to load" in refusal(lambda: datasets.load_cifar10_directory(tmp_path / "cifar10"), path)
    assert not (tmp_path / "pwned").exists()


def batch(data=None, labels=None) -> dict:
    """A CIFAR-10 batch: two black images labelled 1, unless `data` or `labels` replace them."""
    return {b"data": np.zeros((2, 3072), np.uint8) if data is None else data,
            b"labels": [1, 1] if labels is None else labels}


VALID_BATCH = pickle.dumps(batch(), protocol=2)
CIFAR_DAMAGES = {
    "empty": b"",
    "cut after the protocol": VALID_BATCH[:2],
    "cut in half": VALID_BATCH[:len(VALID_BATCH) // 2],
    "last byte cut off": VALID_BATCH[:-1],
    "not a pickle": b"data_batch_3, but text\n",
    "random bytes": RANDOM_BYTES,
    "a pickled list": pickle.dumps([1, 2, 3]),
    "a pickled array": pickle.dumps(np.zeros((2, 3072), np.uint8)),
    "no data": pickle.dumps({b"labels": [1, 2]}),
    "no labels": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}),
    "string keys": pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}),
    "rows of the wrong length": pickle.dumps(batch(data=np.zeros((2, 3071), np.uint8))),
    "data flattened": pickle.dumps(batch(data=np.zeros(2 * 3072, np.uint8))),
    "data of floats": pickle.dumps(batch(data=np.zeros((2, 3072), np.float32))),
    "data of objects": pickle.dumps(batch(data=np.zeros((2, 3072), object))),
    "data as a list": pickle.dumps(batch(data=[[0] * 3072] * 2)),
    "labels too few": pickle.dumps(batch(labels=[1])),
    "labels too many": pickle.dumps(batch(labels=[1, 2, 3])),
    "labels of text": pickle.dumps(batch(labels=["cat", "dog"])),
    "labels of floats": pickle.dumps(batch(labels=[1.5, 2.0])),
    "labels nested unevenly": pickle.dumps(batch(labels=[[1], [2, 3]])),
    "labels as a number": pickle.dumps(batch(labels=2)),
    "labels beyond 64 bits": pickle.dumps(batch(labels=[2 ** 70, 1])),
    "a foreign class": pickle.dumps(batch(labels=Exploit())),
}


@pytest.mark.parametrize("damage", list(CIFAR_DAMAGES))
def test_damaged_cifar_batch_is_refused_naming_it(tmp_path, damage):
    write_cifar_batches(tmp_path, train=10, test=2)
    path = tmp_path / "cifar10/cifar-10-batches-py/data_batch_3"
    path.write_bytes(CIFAR_DAMAGES[damage])
    refusal(lambda: datasets.load_cifar10_directory(tmp_path / "cifar10"), path)


def test_unreadable_cifar_batch_is_refused_naming_it(tmp_path):
    write_cifar_batches(tmp_path, train=10, test=2)
    path = tmp_path / "cifar10/cifar-10-batches-py/test_batch"
    unreadable(path)
    refusal(lambda: datasets.load_cifar10_directory(tmp_path / "cifar10"), path)


@pytest.mark.parametrize("name, image_shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)),
                                               ("cifar10", (32, 32, 3))])
def test_the_registry_knows_each_datasets_image_shape_and_ten_classes(name, image_shape):
    spec = datasets.get(name)
    assert spec.image_shape == image_shape and spec.num_classes == 10


def raw_data(name: str = "mnist", train: int = datasets.VALIDATION_SIZE + 2, test: int = 3) -> list:
    """A small valid dataset of the registered shape, as a list: x_train, y_train, x_test, y_test."""
    spec, rng = datasets.get(name), np.random.default_rng(3)

    def split(count: int) -> list[np.ndarray]:
        images = rng.integers(0, 256, (count, *spec.image_shape), dtype=np.uint8)
        return [images, np.arange(count) % spec.num_classes]
    return split(train) + split(test)


@pytest.mark.parametrize("name", list(datasets.DATASETS))
def test_every_dataset_accepts_its_own_data_and_refuses_a_label_past_its_classes(name):
    spec, raw = datasets.get(name), raw_data(name)
    datasets.validate(tuple(raw), spec, name)
    raw[3] = np.full_like(raw[3], spec.num_classes)
    refusal(lambda: datasets.validate(tuple(raw), spec, name), name)


def changed(index: int, change):
    """A builder of `raw_data()` with its array number `index` passed through `change`."""
    def build() -> list[np.ndarray]:
        raw = raw_data()
        raw[index] = change(raw[index])
        return raw
    return build


INVALID_DATA = {  # builders, so that the arrays exist only while their test runs
    "training label 10": changed(1, lambda y: np.where(y == 9, 10, y)),
    "test label 255": changed(3, lambda y: np.where(y == 0, 255, y).astype(np.uint8)),
    "negative label": changed(3, lambda y: y - 1),
    "labels of floats": changed(1, lambda y: y.astype(np.float32)),
    "labels with a second axis": changed(1, lambda y: y[:, None]),
    "images without a channel axis": changed(0, lambda x: x[..., 0]),
    "images of the wrong size": changed(0, lambda x: x[:, :27]),
    "images with three channels": changed(0, lambda x: np.repeat(x, 3, axis=3)),
    "images of floats": changed(0, lambda x: x.astype(np.float32)),
    "test images of another shape": changed(2, lambda x: x[:, :, :, [0, 0, 0]]),
    "more training images than labels": changed(1, lambda y: y[:-1]),
    "more test labels than images": changed(3, lambda y: np.append(y, 1)),
    "identical training images": changed(0, lambda x: np.broadcast_to(x[:1], x.shape)),
    "empty test split": lambda: raw_data(test=0),
    "no more training images than the validation split": lambda: raw_data(train=datasets.VALIDATION_SIZE),
}


@pytest.mark.parametrize("case", list(INVALID_DATA))
def test_invalid_data_is_refused_naming_its_source(case):
    raw = tuple(INVALID_DATA[case]())
    refusal(lambda: datasets.validate(raw, datasets.get("mnist"), "/data/mnist"), "/data/mnist")


def test_load_raw_refuses_a_label_outside_the_classes_naming_the_folder(tmp_path):
    folder = write_mnist(tmp_path, last_label=10)
    message = refusal(lambda: datasets.load_raw("mnist", tmp_path), folder)
    assert "label 10 is outside the classes 0..9" in message


def test_load_raw_refuses_cifar_batches_too_small_to_train_on_naming_the_folder(tmp_path):
    write_cifar_batches(tmp_path, train=50, test=10)
    refusal(lambda: datasets.load_raw("cifar10", tmp_path), tmp_path / "cifar10")


def test_load_raw_returns_valid_data_and_its_source(tmp_path):
    folder = write_mnist(tmp_path)
    (x_train, y_train, x_test, y_test), source = datasets.load_raw("mnist", tmp_path)
    assert source == str(folder) and x_train.shape == (datasets.VALIDATION_SIZE + 10, 28, 28, 1)
    assert len(y_train) == len(x_train) and x_test.shape == (10, 28, 28, 1) and len(y_test) == 10


def test_validation_is_the_first_images_and_statistics_come_from_the_training_split():
    rng = np.random.default_rng(1)
    raw = (rng.integers(0, 256, (120, 4, 4, 1), dtype=np.uint8), np.arange(120) % 10,
           rng.integers(0, 256, (30, 4, 4, 1), dtype=np.uint8), np.arange(30) % 10)
    splits = datasets.preprocess(raw, validation_size=20)
    assert splits.sizes() == {"train": 100, "validation": 20, "test": 30}
    assert list(splits.y_val) == list(raw[1][:20])
    np.testing.assert_allclose(splits.x_train.mean(axis=0), 0, atol=1e-5)
    assert splits.x_train.std() == pytest.approx(1, abs=1e-5)
    short = datasets.preprocess(raw, trainsize=10, validation_size=20)
    np.testing.assert_array_equal(short.x_train, splits.x_train[:10])
    np.testing.assert_array_equal(short.x_test, splits.x_test)


def test_data_directory_option_must_exist(tmp_path):
    with pytest.raises(datasets.DataNotFoundError, match="is not a directory"):
        datasets.resolve_data_directory(str(tmp_path / "missing"))


def test_environment_variable_is_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    assert datasets.resolve_data_directory(None) == tmp_path


def test_a_trainsize_beyond_the_training_split_is_refused():
    rng = np.random.default_rng(1)
    raw = (rng.integers(0, 256, (120, 4, 4, 1), dtype=np.uint8), np.arange(120) % 10,
           rng.integers(0, 256, (30, 4, 4, 1), dtype=np.uint8), np.arange(30) % 10)
    assert datasets.preprocess(raw, trainsize=100, validation_size=20).sizes()["train"] == 100
    with pytest.raises(datasets.DatasetError, match="--trainsize 101 is more than the 100 images of the training"):
        datasets.preprocess(raw, trainsize=101, validation_size=20)
