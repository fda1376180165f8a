"""Open Inference Protocol (V2) wire format <-> the shared float32 matrix and named outputs.

Plain functions, explicit checks, every failure a 400 naming what was expected and received.

Input rules (the model has one FP32 input of shape [-1, n_features]):
- exactly one input, named as the model's input; shape [rows, n_features] with 1 <= rows <=
  max_rows ([n_features] alone is refused: the batch dimension is explicit, as in Triton);
- `data` flat (row-major) or nested exactly as `shape`; its element count must equal the
  product of `shape`;
- datatype FP16, FP32 or FP64: JSON numbers, coerced straight to float32 (the spec lets the
  server coerce); every value must be a finite float32;
- integer datatypes (INT8..INT64, UINT8..UINT64): JSON integers within the declared type's
  range, and within +-2^24 so float32 holds them exactly;
- BOOL and BYTES are refused: true/false and strings are not feature values;
- with the binary tensor data extension (`parameters.binary_data_size` and the
  `Inference-Header-Content-Length` header) the bytes are the declared type, little-endian,
  under the same rules. A gzip or deflate `Content-Encoding` is decompressed within the body limit.

Outputs: as `service.inference.outputs`. Each is sent as JSON `data` (a non-finite FP32 value as
the string "NaN", "Infinity" or "-Infinity": JSON has no such numbers and the spec's tensor_data
no null) unless binary was asked
for, per output (`parameters.binary_data`) or for all (request `parameters.binary_data_output`);
binary outputs follow the JSON header in request order, FP32 little-endian or, for BYTES, each
element as a 4-byte little-endian length and its UTF-8 bytes; such a response is
application/octet-stream with `Inference-Header-Content-Length` giving the JSON header's size.
Other request parameters are accepted and ignored; shared memory and Triton's `classification`
output parameter are refused.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from itertools import chain

import numpy as np
import orjson
import simdjson
from starlette.responses import Response

from service import codec, inference
from service.card import ModelCard
from service.errors import BadRequest, JSONBytes, PayloadTooLarge
from service.runtime import LoadedModel
from service.v2_types import Datatype, InferenceRequest, RequestInput

PLATFORM = "onnx_onnxv1"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"

FLOATS = {Datatype.FP16: np.float16, Datatype.FP32: np.float32, Datatype.FP64: np.float64}
INTEGERS = {Datatype.INT8: np.int8, Datatype.INT16: np.int16, Datatype.INT32: np.int32,
            Datatype.INT64: np.int64, Datatype.UINT8: np.uint8, Datatype.UINT16: np.uint16,
            Datatype.UINT32: np.uint32, Datatype.UINT64: np.uint64}
EXACT = 2**24  # every integer up to this magnitude is exact in float32
_NUMBERS = frozenset((int, float))
_FLOAT_NAMES = frozenset(d.value for d in FLOATS)
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_INTS = frozenset((int,))
_READ = frozenset((b"content-encoding", HEADER_LENGTH.encode()))
_WIRE = {"float32": Datatype.FP32, "float64": Datatype.FP64, "int64": Datatype.INT64, "string": Datatype.BYTES}


def headers(scope: dict) -> dict[str, str]:
    """The two request headers `parse` reads, first value each, as `Headers.get` would give them."""
    found = {}
    for key, value in scope["headers"]:
        if key in _READ and key.decode("latin-1") not in found:
            found[key.decode("latin-1")] = value.decode("latin-1")
    return found


def parse(body: bytes, headers: Mapping[str, str], limit: int) -> tuple[InferenceRequest, bytes]:
    """The request object and the binary tail after its JSON header (empty without the extension)."""
    body = _decompress(body, headers.get("content-encoding", "identity").strip().lower(), limit)
    declared = headers.get(HEADER_LENGTH)
    if declared is not None:
        if not declared.strip().isdigit() or int(declared) > len(body):
            raise BadRequest(f"{HEADER_LENGTH} must be a byte count within the {len(body)}-byte body, "
                             f"got {declared!r}")
        body, tail = body[:int(declared)], body[int(declared):]
    else:
        tail = b""
    req = _simd_request(body)
    if req is not None:
        return req, tail
    data = codec.json_object(body, "the body must be a JSON inference request object")
    if codec.no_booleans(body):
        _numeric_data(data)
    req = _plain_request(data)
    return (req if req is not None else codec.validated(InferenceRequest, data, "invalid inference request: ")), tail


class _Input:
    """A `RequestInput` that pydantic would accept unchanged, made without validating the model."""

    __slots__ = ("name", "shape", "datatype", "parameters", "data")

    def __init__(self, name: str, shape: list[int], datatype: Datatype, data: object):
        self.name, self.shape, self.datatype, self.parameters, self.data = name, shape, datatype, None, data


class _Request:
    """An `InferenceRequest` without parameters or outputs (the usual request), as `_Input`s."""

    __slots__ = ("id", "parameters", "inputs", "outputs")

    def __init__(self, id: str | None, inputs: list[_Input]):
        self.id, self.parameters, self.inputs, self.outputs = id, None, inputs, None


_REQUEST_KEYS = frozenset(("id", "inputs"))
_INPUT_KEYS = frozenset(("name", "shape", "datatype", "data"))
_DATATYPES = {d.value: d for d in Datatype}
_U64 = 2**64 - 1


def _plain_request(data: dict) -> _Request | None:
    # pydantic's validation of `InferenceRequest` costs a few microseconds per request; the usual
    # request (only `id` and `inputs`, each input with only name, shape, datatype and data) is
    # checked here by the same rules. Anything else, valid or not, is None: pydantic decides, and
    # words its errors, exactly as before.
    if "inputs" not in data or not _REQUEST_KEYS.issuperset(data):
        return None
    rid, inputs = data.get("id"), data["inputs"]
    if (rid is not None and type(rid) is not str) or type(inputs) is not list:
        return None
    found = []
    for inp in inputs:
        if type(inp) is not dict or not _INPUT_KEYS.issuperset(inp):
            return None
        name, shape, datatype = inp.get("name"), inp.get("shape"), inp.get("datatype")
        datatype = _DATATYPES.get(datatype) if type(datatype) is str else None
        if type(name) is not str or type(shape) is not list or datatype is None:
            return None
        for d in shape:
            if type(d) is not int or not 0 <= d <= _U64:
                return None
        found.append(_Input(name, shape, datatype, inp.get("data")))
    return _Request(rid, found)


def _simd_request(body: bytes) -> _Request | None:
    # The usual request read by simdjson, each float tensor's numbers straight into a float64 array
    # (as `codec.parse_object` does for /predict), under `_plain_request`'s rules: only `id` and
    # `inputs`, each input only name, shape (integers), datatype and, for FP16/32/64, `data` flat or
    # nested one level. Anything else is None: orjson parses it and the checks below decide,
    # exactly as before.
    doc = codec.simd_object(body)
    if doc is None:
        return None
    try:
        keys = codec.simd_keys(doc, _REQUEST_KEYS)
        if keys is None or "inputs" not in keys:
            return None
        rid, inputs = doc["id"] if "id" in keys else None, doc["inputs"]  # `get` of a missing key: ~2 us
        if (rid is not None and type(rid) is not str) or type(inputs) is not simdjson.Array:
            return None
        found, spans = [], 1
        for inp in inputs:
            keys = codec.simd_keys(inp, _INPUT_KEYS) if type(inp) is simdjson.Object else None
            if keys is None:
                return None
            name, shape, datatype = inp.get("name"), inp.get("shape"), inp.get("datatype")
            if type(name) is not str or type(shape) is not simdjson.Array or type(datatype) is not str \
                    or datatype not in _DATATYPES:
                return None
            shape = shape.as_list()
            for d in shape:
                if type(d) is not int or not 0 <= d <= _U64:
                    return None
            spans += 1
            data = None
            if "data" in keys:
                numbers = codec.simd_numbers(inp["data"]) if datatype in _FLOAT_NAMES else None
                if numbers is None:
                    return None
                data, count = numbers
                spans += count
            found.append(_Input(name, shape, _DATATYPES[datatype], data))
        if codec.brackets(body) != spans:  # nothing nested deeper; a `[` in a string goes to orjson
            return None
        return _Request(rid, found)
    finally:
        doc = inputs = inp = shape = None  # no proxy may outlive the parse (see codec.simd_object)


def _numeric_data(data: dict) -> None:
    # The fast path: float tensors whose JSON `data` numpy reads as numbers (flat or nested) become
    # float64 arrays here, in one C pass, instead of a type check per value in `_json_values`.
    inputs = data.get("inputs")
    for inp in inputs if type(inputs) is list else ():
        if type(inp) is dict and inp.get("datatype") in _FLOAT_NAMES and type(inp.get("data")) is list:
            values = inp["data"]
            ndim = 2 if values and type(values[0]) is list else 1
            try:
                x = np.array(values)
            except (ValueError, TypeError, OverflowError):
                continue
            if x.ndim == ndim and x.size and x.dtype.kind in "if":
                inp["data"] = x.astype(np.float64, copy=False)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    return out


def matrix(req: InferenceRequest, tail: bytes, model: LoadedModel, max_rows: int) -> np.ndarray:
    """The request's one input as a checked [rows, n_features] float32 matrix."""
    if len(req.inputs) != 1 or req.inputs[0].name != model.input.name:
        raise BadRequest(f"model {model.name!r} takes one input {model.input.name!r}, "
                         f"got {[i.name for i in req.inputs]}")
    inp, card = req.inputs[0], model.card
    rows, n = _rows(inp, card, max_rows)
    if inp.datatype not in FLOATS and inp.datatype not in INTEGERS:
        raise BadRequest(f"model input {inp.name!r} is FP32; {inp.datatype.value} data cannot be cast to it "
                         "(send FP32, FP64, FP16 or an integer type)")
    size = (inp.parameters or {}).get("binary_data_size")
    if size is None and tail:
        raise BadRequest(f"{len(tail)} bytes of binary data follow the JSON, but no input declares binary_data_size")
    values = _json_values(inp, rows, n) if size is None else _binary_values(inp, size, tail, rows * n)
    if inp.datatype in INTEGERS and values.dtype.itemsize >= 4:
        _check_exact(values, inp.datatype, n, card)
    return codec.float32_matrix(values.reshape(rows, n), card.feature_names)


