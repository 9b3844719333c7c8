"""Today's networks train bit for bit as they did before the ResNets and Conv8 joined the registry: one short
epoch each of LeNet (MNIST slice) and Conv2 (a random CIFAR-layout slice), checked against values recorded with
the code of commit 7f8cced, per backend (their float orders differ)."""
import hashlib

import keras
import numpy as np
import pytest

import runlog
from tests.helpers import new_run
from tests.test_datasets import write_cifar_batches

# backend -> network -> (testLoss, testAccuracy, remainingWeights, digest of the masks, digest of the weights)
RECORDED = {
    "tensorflow": {
        "LeNet": ([3.2709962890625, 2.434469921875], [0.1097, 0.1791], [266200, 264888],
                  "edd98ee485b8e60e", "352b7b011c052e16"),
        "Conv2": ([4.08629638671875, 2.3024798583984376], [0.06, 0.08], [4300992, 2742083],
                  "cefe96b32f9dd56d", "6c2e91623efcae6d"),
    },
    "jax": {
        "LeNet": ([3.27099609375, 2.4344697265625], [0.1097, 0.1791], [266200, 264888],
                  "edd98ee485b8e60e", "352b7b011c052e16"),
        "Conv2": ([4.08629638671875, 14.82865234375], [0.06, 0.08], [4300992, 2610102],
                  "8b9da1900155ea83", "6c2e91623efcae6d"),
    },
}


def digest(path) -> str:
    """The first 16 hex digits of a SHA-256 over a run file's arrays, by key."""
    arrays = runlog.read_npz(path)
    hashed = hashlib.sha256()
    for key in sorted(arrays):
        hashed.update(key.encode())
        hashed.update(np.ascontiguousarray(arrays[key]).tobytes())
    return hashed.hexdigest()[:16]


def trained(output, data, *flags: str) -> tuple:
    run = new_run(output, data, "--maxepochs", "1", "--seed", "7", *flags)
    run.train()
    log = runlog.read_log(run.files.log_json)
    return (log["testLoss"], log["testAccuracy"], log["remainingWeights"],
            digest(run.files.masks), digest(run.files.weights))


def recorded(network: str) -> tuple:
    backend = keras.backend.backend()
    if backend not in RECORDED:
        pytest.skip(f"no values recorded on {backend}")
    return RECORDED[backend][network]


def test_lenet_epoch_is_unchanged(tmp_path, mnist_directory):
    assert trained(tmp_path, mnist_directory, "--trainsize", "500") == recorded("LeNet")


@pytest.mark.slow
def test_conv2_epoch_is_unchanged(tmp_path):
    write_cifar_batches(tmp_path / "data", train=5100, test=50)  # 5,000 validation, 100 to train on
    assert trained(tmp_path / "out", tmp_path / "data", "--nettype", "Conv2", "--lr", "0.05") == recorded("Conv2")
