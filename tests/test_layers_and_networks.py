"""Masked layers and the registered networks: weight counts, epoch-0 identity, seeds, saving, the Min* term."""
import keras
import numpy as np
import pytest

import initializers
import networks
from masks import functions
from initializers import layer_seed
from settings.config import RunConfig
from settings.types import TRAINING_TYPES
from masks.layers import KeptFractionReward, MaskedConv2D, MaskedDense, masked_layers
from networks.assembly import MaxPool2x2
from tests.helpers import output_and_gradient

INPUT_SHAPES = {"LeNet": (28, 28, 1), **{name: (32, 32, 3) for name in networks.NETWORKS if name != "LeNet"}}
MASKED_WEIGHTS = {"LeNet": 266_200, "Conv2": 4_300_992, "Conv4": 2_425_024, "Conv6": 2_261_184, "Conv8": 5_275_840,
                  "ResNet20": 270_896, "ResNet32": 464_432, "ResNet44": 657_968, "ResNet56": 851_504}


def inputs_for(name: str, count: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, *INPUT_SHAPES[name])).astype(np.float32)


def test_every_registered_network_has_an_expected_count():
    assert set(networks.NETWORKS) == set(MASKED_WEIGHTS)


@pytest.mark.parametrize("name", sorted(networks.NETWORKS))
def test_masked_weight_count(name):
    model = networks.build(name, INPUT_SHAPES[name])
    assert sum(int(np.prod(layer.kernel.shape)) for layer in masked_layers(model)) == MASKED_WEIGHTS[name]
    assert all(not layer.kernel.trainable and layer.scores.trainable for layer in masked_layers(model))
    scores = [v for v in model.trainable_variables if not v.path.startswith("bn_")]  # beside BatchNorm's gamma, beta
    assert sum(int(np.prod(v.shape)) for v in scores) == MASKED_WEIGHTS[name]
    assert (len(scores) < len(model.trainable_variables)) == networks.get(name).batchnorm


@pytest.mark.parametrize("name", sorted(networks.NETWORKS))
@pytest.mark.parametrize("mask_type", ["mask", "flip"])
def test_epoch_zero_network_is_exactly_the_random_network(name, mask_type):
    masked = networks.build(name, INPUT_SHAPES[name], mask_type=mask_type, seed=11)
    plain = networks.build(name, INPUT_SHAPES[name], mask_type=None, seed=11)
    x = inputs_for(name)
    np.testing.assert_array_equal(masked.predict(x, verbose=0), plain.predict(x, verbose=0))


def test_each_layer_draws_its_own_weights_and_seed_reproduces_them():
    first = networks.build("Conv2", INPUT_SHAPES["Conv2"], seed=3)
    again = networks.build("Conv2", INPUT_SHAPES["Conv2"], seed=3)
    dense = [np.asarray(layer.kernel) for layer in masked_layers(first) if isinstance(layer, MaskedDense)]
    assert not np.array_equal(dense[1][:256, :256], dense[2][:256, :256])  # two 256-unit layers differ
    for a, b in zip(masked_layers(first), masked_layers(again)):
        np.testing.assert_array_equal(np.asarray(a.kernel), np.asarray(b.kernel))
        np.testing.assert_array_equal(np.asarray(a.scores), np.asarray(b.scores))


