"""One definition of a run's settings: every field, its default, its choices and its check.

MaskTrainer's command line, the study runner, Plotter's default directory and the `Config_ID<id>.json` file all
read `RunConfig`, so a default changed here changes everywhere. The choices come from the registries, imported
only when they are asked for: reading the defaults loads no Keras. Every value, from the command line, a study
file or a configuration file being resumed, passes the same checks and fails with one line naming it.
"""
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from settings import identity as run_identity, types as training_types
from settings.identity import DIRECTORY_SETTINGS, NOT_IDENTITY


class ConfigError(ValueError):
    """A setting that is missing, of the wrong type or out of range; the message is one line naming it."""


def _network_names() -> list[str]:
    import networks
    return list(networks.NETWORKS)


def _initializer_names() -> list[str]:
    import initializers
    return list(initializers.INITIALIZERS)


def _activation_names() -> list[str]:
    import networks
    return list(networks.ACTIVATIONS)


def _mask_type_names() -> list[str]:
    """Every mask type some training type uses (the registry `masks.MASK_TYPES` holds their functions; a test
    keeps the two the same), read from the training types so this floor needs nothing of `masks`."""
    return list(dict.fromkeys(name for kind in training_types.TRAINING_TYPES.values() for name in kind.mask_types))


def _batchnorm_modes() -> list[str]:
    import networks
    return list(networks.BATCHNORM_MODES)


