"""The training recipe: augmentation, optimizers, weight decay and schedules, on both backends."""
import json

import keras
import numpy as np
import pytest

import MaskTrainer
import datasets
from tests.helpers import comparable_log, new_run, only_run
from training import recipe
from settings.config import ConfigError, RunConfig

SLICE = ["--trainsize", "1000", "--maxepochs", "2", "--seed", "5"]


def reference_augment(images: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Pad by 4 with zeros, crop at the shifted corner, then flip: as the field's CIFAR recipes do it."""
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    out = np.empty_like(images)
    for index, (down, right, flip) in enumerate(draws):
        crop = padded[index, 4 + down:4 + down + height, 4 + right:4 + right + width]
        out[index] = crop[:, ::-1] if flip else crop
    return out


def test_augmentation_is_pad_crop_and_flip_pixel_for_pixel():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 32, 32, 3)).astype(np.float32)
    draws = recipe.augmentation_draws(seed=3, epoch=1, size=64)
    assert draws[:, :2].min() == -4 and draws[:, :2].max() == 4 and set(draws[:, 2]) == {0, 1}
    moved = keras.ops.convert_to_numpy(recipe.augment(keras.ops.convert_to_tensor(images),
                                                      keras.ops.convert_to_tensor(draws)))
    assert np.array_equal(moved, reference_augment(images, draws))


def test_augmentation_repeats_under_one_seed_and_differs_under_another():
    first = recipe.augmentation_draws(seed=3, epoch=2, size=1000)
    assert np.array_equal(first, recipe.augmentation_draws(seed=3, epoch=2, size=1000))
    assert not np.array_equal(first, recipe.augmentation_draws(seed=4, epoch=2, size=1000))
    assert not np.array_equal(first, recipe.augmentation_draws(seed=3, epoch=3, size=1000))


def keras_example_lr_schedule(epoch: int) -> float:
    """`lr_schedule` of the Keras CIFAR-10 ResNet example (200 epochs, epoch counted from 0)."""
    lr = 1e-3
    if epoch > 180:
        lr *= 0.5e-3
    elif epoch > 160:
        lr *= 1e-3
    elif epoch > 120:
        lr *= 1e-2
    elif epoch > 80:
        lr *= 1e-1
    return lr


def test_steps_schedule_is_the_keras_resnet_example_at_200_epochs():
    rates = [recipe.learning_rate("steps", 1e-3, epoch, 200) for epoch in range(1, 201)]
    assert rates == [keras_example_lr_schedule(epoch) for epoch in range(200)]


def test_cosine_starts_at_the_rate_and_falls_towards_zero():
    rates = [recipe.learning_rate("cosine", 0.1, epoch, 10) for epoch in range(1, 11)]
    assert rates[0] == 0.1 and all(a > b for a, b in zip(rates, rates[1:])) and 0 < rates[-1] < 0.003
    assert recipe.learning_rate("constant", 0.1, 7, 10) == 0.1


def test_weight_decay_adds_rate_times_value_to_the_gradient():
    """One SGD step with weight decay moves each score by lr x (gradient + rate x score) (mask type `mask`)."""
    from training import backends
    import networks
    x = np.random.default_rng(1).normal(size=(20, 28, 28, 1)).astype(np.float32)
    y = np.arange(20, dtype=np.int32) % 10
    moved = {}
    for rate in (0.0, 0.5):
        model = networks.build("LeNet", (28, 28, 1), seed=4)
        before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        optimizer = keras.optimizers.SGD(0.1)
        steps = backends.current().Steps(model, optimizer, x, y, 20, True, 1, weight_decay=rate)
        steps.train_epoch(np.arange(20))
        moved[rate] = [keras.ops.convert_to_numpy(v) - b for v, b in zip(model.trainable_variables, before)]
    for plain, decayed, value in zip(moved[0.0], moved[0.5], before):
        np.testing.assert_allclose(decayed - plain, -0.1 * 0.5 * value, rtol=1e-4, atol=1e-6)


def test_a_recipe_run_records_its_settings_and_its_own_directory(tmp_path, mnist_directory):
    flags = ["--optimizer", "sgd", "--momentum", "0.9", "--weightdecay", "0.0001", "--lrschedule", "cosine",
             "--augment", "--lr", "0.1"]
    run = new_run(tmp_path, mnist_directory, *SLICE, *flags)
    run.train()
    files = only_run(tmp_path)
    config = json.loads(files.config.read_text())
    assert (config["optimizer"], config["momentum"], config["weightdecay"], config["lrschedule"],
            config["augment"], config["batchnorm"]) == ("sgd", 0.9, 0.0001, "cosine", True, None)
    assert files.directory.name == "mask_relu_he_LR0.1_sgd_M0.9_WD0.0001_cosine2_aug"
    assert float(run.optimizer.learning_rate) == pytest.approx(recipe.learning_rate("cosine", 0.1, 2, 2))
    log = json.loads(files.log_json.read_text())
    assert log["testAccuracy"][-1] > log["testAccuracy"][0] + 0.1  # it learns


