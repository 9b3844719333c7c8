"""The checkpoint of the latest finished epoch: layer weights and optimizer state in one `.npz` (no pickle).

The epoch's shuffle is derived from (seed, epoch), so no random-generator state needs saving: restoring the
variables and continuing with the next epoch reproduces an uninterrupted run exactly.
"""
from pathlib import Path

import keras
import numpy as np

import runlog


def save(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer, epoch: int) -> None:
    arrays = {f"model/{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.weights)}
    arrays.update({f"optimizer/{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)})
    arrays["epoch"] = np.array(epoch)
    runlog.write_npz(path, arrays)


def restore(path: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> int:
    """Load a checkpoint into a freshly built model and optimizer; returns its epoch."""
    arrays = runlog.read_npz(path)
    for prefix, variables in (("model", model.weights), ("optimizer", optimizer.variables)):
        if sum(key.startswith(prefix + "/") for key in arrays) != len(variables):
            raise runlog.RunLogError(f"{path}: does not match the model built from its configuration")
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"{prefix}/{i}"])
    return int(arrays["epoch"])
