"""One run from its configuration: build, train epoch by epoch, record, checkpoint, resume, extend.

A run is its `RunConfig` (the settings) plus a record of what happened (the seed drawn, the data read, the
backend, the status); both go to `Config_ID<id>.json`, and a resumed run is rebuilt from that file alone.
Nothing is written before the data is loaded and checked. After every epoch the log is rewritten and then the
checkpoint, so a run killed at any moment resumes from its last finished epoch and ends exactly where an
uninterrupted run ends. A finished run leaves its model (`Model_ID<id>.keras`, optimizer state included), from
which `--resume` with a larger `--maxepochs` extends it.
"""
import math
import os
import secrets
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable

import keras
import numpy as np

import datasets
import initializers
import networks
import runlog
from datasets.preprocessing import Preprocessing
from masks.callbacks import kept_fraction_logs
from masks.layers import masked_layers
from settings.config import ConfigError, RunConfig
from settings.names import CLAIM_ENV, THREAD_ENV
from training import backends, checkpoint, provenance, recipe, statistics
from training.interrupts import DeferredInterrupt

# The per-epoch values under Keras's names, for callbacks such as EarlyStopping(monitor="val_accuracy").
KERAS_LOG_NAMES = {"trainLoss": "loss", "trainAccuracy": "accuracy", "valLoss": "val_loss",
                   "valAccuracy": "val_accuracy", "testLoss": "test_loss", "testAccuracy": "test_accuracy"}


class RunFailed(RuntimeError):
    """The run stopped on its own (a loss or accuracy that is not finite); the reason is in its files."""