def test_only_the_datasets_whose_mirror_images_keep_their_labels_are_flipped():
    flipped = recipe.augmentation_draws(seed=3, epoch=2, size=1000)
    shifted = recipe.augmentation_draws(seed=3, epoch=2, size=1000, flips=False)
    assert set(flipped[:, 2]) == {0, 1} and set(shifted[:, 2]) == {0}
    assert np.array_equal(shifted[:, :2], flipped[:, :2])  # the same shifts, flipped or not
    assert {name: datasets.get(name).mirror_symmetric for name in datasets.DATASETS} == {
        "mnist": False, "fashion_mnist": True, "cifar10": True}


def test_a_run_recorded_before_mnist_stopped_being_flipped_goes_on_flipping(tmp_path, mnist_directory, monkeypatch):
    assert MaskTrainer.main(["--outputpath", str(tmp_path), "--datadir", str(mnist_directory), "--trainsize", "500",
                             "--maxepochs", "1", "--seed", "5", "--augment"]) == 0
    files = only_run(tmp_path)
    record = json.loads(files.config.read_text())
    assert record["augmentFlips"] is False
    del record["augmentFlips"]  # as the versions that flipped every dataset wrote it
    files.config.write_text(json.dumps(record))
    asked, draw = [], recipe.augmentation_draws

    def recorded_draws(*args, **kwargs):
        asked.append(kwargs)
        return draw(*args, **kwargs)
    monkeypatch.setattr(recipe, "augmentation_draws", recorded_draws)
    assert MaskTrainer.main(["--resume", str(files.config), "--maxepochs", "2"]) == 0
    assert asked == [{"flips": True}]


def test_augmentation_changes_training_and_repeats_bit_for_bit(tmp_path, mnist_directory, monkeypatch):
    drawn, draw = [], recipe.augmentation_draws

    def recorded_draws(*args, **kwargs):
        drawn.append(draw(*args, **kwargs))
        return drawn[-1]
    monkeypatch.setattr(recipe, "augmentation_draws", recorded_draws)
    for name, flags in (("plain", []), ("augmented", ["--augment"]), ("again", ["--augment"])):
        assert MaskTrainer.main(["--outputpath", str(tmp_path / name), "--datadir", str(mnist_directory),
                                 *SLICE, *flags]) == 0
    plain, augmented, again = (comparable_log(only_run(tmp_path / name).log_json)
                               for name in ("plain", "augmented", "again"))
    assert len(drawn) == 4 and not any(draws[:, 2].any() for draws in drawn)  # MNIST's digits are never flipped
    assert augmented == again
    assert augmented["testAccuracy"][0] == plain["testAccuracy"][0]  # the same network before training
    assert augmented["trainLoss"][1:] != plain["trainLoss"][1:]


def test_the_paper_recipe_leaves_the_identity_of_earlier_runs_unchanged():
    """A configuration written before the recipe settings existed resumes as the same run (same digest)."""
    settings = RunConfig(seed=3, dataset="mnist")
    old = {key: value for key, value in settings.to_dict().items()
           if key not in ("optimizer", "momentum", "weightdecay", "lrschedule", "augment", "batchnorm", "keep")}
    assert RunConfig.from_dict(old, "old", complete=True).digest() == settings.digest()
    assert "optimizer" not in settings.identity() and "augment" not in settings.identity()
    assert RunConfig(seed=3, dataset="mnist", augment=True).digest() != settings.digest()


@pytest.mark.parametrize("settings, message", [
    (dict(momentum=0.9), "--momentum is for --optimizer sgd, not adam"),
    (dict(nettype="Conv2", batchnorm="frozen"), "--batchnorm is for networks with BatchNorm"),
    (dict(momentum=1.0), "momentum 1.0 is not a momentum in [0, 1)"),
    (dict(weightdecay=-1e-4), "weightdecay -0.0001 is not a non-negative number"),
    (dict(lrschedule="linear"), "lrschedule 'linear' is not one of constant, cosine, steps"),
    (dict(augment="yes"), "augment 'yes' is not true or false"),
    (dict(optimizer="rmsprop"), "optimizer 'rmsprop' is not one of adam, sgd"),
])
def test_bad_recipe_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        RunConfig.from_dict(settings, "study")


def test_a_scheduled_run_is_its_epochs_and_cannot_be_extended(tmp_path, mnist_directory, capsys):
    """A schedule spans --maxepochs: another length is another run (its own directory and digest), and a finished
    run is not extended over a schedule it did not follow; a constant rate still extends."""
    flags = ["--outputpath", str(tmp_path), "--datadir", str(mnist_directory), "--trainsize", "500", "--seed", "2"]
    assert MaskTrainer.main([*flags, "--maxepochs", "1", "--lrschedule", "cosine"]) == 0
    files = only_run(tmp_path)
    assert files.directory.name == "mask_relu_he_LR0.001_cosine1"
    capsys.readouterr()
    assert MaskTrainer.main(["--resume", str(files.config), "--maxepochs", "3"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "follows --lrschedule cosine over its 1 epochs; it cannot be extended to 3" in error
    assert RunConfig(lrschedule="cosine", maxepochs=3).digest() != RunConfig(lrschedule="cosine").digest()
    assert RunConfig(maxepochs=3).digest() == RunConfig().digest()
