"""Built-in data sets (they ship inside scikit-learn: nothing is downloaded) and the split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from service.card import Column, Task
from training.columns import encode, learn, raw_inputs, take

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
    x: np.ndarray  # float32, (rows, numeric features), unscaled; NaN: missing
    y: np.ndarray  # int class ids (binary/multiclass), 0/1 matrix (multilabel), float (regression)
    feature_names: list[str]  # every feature, numeric and categorical, in the table's order
    labels: list[str]
    description: str
    strata: np.ndarray | None = None  # what the split stratifies on, if anything
    text: np.ndarray | None = None  # (rows, categorical features), str; "": missing
    categorical: tuple[str, ...] = ()  # the names of text's columns, in order
    missing_texts: tuple[str, ...] = ()  # texts read as missing (--na-values), so serving reads them so too

    @property
    def has_columns(self) -> bool:
        """Whether the served graph takes raw columns (categories or missing values to fill);
        otherwise it is the one numeric input it has always been."""
        return bool(self.categorical) or bool(np.isnan(self.x).any())


@dataclass(frozen=True)
class Split:
    """The three parts; x_* are what the network takes, encoded and filled (see `split`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    columns: list[Column] | None = None  # the raw columns' encoding, learned on x_train's rows
    raw_test: dict[str, np.ndarray] | None = None  # the test rows as the graph takes them
    raw_train: dict[str, np.ndarray] | None = None  # the training rows so, for the trees baseline

    @property
    def scaled(self) -> int | None:
        """How many leading columns of x_* are numbers to standardise (None: all); the one-hot
        columns after them are 0/1 already."""
        return None if self.columns is None else sum(c.kind == "numeric" for c in self.columns)


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

    A table with raw columns is encoded with what the training rows alone say: each numeric
    column's median and each categorical column's categories and most frequent one fill the
    missing values, and categories are one-hot encoded; nothing about the validation or test
    rows leaks into training.
    """
    idx = np.arange(len(data.x))
    rest, test_idx = train_test_split(idx, test_size=test, random_state=seed,
                                      stratify=None if data.strata is None else data.strata)
    strata_rest = None if data.strata is None else data.strata[rest]
    train_idx, val_idx = train_test_split(rest, test_size=validation / (1 - test),
                                          random_state=seed, stratify=strata_rest)
    x, y, columns, raw = data.x, data.y, None, None
    if data.has_columns:
        raw = raw_inputs(data.x, data.text)
        columns = learn(data.feature_names, data.categorical, take(raw, train_idx), data.missing_texts)
        x = encode(columns, raw)
    return Split(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x[test_idx], y[test_idx],
                 columns, None if raw is None else take(raw, test_idx), None if raw is None else take(raw, train_idx))
