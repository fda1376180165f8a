"""Open Inference Protocol (V2) wire format <-> the shared float32 matrix and named outputs.

Plain functions, explicit checks, every failure a 400 naming what was expected and received.

Input rules (the model has one FP32 input of shape [-1, n_features]; a table model's, below):
- exactly one input, named as the model's input; shape [rows, n_features] with 1 <= rows <=
  max_rows ([n_features] alone is refused: the batch dimension is explicit, as in Triton);
- `data` flat (row-major) or nested exactly as `shape`; its element count must equal the
  product of `shape`;
- datatype FP16, FP32 or FP64: JSON numbers, coerced to float32 (the spec lets the server
  coerce); every value must be a finite float32, and FP16 ones are first rounded to FP16 and
  must be within its range, so that JSON and binary FP16 data are the same features;
- integer datatypes (INT8..INT64, UINT8..UINT64): JSON integers within the declared type's
  range, and within +-2^24 so float32 holds them exactly;
- BOOL and BYTES are refused: true/false and strings are not feature values;
- with the binary tensor data extension (`parameters.binary_data_size` and the
  `Inference-Header-Content-Length` header) the bytes are the declared type, little-endian,
  under the same rules. (A compressed body: `codecs.compression`, through `codecs.json.read_body`.)

A table model (a card with `columns`) takes its graph's inputs by name, each once: `features`
[rows, numeric columns] as above, JSON null (NaN in binary data; JSON has no NaN) meaning
missing, and `categories` [rows, categorical columns], BYTES: JSON strings (null or "" missing)
or binary (each element a 4-byte little-endian length, then its UTF-8 bytes; binary inputs
follow the JSON in request order).
Filled features and unseen categories are named in the response's `parameters.warnings`, one
"row <i>: <warning>" line each, "\n"-joined (the spec's parameters are strings, not lists).

Outputs: as `service.named.outputs`. Each is sent as JSON `data` (a non-finite FP32 value as
the string "NaN", "Infinity" or "-Infinity": JSON has no such numbers and the spec's tensor_data
no null) unless binary was asked for, per output (`parameters.binary_data`) or for all (request
`parameters.binary_data_output`); binary outputs follow the JSON header in request order
(`service.codecs.v2_bytes`), FP32 little-endian or, for BYTES, each element as a 4-byte
little-endian length and its UTF-8 bytes; such a response is application/octet-stream with
`Inference-Header-Content-Length` giving the JSON header's size.
Other request parameters are accepted and ignored; shared memory and Triton's `classification`
output parameter are refused.
"""

from __future__ import annotations

import math
from functools import partial
from itertools import chain

import numpy as np
import orjson
from starlette.responses import Response

from service import named, tasks
from service.card import CATEGORIES, FEATURES
from service.codecs import columns, json, v2_bytes
from service.dataplane import Codec
from service.errors import BadRequest, json_bytes
from service.runtime import EXACT, LoadedModel
from service.types.v2 import Datatype, InferenceRequest, RequestInput

PLATFORM = "onnx_onnxv1"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"

FLOATS = {Datatype.FP16: np.float16, Datatype.FP32: np.float32, Datatype.FP64: np.float64}
INTEGERS = {Datatype.INT8: np.int8, Datatype.INT16: np.int16, Datatype.INT32: np.int32,
            Datatype.INT64: np.int64, Datatype.UINT8: np.uint8, Datatype.UINT16: np.uint16,
            Datatype.UINT32: np.uint32, Datatype.UINT64: np.uint64}
_FLOAT_NAMES = frozenset(d.value for d in FLOATS)
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
U_STEPS = 8  # `u`s `_holds_null` looks at one by one before it searches the rest for the word
_INTS = frozenset((int,))
_MISSING = json.NUMBERS | {type(None)}  # a table model's FP32 `features`: null is a missing value
_WIRE = {"float32": Datatype.FP32, "string": Datatype.BYTES}


class Parsed:
    """A request, the binary tail after its JSON header, and (from `post`) the outputs it asks for."""

    __slots__ = ("req", "tail", "binary")

    def __init__(self, req: InferenceRequest, tail: bytes):
        self.req, self.tail = req, tail
        self.binary: tuple[bool, dict[str, bool]] = (False, {})


def _float_data(key: str, parent: object, depth: int) -> bool:
    # An input's `data` is a tensor when its datatype is a float one (`parent` has no repeated key).
    return depth == 1 and key == "data" and parent.get("datatype") in _FLOAT_NAMES


