"""Masks on your own Keras model: masks.convert, training with fit, masks.MaskStatistics, masks.strip."""
import inspect
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import initializers
import masks
from masks.callbacks import kept_fractions
from masks.layers import MaskedConv2D, MaskedDense, MaskedLayer, masked_layers_within
from initializers import layer_seed
from settings.types import TRAINING_TYPES

ALL_ON = ("FreePruning", "MinPruning", "SignFlipping", "MinFlipping", "Baseline")  # epoch 0 = the original


def residual_model(seed: int = 0) -> keras.Model:
    """Conv2D 5x5 stride 2 with bias, BatchNormalization, a residual Add, GlobalAveragePooling2D, Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 5, strides=2, padding="same", use_bias=True, activation="relu", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="norm")(x)
    y = keras.layers.Conv2D(8, (3, 3), padding="same", activation="relu", name="branch")(x)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.Conv2D(6, (3, 2), strides=(1, 2), padding="valid", use_bias=False, name="valid")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name="residual")
    # non-trivial BatchNormalization statistics and biases, so that copying them matters
    norm = model.get_layer("norm")
    rng = np.random.default_rng(seed)
    norm.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    for name in ("stem", "branch", "classifier"):
        layer = model.get_layer(name)
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    return model


def data(count: int = 64, shape=(12, 12, 3), classes: int = 4):
    rng = np.random.default_rng(7)
    return rng.normal(size=(count, *shape)).astype("float32"), rng.integers(0, classes, count)


def values(variable) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable))


def masked(model: keras.Model) -> list[MaskedLayer]:
    return masked_layers_within(model)


# --- the masked layers' new options -----------------------------------------------------------------------------

def test_masked_layers_save_every_argument_and_read_old_configs():
    conv = MaskedConv2D(4, kernel_size=(3, 5), strides=2, padding="valid", use_bias=True, name="c")
    dense = MaskedDense(3, use_bias=True, name="d")
    for layer in (conv, dense):
        config = layer.get_config()
        parameters = set()
        for cls in type(layer).__mro__:
            if cls in (MaskedLayer, MaskedConv2D, MaskedDense):
                parameters |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        assert parameters <= set(config)
        assert type(layer).from_config(config).get_config() == config
    assert conv.get_config()["kernel_size"] == (3, 5) and conv.get_config()["strides"] == (2, 2)
    old = MaskedConv2D(4).get_config()  # a config saved before strides, padding and bias existed
    for key in ("strides", "padding", "use_bias", "bias_initializer"):
        del old[key]
    old["kernel_size"] = 3
    restored = MaskedConv2D.from_config(old)
    assert (restored.kernel_size, restored.strides, restored.padding, restored.use_bias) == ((3, 3), (1, 1),
                                                                                               "same", False)
    restored.build((None, 8, 8, 2))
    assert restored.bias is None and len(restored.weights) == 2  # kernel and scores, as before


def test_masked_conv_shapes_follow_strides_and_padding():
    x = np.ones((2, 9, 10, 3), np.float32)
    for padding in ("same", "valid"):
        layer = MaskedConv2D(5, kernel_size=(3, 4), strides=(2, 3), padding=padding, use_bias=True)
        assert tuple(layer(x).shape) == layer.compute_output_shape(x.shape)


# --- convert: the epoch-0 network is the original ---------------------------------------------------------------

def test_converted_functional_model_predicts_exactly_as_the_original():
    model = residual_model()
    x, _ = data(16)
    converted = masks.convert(model, "FreePruning")
    assert converted is not model
    assert [type(layer).__name__ for layer in converted.layers] == [
        "InputLayer", "MaskedConv2D", "BatchNormalization", "MaskedConv2D", "Add", "MaskedConv2D",
        "GlobalAveragePooling2D", "MaskedDense"]
    stem = converted.get_layer("stem")
    assert (stem.kernel_size, stem.strides, stem.padding, stem.use_bias) == ((5, 5), (2, 2), "same", True)
    valid = converted.get_layer("valid")
    assert (valid.kernel_size, valid.strides, valid.padding, valid.use_bias) == ((3, 2), (1, 2), "valid", False)
    assert not stem.kernel.trainable and not stem.bias.trainable and stem.scores.trainable
    original_variables = {id(v) for v in model.weights}
    assert not any(id(v) in original_variables for v in converted.weights)  # nothing shared
    np.testing.assert_array_equal(converted.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(converted(x, training=False), model(x, training=False))


def test_a_nested_sequential_is_converted_recursively():
    keras.utils.set_random_seed(3)
    block = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, activation="relu", name="inner_conv"),
                              keras.layers.Flatten(), keras.layers.Dense(5, name="inner_dense")], name="block")
    inputs = keras.Input((6, 6, 2))
    outputs = keras.layers.Dense(3, name="head")(block(inputs))
    model = keras.Model(inputs, outputs)
    converted = masks.convert(model, "SignFlipping", weights="he", seed=4)
    inner = converted.get_layer("block")
    assert isinstance(inner, keras.Sequential) and inner is not block
    assert [layer.name for layer in masked(converted)] == ["inner_conv", "inner_dense", "head"]
    for index, layer in enumerate(masked(converted)):  # numbered in layer order, the nested model's in place
        np.testing.assert_array_equal(values(layer.kernel), initializers.draw("he", layer_seed(4, index, 0),
                                                                               layer.kernel.shape))
    x, _ = data(4, (6, 6, 2))
    kept = masks.convert(model, "MinPruning")
    np.testing.assert_array_equal(kept.predict(x, verbose=0), model.predict(x, verbose=0))


def test_weights_he_redraws_w_with_the_projects_seeded_draws():
    model = residual_model()
    converted = masks.convert(model, "EdgePopup", weights="he", seed=11, keep=0.3)
    layers = masked(converted)
    assert [layer.name for layer in layers] == ["stem", "branch", "valid", "classifier"]
    for index, layer in enumerate(layers):
        shape = tuple(layer.kernel.shape)
        np.testing.assert_array_equal(values(layer.kernel), initializers.draw("he", layer_seed(11, index, 0), shape))
        np.testing.assert_array_equal(values(layer.scores),
                                      initializers.draw("kaiming_uniform", layer_seed(11, index, 1), shape))
        assert layer.noise_seed == layer_seed(11, index, 2) and layer.keep == 0.3
        if layer.use_bias:
            np.testing.assert_array_equal(values(layer.bias), np.zeros(shape[-1]))  # the bias initializer's draw


def test_refusals_are_one_line():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x) * 2

    model = Subclassed()
    model(np.ones((1, 3), np.float32))
    for call in (lambda: masks.convert(model), lambda: masks.strip(model)):
        with pytest.raises(ValueError, match="subclassed") as error:
            call()
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="weights must be"):
        masks.convert(residual_model(), weights="orthogonal")
    with pytest.raises(ValueError, match="NoSuchType"):
        masks.convert(residual_model(), "NoSuchType")
    with pytest.raises(ValueError, match="keep"):
        masks.convert(residual_model(), "EdgePopup", keep=1.5)
    with pytest.raises(ValueError, match="keep"):
        masks.convert(residual_model(), "FreePruning", keep=0.5)  # keep is EdgePopup's only
    dilated = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, dilation_rate=2)])
    with pytest.raises(ValueError, match="dilation_rate") as error:
        masks.convert(dilated)
    assert "\n" not in str(error.value)


# --- training with fit --------------------------------------------------------------------------------------------

def test_fit_trains_the_scores_only_and_keeps_fits_features(tmp_path):
    model = residual_model()
    x, y = data(64)
    converted = masks.convert(model, "MinPruning", seed=2)
    converted.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    frozen = {layer.name: [values(layer.kernel)] + ([values(layer.bias)] if layer.use_bias else [])
              for layer in masked(converted)}
    scores = {layer.name: values(layer.scores) for layer in masked(converted)}
    history = converted.fit(
        x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x[:16], y[:16]),
        callbacks=[masks.MaskStatistics(), keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
                   keras.callbacks.EarlyStopping(monitor="kept_fraction", mode="max", patience=5),
                   keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_loss")])
    for layer in masked(converted):
        now = [values(layer.kernel)] + ([values(layer.bias)] if layer.use_bias else [])
        for before, after in zip(frozen[layer.name], now):
            np.testing.assert_array_equal(before, after)
        assert np.any(values(layer.scores) != scores[layer.name]), layer.name
    expected = {"kept_fraction"} | {f"kept_fraction/{layer.name}" for layer in masked(converted)}
    assert expected | {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    assert all(len(history.history[key]) == 2 for key in expected)
    assert 0 < history.history["kept_fraction"][-1] <= 1
    assert "kept_fraction/stem" in (tmp_path / "log.csv").read_text().splitlines()[0]
    assert keras.saving.load_model(tmp_path / "best.keras").count_params() == converted.count_params()


@pytest.mark.parametrize("traintype", list(TRAINING_TYPES))
def test_every_training_type_converts_and_trains_a_step(traintype):
    model = residual_model()
    x, y = data(8)
    converted = masks.convert(model, traintype, seed=5)
    if traintype in ALL_ON:
        np.testing.assert_array_equal(converted.predict(x, verbose=0), model.predict(x, verbose=0))
    trained = "kernel" if traintype == "Baseline" else "scores"
    before = {layer.name: values(getattr(layer, trained)) for layer in masked(converted)}
    converted.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    history = converted.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[masks.MaskStatistics()])
    assert np.isfinite(history.history["loss"][0])
    moved = [np.any(values(getattr(layer, trained)) != before[layer.name]) for layer in masked(converted)]
    assert any(moved)
    fraction = history.history["kept_fraction"][0]
    if traintype == "Baseline":
        assert fraction == 1.0
    elif traintype == "EdgePopup":
        assert fraction == pytest.approx(0.5, abs=0.01)


def single_dense_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 3))
    return keras.Model(inputs, keras.layers.Dense(4, name="only")(keras.layers.Flatten()(inputs)))


def repeated_names_model() -> keras.Model:
    """A nested model's layer named as one outside it: the masks are matched to layers by position."""
    keras.utils.set_random_seed(2)
    inner = keras.Sequential([keras.Input((432,)), keras.layers.Dense(30, name="dense")], name="inner")
    inputs = keras.Input((12, 12, 3))
    return keras.Model(inputs, keras.layers.Dense(4, name="dense")(inner(keras.layers.Flatten()(inputs))))


