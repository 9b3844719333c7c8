"""One run from its configuration: build, train epoch by epoch, record, checkpoint, resume.

The configuration dict (what `Config_ID<id>.json` holds) is the single description of a run; a resumed run
is rebuilt from it alone. After every epoch the log is rewritten and then the checkpoint, so a run killed at
any moment resumes from its last finished epoch and ends exactly where an uninterrupted run ends.
"""
import math
import secrets
import sys
import time
from datetime import datetime, timezone
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

import datasets
import networks
import runlog
from masks import masked_layers, training_types
from training import checkpoint, statistics
from training.steps import CompiledSteps

# Whether `--jit auto` compiles with XLA, per device and network (BENCHMARKS.md). On CPU XLA makes the LeNet
# loop about 3 times faster and ConvN steps 15-26% faster; convolutional networks then take one step per
# compiled call (training.steps.default_steps_per_call). GPU entries are not measured yet.
JIT_AUTO = {"CPU": {"LeNet": True, "Conv2": True, "Conv4": True, "Conv6": True},
            "GPU": {"LeNet": True, "Conv2": False, "Conv4": False, "Conv6": False}}


class RunFailed(RuntimeError):
    """The run stopped on its own (a NaN loss); the reason is in its log and configuration."""


def draw_seed() -> int:
    """A fresh seed for `--seed 0`, recorded in the configuration so the run can be repeated."""
    return secrets.randbelow(2**31 - 2) + 1


def use_jit(jit: str, nettype: str) -> bool:
    if jit != "auto":
        return jit == "on"
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    return JIT_AUTO[device][nettype]


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The shuffle of epoch `epoch`: a function of (seed, epoch) alone, so resuming needs no RNG state."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def library_versions() -> dict[str, str]:
    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_log(layer_names: list[str]) -> dict:
    log = {key: [] for key in runlog.EPOCH_KEYS}
    log.update(totalWeights=0, remainingWeightsPerLayer=[], layerNames=layer_names, status="running")
    return log


