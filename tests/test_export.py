"""Exporting a trained run as plain Keras: same predictions, compaction that changes nothing, a file that loads
without this project, the logged accuracy on real MNIST, and one-line refusals of bad input."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import Exporter
import datasets
import initializers
import networks
import runlog
from settings.config import RunConfig
from export import ACTIVATION_AT_ZERO, compact_kernels, effective_size
from export.plain_model import plain_model
from datasets.preprocessing import Preprocessing, network_input
from export.trained_run import effective_kernels, network_input_scale
from masks.layers import MaskedDense, masked_layers
from settings import types as training_types
from training import provenance, statistics
from settings.config import RunConfig

INPUT_SHAPES = {"LeNet": (28, 28, 1), **{name: (32, 32, 3) for name in networks.NETWORKS if name != "LeNet"}}
TYPE_AND_MASK = [(name, mask) for name, kind in training_types.TRAINING_TYPES.items() for mask in kind.mask_types]
# Every type on the first four networks; on Conv8 and ResNet20 (ResNet20 stands for its builder's other depths)
# Baseline and one type of each kind of mask, which keeps the rivals' slow eager masks off the large networks
EXPORT_NETWORKS = ("Conv2", "Conv4", "Conv6", "LeNet", "Conv8", "ResNet20")
EXPORT_CASES = ([(nettype, *pair) for nettype in EXPORT_NETWORKS[:4] for pair in TYPE_AND_MASK]
                + [(nettype, *pair) for nettype in EXPORT_NETWORKS[4:]
                   for pair in (("Baseline", "mask"), ("FreePruning", "mask"), ("SignFlipping", "flip"))])
RUN_ID = "abc1234"
# TensorFlow divides exactly as NumPy does; XLA under JAX turns a division by a broadcast scalar into a product with
# its reciprocal, so there the preprocessing may differ from the trainer's by one float32 ulp, which the untrained
# mask_rs networks (logits in the hundreds) amplify to about 2e-5 in a probability.
EXACT_DIVISION = keras.backend.backend() == "tensorflow"
EXPORT_ATOL = 1e-6 if EXACT_DIVISION else 1e-4


def trained_network(nettype: str, traintype: str = "FreePruning", masktype: str = "mask", activation: str = "relu",
                    initializer: str = "he", seed: int = 3, batchnorm: str = "trainable") -> keras.Model:
    """A masked network as training leaves it: random normal scores (so masks are mixed), or for Baseline
    randomly changed weights."""
    settings = RunConfig(traintype=traintype, masktype=masktype).resolved()
    options = settings.training_type.layer_options(settings.masktype, settings.keep)
    model = networks.build(nettype, INPUT_SHAPES[nettype], activation=activation, initializer=initializer, seed=seed,
                           batchnorm=batchnorm, **options)
    rng = np.random.default_rng(seed + 100)
    for layer in masked_layers(model):
        if layer.scores is None:
            layer.kernel.assign(np.asarray(layer.kernel) * rng.uniform(0.0, 2.0, layer.kernel.shape))
        else:
            layer.scores.assign(rng.standard_normal(layer.scores.shape).astype(np.float32))
    return model


def preprocessing_for(model: keras.Model, seed: int = 0) -> Preprocessing:
    rng = np.random.default_rng(seed)
    shape = model.inputs[0].shape[1:]
    return Preprocessing(rng.uniform(0.0, 0.5, shape).astype(np.float32), np.float32(0.3081),
                         network_input_scale(model))


def raw_images(shape, count: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def masked_predictions(model: keras.Model, preprocessing: Preprocessing, raw: np.ndarray) -> np.ndarray:
    """Through Keras's compiled `predict`: called op by op, JAX would compile a top-k search loop per layer."""
    return model.predict(network_input(raw, preprocessing.mean_image, preprocessing.std), batch_size=len(raw),
                         verbose=0)


