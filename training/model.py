"""The network: fixed input scaling, Dense ReLU layers, a task-shaped output that ends in logits."""

from __future__ import annotations

import keras
import numpy as np

from service.card import Task

DEFAULT_HIDDEN = (25, 15)


class Affine(keras.layers.Layer):
    """y = x * scale + offset with frozen per-column constants.

    Used for feature scaling fitted on the training split (and, for regression, to map the
    standardized output back to target units), so the exported graph takes raw features.
    Stored as non-trainable weights because keras.layers.Normalization exports its statistics
    as extra graph inputs, which breaks the ONNX model.
    """

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self._scale = np.asarray(scale, dtype=np.float32)
        self._offset = np.asarray(offset, dtype=np.float32)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=self._scale.shape, name="scale", trainable=False,
                                     initializer=keras.initializers.Constant(self._scale))
        self.offset = self.add_weight(shape=self._offset.shape, name="offset", trainable=False,
                                      initializer=keras.initializers.Constant(self._offset))

    def call(self, x):
        return x * self.scale + self.offset


def standardizer(x: np.ndarray, scaled: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scale and offset that map each column of x to mean 0, std 1 (constant columns: centred).

    Only the first `scaled` columns (None: all) are standardised; the rest are one-hot columns,
    left as 0/1: standardised, a rare category would become a large input."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    scale = np.where(std > 1e-8, 1.0 / np.maximum(std, 1e-8), 1.0)
    offset = -mean * scale
    if scaled is not None:
        scale[scaled:], offset[scaled:] = 1.0, 0.0
    return scale.astype(np.float32), offset.astype(np.float32)


def output_units(task: Task, n_targets: int) -> int:
    return 1 if task is Task.binary else n_targets


class StandardizedMSE(keras.losses.Loss):
    """Each target's squared error over its variance, averaged over the targets: every target
    counts the same whatever its units (in target units alone, the largest would be all the loss
    sees), and the loss is near 1 - R^2, so the learning rate and the L2 penalty mean the same for
    any target scale."""

    def __init__(self, std: np.ndarray, name: str = "standardized_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.inverse = (1.0 / np.where(std > 0, std, 1.0)).astype(np.float32)  # a constant target: plain MSE

    def call(self, y_true, y_pred):
        error = (keras.ops.cast(y_true, y_pred.dtype) - y_pred) * self.inverse
        return keras.ops.mean(keras.ops.square(error), axis=-1)


def loss_for(task: Task, target_std: np.ndarray | None = None) -> keras.losses.Loss:
    """The task's loss on logits; for regression with the training targets' spread, standardized."""
    if task is Task.multiclass:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if task is Task.regression:
        return keras.losses.MeanSquaredError() if target_std is None else StandardizedMSE(target_std)
    return keras.losses.BinaryCrossentropy(from_logits=True)


def output_activation_problem(task: Task, activation: str, y_train: np.ndarray | None = None) -> str | None:
    """Why `activation` cannot end the task's network (given the training targets, when known), or None."""
    if activation != "linear" and task is not Task.regression:
        return "an output activation applies to regression only; classifiers end in logits"
    if activation == "relu" and y_train is not None and (y_train < 0).any():
        return (f"--output-activation relu answers values of 0 or more only, and the training targets hold "
                f"negative ones (the least {y_train.min():.6g}); leave it out for a linear output")
    return None


def build_model(task: Task, x_train: np.ndarray, n_outputs: int,
                hidden: tuple[int, ...] = DEFAULT_HIDDEN, l2: float = 0.0,
                target_scale: tuple[np.ndarray, np.ndarray] | None = None,
                output_activation: str = "linear", scaled: int | None = None) -> keras.Model:
    """Build (not fit) the network; the input scaling is fitted on x_train here (on its first
    `scaled` columns, None: all).

    For regression, target_scale=(std, mean) maps the unit-variance output back to target
    units inside the graph, and output_activation="relu" keeps predictions non-negative.
    """
    problem = output_activation_problem(task, output_activation)
    if problem:
        raise ValueError(problem)
    n_features = x_train.shape[1]
    features = keras.Input(shape=(n_features,), name="features", dtype="float32")
    h = Affine(*standardizer(x_train, scaled), name="scaling")(features)
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    for i, units in enumerate(hidden):
        h = keras.layers.Dense(units, activation="relu", kernel_regularizer=reg,
                               name=f"hidden_{i + 1}")(h)
    out = keras.layers.Dense(n_outputs, kernel_regularizer=reg, name="output")(h)
    if target_scale is not None:
        out = Affine(*target_scale, name="target_units")(out)
    if output_activation == "relu":
        out = keras.layers.ReLU(name="non_negative")(out)
    return keras.Model(features, out, name=task.value)