class Run:
    """A run being trained: the model, its compiled steps, the data and the files it writes."""

    def __init__(self, config: dict, files: runlog.RunFiles, verbose: bool = False,
                 callbacks: list[keras.callbacks.Callback] | None = None,
                 print_line: Callable[[str], None] = print):
        self.config, self.files, self.verbose, self.print_line = config, files, verbose, print_line
        keras.utils.set_random_seed(config["seed"])
        tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy(config["precision"])
        raw, source = datasets.load_raw(config["dataset"], datasets.resolve_data_directory(config["datadir"]))
        self.data = datasets.preprocess(raw, config["trainsize"])
        config.update(datasetSource=source, datasetSizes=self.data.sizes())
        training_type = training_types.get(config["traintype"])
        self.model = networks.build(
            config["nettype"], self.data.x_train.shape[1:], activation=config["activation"],
            mask_type=training_type.layer_mask_type(config["masktype"]), initializer=config["initializer"],
            p1=config["p1"], seed=config["seed"], rewards_unchanged=training_type.rewards_unchanged)
        self.optimizer = keras.optimizers.Adam(learning_rate=config["lr"])
        config.setdefault("jitCompiled", use_jit(config["jit"], config["nettype"]))  # a resumed run keeps its own
        self.steps = CompiledSteps(self.model, self.optimizer, self.data.x_train, self.data.y_train,
                                   config["batchsize"], config["jitCompiled"])
        self.initial_mask_signs = {name: np.sign(mask) for name, mask in
                                   statistics.current_masks(self.model).items()}
        self.callbacks = keras.callbacks.CallbackList(callbacks or [], model=self.model)

    def record_epoch(self, log: dict, seconds: float) -> None:
        """Evaluate the three sets and the masks, and append one epoch to `log`."""
        for prefix, x, y in (("train", self.data.x_train, self.data.y_train),
                             ("val", self.data.x_val, self.data.y_val),
                             ("test", self.data.x_test, self.data.y_test)):
            loss, accuracy = self.steps.evaluate(x, y)
            log[f"{prefix}Loss"].append(loss)
            log[f"{prefix}Accuracy"].append(accuracy)
        stats = statistics.mask_statistics(self.model, self.initial_mask_signs)
        log["remainingWeights"].append(stats.remaining_weights)
        log["changedWeights"].append(stats.changed_weights)
        log["remainingWeightsPerLayer"].append(stats.per_layer)
        log["epochSeconds"].append(seconds)
        log["totalWeights"] = stats.total_weights

    def resume_point(self) -> tuple[dict, int]:
        """The log to continue and the last finished epoch (0 and a new log for a fresh run)."""
        if self.files.checkpoint.exists() and self.files.log_json.exists():
            epoch = checkpoint.restore(self.files.checkpoint, self.model, self.optimizer)
            log = runlog.read_log(self.files.log_json)
            if len(log["testAccuracy"]) <= epoch:
                raise runlog.RunLogError(f"{self.files.log_json}: fewer epochs than its checkpoint")
            for key in runlog.EPOCH_KEYS + ("remainingWeightsPerLayer",):
                del log[key][epoch + 1:]
            return log, epoch
        log = new_log([layer.name for layer in masked_layers(self.model)])
        self.record_epoch(log, 0.0)
        runlog.write_npz(self.files.weights, statistics.kernels(self.model))
        runlog.write_log(self.files, log)
        self.print_line(self.summary_line(log, 0))
        return log, 0

    def summary_line(self, log: dict, epoch: int) -> str:
        changed_means = self.config["changedMeans"]
        changed = "" if changed_means == "none" else \
            f"{changed_means} {log['changedWeights'][epoch] / log['totalWeights']:7.2%}  "
        return (f"epoch {epoch:3d}/{self.config['maxepochs']}  "
                f"loss {log['trainLoss'][epoch]:.4f}  acc train {log['trainAccuracy'][epoch]:.4f} "
                f"val {log['valAccuracy'][epoch]:.4f} test {log['testAccuracy'][epoch]:.4f}  "
                f"{changed}{log['epochSeconds'][epoch]:.1f} s")

    def train_epoch(self, epoch: int) -> float:
        """Train one epoch; returns its seconds (the training pass only)."""
        order = epoch_order(self.config["seed"], epoch, len(self.data.y_train))
        progress = None
        if self.verbose:
            bar = keras.utils.Progbar(-(-len(order) // self.config["batchsize"]), stateful_metrics=["loss"])
            progress = lambda steps, loss: bar.update(steps, [("loss", loss)])  # noqa: E731
        self.steps.compile(order)
        start = time.perf_counter()
        mean_loss = self.steps.train_epoch(order, progress)
        seconds = time.perf_counter() - start
        if not math.isfinite(mean_loss):
            raise RunFailed(f"loss became {mean_loss} during epoch {epoch}")
        return seconds

    def set_status(self, log: dict, status: str, reason: str | None = None) -> None:
        log["status"] = status
        self.config.update(status=status, endTime=now(), stopReason=reason)
        runlog.write_log(self.files, log)
        runlog.write_json(self.files.config, self.config)

    def train(self) -> None:
        """Train from the last finished epoch to `maxepochs`, writing the log after every epoch."""
        runlog.write_json(self.files.config, self.config)
        log, done = self.resume_point()
        self.callbacks.on_train_begin()
        for epoch in range(done + 1, self.config["maxepochs"] + 1):
            self.callbacks.on_epoch_begin(epoch)
            try:
                seconds = self.train_epoch(epoch)
            except RunFailed as failure:
                self.set_status(log, "failed", str(failure))
                raise
            self.record_epoch(log, seconds)
            runlog.write_log(self.files, log)
            checkpoint.save(self.files.checkpoint, self.model, self.optimizer, epoch)
            self.print_line(self.summary_line(log, epoch))
            self.callbacks.on_epoch_end(epoch, {key: log[key][epoch] for key in runlog.EPOCH_KEYS})
        self.callbacks.on_train_end()
        runlog.write_npz(self.files.masks, statistics.current_masks(self.model))
        self.set_status(log, "finished")
        self.files.checkpoint.unlink(missing_ok=True)