def parse(body: bytes, scope: dict, limit: int) -> Parsed:
    """The request object and the binary tail after its JSON header (empty without the extension)."""
    declared = json.header(scope, HEADER_LENGTH.encode())
    if declared is not None:
        count = declared.strip()
        if not (count.isascii() and count.isdigit()) or int(count) > len(body):
            raise BadRequest(f"{HEADER_LENGTH} must be a byte count within the {len(body)}-byte body, "
                             f"got {declared!r}")
        body, tail = body[:int(count)], body[int(count):]
    else:
        tail = b""
    try:
        data = json.parse(body, "the body must be a JSON inference request object", _float_data)
    except BadRequest as exc:
        if declared is None and b"binary_data_size" in body:  # binary data, likely, read as JSON
            raise BadRequest(f"{exc.message} (binary tensor data after the JSON needs the "
                             "Inference-Header-Content-Length header: the JSON's length in bytes)") from None
        raise
    return Parsed(json.validated(InferenceRequest, data, "invalid inference request: "), tail)


def matrix(parsed: Parsed, model: LoadedModel, max_rows: int) -> np.ndarray:
    """The request's one input as a checked [rows, n_features] float32 matrix; a table model's
    inputs as its structured rows (`_table`)."""
    req, card = parsed.req, model.card
    if card.columns is not None:
        return _table(parsed, model, max_rows)
    if len(req.inputs) != 1 or req.inputs[0].name != model.input.name:
        raise BadRequest(f"model {model.name!r} takes one input {model.input.name!r}, "
                         f"got {[i.name for i in req.inputs]}")
    return _floats(req.inputs[0], parsed.tail, card.n_features, card.feature_names, max_rows,
                   whole=card.input.integer)


def _table(parsed: Parsed, model: LoadedModel, max_rows: int) -> np.ndarray:
    """A table model's inputs, by name in any order, as `columns.table` rows."""
    req, card = parsed.req, model.card
    names, got = [s.name for s in card.graph_inputs], [i.name for i in req.inputs]
    if sorted(got) != sorted(names):
        raise BadRequest(f"model {model.name!r} takes inputs {names}, got {got}")
    numeric_at, categorical_at = columns.split(card)
    numeric = [card.columns[j].name for j in numeric_at]
    tensors = {inp.name: _floats(inp, chunk, len(numeric), numeric, max_rows, missing=True) if inp.name == FEATURES
               else _strings(inp, chunk, len(categorical_at), max_rows)
               for inp, chunk in zip(req.inputs, v2_bytes.chunks(req.inputs, parsed.tail))}
    return columns.table(card, tensors.get(FEATURES), tensors.get(CATEGORIES))


def _floats(inp: RequestInput, chunk: bytes, n: int, names: list[str] | None, max_rows: int,
            missing: bool = False, whole: bool = False) -> np.ndarray:
    """One numeric input as a checked [rows, n] float32 matrix; `missing`: null (JSON) and NaN mean
    missing; `whole`: the model takes integers (`json.float32_matrix`)."""
    rows = _rows(inp, n, max_rows)
    if inp.datatype not in FLOATS and inp.datatype not in INTEGERS:
        raise BadRequest(f"model input {inp.name!r} is FP32; {inp.datatype.value} data cannot be cast to it "
                         "(send FP32, FP64, FP16 or an integer type)")
    size = v2_bytes.declared_size(inp, chunk)
    if size is None:
        values = _json_values(inp, rows, n, missing)
        if inp.datatype is Datatype.FP16:
            values = _half(values, inp, n)
    else:
        values = v2_bytes.values(inp, size, chunk, rows * n, np.dtype((FLOATS | INTEGERS)[inp.datatype]))
    if inp.datatype in INTEGERS and values.dtype.itemsize >= 4:
        _check_exact(values, inp.datatype, n)
    return json.float32_matrix(values.reshape(rows, n), names, missing, whole)


def _strings(inp: RequestInput, chunk: bytes, n: int, max_rows: int) -> np.ndarray:
    """A BYTES input as a [rows, n] array of strings; null (JSON) and "" mean missing."""
    rows = _rows(inp, n, max_rows)
    if inp.datatype is not Datatype.BYTES:
        raise BadRequest(f"model input {inp.name!r} is BYTES (one string per categorical feature); "
                         f"got {inp.datatype.value}")
    size = v2_bytes.declared_size(inp, chunk)
    if size is not None:
        texts = v2_bytes.strings(inp, size, chunk, rows * n)
    else:
        texts = _flat(inp, inp.data, rows, n, "strings")
        k = next((k for k, t in enumerate(texts) if type(t) is not str and t is not None), None)
        if k is not None:
            raise BadRequest(f"input {inp.name!r} (BYTES): row {k // n}, feature {k % n} is not a string: "
                             f"{json.json_text(texts[k])[:40]}")
        texts = ["" if t is None else t for t in texts]
    return np.array(texts, dtype=object).reshape(rows, n)


