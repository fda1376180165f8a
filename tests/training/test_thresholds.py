"""Thresholds chosen on the validation split, and the decisions made with them."""

import numpy as np
import pytest

from service.card import Task
from training.thresholds import tune_thresholds
from training.train import decide, sigmoid


def logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


def test_sigmoid_is_stable_for_extreme_logits():
    out = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert np.isfinite(out).all() and out.tolist() == [0.0, 0.5, 1.0]


def test_binary_threshold_moves_to_where_f1_is_best():
    # Positives score 0.3-0.4, negatives 0.1-0.2: 0.5 misses every positive; F1 wants ~0.21-0.3.
    probs = np.r_[np.linspace(0.3, 0.4, 10), np.linspace(0.1, 0.2, 10)]
    y = np.r_[np.ones(10), np.zeros(10)]
    (t,) = tune_thresholds(Task.binary, logit(probs).reshape(-1, 1), y, "f1")
    assert 0.2 < t <= 0.3
    assert (decide(Task.binary, logit(probs).reshape(-1, 1), [t]) == y).all()


def test_a_flat_plateau_keeps_the_threshold_nearest_half():
    probs = np.r_[np.full(10, 0.95), np.full(10, 0.05)]
    y = np.r_[np.ones(10), np.zeros(10)]
    assert tune_thresholds(Task.binary, logit(probs).reshape(-1, 1), y, "accuracy") == [0.5]


def test_one_threshold_per_label():
    probs = np.column_stack([np.r_[np.full(5, 0.7), np.full(5, 0.6)],
                             np.r_[np.full(5, 0.3), np.full(5, 0.1)]])
    y = np.column_stack([np.r_[np.ones(5), np.zeros(5)], np.r_[np.ones(5), np.zeros(5)]])
    t = tune_thresholds(Task.multilabel, logit(probs), y, "balanced_accuracy")
    assert len(t) == 2 and 0.6 < t[0] <= 0.7 and 0.1 < t[1] <= 0.3
    assert (decide(Task.multilabel, logit(probs), t) == y).all()


@pytest.mark.parametrize("metric", ["f1", "accuracy", "balanced_accuracy"])
def test_every_metric_gives_a_threshold_inside_zero_one(metric):
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(40, 1))
    y = (raw[:, 0] + rng.normal(scale=0.5, size=40) > 0).astype(float)
    (t,) = tune_thresholds(Task.binary, raw, y, metric)
    assert 0 < t < 1
