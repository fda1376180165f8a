"""A table model's raw columns (a card with `columns`): decoded values -> its graph inputs, and
the warnings a row's answer carries.

A table model's graph takes `features` (float32, its numeric columns in card order, NaN =
missing) and/or `categories` (strings, its categorical columns in card order, "" = missing);
the graph itself fills missing values and one-hot encodes categories (an unseen one as all
zeros). Every protocol decodes a request into one numpy structured array with a row per request
row and one field per graph input (`table`), which batching treats as it treats a matrix and
`runtime.LoadedModel.run` hands to the graph field by field.

/predict rows (`rows`) are objects keyed by column name or lists in column order; an absent key
or null is missing. A number for a categorical column, a string for a numeric one, a boolean or
anything nested is a 400 naming the row (from 0) and the feature. `warnings` says, per row,
which features were filled (with the card's fill) and which categories were not seen in
training; it reads the decoded batch, so every protocol reports the same things.
"""

from __future__ import annotations

import base64
from functools import lru_cache

import numpy as np

from service.card import CATEGORIES, FEATURES, Column, ModelCard
from service.codecs import json
from service.errors import BadRequest

_NONE = type(None)
UNSEEN = "(not seen in training)"  # a probe value for a category the graph never saw


@lru_cache(maxsize=64)
def _dtype(n_numeric: int, n_categorical: int) -> np.dtype:
    fields = [(FEATURES, np.float32, (n_numeric,))] if n_numeric else []
    return np.dtype(fields + ([(CATEGORIES, object, (n_categorical,))] if n_categorical else []))


def split(card: ModelCard) -> tuple[list[int], list[int]]:
    """The card positions of the numeric and of the categorical columns."""
    kinds = [c.kind for c in card.columns]
    return [j for j, k in enumerate(kinds) if k == "numeric"], [j for j, k in enumerate(kinds) if k == "categorical"]


def table(card: ModelCard, features: np.ndarray | None, categories: np.ndarray | None) -> np.ndarray:
    """The graph inputs (each [rows, its columns], present when the model has such columns) as one
    structured array; 400 when their row counts differ."""
    numeric, categorical = split(card)
    given = [a for a in (features, categories) if a is not None]
    n = len(given[0])
    if any(len(a) != n for a in given):
        raise BadRequest(f"inputs {FEATURES!r} and {CATEGORIES!r} must have as many rows, got {len(features)} "
                         f"and {len(categories)}")
    x = np.empty(n, _dtype(len(numeric), len(categorical)))
    if numeric:
        x[FEATURES] = features
    if categorical:
        x[CATEGORIES] = categories
    return x


def instances(rows_: object, card: ModelCard, max_rows: int, field: str = "instances") -> np.ndarray:
    """/predict rows as the model's decoded batch: a table model's through `rows`, any other's
    through `json.rows` (a [rows, n_features] float32 matrix)."""
    if card.columns is None:
        return json.rows(rows_, card, max_rows, field)
    return rows(rows_, card, max_rows, field)


def rows(instances_: object, card: ModelCard, max_rows: int, field: str = "instances") -> np.ndarray:
    """Rows of a table model (objects keyed by column name, or lists in column order) -> `table`."""
    instances_ = row_list(instances_, f"'{field}'", max_rows)
    columns = card.columns
    kinds = [c.kind == "numeric" for c in columns]
    given = [_row(row, i, columns) for i, row in enumerate(instances_)]
    # One pass in row order, whatever the kinds: the first bad value is the one reported.
    values = [[(_number if on else _text)(v, i, j, c) for j, (v, c, on) in enumerate(zip(row, columns, kinds))]
              for i, row in enumerate(given)]
    numeric, categorical = split(card)
    features = categories = None
    if numeric:
        # Checked at full width, so a message names the feature by its place in the row, as the client sent it.
        wide = [[v if on else 0.0 for v, on in zip(row, kinds)] for row in values]
        features = json.float32_matrix(wide, [c.name for c in columns], missing=True)[:, numeric]
    if categorical:
        categories = np.array([[row[j] for j in categorical] for row in values], dtype=object)
    return table(card, features, categories)


def _row(row: object, i: int, columns: list[Column]) -> list:
    names = [c.name for c in columns]
    if type(row) is dict:
        unknown = sorted(set(row) - set(names))
        if unknown:
            raise BadRequest(f"row {i}: unknown features {unknown}; expected some of {names}")
        return [row.get(name) for name in names]
    if type(row) is not list:
        raise BadRequest(f"row {i} must be an object keyed by feature name or a list of {len(names)} values "
                         f"in the order {names}, got {json.json_type(row)}")
    if len(row) != len(names):
        raise BadRequest(f"expected {len(names)} features per row, row {i} has {len(row)}; "
                         f"a missing value is null")
    return row