# --- the full export equals the masked network ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("nettype, traintype, masktype", EXPORT_CASES)
def test_export_predicts_like_the_masked_network_on_raw_pixels(nettype, traintype, masktype):
    case = EXPORT_NETWORKS.index(nettype) + TYPE_AND_MASK.index((traintype, masktype))
    activation = networks.ACTIVATIONS[case % len(networks.ACTIVATIONS)]
    initializer = list(initializers.INITIALIZERS)[case % len(initializers.INITIALIZERS)]
    model = trained_network(nettype, traintype, masktype, activation, initializer)
    preprocessing = preprocessing_for(model)
    raw = raw_images(INPUT_SHAPES[nettype])
    plain = plain_model(model, effective_kernels(model), preprocessing)
    assert not any(isinstance(layer, MaskedDense) for layer in plain.layers)
    assert {type(layer).__module__.split(".")[0] for layer in plain.layers} == {"keras"}
    expected = masked_predictions(model, preprocessing, raw)
    np.testing.assert_allclose(predict(plain, raw), expected, rtol=0, atol=EXPORT_ATOL)


def test_preprocessing_layers_repeat_the_trainers_float32_arithmetic_exactly():
    model = trained_network("LeNet")
    preprocessing = preprocessing_for(model)
    plain = plain_model(model, effective_kernels(model), preprocessing)
    standardised = keras.Model(plain.input, plain.get_layer("divide_by_std").output)
    raw = np.arange(256, dtype=np.uint8).repeat(4)[:784].reshape(1, 28, 28, 1)
    trainers = network_input(raw, preprocessing.mean_image, preprocessing.std)
    if EXACT_DIVISION:
        np.testing.assert_array_equal(predict(standardised, raw), trainers)
    else:
        np.testing.assert_allclose(predict(standardised, raw), trainers, rtol=0, atol=1e-6)


@pytest.mark.parametrize("traintype, masktype", [("SignFlipping", "flip"), ("FreePruning", "mask")])
def test_mixed_precision_network_exports_with_its_dtype_policy(traintype, masktype):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = trained_network("LeNet", traintype, masktype)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    preprocessing, raw = preprocessing_for(model), raw_images(INPUT_SHAPES["LeNet"])
    plain = plain_model(model, effective_kernels(model), preprocessing, dtype="mixed_bfloat16")
    assert plain.get_layer("divide_by_std").dtype_policy.name == "float32"  # the trainer preprocesses in float32
    assert plain.get_layer("dense_1").dtype_policy.name == "mixed_bfloat16"
    # both op by op: the same bfloat16 products in the same order, so the same bits
    np.testing.assert_array_equal(predict(plain, raw),
                                  predict(model, network_input(raw, preprocessing.mean_image, preprocessing.std)))


@pytest.mark.parametrize("activation", networks.ACTIVATIONS)
def test_activation_table_agrees_with_keras(activation):
    value = float(keras.activations.get(activation)(keras.ops.zeros((1,)))[0])
    assert ACTIVATION_AT_ZERO[activation] == pytest.approx(value)


# --- compaction ---------------------------------------------------------------------------------------------------

def kill(model: keras.Model, layer_name: str, *, unit=None, inputs_of: int | None = None) -> None:
    """Switch off every connection of a layer into its unit(s) `unit`, or out of its input unit `inputs_of`."""
    layer = model.get_layer(layer_name)
    scores = np.asarray(layer.scores).copy()
    if unit is not None:
        scores[..., unit] = -1.0
    if inputs_of is not None:
        scores[..., inputs_of, :] = -1.0
    layer.scores.assign(scores)


@pytest.mark.parametrize("nettype", [name for name in EXPORT_NETWORKS if networks.get(name).compactable])
def test_compact_export_predicts_like_the_full_one_and_is_smaller(nettype):
    model = trained_network(nettype)
    first, second = (layer.name for layer in masked_layers(model)[:2])
    kill(model, first, unit=0)  # no input: always 0 under relu
    kill(model, second, inputs_of=1)  # unit 1 of the first layer reaches nothing
    preprocessing, raw = preprocessing_for(model), raw_images(INPUT_SHAPES[nettype])
    kernels = effective_kernels(model)
    full = plain_model(model, kernels, preprocessing)
    compact = plain_model(model, kernels, preprocessing, compact=True)
    assert compact.count_params() < full.count_params()
    assert effective_size(kernels, "relu").units_kept[0] == masked_layers(model)[0].kernel.shape[-1] - 2
    assert np.max(np.abs(predict(compact, raw) - predict(full, raw))) <= 1e-5