def _rows(inp: RequestInput, card: ModelCard, max_rows: int) -> tuple[int, int]:
    n, shape = card.n_features, inp.shape
    if len(shape) != 2 or shape[1] != n:
        hint = f"; for one row send shape [1, {n}]" if shape == [n] else ""
        raise BadRequest(f"input {inp.name!r} must have shape [rows, {n}], got {shape}{hint}")
    if not 1 <= shape[0] <= max_rows:
        raise BadRequest(f"input {inp.name!r} must have 1 to {max_rows} rows, shape says {shape[0]}")
    if "shared_memory_region" in (inp.parameters or {}):
        raise BadRequest("shared memory is not supported; send the data in the request")
    return shape[0], n


def _json_values(inp: RequestInput, rows: int, n: int) -> np.ndarray:
    data = inp.data
    if type(data) is np.ndarray:  # numbers already, from `_numeric_data`
        if data.shape == ((rows * n,) if data.ndim == 1 else (rows, n)):
            return data.ravel()
        data = data.tolist()  # a count or shape mismatch: the checks below explain it
    if type(data) is not list:
        what = "missing" if data is None else f"a {type(data).__name__}"
        raise BadRequest(f"input {inp.name!r} needs 'data', a list of {rows * n} numbers; it is {what}")
    if data and type(data[0]) is list:  # nested: must follow the shape exactly
        if len(data) != rows or any(type(r) is not list or len(r) != n for r in data):
            raise BadRequest(f"input {inp.name!r}: nested 'data' must be {rows} lists of {n} numbers "
                             f"to match shape {inp.shape}")
        data = list(chain.from_iterable(data))
    if len(data) != rows * n:
        raise BadRequest(f"input {inp.name!r}: shape {inp.shape} holds {rows * n} elements, 'data' has {len(data)}")
    integer = inp.datatype in INTEGERS
    if not (_INTS if integer else _NUMBERS).issuperset(map(type, data)):
        k = next(k for k, v in enumerate(data) if type(v) not in (_INTS if integer else _NUMBERS))
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"input {inp.name!r} ({inp.datatype.value}): row {k // n}, feature {k % n} "
                         f"is not {kind}: {orjson.dumps(data[k]).decode()[:40]}")
    if not integer:
        return np.array(data, dtype=np.float64)
    dtype = INTEGERS[inp.datatype]
    try:
        return np.array(data, dtype=dtype)
    except OverflowError:
        info = np.iinfo(dtype)
        k = next(k for k, v in enumerate(data) if not info.min <= v <= info.max)
        raise BadRequest(f"input {inp.name!r}: row {k // n}, feature {k % n} is {data[k]}, outside "
                         f"{inp.datatype.value}'s range [{info.min}, {info.max}]") from None


