"""JSON in for the predict API: bounded body read, JSON parse, rows -> float32 matrix.

Rows are counted from 0 in every error message. Content-Type is not required: some clients
(tritonclient among them) send none, and reading the raw bytes is also the fast path.

Two parsers, one outcome. The usual body, an object of known fields whose `instances` is a
rectangular table of JSON numbers, is read by simdjson straight into a float64 matrix
(`_simd_object`): no Python float per value. Anything else, valid or not, and anything simdjson
parses differently from orjson (a byte-order mark, duplicate keys, integers beyond 64 bits) is
declined there and parsed by orjson with the per-value checks, which word every 400. A test
checks, over valid and invalid bodies, that both give the same matrix or the same message.
"""

from __future__ import annotations

import math
import threading
from typing import TypeVar

import numpy as np
import orjson
import simdjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from service.card import ModelCard
from service.errors import BadRequest, PayloadTooLarge
from service.tasks import DEFAULT_TOP_K

# bool is deliberately absent: JSON true/false is not a feature value.
_NUMBERS = frozenset((int, float))
_FLOAT32_MAX = float(np.finfo(np.float32).max)
M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond `limit` bytes, declared or actually streamed."""
    declared = header(request.scope, b"content-length") or ""
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    # ASGI messages straight from `receive`: Starlette's `stream()` async generator costs more
    # per request than parsing a one-row body.
    chunks, size, more = [], 0, True
    while more:
        message = await request.receive()
        if message["type"] != "http.request":  # the client left; nothing will answer it
            raise ClientDisconnect()
        chunk, more = message.get("body", b""), message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header(scope: dict, name: bytes) -> str | None:
    """The first value of a header (`name` lowercase, as servers give them), as `Headers.get` finds it,
    without building a `Headers`."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def parse_object(body: bytes, fields: frozenset[str]) -> dict:
    """Parse a JSON object holding `instances` and no field outside `fields`; 400 otherwise.

    `instances` is a float64 matrix when the body is the usual table of numbers (see the module
    docstring), else the parsed JSON value, for `rows` to check.
    """
    data = _simd_object(body, fields)
    if data is not None:
        return data
    data = json_object(body, "the body must be a JSON object with 'instances', got {got}")
    unknown = data.keys() - fields
    if unknown:
        raise BadRequest(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    if "instances" not in data:
        raise BadRequest("missing field 'instances'")
    return data


_parsers = threading.local()  # a simdjson parser per thread (one keeps its buffers between documents,
# and must never parse two at once)
SIMD_CONTAINERS = (simdjson.Array, simdjson.Object)


def _parser(fresh: bool = False) -> simdjson.Parser:
    parser = None if fresh else getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    return parser


def simd_object(body: bytes) -> simdjson.Object | None:
    """The body parsed by simdjson when it is a JSON object simdjson and orjson read alike; None
    otherwise (malformed, a byte-order mark, a number beyond 64 bits: orjson decides those).

    The caller must drop every proxy it takes from the document (`doc = None` in a `finally`)
    before the next parse; a parser still referenced is replaced, and that body declined.
    """
    if body[:1] == b"\xef":  # a byte-order mark: simdjson skips it, orjson refuses it
        return None
    try:
        doc = _parser().parse(body)
    except RuntimeError:  # the parser is still referenced elsewhere (it must not be reused then)
        _parser(fresh=True)
        return None
    except Exception:  # noqa: BLE001 - malformed, or beyond what this path takes: orjson decides
        return None
    return doc if type(doc) is simdjson.Object else None


def simd_keys(obj: simdjson.Object, allowed: frozenset[str]) -> list[str] | None:
    """The object's keys when they are distinct (orjson keeps the last of a repeated key,
    simdjson the first) and all `allowed`; else None."""
    keys = list(obj.keys())
    return keys if (len(keys) == 1 or len(set(keys)) == len(keys)) and allowed.issuperset(keys) else None


def simd_numbers(array: object) -> tuple[np.ndarray, int] | None:
    """A non-empty list of numbers as a float64 vector, or a non-empty list of equally long,
    non-empty lists of numbers as a float64 matrix; with the number of `[` the list spans.

    None for anything else. The caller checks that the body holds no other `[` than those it
    expects (`brackets`): an element nested deeper would otherwise flatten unnoticed.
    """
    if type(array) is not simdjson.Array or not len(array):
        return None
    n = len(array)
    first = array[0]
    if type(first) is simdjson.Array:  # rows: each a list, all as long as the first
        width = len(first)
        if not width:
            return None
        for row in array:
            if type(row) is not simdjson.Array or len(row) != width:
                return None
    else:  # a flat list: not a value is looked at here (a list inside it adds a `[` to the count)
        width = 0
    try:
        values = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)  # TypeError: not all numbers
    except Exception:  # noqa: BLE001
        return None
    if values.size != n * (width or 1):
        return None
    return (values.reshape(n, width), n + 1) if width else (values, 1)


def brackets(body: bytes) -> int:
    """How many `[` the body holds (strings included)."""
    return len(body) - len(body.replace(b"[", b""))


def _simd_object(body: bytes, fields: frozenset[str]) -> dict | None:
    """The body's fields, `instances` as a float64 [rows, n] matrix, when the body is an object of
    distinct known keys, scalar values besides `instances`, and `instances` a non-empty list of
    equally long, non-empty lists of numbers, nothing nested deeper; None for anything else."""
    doc = simd_object(body)
    if doc is None:
        return None
    try:
        keys = simd_keys(doc, fields)
        if keys is None or "instances" not in keys:
            return None
        data = {}
        for key in keys:
            value = data[key] = doc[key]
            if key != "instances" and type(value) in SIMD_CONTAINERS:
                return None
        found = simd_numbers(data["instances"])
        # Every `[` in the body is the table's or a row's: a `[` in a string only sends the body to orjson.
        if found is None or found[0].ndim != 2 or brackets(body) != found[1]:
            return None
        data["instances"] = found[0]
        return data
    finally:
        doc = data = None  # the parser can be reused only once no proxy of the document is alive