@pytest.mark.parametrize("batchnorm", networks.BATCHNORM_MODES)
def test_resnet_exports_its_graph_and_batchnorm_and_compacts_nothing_exactly(batchnorm):
    """A filter with no weight left still sends BatchNorm's constant through the add: nothing is removed."""
    model = trained_network("ResNet20", batchnorm=batchnorm)
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):  # as training leaves them: not the initial values
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    kill(model, "conv_2", unit=0)
    preprocessing, raw = preprocessing_for(model), raw_images(INPUT_SHAPES["ResNet20"], count=4)
    kernels = effective_kernels(model)
    expected = masked_predictions(model, preprocessing, raw)
    full = plain_model(model, kernels, preprocessing)
    compact = plain_model(model, kernels, preprocessing, compact=True)
    kinds = [type(layer).__name__ for layer in full.layers]
    assert kinds.count("Add") == 9 and kinds.count("BatchNormalization") == 19
    assert compact.count_params() == full.count_params()
    size = effective_size(kernels, "relu", chain=False)
    assert size.parameters_kept == size.parameters == 270_896 and size.nonzero_kept == size.nonzero
    for plain in (full, compact):
        np.testing.assert_allclose(predict(plain, raw), expected, rtol=0, atol=EXPORT_ATOL)


@pytest.mark.parametrize("nettype", ["Conv2", "Conv4"])
def test_filters_removed_before_flatten_take_their_flattened_inputs_along(nettype):
    model = trained_network(nettype)
    last_conv = [layer for layer in masked_layers(model) if layer.kernel.ndim == 4][-1]
    kill(model, last_conv.name, unit=[0, 5, 63])
    preprocessing, raw = preprocessing_for(model), raw_images(INPUT_SHAPES[nettype])
    kernels = effective_kernels(model)
    size = effective_size(kernels, "relu")
    dense = masked_layers(model).index(last_conv) + 1
    assert size.units_kept[dense - 1] == last_conv.filters - 3
    assert compact_kernels(kernels, size.kept)[dense].shape[0] == (last_conv.filters - 3) * \
        (kernels[masked_layers(model)[dense].name].shape[0] // last_conv.filters)
    full, compact = (plain_model(model, kernels, preprocessing, compact=flag) for flag in (False, True))
    assert np.max(np.abs(predict(compact, raw) - predict(full, raw))) <= 1e-5


@pytest.mark.parametrize("activation, removed", [("relu", 1), ("sigmoid", 0)])
def test_a_unit_without_input_is_removed_only_when_its_activation_maps_zero_to_zero(activation, removed):
    model = trained_network("LeNet", activation=activation)
    kill(model, "dense_1", unit=0)
    kernels = effective_kernels(model)
    size = effective_size(kernels, activation)
    assert size.units_kept[0] == 300 - removed
    if activation == "sigmoid":
        assert np.any(kernels["dense_2"][0] != 0)  # its constant 0.5 still feeds dense_2
    preprocessing, raw = preprocessing_for(model), raw_images(INPUT_SHAPES["LeNet"])
    full, compact = (plain_model(model, kernels, preprocessing, compact=flag) for flag in (False, True))
    np.testing.assert_allclose(predict(compact, raw), masked_predictions(model, preprocessing, raw), atol=EXPORT_ATOL)
    assert np.max(np.abs(predict(compact, raw) - predict(full, raw))) <= 1e-5


def test_removal_repeats_until_nothing_changes():
    k1 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # input -> units a, b
    k2 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # a -> c, b -> d
    k3 = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)  # c -> outputs; d reaches nothing
    size = effective_size([k1, k2, k3], "relu")
    assert [k.tolist() for k in size.kept] == [[True, False], [True, False], [True, True]]
    assert size.parameters_kept == 2 * 1 + 1 * 1 + 1 * 2
    assert size.nonzero_kept == 4 and size.nonzero == 6


def test_flattened_conv_channels_are_channel_fastest():
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((3, 3, 1, 2)).astype(np.float32)
    conv[..., 1] = 0  # channel 1 has no input: removed
    dense = rng.standard_normal((4 * 2, 3)).astype(np.float32)  # 2x2 positions x 2 channels
    size = effective_size([conv, dense], "relu")
    assert size.kept[0].tolist() == [True, False]
    np.testing.assert_array_equal(compact_kernels([conv, dense], size.kept)[1], dense[0::2])


