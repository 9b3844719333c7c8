"""A ResNet20 trained for one epoch on 200 random CIFAR-layout images, in both BatchNorm modes, then exported."""
import json

import keras
import numpy as np
import pytest

import Exporter
import networks
import runlog
from tests.helpers import new_run, small_resnet_jit, write_cifar_batches

pytestmark = pytest.mark.slow  # every test reads ResNet20 runs that the module's fixtures train


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    write_cifar_batches(data, train=5200, test=50)  # 5,000 validation, 200 to train on
    return data


@pytest.fixture(scope="module")
def trained_runs(cifar, tmp_path_factory) -> dict:
    """One finished run per BatchNorm mode, in the ResNet recipe (augmented, `steps`) but for one epoch."""
    runs = {}
    for batchnorm in networks.BATCHNORM_MODES:
        runs[batchnorm] = new_run(tmp_path_factory.mktemp(batchnorm), cifar, "--nettype", "ResNet20",
                                  "--batchnorm", batchnorm, "--maxepochs", "1", "--seed", "4", "--lr", "0.01",
                                  *small_resnet_jit())
        runs[batchnorm].train()
    return runs


def batchnorm_variables(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights if v.path.startswith("bn_")}


@pytest.mark.parametrize("batchnorm", networks.BATCHNORM_MODES)
def test_resnet20_trains_an_epoch_and_its_model_keeps_batchnorm_statistics(trained_runs, batchnorm):
    run = trained_runs[batchnorm]
    log = runlog.read_log(run.files.log_json)
    assert log["totalWeights"] == 270_896 and len(log["remainingWeightsPerLayer"][1]) == 22
    assert log["remainingWeights"][1] < log["remainingWeights"][0]
    config = json.loads(run.files.config.read_text())  # the authors' recipe, from the registry, and the mode
    assert {key: config[key] for key in ("optimizer", "lrschedule", "batchsize", "augment", "batchnorm")} == \
        {"optimizer": "adam", "lrschedule": "steps", "batchsize": 64, "augment": True, "batchnorm": batchnorm}
    assert run.files.directory.name == "mask_relu_he_LR0.01_steps1_aug" + ("_BNfrozen" if batchnorm == "frozen" else "")
    trained = batchnorm_variables(run.model)
    assert any(name.endswith("gamma") for name in trained) == (batchnorm == "trainable")
    assert not np.array_equal(trained["bn_1/moving_mean"], np.zeros_like(trained["bn_1/moving_mean"]))
    saved = batchnorm_variables(keras.saving.load_model(run.files.model))
    assert saved.keys() == trained.keys() and all(np.array_equal(saved[key], trained[key]) for key in saved)


@pytest.mark.parametrize("batchnorm", networks.BATCHNORM_MODES)
def test_resnet20_run_exports_and_compacts_to_its_logged_accuracy(tmp_path, trained_runs, cifar, capsys, batchnorm):
    run = trained_runs[batchnorm]
    logged = runlog.read_log(run.files.log_json)["testAccuracy"][-1]
    for name, flags in (("full", []), ("compact", ["--compact"])):
        out = tmp_path / f"{name}.keras"
        assert Exporter.main([str(run.files.config), "--out", str(out), "--verify", "--datadir", str(cifar),
                              *flags]) == 0, capsys.readouterr().err
        report = json.loads(out.with_suffix(".json").read_text())
        assert report["verify"]["testAccuracy"] == logged
        assert report["parameters"] == {"before": 270_896, "after": 270_896}
    full, compact = (keras.saving.load_model(tmp_path / f"{name}.keras") for name in ("full", "compact"))
    raw = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(full(raw)), keras.ops.convert_to_numpy(compact(raw)))


def test_plotter_draws_and_tabulates_a_resnet20_run(tmp_path, trained_runs, monkeypatch):
    """Its 22 masked layers as a heat map with a named row each; the table's effective size is the full one."""
    import Plotter
    figures = []
    monkeypatch.setattr(Plotter, "save", lambda figure, stem, show: figures.append(figure))
    directory = trained_runs["trainable"].files.directory
    assert Plotter.main([str(directory), "--out", str(tmp_path / "Comparison")]) == 0
    labels = [label.get_text() for label in figures[1].axes[0].get_yticklabels()]
    assert len(labels) == 22 and labels[0] == "conv_1" and "shortcut_10" in labels and labels[-1] == "dense_22"
    assert "270,896 of 270,896 (100.0%)" in (tmp_path / "Summary.md").read_text()
