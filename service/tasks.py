"""Task postprocessing: network outputs -> one prediction per row (its JSON text), or the predictions' columns.

One numpy path per concern, whatever the batch size: `softmax` and `sigmoid` make probabilities,
one `decide` function per task says which label wins (or which labels pass) and when that is null,
and one `answer` function per task writes the /predict answers. `POST` is the table of them, keyed
by task; a new task type is one entry there plus its functions here.

What a classifier's output holds is the card's `output_kind`, decided once per (task, kind) in
`post_for`: `logits` get the task's sigmoid or softmax; `probabilities` (a graph that ends in
its own softmax or sigmoid) are taken as they are (clipped to [0, 1], past which float32
rounding may put them), so no second sigmoid or softmax is ever applied. Everything else (decisions, answers, named outputs) is the same for both kinds; the
ranking of a multiclass row is the same on logits and on their softmax.

The outputs become predictions:

- binary: `{"label", "probability"}`, the probability of the single output; the label is `labels[1]`
  when the probability reaches the card's threshold, else `labels[0]`.
- multiclass: `{"label", "probability", "top_k": [{"label", "probability"}, ...]}` from the
  probabilities, best first (ties keep output order); `top_k` 0 gives an empty list.
- multilabel: `{"labels": [...], "probabilities": {label: p}}`, one probability per label; `labels`
  lists those at or over their own threshold, in output order.
- regression: `{"value"}`, a number for one target, a list for several.

Asked for as columns (`postprocess(..., columns=True)`, for bulk clients), the same predictions
come as one object whose every field is a list with an entry per row: entry i of a column is
that field of row i's prediction. Objects inside a prediction turn inside out too: multiclass
`"top_k": {"label": [[...], ...], "probability": [[...], ...]}` (k entries per row, none where
the row's label is null), multilabel `"probabilities": {label: [p per row]}`. The values are the
rows' values, written by the same orjson from the same arrays.

Sigmoid and softmax never exponentiate a large positive number, so logits like +-1000 give exact
0/1 probabilities rather than overflow. Non-finite outputs: JSON has no NaN, so whatever depends
on one is null. A logit of +-inf still has a sigmoid (1 or 0) and is answered normally; a NaN
logit makes that probability null, and the label null too (binary), or the row's `labels` null
(multilabel). A multiclass logit of -inf is a class of probability 0 (a masked class), ranked
last; a row with a NaN or +inf logit, or only -inf ones, has no softmax (a model's own
probabilities: any non-finite value): `label` and `probability` are null and `top_k` is empty. A
non-finite regression value is null.

The same probabilities and decisions (`decided`) make the named outputs of the V2 and TF Serving
protocols (`service.named`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from itertools import compress
from typing import NamedTuple

import numpy as np
import orjson

from service.card import ModelCard, OutputKind, Task

DEFAULT_TOP_K = 3


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via exp(-|x|), which is at most 1, so it never overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def softmax(x: np.ndarray, finite: bool | None = None) -> np.ndarray:
    """Row-wise softmax; subtracting the row max keeps every exponent <= 0. Its limits where a
    logit is infinite: -inf is a class of probability 0, and +inf logits share the whole
    probability; a row with NaN, or every logit -inf, has none (NaN, answered null).

    `finite`: whether the caller already knows every value of `x` is finite (None: look).
    """
    top = _row_max(x)
    if finite or (finite is None and np.isfinite(top).all()):  # no inf - inf, so no errstate needed
        e = np.exp(x - top)
    else:
        with np.errstate(invalid="ignore"):  # inf - inf
            e = np.exp(x - top)
        infinite = np.isposinf(top[:, 0])  # (a row holding NaN has a NaN maximum)
        e[infinite] = np.isposinf(x[infinite])
    e /= e.sum(axis=1, keepdims=True)
    return e


def _row_max(x: np.ndarray) -> np.ndarray:
    """x.max(axis=1, keepdims=True); for many short rows, the maximum across the columns of a
    transposed copy, which numpy vectorises (it reduces each row of `x` on its own). Either may
    give 0.0 or -0.0 for a zero maximum; x - top, and so the softmax, is the same."""
    if x.shape[1] <= 16 and x.shape[0] > x.shape[1]:
        return np.ascontiguousarray(x.T).max(axis=0)[:, None]
    return x.max(axis=1, keepdims=True)


class Scored(NamedTuple):
    """One output batch as the answers and the named outputs read it; what `decide` says per row
    is made by whoever reads it (a multiclass answer of finite outputs ranks on its own)."""

    x: np.ndarray  # [rows, n_outputs] float64
    finite: bool  # every value of x is finite: nothing to null
    probs: np.ndarray | None  # [rows, n_outputs] float64; None for regression


def _score(card: ModelCard, post: Post, outputs: np.ndarray) -> Scored:
    """Probabilities for a batch; float32 becomes float64 exactly, as JSON needs."""
    x = np.ascontiguousarray(outputs, dtype=np.float64)  # row-major: sums run in one order
    finite = bool(np.isfinite(x).all())
    return Scored(x, finite, None if post.probabilities is None else post.probabilities(x, finite))


def _found(card: ModelCard, s: Scored) -> list:
    """What the task's `decide` says for each row of a scored batch."""
    return POST[card.task].decide(card, s.x, s.probs, s.finite)