@pytest.mark.parametrize("traintype, build", [("EdgePopup", residual_model), ("Supermask", residual_model),
                                               ("Baseline", residual_model), ("EdgePopup", single_dense_model),
                                               ("SignedSupermask", repeated_names_model)],
                         ids=["EdgePopup", "Supermask", "Baseline", "one masked layer", "repeated names"])
def test_mask_statistics_reads_the_masks_compiled_once_whatever_the_epochs(monkeypatch, traintype, build):
    """Read op by op, JAX would compile a top-k search anew at every epoch's end, about a second per layer."""
    converted = masks.convert(build(), traintype, seed=6)
    converted.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    x, y = data(16)
    converted.fit(x, y, batch_size=8, epochs=1, verbose=0)  # the first fit also builds the model (symbolic calls)
    evaluations = []
    real = MaskedLayer.mask_at

    def counted(self, training):
        if not training:
            evaluations.append(self.name)
        return real(self, training)
    monkeypatch.setattr(MaskedLayer, "mask_at", counted)
    counts = []
    for epochs in (1, 3):
        evaluations.clear()
        history = converted.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[masks.MaskStatistics()])
        counts.append(len(evaluations))
    assert counts[0] == counts[1]  # traced once per fit, not computed at each epoch's end
    eager = kept_fractions(converted)
    assert {key: values[-1] for key, values in history.history.items() if key.startswith("kept_fraction")} == eager
    assert set(eager) == {"kept_fraction"} | {f"kept_fraction/{layer.name}" for layer in masked(converted)}


