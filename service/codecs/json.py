"""JSON in, for every protocol: the bounded body read, the one parser, and rows -> float32 matrix.

One parser: simdjson. Where a protocol expects a tensor (`tensor(key, parent, depth)` says where),
a rectangular array of JSON numbers, flat or one level nested, comes back as a float64 numpy
array straight from simdjson's buffer; every other value comes back as plain Python. Should a
tensor array hide anything the float64 buffer cannot show (a list nested deeper), the body's
`[` count gives it away and the document is read again as plain Python, so the per-value checks
word the 400. A body of about a row (`SMALL`) is read as plain Python at once. orjson only
words the message of a body simdjson refuses, so that it stays the message clients have seen
("malformed JSON: ...").

Rows are counted from 0 in every message. Content-Type is not required: some clients
(tritonclient among them) send none.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import orjson
import simdjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from service.card import ModelCard
from service.codecs import compression
from service.errors import BadRequest, Busy, PayloadTooLarge
from service.observe import BODY_LATE

# bool is deliberately absent: JSON true/false is not a feature value.
NUMBERS = frozenset((int, float))
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"  # the first bytes of every gzip stream (RFC 1952)
# Every float64 below this rounds to a finite float32 (it is halfway between float32's largest and 2**128).
FLOAT32_LIMIT = float.fromhex("0x1.ffffffp+127")
FLOAT32_LIMIT_SQUARED = FLOAT32_LIMIT * FLOAT32_LIMIT
# A body up to this size (about a row of numbers) is read whole as plain Python: simdjson's own
# read of it costs less than the walk that finds its tables; its rows take the list path, whose
# checks and messages are the same. Larger bodies are walked (see bench/README.md, issue 13).
SMALL = 512
# An object of more keys is read whole (as_dict), not key by key: simdjson looks a key up by
# scanning the object from its first key, so reading n keys one by one takes n * n / 2 steps.
# No protocol's object holding a table has this many.
MANY_KEYS = 32
M = TypeVar("M", bound=BaseModel)
Tensor = Callable[[str, simdjson.Object, int], bool]  # key, its object, how many objects enclose that one


class Bodies:
    """The request bodies one worker is receiving: each at most `limit` bytes, and all of them
    together at most `budget`. A body is held whole until its last byte arrives, so without the
    budget clients sending large bodies slowly would hold the worker's memory until their deadline."""

    __slots__ = ("limit", "budget", "held")

    def __init__(self, limit: int, budget: int):
        self.limit, self.budget = limit, budget
        self.held = 0  # bytes of bodies still arriving, all requests together

    def check(self, size: int) -> None:
        """503 unless `size` more bytes fit in the budget now."""
        if self.held + size > self.budget:
            raise Busy(f"the server is receiving {self.held} bytes of other request bodies, at most "
                       f"{self.budget} at a time; send this request again in a moment")

    def take(self, size: int) -> None:
        """Hold `size` more bytes (503 when they do not fit)."""
        self.check(size)
        self.held += size


async def read_body(receive, scope: dict, bodies: Bodies) -> bytes:
    """The request body, refused with 413 beyond `bodies.limit` bytes, declared or actually
    streamed, or decompressed (`Content-Encoding`: `service.codecs.compression`), and with 503
    when the worker's budget for bodies under way cannot hold it (`Bodies`)."""
    limit = bodies.limit
    declared = encoding = None  # the first of each, found in one pass over the headers
    for key, value in scope["headers"]:
        if key == b"content-length":
            declared = value if declared is None else declared
        elif key == b"content-encoding":  # several fields are one list
            encoding = value if encoding is None else encoding + b"," + value
    declared = "" if declared is None else declared.decode("latin-1")
    if declared.isascii() and declared.isdigit():  # isdigit alone takes "²"
        length = int(declared)
        if length > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        bodies.check(length)  # refused before its bytes are sent, if it will not fit
    chunks, size, held, more = [], 0, 0, True
    try:
        while more:
            try:
                message = await receive()
            except asyncio.CancelledError:  # the deadline, most likely: the answer says the body was late
                scope[BODY_LATE] = True
                raise
            if message["type"] != "http.request":  # the client left; nothing will answer it
                raise ClientDisconnect()
            chunk, more = message.get("body", b""), message.get("more_body", False)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            if more:  # held while the rest arrives (a body's last chunk is read at once)
                bodies.take(len(chunk))
                held += len(chunk)
    finally:
        if held:
            bodies.held -= held
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return body if encoding is None else compression.decode(body, encoding.decode("latin-1"), limit)