def _number(value: object, i: int, j: int, column: Column) -> float:
    """A numeric column's value: a number, or NaN for null (missing)."""
    kind = type(value)
    if kind is float or kind is int:
        return value
    if kind is _NONE:
        return float("nan")
    raise BadRequest(f"row {i}, feature {j} ({column.name}) is not a number: {json.show(value)}")


def _text(value: object, i: int, j: int, column: Column) -> str:
    """A categorical column's value: a string, or "" for null (missing)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is _NONE:
        return ""
    raise BadRequest(f"row {i}, feature {j} ({column.name}) is not a string: {json.show(value)}; it is a "
                     f"categorical feature, send its category as a string")


def _text_or_b64(value: object, i: int, j: int, column: Column) -> str:
    """TF Serving's form of a string as well: {"b64": "<base64>"}, which its clients send for bytes."""
    if type(value) is dict and list(value) == ["b64"] and type(value["b64"]) is str:
        try:
            return base64.b64decode(value["b64"], validate=True).decode()
        except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
            raise BadRequest(f"row {i}, feature {j} ({column.name}): {json.show(value)} is not base64 of "
                             "UTF-8 text") from None
    return _text(value, i, j, column)


def named(card: ModelCard, tensors: dict, max_rows: int, where: str) -> np.ndarray:
    """Named graph inputs as JSON rows (TF Serving): `features` rows of numbers or null, `categories`
    rows of strings (or {"b64": ...}) or null, one list per row -> `table`."""
    names = [s.name for s in card.graph_inputs]
    if sorted(tensors) != sorted(names):
        raise BadRequest(f"{where} names inputs {sorted(tensors)}; the model's inputs are {names}")
    numeric, categorical = split(card)
    decoded = {}
    for name, positions, value in ((FEATURES, numeric, _number), (CATEGORIES, categorical, _text_or_b64)):
        if positions:
            decoded[name] = _tensor_rows(tensors[name], name, [card.columns[j] for j in positions], max_rows, value)
    features = decoded.get(FEATURES)
    if features is not None:
        features = json.float32_matrix(features, [card.columns[j].name for j in numeric], missing=True)
    categories = decoded.get(CATEGORIES)
    return table(card, features, None if categories is None else np.array(categories, dtype=object))


def row_list(rows_: object, what: str, max_rows: int) -> list:
    """The rows as a list (a table `json.parse` read becomes one); 400 unless 1 to `max_rows`."""
    if type(rows_) is np.ndarray:
        rows_ = rows_.tolist()
    if type(rows_) is not list or not rows_:
        raise BadRequest(f"{what} must be a non-empty list of rows, got {json.show(rows_)}")
    if len(rows_) > max_rows:
        raise BadRequest(f"at most {max_rows} rows per request, got {len(rows_)}")
    return rows_


def _tensor_rows(rows_: object, name: str, columns: list[Column], max_rows: int, value) -> list[list]:
    rows_ = row_list(rows_, f"input {name!r}", max_rows)
    n = len(columns)
    for i, row in enumerate(rows_):
        if type(row) is not list or len(row) != n:
            raise BadRequest(f"input {name!r}: row {i} must be a list of {n} values "
                             f"{[c.name for c in columns]}, got {json.show(row)}")
    return [[value(v, i, j, c) for j, (v, c) in enumerate(zip(row, columns))] for i, row in enumerate(rows_)]


def warnings(card: ModelCard, x: np.ndarray) -> list[list[str]] | None:
    """Per row of a table model's decoded batch, what its answer should say (filled features,
    unseen categories), in column order; None when no row has anything to say."""
    numeric, categorical = split(card)
    found: list[tuple[int, int, str]] = []
    if numeric:
        for i, k in np.argwhere(np.isnan(x[FEATURES])).tolist():
            c = card.columns[numeric[k]]
            found.append((i, numeric[k], f"{c.name!r} is missing: filled with {c.fill!r}"))
    if categorical:
        known = [(j, c, frozenset(c.categories), frozenset(["", *c.missing_texts]))
                 for j, c in ((j, card.columns[j]) for j in categorical)]
        for i, row in enumerate(x[CATEGORIES].tolist()):
            for v, (j, c, cats, missing) in zip(row, known):
                if v in missing:
                    found.append((i, j, f"{c.name!r} is missing: filled with {c.fill!r}"))
                elif v not in cats:
                    found.append((i, j, f"{c.name!r} = {_cut(v)!r} is not a category seen in training: "
                                        "encoded as all zeros"))
    if not found:
        return None
    out: list[list[str]] = [[] for _ in range(len(x))]
    for i, _, text in sorted(found, key=lambda f: f[:2]):
        out[i].append(text)
    return out


def unseen(column: Column) -> str:
    """A value that is none of the column's categories (a probe for the all-zeros encoding)."""
    value = UNSEEN
    while value in column.categories:
        value += "?"
    return value


def _cut(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