@pytest.mark.parametrize("name", ["LeNet", "Conv2"])
def test_binary_gives_the_logits_of_heconstant_with_the_same_signs(name):
    kwargs = dict(activation="relu", seed=9, p1=0.7, mask_type="mask")
    binary = networks.build(name, INPUT_SHAPES[name], initializer="binary", **kwargs)
    constant = networks.build(name, INPUT_SHAPES[name], initializer="heconstant", **kwargs)
    for b, c in zip(masked_layers(binary), masked_layers(constant)):
        np.testing.assert_array_equal(np.sign(np.asarray(b.kernel)), np.sign(np.asarray(c.kernel)))
    x = inputs_for(name)
    logits = [keras.Model(m.inputs, m.layers[-1].apply_kernel(m.layers[-2].output, m.layers[-1].kernel))
              for m in (binary, constant)]
    np.testing.assert_allclose(logits[0].predict(x, verbose=0), logits[1].predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_pooling_equals_keras_max_pooling():
    x = np.random.default_rng(1).standard_normal((2, 7, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(MaxPool2x2()(x)),
                                  np.asarray(keras.layers.MaxPooling2D(2)(x)))


@pytest.mark.parametrize("layer, x", [
    (lambda **kw: MaskedDense(5, **kw), np.ones((2, 4), np.float32)),
    (lambda **kw: MaskedConv2D(5, **kw), np.ones((2, 6, 6, 3), np.float32)),
])
def test_all_zero_mask_gives_zero_output_and_all_on_mask_equals_plain_layer(layer, x):
    masked, plain = layer(mask_type="mask"), layer(mask_type=None)
    masked.build(x.shape)
    plain.build(x.shape)
    plain.kernel.assign(masked.kernel)
    np.testing.assert_array_equal(np.asarray(masked(x)), np.asarray(plain(x)))
    masked.scores.assign(-np.ones(masked.scores.shape, np.float32))
    np.testing.assert_array_equal(np.asarray(masked(x)), 0.0)


def test_saved_and_reloaded_model_gives_same_predictions(tmp_path):
    model = networks.build("Conv2", INPUT_SHAPES["Conv2"], initializer="binary", rewards_unchanged=True)
    layer = masked_layers(model)[0]
    layer.scores.assign(np.where(np.arange(layer.scores.shape[-1]) % 2, 0.05, -0.05)
                        * np.ones(layer.scores.shape, np.float32))
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    x = inputs_for("Conv2")
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    assert masked_layers(reloaded)[0].get_config() == layer.get_config()


def test_unknown_network_lists_valid_names():
    with pytest.raises(ValueError, match="Conv6"):
        networks.get("ResNet18")


@pytest.mark.parametrize("shape", [(7, 5), (3, 3, 4, 6)])
@pytest.mark.parametrize("mask_type", ["mask", "mask_rs", "flip"])  # the Min* types' masks
def test_min_term_is_minus_mean_mask_with_gradient_minus_one_over_n(shape, mask_type):
    scores = np.random.default_rng(3).uniform(-1, 1, shape).astype(np.float32)

    def term_of(variable):
        mask = functions.get(mask_type)(variable)
        return (mask, KeptFractionReward()(mask)), KeptFractionReward()(mask)
    (mask, term), gradient = output_and_gradient(term_of, scores)
    np.testing.assert_allclose(float(term), -np.mean(np.asarray(mask, np.float64)), rtol=1e-6)
    np.testing.assert_array_equal(gradient, np.full(shape, -1 / np.prod(shape), np.float32))


# --- the rivals' layers: the same frozen weights, their own scores and masks -------------------------------------

RIVALS = {name: kind for name, kind in TRAINING_TYPES.items() if kind.score_initializer != "scores"}


def build_type(name: str, traintype: str, seed: int = 4) -> keras.Model:
    settings = RunConfig(traintype=traintype).resolved()
    return networks.build(name, INPUT_SHAPES[name], seed=seed,
                          **settings.training_type.layer_options(settings.masktype, settings.keep))


@pytest.mark.parametrize("name", ["LeNet", "Conv2"])
def test_every_training_type_draws_the_same_frozen_weights(name):
    reference = [np.asarray(layer.kernel) for layer in masked_layers(build_type(name, "FreePruning"))]
    for traintype in TRAINING_TYPES:
        kernels = [np.asarray(layer.kernel) for layer in masked_layers(build_type(name, traintype))]
        assert all(np.array_equal(a, b) for a, b in zip(kernels, reference)), traintype


@pytest.mark.parametrize("traintype", sorted(RIVALS))
def test_rival_layers_train_scores_only_and_draw_their_own_scores(traintype):
    model = build_type("LeNet", traintype)
    layers = masked_layers(model)
    assert [v.path for v in model.trainable_variables] == [f"{layer.name}/scores" for layer in layers]
    first = np.asarray(layers[0].scores)
    expected = initializers.draw(RIVALS[traintype].score_initializer, layer_seed(4, 0, 1), first.shape)
    np.testing.assert_array_equal(first, expected)


@pytest.mark.slow
def test_edge_popup_layer_keeps_exactly_its_fraction_of_every_layer():
    model = build_type("Conv2", "EdgePopup")
    for layer in masked_layers(model):
        assert int(np.sum(np.asarray(layer.mask()))) == functions.kept_count(0.5, int(np.prod(layer.kernel.shape)))


@pytest.mark.parametrize("traintype", [name for name in TRAINING_TYPES if name != "Baseline"])
def test_saving_a_model_computes_no_mask_and_the_compiled_reader_gives_the_layers_masks(tmp_path, monkeypatch,
                                                                                       traintype):
    """Keras's saving reads every attribute of a layer: a mask there would be searched or drawn at every save."""
    from masks.layers import MaskedLayer
    from training import statistics
    model = build_type("LeNet", traintype)
    eager = {layer.name: np.asarray(layer.mask()) for layer in masked_layers(model)}
    np.testing.assert_equal(statistics.mask_reader(model)(), eager)
    calls = []
    real = MaskedLayer.mask_at
    monkeypatch.setattr(MaskedLayer, "mask_at", lambda self, training: calls.append(self.name) or real(self, training))
    model.save(tmp_path / "model.keras")
    assert calls == [] and (tmp_path / "model.keras").exists()


def test_supermask_layer_samples_a_new_mask_each_training_call_and_evaluates_one_fixed_sample():
    layer = MaskedDense(50, mask_type="bernoulli", noise_seed=17,
                        score_initializer=keras.initializers.Constant(0.0))
    x = np.ones((1, 40), np.float32)
    layer.build(x.shape)
    evaluated = [np.asarray(layer.mask()) for _ in range(2)] + [np.asarray(layer.mask_at(training=False))]
    assert all(np.array_equal(mask, evaluated[0]) for mask in evaluated) and int(layer.draws.numpy()) == 0
    sampled = [np.asarray(layer.mask_at(training=True)) for _ in range(3)]
    assert int(layer.draws.numpy()) == 3
    assert not np.array_equal(sampled[0], sampled[1]) and not np.array_equal(sampled[1], sampled[2])
    assert abs(np.mean(sampled) - 0.5) < 0.02  # sigmoid(0)
    np.testing.assert_array_equal(np.asarray(layer.mask()), evaluated[0])


def test_signed_supermask_threshold_is_fixed_from_the_initial_scores():
    model = build_type("LeNet", "SignedSupermask")
    for layer in masked_layers(model):
        scores = np.asarray(layer.scores)
        np.testing.assert_allclose(float(np.asarray(layer.threshold)),
                                   functions.SIGNED_THRESHOLD_FRACTION * np.max(np.abs(scores)), rtol=1e-6)
        mask = np.asarray(layer.mask())
        assert set(np.unique(mask)) == {-1.0, 0.0, 1.0}
        layer.scores.assign(scores * 0.5)  # the threshold stays: more weights are hidden
        assert np.count_nonzero(np.asarray(layer.mask()) == 0) > np.count_nonzero(mask == 0)


@pytest.mark.slow
@pytest.mark.parametrize("traintype", sorted(RIVALS))
def test_rival_model_saved_and_reloaded_gives_same_predictions_and_state(tmp_path, traintype):
    model = build_type("LeNet", traintype)
    for layer in masked_layers(model):
        layer.scores.assign(np.random.default_rng(2).standard_normal(layer.scores.shape).astype(np.float32))
        if layer.draws is not None:
            layer.draws.assign(41)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    x = inputs_for("LeNet")
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    for a, b in zip(masked_layers(model), masked_layers(reloaded)):
        assert a.get_config() == b.get_config()
        for variable, again in zip(a.weights, b.weights):
            np.testing.assert_array_equal(np.asarray(variable), np.asarray(again))


def test_edge_popup_layer_refuses_a_fraction_outside_zero_to_one():
    for keep in (None, 0.0, 1.5):
        with pytest.raises(ValueError, match="keep in"):
            MaskedDense(3, mask_type="topk", keep=keep)


def test_resnet20_follows_the_authors_builder():
    """ResNetBuilder.py (rist-ro/training-neural-connectivities): 19 3x3 convs, two 1x1 stride-2 projections,
    nine adds, BatchNorm after every 3x3 conv, one softmax (theirs applies it twice)."""
    model = networks.build("ResNet20", INPUT_SHAPES["ResNet20"])
    layers = masked_layers(model)
    assert [layer.kernel_size for layer in layers[:-1]].count((3, 3)) == 19
    shortcuts = [layer for layer in layers if layer.name.startswith("shortcut")]
    assert [(layer.kernel_size, layer.strides, layer.filters) for layer in shortcuts] == [((1, 1), (2, 2), 32),
                                                                                         ((1, 1), (2, 2), 64)]
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Add") == 9 and kinds.count("BatchNormalization") == 19 and kinds.count("Softmax") == 0
    assert [layer.name for layer in model.layers].count("average_pool_1") == 1 and model.output_shape == (None, 10)
    assert len({layer.name for layer in model.layers}) == len(model.layers)


@pytest.mark.parametrize("traintype", ["Baseline", "FreePruning"])
def test_batchnorm_modes_learn_gamma_and_beta_or_none_and_track_statistics(traintype):
    options = TRAINING_TYPES[traintype].layer_options(TRAINING_TYPES[traintype].resolve_mask_type(None), None)
    trainable = networks.build("ResNet20", INPUT_SHAPES["ResNet20"], **options)
    frozen = networks.build("ResNet20", INPUT_SHAPES["ResNet20"], batchnorm="frozen", **options)
    assert {v.path.split("/")[-1] for v in trainable.trainable_variables if v.path.startswith("bn_")} == {"gamma",
                                                                                                         "beta"}
    assert not [v for v in frozen.weights if v.path.startswith("bn_") and v.trainable]
    for model in (trainable, frozen):
        assert {v.path.split("/")[-1] for v in model.non_trainable_variables if v.path.startswith("bn_")} == {
            "moving_mean", "moving_variance"}
    with pytest.raises(ValueError, match="batchnorm must be one of trainable, frozen"):
        networks.build("ResNet20", INPUT_SHAPES["ResNet20"], batchnorm="learned")


@pytest.mark.parametrize("mask_type", [None, "mask"])
def test_bias_is_frozen_when_masked_and_trained_in_baseline(mask_type):
    layer = MaskedConv2D(4, kernel_size=1, use_bias=True, bias_initializer="ones", mask_type=mask_type)
    layer.build((None, 5, 5, 3))
    assert layer.bias.trainable == (mask_type is None)
    assert any(v is layer.bias for v in layer.trainable_variables) == (mask_type is None)