def _binary_values(inp: RequestInput, size: object, tail: bytes, count: int) -> np.ndarray:
    if inp.data is not None:
        raise BadRequest(f"input {inp.name!r} has both 'data' and binary_data_size; send one")
    dtype = np.dtype((FLOATS | INTEGERS)[inp.datatype]).newbyteorder("<")
    if type(size) is not int or size != count * dtype.itemsize:
        raise BadRequest(f"input {inp.name!r}: shape {inp.shape} of {inp.datatype.value} needs "
                         f"binary_data_size {count * dtype.itemsize}, got {size}")
    if size != len(tail):
        raise BadRequest(f"input {inp.name!r} declares {size} bytes of binary data, the body carries {len(tail)}")
    return np.frombuffer(tail, dtype=dtype)


def _check_exact(values: np.ndarray, datatype: Datatype, n: int, card: ModelCard) -> None:
    wide = np.flatnonzero((values > EXACT) | (values < -EXACT) if values.dtype.kind == "i" else values > EXACT)
    if wide.size:
        k = int(wide[0])
        raise BadRequest(f"row {k // n}, feature {k % n} is {values[k]}: {datatype.value} values beyond "
                         f"+-2^24 are not exact in the model's FP32 input")


def output_names(req: InferenceRequest) -> list[str] | None:
    """The outputs asked for, in order; None (all outputs) when the request names none."""
    if req.outputs is None and req.parameters is None:  # the usual request
        return None
    _binary_outputs(req)  # refuse a bad binary_data flag before the model runs
    if req.outputs is None:
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
    if req.parameters is None and req.outputs is None:  # the usual request: all outputs, as JSON
        return False, {}
    default = (req.parameters or {}).get("binary_data_output", False)
    chosen = {o.name: (o.parameters or {}).get("binary_data", default) for o in req.outputs or []}
    flags = [("request parameter 'binary_data_output'", default),
             *((f"output {name!r} parameter 'binary_data'", flag) for name, flag in chosen.items())]
    for what, flag in flags:
        if type(flag) is not bool:
            raise BadRequest(f"{what} must be true or false, got {flag!r}")
    return default, chosen


