"""Reading the standard formats, refusing unsafe pickles, the validation split and the normalisation."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

import datasets


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_cifar_batches(root, train: int, test: int, payload=None) -> None:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in [(f"data_batch_{i}", train // 5) for i in range(1, 6)] + [("test_batch", test)]:
        batch = payload or {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                            b"labels": [int(v) for v in rng.integers(0, 10, count)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)


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
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(path)


def test_cifar_batches_are_read_as_height_width_channels(tmp_path):
    write_cifar_batches(tmp_path, train=50, test=10)
    x_train, y_train, x_test, y_test = datasets.load_cifar10_directory(tmp_path / "cifar10")
    assert x_train.shape == (50, 32, 32, 3) and x_test.shape == (10, 32, 32, 3) and len(y_train) == 50
    with open(tmp_path / "cifar10/cifar-10-batches-py/data_batch_1", "rb") as f:
        first_row = pickle.load(f)[b"data"][0]  # the test itself wrote this file
    np.testing.assert_array_equal(x_train[0, :, :, 0].ravel(), first_row[:1024])  # red plane


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_batch_with_foreign_objects_is_refused(tmp_path):
    write_cifar_batches(tmp_path, train=5, test=1, payload={b"data": Exploit(), b"labels": [0]})
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        datasets.load_cifar10_directory(tmp_path / "cifar10")


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