def header(scope: dict, name: bytes) -> str | None:
    """The first value of a header (`name` lowercase, as servers give them)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def parse(body: bytes, not_object: str, tensor: Tensor) -> dict:
    """The body's JSON object as Python values, the arrays `tensor` picks as float64 tables where
    they are tables of numbers; 400 "malformed JSON: ..." or `not_object` (formatted with `got`)."""
    doc, reader = _document(body), None
    try:
        if type(doc) is not simdjson.Object:
            raise BadRequest(not_object.format(got=json_type(_plain(doc))))
        if len(body) <= SMALL:  # about a row: simdjson reads it whole faster than the reader walks it
            return doc.as_dict()
        reader = _Reader(tensor)
        try:
            data = reader.object(doc)
        except RecursionError:  # nested deeper than Python's stack: simdjson reads it whole
            return doc.as_dict()
        if reader.tables and reader.brackets != _count_brackets(body):
            data = doc.as_dict()  # a table hid a deeper list, or a string holds a `[`: no tables
        return data
    finally:
        doc = reader = None  # the parser is reused only once no proxy of its document is alive


def _count_brackets(body: bytes) -> int:
    # By removal: `replace` finds each `[` with memchr, where `count` compares byte by byte.
    return len(body) - len(body.replace(b"[", b""))


_CONTAINERS = (simdjson.Object, simdjson.Array)
_parsers = threading.local()  # one parser per thread: a parser must never read two documents at once


def _document(body: bytes) -> object:
    if body.startswith(BOM):  # simdjson would skip it; JSON over HTTP has none
        _malformed(body, None)
    for fresh in (False, True):
        parser = None if fresh else getattr(_parsers, "parser", None)
        if parser is None:
            parser = _parsers.parser = simdjson.Parser()
        try:
            return parser.parse(body)
        except RuntimeError as exc:
            if not fresh and "re-use a parser" in str(exc):
                continue  # a proxy of this thread's last document is still alive: take a new parser
            _malformed(body, exc)
        except Exception as exc:  # noqa: BLE001 - simdjson's own error types for a malformed body
            _malformed(body, exc)
    raise AssertionError("unreachable")


NOT_JSON = ("-Infinity", "Infinity", "NaN")  # orjson stops at the sign of the first


def _malformed(body: bytes, exc: Exception | None) -> None:
    """Raise the 400 for a body simdjson refuses, worded by orjson's message where it has one."""
    if body.startswith(GZIP_MAGIC):  # decoded as JSON it reads "str is not valid UTF-8"
        raise BadRequest("malformed JSON: the body is gzip-compressed; send it compressed once, with "
                         "Content-Encoding: gzip")
    try:
        text = body.decode()
    except UnicodeDecodeError as e:  # orjson would say "surrogates not allowed" of any bad byte, at char 0
        raise BadRequest(f"malformed JSON: the body is not UTF-8 text (byte 0x{body[e.start]:02x} at offset "
                         f"{e.start}); JSON is sent as UTF-8") from None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as refused:
        at = refused.pos
        word = next((w for w in NOT_JSON for start in (at, at - 1) if start >= 0 and text.startswith(w, start)), None)
        if word is not None:  # what Python's json.dumps and JavaScript write for NaN and the infinities
            raise BadRequest(f"malformed JSON: {word} is not a JSON value: line {refused.lineno} column "
                             f"{refused.colno} (char {refused.pos}); a missing value is null") from None
        raise BadRequest(f"malformed JSON: {refused}") from None
    # What only simdjson refuses: an integer literal beyond 64 bits (orjson reads it as a float),
    # or a document nested deeper than simdjson reads.
    if "BIGINT_ERROR" in str(exc) or "NUMBER_ERROR" in str(exc):
        raise BadRequest("number out of range: JSON integers must fit in 64 bits; write larger numbers "
                         f"with an exponent, such as 1e21 ({exc})") from None
    raise BadRequest(f"malformed JSON: {exc}") from None


