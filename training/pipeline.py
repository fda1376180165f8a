"""Data set in, model repository entry out: fit, evaluate, export, prove parity, write the card."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from service.card import (CARD_FILE, MODEL_FILE, NAME_RE, ModelCard, Splits, Task, ThresholdCheck,
                          TrainingInfo, sha256_file, write_card)
from training.datasets import Dataset, Split, split
from training.export import INPUT_NAME, check_parity, export_onnx, golden_examples
from training.preprocess import prepend_encoding
from training.publish import library_versions, next_version, now, publish, serving_problem
from training.columns import native
from training.config import Config
from training.report import write_report
from training.baselines import linear_baseline, trees_baseline
from training.thresholds import HALF, check_thresholds, rule
from training.train import decide, fit, score


def train_one(data: Dataset, cfg: Config, root: Path, command: str,
              name: str | None = None, verbose: bool = False) -> tuple[ModelCard, Path]:
    """Train `data` and publish it as the next version of `name` under `root`."""
    name = name or data.name
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"model name {name!r} must match {NAME_RE.pattern}")
    s = split(data, cfg.seed)
    fitted = fit(data, s, cfg, verbose)
    raw_test = fitted.model.predict(s.x_test, verbose=0)
    _finite(raw_test, cfg)
    half = _thresholds(data.task, len(data.labels))
    checks = _checked_thresholds(data, s, fitted.model, cfg) if half is not None else None
    thresholds = [c.served for c in checks] if checks else half
    tuned_for = cfg.tune_thresholds if checks else None
    predicted = decide(data.task, raw_test, thresholds)
    metrics = score(data.task, s.y_test, predicted, data.labels)
    at_half = score(data.task, s.y_test, decide(data.task, raw_test, half), data.labels) \
        if tuned_for else None
    base = linear_baseline(data.task, s, data.labels, cfg.seed)
    trees = _trees(data, s, cfg.seed)

    version = next_version(root, name)

    def fill(staging: Path) -> ModelCard:
        model_path = staging / MODEL_FILE
        input_spec, output_spec = export_onnx(fitted.model, data.task, model_path)
        inputs = prepend_encoding(model_path, s.columns) if s.columns else None
        if inputs:  # the numeric columns' input, when the table has any
            input_spec = next((i for i in inputs if i.name == INPUT_NAME), None)
        parity = check_parity(fitted.model, model_path, s.x_test, s.columns, s.raw_test)
        card = ModelCard(
            name=name, version=version, task=data.task, description=data.description,
            input=input_spec, output=output_spec, columns=s.columns, inputs=inputs,
            feature_names=data.feature_names,
            labels=data.labels, thresholds=thresholds,
            training=_training_info(data, cfg, command, fitted.epochs_run, tuned_for),
            library_versions=library_versions(),
            splits=Splits(train=len(s.x_train), validation=len(s.x_val), test=len(s.x_test)),
            metrics=metrics, metrics_at_half=at_half, baseline=base, trees_baseline=trees,
            threshold_rule=rule(tuned_for) if tuned_for else None, threshold_checks=checks,
            parity=parity, sha256=sha256_file(model_path),
            golden=golden_examples(fitted.model, s.x_test, columns=s.columns, raw=s.raw_test),
            created_at=now(),
        )
        write_card(card, staging / CARD_FILE)
        _serves(name, version, staging)
        write_report(staging, card, fitted.history, s.y_test, predicted)
        return card

    return publish(root, name, version, fill)


def _finite(raw: np.ndarray, cfg: Config) -> None:
    """A network whose training diverged answers NaN or inf: it is not published."""
    bad = int((~np.isfinite(raw)).any(axis=1).sum())
    if bad:
        raise ValueError(f"training diverged: the model's outputs are not finite (NaN or inf) on {bad} of "
                         f"the {len(raw)} test rows, so nothing was published; try a smaller --learning-rate "
                         f"(this run used {cfg.learning_rate:g})")


def _serves(name: str, version: int, folder: Path) -> None:
    reason = serving_problem(name, version, folder)
    if reason is not None:
        raise ValueError(f"the trained model would not serve: {reason}")


def _checked_thresholds(data: Dataset, s: Split, model, cfg: Config) -> list[ThresholdCheck] | None:
    """Thresholds tuned on the validation split and checked before serving; None: tuning is off."""
    if cfg.tune_thresholds == "none":
        return None
    raw_val = model.predict(s.x_val, verbose=0)
    return check_thresholds(data.task, raw_val, s.y_val, cfg.tune_thresholds, data.labels, cfg.seed)


def _trees(data: Dataset, s: Split, seed: int):
    """The trees baseline; a table's on its raw columns, whose categories and missing values the
    trees handle natively, rather than on the network's filled, one-hot encoded matrix."""
    if s.columns is None:
        return trees_baseline(data.task, s, data.labels, seed)
    (x_train, mask), (x_test, _) = native(s.columns, s.raw_train), native(s.columns, s.raw_test)
    return trees_baseline(data.task, replace(s, x_train=x_train, x_test=x_test), data.labels, seed, categorical=mask)


def _training_info(data: Dataset, cfg: Config, command: str, epochs_run: int, tuned_for: str | None) -> TrainingInfo:
    return TrainingInfo(command=command, dataset=data.name, seed=cfg.seed, hidden=list(cfg.hidden), l2=cfg.l2,
                        epochs=cfg.epochs, epochs_run=epochs_run, learning_rate=cfg.learning_rate,
                        batch_size=cfg.batch_size, output_activation=cfg.output_activation,
                        threshold_metric=tuned_for)


def _thresholds(task: Task, n_labels: int) -> list[float] | None:
    if task is Task.binary:
        return [HALF]
    if task is Task.multilabel:
        return [HALF] * n_labels
    return None


