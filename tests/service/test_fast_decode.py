"""The fast decoding path (one numpy pass when the body holds no JSON boolean) is exact:
for every body it gives the same matrix, or the same 400 message, as the per-value checks."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
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
]


def outcome(fn):
    try:
        return fn().tolist()
    except BadRequest as exc:
        return exc.message


@pytest.mark.parametrize("instances", ROWS)
def test_predict_rows_same_as_per_value_checks(instances):
    spec = next(s for s in helpers.STANDARD if s.n_features == N and s.feature_names is None)
    card = helpers.make_card(spec, "0" * 64)
    body = json.dumps({"instances": instances}).encode()
    fast = outcome(lambda: codec.rows(codec.parse_object(body, frozenset({"instances"}))["instances"], card, 4))
    slow = outcome(lambda: codec.rows(orjson.loads(body)["instances"], card, 4))
    assert fast == slow


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
    assert fast == outcome(decode)


def test_boolean_text_check():
    assert codec.no_booleans(b'{"model": "digits", "instances": [[1, 2]]}')
    assert not codec.no_booleans(b'{"instances": [[1, true]]}')
    assert not codec.no_booleans(b'{"instances": [[false, 1]]}')
    assert not codec.no_booleans(b'{"model": "is true", "instances": [[1]]}')  # only costs the fast path
    assert isinstance(codec.parse_object(b'{"instances": [[1, 2]]}', frozenset({"instances"}))["instances"],
                      np.ndarray)


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