def _rows(inp: RequestInput, n: int, max_rows: int) -> int:
    shape = inp.shape
    if len(shape) != 2 or shape[1] != n:
        hint = f"; for one row send shape [1, {n}]" if shape == [n] else ""
        raise BadRequest(f"input {inp.name!r} must have shape [rows, {n}], got {shape}{hint}")
    if not 1 <= shape[0] <= max_rows:
        raise BadRequest(f"input {inp.name!r} must have 1 to {max_rows} rows, shape says {shape[0]}")
    if "shared_memory_region" in (inp.parameters or {}):
        raise BadRequest("shared memory is not supported; send the data in the request")
    return shape[0]


def _flat(inp: RequestInput, data: object, rows: int, n: int, what: str) -> list:
    """`data` as a flat list of rows * n elements: flat, or nested exactly as the shape."""
    if type(data) is not list:
        kind = "missing" if data is None else f"a {type(data).__name__}"
        raise BadRequest(f"input {inp.name!r} needs 'data', a list of {rows * n} {what}; it is {kind}")
    if data and type(data[0]) is list:  # nested: must follow the shape exactly
        if len(data) != rows or any(type(r) is not list or len(r) != n for r in data):
            raise BadRequest(f"input {inp.name!r}: nested 'data' must be {rows} list{'s' * (rows != 1)} of {n} "
                             f"{what} to match shape {inp.shape}")
        data = list(chain.from_iterable(data))
    if len(data) != rows * n:
        raise BadRequest(f"input {inp.name!r}: shape {inp.shape} holds {rows * n} elements, 'data' has {len(data)}")
    return data


def _json_values(inp: RequestInput, rows: int, n: int, missing: bool = False) -> np.ndarray:
    data = inp.data
    if type(data) is np.ndarray:  # a table of numbers, as `json.parse` read it
        if data.shape == ((rows * n,) if data.ndim == 1 else (rows, n)):
            return data.ravel()
        data = data.tolist()  # a count or shape mismatch: the checks below explain it
    data = _flat(inp, data, rows, n, "numbers")
    integer = inp.datatype in INTEGERS
    allowed = _INTS if integer else _MISSING if missing else json.NUMBERS
    if not allowed.issuperset(map(type, data)):
        k = next(k for k, v in enumerate(data) if type(v) not in allowed)
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"input {inp.name!r} ({inp.datatype.value}): row {k // n}, feature {k % n} "
                         f"is not {kind}: {json.json_text(data[k])[:40]}")
    if not integer:
        return np.array(data, dtype=np.float64)  # null (missing) becomes NaN
    dtype = INTEGERS[inp.datatype]
    try:
        return np.array(data, dtype=dtype)
    except OverflowError:
        info = np.iinfo(dtype)
        k = next(k for k, v in enumerate(data) if not info.min <= v <= info.max)
        raise BadRequest(f"input {inp.name!r}: row {k // n}, feature {k % n} is {data[k]}, outside "
                         f"{inp.datatype.value}'s range [{info.min}, {info.max}]") from None


def _half(values: np.ndarray, inp: RequestInput, n: int) -> np.ndarray:
    """JSON numbers declared FP16, as FP16 holds them: rounded to it (binary FP16 data is already),
    and within its range."""
    with np.errstate(over="ignore"):
        halves = values.astype(np.float16)
    wide = np.flatnonzero(np.isinf(halves) & np.isfinite(values))
    if wide.size:
        k = int(wide[0])
        raise BadRequest(f"input {inp.name!r} (FP16): row {k // n}, feature {k % n} is {json.show(values[k].item())}, "
                         "outside FP16's range (|x| <= 65504)")
    return halves


def _check_exact(values: np.ndarray, datatype: Datatype, n: int) -> None:
    wide = np.flatnonzero((values > EXACT) | (values < -EXACT) if values.dtype.kind == "i" else values > EXACT)
    if wide.size:
        k = int(wide[0])
        raise BadRequest(f"row {k // n}, feature {k % n} is {values[k]}: {datatype.value} values beyond "
                         f"+-2^24 are not exact as float32, which every request's features are decoded to")


def output_names(parsed: Parsed) -> list[str] | None:
    """The outputs asked for, in order; None (all outputs) when the request names none (no
    `outputs`, or an empty list: the spec's "if not specified")."""
    req = parsed.req
    parsed.binary = _binary_outputs(req)  # a bad binary_data flag is refused before the model runs
    if not req.outputs:
        return None
    names = [o.name for o in req.outputs]
    if len(set(names)) != len(names):
        raise BadRequest(f"each output may be requested once, got {names}")
    for o in req.outputs:
        unsupported = {"classification", "shared_memory_region"} & set(o.parameters or {})
        if unsupported:
            raise BadRequest(f"output {o.name!r}: parameter {sorted(unsupported)[0]!r} is not supported")
    return names


