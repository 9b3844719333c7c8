"""TensorBoard summaries of a run's connectivity: the six losses and accuracies, the fraction changed, each
layer's kept (or unflipped) fraction and a histogram of each layer's scores, once per epoch.

Written with `tf.summary`, so importing this module needs TensorFlow, whichever backend trains.
"""
import keras
import tensorboard  # noqa: F401  (tf.summary writes nothing without it: importing it here fails early)
import tensorflow as tf

from masks.callbacks import kept_fractions
from masks.layers import masked_layers
from training.statistics import mask_reader

SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "changed_fraction")


class ConnectivitySummaries(keras.callbacks.Callback):
    """A Keras callback writing the summaries under `log_dir` at the end of every epoch."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self.writer = self.read_masks = None

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.log_dir)
        self.read_masks = mask_reader(self.model)  # compiled once: op by op, JAX compiles each top-k search anew

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=epoch):
            for name in SCALARS:
                tf.summary.scalar(f"epoch/{name}", logs[name])
            masks = list(self.read_masks().values())  # in layer order, as kept_fractions wants them
            for name, fraction in kept_fractions(self.model, masks).items():  # as masks.MaskStatistics logs them
                tf.summary.scalar(name, fraction)
            for layer in masked_layers(self.model):
                if layer.scores is not None:
                    tf.summary.histogram(f"scores/{layer.name}", keras.ops.convert_to_numpy(layer.scores))
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()
