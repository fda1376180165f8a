"""A table's raw columns: the fill values and categories learned from the training rows, and the
encoding the network is trained on.

Raw rows travel as the exported graph takes them, a dict of its inputs: `features` (float32, the
numeric columns, NaN missing) and `categories` (text, the categorical columns, "" missing), each
present only when it has a column. `encode` is the training encoding in numpy; training/preprocess.py
writes the same encoding as an ONNX graph, and the parity check proves the two agree.
"""

from __future__ import annotations

import numpy as np

from service.card import Column
from service.codecs.columns import unseen

FEATURES = "features"
CATEGORIES = "categories"
MISSING = ""  # a missing category, as clients and the graph spell it


def raw_inputs(numeric: np.ndarray, text: np.ndarray | None) -> dict[str, np.ndarray]:
    """The graph inputs for these rows, each only when it has a column."""
    feeds = {FEATURES: numeric.astype(np.float32)} if numeric.shape[1] else {}
    if text is not None and text.shape[1]:
        feeds[CATEGORIES] = text.astype(object)
    return feeds


def learn(names: list[str], categorical: tuple[str, ...], raw: dict[str, np.ndarray],
          missing_texts: tuple[str, ...] = ()) -> list[Column]:
    """Each column's fill and categories, from the training rows in `raw` only; `missing_texts`
    (the --na-values) mean missing in every categorical column, at serving time too."""
    numeric = iter(range(len(names) - len(categorical)))
    text = iter(range(len(categorical)))
    columns = []
    for name in names:
        if name in categorical:
            columns.append(_categorical(name, raw[CATEGORIES][:, next(text)], missing_texts))
        else:
            columns.append(_numeric(name, raw[FEATURES][:, next(numeric)]))
    return columns


def _numeric(name: str, values: np.ndarray) -> Column:
    missing = np.isnan(values)
    if missing.all():
        raise ValueError(f"feature column {name!r} has no value in the training split")
    return Column(name=name, kind="numeric", fill=_readable(np.median(values[~missing].astype(np.float64))),
                  missing_in_training=int(missing.sum()))


def _shortest(value) -> float:
    """The float32 as its shortest decimal (11.725, not 11.725000381469727): the same float32."""
    return float(str(np.float32(value)))


def _readable(value) -> float:
    """The shortest decimal within one float32 step of `value` (11.725, not 11.725000381469727; 18.63
    for the median of 18.62 and 18.64, which float32 holds as 18.630001): its float32 is the graph's
    fill, and the number is what a person reads in the card and the warnings."""
    near = np.float32(value)
    for digits in range(1, 10):
        text = f"{float(near):.{digits}g}"
        if abs(np.float32(text) - near) <= abs(np.spacing(near)):
            return float(text)
    return float(near)


def _categorical(name: str, values: np.ndarray, missing_texts: tuple[str, ...] = ()) -> Column:
    present = values[values != MISSING]
    if len(present) == 0:
        raise ValueError(f"feature column {name!r} has no value in the training split")
    seen, counts = np.unique(present.astype(str), return_counts=True)
    # np.unique sorts, so a tie for the most frequent goes to the first name: deterministic.
    return Column(name=name, kind="categorical", fill=str(seen[np.argmax(counts)]),
                  categories=seen.tolist(), missing_in_training=int(len(values) - len(present)),
                  missing_texts=list(missing_texts))


def numeric_columns(columns: list[Column]) -> list[Column]:
    return [c for c in columns if c.kind == "numeric"]


def categorical_columns(columns: list[Column]) -> list[Column]:
    return [c for c in columns if c.kind == "categorical"]


def encode(columns: list[Column], raw: dict[str, np.ndarray]) -> np.ndarray:
    """The network's input: filled numbers, then each category column one-hot over its training
    categories (an unseen value is all zeros), in the order of `columns` within each kind."""
    parts = []
    numeric = numeric_columns(columns)
    if numeric:
        x = raw[FEATURES].astype(np.float32)
        fill = np.array([c.fill for c in numeric], dtype=np.float32)
        parts.append(np.where(np.isnan(x), fill, x))
    for j, c in enumerate(categorical_columns(columns)):
        values = np.where(raw[CATEGORIES][:, j] == MISSING, c.fill, raw[CATEGORIES][:, j])
        parts.append((values[:, None] == np.array(c.categories, dtype=object)).astype(np.float32))
    return np.concatenate(parts, axis=1)


def take(raw: dict[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in raw.items()}


def with_probes(columns: list[Column], raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`raw` plus the first row with every value missing and, when there are categories, with
    every category unseen: so a parity check or a golden replay always crosses the fill and the
    all-zero encoding, whether or not the test rows happen to."""
    missing = {FEATURES: np.nan, CATEGORIES: MISSING}
    probes = [{k: np.full_like(v[:1], missing[k]) for k, v in raw.items()}]
    if CATEGORIES in raw:
        never = np.array([[unseen(c) for c in categorical_columns(columns)]], dtype=object)
        probes.append({**take(raw, slice(0, 1)), CATEGORIES: never})
    return {k: np.concatenate([v, *(p[k] for p in probes)]) for k, v in raw.items()}


def n_probes(columns: list[Column]) -> int:
    """How many rows `with_probes` adds."""
    return 1 + bool(categorical_columns(columns))


def raw_rows(columns: list[Column], raw: dict[str, np.ndarray]) -> list[list[float | str | None]]:
    """Rows as clients send them: one value per column in `columns` order, None when missing."""
    numeric = iter([[_shortest(v) for v in col] for col in raw[FEATURES].T]) if FEATURES in raw else iter(())
    text = iter(raw[CATEGORIES].T.tolist()) if CATEGORIES in raw else iter(())
    by_column = [next(numeric) if c.kind == "numeric" else next(text) for c in columns]
    gone = lambda v: v is None or v == MISSING or (isinstance(v, float) and np.isnan(v))  # noqa: E731
    return [[None if gone(v) else v for v in row] for row in zip(*by_column)]


def native(columns: list[Column], raw: dict[str, np.ndarray]) -> tuple[np.ndarray, list[bool]]:
    """The rows as gradient-boosted trees take them natively: numbers with NaN for missing, and
    each category as its code in the column's categories (NaN: missing or unseen); with the mask
    of the category columns."""
    numeric, categorical = numeric_columns(columns), categorical_columns(columns)
    parts = [raw[FEATURES].astype(np.float64)] if numeric else []
    for j, c in enumerate(categorical):
        codes = {name: float(i) for i, name in enumerate(c.categories)}
        parts.append(np.array([[codes.get(v, np.nan)] for v in raw[CATEGORIES][:, j]], np.float64))
    return np.hstack(parts), [False] * len(numeric) + [True] * len(categorical)