def postprocess(card: ModelCard, outputs: np.ndarray, top_k: int = DEFAULT_TOP_K,
                columns: bool = False) -> RowTexts | dict:
    """Turn a [rows, n_outputs] output batch into one prediction per row, as its JSON text; with
    `columns`, into the predictions' columns (lists and C-contiguous arrays, null as NaN or None)."""
    post = post_for(card.task, card.output_kind)
    return (post.columns if columns else post.answer)(card, _score(card, post, outputs), top_k)


def decided(card: ModelCard, outputs: np.ndarray) -> tuple[np.ndarray, list]:
    """A classifier's output batch -> its probabilities (float64) and what `decide` says per row."""
    s = _score(card, post_for(card.task, card.output_kind), outputs)
    return s.probs, _found(card, s)


# Which label wins, or which labels pass, per row; None where that is undefined (see above).

def _decide_binary(card: ModelCard, x: np.ndarray, probs: np.ndarray, finite: bool) -> list:
    """labels[1] when the probability reaches the threshold, else labels[0]; None for NaN."""
    negative, positive = card.labels
    p = probs[:, 0]
    found = [positive if on else negative for on in (p >= card.thresholds[0]).tolist()]
    return found if finite else _null(found, np.isnan(p))


def _decide_multiclass(card: ModelCard, x: np.ndarray, probs: np.ndarray, finite: bool) -> list:
    """The `_winner`; None for a row without probabilities (see the module)."""
    found = _labels(tuple(card.labels)).names[_winner(x)].tolist()
    return found if finite else _null(found, ~np.isfinite(probs).all(axis=1))


def _decide_multilabel(card: ModelCard, x: np.ndarray, probs: np.ndarray, finite: bool) -> list:
    """The labels at or over their own thresholds, in output order; None for a row with a NaN."""
    found = [list(compress(card.labels, row)) for row in (probs >= np.asarray(card.thresholds)).tolist()]
    return found if finite else _null(found, np.isnan(probs).any(axis=1))


def _winner(x: np.ndarray) -> np.ndarray:
    """Each row's class: the first of its largest logits."""
    return x.argmax(axis=1)


def _null(found: list, undefined: np.ndarray) -> list:
    for i in np.flatnonzero(undefined).tolist():
        found[i] = None
    return found


# The /predict answer per task, from the scored batch: each row's JSON text, written from the
# arrays in one pass (numbers by orjson, which writes a float64 array exactly as it writes each
# value; labels as pieces of JSON text made once per card), so that no dict is built per row or entry.

