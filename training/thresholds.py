"""Decision thresholds: tuned on the validation split, served only where tuning beats 0.5 on rows
it did not see.

A threshold tuned on a few validation rows fits their noise: on a small split it can move far
from 0.5 and then make the test metric worse. So tuning itself is cross-validated on the
validation predictions (the network is trained once; its training-row outputs are in-sample and
would flatter any threshold): the rows are halved, a threshold is tuned on one half and compared
with 0.5 on the other, many times over. The threshold tuned on the whole split is served only if
tuning won on most of those held-out halves; otherwise 0.5 is served and the card says why.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from service.card import Task, ThresholdCheck
from service.tasks import sigmoid

METRICS = ("f1", "accuracy", "balanced_accuracy")
GRID = np.round(np.arange(0.02, 0.99, 0.01), 2)
HALF = 0.5
REPEATS = 25  # of the 2-fold split: every label gets 2 * REPEATS held-out halves
TIE = 1e-12

RULE = ("Each threshold is tuned for {metric} on the validation split, then the tuning is checked "
        "by 2-fold cross-validation repeated {repeats} times over the validation rows: a threshold "
        "tuned on one half is compared with 0.5 on the other half ({trials} held-out halves). The "
        "tuned threshold is served only if it beat 0.5 on more than half of them and its mean "
        "held-out gain is positive; otherwise 0.5 is served. A label with fewer than 2 positive "
        "or 2 negative validation rows cannot be checked and keeps 0.5.")


def rule(metric: str) -> str:
    """The rule above in words, for the card."""
    return RULE.format(metric=metric, repeats=REPEATS, trials=2 * REPEATS)


def scores(metric: str, truth: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """`metric` of the decisions `probs >= t` for each t, from confusion counts.

    Counted in one pass over all thresholds (the check tunes thousands of times); the formulas are
    scikit-learn's, F1 with zero_division=0, balanced accuracy over the classes present.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown threshold metric {metric!r}; choose from {', '.join(METRICS)}")
    decided = probs[:, None] >= np.asarray(thresholds)[None, :]
    actual = truth.astype(bool)[:, None]
    tp, fp = (decided & actual).sum(axis=0), (decided & ~actual).sum(axis=0)
    pos = int(actual.sum())
    neg = len(truth) - pos
    fn, tn = pos - tp, neg - fp
    if metric == "f1":
        denominator = 2 * tp + fp + fn
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    if metric == "accuracy":
        return (tp + tn) / len(truth)
    recalls = [r for r, n in ((tp / max(pos, 1), pos), (tn / max(neg, 1), neg)) if n > 0]
    return np.mean(recalls, axis=0)


def best_threshold(metric: str, truth: np.ndarray, probs: np.ndarray) -> float:
    """The grid threshold with the best `metric`; ties go to the one nearest 0.5, so a flat
    plateau keeps the conventional choice."""
    s = scores(metric, truth, probs, GRID)
    best = np.flatnonzero(s >= s.max() - TIE)
    return float(GRID[best[np.argmin(np.abs(GRID[best] - HALF))]])


def _columns(task: Task, raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return sigmoid(raw), (y.reshape(-1, 1) if task is Task.binary else y)


def check_thresholds(task: Task, raw_val: np.ndarray, y_val: np.ndarray, metric: str,
                     labels: list[str], seed: int) -> list[ThresholdCheck]:
    """Per output, the tuned threshold, the one to serve under `rule`, and the reason."""
    probs, truth = _columns(task, raw_val, y_val)
    named = labels[1:] if task is Task.binary else labels
    return [_check(name, metric, truth[:, j], probs[:, j], seed) for j, name in enumerate(named)]


def _check(label: str, metric: str, truth: np.ndarray, probs: np.ndarray,
           seed: int) -> ThresholdCheck:
    tuned = best_threshold(metric, truth, probs)
    if tuned == HALF:
        return ThresholdCheck(label=label, tuned=tuned, served=HALF, wins=0, losses=0, trials=0,
                              mean_gain=0.0, reason="the validation split itself prefers 0.5")
    gains = _held_out_gains(metric, truth, probs, seed)
    if gains is None:
        fewest = int(min(truth.sum(), len(truth) - truth.sum()))
        return ThresholdCheck(label=label, tuned=tuned, served=HALF, wins=0, losses=0, trials=0,
                              mean_gain=0.0, reason=f"only {fewest} validation row(s) of one class: "
                              "too few to check the tuned threshold, 0.5 kept")
    wins, losses, mean = int((gains > TIE).sum()), int((gains < -TIE).sum()), float(gains.mean())
    kept = wins > len(gains) / 2 and mean > 0
    record = (f"beat 0.5 on {wins} of {len(gains)} held-out validation halves (worse on {losses}), "
              f"mean {metric} change {mean:+.3f}")
    return ThresholdCheck(label=label, tuned=tuned, served=tuned if kept else HALF, wins=wins,
                          losses=losses, trials=len(gains), mean_gain=round(mean, 6),
                          reason=record + ("; tuned threshold served" if kept else "; 0.5 kept"))


def _held_out_gains(metric: str, truth: np.ndarray, probs: np.ndarray,
                    seed: int) -> np.ndarray | None:
    """For each half of each repeated 2-fold split: `metric` on that half at the threshold tuned
    on the other half, minus `metric` there at 0.5. None when a class has under two rows."""
    positives = int(truth.sum())
    if min(positives, len(truth) - positives) < 2:
        return None
    gains = []
    for repeat in range(REPEATS):
        folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed + repeat)
        for fit_rows, held_rows in folds.split(probs.reshape(-1, 1), truth):
            t = best_threshold(metric, truth[fit_rows], probs[fit_rows])
            tuned, half = scores(metric, truth[held_rows], probs[held_rows], np.array([t, HALF]))
            gains.append(tuned - half)
    return np.array(gains)
