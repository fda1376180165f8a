"""Built-in data sets (they ship inside scikit-learn: nothing is downloaded) and the split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from service.card import Task

# Digit properties for the multi-label set; a "1" or a "7" may carry no label or only one.
EVEN = {0, 2, 4, 6, 8}
PRIME = {2, 3, 5, 7}
CLOSED_LOOP = {0, 6, 8, 9}


class DataError(ValueError):
    """A data file the trainer cannot use; the message names the problem in one line."""


@dataclass(frozen=True)
class Dataset:
    """Raw features and targets, with what the card needs to name them."""

    name: str
    task: Task
    x: np.ndarray  # float32, (rows, features), unscaled
    y: np.ndarray  # int class ids (binary/multiclass), 0/1 matrix (multilabel), float (regression)
    feature_names: list[str]
    labels: list[str]
    description: str
    strata: np.ndarray | None = None  # what the split stratifies on, if anything
    # Missing feature values (NaN) are filled with the training split's column median by split().


@dataclass(frozen=True)
class Split:
    """The three parts; x_* have no missing values left (see `split`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    d = load_digits()
    names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    return d.data.astype(np.float32), d.target.astype(np.int64), names


def digits_binary() -> Dataset:
    x, y, names = _digits()
    keep = y <= 1
    return Dataset("digits-binary", Task.binary, x[keep], y[keep], names, ["0", "1"],
                   "Handwritten digits 0 vs 1 (8x8 pixels, values 0-16).", strata=y[keep])


def digits() -> Dataset:
    x, y, names = _digits()
    return Dataset("digits", Task.multiclass, x, y, names, [str(i) for i in range(10)],
                   "Handwritten digits 0-9 (8x8 pixels, values 0-16).", strata=y)


def digit_traits() -> Dataset:
    x, digit, names = _digits()
    y = np.stack([np.isin(digit, list(s)) for s in (EVEN, PRIME, CLOSED_LOOP)], axis=1)
    return Dataset("digit-traits", Task.multilabel, x, y.astype(np.float32), names,
                   ["even", "prime", "closed_loop"],
                   "Traits of a handwritten digit (8x8 pixels): even, prime, has a closed loop "
                   "(0, 6, 8, 9). A row carries zero, one or several labels.", strata=digit)


def diabetes() -> Dataset:
    d = load_diabetes(scaled=False)
    return Dataset("diabetes", Task.regression, d.data.astype(np.float32),
                   d.target.astype(np.float32).reshape(-1, 1), list(d.feature_names),
                   ["disease_progression"],
                   "Diabetes progression one year after baseline, from 10 raw (unscaled) "
                   "measurements.")


BUILTIN = {
    "digits-binary": digits_binary,
    "digits": digits,
    "digit-traits": digit_traits,
    "diabetes": diabetes,
}


def load_builtin(name: str) -> Dataset:
    if name not in BUILTIN:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(BUILTIN)}")
    return BUILTIN[name]()


def split(data: Dataset, seed: int, validation: float = 0.2, test: float = 0.2) -> Split:
    """Deterministic train/validation/test split, stratified where the data set says so.

    Missing feature values are filled with the training split's median of the column, so
    nothing about the validation or test rows leaks into training.
    """
    idx = np.arange(len(data.x))
    rest, test_idx = train_test_split(idx, test_size=test, random_state=seed,
                                      stratify=None if data.strata is None else data.strata)
    strata_rest = None if data.strata is None else data.strata[rest]
    train_idx, val_idx = train_test_split(rest, test_size=validation / (1 - test),
                                          random_state=seed, stratify=strata_rest)
    x, y = data.x, data.y
    if np.isnan(x).any():
        medians = np.nanmedian(x[train_idx], axis=0)
        x = np.where(np.isnan(x), np.nan_to_num(medians), x).astype(np.float32)
    return Split(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x[test_idx], y[test_idx])
