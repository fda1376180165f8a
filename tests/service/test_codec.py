"""Rows -> float32 matrix, with a readable 400 for every way a row can be wrong."""

from __future__ import annotations

import numpy as np
import pytest

from service.codecs import json as codec
from service.codecs import predict
from service.errors import BadRequest
from tests.service import helpers

NAMED = helpers.make_card(helpers.BINARY, "0" * 64)  # features a, b, c
PLAIN = helpers.make_card(helpers.MULTICLASS_V1, "0" * 64)  # 4 unnamed features


def test_lists_and_named_rows_become_one_float32_matrix():
    x = codec.rows([[1, 2.5, -3], {"c": 3, "a": 1, "b": 2}], NAMED, max_rows=10)
    assert x.dtype == np.float32 and x.tolist() == [[1, 2.5, -3], [1, 2, 3]]


@pytest.mark.parametrize("instances, card, message", [
    ([], PLAIN, "'instances' must be a non-empty list of rows"),
    ({"a": 1}, PLAIN, "'instances' must be a non-empty list of rows"),
    ([[0, 0, 0, 0]] * 11, PLAIN, "at most 10 rows per request, got 11"),
    ([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0]], PLAIN, "expected 4 features per row, row 3 has 3"),
    ([[0, 0, 0, 0, 0]], PLAIN, "expected 4 features per row, row 0 has 5"),
    ([5], PLAIN, "row 0 must be a list of 4 numbers, got a number"),
    (["1,2,3,4"], PLAIN, "row 0 must be a list of 4 numbers, got a string"),
    ([[0, "1", 0, 0]], PLAIN, 'row 0, feature 1 is not a number: "1"'),
    ([[0, 0, True, 0]], PLAIN, "row 0, feature 2 is not a number: true"),
    ([[0, 0, 0, None]], PLAIN, "row 0, feature 3 is not a number: null"),
    ([[0, 0, 0, [1]]], PLAIN, "row 0, feature 3 is not a number: [1]"),
    ([[0, 0, 0, 1e39]], PLAIN, "row 0, feature 3 is 1e+39, which is not a finite float32"),
    ([[0, 0, 0, 0], [0, -1e300, 0, 0]], PLAIN, "row 1, feature 1 is -1e+300"),
    ([{"a": 1, "b": 2, "c": 3}], PLAIN, "row 0 is an object, but this model has no feature names"),
    ([{"a": 1, "b": 2}], NAMED, "row 0: missing features ['c'], unknown features []"),
    ([{"a": 1, "b": 2, "c": 3, "d": 4}], NAMED, "row 0: missing features [], unknown features ['d']"),
    ([{"a": 1, "b": 2, "x": 3}], NAMED, "row 0: missing features ['c'], unknown features ['x']"),
    ([{"a": 1, "b": "2", "c": 3}], NAMED, 'row 0, feature 1 (b) is not a number: "2"'),
])
def test_bad_rows_are_400_with_what_was_expected(instances, card, message):
    with pytest.raises(BadRequest) as info:
        codec.rows(instances, card, max_rows=10)
    assert info.value.status == 400
    assert message in info.value.message


@pytest.mark.parametrize("value, ok", [(None, 3), (1, 1), (50, 50), (0, 0), (-1, None), (2.0, None),
                                       (True, None), ("3", None), (0.0, None)])
def test_top_k_must_be_a_non_negative_integer(value, ok):
    body = {} if value is None else {"top_k": value}
    if ok is None:
        with pytest.raises(BadRequest, match="'top_k' must be an integer >= 0"):
            predict.top_k(body)
    else:
        assert predict.top_k(body) == ok


@pytest.mark.parametrize("body, message", [
    (b"", "malformed JSON"),
    (b"{", "malformed JSON"),
    (b'{"instances": [[NaN]]}', "malformed JSON"),
    (b'{"instances": [[1e400]]}', "malformed JSON"),
    (b"[1, 2]", "the body must be a JSON object with 'instances', got a list"),
    (b'{"rows": []}', "unknown field(s) ['rows']"),
    (b'{"model": "x"}', "missing field 'instances'"),
])
def test_parse_object(body, message):
    with pytest.raises(BadRequest) as info:
        predict.parse(frozenset({"model", "instances"}), body, {}, 0)
    assert message in info.value.message