class _Reader:
    """Plain Python from simdjson proxies; tables of numbers where `tensor` asks for them."""

    def __init__(self, tensor: Tensor):
        self.tensor = tensor
        self.tables = 0
        self.brackets = 0  # the `[` of every array read: tables count theirs, the others one each

    def object(self, obj: simdjson.Object, depth: int = 0) -> dict:
        # as_dict() reads the object whole; its `[` go uncounted, so the body then takes no tables.
        keys = list(obj.keys())
        if len(keys) > MANY_KEYS:
            return obj.as_dict()  # simdjson finds a key by scanning from the first: one pass instead
        if len(keys) > 1 and len(set(keys)) != len(keys):
            return obj.as_dict()  # a repeated key: the last one wins
        out = {}
        try:
            for key in keys:
                value = obj[key]
                out[key] = self.value(value, depth, key, obj) if type(value) in _CONTAINERS else value
        except KeyError:  # a key simdjson cannot look up by name (one holding a NUL)
            return obj.as_dict()
        return out

    def value(self, value: object, depth: int = 0, key: str | None = None,
              parent: simdjson.Object | None = None) -> object:
        kind = type(value)
        if kind is simdjson.Object:
            return self.object(value, depth + 1)
        if kind is not simdjson.Array:
            return value
        if key is not None and self.tensor(key, parent, depth):
            found = table(value)
            if found is not None:
                self.tables += 1
                self.brackets += found[1]
                return found[0]
        if len(value) and type(value[0]) is simdjson.Object:  # objects may hold tensors: one by one
            self.brackets += 1
            return [self.value(item, depth) for item in value]
        plain = value.as_list()
        self.brackets += _brackets(plain)
        return plain


def _brackets(value: list) -> int:
    """How many `[` the JSON text of a list held."""
    return 1 + sum(_brackets(v) if type(v) is list else _brackets(list(v.values())) - 1
                   for v in value if type(v) is list or type(v) is dict)


def _plain(value: object) -> object:
    return value.as_list() if type(value) is simdjson.Array else value


def table(array: simdjson.Array) -> tuple[np.ndarray, int] | None:
    """A non-empty list of numbers as a float64 vector, or a non-empty list of equally long,
    non-empty lists of numbers as a float64 matrix; with the number of `[` it spans. None else."""
    n = len(array)
    if not n:
        return None
    first = array[0]
    width = 0
    if type(first) is simdjson.Array:
        width = len(first)
        if not width:
            return None
        # Every row as long as the first. A row that is no list but has a length (a string, an
        # object) holds what is not a number, which `as_buffer` refuses; a list nested in a row is
        # one `[` more than the table spans, which `parse` counts.
        try:
            if set(map(len, array)) != {width}:
                return None
        except TypeError:  # a number, true, false or null for a row
            return None
    try:
        values = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # not all numbers
        return None
    if values.size != n * (width or 1):
        return None
    return (values.reshape(n, width), n + 1) if width else (values, 1)