def test_a_layer_with_no_unit_left_keeps_one_silent_unit():
    kernels = [np.ones((4, 3), np.float32), np.zeros((3, 2), np.float32), np.ones((2, 5), np.float32)]
    size = effective_size(kernels, "relu")
    assert size.units_kept == [0, 0, 5]
    compact = compact_kernels(kernels, size.kept)
    assert [k.shape for k in compact] == [(4, 1), (1, 1), (1, 5)]
    assert not any(np.any(k) for k in compact)


def test_kernels_that_do_not_fit_together_are_refused():
    with pytest.raises(ValueError, match="layer 2"):
        effective_size([np.ones((4, 3)), np.ones((5, 2))], "relu")
    with pytest.raises(ValueError, match="unknown activation"):
        effective_size([np.ones((4, 3))], "mish")


def test_effective_size_module_loads_neither_keras_nor_tensorflow():
    code = ("import sys, export, export.compaction; "
            "assert not {'keras', 'tensorflow', 'jax'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True)


# --- the file stands alone ----------------------------------------------------------------------------------------

def test_exported_file_loads_and_predicts_where_the_project_cannot_be_imported(tmp_path):
    cases = {"lenet_compact": (trained_network("LeNet", activation="selu"), True),
             "conv2_binary": (trained_network("Conv2", initializer="binary", masktype="mask_rs"), False)}
    expected = {}
    for name, (model, compact) in cases.items():
        preprocessing = preprocessing_for(model)
        raw = raw_images(INPUT_SHAPES[model.name])
        plain = plain_model(model, effective_kernels(model), preprocessing, compact=compact)
        plain.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", raw)
        expected[name] = masked_predictions(model, preprocessing, raw)
    script = textwrap.dedent("""
        import importlib.util, sys
        import numpy as np
        assert importlib.util.find_spec("masks") is None and importlib.util.find_spec("networks") is None
        import keras
        for name in sys.argv[1:]:
            model = keras.saving.load_model(name + ".keras", safe_mode=True)
            np.save(name + ".out.npy", model.predict(np.load(name + ".npy"), verbose=0))
    """)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-I", "-c", script, *cases], cwd=tmp_path, env=env, check=True,
                   timeout=120)
    for name in cases:
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.out.npy"), expected[name], rtol=0, atol=EXPORT_ATOL)


# --- run files: a fake run written like the trainer writes one ----------------------------------------------------

def sign_counts(values: np.ndarray) -> list[int]:
    return [int(np.sum(values < 0)), int(np.sum(values == 0)), int(np.sum(values > 0))]


def write_run(directory: Path, traintype: str = "FreePruning", status: str = "finished", *, epochs: int = 2,
              maxepochs: int = 2, model_file: bool = True, checkpoint: bool = False, seed: int = 3,
              run_id: str = RUN_ID) -> tuple[Path, keras.Model, Preprocessing]:
    """The files a LeNet run leaves: Config, TrainLogs, Weights, Masks, Preprocessing, and Model or Checkpoint."""
    kind = training_types.get(traintype)
    model = trained_network("LeNet", traintype, kind.mask_types[0], seed=seed)
    if model.get_layer("dense_2").scores is not None:
        kill(model, "dense_2", unit=list(range(40)))  # units that compaction removes
    drawn = networks.build("LeNet", INPUT_SHAPES["LeNet"], mask_type=None, seed=seed)
    preprocessing = preprocessing_for(model)
    files = runlog.RunFiles(directory, run_id)
    config = {**RunConfig().to_dict(), "nettype": "LeNet", "traintype": traintype, "initializer": "he",
              "activation": "relu", "masktype": kind.mask_types[0], "p1": 0.5, "seed": seed, "dataset": "mnist",
              "maxepochs": maxepochs, "runId": run_id, "status": status}  # as MaskTrainer records one
    runlog.write_json(files.config, config)
    masks = statistics.mask_reader(model)()
    runlog.write_npz(files.weights, {layer.name: np.asarray(layer.kernel) for layer in masked_layers(drawn)})
    runlog.write_npz(files.masks, masks)
    runlog.write_npz(files.preprocessing, {"mean_image": preprocessing.mean_image, "std": preprocessing.std,
                                           "input_scale": preprocessing.input_scale})
    per_layer = [sign_counts(masks[name]) + sign_counts(kernel * masks[name])
                 for name, kernel in statistics.kernels(model).items()]
    log = {key: [0.5] * (epochs + 1) for key in runlog.EPOCH_KEYS}
    log.update(totalWeights=266_200, remainingWeightsPerLayer=[per_layer] * (epochs + 1),
               layerNames=list(masks), status=status)
    runlog.write_log(files, log)
    if model_file:
        model.save(files.model)
    if checkpoint:
        arrays = {f"model/{v.path}": keras.ops.convert_to_numpy(v) for v in model.weights}
        owner = RunConfig.from_dict(config, "test", complete=True).digest()
        runlog.write_npz(files.checkpoint, {**arrays, "epoch": np.array(epochs), "runId": np.array(run_id),
                                            "settingsDigest": np.array(owner)})
    return files.config, model, preprocessing