def json_object(body: bytes, not_object: str) -> dict:
    """Parse a body that must be a JSON object: 400 "malformed JSON: ..." or `not_object`
    (formatted with `got`, the JSON type received)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if type(data) is not dict:
        raise BadRequest(not_object.format(got=_json_type(data)))
    return data


def validated(model: type[M], data: dict, prefix: str = "", whole: str = "") -> M:
    """`model.model_validate(data)`; a 400 of `prefix` and "<loc>: <msg>" per error ("; "-joined)
    otherwise, `whole` standing for the location of an error about the whole body."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(prefix + "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}"
                                            for e in exc.errors(include_url=False))) from None


def no_booleans(body: bytes) -> bool:
    """True when the JSON text holds no `true` or `false` anywhere, so no parsed value is a bool.

    Scans only at each `t` and `f` (a few in a numeric body): microseconds, where a type check
    of every parsed value costs ~270 us per 16k values.
    """
    for token in (b"true", b"false"):
        i = body.find(token[:1])
        while i != -1:
            if body.startswith(token, i):
                return False
            i = body.find(token[:1], i + 1)
    return True


def text_field(data: dict, key: str) -> str | None:
    """An optional string field such as `model`."""
    value = data.get(key)
    if value is not None and type(value) is not str:
        raise BadRequest(f"'{key}' must be a string, got {_json_type(value)}")
    return value


def version_field(data: dict) -> int | str | None:
    """The optional `version`: a number or a string such as "2"; unknown versions are a 404 later."""
    value = data.get("version")
    if value is not None and type(value) not in (int, str):
        raise BadRequest(f"'version' must be an integer or a string, got {_json_type(value)}")
    return value


def top_k(data: dict) -> int:
    """The optional `top_k` (multiclass only, ignored otherwise): a positive integer."""
    value = data.get("top_k")
    if value is None:
        return DEFAULT_TOP_K
    if type(value) is not int or value < 1:
        raise BadRequest(f"'top_k' must be an integer >= 1, got {_show(value)}")
    return value


def rows(instances: object, card: ModelCard, max_rows: int, field: str = "instances") -> np.ndarray:
    """Rows (lists of numbers, or objects keyed by feature name) -> a [rows, n_features] float32 matrix.

    `instances` may also be the float64 matrix `parse_object` already made: every value is
    known to be a number then, and only the counts are left to check.
    """
    if type(instances) is np.ndarray:
        if len(instances) > max_rows:
            raise BadRequest(f"at most {max_rows} rows per request, got {len(instances)}")
        if instances.shape[1] != card.n_features:
            raise BadRequest(f"expected {card.n_features} features per row, row 0 has {instances.shape[1]}")
        return float32_matrix(instances, card.feature_names)
    if type(instances) is not list or not instances:
        raise BadRequest(f"'{field}' must be a non-empty list of rows, got {_show(instances)}")
    if len(instances) > max_rows:
        raise BadRequest(f"at most {max_rows} rows per request, got {len(instances)}")
    n, names = card.n_features, card.feature_names
    for i, row in enumerate(instances):
        if type(row) is dict:
            instances[i] = row = _by_name(row, i, names, n)  # the parsed body is ours to reuse
        elif type(row) is not list:
            form = " or an object keyed by feature name" if names else ""
            raise BadRequest(f"row {i} must be a list of {n} numbers{form}, got {_json_type(row)}")
        if len(row) != n:
            raise BadRequest(f"expected {n} features per row, row {i} has {len(row)}")
        if not _NUMBERS.issuperset(map(type, row)):
            j = next(j for j, v in enumerate(row) if type(v) not in _NUMBERS)
            raise BadRequest(f"row {i}, {_feature(j, names)} is not a number: {_show(row[j])}")
    return float32_matrix(instances, names)


def float32_matrix(values: list | np.ndarray, names: list[str] | None) -> np.ndarray:
    """A [rows, n_features] matrix of numbers -> float32, refusing what float32 cannot hold finitely.

    Every protocol's decoder ends here, so the model never sees NaN, an infinity or an overflow.
    """
    if type(values) is np.ndarray and values.dtype == np.float64 and values.size and \
            np.abs(values).max() <= _FLOAT32_MAX:  # NaN fails this too
        return values.astype(np.float32)  # every value fits: finite, and no errstate needed (~4 us)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf, refused below
        x = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        i, j = np.argwhere(~finite)[0].tolist()
        value = values[i][j]
        raise BadRequest(f"row {i}, {_feature(j, names)} is {_show(getattr(value, 'item', lambda: value)())}, "
                         "which is not a finite float32 (|x| <= 3.4e38)")
    return x


def _by_name(row: dict, i: int, names: list[str] | None, n: int) -> list:
    if names is None:
        raise BadRequest(f"row {i} is an object, but this model has no feature names; "
                         f"send a list of {n} numbers")
    if len(row) != n or not all(f in row for f in names):
        missing = [f for f in names if f not in row]
        unknown = sorted(set(row) - set(names))
        raise BadRequest(f"row {i}: missing features {missing}, unknown features {unknown}; "
                         f"expected {names}")
    return [row[f] for f in names]


def _feature(j: int, names: list[str] | None) -> str:
    return f"feature {j} ({names[j]})" if names else f"feature {j}"


def _json_type(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _show(value: object) -> str:
    if type(value) is float and not math.isfinite(value):
        return str(value)  # orjson would print null
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."
