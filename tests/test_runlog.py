"""Run files: damaged or invalid ones refused in one line naming them, failed writes named and cleaned up."""
import errno
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import runlog
from tests.helpers import RANDOM_BYTES, unreadable
from tests.helpers import refusal as one_line_refusal

REPO_ROOT = Path(__file__).resolve().parent.parent


def refusal(call, path: Path) -> str:
    """The RunLogError message of `call()`: one line naming `path`, with no advice to allow pickle."""
    message = one_line_refusal(call, path, runlog.RunLogError)
    assert "allow_pickle" not in message, message
    return message


def npz_bytes(save=np.savez, **arrays) -> bytes:
    buffer = io.BytesIO()
    save(buffer, **arrays)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


VALID_NPZ = npz_bytes(a=np.arange(50.0), b=np.ones((3, 3), np.float32))
COMPRESSED_NPZ = npz_bytes(np.savez_compressed, a=np.arange(500.0))


def central_entry_patched(offset: int, value: int) -> bytes:
    """VALID_NPZ with a 2-byte field of its first central-directory entry replaced (8: flags, 10: method)."""
    at = VALID_NPZ.index(b"PK\x01\x02") + offset
    return VALID_NPZ[:at] + value.to_bytes(2, "little") + VALID_NPZ[at + 2:]


