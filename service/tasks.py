"""Task postprocessing: network outputs -> one JSON-ready prediction per row. Pure numpy.

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
    top = x.max(axis=1, keepdims=True)
    if finite or (finite is None and np.isfinite(top).all()):  # no inf - inf: no errstate's ~4 us
        e = np.exp(x - top)
    else:
        with np.errstate(invalid="ignore"):  # inf - inf rows are reported as null by the caller
            e = np.exp(x - top)
    return e / e.sum(axis=1, keepdims=True)


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
        found = [[name for name, y in zip(card.labels, row) if y] for row in on]
        defined = ~np.isnan(probs).any(axis=1)
    if not defined.all():
        for i in np.flatnonzero(~defined).tolist():
            found[i] = None
    return found


def postprocess(card: ModelCard, outputs: np.ndarray, top_k: int = DEFAULT_TOP_K) -> list[dict]:
    """Turn a [rows, n_outputs] output batch into one prediction dict per row."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if card.task is Task.regression:
        return regression(outputs)
    if card.task is Task.multiclass:
        finite = np.isfinite(outputs).all(axis=1)
        return multiclass(outputs, softmax(outputs, bool(finite.all())), card.labels, top_k, finite)
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
    """Best class, its probability and the top_k classes per row (`finite`: as `predicted`'s `finite_rows`)."""
    # Rank by logit: the same order as by probability, but still exact where probabilities underflow to 0.
    # The stable ranking puts the first of tied logits first, as argmax would: the best class is entry 0.
    order = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
    n, k = order.shape
    if n == 1:  # one row: plain list indexing costs less than the gathering arrays below
        row = probs[0].tolist()
        entries = [{"label": labels[i], "probability": row[i]} for i in order[0].tolist()]
        preds = [{"label": entries[0]["label"], "probability": entries[0]["probability"], "top_k": entries}]
    else:
        # Gather in numpy, then make every top_k entry in one flat pass (not one comprehension per row).
        flat = (order + np.arange(0, n * probs.shape[1], probs.shape[1])[:, None]).ravel()
        names = np.asarray(labels, dtype=object)[order.ravel()].tolist()
        ps = probs.ravel()[flat].tolist()
        entries = [{"label": a, "probability": p} for a, p in zip(names, ps)]
        preds = [{"label": names[j], "probability": ps[j], "top_k": entries[j:j + k]} for j in range(0, n * k, k)]
    if finite is None:
        finite = np.isfinite(logits).all(axis=1)
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():  # no softmax for this row
            preds[i] = {"label": None, "probability": None, "top_k": []}
    return preds


def multilabel(probs: np.ndarray, found: list, labels: list[str]) -> list[dict]:
    """Labels at or over their thresholds and every label's probability, per row."""
    preds = []
    for row_labels, row_p in zip(found, probs.tolist()):
        p = dict(zip(labels, row_p))
        if row_labels is None:
            p = {k: _finite(v) for k, v in p.items()}
        preds.append({"labels": row_labels, "probabilities": p})
    return preds


def regression(values: np.ndarray) -> list[dict]:
    """One value per row (a list per row when the model has several targets)."""
    rows = values[:, 0].tolist() if values.shape[1] == 1 else values.tolist()
    preds = [{"value": v} for v in rows]
    for i in np.flatnonzero(~np.isfinite(values).all(axis=1)).tolist():
        v = preds[i]["value"]
        preds[i] = {"value": [_finite(x) for x in v] if isinstance(v, list) else _finite(v)}
    return preds


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
