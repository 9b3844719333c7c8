"""Study runners on real MNIST runs: several at once, several runners at once, a killed runner, Ray.

One tiny study (LeNet, two training types x two seeds, one epoch on 2,000 images), written outside
`experiments/` as a user's own grid would be, serves every test here.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import experiments
import runlog

TINY_STUDY = """description = "two training types x two seeds, one epoch on 2,000 images"
[grid]
traintype = ["FreePruning", "SignFlipping"]
seed = [1, 2]
[fixed]
nettype = "LeNet"
maxepochs = 1
trainsize = 2000
"""


def runner(*args: str, data: Path, **popen) -> subprocess.Popen:
    """`python -m experiments ARGS` as a user starts it, output captured."""
    return subprocess.Popen([sys.executable, "-m", "experiments", *args], cwd=experiments.REPO_ROOT,
                            env={**os.environ, "MASKTRAINER_DATA": str(data)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def finished_runs(outputs: Path) -> list[dict]:
    configs = [runlog.read_json(path) for path in outputs.rglob("Config_ID*.json")]
    assert all(config["status"] == "finished" for config in configs)
    return configs


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("my-grids") / "tiny.toml"
    path.write_text(TINY_STUDY)
    return path


@pytest.fixture(scope="module")
def two_runners(tiny_study, tmp_path_factory) -> tuple[Path, list[str]]:
    """Two runners, two jobs each, started together on one output path (as two shells or two Slurm tasks)."""
    from tests.conftest import data_directory
    if data_directory() is None:
        pytest.skip("no MNIST found: set MASKTRAINER_DATA to a folder holding mnist/*.gz")
    outputs = tmp_path_factory.mktemp("shared") / "Outputs"
    processes = [runner("run", str(tiny_study), "--outputpath", str(outputs), "--jobs", "2", "--stale-after", "60",
                        data=data_directory()) for _ in range(2)]
    results = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    return outputs, results


@pytest.mark.slow
def test_two_runners_started_together_train_each_point_once(two_runners):
    outputs, results = two_runners
    configs = finished_runs(outputs)
    assert sorted((config["traintype"], config["seed"]) for config in configs) == [
        ("FreePruning", 1), ("FreePruning", 2), ("SignFlipping", 1), ("SignFlipping", 2)]
    closing = [output.splitlines()[-1] for output in results]
    assert all(line.startswith("study tiny: 4/4 runs finished; ") for line in closing), closing
    assert sum(int(line.split("; ")[1].split()[0]) for line in closing) == 4  # "N trained here"
    assert not list(outputs.rglob("Claim_*"))


@pytest.mark.slow  # it reads the study the two runners trained
def test_jobs_2_trains_two_runs_at_a_time_and_completes_the_study(two_runners):
    outputs, results = two_runners
    assert all("study tiny: training 2 at a time" in output for output in results)
    assert all("4/4 runs finished" in output.splitlines()[-1] for output in results)


@pytest.mark.slow  # it reads the study the two runners trained
def test_own_study_file_is_tabulated_and_plotted(two_runners, tiny_study, tmp_path):
    outputs, _ = two_runners
    table = subprocess.run([sys.executable, "-m", "experiments", "table", str(tiny_study), "--outputpath",
                            str(outputs)], cwd=experiments.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and table.stderr == ""
    assert "| FreePruning | 2 | 1 |" in table.stdout and "| SignFlipping | 2 | 1 |" in table.stdout
    for _ in range(2):  # the second plot replaces the first one's view
        plot = subprocess.run([sys.executable, "-m", "experiments", "plot", str(tiny_study), "--outputpath",
                               str(outputs), "--out", str(tmp_path / "report")], cwd=experiments.REPO_ROOT,
                              capture_output=True, text=True, timeout=300)
        assert plot.returncode == 0, plot.stderr
    summary = (tmp_path / "report" / "tiny" / "all" / "Summary.md").read_text()
    assert summary.count("| 2 | 1 |") == 2
    assert len(finished_runs(outputs)) == 4


@pytest.mark.slow
def test_a_killed_runner_leaves_a_claim_that_the_next_runner_takes_over_once_stale(tmp_path, mnist_directory):
    from tests.helpers import comparable_log
    study = tmp_path / "one.toml"
    study.write_text('[grid]\nseed = [3]\n[fixed]\nnettype = "LeNet"\ntraintype = "MinPruning"\n'
                     'maxepochs = 3\ntrainsize = 2000\n')
    reference = runner("run", str(study), "--outputpath", str(tmp_path / "reference"), data=mnist_directory)
    killed = runner("run", str(study), "--outputpath", str(tmp_path / "killed"), "--stale-after", "3",
                    data=mnist_directory)
    for line in killed.stdout:  # printed after the epoch's log and checkpoint are written
        if "epoch   1/3" in line:
            (claim,) = (tmp_path / "killed").rglob("Claim_*_g0.json")
            os.kill(json.loads(claim.read_text())["trainerPid"], signal.SIGKILL)  # a node lost, a job killed:
            os.kill(killed.pid, signal.SIGKILL)  # the trainer and its runner at once
            break
    killed.communicate(timeout=60)
    # As if the dead runner had been on another machine: only the stale time frees its claim.
    runlog.write_json(claim, {**json.loads(claim.read_text()), "host": "another-host"})

    # Longer than `run` takes to check the study (it loads Keras), so the taker first finds the claim fresh.
    taker = runner("run", str(study), "--outputpath", str(tmp_path / "killed"), "--stale-after", "15",
                   data=mnist_directory)
    output = taker.communicate(timeout=300)[0]
    assert taker.returncode == 0, output
    assert "[1/1] claimed by another-host" in output and "[1/1] resume: seed=3" in output
    assert "epoch   1/3" not in output and "epoch   3/3" in output
    assert output.splitlines()[-1].startswith("study one: 1/1 runs finished; 1 trained here")
    assert not list((tmp_path / "killed").rglob("Claim_*"))

    reference.communicate(timeout=300)
    (resumed,), (expected,) = ([runlog.RunFiles.from_config_path(path) for path in (tmp_path / name).rglob(
        "Config_ID*.json")] for name in ("killed", "reference"))
    assert comparable_log(resumed.log_json) == comparable_log(expected.log_json)
    masks, expected_masks = runlog.read_npz(resumed.masks), runlog.read_npz(expected.masks)
    assert masks.keys() == expected_masks.keys()
    assert all(np.array_equal(masks[key], expected_masks[key]) for key in masks)


@pytest.mark.slow
def test_ray_local_cluster_completes_the_study(tiny_study, tmp_path, mnist_directory):
    pytest.importorskip("ray")
    process = runner("run", str(tiny_study), "--outputpath", str(tmp_path / "Outputs"), "--ray", "--ray-cpus", "1",
                     data=mnist_directory)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output
    assert "training as Ray tasks of 1 CPU" in output
    assert output.splitlines()[-1].startswith("study tiny: 4/4 runs finished; 4 trained here")
    assert len(finished_runs(tmp_path / "Outputs")) == 4