# --- saving, stripping ---------------------------------------------------------------------------------------------

def test_converted_model_saves_and_loads_with_equal_predictions(tmp_path):
    converted = masks.convert(residual_model(), "Supermask", seed=3)
    x, y = data(8)
    converted.compile("adam", "sparse_categorical_crossentropy")
    converted.fit(x, y, batch_size=8, epochs=1, verbose=0)
    converted.save(tmp_path / "masked.keras")
    reloaded = keras.saving.load_model(tmp_path / "masked.keras")
    assert [type(layer) for layer in reloaded.layers] == [type(layer) for layer in converted.layers]
    for a, b in zip(masked(reloaded), masked(converted)):
        assert a.get_config() == b.get_config()
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), converted.predict(x, verbose=0))


def test_stripped_model_predicts_the_same_and_loads_without_the_project(tmp_path):
    model = residual_model()
    x, y = data(32)
    converted = masks.convert(model, "SignedSupermask", seed=1)
    converted.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    converted.fit(x, y, batch_size=16, epochs=1, verbose=0)
    stripped = masks.strip(converted)
    assert not any(isinstance(layer, MaskedLayer) for layer in stripped.layers)
    assert [type(layer).__name__ for layer in stripped.layers if layer.weights] == [
        "Conv2D", "BatchNormalization", "Conv2D", "Conv2D", "Dense"]
    for layer in masked(converted):
        plain = stripped.get_layer(layer.name)
        np.testing.assert_array_equal(values(plain.kernel), values(layer.effective_kernel()))
        assert plain.use_bias == layer.use_bias
    expected = converted.predict(x, verbose=0)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), expected, rtol=0, atol=1e-6)
    stripped.save(tmp_path / "plain.keras")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent("""
        import importlib.util
        import numpy as np
        assert importlib.util.find_spec("masks") is None and importlib.util.find_spec("networks") is None
        import keras
        model = keras.saving.load_model("plain.keras", safe_mode=True)
        np.save("out.npy", model.predict(np.load("x.npy"), verbose=0))
    """)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, check=True, timeout=120)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=0, atol=1e-6)


def test_strip_of_a_registry_network_is_plain_keras():
    import networks
    model = networks.build("Conv2", (8, 8, 3), seed=2)
    stripped = masks.strip(model)
    assert {type(layer).__module__.split(".")[0] for layer in stripped.layers} == {"keras"}
    x, _ = data(4, (8, 8, 3))
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_mobilenet_v2_converts_and_predicts_as_the_original():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    converted = masks.convert(model, "FreePruning")
    kinds = {type(layer).__name__ for layer in converted.layers}
    assert {"MaskedConv2D", "MaskedDense", "DepthwiseConv2D", "BatchNormalization"} <= kinds
    assert "Conv2D" not in kinds and "Dense" not in kinds
    x, _ = data(2, (32, 32, 3))
    np.testing.assert_array_equal(converted.predict(x, verbose=0), model.predict(x, verbose=0))


def test_importing_masks_loads_no_keras():
    code = "import sys, masks; assert 'keras' not in sys.modules, 'keras loaded'; print(masks.MASK_TYPES['mask'])"
    subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)), check=True,
                   timeout=60)