def _binary_outputs(req: InferenceRequest) -> tuple[bool, dict[str, bool]]:
    default = req.parameters.get("binary_data_output", False) if req.parameters else False
    _flag("request parameter 'binary_data_output'", default)
    chosen = {o.name: o.parameters.get("binary_data", default) if o.parameters else default for o in req.outputs or ()}
    for name, flag in chosen.items():  # a repeated name keeps its last flag, as a JSON object would
        _flag(f"output {name!r} parameter 'binary_data'", flag)
    return default, chosen


def _flag(what: str, flag: object) -> bool:
    if type(flag) is not bool:
        raise BadRequest(f"{what} must be true or false, got {flag!r}")
    return flag


def post(parsed: Parsed, model: LoadedModel) -> partial:
    """The outputs asked for, made of the model's output rows."""
    return partial(named.outputs, model.card, names=output_names(parsed))


def encode(parsed: Parsed, model: LoadedModel, arrays: dict[str, np.ndarray], x: np.ndarray) -> Response:
    """The inference response: JSON, or JSON header plus binary tensors when any output is binary."""
    req = parsed.req
    head: dict = {"model_name": model.name, "model_version": str(model.version)}
    if req.id is not None:
        head["id"] = req.id
    notes = None if model.card.columns is None else columns.warnings(model.card, x)
    if notes is not None:
        head["parameters"] = {"warnings": "\n".join(f"row {i}: {w}" for i, row in enumerate(notes) for w in row)}
    default, chosen = parsed.binary
    outputs, chunks, numeric = [], [], []
    for name, array in arrays.items():
        text = array.dtype.kind == "O"
        out = {"name": name, "datatype": "BYTES" if text else "FP32", "shape": list(array.shape)}
        if chosen.get(name, default):
            raw = v2_bytes.encode(array) if text else array.astype("<f4", copy=False).tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif text:
            out["data"] = array.ravel().tolist()
        else:
            out["data"] = array.ravel()  # contiguous: a view, or a copy when the array is not
            numeric.append(out)
        outputs.append(out)
    head["outputs"] = outputs
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    # orjson writes a non-finite array value as null: only then (or when a name, id or label merely
    # contains the text null) is each numeric output checked, rather than twice on every request.
    if numeric and _holds_null(header):
        for out in numeric:
            out["data"] = _numbers(out["data"])
        header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return json_bytes(header)
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def _holds_null(text: bytes) -> bool:
    """Whether a JSON text holds `null`, found by its `u`: no number holds one, so in a text of
    numbers the byte search (memchr) passes over them, where a search for the word looks at each.
    Labels may hold many (`true`): after `U_STEPS` of them the word search takes the rest."""
    at = text.find(b"u", 1)
    for _ in range(U_STEPS):
        if at == -1:
            return False
        if text[at - 1:at + 3] == b"null":
            return True
        at = text.find(b"u", at + 1)
    return at != -1 and text.find(b"null", at - 1) != -1


def _numbers(flat: np.ndarray) -> np.ndarray | list:
    # JSON has no NaN or infinity, and the spec's tensor_data allows no null: non-finite values are
    # sent as the strings "NaN", "Infinity", "-Infinity", which float() and numpy (tritonclient) parse.
    flat = np.ascontiguousarray(flat)
    if np.isfinite(flat).all():
        return flat
    # The finite values as orjson writes the array when all are finite (FP32's shortest text).
    texts = tasks.json_numbers(flat)
    return [orjson.Fragment(t) if math.isfinite(v) else _NON_FINITE[str(v)] for t, v in zip(texts, flat.tolist())]


def model_metadata(model: LoadedModel, versions: list[int]) -> dict:
    """$metadata_model_response: the session's inputs and every output `named.offered`.

    A one-input model's input is FP32 whatever the graph's type: every request is decoded to
    float32 features, which `LoadedModel.feed` casts exactly to a float64 or integer graph input.
    A table model's are `features` FP32 and `categories` BYTES, as its graph has them."""
    return {"name": model.name, "versions": [str(v) for v in versions], "platform": PLATFORM,
            "inputs": [{"name": i.name, "datatype": (Datatype.BYTES if i.dtype == "string" else Datatype.FP32).value,
                        "shape": i.shape or c.shape} for i, c in zip(model.inputs, model.card.graph_inputs)],
            "outputs": [{"name": o.name, "datatype": _WIRE[o.dtype].value, "shape": [-1, o.width]}
                        for o in named.offered(model.card)]}


def server_metadata(version: str) -> dict:
    """$metadata_server_response."""
    return {"name": "tinyserve", "version": version, "extensions": EXTENSIONS}


CODEC = Codec(parse, matrix, post, encode)
