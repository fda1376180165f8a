"""Built-in data sets and the deterministic split."""

import numpy as np
import pytest

from service.card import Task
from training.datasets import BUILTIN, load_builtin, split


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_shapes_and_names(name):
    data = load_builtin(name)
    assert data.x.dtype == np.float32 and data.x.ndim == 2
    assert len(data.x) == len(data.y)
    assert len(data.feature_names) == data.x.shape[1]
    assert np.isfinite(data.x).all()


def test_digits_sets_are_raw_pixels():
    binary, digits = load_builtin("digits-binary"), load_builtin("digits")
    assert binary.x.shape[1] == digits.x.shape[1] == 64
    assert digits.x.min() == 0 and digits.x.max() == 16
    assert set(np.unique(binary.y)) == {0, 1} and binary.task is Task.binary
    assert set(np.unique(digits.y)) == set(range(10)) and digits.labels == [str(i) for i in range(10)]


def test_digit_traits_rows_carry_zero_one_or_several_labels():
    data = load_builtin("digit-traits")
    assert data.task is Task.multilabel and len(data.labels) >= 3
    per_row = data.y.sum(axis=1)
    assert {0, 1, 2} <= set(per_row.astype(int))
    # "2" is even and prime; "1" has no trait; "9" only a closed loop.
    digit = data.strata
    assert data.y[digit == 2][0].tolist() == [1, 1, 0]
    assert data.y[digit == 1][0].tolist() == [0, 0, 0]
    assert data.y[digit == 9][0].tolist() == [0, 0, 1]


def test_diabetes_features_are_unscaled():
    data = load_builtin("diabetes")
    assert data.task is Task.regression and data.y.shape == (442, 1)
    age = data.x[:, data.feature_names.index("age")]
    assert age.min() >= 18 and age.max() <= 80  # years, not the centred scikit-learn default


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        load_builtin("nope")


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_split_is_deterministic_disjoint_and_complete(name):
    data = load_builtin(name)
    a, b = split(data, seed=7), split(data, seed=7)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == len(data.x)
    assert len(a.x_test) == pytest.approx(0.2 * len(data.x), abs=1)
    assert len(a.x_val) == pytest.approx(0.2 * len(data.x), abs=1)
    rows = lambda m: {r.tobytes() for r in m}  # noqa: E731
    # digits has a handful of duplicate images, so compare against the split's own counts
    assert len(rows(a.x_train) & rows(a.x_test)) <= 3
    c = split(data, seed=8)
    assert not np.array_equal(a.x_test, c.x_test)


def test_split_is_stratified():
    data = load_builtin("digits")
    s = split(data, seed=7)
    share = lambda y: np.bincount(y, minlength=10) / len(y)  # noqa: E731
    assert np.abs(share(s.y_test) - share(data.y)).max() < 0.01
    assert np.abs(share(s.y_val) - share(data.y)).max() < 0.01