def export(capsys, *args: str) -> tuple[int, str, str]:
    try:
        status = Exporter.main([str(arg) for arg in args])
    except SystemExit as exit_:  # argparse refuses the arguments themselves
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def check_refusal(capsys, args: list, names: Path | str) -> str:
    status, _, err = export(capsys, *args)
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("Exporter.py: error: ") and "Traceback" not in err, err
    assert str(names) in err, err
    return err


@pytest.mark.parametrize("source", ["model", "weights_and_masks"])
def test_finished_run_exports_from_its_model_or_from_weights_and_masks(tmp_path, capsys, source):
    config, model, preprocessing = write_run(tmp_path / "run", model_file=source == "model")
    out = tmp_path / "out" / "lenet.keras"
    status, printed, err = export(capsys, config, "--out", out, "--compact")
    assert status == 0, err
    report = json.loads(out.with_suffix(".json").read_text())
    assert Path(report["source"]).name == (f"Model_ID{RUN_ID}.keras" if source == "model" else f"Masks_ID{RUN_ID}.npz")
    assert [layer["unitsBefore"] for layer in report["layers"]] == [300, 100, 10]
    assert report["parameters"]["after"] <= report["parameters"]["before"] == 266_200
    assert 0 < report["bytes"]["after"] < report["bytes"]["before"]
    assert "dense_1" in printed and "file bytes" in printed
    raw = raw_images(INPUT_SHAPES["LeNet"])
    exported = keras.saving.load_model(out)
    np.testing.assert_allclose(predict(exported, raw), masked_predictions(model, preprocessing, raw), atol=EXPORT_ATOL)


def test_unfinished_run_exports_its_checkpoint_on_request(tmp_path, capsys):
    config, model, preprocessing = write_run(tmp_path, status="running", epochs=1, maxepochs=3,
                                             model_file=False, checkpoint=True)
    err = check_refusal(capsys, [config, "--out", tmp_path / "x.keras"], f"run {RUN_ID}")
    assert "epoch 1 of 3" in err and "--checkpoint" in err
    status, _, err = export(capsys, config, "--out", tmp_path / "x.keras", "--checkpoint")
    assert status == 0, err
    raw = raw_images(INPUT_SHAPES["LeNet"])
    np.testing.assert_allclose(predict(keras.saving.load_model(tmp_path / "x.keras"), raw),
                               masked_predictions(model, preprocessing, raw), atol=EXPORT_ATOL)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def foreign_masks(files: runlog.RunFiles) -> None:
    """The Masks file of a Conv2 network."""
    model = trained_network("Conv2")
    runlog.write_npz(files.masks, {layer.name: keras.ops.convert_to_numpy(layer.mask())
                                   for layer in masked_layers(model)})


def other_runs_masks(files: runlog.RunFiles) -> None:
    """The Masks file of another LeNet run (other scores)."""
    other = trained_network("LeNet", seed=3)
    for layer in masked_layers(other):
        layer.scores.assign(-np.asarray(layer.scores))
    runlog.write_npz(files.masks, {layer.name: keras.ops.convert_to_numpy(layer.mask())
                                   for layer in masked_layers(other)})


