"""TensorBoard summaries of a run's connectivity: the six losses and accuracies, the fraction changed, each
layer's kept (or unflipped) fraction and a histogram of each layer's scores, once per epoch.

Written with `tf.summary`, so importing this module needs TensorFlow, whichever backend trains.
"""
import keras
import tensorboard  # noqa: F401  (tf.summary writes nothing without it: importing it here fails early)
import tensorflow as tf

from masks.callbacks import PREFIX as KEPT_FRACTION
from masks.layers import masked_layers

SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "changed_fraction")


class ConnectivitySummaries(keras.callbacks.Callback):
    """A Keras callback writing the summaries under `log_dir` at the end of every epoch."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self.writer = None

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=epoch):
            for name in SCALARS:
                tf.summary.scalar(f"epoch/{name}", logs[name])
            for name, value in logs.items():  # the run's kept fractions, as masks.MaskStatistics names them
                if name.split("/")[0] == KEPT_FRACTION:
                    tf.summary.scalar(name, value)
            for layer in masked_layers(self.model):
                if layer.scores is not None:
                    tf.summary.histogram(f"scores/{layer.name}", keras.ops.convert_to_numpy(layer.scores))
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()