def json_numbers(values: np.ndarray) -> list[bytes]:
    """The JSON text of each value of a float array as orjson writes it (the shortest text of its
    float64 or float32 value), row-major; non-finite values are null. V2 uses it too."""
    if not values.size:
        return []
    return orjson.dumps(values.ravel(), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")


class _Labels(NamedTuple):
    """A card's labels by output index; the JSON text that starts an entry naming each label (its
    `{"label":...,"probability":`), by label (None for null) and, as arrays, by output index, for
    an answer's first entry, the first entry of its top_k and the entries after that."""

    names: np.ndarray  # object array of str
    entry_of: dict  # label (or None) -> b'{"label":"a","probability":'
    first: np.ndarray  # object arrays of bytes: the entry's text
    top: np.ndarray  # ... after ',"top_k":['
    later: np.ndarray  # ... after '}', an earlier entry's end


@lru_cache(maxsize=64)
def _labels(labels: tuple[str, ...]) -> _Labels:
    entries = [b'{"label":' + orjson.dumps(label) + b',"probability":' for label in labels]
    pieces = [np.array([lead + entry for entry in entries], dtype=object) for lead in (b"", b',"top_k":[', b"},")]
    entry_of = {**dict(zip(labels, entries)), None: b'{"label":null,"probability":'}
    return _Labels(np.array(labels, dtype=object), entry_of, *pieces)


class RowTexts:
    """A batch's /predict answers: each row's JSON text, all in one bytes object with a NUL
    between two rows (JSON escapes NUL, so no row's text holds one). `json()` is the rows as the
    inside of a JSON array, without a list of rows in between; a slice of the rows (a request's
    share of a batch, the batcher's `take`) is the list of their texts."""

    __slots__ = ("text", "n", "_rows")

    def __init__(self, text: bytes, n: int):
        self.text, self.n, self._rows = text, n, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: slice) -> list[bytes]:
        return self.rows()[rows]

    def json(self) -> bytes:
        return self.text.replace(b"\0", b",")

    def rows(self) -> list[bytes]:
        """Each row's text; split once for all the slices of a batch."""
        if self._rows is None:
            self._rows = self.text.split(b"\0") if self.n else []
        return self._rows


def _join(n: int, parts: list, whole: dict[int, bytes] | None = None) -> RowTexts:
    """n rows' texts, each its `parts` one after the other: a part is a list of texts, one per row,
    or one text for every row. `whole`: rows whose text is given instead, by row index."""
    width = len(parts) + 1  # and the NUL after each row
    out = [b"\0"] * (width * n)
    for j, part in enumerate(parts):
        out[j::width] = part if type(part) is list else [part] * n
    for i, text in (whole or {}).items():
        out[i * width:(i + 1) * width - 1] = [text] + [b""] * (width - 2)
    if n:
        out[-1] = b""  # no NUL after the last row
    return RowTexts(b"".join(out), n)


def _answer_binary(card: ModelCard, s: Scored, top_k: int) -> RowTexts:
    """Positive-class probability and label per row (both null when it is NaN)."""
    entry_of = _labels(tuple(card.labels)).entry_of
    found = _found(card, s)
    return _join(len(found), [[entry_of[label] for label in found], json_numbers(s.probs[:, 0]), b"}"])


def _ranked(x: np.ndarray, top_k: int) -> tuple[np.ndarray, int]:
    """Each row's top_k classes, best first, as [rows, k] output indices (the `_winner` alone for
    top_k 0), and k."""
    # Ranked by logit: the order of the probabilities, and still exact where they underflow to 0.
    # Stable, so tied logits keep output order and entry 0 is the `_winner` that `decide` chose.
    # With top_k 0 the winner alone is taken (its label and probability), without ranking the rest.
    k = min(top_k, x.shape[1])
    return ((-x).argsort(axis=1, kind="stable")[:, :k] if k else _winner(x)[:, None]), k


def _answer_multiclass(card: ModelCard, s: Scored, top_k: int) -> RowTexts:
    """The winning class, its probability and the top_k classes per row, best first."""
    order, k = _ranked(s.x, top_k)
    n, ranked = order.shape
    labels = _labels(tuple(card.labels))
    numbers = json_numbers(s.probs[np.arange(n)[:, None], order])
    best, first = order[:, 0], numbers[0::ranked]
    parts = [labels.first[best].tolist(), first]
    if k:  # the winner is the top_k's first entry too
        parts += [labels.top[best].tolist(), first]
        for j in range(1, k):
            parts += [labels.later[order[:, j]].tolist(), numbers[j::ranked]]
    parts.append(b"}]}" if k else b',"top_k":[]}')
    if s.finite:
        return _join(n, parts)
    unknown = [i for i, label in enumerate(_found(card, s)) if label is None]
    return _join(n, parts, dict.fromkeys(unknown, b'{"label":null,"probability":null,"top_k":[]}'))


def _answer_multilabel(card: ModelCard, s: Scored, top_k: int) -> RowTexts:
    """Labels at or over their thresholds and every label's probability, per row."""
    n, width = s.probs.shape
    numbers = json_numbers(s.probs)
    keys = _multilabel_keys(tuple(card.labels))
    parts = [b'{"labels":', _texts(_found(card, s))]
    for j, key in enumerate(keys):
        parts += [key, numbers[j::width]]
    parts.append(b"}}")
    return _join(n, parts)


