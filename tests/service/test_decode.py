"""The one JSON reader gives, for every body of a corpus of valid and invalid ones, the matrix or
the 400 message the service gave before it became the only reader (recorded in
tests/data/service/decode_outcomes.json), and reads what it takes as a table in one pass."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.codecs import json as codec
from service.codecs import predict, v2
from service.errors import BadRequest
from tests.service import helpers
from tests.service.helpers import DATA

N = 3
FIELDS = frozenset({"model", "version", "instances", "top_k"})
SPEC = next(s for s in helpers.STANDARD if s.n_features == N and s.feature_names is None)
CARD = helpers.make_card(SPEC, "0" * 64)
MODEL = type("M", (), {"card": CARD, "name": SPEC.name, "input": CARD.input})()
CASES = json.loads((DATA / "decode_outcomes.json").read_text())


def outcome(fn):
    try:
        return fn()
    except BadRequest as exc:
        return {"error": exc.message}


def decode(protocol: str, body: bytes) -> dict:
    if protocol == "predict":
        def run():
            data = predict.parse(FIELDS, body, {"headers": []}, 0)
            x = predict.matrix(data, MODEL, 4)
            return {"fields": {k: v for k, v in data.items() if k != "instances"}, "x": x.tolist()}
    else:
        def run():
            parsed = v2.parse(body, {"headers": []}, 10**6)
            return {"id": parsed.req.id, "x": v2.matrix(parsed, MODEL, 4).tolist()}
    return outcome(run)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['protocol']}-{i}" for i, c in enumerate(CASES)])
def test_same_matrix_or_message_as_recorded(case):
    assert decode(case["protocol"], case["body"].encode("latin-1")) == case["outcome"]


def test_tables_of_numbers_are_read_as_float64_arrays(monkeypatch):
    monkeypatch.setattr(codec, "SMALL", 0)  # these bodies are small enough to be read whole
    tensor = lambda key, parent, depth: key == "instances"  # noqa: E731
    for body, shape in [(b'{"instances": [[1, 2, 3]]}', (1, 3)), (b'{"instances": [1.5, -2e3]}', (2,)),
                        (b'{"model": "m", "instances": [[1.5, -2e3, 0], [4, 5, 6]]}', (2, 3))]:
        got = codec.parse(body, "{got}", tensor)["instances"]
        assert type(got) is np.ndarray and got.dtype == np.float64 and got.shape == shape, body
    for body in [b'{"instances": [[1, [2], 3]]}', b'{"instances": [[1, 2], [3]]}', b'{"instances": [[1, true]]}',
                 b'{"model": "[", "instances": [[1, 2]]}', b'{"instances": []}', b'{"instances": [[]]}',
                 # rows as many values as the table's width, but not a row of numbers each
                 b'{"instances": [[1, 2], "ab"]}', b'{"instances": [[1, 2], {"a": 1, "b": 2}]}',
                 b'{"instances": [[1, 2], 3]}', b'{"instances": [[1, 2], null]}', b'{"instances": [[1, 2], [1, [2]]]}',
                 b'{"instances": [[1, 2], [3, 4, 5], [6]]}']:  # 6 values in 3 rows of 2, but ragged
        assert type(codec.parse(body, "{got}", tensor)["instances"]) is list, body


def test_small_bodies_are_read_whole_as_plain_python():
    tensor = lambda key, parent, depth: key == "instances"  # noqa: E731
    small = b'{"instances": [[1, 2.5, 3]]}'
    assert codec.parse(small, "{got}", tensor) == {"instances": [[1, 2.5, 3]]}
    large = b'{"instances": [' + b", ".join([b"[1, 2.5, 3]"] * 100) + b"]}"
    assert len(small) <= codec.SMALL < len(large)
    assert type(codec.parse(large, "{got}", tensor)["instances"]) is np.ndarray


def test_keys_simdjson_cannot_look_up_are_read_whole(monkeypatch):
    monkeypatch.setattr(codec, "SMALL", 0)
    assert codec.parse(b'{"\\u0000": [1], "instances": [[1, 2]]}', "{got}", lambda *a: True) == \
        {"\x00": [1], "instances": [[1, 2]]}


def test_objects_of_many_keys_are_read_whole(monkeypatch):
    # Key by key, simdjson would scan from the first key for each: n * n / 2 steps, seconds for a
    # megabyte of keys on the event loop. Read whole, the object's tables are plain lists.
    monkeypatch.setattr(codec, "SMALL", 0)
    tensor = lambda key, parent, depth: key == "instances"  # noqa: E731
    few = {f"k{i}": i for i in range(codec.MANY_KEYS - 1)} | {"instances": [[1, 2]]}
    many = {f"k{i}": i for i in range(codec.MANY_KEYS)} | {"instances": [[1, 2]]}
    assert type(codec.parse(json.dumps(few).encode(), "{got}", tensor)["instances"]) is np.ndarray
    got = codec.parse(json.dumps(many).encode(), "{got}", tensor)
    assert got == many and type(got["instances"]) is list


def test_a_parser_still_referenced_is_replaced_not_reused(monkeypatch):
    monkeypatch.setattr(codec, "SMALL", 0)
    doc = codec._document(b"[1]")  # this thread's parser, made here if need be, now holds a live document
    held = codec._parsers.parser
    with pytest.raises(RuntimeError, match="re-use a parser"):  # so parsing with it again is refused
        held.parse(b"[2]")
    assert codec.parse(b'{"instances": [[1, 2]]}', "{got}", lambda *a: True)["instances"].tolist() == [[1, 2]]
    assert codec._parsers.parser is not held  # replaced by a fresh one ...
    assert doc.as_list() == [1]  # ... and the document still alive reads as before
    del doc


def test_each_thread_parses_with_its_own_parser(monkeypatch):
    monkeypatch.setattr(codec, "SMALL", 0)
    codec.parse(b'{"a": [1]}', "{got}", lambda *a: True)  # this thread's parser exists, and is free
    mine = codec._parsers.parser
    seen = {}

    def other():
        seen["before"] = getattr(codec._parsers, "parser", None)  # a new thread starts without one
        seen["got"] = codec.parse(b'{"a": [2]}', "{got}", lambda *a: True)
        seen["parser"] = codec._parsers.parser

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen["got"]["a"].tolist() == [2.0]
    assert seen["before"] is None and seen["parser"] is not None and seen["parser"] is not mine
    assert codec._parsers.parser is mine  # the other thread left this thread's parser alone


JSON_NUMBER = r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.from_regex(JSON_NUMBER, fullmatch=True), min_size=N, max_size=N),
       st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=N, max_size=N))
def test_numbers_read_as_python_reads_them(texts, floats):
    # simdjson rounds decimal text to the nearest double, as Python's float() does; text beyond
    # the double range is a 400, never a value.
    body = ('{"instances": [[' + ", ".join(texts) + "], " + json.dumps(floats) + "]}").encode()
    got = decode("predict", body)
    values = [float(t) for t in texts]
    if any(abs(v) == float("inf") for v in values):
        assert "malformed JSON" in got["error"]
        return
    if any(t.lstrip("-").isdigit() and not -2**63 <= int(t) < 2**64 for t in texts):
        assert "JSON integers must fit in 64 bits" in got["error"]
        return
    with np.errstate(over="ignore"):
        expected = np.array([values, floats], dtype=np.float64).astype(np.float32)
    if not np.isfinite(expected).all():
        assert "not a finite float32" in got["error"]
    else:
        assert got["x"] == expected.tolist()


def test_float32_overflow_is_refused_exactly_where_the_cast_overflows():
    import math

    limit = codec.FLOAT32_LIMIT
    below = math.nextafter(limit, 0)
    assert np.isfinite(np.array([below]).astype(np.float32)).all()
    assert codec.float32_matrix([[below, -below]], None).tolist() == [[3.4028234663852886e38, -3.4028234663852886e38]]
    for bad in (limit, -limit, float("inf"), float("nan")):
        with pytest.raises(BadRequest, match="row 0, feature 1 is .* which is not a finite float32"):
            codec.float32_matrix([[0.0, bad]], None)


@pytest.mark.parametrize("body", [
    b'{"instances": ' + b"[" * 600 + b"]" * 600 + b"}",
    b'{"model": "m", "x": ' + b'{"a": ' * 600 + b"1" + b"}" * 600 + b', "instances": [[1, 2, 3]]}',
    b'{"instances": [[1, 2, ' + b"[" * 300 + b"]" * 300 + b"]]}",
    b'{"x": ' + b'{"a": ' * 1023 + b"1" + b"}" * 1023 + b', "instances": [[1, 2, 3]]}',
])
def test_deep_nesting_is_a_400(body):
    got = decode("predict", body)
    assert "error" in got and "64 bits" not in got["error"], got


def test_deep_nesting_in_v2_data_is_a_400():
    inp = b'{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, ' + b"[" * 300 + b"]" * 300 + b"]}"
    got = decode("v2", b'{"inputs": [' + inp + b"]}")
    assert "is not a number" in got["error"]
