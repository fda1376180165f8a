"""The fast decoding paths are exact: for every body they give the same matrix, or the same 400
message, as orjson and the per-value checks (predict: simdjson straight into a matrix; V2: one
numpy pass when the body holds no JSON boolean)."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from service import codec, v2_codec
from service.errors import BadRequest
from tests.service import helpers

N = 3
ROWS = [
    [[1, 2, 3]], [[1.5, -2, 3e5], [0, 0, 0]], [[1, 2]], [[1, 2, 3], [4, 5]], [[1, "2", 3]],
    [[1, None, 3]], [[1, {"a": 1}, 3]], [[1, [2], 3]], [[1, 2**70, 3]], [[1, 2**63, 3]],
    [[1, -(2**63) - 1, 3]], [[1e39, 0, 0]], [[-1e39, 0, 0]], [[]], [[1, 2, 3]] * 5, [1, 2, 3],
    [[1, True, 3]], [[False, 0, 0]], [[[1, 2, 3]]], [[1, 2, 3, 4]], [{"a": 1, "b": 2, "c": 3}],
    [[1, [2], [3]]], [[[1], [2], [3]]], [[1, 2, 3], [4, 5, [6]]], [[1, [], 3]], [[1, 2**64 - 1, 3]],
    [[1, 2**64, 3]], [[1, -(2**63), 3]], [[0.1, 1e-400, -0.0]], [[1, 2, 3], 4], [4, [1, 2, 3]], [[1, 2, 3], {}],
    [[1.7976931348623157e308, 3.4028235e38, 3.4028236e38]], [[2**53 + 1, 16777217, 0.30000000000000004]],
    [], {}, None, "x", 3,
]
# Bodies whose envelope, not `instances`, is what differs between the two parsers or the checks.
BODIES = [
    b'\xef\xbb\xbf{"instances": [[1, 2, 3]]}', b'{"instances": [[1, 2, 3]], "instances": [[4, 5, 6]]}',
    b'{"model": "[x]", "instances": [[1, 2, 3]]}', b'{"model": "a\\"b[", "instances": [[1, 2, 3]]}',
    b'{"model": ["x"], "instances": [[1, 2, 3]]}', b'{"model": {"a": 1}, "instances": [[1, 2, 3]]}',
    b'{"model": "m", "top_k": 2, "version": "2", "instances": [[1, 2, 3]]}', b'{"top_k": true, "instances": [[1, 2, 3]]}',
    b'{"other": 1, "instances": [[1, 2, 3]]}', b'{"instances": [[1, 2, 3]]} x', b'{"instances": [[1, 2, 3]],}',
    b'{"instances": [[1, 2, 3]]}\n', b' {"instances" : [ [1 ,2, 3] ] } ', b'{"instances": [[1, 2, 1e400]]}',
    b'{"instances": [[1, 2, 01]]}', b'{"instances": [[1, 2, NaN]]}', b'{"model": "\xff", "instances": [[1, 2, 3]]}',
    b'{"model": "\\ud800", "instances": [[1, 2, 3]]}', b'{"model": "a\x01", "instances": [[1, 2, 3]]}',
    b'', b'  ', b'[[1, 2, 3]]', b'{"instances": [[1, 2, 3]]', b'{"model": null, "version": null, "instances": [[1, 2, 3]]}',
]
FIELDS = frozenset({"model", "version", "instances", "top_k"})


def predict_outcomes(body: bytes) -> tuple:
    """(simdjson path, orjson path): each the fields and the matrix, or the 400 message."""
    spec = next(s for s in helpers.STANDARD if s.n_features == N and s.feature_names is None)
    card = helpers.make_card(spec, "0" * 64)

    def decode():
        data = codec.parse_object(body, FIELDS)
        x = codec.rows(data.pop("instances"), card, 4)
        return {"fields": data, "x": x.tolist(), "dtype": str(x.dtype)}

    fast = outcome(decode)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "_simd_object", lambda body, fields: None)
        slow = outcome(decode)
    return fast, slow


def outcome(fn):
    try:
        out = fn()
    except BadRequest as exc:
        return exc.message
    return out.tolist() if isinstance(out, np.ndarray) else out


@pytest.mark.parametrize("instances", ROWS)
def test_predict_rows_same_as_per_value_checks(instances):
    fast, slow = predict_outcomes(json.dumps({"instances": instances}).encode())
    assert fast == slow


@pytest.mark.parametrize("body", BODIES)
def test_predict_envelope_same_as_orjson(body):
    fast, slow = predict_outcomes(body)
    assert fast == slow


def test_predict_table_of_numbers_takes_the_simdjson_path():
    for body in (b'{"instances": [[1, 2, 3]]}', b'{"model": "digits", "version": 2, "top_k": 1, "instances": '
                 b'[[1.5, -2e3, 0], [4, 5, 6]]}', b'{"instances": [[1, 2]]}'):
        data = codec._simd_object(body, FIELDS)
        assert data is not None and data["instances"].dtype == np.float64, body
        assert {k: v for k, v in data.items() if k != "instances"} == \
            {k: v for k, v in orjson.loads(body).items() if k != "instances"}
    for body in BODIES[:6]:
        assert codec._simd_object(body, FIELDS) is None, body


def test_simdjson_parser_survives_a_document_still_referenced():
    doc = codec._parser().parse(b'{"instances": [[1, 2, 3]]}')  # a live proxy: the parser may not be reused
    assert codec._simd_object(b'{"instances": [[1, 2, 3]]}', FIELDS) is None  # declined, not an error
    del doc
    assert codec._simd_object(b'{"instances": [[1, 2, 3]]}', FIELDS) is not None  # a fresh parser took over


@pytest.mark.parametrize("data", [*ROWS, [1, 2, 3], [1, 2, 3, 4, 5, 6], [1, 2, "3"], [1, None, 3], [1, True, 3],
                                  [1e39, 0, 0], [[1, 2, 3], [4, 5, 6]], [1, 2, 3, 4, 5]])
@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32"])
@pytest.mark.parametrize("shape", [[1, N], [2, N]])
def test_v2_matrix_same_as_per_value_checks(data, datatype, shape, monkeypatch):
    spec = next(s for s in helpers.STANDARD if s.n_features == N and s.feature_names is None)
    card = helpers.make_card(spec, "0" * 64)
    model = type("M", (), {"card": card, "name": spec.name, "input": card.input})()
    inp = {"name": card.input.name, "shape": shape, "datatype": datatype, "data": data}
    body = json.dumps({"inputs": [inp]}).encode()

    def decode():
        req, tail = v2_codec.parse(body, Headers({}), 10**6)
        return v2_codec.matrix(req, tail, model, 4)

    fast = outcome(decode)
    monkeypatch.setattr(v2_codec, "_numeric_data", lambda data: None)
    monkeypatch.setattr(v2_codec, "_simd_request", lambda body: None)
    assert fast == outcome(decode)


def test_boolean_text_check():
    assert codec.no_booleans(b'{"model": "digits", "instances": [[1, 2]]}')
    assert not codec.no_booleans(b'{"instances": [[1, true]]}')
    assert not codec.no_booleans(b'{"instances": [[false, 1]]}')
    assert not codec.no_booleans(b'{"model": "is true", "instances": [[1]]}')  # only costs the fast path


ENVELOPES = [
    {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
    {"id": "r1", "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64"}]},
    {"id": None, "inputs": []},
    {"id": 5, "inputs": []}, {"inputs": {}}, {}, {"id": "a"}, {"inputs": [None]}, {"inputs": [[]]},
    {"inputs": [{"name": "x", "shape": [1, 3]}]}, {"inputs": [{"name": 1, "shape": [1], "datatype": "FP32"}]},
    {"inputs": [{"name": "x", "shape": [True, 3], "datatype": "FP32"}]},
    {"inputs": [{"name": "x", "shape": [-1, 3], "datatype": "FP32"}]},
    {"inputs": [{"name": "x", "shape": [2**64, 3], "datatype": "FP32"}]},
    {"inputs": [{"name": "x", "shape": [2**64 - 1], "datatype": "UINT8"}]},
    {"inputs": [{"name": "x", "shape": [1.0, 3], "datatype": "FP32"}]},
    {"inputs": [{"name": "x", "shape": (1, 3), "datatype": "FP32"}]},
    {"inputs": [{"name": "x", "shape": [1], "datatype": "fp32"}]},
    {"inputs": [{"name": "x", "shape": [1], "datatype": ["FP32"]}]},
    {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "extra": 1}]},
    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"a": 1}}]},
    {"inputs": [], "outputs": [{"name": "labels"}]}, {"inputs": [], "parameters": {}}, {"inputs": [], "other": 1},
]


@pytest.mark.parametrize("data", ENVELOPES)
def test_v2_plain_envelope_same_as_pydantic(data):
    # The hand check of the usual request accepts only what pydantic accepts, with the same fields.
    plain = v2_codec._plain_request(data)
    try:
        model = v2_codec.InferenceRequest.model_validate(data)
    except Exception:
        assert plain is None
        return
    if plain is not None:
        assert (plain.id, plain.parameters, plain.outputs) == (model.id, model.parameters, model.outputs)
        assert [(i.name, i.shape, i.datatype, i.parameters, i.data) for i in plain.inputs] == \
            [(i.name, i.shape, i.datatype, i.parameters, i.data) for i in model.inputs]


def test_v2_plain_envelope_taken_for_the_usual_request():
    assert all(v2_codec._plain_request(d) is not None for d in ENVELOPES[:3])


JSON_NUMBER = r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.from_regex(JSON_NUMBER, fullmatch=True), min_size=N, max_size=N),
       st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=N, max_size=N))
def test_predict_numbers_parse_the_same(texts, floats):
    # simdjson and orjson both round decimal text to the nearest double; any text that either
    # refuses (an exponent beyond the double range) must give orjson's 400 by both paths.
    body = ('{"instances": [[' + ", ".join(texts) + "], " + json.dumps(floats) + "]}").encode()
    fast, slow = predict_outcomes(body)
    assert fast == slow


V2_BODIES = [
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"id": "r", "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, [2], 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[1, [2], 3]]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2], [3]]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], "data": [4, 5, 6]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "inputs": []}',
    b'\xef\xbb\xbf{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x[", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"id": ["a"], "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": 1, "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [1.0, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [true, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [[1], 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": 3, "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, null, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": []}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32"}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3e39]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "outputs": [{"name": "labels"}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}, '
    b'{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]} x',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[]]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2, 3], []]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[], [1, 2, 3]]}]}',
    b'{"id": null, "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "datatype": "FP32", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "id": 7}',
    b'{"inputs": {}}', b'[]', b'{}',
]


@pytest.mark.parametrize("body", V2_BODIES)
def test_v2_simdjson_same_as_orjson(body, monkeypatch):
    spec = next(s for s in helpers.STANDARD if s.n_features == N and s.feature_names is None)
    card = helpers.make_card(spec, "0" * 64)
    model = type("M", (), {"card": card, "name": spec.name, "input": card.input})()

    def decode():
        req, tail = v2_codec.parse(body, Headers({}), 10**6)
        return {"id": req.id, "x": v2_codec.matrix(req, tail, model, 4).tolist()}

    fast = outcome(decode)
    monkeypatch.setattr(v2_codec, "_simd_request", lambda body: None)
    assert fast == outcome(decode)


def test_v2_usual_request_takes_the_simdjson_path():
    for body in V2_BODIES[:2]:
        req = v2_codec._simd_request(body)
        assert req is not None and isinstance(req.inputs[0].data, np.ndarray), body
    for body in V2_BODIES[2:10]:
        assert v2_codec._simd_request(body) is None, body


def test_each_thread_parses_with_its_own_parser():
    import threading
    seen = []
    thread = threading.Thread(target=lambda: seen.append(codec._parser()))
    thread.start()
    thread.join()
    assert seen[0] is not codec._parser()
    assert codec._simd_object(b'{"instances": [[1, 2, 3]]}', FIELDS) is not None


@pytest.mark.parametrize("arrays", [
    {"logits": np.array([[1.5, -2.0]], np.float32), "probabilities": np.array([[0.25, 0.75]], np.float32),
     "labels": np.array([["b"]], dtype=object)},
    {"logits": np.array([[np.nan, np.inf], [-np.inf, 1.0]], np.float32),
     "probabilities": np.array([[np.nan, 0.5], [0.0, 1.0]], np.float32), "labels": np.array([[""], ["null"]], dtype=object)},
    {"values": np.array([[1e-45, 3.4028235e38, -0.0]], np.float32)},
    {"labels": np.array([["a,b"], ["null"]], dtype=object)},
])
@pytest.mark.parametrize("rid", [None, "null-id"])
def test_v2_usual_response_same_as_the_general_one(arrays, rid):
    # The usual request (no parameters, no outputs named) is answered by a shorter path; asking
    # explicitly for every output as JSON takes the general one: same bytes, non-finite values included.
    model = type("M", (), {"name": "m", "version": 3})()
    usual = v2_codec._Request(rid, [])
    general = v2_codec.InferenceRequest.model_validate(
        {"id": rid, "inputs": [], "parameters": {"binary_data_output": False},
         "outputs": [{"name": name} for name in arrays]})
    fast, slow = v2_codec.response(model, usual, arrays), v2_codec.response(model, general, arrays)
    assert fast.body == slow.body and fast.raw_headers == slow.raw_headers
    assert orjson.loads(fast.body)["outputs"][0]["name"] == next(iter(arrays))