def other_runs_weights(files: runlog.RunFiles) -> None:
    drawn = networks.build("LeNet", INPUT_SHAPES["LeNet"], mask_type=None, seed=99)
    runlog.write_npz(files.weights, {layer.name: np.asarray(layer.kernel) for layer in masked_layers(drawn)})


DAMAGES = {  # name: (damage the run's files, whether it has a Model file, the file the message names)
    "missing weights": (lambda f: f.weights.unlink(), False, "weights"),
    "truncated masks": (lambda f: truncate(f.masks), False, "masks"),
    "masks of another network": (foreign_masks, False, "masks"),
    "masks of another run": (other_runs_masks, False, "masks"),
    "weights of another seed": (other_runs_weights, False, "weights"),
    "corrupted model": (lambda f: f.model.write_bytes(b"PK\x03\x04 not a zip"), True, "model"),
    "truncated model": (lambda f: truncate(f.model), True, "model"),
    "missing preprocessing": (lambda f: f.preprocessing.unlink(), True, "preprocessing"),
    "corrupted config": (lambda f: f.config.write_text("{\"nettype\": "), True, "config"),
    "truncated log": (lambda f: truncate(f.log_json), True, "log_json"),
    "unknown network": (lambda f: f.config.write_text(json.dumps(
        {**json.loads(f.config.read_text()), "nettype": "ResNet"})), True, "config"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_or_mismatched_files_are_refused_in_one_line_naming_the_file(tmp_path, capsys, damage):
    change, model_file, named = DAMAGES[damage]
    config, _, _ = write_run(tmp_path, model_file=model_file)
    files = runlog.RunFiles.from_config_path(config)
    change(files)
    check_refusal(capsys, [config, "--out", tmp_path / "x.keras"], getattr(files, named))
    assert not (tmp_path / "x.keras").exists()


def test_verify_without_the_test_set_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    def offline():
        raise OSError("no network")
    monkeypatch.setitem(datasets.DATASETS, "mnist", dataclasses.replace(datasets.get("mnist"), download=offline))
    config, _, _ = write_run(tmp_path)
    (tmp_path / "empty").mkdir()
    err = check_refusal(capsys, [config, "--out", tmp_path / "x.keras", "--verify", "--datadir", tmp_path / "empty"],
                        tmp_path / "empty" / "mnist")
    assert "--verify: mnist not found" in err
    assert not (tmp_path / "x.keras").exists() and not (tmp_path / "x.json").exists()


def test_verify_on_other_data_than_the_run_trained_on_is_refused(tmp_path, capsys, mnist_directory):
    config, _, _ = write_run(tmp_path)
    (x_train, y_train, x_test, y_test), _ = datasets.load_raw("mnist", mnist_directory)
    y_trained_on = y_test.copy()
    y_trained_on[0] = (y_trained_on[0] + 1) % 10
    record = json.loads(config.read_text())
    record["digests"] = {"data": provenance.data_digests((x_train, y_train, x_test, y_trained_on))}
    config.write_text(json.dumps(record))
    err = check_refusal(capsys, [config, "--out", tmp_path / "x.keras", "--verify", "--datadir", mnist_directory],
                        mnist_directory / "mnist")
    assert "testLabels differs from the data run" in err
    assert not (tmp_path / "x.keras").exists()


def test_a_report_path_that_is_a_directory_is_refused_before_the_model_is_written(tmp_path, capsys):
    config, _, _ = write_run(tmp_path)
    (tmp_path / "w.json").mkdir()
    check_refusal(capsys, [config, "--out", tmp_path / "w.keras"], tmp_path / "w.json")
    assert not (tmp_path / "w.keras").exists()


def test_an_unsupported_backend_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    config, _, _ = write_run(tmp_path)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert "KERAS_BACKEND=torch is not supported" in check_refusal(
        capsys, [config, "--out", tmp_path / "x.keras"], "torch")


def test_baseline_without_its_model_file_is_refused(tmp_path, capsys):
    config, _, _ = write_run(tmp_path, traintype="Baseline", model_file=False)
    err = check_refusal(capsys, [config, "--out", tmp_path / "x.keras"],
                        runlog.RunFiles.from_config_path(config).model)
    assert "Baseline" in err


def test_checkpoint_of_a_finished_run_and_wrong_out_names_are_refused(tmp_path, capsys):
    config, _, _ = write_run(tmp_path)
    check_refusal(capsys, [config, "--out", tmp_path / "x.keras", "--checkpoint"], "without --checkpoint")
    check_refusal(capsys, [config, "--out", tmp_path / "x.h5"], "x.h5")
    check_refusal(capsys, [tmp_path / "Weights_IDabc1234.npz", "--out", tmp_path / "x.keras"], "Config_ID")
    for own in ("Model_IDabc1234.keras", "Config_IDabc1234.keras"):  # the file, or its report, is the run's
        check_refusal(capsys, [config, "--out", tmp_path / own], "run's own files")


def test_command_line_refusal_is_one_line_with_status_2(tmp_path):
    config, _, _ = write_run(tmp_path, status="running", epochs=1, maxepochs=3, model_file=False)
    command = [sys.executable, str(Path(Exporter.__file__)), str(config), "--out", str(tmp_path / "x.keras")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2  # refused before TensorFlow loads, so no start-up notice precedes the line
    assert done.stderr.count("\n") == 1 and "epoch 1 of 3" in done.stderr and "Traceback" not in done.stderr, \
        done.stderr
    assert not (tmp_path / "x.keras").exists()


# --- a real run ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("traintype", ["FreePruning", "EdgePopup", "Supermask", "SignedSupermask"])
def test_real_mnist_run_exported_has_exactly_its_logged_test_accuracy(tmp_path, capsys, mnist_directory, traintype):
    import MaskTrainer
    assert MaskTrainer.main(["--outputpath", str(tmp_path / "runs"), "--datadir", str(mnist_directory),
                             "--trainsize", "2000", "--maxepochs", "1", "--seed", "1", "--traintype", traintype]) == 0
    (config,) = (tmp_path / "runs").rglob("Config_ID*.json")
    files = runlog.RunFiles.from_config_path(config)
    logged = runlog.read_log(files.log_json)["testAccuracy"][-1]
    capsys.readouterr()
    for name, flags in (("full", []), ("compact", ["--compact"])):
        out = tmp_path / f"{name}.keras"
        status, printed, err = export(capsys, config, "--out", out, "--verify", "--datadir", mnist_directory, *flags)
        assert status == 0, err
        report = json.loads(out.with_suffix(".json").read_text())
        assert report["verify"]["testAccuracy"] == logged == report["loggedTestAccuracy"], printed
    if files.model.exists():  # the same network from Weights * Masks
        files.model.rename(tmp_path / "moved.keras")
        status, _, err = export(capsys, config, "--out", tmp_path / "from_masks.keras")
        assert status == 0, err
        raw = raw_images(INPUT_SHAPES["LeNet"], count=50)
        np.testing.assert_array_equal(predict(keras.saving.load_model(tmp_path / "from_masks.keras"), raw),
                                      predict(keras.saving.load_model(tmp_path / "full.keras"), raw))


@pytest.mark.parametrize("out_name", ["Config_IDdef5678.keras", "Model_IDdef5678.keras", "TrainLogs_IDdef5678.keras",
                                      "checkpoint_iddef5678.keras", "Weights_IDnew.keras"])
def test_out_may_not_take_the_name_of_any_runs_file(tmp_path, capsys, out_name):
    config, _, _ = write_run(tmp_path / "run")
    other = tmp_path / "other"
    other.mkdir()
    others_config = other / "Config_IDdef5678.json"
    others_config.write_text('{"runId": "def5678"}')
    err = check_refusal(capsys, [config, "--out", other / out_name], "run's own files")
    assert others_config.read_text() == '{"runId": "def5678"}' and sorted(other.iterdir()) == [others_config], err


@pytest.mark.parametrize("linked", ["model", "report"])
def test_out_or_its_report_that_is_a_link_is_refused(tmp_path, capsys, linked):
    config, _, _ = write_run(tmp_path / "run")
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    out = tmp_path / "out" / "lenet.keras"
    out.parent.mkdir()
    (out if linked == "model" else out.with_suffix(".json")).symlink_to(precious)
    check_refusal(capsys, [config, "--out", out], "is a symbolic link")
    assert precious.read_text() == "mine" and len(list(out.parent.iterdir())) == 1
