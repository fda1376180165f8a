"""`tasks.postprocess` against a plain numpy reference: same values (exact floats), keys, order and types.

`postprocess` answers a few rows in plain Python and many rows in numpy; both must give every row
the answer the reference gives, bit for bit, whatever the batch size.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import tasks
from service.card import Task
from tests.service import helpers

ROW_COUNTS = [1, 2, 3, 17, 256]
SPECIAL = [np.nan, np.inf, -np.inf, 1000.0, -1000.0, 0.0, -0.0, 1.0]


def reference(card, outputs: np.ndarray, top_k: int) -> list[dict]:
    """The documented semantics, straight from numpy (no fast paths)."""
    x = np.asarray(outputs, dtype=np.float64)
    if card.task is Task.regression:
        values = [[float(v) if np.isfinite(v) else None for v in row] for row in x]
        return [{"value": v[0] if x.shape[1] == 1 else v} for v in values]
    if card.task is Task.multiclass:
        with np.errstate(invalid="ignore"):
            e = np.exp(x - x.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        preds = []
        for logits, p in zip(x, probs):
            if not np.isfinite(logits).all():
                preds.append({"label": None, "probability": None, "top_k": []})
                continue
            order = np.argsort(-logits, kind="stable")[:top_k]
            top = [{"label": card.labels[i], "probability": float(p[i])} for i in order]
            preds.append({"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top})
        return preds
    e = np.exp(-np.abs(x))
    probs = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if card.task is Task.binary:
        negative, positive = card.labels
        return [{"label": None, "probability": None} if np.isnan(p) else
                {"label": positive if p >= card.thresholds[0] else negative, "probability": float(p)}
                for p in probs[:, 0]]
    preds = []
    for p in probs:
        if np.isnan(p).any():
            preds.append({"labels": None, "probabilities": {a: None if np.isnan(q) else float(q)
                                                            for a, q in zip(card.labels, p)}})
        else:
            preds.append({"labels": [a for a, q, t in zip(card.labels, p, card.thresholds) if q >= t],
                          "probabilities": {a: float(q) for a, q in zip(card.labels, p)}})
    return preds


def spec(task: str, n: int) -> helpers.Spec:
    labels = [f"c{i}" for i in range(2 if task == "binary" else n)]
    thresholds = {"binary": [0.5], "multilabel": [0.2 + 0.6 * i / n for i in range(n)]}.get(task)
    return helpers.Spec(f"diff-{task}-{n}", task, [[1.0] * n], [0.0] * n, labels, thresholds=thresholds)


CARDS = {(task, n): helpers.make_card(spec(task, n), "0" * 64)
         for task, sizes in [("binary", [1]), ("multiclass", [2, 3, 10, 20, 40]), ("multilabel", [1, 3, 10]),
                             ("regression", [1, 3])] for n in sizes}


def outputs(rng: np.random.Generator, rows: int, n: int, dtype) -> np.ndarray:
    """Realistic logits with ties, +-inf, NaN and +-1000 sprinkled in."""
    x = rng.normal(0, rng.choice([0.5, 3.0, 30.0]), (rows, n))
    odd = rng.random((rows, n)) < 0.15
    x[odd] = rng.choice(SPECIAL, odd.sum())
    ties = rng.random(rows) < 0.2
    if n > 1:
        x[ties, -1] = x[ties, 0]
    if rng.random() < 0.2:
        x = np.round(x)  # many ties
    return x.astype(dtype)


def check(card, x: np.ndarray, top_k: int) -> None:
    got = tasks.postprocess(card, x, top_k)
    want = reference(card, x, top_k)
    assert got == want
    assert orjson.dumps(got) == orjson.dumps(want)  # same types too (a list is not a tuple, 1.0 is not 1)
    assert _types(got) == _types(want)
    for i in range(len(x)):  # one row alone answers what it answers inside the batch
        assert tasks.postprocess(card, x[i:i + 1], top_k) == [got[i]]


def _types(obj):
    if isinstance(obj, dict):
        return {k: _types(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_types(v) for v in obj]
    return type(obj)


@pytest.mark.parametrize("key", sorted(CARDS), ids=lambda k: f"{k[0]}-{k[1]}")
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_postprocess_equals_the_reference(key, rows, dtype):
    rng = np.random.default_rng([rows, key[1], len(key[0]), np.dtype(dtype).itemsize])
    for trial in range(20 if rows < 100 else 3):
        x = outputs(rng, rows, key[1], dtype)
        for top_k in ([1, 2, 3, key[1], key[1] + 5] if key[0] == "multiclass" else [3]):
            check(CARDS[key], x, top_k)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(CARDS)), data=st.data())
def test_postprocess_equals_the_reference_hypothesis(key, data):
    n = key[1]
    rows = data.draw(st.sampled_from(ROW_COUNTS[:4]))
    values = st.one_of(st.floats(width=32), st.sampled_from(SPECIAL), st.floats(-5, 5, width=32))
    x = np.array(data.draw(st.lists(st.lists(values, min_size=n, max_size=n), min_size=rows, max_size=rows)),
                 dtype=np.float32)
    check(CARDS[key], x, data.draw(st.integers(1, n + 2)))


def test_all_finite_batches_of_every_size_match():
    """Past the plain-Python cut-off too: each row's answer is the same at every batch size."""
    rng = np.random.default_rng(7)
    for n in [3, 10, 20]:
        x = rng.normal(0, 3, (300, n)).astype(np.float32)
        full = tasks.postprocess(CARDS["multiclass", n], x, 3)
        assert full == reference(CARDS["multiclass", n], x, 3)
        for rows in range(1, 40):
            assert tasks.postprocess(CARDS["multiclass", n], x[:rows], 3) == full[:rows]


def test_numpy_sum_adds_in_numpys_order():
    rng = np.random.default_rng(8)
    for n in range(1, 300):
        e = np.exp(rng.normal(0, 3, (2, n)))
        want = e.sum(axis=1).tolist()
        flat = e.ravel().tolist()
        assert [tasks._numpy_sum(flat, 0, n), tasks._numpy_sum(flat, n, n)] == want, n


def test_integer_outputs_are_taken_as_floats():
    assert tasks.postprocess(CARDS["regression", 1], np.array([[2]])) == [{"value": 2.0}]
    assert type(tasks.postprocess(CARDS["regression", 3], np.array([[2, 3, 4]]))[0]["value"][0]) is float


def test_no_rows():
    for card in CARDS.values():
        assert tasks.postprocess(card, np.zeros((0, card.output.shape[1]), np.float32)) == []