def _dataset_names() -> list[str]:
    import datasets
    return list(datasets.DATASETS)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float (an int too large for a float is not: it would overflow on conversion)."""
    if _is_int(value):
        return abs(value) < 2**1023
    return isinstance(value, float) and math.isfinite(value)


# A check returns what the value must be (for the message) when it fails, else None.
def positive_integer(value) -> str | None:
    return None if _is_int(value) and value > 0 else "a positive integer"


def positive_number(value) -> str | None:
    return None if _is_number(value) and value > 0 else "a positive number"


def probability(value) -> str | None:
    return None if _is_number(value) and 0 <= value <= 1 else "a probability in [0, 1]"


def non_negative(value) -> str | None:
    return None if _is_number(value) and value >= 0 else "a non-negative number"


def momentum_value(value) -> str | None:
    return None if _is_number(value) and 0 <= value < 1 else "a momentum in [0, 1)"


def switch(value) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def kept_fraction(value) -> str | None:
    return None if _is_number(value) and 0 < value <= 1 else "a fraction in (0, 1]"


def seed_value(value) -> str | None:
    return None if _is_int(value) and 0 <= value < 2**31 else "a seed in [0, 2^31)"


def nonempty_text(value) -> str | None:
    return None if isinstance(value, str) and value else "a non-empty string"


def setting(default, help: str, *, check: Callable | None = None, choices: Callable[[], list[str]] | None = None,
            parse: type = str, optional: bool = False):
    """A dataclass field with what argparse and the checks need: help, choices or check, and the text parser."""
    return field(default=default, metadata={"help": help, "check": check, "choices": choices, "parse": parse,
                                            "optional": optional})


@dataclass(frozen=True)
class RunConfig:
    """The settings of one run (the flags of MaskTrainer.py); the seed, data and outcome are recorded beside them."""
    nettype: str = setting("LeNet", "network", choices=_network_names)
    traintype: str = setting("FreePruning", "FreeFlipping is another name for SignFlipping",
                             choices=training_types.names)
    initializer: str = setting("he", "distribution of the frozen weights", choices=_initializer_names)
    activation: str = setting("relu", "hidden-layer activation", choices=_activation_names)
    masktype: str | None = setting(None, "default: the training type's own (mask for pruning types and Baseline, "
                                         "flip for flipping types; topk, bernoulli, signed for the rivals)",
                                   choices=_mask_type_names, optional=True)
    batchsize: int = setting(25, "mini-batch size", check=positive_integer, parse=int)
    maxepochs: int = setting(20, "epochs to train", check=positive_integer, parse=int)
    seed: int = setting(0, "0 draws a fresh seed and records it", check=seed_value, parse=int)
    p1: float = setting(0.5, "probability of a positive weight (heconstant, binary)", check=probability, parse=float)
    lr: float = setting(1e-3, "learning rate (the first epoch's, under a schedule)", check=positive_number,
                        parse=float)
    outputpath: str = setting("Outputs", "root of the results tree", check=nonempty_text)
    dataset: str | None = setting(None, "default: the network's (mnist for LeNet, cifar10 for the others)",
                                  choices=_dataset_names, optional=True)
    datadir: str | None = setting(None, "folder with mnist/, cifar10/, fashion-mnist/ (default: $MASKTRAINER_DATA)",
                                  check=nonempty_text, optional=True)
    trainsize: int | None = setting(None, "train on the first N training images only (default: all)",
                                    check=positive_integer, parse=int, optional=True)
    jit: str = setting("auto", "compile the training loop with XLA (auto: as measured best per backend and device)",
                       choices=lambda: ["auto", "on", "off"])
    precision: str = setting("float32", "Keras dtype policy; the mixed ones change numerics (for GPUs)",
                             choices=lambda: ["float32", "mixed_float16", "mixed_bfloat16"])
    keep: float | None = setting(None, f"EdgePopup only: the fraction K of each layer's weights kept, in (0, 1] "
                                       f"(default {training_types.get('EdgePopup').default_keep})",
                                 check=kept_fraction, parse=float, optional=True)
    # The training recipe (README, "Training recipes"): the paper's Adam at a constant rate unless a network's
    # registry entry (`networks.NetworkSpec.recipe`) or the user asks otherwise.
    optimizer: str = setting("adam", "adam or sgd", choices=lambda: ["adam", "sgd"])
    momentum: float = setting(0.0, "SGD momentum, in [0, 1)", check=momentum_value, parse=float)
    weightdecay: float = setting(0.0, "L2 penalty on every trained variable: its gradient gains weightdecay x value",
                                 check=non_negative, parse=float)
    lrschedule: str = setting("constant", "learning rate per epoch: constant, cosine (towards 0 at maxepochs) or "
                                          "steps (the Keras ResNet example's, scaled to maxepochs)",
                              choices=lambda: ["constant", "cosine", "steps"])
    augment: bool = setting(False, "random translations by up to 4 pixels and horizontal flips of the training "
                                   "images, drawn from (seed, epoch); MNIST is not flipped", check=switch, parse=bool)
    batchnorm: str | None = setting(None, "networks with BatchNorm: trainable (gamma and beta learned) or frozen "
                                          "(no affine parameters); default trainable",
                                    choices=_batchnorm_modes, optional=True)

    @staticmethod
    def problem(name: str, value) -> str | None:
        """Why `value` cannot be setting `name` (one phrase), or None when it can."""
        metadata = _FIELDS[name].metadata
        if value is None and metadata["optional"]:
            return None
        if metadata["parse"] is float and _is_number(value):  # 1 is as good a learning rate as 1.0
            value = float(value)
        if metadata["choices"] is not None:
            choices = metadata["choices"]()
            return None if value in choices else f"not one of {', '.join(map(str, choices))}"
        requirement = metadata["check"](value)
        return None if requirement is None else f"not {requirement}"

    @classmethod
    def from_dict(cls, data: dict, source: str, complete: bool = False) -> "RunConfig":
        """The settings among `data`'s keys (others, such as the recorded seed and status, are ignored).

        `complete`: every setting must be present (a configuration file), but for those added since (a file
        written before `keep` existed has none); else missing ones take the network's recipe, then the defaults
        (the command line, a study's grid point). Each value is checked (`problem`); ConfigError names `source`
        and the setting.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a table of settings")
        missing = [name for name in _FIELDS if name not in data and name not in ADDED_SINCE]
        if complete and missing:
            raise ConfigError(f"{source}: missing setting {missing[0]!r}")
        values = {name: data[name] for name in _FIELDS if name in data}
        for name, value in values.items():
            if _FIELDS[name].metadata["parse"] is float and _is_int(value) and _is_number(value):
                values[name] = value = float(value)
            reason = cls.problem(name, value)
            if reason:
                raise ConfigError(f"{source}: {name} {value!r} is {reason}")
        if not complete:
            values = {**network_recipe(values.get("nettype", default("nettype"))), **values}
        return cls(**values).resolved(source)

    def resolved(self, source: str = "settings") -> "RunConfig":
        """Canonical training-type name, the mask type it implies, EdgePopup's default `keep` and the BatchNorm
        mode of a network that has BatchNorm; ConfigError when the mask type does not fit, `keep` is given to a
        type that keeps no fixed fraction, `batchnorm` to a network without BatchNorm, momentum to Adam, or a
        dataset whose images the network cannot take."""
        import networks
        training_type = training_types.get(self.traintype)
        try:
            masktype = training_type.resolve_mask_type(self.masktype)
            keep = training_type.resolve_keep(self.keep)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
        network = networks.get(self.nettype)
        if network.image_size is not None:
            import datasets
            height, width = datasets.DATASETS[self.dataset_name()].image_shape[:2]
            if (height, width) != (network.image_size,) * 2:
                raise ConfigError(f"{source}: --nettype {self.nettype} takes {network.image_size}x"
                                  f"{network.image_size} images, not the {height}x{width} of {self.dataset_name()}")
        has_batchnorm = network.batchnorm
        if self.batchnorm is not None and not has_batchnorm:
            raise ConfigError(f"{source}: --batchnorm is for networks with BatchNorm "
                              f"({', '.join(networks.with_batchnorm())}), not --nettype {self.nettype}")
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError(f"{source}: --momentum is for --optimizer sgd, not {self.optimizer}")
        batchnorm = (self.batchnorm or "trainable") if has_batchnorm else None
        return replace(self, traintype=training_type.name, masktype=masktype, keep=keep, batchnorm=batchnorm)

    @property
    def training_type(self) -> training_types.TrainingType:
        return training_types.get(self.traintype)

    def dataset_name(self) -> str:
        """The dataset: the one set, else the network's default."""
        if self.dataset is not None:
            return self.dataset
        import networks
        return networks.get(self.nettype).default_dataset

    def to_dict(self) -> dict:
        return asdict(self)

    def experiment_directory(self) -> Path:
        """Where the run's files go (SPEC.md section 7)."""
        config = self.resolved()
        return run_identity.experiment_directory(config.outputpath, config.traintype, config.nettype, config.p1,
                                                 config.masktype, config.activation, config.initializer, config.lr,
                                                 config.keep, config.recipe_tags())

    def recipe_tags(self) -> list[str]:
        """The recipe settings that differ from the paper's (Adam, constant rate, no augmentation, BatchNorm
        trained), for the directory name: runs of another recipe never share an experiment directory."""
        tags = [] if self.optimizer == default("optimizer") else [self.optimizer]
        tags += [f"M{run_identity.format_number(self.momentum)}"] if self.momentum else []
        tags += [f"WD{run_identity.format_number(self.weightdecay)}"] if self.weightdecay else []
        tags += [f"{self.lrschedule}{self.maxepochs}"] if self.spans_its_epochs() else []
        tags += ["aug"] if self.augment else []
        return tags + (["BNfrozen"] if self.batchnorm == "frozen" else [])

    def identity(self) -> dict:
        """The settings that make two runs the same experiment: all but where the files are, how the loop was
        compiled, and how many epochs were asked for (a finished run can be extended; not under a schedule, which
        spans them: `spans_its_epochs`). A setting that does not
        apply (`keep` but for EdgePopup, `batchnorm` without BatchNorm), or one added since that is at its
        default, is left out, so the identity of a run recorded before it existed holds."""
        config = replace(self.resolved(), dataset=self.dataset_name())
        return {name: value for name, value in config.to_dict().items()
                if (name not in NOT_IDENTITY or name == "maxepochs" and config.spans_its_epochs())
                and not (name in ADDED_SINCE and value == default(name))}

    def spans_its_epochs(self) -> bool:
        """Whether the learning rate follows a schedule over `maxepochs`: the epochs are then part of the run (in
        its identity and directory), and a finished run cannot be extended."""
        return self.lrschedule != default("lrschedule")

    def digest(self) -> str:
        """A short hash of `identity()`; a checkpoint carries it so it cannot be resumed into another run."""
        identity = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(identity.encode()).hexdigest()[:16]


_FIELDS = {item.name: item for item in fields(RunConfig)}
# Settings added after configuration files were first written: a file without them takes their default.
ADDED_SINCE = ("keep", "optimizer", "momentum", "weightdecay", "lrschedule", "augment", "batchnorm")
SETTING_NAMES = tuple(_FIELDS)
# The settings that must agree, beside those the experiment directory names, for two recorded runs to be one run
# (`settings.identity`): the seed, the dataset, the batch size, ...
MATCHED_SETTINGS = tuple(name for name in SETTING_NAMES if name not in DIRECTORY_SETTINGS + NOT_IDENTITY)


def default(name: str):
    """The default of setting `name` (before a network's recipe: `network_recipe`)."""
    return _FIELDS[name].default


def network_recipe(nettype: str) -> dict:
    """The settings whose defaults network `nettype` changes (its registry entry's recipe; {} if unknown)."""
    import networks
    return dict(networks.NETWORKS[nettype].recipe) if nettype in networks.NETWORKS else {}
