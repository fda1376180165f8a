"""Fit the network with early stopping on the validation split; decide and score its outputs."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score

from service.card import Metrics, Task
from service.tasks import sigmoid
from training.datasets import Dataset, Split
from training.config import Config
from training.model import build_model, loss_for, output_activation_problem, output_units


@dataclass
class Fitted:
    model: keras.Model
    epochs_run: int
    history: dict[str, list[float]]


def fit(data: Dataset, s: Split, cfg: Config, verbose: bool = False) -> Fitted:
    """Build and fit the network; the test split is never seen here (`verbose`: a line an epoch)."""
    keras.utils.set_random_seed(cfg.seed)
    n_out = output_units(data.task, s.y_train.shape[1] if s.y_train.ndim == 2 else len(data.labels))
    problem = output_activation_problem(data.task, cfg.output_activation, s.y_train)
    if problem:
        raise ValueError(problem)
    target_scale = None
    if data.task is Task.regression:
        target_scale = (s.y_train.std(axis=0), s.y_train.mean(axis=0))
    model = build_model(data.task, s.x_train, n_out, cfg.hidden, cfg.l2, target_scale,
                        cfg.output_activation, scaled=s.scaled)
    metrics = {Task.binary: [keras.metrics.BinaryAccuracy(threshold=0.0)],
               Task.multiclass: ["sparse_categorical_accuracy"],
               Task.multilabel: [keras.metrics.BinaryAccuracy(threshold=0.0)],
               Task.regression: ["mae"]}[data.task]
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss=loss_for(data.task, target_scale[0] if target_scale else None), metrics=metrics)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                         restore_best_weights=True)
    history = model.fit(s.x_train, _targets(data.task, s.y_train),
                        validation_data=(s.x_val, _targets(data.task, s.y_val)),
                        epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=[stop],
                        shuffle=True, verbose=2 if verbose else 0)
    return Fitted(model, len(history.history["loss"]), history.history)


def _targets(task: Task, y: np.ndarray) -> np.ndarray:
    return y.reshape(-1, 1).astype(np.float32) if task is Task.binary else y


def decide(task: Task, raw: np.ndarray, thresholds: list[float] | None) -> np.ndarray:
    """Turn raw network outputs into predicted classes, label sets or values."""
    if task is Task.binary:
        return (sigmoid(raw[:, 0]) >= thresholds[0]).astype(np.int64)
    if task is Task.multiclass:
        return raw.argmax(axis=1)
    if task is Task.multilabel:
        return (sigmoid(raw) >= np.asarray(thresholds)).astype(np.int64)
    return raw


def score(task: Task, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> Metrics:
    """Test metrics: accuracy and macro F1, per-label F1, or MAE/RMSE/R^2."""
    if task in (Task.binary, Task.multiclass):
        return Metrics(accuracy=_r(accuracy_score(y_true, y_pred)),
                       macro_f1=_r(f1_score(y_true, y_pred, average="macro")))
    if task is Task.multilabel:
        per = f1_score(y_true, y_pred, average=None, zero_division=0)
        return Metrics(accuracy=_r(accuracy_score(y_true, y_pred)),  # exact-match ratio
                       macro_f1=_r(per.mean()),
                       per_label_f1={name: _r(v) for name, v in zip(labels, per)})
    err = y_pred - y_true
    return Metrics(mae=_r(mean_absolute_error(y_true, y_pred)),
                   rmse=_r(np.sqrt(np.mean(err ** 2))), r2=_r(r2_score(y_true, y_pred)))


def _r(v: float) -> float:
    return round(float(v), 6)
