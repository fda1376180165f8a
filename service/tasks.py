"""Task postprocessing: network outputs -> one JSON-ready prediction per row.

numpy for batches; plain Python for a few rows (numpy's fixed cost per call would dominate there),
with the same answers bit for bit.

Networks end in logits (regression: values); here they become predictions:

- binary: `{"label", "probability"}`, the sigmoid of the single logit; the label is `labels[1]`
  when the probability reaches the card's threshold, else `labels[0]`.
- multiclass: `{"label", "probability", "top_k": [{"label", "probability"}, ...]}` from a
  softmax over the logits, best first (ties keep output order).
- multilabel: `{"labels": [...], "probabilities": {label: p}}`, one sigmoid per label; `labels`
  lists those at or over their own threshold, in output order.
- regression: `{"value"}`, a number for one target, a list for several.

Sigmoid and softmax never exponentiate a large positive number, so logits like +-1000 give exact
0/1 probabilities rather than overflow. Non-finite outputs: JSON has no NaN, so whatever depends
on one is null. A logit of +-inf still has a sigmoid (1 or 0) and is answered normally; a NaN
logit makes that probability null, and the label null too (binary), or the row's `labels` null
(multilabel). A multiclass row with any non-finite logit has no softmax: `label` and
`probability` are null and `top_k` is empty. A non-finite regression value is null.
"""

from __future__ import annotations

import math
from itertools import compress

import numpy as np

from service.card import ModelCard, Task

DEFAULT_TOP_K = 3


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via exp(-|x|), which is at most 1, so it never overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(x: np.ndarray, finite: bool | None = None) -> np.ndarray:
    """Row-wise softmax; subtracting the row max keeps every exponent <= 0.

    `finite`: whether the caller already knows every value of `x` is finite (None: look).
    """
    top = _row_max(x)
    if finite or (finite is None and np.isfinite(top).all()):  # no inf - inf: no errstate's ~4 us
        e = np.exp(x - top)
    else:
        with np.errstate(invalid="ignore"):  # inf - inf rows are reported as null by the caller
            e = np.exp(x - top)
    return e / e.sum(axis=1, keepdims=True)


def _row_max(x: np.ndarray) -> np.ndarray:
    """x.max(axis=1, keepdims=True), faster for many short rows (numpy reduces each row on its own:
    ~40 ns a row); the maximum across the columns of a transposed copy is vectorised instead.
    Either may return 0.0 or -0.0 for a row's zero maximum; x - top, and so softmax, is the same."""
    if x.shape[1] <= 16 and x.shape[0] > x.shape[1]:
        return np.ascontiguousarray(x.T).max(axis=0)[:, None]
    return x.max(axis=1, keepdims=True)


def probabilities(card: ModelCard, outputs: np.ndarray) -> np.ndarray:
    """[rows, n_outputs] probabilities: softmax for multiclass, one sigmoid per unit otherwise."""
    return softmax(outputs) if card.task is Task.multiclass else sigmoid(outputs)


def predicted(card: ModelCard, outputs: np.ndarray, probs: np.ndarray, finite_rows: np.ndarray | None = None) -> list:
    """Per row: the label (binary, multiclass) or the list of labels (multilabel); None where undefined.

    `finite_rows` (multiclass): `np.isfinite(outputs).all(axis=1)` when the caller has it already.
    """
    if card.task is Task.binary:
        negative, positive = card.labels
        found = [positive if on else negative for on in (probs[:, 0] >= card.thresholds[0]).tolist()]
        defined = ~np.isnan(probs[:, 0])
    elif card.task is Task.multiclass:
        # argmax takes the first of tied logits, as the stable ranking in `multiclass` does.
        labels = card.labels
        found = [labels[i] for i in outputs.argmax(axis=1).tolist()]
        defined = np.isfinite(outputs).all(axis=1) if finite_rows is None else finite_rows
    else:
        on = (probs >= np.asarray(card.thresholds)).tolist()
        found = [list(compress(card.labels, row)) for row in on]
        defined = ~np.isnan(probs).any(axis=1)
    if not defined.all():
        for i in np.flatnonzero(~defined).tolist():
            found[i] = None
    return found


# Up to this many output values (rows x outputs), plain Python on `outputs.tolist()` beats numpy's
# fixed ~1 us per call; past it, numpy's per-element speed wins (measured with the digits models).
FEW_VALUES = 48