def _texts(found: list) -> list[bytes]:
    """The JSON text of each row's labels (a list, or None), each distinct one written once: rows
    repeat a few label sets, and a dict lookup costs less than an orjson output kept per row."""
    made, texts = {}, []
    for labels in found:
        key = labels if labels is None else tuple(labels)
        text = made.get(key)
        if text is None:
            text = made[key] = orjson.dumps(labels)
        texts.append(text)
    return texts


@lru_cache(maxsize=64)
def _multilabel_keys(labels: tuple[str, ...]) -> tuple[bytes, ...]:
    """The text before each label's probability in a multilabel answer."""
    keys = [orjson.dumps(label) + b":" for label in labels]
    return (b',"probabilities":{' + keys[0], *(b"," + key for key in keys[1:]))


def _answer_regression(card: ModelCard, s: Scored, top_k: int) -> RowTexts:
    """One value per row (a list per row when the model has several targets); non-finite: null."""
    n, width = s.x.shape
    numbers = json_numbers(s.x)
    if width == 1:
        return _join(n, [b'{"value":', numbers, b"}"])
    parts = [b'{"value":[']
    for j in range(width):
        parts += [numbers[j::width], b"," if j < width - 1 else b"]}"]
    return _join(n, parts)


# The same answers as columns (see the module): lists, and float64 arrays that orjson writes
# as the rows' answers write them (NaN and infinities as null). Every column has one entry per
# row, so the batcher can hand each request its slice (`service.batching.take`).

def _columns_binary(card: ModelCard, s: Scored, top_k: int) -> dict:
    return {"label": _found(card, s), "probability": np.ascontiguousarray(s.probs[:, 0])}


def _columns_multiclass(card: ModelCard, s: Scored, top_k: int) -> dict:
    order, k = _ranked(s.x, top_k)
    n = len(order)
    best = s.probs[np.arange(n)[:, None], order]  # [rows, k] (the winner's alone for top_k 0)
    names = _labels(tuple(card.labels)).names
    label = names[order[:, 0]].tolist() if s.finite else _found(card, s)
    probability = best[:, 0].copy()
    top_labels = names[order].tolist() if k else [[]] * n  # one empty list, written n times
    top_probs = best if k else [[]] * n
    if not s.finite:  # the rows `decide` leaves without a label have no probability and no top_k
        unknown = [i for i, found in enumerate(label) if found is None]
        probability[unknown] = np.nan
        top_probs = top_probs if type(top_probs) is list else top_probs.tolist()
        for i in unknown:
            top_labels[i], top_probs[i] = [], []
    return {"label": label, "probability": probability,
            "top_k": {"label": top_labels, "probability": top_probs}}


def _columns_multilabel(card: ModelCard, s: Scored, top_k: int) -> dict:
    return {"labels": _found(card, s), "probabilities": dict(zip(card.labels, s.probs.T.copy()))}


def _columns_regression(card: ModelCard, s: Scored, top_k: int) -> dict:
    return {"value": np.ascontiguousarray(s.x[:, 0] if s.x.shape[1] == 1 else s.x)}


class Post(NamedTuple):
    """How one task turns its outputs into answers (no probabilities or decisions: regression)."""

    probabilities: Callable[[np.ndarray, bool | None], np.ndarray] | None
    decide: Callable[[ModelCard, np.ndarray, np.ndarray, bool], list] | None
    answer: Callable[[ModelCard, Scored, int], RowTexts]
    columns: Callable[[ModelCard, Scored, int], dict]


POST: dict[Task, Post] = {
    Task.binary: Post(lambda x, finite: sigmoid(x), _decide_binary, _answer_binary, _columns_binary),
    Task.multiclass: Post(softmax, _decide_multiclass, _answer_multiclass, _columns_multiclass),
    Task.multilabel: Post(lambda x, finite: sigmoid(x), _decide_multilabel, _answer_multilabel, _columns_multilabel),
    Task.regression: Post(None, None, _answer_regression, _columns_regression),
}


def _as_given(x: np.ndarray, finite: bool | None) -> np.ndarray:
    # A graph's own softmax or sigmoid in float32 may round past 1 (1.0000001): a probability
    # says at most 1. NaN stays NaN.
    return np.clip(x, 0.0, 1.0)


@lru_cache(maxsize=16)
def post_for(task: Task, kind: OutputKind) -> Post:
    """The task's entry, taking outputs that already are probabilities as they are."""
    post = POST[task]
    return Post(_as_given, *post[1:]) if kind is OutputKind.probabilities else post