def validated(model: type[M], data: dict, prefix: str = "", whole: str = "") -> M:
    """`model.model_validate(data)`; a 400 of `prefix` and "<loc>: <msg>" per error ("; "-joined)
    otherwise, `whole` standing for the location of an error about the whole body."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A validator's own ValueError is our message: without pydantic's "Value error, " before it.
        raise BadRequest(prefix + "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: "
                                            f"{e['msg'].removeprefix('Value error, ')}"
                                            for e in exc.errors(include_url=False))) from None


def rows(instances: object, card: ModelCard, max_rows: int, field: str = "instances") -> np.ndarray:
    """Rows (lists of numbers, or objects keyed by feature name) -> a [rows, n_features] float32
    matrix; `instances` may already be the float64 table `parse` made, leaving only counts to check."""
    if type(instances) is np.ndarray and instances.ndim == 1:  # a flat table: each value is a row
        instances = instances.tolist()
    table = type(instances) is np.ndarray
    if not table and (type(instances) is not list or not instances):
        raise BadRequest(f"'{field}' must be a non-empty list of rows, got {show(instances)}")
    if len(instances) > max_rows:
        raise BadRequest(f"at most {max_rows} rows per request, got {len(instances)}")
    whole = card.input.integer
    if table:
        if instances.shape[1] != card.n_features:
            raise BadRequest(f"expected {card.n_features} features per row, row 0 has {instances.shape[1]}")
        return float32_matrix(instances, card.feature_names, whole=whole)
    return float32_matrix([_row(row, i, card) for i, row in enumerate(instances)], card.feature_names, whole=whole)


def _row(row: object, i: int, card: ModelCard) -> list:
    n, names = card.n_features, card.feature_names
    if type(row) is dict:
        row = _by_name(row, i, names, n)
    elif type(row) is not list:
        form = " or an object keyed by feature name" if names else ""
        raise BadRequest(f"row {i} must be a list of {n} numbers{form}, got {json_type(row)}")
    if len(row) != n:
        raise BadRequest(f"expected {n} features per row, row {i} has {len(row)}")
    if not NUMBERS.issuperset(map(type, row)):
        j = next(j for j, v in enumerate(row) if type(v) not in NUMBERS)
        raise BadRequest(f"row {i}, {_feature(j, names)} is not a number: {show(row[j])}")
    return row


def float32_matrix(values: list | np.ndarray, names: list[str] | None, missing: bool = False,
                   whole: bool = False) -> np.ndarray:
    """A [rows, n_features] matrix of numbers -> float32, refusing what float32 cannot hold finitely.

    Every protocol's decoder ends here, so the model never sees NaN, an infinity or an overflow;
    `missing`: NaN stands for a missing value (a table model's `features`, whose graph fills it).
    `whole`: the model takes integers, which `LoadedModel.feed` checks: the values stay float64
    (float32 would round 2.00000001 and 16777217 to integers it then takes).
    """
    # Each value's square is at most the sum of the squares (`vdot`, one call where `abs` and `max`
    # are two reductions): a finite sum below the limit's square clears them all; NaN, an infinity
    # or a sum beyond the float's range sends the values to the exact checks below.
    if type(values) is np.ndarray and values.dtype == np.float32 and np.isfinite(np.vdot(values, values)):
        return values  # float32 already (binary tensor data), every value finite: nothing to round
    wide = np.asarray(values, dtype=np.float64)
    if not np.vdot(wide, wide) < FLOAT32_LIMIT_SQUARED:
        magnitude = np.abs(wide)
        bad = ~(magnitude < FLOAT32_LIMIT)
        if missing:
            bad &= ~np.isnan(wide)
        if not bad.any():
            return wide if whole else wide.astype(np.float32)
        i, j = np.argwhere(bad)[0].tolist()
        value = values[i][j]
        raise BadRequest(f"row {i}, {_feature(j, names)} is {show(getattr(value, 'item', lambda: value)())}, "
                         "which is not a finite float32 (|x| <= 3.4e38)")
    return wide if whole else wide.astype(np.float32)


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


def json_type(value: object) -> str:
    """How a message names the JSON type of a parsed value."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def show(value: object) -> str:
    """A parsed value as JSON text for a message, cut to 40 characters."""
    if type(value) is np.ndarray:
        value = value.tolist()
    if type(value) is float and not math.isfinite(value):
        return str(value)  # orjson would print null
    text = json_text(value)
    return text if len(text) <= 40 else text[:37] + "..."


def json_text(value: object) -> str:
    """A parsed value as JSON text, or its JSON type when it is nested deeper than orjson writes."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json_type(value)