def postprocess(card: ModelCard, outputs: np.ndarray, top_k: int = DEFAULT_TOP_K) -> list[dict]:
    """Turn a [rows, n_outputs] output batch into one prediction dict per row."""
    outputs = np.asarray(outputs)
    if outputs.dtype.kind != "f":
        outputs = outputs.astype(np.float64)
    if outputs.size <= FEW_VALUES:  # float32 -> Python float is exact: the same float64 values as below
        rows = outputs.tolist()
        if card.task is Task.regression:
            return few_regression(rows, outputs.shape[1])
        if card.task is Task.multiclass:
            return few_multiclass(rows, card.labels, top_k)
        if card.task is Task.binary:
            return few_binary([row[0] for row in rows], card.labels, card.thresholds[0])
        return few_multilabel(rows, card.labels, card.thresholds)
    outputs = outputs.astype(np.float64, copy=False)
    if card.task is Task.regression:
        return regression(outputs)
    if card.task is Task.multiclass:
        finite = np.isfinite(outputs).all()  # per row only when some value is not (rare)
        return multiclass(outputs, softmax(outputs, bool(finite)), card.labels, top_k,
                          None if finite else np.isfinite(outputs).all(axis=1))
    probs = probabilities(card, outputs)
    found = predicted(card, outputs, probs)
    if card.task is Task.binary:
        return binary(probs, found)
    return multilabel(probs, found, card.labels)


def binary(probs: np.ndarray, found: list) -> list[dict]:
    """Positive-class probability and label per row."""
    p = probs[:, 0].tolist()
    return [{"label": label, "probability": None if label is None else q} for label, q in zip(found, p)]


def multiclass(logits: np.ndarray, probs: np.ndarray, labels: list[str], top_k: int,
               finite: np.ndarray | None = None) -> list[dict]:
    """Best class, its probability and the top_k classes per row (`finite`: None when every row is)."""
    # Rank by logit: the same order as by probability, but still exact where probabilities underflow to 0.
    # The stable ranking puts the first of tied logits first, as argmax would: the best class is entry 0.
    order = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
    n, k = order.shape
    # Gather in numpy, then make every top_k entry in one flat pass (not one comprehension per row).
    names = np.asarray(labels, dtype=object)[order.ravel()].tolist()
    ps = probs.ravel()[(order + np.arange(0, n * probs.shape[1], probs.shape[1])[:, None]).ravel()].tolist()
    entries = [{"label": a, "probability": p} for a, p in zip(names, ps)]
    preds = [{"label": names[j], "probability": ps[j], "top_k": entries[j:j + k]} for j in range(0, n * k, k)]
    if finite is not None and not finite.all():
        for i in np.flatnonzero(~finite).tolist():  # no softmax for this row
            preds[i] = {"label": None, "probability": None, "top_k": []}
    return preds


def multilabel(probs: np.ndarray, found: list, labels: list[str]) -> list[dict]:
    """Labels at or over their thresholds and every label's probability, per row."""
    preds = [{"labels": row_labels, "probabilities": dict(zip(labels, p))}
             for row_labels, p in zip(found, probs.tolist())]
    for pred in preds:
        if pred["labels"] is None:
            pred["probabilities"] = {k: _finite(v) for k, v in pred["probabilities"].items()}
    return preds


def regression(values: np.ndarray) -> list[dict]:
    """One value per row (a list per row when the model has several targets)."""
    rows = values[:, 0].tolist() if values.shape[1] == 1 else values.tolist()
    preds = [{"value": v} for v in rows]
    for i in np.flatnonzero(~np.isfinite(values).all(axis=1)).tolist():
        v = preds[i]["value"]
        preds[i] = {"value": [_finite(x) for x in v] if isinstance(v, list) else _finite(v)}
    return preds


# The same answers for a few rows in plain Python, bit for bit. Verified on x86-64 with AVX-512
# (numpy 2.4, glibc 2.36) over millions of random values: math.exp differs from np.exp by an ulp
# on ~5% of inputs, so exponentials still come from one np.exp call over a contiguous float64
# array, as in `sigmoid` and `softmax` (np.exp gave identical bits whatever the array's length,
# offset or stride); Python's own sum differs from numpy's pairwise sum, so `_numpy_sum` replays it.
# Subtraction, division and comparisons are IEEE in both. tests/service/test_tasks_fast.py holds
# both paths to a numpy reference at batch sizes 1 to 256.

def few_binary(logits: list[float], labels: list[str], threshold: float) -> list[dict]:
    """`binary` for a few rows given as a plain list of logits."""
    negative, positive = labels
    return [{"label": None, "probability": None} if p != p else
            {"label": positive if p >= threshold else negative, "probability": p} for p in _sigmoids(logits)]