NPZ_DAMAGES = {
    "empty": b"",
    "one byte": VALID_NPZ[:1],
    "cut in half": VALID_NPZ[:len(VALID_NPZ) // 2],
    "cut inside the central directory": VALID_NPZ[:-30],
    "last byte cut off": VALID_NPZ[:-1],
    "random bytes": RANDOM_BYTES,
    "text": b"epoch,loss\n0,1.0\n",
    "a pickle": pickle.dumps({"a": np.arange(3)}),
    "a single .npy array": npy_bytes(np.arange(3)),
    "array data overwritten": VALID_NPZ[:300] + b"\xff" * 10 + VALID_NPZ[310:],
    "compressed data overwritten": COMPRESSED_NPZ[:100] + b"\xff" * 10 + COMPRESSED_NPZ[110:],
    "an encrypted member": central_entry_patched(8, 1),
    "an unknown compression method": central_entry_patched(10, 99),
    "a member that is not .npy": zip_bytes({"a.npy": npy_bytes(np.arange(3)), "notes.txt": b"hello"}),
    "a .npy member that is not an array": zip_bytes({"a.npy": b"not an array"}),
    "a .npy member with a broken header": zip_bytes({"a.npy": npy_bytes(np.arange(3))[:20]}),
    "object arrays": npz_bytes(a=np.arange(3), b=np.array([{"x": 1}, None], dtype=object)),
    "objects inside a structured array": npz_bytes(a=np.zeros(2, dtype=[("x", float), ("y", object)])),
}


@pytest.mark.parametrize("damage", list(NPZ_DAMAGES))
def test_damaged_npz_is_refused_naming_it(tmp_path, damage):
    path = tmp_path / "Weights_IDabc1234.npz"
    path.write_bytes(NPZ_DAMAGES[damage])
    refusal(lambda: runlog.read_npz(path), path)


@pytest.mark.parametrize("damage", ["object arrays", "objects inside a structured array"])
def test_object_arrays_are_refused_as_pickled_data(tmp_path, damage):
    path = tmp_path / "Masks_IDabc1234.npz"
    path.write_bytes(NPZ_DAMAGES[damage])
    assert "object arrays (pickled data), which are refused" in refusal(lambda: runlog.read_npz(path), path)


def test_npz_that_is_missing_a_directory_or_unreadable_is_refused_naming_it(tmp_path):
    missing, directory, failing = (tmp_path / f"{name}.npz" for name in ("missing", "folder", "failing"))
    directory.mkdir()
    unreadable(failing)
    assert "file not found" in refusal(lambda: runlog.read_npz(missing), missing)
    refusal(lambda: runlog.read_npz(directory), directory)
    refusal(lambda: runlog.read_npz(failing), failing)


def test_npz_round_trip_keeps_every_array_and_the_key_order(tmp_path):
    arrays = {"model/dense_1/kernel": np.arange(6.0).reshape(2, 3), "epoch": np.array(4),
              "mask": np.ones(2, bool)}
    runlog.write_npz(tmp_path / "x.npz", arrays)
    read = runlog.read_npz(tmp_path / "x.npz")
    assert list(read) == list(arrays)
    for key, array in arrays.items():
        np.testing.assert_array_equal(read[key], array)
        assert read[key].dtype == array.dtype


JSON_DAMAGES = {
    "empty": b"",
    "truncated": b'{"a": [1, 2',
    "not UTF-8": b'{"a": "\xff\xfe"}',
    "nested beyond any reader": b"[" * 100_000 + b"]" * 100_000,
    "a list": b"[1, 2]",
    "NaN": b'{"a": [0.5, NaN]}',
    "Infinity": b'{"a": Infinity}',
    "-Infinity": b'{"a": {"b": -Infinity}}',
    "a number beyond float range": b'{"a": 1e999}',
    "a negative number beyond float range": b'{"a": [-1e999]}',
}


@pytest.mark.parametrize("damage", list(JSON_DAMAGES))
def test_damaged_json_is_refused_naming_it(tmp_path, damage):
    path = tmp_path / "Config_IDabc1234.json"
    path.write_bytes(JSON_DAMAGES[damage])
    refusal(lambda: runlog.read_json(path), path)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_named(tmp_path, constant):
    path = tmp_path / "TrainLogs_IDabc1234.json"
    path.write_text(f'{{"testAccuracy": [0.1, {constant}]}}')
    assert constant in refusal(lambda: runlog.read_json(path), path)


def test_json_that_is_missing_a_directory_or_unreadable_is_refused_naming_it(tmp_path):
    missing, directory, failing = (tmp_path / f"{name}.json" for name in ("missing", "folder", "failing"))
    directory.mkdir()
    unreadable(failing)
    assert "file not found" in refusal(lambda: runlog.read_json(missing), missing)
    refusal(lambda: runlog.read_json(directory), directory)
    assert "Input/output error" in refusal(lambda: runlog.read_json(failing), failing)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_json_writer_refuses_non_finite_numbers_and_keeps_the_previous_file(tmp_path, value):
    path = tmp_path / "TrainLogs_IDabc1234.json"
    runlog.write_json(path, {"testAccuracy": [0.1]})
    refusal(lambda: runlog.write_json(path, {"testAccuracy": [0.1, value]}), path)
    assert runlog.read_json(path) == {"testAccuracy": [0.1]}
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file is left behind"


def valid_log(epochs: int = 3) -> dict:
    """A log as the trainer writes it: two masked layers of 20 and 10 connections."""
    per_layer = [[[0, 2 * epoch, size - 2 * epoch, 0, 2 * epoch, size - 2 * epoch] for size in (20, 10)]
                 for epoch in range(epochs)]
    log = {key: [0.5] * epochs for key in runlog.EPOCH_KEYS}
    return {**log, "remainingWeights": [30 - 4 * epoch for epoch in range(epochs)], "totalWeights": 30,
            "remainingWeightsPerLayer": per_layer, "layerNames": ["dense_1", "dense_2"], "status": "running"}


def with_epoch(key: str, epoch: int, value) -> tuple[str, list]:
    """`key` and its valid per-epoch list with one epoch's entry replaced by `value`."""
    values = list(valid_log()[key])
    values[epoch] = value
    return key, values


def first_layer_counts(epoch: int, counts: list) -> tuple[str, list]:
    """'remainingWeightsPerLayer' with one epoch's counts of the first layer replaced by `counts`."""
    second_layer = valid_log()["remainingWeightsPerLayer"][epoch][1]
    return with_epoch("remainingWeightsPerLayer", epoch, [counts, second_layer])


INVALID_VALUES = {
    "text accuracy": with_epoch("testAccuracy", 0, "high"),
    "bool loss": with_epoch("trainLoss", 1, True),
    "null loss": with_epoch("valLoss", 2, None),
    "nested seconds": with_epoch("epochSeconds", 1, [1.0]),
    "object count": with_epoch("changedWeights", 0, {"n": 1}),
    "integer beyond float range": with_epoch("remainingWeights", 2, 10 ** 400),
    "total zero": ("totalWeights", 0),
    "total negative": ("totalWeights", -30),
    "total fractional": ("totalWeights", 30.5),
    "total bool": ("totalWeights", True),
    "total text": ("totalWeights", "30"),
    "total in a list": ("totalWeights", [30]),
    "epoch of layers not a list": with_epoch("remainingWeightsPerLayer", 1, 5),
    "layer not a list": with_epoch("remainingWeightsPerLayer", 1, [[0, 0, 20, 0, 0, 20], 7]),
    "five counts": first_layer_counts(0, [0, 0, 20, 0, 0]),
    "seven counts": first_layer_counts(0, [0, 0, 20, 0, 0, 20, 0]),
    "negative count": first_layer_counts(2, [0, -1, 20, 0, 0, 20]),
    "fractional count": first_layer_counts(2, [0, 0.5, 20, 0, 0, 20]),
    "bool count": first_layer_counts(2, [0, False, 20, 0, 0, 20]),
    "text count": first_layer_counts(2, [0, "0", 20, 0, 0, 20]),
    "a layer lost in one epoch": with_epoch("remainingWeightsPerLayer", 1, [[0, 0, 20, 0, 0, 20]]),
    "layer names not a list": ("layerNames", "dense_1"),
    "layer names not text": ("layerNames", [1, 2]),
    "a layer name too few": ("layerNames", ["dense_1"]),
}


@pytest.mark.parametrize("case", list(INVALID_VALUES))
def test_malformed_log_values_are_refused_naming_the_file_and_key(tmp_path, case):
    key, value = INVALID_VALUES[case]
    path = tmp_path / "TrainLogs_IDabc1234.json"
    runlog.write_json(path, {**valid_log(), key: value})
    assert f"'{key}'" in refusal(lambda: runlog.read_log(path), path)


def test_valid_log_is_read_back_unchanged(tmp_path):
    path = tmp_path / "TrainLogs_IDabc1234.json"
    runlog.write_json(path, valid_log())
    assert runlog.read_log(path) == valid_log()


def write_run(directory: Path, run_id: str) -> runlog.RunFiles:
    files = runlog.RunFiles(directory, run_id)
    runlog.write_json(files.config, {"nettype": "LeNet", "runId": run_id})
    runlog.write_log(files, valid_log())
    return files


@pytest.mark.parametrize("damage", ["truncated", "NaN", "a list", "empty"])
def test_read_runs_refuses_a_damaged_configuration_naming_it(tmp_path, damage):
    write_run(tmp_path, "aaaaaaa")
    files = write_run(tmp_path, "bbbbbbb")
    files.config.write_bytes(JSON_DAMAGES[damage])
    refusal(lambda: runlog.read_runs(tmp_path), files.config)


WRITE_FAILURES = {  # what fails, where: (function patched, errno)
    "disk full while flushing": ("os.fsync", errno.ENOSPC),
    "read-only file system at the rename": ("os.replace", errno.EROFS),
    "no permission to create the temporary file": ("tempfile.mkstemp", errno.EACCES),
}


WRITERS = {"json": lambda path: runlog.write_json(path, {"a": 2}),
           "npz": lambda path: runlog.write_npz(path, {"a": np.arange(2)})}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("failure", list(WRITE_FAILURES))
def test_failed_write_names_the_file_keeps_the_old_one_and_leaves_no_temporary(tmp_path, monkeypatch, failure,
                                                                               writer):
    function, code = WRITE_FAILURES[failure]

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    path = tmp_path / "TrainLogs_IDabc1234.json"
    path.write_text("previous")
    monkeypatch.setattr(function, fail)
    with pytest.raises(OSError) as raised:
        WRITERS[writer](path)
    message = str(raised.value)
    assert raised.value.errno == code and str(path) in message and os.strerror(code) in message, message
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file is left behind"


def test_write_below_a_file_names_the_file_it_could_not_write(tmp_path):
    (tmp_path / "outputs").write_text("a file where a folder should be")
    path = tmp_path / "outputs" / "Config_IDabc1234.json"
    with pytest.raises(OSError) as raised:
        runlog.write_json(path, {"a": 1})
    assert raised.value.errno is not None and str(path) in str(raised.value)


KILLED_DURING_WRITE = """
import os, signal, sys
from pathlib import Path
import runlog
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
runlog.write_json(runlog.RunFiles(Path(sys.argv[1]), sys.argv[2]).config, {"a": 1})
"""


def leftover_of_killed_write(directory: Path, run_id: str) -> Path:
    """The temporary file that a write of `run_id`'s configuration leaves when kill -9 ends it mid-write."""
    before = set(directory.iterdir())
    process = subprocess.run([sys.executable, "-c", KILLED_DURING_WRITE, str(directory), run_id],
                             cwd=REPO_ROOT)
    assert process.returncode == -9
    (leftover,) = set(directory.iterdir()) - before
    return leftover


def test_clean_temporaries_removes_this_runs_leftovers_only(tmp_path):
    mine = write_run(tmp_path, "abc1234")
    write_run(tmp_path, "def5678")
    leftovers = {leftover_of_killed_write(tmp_path, "abc1234"),
                 tmp_path / ".TrainLogs_IDabc1234.csv.k3_x9a0q.tmp",
                 tmp_path / ".Model_IDabc1234.keras.zz01ab_c.tmp"}
    others = {leftover_of_killed_write(tmp_path, "def5678"),  # another run of the configuration, writing now
              tmp_path / ".Config_IDabc12345.json.k3x9a0qz.tmp",  # a run whose id starts with this one's
              tmp_path / ".Config_IDabc1234.json.bak", tmp_path / "notes.tmp"}
    for path in leftovers | others:
        if not path.exists():
            path.write_text("partial")
    kept = set(tmp_path.iterdir()) - leftovers
    assert sorted(runlog.clean_temporaries(mine)) == sorted(leftovers)
    assert set(tmp_path.iterdir()) == kept and others <= kept
    assert runlog.read_log(mine.log_json) == valid_log()


def test_clean_temporaries_of_a_run_without_a_directory_is_nothing(tmp_path):
    assert runlog.clean_temporaries(runlog.RunFiles(tmp_path / "missing", "abc1234")) == []


@pytest.mark.parametrize("key, value", [("changedMeans", 5), ("changedMeans", None), ("traintype", 7),
                                        ("traintype", "FreePrunning")])
def test_runs_whose_record_names_no_known_type_are_refused_by_the_readers(tmp_path, key, value):
    from tests.helpers import POINT, write_run
    config = write_run(tmp_path, POINT, "abc1234", "finished", 2)
    assert [run.config["changedMeans"] for run in runlog.read_runs(config.parent)] == ["flipped"]
    write_run(tmp_path, POINT, "abc1234", "finished", 2, **{key: value})
    with pytest.raises(runlog.RunLogError, match=f"{config}: {key} .* is not one of"):
        runlog.read_runs(config.parent)


def test_a_fifo_in_place_of_a_run_file_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "Config_IDabc1234.json")
    with pytest.raises(runlog.RunLogError, match="not a regular file"):
        runlog.read_json(tmp_path / "Config_IDabc1234.json")