def draw_seed() -> int:
    """A fresh seed for `--seed 0`, recorded in the configuration so the run can be repeated."""
    return secrets.randbelow(2**31 - 2) + 1


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The shuffle of epoch `epoch`: a function of (seed, epoch) alone, so resuming needs no RNG state."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def library_versions(backend) -> dict[str, str]:
    return {"python": sys.version.split()[0], "keras": keras.__version__, "numpy": np.__version__,
            **backend.versions()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_record(settings: RunConfig) -> tuple[RunConfig, dict]:
    """A new run's settings (seed drawn, dataset named) and its configuration record: those settings and the record
    fields. `Run` adds what loading the data tells to its own copy, `Run.record`, which is what the caller writes."""
    backend = backends.current()
    run_settings = replace(settings, seed=settings.seed or draw_seed(), dataset=settings.dataset_name())
    return run_settings, {
        **run_settings.to_dict(), "requestedSeed": settings.seed,
        "changedMeans": settings.training_type.changed_means,
        "scoreInitializer": settings.training_type.score_initializer, "runId": runlog.new_run_id(),
        # whether --augment flips this dataset's images; a record without it flipped every dataset
        "augmentFlips": datasets.get(run_settings.dataset).mirror_symmetric,
        "backend": backend.NAME, "versions": library_versions(backend), "threads": thread_settings(),
        "startTime": now(), "status": "running"}


def thread_settings() -> dict[str, str]:
    """The thread limits in force: a run resumed under other limits is not bit-identical to an uninterrupted one."""
    return {name: os.environ[name] for name in THREAD_ENV if name in os.environ}


def read_record(files: runlog.RunFiles) -> tuple[RunConfig, dict]:
    """A configuration file to resume: its settings, checked like the command line's, and the whole record."""
    config = runlog.read_config(files)
    settings, record = config.settings, config.data
    if settings.seed == 0 or settings.dataset is None:
        raise ConfigError(f"{files.config}: records no seed or dataset; it was not written by MaskTrainer")
    if not all(isinstance(record.get(key, False), bool) for key in ("jitCompiled", "augmentFlips")) or \
            not isinstance(record.get("threads", {}), dict):
        raise ConfigError(f"{files.config}: jitCompiled and augmentFlips should be true or false, threads a table")
    model_epoch = record.get("modelEpoch", 0)
    if isinstance(model_epoch, bool) or not isinstance(model_epoch, int) or model_epoch < 0:
        raise ConfigError(f"{files.config}: modelEpoch should be the epoch of the run's model, a whole number >= 0")
    backend = record.get("backend", "tensorflow")  # files from before the JAX backend were all TensorFlow's
    if backend != backends.current().NAME:
        raise ConfigError(f"{files.config}: run {files.run_id} was trained with KERAS_BACKEND={backend}; "
                          f"resume it with that backend")
    return settings, record


def new_log(layer_names: list[str]) -> dict:
    log = {key: [] for key in runlog.EPOCH_KEYS}
    log.update(totalWeights=0, remainingWeightsPerLayer=[], layerNames=layer_names, status="running")
    return log


def refresh_claim() -> None:
    """Touch the study runner's claim file, if this run was started under one, to show the run is alive."""
    claim = os.environ.get(CLAIM_ENV)
    if claim:
        try:
            os.utime(claim)
        except FileNotFoundError:  # released or taken over meanwhile: the runner that owns it decides
            pass


def changed_text(log: dict, epoch: int, changed_means: str) -> str:
    """The fraction changed at `epoch` for the epoch's line; the signed supermask's pruned and flipped apart."""
    total = log["totalWeights"]
    if changed_means == "none":
        return ""
    if changed_means == "pruned and flipped":
        flipped = runlog.flipped_weights(log, epoch)
        return f"pruned {(log['changedWeights'][epoch] - flipped) / total:7.2%} flipped {flipped / total:7.2%}  "
    return f"{changed_means} {log['changedWeights'][epoch] / total:7.2%}  "


def input_scale(initializer: str, model: keras.Model) -> float:
    """The factor the initializer's inputs are scaled by (1 but for `binary`), from the model's kernel shapes."""
    return initializers.get(initializer).input_scale([tuple(layer.kernel.shape) for layer in masked_layers(model)])


def check_precision(settings: RunConfig, model: keras.Model) -> None:
    """Refuse float16 where it cannot hold the scaled inputs: `binary`'s scale on the conv nets (1e-6 to 1e-11)
    would round them to zero or to a few bits, and the run would train a constant network to 10% (ConfigError)."""
    scale, smallest = input_scale(settings.initializer, model), float(np.finfo(np.float16).smallest_normal)
    if settings.precision == "mixed_float16" and scale < smallest:
        raise ConfigError(f"--precision mixed_float16 cannot hold the inputs of {settings.nettype} with --initializer "
                          f"{settings.initializer}, scaled by {scale:.3g}, below float16's smallest normal number "
                          f"{smallest:.3g}; use mixed_bfloat16 or float32")


class Run:
    """A run being trained: the model, its compiled steps, the data and the files it writes.

    The constructor loads and checks the data, builds the model and restores a resumed run's state, every file
    checked first; it writes nothing, so a refused resume changes no file. `record` is the caller's and stays as it
    is: the run's own copy, `self.record`, adds the data's source and sizes and the compilation chosen, and is what
    callers write (the configuration, before `train()`). `train()` writes.
    """

    def __init__(self, settings: RunConfig, record: dict, files: runlog.RunFiles, verbose: bool = False,
                 callbacks: list[keras.callbacks.Callback] | None = None,
                 print_line: Callable[[str], None] = print):
        self.settings, self.files = settings, files
        self.verbose, self.print_line = verbose, print_line
        self.backend = backends.current()
        self.backend.enable_determinism()  # every draw is seeded explicitly (weights, scores, shuffles): no global seed
        keras.mixed_precision.set_global_policy(settings.precision)
        raw, source = datasets.load_raw(settings.dataset, datasets.resolve_data_directory(settings.datadir))
        self.data = datasets.preprocess(raw, settings.trainsize)
        self.data_digests = provenance.data_digests(raw)  # recorded at epoch 0, checked on resuming
        self.record = {**record, "datasetSource": source, "datasetSizes": self.data.sizes()}
        training_type = settings.training_type
        network = networks.get(settings.nettype)
        batchnorm = {"batchnorm": settings.batchnorm} if network.batchnorm else {}
        self.model = networks.build(
            settings.nettype, self.data.x_train.shape[1:], activation=settings.activation,
            initializer=settings.initializer, p1=settings.p1, seed=settings.seed,
            **training_type.layer_options(settings.masktype, settings.keep), **batchnorm)
        check_precision(settings, self.model)
        # Named explicitly: Keras numbers unnamed optimizers per process (adam_2, ...), and the checkpoint keys
        # are variable paths, which start with the optimizer's name.
        self.optimizer = recipe.make_optimizer(settings.optimizer, settings.lr, settings.momentum)
        if settings.precision == "mixed_float16":  # float16 gradients underflow without loss scaling
            self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer, name="loss_scale_optimizer")
        # The model carries its optimizer, as under `fit`: callbacks read it, and the saved model includes it.
        self.model.compile(optimizer=self.optimizer, loss="sparse_categorical_crossentropy")
        # kept on resume
        self.record.setdefault("jitCompiled", self.backend.use_jit(settings.jit, network))
        self.steps = self.backend.Steps(
            self.model, self.optimizer, self.data.x_train, self.data.y_train, settings.batchsize,
            self.record["jitCompiled"], self.backend.steps_per_call(self.record["jitCompiled"], network.convolutional),
            settings.weightdecay)
        self.read_masks = statistics.mask_reader(self.model)
        self.layer_names = [layer.name for layer in masked_layers(self.model)]  # in the order of the logged counts
        self.callbacks = keras.callbacks.CallbackList(callbacks or [], model=self.model)
        self.interrupt = DeferredInterrupt()
        self.restored = self.restore()

    def preprocessing(self) -> dict[str, np.ndarray]:
        """What turns raw pixels into the network's input: x / 255, minus the mean image, over std, times input_scale."""
        return Preprocessing(self.data.mean_image, np.float32(self.data.std),
                             np.float32(input_scale(self.settings.initializer, self.model))).arrays()

    def record_epoch(self, log: dict, epoch: int, seconds: float) -> None:
        """Evaluate the three sets and the masks, and append epoch `epoch` to `log`; RunFailed if not finite."""
        values = {}
        for prefix, x, y in (("train", self.data.x_train, self.data.y_train),
                             ("val", self.data.x_val, self.data.y_val),
                             ("test", self.data.x_test, self.data.y_test)):
            values[f"{prefix}Loss"], values[f"{prefix}Accuracy"] = self.steps.evaluate(x, y)
        not_finite = [key for key, value in values.items() if not math.isfinite(value)]
        if not_finite:
            raise RunFailed(f"{not_finite[0]} became {values[not_finite[0]]} at epoch {epoch}")
        stats = statistics.mask_statistics(self.read_masks(), statistics.kernels(self.model))
        values.update(remainingWeights=stats.remaining_weights, changedWeights=stats.changed_weights,
                      epochSeconds=seconds)
        for key in runlog.EPOCH_KEYS:
            log[key].append(values[key])
        log["remainingWeightsPerLayer"].append(stats.per_layer)
        log["totalWeights"] = stats.total_weights

    def restore(self) -> tuple[dict, int] | None:
        """The log to continue and its last finished epoch, from the checkpoint, else from a finished run's
        model (to extend it); None for a run that has nothing to continue. Writes nothing, and first checks
        every file it rests on against the run's digests and its seed's draw (`training.provenance`)."""
        from_checkpoint = self.files.checkpoint.exists()
        # a run that finished once recorded its model: an extension stopped before its first checkpoint (status
        # running) continues from that model too, rather than from epoch 0 over the finished run's files
        finished_once = self.record.get("status") == "finished" or provenance.records_digest(self.record, "model")
        if not (from_checkpoint or finished_once):
            return None
        drawn, legacy = statistics.kernels(self.model), not provenance.records_digest(self.record, "data")
        provenance.check_saved_inputs(self.files, self.record, self.data_digests, drawn, self.preprocessing())
        frozen = None if self.settings.training_type.trains_weights else drawn
        if from_checkpoint:
            epoch, logged = checkpoint.restore(self.files.checkpoint, self.model, self.optimizer,
                                               (self.files.run_id, self.settings.digest()), frozen, legacy)
        else:
            digests = provenance.recorded(self.record, self.files.config)
            if digests.get("settings", self.settings.digest()) != self.settings.digest():  # as a checkpoint's owner
                raise ConfigError(f"{self.files.config}: its settings are not those run {self.files.run_id} finished "
                                  f"with (settings {digests['settings']}, now {self.settings.digest()})")
            checkpoint.restore_from_model(self.files.model, self.model, self.optimizer, digests.get("model"), frozen)
            epoch, logged = self.record.get("modelEpoch"), digests.get("log")  # both recorded at the finish
        log = runlog.read_log(self.files.log_json)
        if epoch is None:  # a run finished before modelEpoch: its model is the log's last epoch, unless an
            # extension logged one more before it was killed (the log then says running, not finished)
            epoch = len(log["testAccuracy"]) - (2 if log.get("status") == "running" else 1)
        if not from_checkpoint:
            self.record["modelEpoch"] = epoch  # kept from the first write on, before the log grows
        if len(log["testAccuracy"]) <= epoch:
            raise runlog.RunLogError(f"{self.files.log_json}: fewer epochs than its checkpoint or model")
        if epoch > self.settings.maxepochs:
            raise ConfigError(f"{self.files.config}: run {self.files.run_id} has trained {epoch} epochs, more than "
                              f"--maxepochs {self.settings.maxepochs}")
        for key in runlog.PER_EPOCH_KEYS:
            del log[key][epoch + 1:]
        provenance.check_log(self.files.log_json, log, logged, self.files.run_id)
        log["status"] = "running"
        if legacy:  # after the checks: a refusal stays one line
            print(provenance.legacy_warning(self.files.run_id), file=sys.stderr)
        return log, epoch

    def start(self) -> tuple[dict, int]:
        """Epoch 0 of a new run: the untrained network evaluated, its weights and preprocessing saved."""
        log = new_log(self.layer_names)
        self.record_epoch(log, 0, 0.0)
        weights, preprocessing = statistics.kernels(self.model), self.preprocessing()
        runlog.write_npz(self.files.weights, weights)
        runlog.write_npz(self.files.preprocessing, preprocessing)
        self.record[provenance.RECORD_KEY] = {"data": self.data_digests, "weights": provenance.array_digests(weights),
                                              "preprocessing": provenance.array_digests(preprocessing)}
        runlog.write_json(self.files.config, self.record)  # before the log: a run without a log starts afresh
        runlog.write_log(self.files, log)
        self.print_line(self.summary_line(log, 0))
        return log, 0

    def summary_line(self, log: dict, epoch: int) -> str:
        changed = changed_text(log, epoch, self.record["changedMeans"])
        return (f"epoch {epoch:3d}/{self.settings.maxepochs}  "
                f"loss {log['trainLoss'][epoch]:.4f}  acc train {log['trainAccuracy'][epoch]:.4f} "
                f"val {log['valAccuracy'][epoch]:.4f} test {log['testAccuracy'][epoch]:.4f}  "
                f"{changed}{log['epochSeconds'][epoch]:.1f} s")

    def train_epoch(self, epoch: int) -> float:
        """Train one epoch at its learning rate, on its augmentation if asked; returns its seconds (the training
        pass only)."""
        settings = self.settings
        order = epoch_order(settings.seed, epoch, len(self.data.y_train))
        augmentation = (recipe.augmentation_draws(settings.seed, epoch, len(order),
                                                  flips=self.record.get("augmentFlips", True))
                        if settings.augment else None)
        self.optimizer.learning_rate = recipe.learning_rate(settings.lrschedule, settings.lr, epoch,
                                                            settings.maxepochs)
        progress = None
        if self.verbose:
            bar = keras.utils.Progbar(-(-len(order) // self.settings.batchsize), stateful_metrics=["loss"])
            progress = lambda steps, loss: bar.update(steps, [("loss", loss)])  # noqa: E731
        self.steps.compile(order, augmentation)
        start = time.perf_counter()
        mean_loss = self.steps.train_epoch(order, augmentation, progress, between_calls=self.interrupt.check)
        seconds = time.perf_counter() - start
        if not math.isfinite(mean_loss):
            raise RunFailed(f"loss became {mean_loss} during epoch {epoch}")
        return seconds

    def set_status(self, log: dict | None, status: str, reason: str | None = None) -> None:
        """Record how the run ended, in its configuration and (when it has one) its log."""
        self.record.update(status=status, endTime=now(), stopReason=reason)
        if log is not None:
            log["status"] = status
            runlog.write_log(self.files, log)
        runlog.write_json(self.files.config, self.record)

    def keras_logs(self, log: dict, epoch: int) -> dict:
        """The epoch's values for callbacks: Keras's names, the project's names, the fraction changed, and the
        kept fractions that `masks.MaskStatistics` gives under `fit` (from the logged counts: no mask is read)."""
        values = {key: log[key][epoch] for key in runlog.EPOCH_KEYS}
        # per layer, [negative, zero, positive] masks then weights: kept are the positive masks
        kept = [(name, counts[2], sum(counts[:3]))
                for name, counts in zip(self.layer_names, log["remainingWeightsPerLayer"][epoch], strict=True)]
        return {**{KERAS_LOG_NAMES[key]: values[key] for key in KERAS_LOG_NAMES}, **values,
                "changed_fraction": log["changedWeights"][epoch] / log["totalWeights"], **kept_fraction_logs(kept)}

    def train(self) -> None:
        """Train from the last finished epoch to `maxepochs`, writing the log after every epoch.

        A run that fails (a loss that is not finite, or any unexpected error) is marked `failed` with the reason
        before the exception goes on; an interrupted one stays `running`, to be resumed.
        """
        log = None
        try:
            with self.interrupt:
                runlog.clean_temporaries(self.files)
                self.record.update(status="running", stopReason=None, maxepochs=self.settings.maxepochs)
                runlog.write_json(self.files.config, self.record)
                refresh_claim()
                log, done = self.restored or self.start()
                self.interrupt.check()
                self.train_epochs(log, done)
        except (KeyboardInterrupt, OSError, runlog.RunLogError, ConfigError):
            raise  # resumable (the files hold the last finished epoch), or a file refused on resuming
        except Exception as error:
            reason = str(error) if isinstance(error, RunFailed) else f"{type(error).__name__}: {error}"
            self.set_status(log, "failed", reason)
            raise

    def train_epochs(self, log: dict, done: int) -> None:
        self.callbacks.on_train_begin()
        stop_reason = None
        for epoch in range(done + 1, self.settings.maxepochs + 1):
            self.callbacks.on_epoch_begin(epoch)
            seconds = self.train_epoch(epoch)
            self.record_epoch(log, epoch, seconds)
            runlog.write_log(self.files, log)
            checkpoint.save(self.files.checkpoint, self.model, self.optimizer, epoch,
                            owner=(self.files.run_id, self.settings.digest()),
                            log_digest=provenance.log_digest(log))
            refresh_claim()
            self.print_line(self.summary_line(log, epoch))
            self.callbacks.on_epoch_end(epoch, self.keras_logs(log, epoch))
            self.interrupt.check()
            if self.model.stop_training:
                stop_reason = f"stopped early by a callback after epoch {epoch} of {self.settings.maxepochs}"
                self.print_line(f"run {self.files.run_id}: {stop_reason}")
                break
        self.callbacks.on_train_end()
        masks = self.read_masks()
        runlog.write_npz(self.files.masks, masks)
        checkpoint.save_model(self.files.model, self.model)
        self.record.setdefault(provenance.RECORD_KEY, {}).update(
            masks=provenance.array_digests(masks), model=provenance.file_digest(self.files.model),
            log=provenance.log_digest(log), settings=self.settings.digest())
        self.record["modelEpoch"] = len(log["testAccuracy"]) - 1  # an extension killed mid-log restarts from it
        self.set_status(log, "finished", stop_reason)  # records the digests before the checkpoint goes
        self.files.checkpoint.unlink(missing_ok=True)
