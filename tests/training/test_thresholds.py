"""Thresholds chosen on the validation split, checked on held-out halves of it before they are
served, and the decisions made with them."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from service.card import Task
from training.thresholds import GRID, METRICS, REPEATS, check_thresholds, rule, scores
from training.train import decide, sigmoid


def logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


def tune_thresholds(task: Task, raw: np.ndarray, y: np.ndarray, metric: str) -> list[float]:
    """The threshold each output's check tunes on the whole split (before it decides what to serve)."""
    labels = ["no", "yes"] if task is Task.binary else [f"l{j}" for j in range(raw.shape[1])]
    return [c.tuned for c in check_thresholds(task, raw, y, metric, labels, seed=0)]


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


@pytest.mark.parametrize("metric", METRICS)
def test_scores_are_scikit_learns(metric):
    reference = {"f1": lambda y, p: f1_score(y, p, zero_division=0), "accuracy": accuracy_score,
                 "balanced_accuracy": balanced_accuracy_score}[metric]
    rng = np.random.default_rng(3)
    for n, rate in [(40, 0.5), (25, 0.1), (12, 0.0), (12, 1.0)]:
        probs, y = rng.random(n), (rng.random(n) < rate).astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn warns when a class is absent
            expected = [reference(y, probs >= t) for t in GRID]
        assert scores(metric, y, probs, GRID) == pytest.approx(expected, abs=1e-12)


def calibrated(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities that are exactly right: a label is drawn with its probability, so 0.5 is the
    best accuracy threshold and any other one tuned on a sample has fitted its noise."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, rows)
    return p, (rng.random(rows) < p).astype(float)


def test_on_a_small_noisy_validation_split_tuned_thresholds_are_not_served():
    # 36 validation rows, as the wine table had.
    moved, served, fresh_gain = 0, 0, []
    for seed in range(30):
        p, y = calibrated(seed, 36)
        (check,) = check_thresholds(Task.binary, logit(p).reshape(-1, 1), y, "accuracy",
                                    ["no", "yes"], seed=7)
        moved += check.tuned != 0.5
        served += check.served != 0.5
        if check.served == 0.5 and check.tuned != 0.5:
            assert "0.5 kept" in check.reason and check.trials == 50 and check.wins <= 25
        big_p, big_y = calibrated(1000 + seed, 20_000)
        at = scores("accuracy", big_y, big_p, np.array([check.served, check.tuned]))
        fresh_gain.append(at[0] - at[1])
    assert moved >= 20  # tuning on 36 rows moves the threshold almost every time...
    assert served <= moved / 4  # ...and the check takes most of those moves back
    assert min(fresh_gain) >= -0.005 and np.mean(fresh_gain) > 0  # which helps on new rows


def test_on_a_large_clean_validation_split_a_helpful_threshold_is_served():
    # Positives score 0.3-0.45, negatives 0.05-0.28: 0.5 calls every row negative.
    rng = np.random.default_rng(0)
    p = np.r_[rng.uniform(0.3, 0.45, 500), rng.uniform(0.05, 0.28, 500)]
    y = np.r_[np.ones(500), np.zeros(500)]
    for metric in METRICS:
        (check,) = check_thresholds(Task.binary, logit(p).reshape(-1, 1), y, metric,
                                    ["no", "yes"], seed=7)
        assert check.label == "yes" and 0.28 <= check.served == check.tuned <= 0.3
        assert check.wins == check.trials == 50 and check.mean_gain > 0.4
        assert "tuned threshold served" in check.reason


def test_each_label_is_checked_on_its_own():
    rng = np.random.default_rng(0)
    clean = np.r_[rng.uniform(0.3, 0.45, 300), rng.uniform(0.05, 0.28, 300)]
    noisy, noisy_y = calibrated(4, 600)
    raw = logit(np.column_stack([clean, noisy, np.full(600, 0.9)]))
    y = np.column_stack([np.r_[np.ones(300), np.zeros(300)], noisy_y,
                         np.r_[np.ones(599), np.zeros(1)]])
    clean_check, noisy_check, one_negative = check_thresholds(
        Task.multilabel, raw, y, "accuracy", ["a", "b", "c"], seed=7)
    assert clean_check.served == clean_check.tuned != 0.5
    assert noisy_check.served == 0.5
    # Every threshold under 0.9 gets the same accuracy: the plateau keeps 0.5, nothing to check.
    assert one_negative.tuned == one_negative.served == 0.5 and one_negative.trials == 0
    assert one_negative.reason == "the validation split itself prefers 0.5"


def test_too_few_positives_to_check_keeps_half():
    p = np.r_[0.3, np.linspace(0.05, 0.2, 20)]
    y = np.r_[1.0, np.zeros(20)]
    (check,) = check_thresholds(Task.binary, logit(p).reshape(-1, 1), y, "f1", ["no", "yes"], 7)
    assert check.tuned != 0.5 and check.served == 0.5 and check.trials == 0
    assert "only 1 validation row(s) of one class" in check.reason


def test_the_rule_names_the_metric_and_the_count_of_checks():
    text = rule("balanced_accuracy")
    assert "balanced_accuracy" in text and f"{2 * REPEATS} held-out halves" in text
