"""Simple models fitted on the network's split, so the card shows when the network is not the
best choice: a linear one, and gradient-boosted trees (often the stronger choice on tables)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputClassifier, MultiOutputRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from service.card import Baseline, Task
from training.datasets import Split
from training.train import score


def linear_baseline(task: Task, s: Split, labels: list[str], seed: int) -> Baseline:
    """Logistic regression for classifiers, linear regression for regression, same split."""
    if task is Task.regression:
        est, name = LinearRegression(), "linear regression"
    else:
        lr = LogisticRegression(max_iter=5000, random_state=seed)
        est = OneVsRestClassifier(lr) if task is Task.multilabel else lr
        name = "logistic regression" + (" (one per label)" if task is Task.multilabel else "")
    return _evaluate(task, make_pipeline(StandardScaler(), est), s, labels,
                     f"{name}, standardized features")


def trees_baseline(task: Task, s: Split, labels: list[str], seed: int,
                   categorical: list[bool] | None = None) -> Baseline:
    """scikit-learn's HistGradientBoosting with its default settings, same split.

    `categorical` marks the columns of `s.x_*` that hold category codes, which the trees then split
    on as categories; left out, a pandas table's category columns are found from their dtype."""
    cats = "from_dtype" if categorical is None else np.asarray(categorical, dtype=bool)
    if task is Task.regression:
        # One model per target column, so one or several targets take the same path.
        est = MultiOutputRegressor(HistGradientBoostingRegressor(
            categorical_features=cats, random_state=seed))
        name = "gradient-boosted trees" + (" (one per target)" if len(labels) > 1 else "")
    else:
        hgb = HistGradientBoostingClassifier(categorical_features=cats, random_state=seed)
        est = MultiOutputClassifier(hgb) if task is Task.multilabel else hgb
        name = "gradient-boosted trees" + (" (one per label)" if task is Task.multilabel else "")
    return _evaluate(task, est, s, labels, f"{name}, HistGradientBoosting defaults")


def _evaluate(task: Task, est: BaseEstimator, s: Split, labels: list[str], name: str) -> Baseline:
    # One OpenMP thread: on tables this small the trees gain little from more, and OpenMP's
    # spinning threads slow to a crawl when the cores are shared (TensorFlow's pools, CI).
    with threadpool_limits(limits=1, user_api="openmp"):
        pred = est.fit(s.x_train, s.y_train).predict(s.x_test)
    if task is Task.regression:
        pred = pred.reshape(s.y_test.shape)
    return Baseline(name=name, metrics=score(task, s.y_test, pred, labels))