def response(model: LoadedModel, req: InferenceRequest, arrays: dict[str, np.ndarray]) -> Response:
    """The inference response: JSON, or JSON header plus binary tensors when any output is binary."""
    head: dict = {"model_name": model.name, "model_version": str(model.version)}
    if req.id is not None:
        head["id"] = req.id
    if req.parameters is None and req.outputs is None:  # the usual request: every output as JSON
        return _json_response(head, arrays)
    default, chosen = _binary_outputs(req)
    outputs, chunks, numeric = [], [], []
    for name, array in arrays.items():
        text = array.dtype.kind == "O"
        out = {"name": name, "datatype": "BYTES" if text else "FP32", "shape": list(array.shape)}
        if chosen.get(name, default):
            raw = _bytes_tensor(array) if text else array.astype("<f4", copy=False).tobytes()
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
    if numeric and b"null" in header:
        for out in numeric:
            out["data"] = _numbers(out["data"])
        header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return JSONBytes(header)
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def _json_response(head: dict, arrays: dict[str, np.ndarray]) -> Response:
    # `response` when no output is binary, as one pass (the general loop above gives the same bytes).
    head["outputs"] = outputs = [
        {"name": name, "datatype": "BYTES", "shape": list(array.shape), "data": array.ravel().tolist()}
        if array.dtype.kind == "O" else
        {"name": name, "datatype": "FP32", "shape": list(array.shape), "data": array.ravel()}
        for name, array in arrays.items()]
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"null" in header:  # a non-finite value, or a name, id or label that merely contains "null"
        for out in outputs:
            if out["datatype"] == "FP32":
                out["data"] = _numbers(out["data"])
        header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    return JSONBytes(header)


def _numbers(flat: np.ndarray) -> np.ndarray | list:
    # JSON has no NaN or infinity, and the spec's tensor_data allows no null: non-finite values are
    # sent as the strings "NaN", "Infinity", "-Infinity", which float() and numpy (tritonclient) parse.
    if np.isfinite(flat).all():
        return np.ascontiguousarray(flat)
    return [v if math.isfinite(v) else _NON_FINITE[str(v)] for v in flat.tolist()]


def _bytes_tensor(array: np.ndarray) -> bytes:
    encoded = [s.encode() for s in array.ravel().tolist()]
    return b"".join(struct.pack("<I", len(b)) + b for b in encoded)


def model_metadata(model: LoadedModel, versions: list[int]) -> dict:
    """$metadata_model_response: the session's input and every output `inference.offered`."""
    return {"name": model.name, "versions": [str(v) for v in versions], "platform": PLATFORM,
            "inputs": [{"name": model.input.name, "datatype": _WIRE.get(model.input.dtype, Datatype.FP32).value,
                        "shape": model.input.shape or model.card.input.shape}],
            "outputs": [{"name": o.name, "datatype": _WIRE[o.dtype].value, "shape": [-1, o.width]}
                        for o in inference.offered(model.card)]}


def server_metadata(version: str) -> dict:
    """$metadata_server_response."""
    return {"name": "tinyserve", "version": version, "extensions": EXTENSIONS}
