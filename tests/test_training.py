"""What each training type trains, on a real MNIST slice (two short epochs)."""
import json

import numpy as np
import pytest

import runlog
from masks.layers import masked_layers
from settings.types import TRAINING_TYPES
from tests.helpers import new_run

pytestmark = pytest.mark.slow  # every test reads the runs of every training type that the module's fixture trains

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
        # Zhou et al.'s supermask moves sigmoid(s) slowly from 1/2; on 80 steps it needs their large step size
        lr = "0.1" if name == "Supermask" else "0.003"
        run = new_run(output, data, "--traintype", name, "--trainsize", "1000", "--maxepochs", str(EPOCHS),
                      "--seed", "21", "--lr", lr)
        run.train()
        runs[name] = run
    return runs


@pytest.mark.parametrize("name", [name for name in TRAINING_TYPES if name != "Baseline"])
def test_connectivity_types_keep_weights_frozen_and_move_scores(trained_runs, name):
    run = trained_runs[name]
    initial = runlog.read_npz(run.files.weights)
    for layer in masked_layers(run.model):
        np.testing.assert_array_equal(np.asarray(layer.kernel), initial[layer.name])
    log = runlog.read_log(run.files.log_json)
    assert log["remainingWeightsPerLayer"][-1] != log["remainingWeightsPerLayer"][0], "the masks should have moved"
    assert log["changedWeights"][-1] > 0


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


def test_every_type_trains_on_bit_identical_frozen_weights(trained_runs):
    weights = {name: runlog.read_npz(run.files.weights) for name, run in trained_runs.items()}
    reference = weights["Baseline"]
    for name, arrays in weights.items():
        assert arrays.keys() == reference.keys() and all(np.array_equal(arrays[k], reference[k]) for k in arrays), name


def test_each_type_records_its_own_score_initialisation(trained_runs):
    recorded = {name: json.loads(run.files.config.read_text())["scoreInitializer"] for name, run in trained_runs.items()}
    assert recorded == {name: kind.score_initializer for name, kind in TRAINING_TYPES.items()}
    assert recorded["EdgePopup"] == "kaiming_uniform" and recorded["FreePruning"] == "scores"


def test_edge_popup_keeps_its_fraction_in_every_layer_and_every_epoch(trained_runs):
    run = trained_runs["EdgePopup"]
    config = json.loads(run.files.config.read_text())
    assert config["keep"] == 0.5 and run.files.directory.name.startswith("topk_K0.5_")
    log = runlog.read_log(run.files.log_json)
    for epoch in log["remainingWeightsPerLayer"]:
        assert [counts[2] for counts in epoch] == [117_600, 15_000, 500]  # round(0.5 x each layer)


def test_signed_supermask_logs_pruned_and_flipped_connections(trained_runs):
    run = trained_runs["SignedSupermask"]
    log = runlog.read_log(run.files.log_json)
    negative, zero = (sum(counts[i] for counts in log["remainingWeightsPerLayer"][-1]) for i in (0, 1))
    assert negative > 0 and zero > 0 and log["changedWeights"][-1] == negative + zero
    masks = runlog.read_npz(run.files.masks)
    assert set(np.unique(np.concatenate([m.ravel() for m in masks.values()]))) == {-1.0, 0.0, 1.0}


def test_supermask_saves_its_evaluation_sample_as_its_masks(trained_runs):
    run = trained_runs["Supermask"]
    masks = runlog.read_npz(run.files.masks)
    for layer in masked_layers(run.model):
        np.testing.assert_array_equal(masks[layer.name], np.asarray(layer.mask()))
        assert set(np.unique(masks[layer.name])) == {0.0, 1.0}
        assert int(np.asarray(layer.draws)) == EPOCHS * 40  # one draw per training step (1000 images / 25)