def few_multiclass(rows: list[list[float]], labels: list[str], top_k: int) -> list[dict]:
    """`multiclass` for a few rows given as plain lists of logits."""
    n = len(labels)
    e, totals = _few_softmax(rows, n)
    preds = []
    for j, row, total in zip(range(0, len(e), n), rows, totals):
        if not _few_defined(row, total):  # no softmax for this row
            preds.append({"label": None, "probability": None, "top_k": []})
            continue
        # sorted() is stable with reverse=True too: tied logits keep output order, as in `multiclass`.
        entries = [{"label": labels[i], "probability": e[j + i] / total}
                   for i in sorted(range(n), key=row.__getitem__, reverse=True)[:top_k]]
        preds.append({"label": entries[0]["label"], "probability": entries[0]["probability"], "top_k": entries})
    return preds


def few_multilabel(rows: list[list[float]], labels: list[str], thresholds: list[float]) -> list[dict]:
    """`multilabel` for a few rows given as plain lists of logits."""
    n = len(labels)
    probs = _sigmoids([v for row in rows for v in row])
    preds = []
    for j in range(0, len(probs), n):
        p = probs[j:j + n]
        if math.isnan(sum(p)):  # a NaN logit: its probability and the row's labels are null
            preds.append({"labels": None, "probabilities": {a: None if q != q else q for a, q in zip(labels, p)}})
        else:
            preds.append({"labels": [a for a, q, t in zip(labels, p, thresholds) if q >= t],
                          "probabilities": dict(zip(labels, p))})
    return preds


def few_regression(rows: list[list[float]], n_outputs: int) -> list[dict]:
    """`regression` for a few rows given as plain lists."""
    if n_outputs == 1:
        return [{"value": _finite(row[0])} for row in rows]
    return [{"value": row if all(map(math.isfinite, row)) else [_finite(v) for v in row]} for row in rows]


def few_outputs(card: ModelCard, rows: list[list[float]]) -> tuple[list[list[float]], list]:
    """`probabilities` and `predicted` (as `service.inference.outputs` uses them) for a few rows
    given as plain lists: the same floats and labels, non-finite rows included."""
    n = len(rows[0])
    if card.task is Task.multiclass:
        e, totals = _few_softmax(rows, n)
        probs, found = [], []
        for j, row, total in zip(range(0, len(e), n), rows, totals):
            probs.append([q / total for q in e[j:j + n]])
            found.append(card.labels[row.index(max(row))] if _few_defined(row, total) else None)
        return probs, found
    flat = _sigmoids([v for row in rows for v in row])
    probs = [flat[j:j + n] for j in range(0, len(flat), n)]
    if card.task is Task.binary:
        negative, positive = card.labels
        t = card.thresholds[0]
        return probs, [None if p != p else positive if p >= t else negative for p, in probs]
    return probs, [None if any(q != q for q in p) else [a for a, q, t in zip(card.labels, p, card.thresholds) if q >= t]
                   for p in probs]


def _few_softmax(rows: list[list[float]], n: int) -> tuple[list[float], list[float]]:
    """`softmax`'s exponentials for plain rows of `n` logits (one flat list, the same np.exp) and
    each row's sum in numpy's order: >= 1 (exp(0) at the maximum), or NaN."""
    e = np.exp([v - top for row in rows for top in (max(row),) for v in row]).tolist()
    return e, [_numpy_sum(e, j, n) for j in range(0, len(e), n)]


def _few_defined(row: list[float], total: float) -> bool:
    """Whether a row has a softmax: a NaN or +inf logit makes its sum NaN (NaN - top, inf - inf);
    a -inf one only shows itself."""
    return total == total and -math.inf not in row


def _sigmoids(x: list[float]) -> list[float]:
    """`sigmoid` over a plain list, with the same np.exp."""
    e = np.exp([-abs(v) for v in x]).tolist()
    return [1.0 / (1.0 + q) if v >= 0 else q / (1.0 + q) for v, q in zip(x, e)]


def _numpy_sum(a: list[float], start: int, n: int) -> float:
    """sum(a[start:start + n]) added in the order of numpy's pairwise summation (`np.add.reduce` on a
    contiguous row: `pairwise_sum` in numpy/_core/src/umath/loops_utils.h.src), so rounding matches."""
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total += a[i]
        return total
    if n > 128:  # numpy's block size: split in two halves, the first a multiple of 8
        half = n // 2 - n // 2 % 8
        return _numpy_sum(a, start, half) + _numpy_sum(a, start + half, n - half)
    r0, r1, r2, r3, r4, r5, r6, r7 = a[start:start + 8]  # eight accumulators, one per lane
    end = start + n - n % 8
    for i in range(start + 8, end, 8):
        r0 += a[i]; r1 += a[i + 1]; r2 += a[i + 2]; r3 += a[i + 3]
        r4 += a[i + 4]; r5 += a[i + 5]; r6 += a[i + 6]; r7 += a[i + 7]
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, start + n):
        total += a[i]
    return total


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
