"""What each training type trains, on a real MNIST slice (two short epochs)."""
import numpy as np
import pytest

import runlog
from masks.layers import masked_layers
from training.types import TRAINING_TYPES
from tests.helpers import new_run

EPOCHS = 2


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, request):
    """One finished run per training type, sharing a seed and an MNIST slice."""
    from tests.conftest import data_directory
    data = data_directory()
    if data is None:
        pytest.skip("no MNIST found: set MASKTRAINER_DATA to a folder holding mnist/*.gz")
    runs = {}
    for name in TRAINING_TYPES:
        output = tmp_path_factory.mktemp(name)
        run = new_run(output, data, "--traintype", name, "--trainsize", "1000", "--maxepochs", str(EPOCHS),
                      "--seed", "21", "--lr", "0.003")
        run.train()
        runs[name] = run
    return runs


@pytest.mark.parametrize("name", [name for name in TRAINING_TYPES if name != "Baseline"])
def test_connectivity_types_keep_weights_frozen_and_move_scores(trained_runs, name):
    run = trained_runs[name]
    initial = runlog.read_npz(run.files.weights)
    for layer in masked_layers(run.model):
        np.testing.assert_array_equal(np.asarray(layer.kernel), initial[layer.name])
        assert not np.all(np.asarray(layer.scores) > 0), "some connections should have changed"
    assert runlog.read_log(run.files.log_json)["changedWeights"][-1] > 0


def test_baseline_trains_the_weights_and_changes_no_mask(trained_runs):
    run = trained_runs["Baseline"]
    initial = runlog.read_npz(run.files.weights)
    assert all(not np.array_equal(np.asarray(layer.kernel), initial[layer.name])
               for layer in masked_layers(run.model))
    log = runlog.read_log(run.files.log_json)
    assert log["changedWeights"] == [0] * (EPOCHS + 1)
    assert log["remainingWeights"][-1] == log["totalWeights"]


@pytest.mark.parametrize("free, minimal", [("FreePruning", "MinPruning"), ("SignFlipping", "MinFlipping")])
def test_min_types_change_fewer_weights_than_free_types(trained_runs, free, minimal):
    changed = {name: runlog.read_log(trained_runs[name].files.log_json)["changedWeights"][-1]
               for name in (free, minimal)}
    assert changed[minimal] < changed[free]


@pytest.mark.parametrize("name", list(TRAINING_TYPES))
def test_every_type_learns_well_above_chance(trained_runs, name):
    accuracy = runlog.read_log(trained_runs[name].files.log_json)["testAccuracy"]
    assert accuracy[0] < 0.25 and accuracy[-1] > 0.6


def test_flipping_masks_are_signs_and_pruning_masks_are_binary(trained_runs):
    for name, values in (("SignFlipping", {-1.0, 1.0}), ("FreePruning", {0.0, 1.0})):
        masks = runlog.read_npz(trained_runs[name].files.masks)
        assert set(np.unique(np.concatenate([m.ravel() for m in masks.values()]))) <= values
