"""Table models (issue 15): raw numeric and text columns, missing values filled inside the graph,
served by /predict, V2 (JSON and binary) and TF Serving through the one data plane."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from service import runtime
from service.card import CARD_FILE, ModelCard, read_card
from service.codecs import columns
from service.config import Settings
from service.main import create_app
from service.repository import FAILED, READY, load_version
from service.types.predict import PredictResponse
from service.types.v2 import InferenceResponse, MetadataModelResponse
from tests.service import helpers, tables

pytestmark = pytest.mark.anyio

ROWS = [[22.0, "1st", 7.25], [None, "2nd", 30.0], [40.0, None, None], [35.0, "crew", 8.0], [1, "", 2]]
FILLED_AGE = "'age' is missing: filled with 28.0"
FILLED_FARE = "'fare' is missing: filled with 10.0"
FILLED_CLASS = "'class' is missing: filled with '3rd'"
UNSEEN_CREW = "'class' = 'crew' is not a category seen in training: encoded as all zeros"
WARNINGS = [None, [FILLED_AGE], [FILLED_CLASS, FILLED_FARE], [UNSEEN_CREW], [FILLED_CLASS]]


@pytest.fixture(scope="module")
def table_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    tables.write(root)
    tables.write(root, "tiny-text", [tables.COLUMNS[1]])  # one input, `categories`
    tables.write(root, "tiny-numbers", [tables.COLUMNS[0], tables.COLUMNS[2]])  # one input, `features`, with NaN fill
    helpers.write_model(root, helpers.BINARY)  # a one-input model beside it serves as before
    return root


@pytest.fixture
async def client(table_root):
    async with helpers.serve(create_app(Settings(model_root=table_root, max_rows=100))) as client:
        yield client


def values(body: dict) -> list[float]:
    return [p["value"] for p in body["predictions"]]


# The card

@pytest.mark.parametrize("change, message", [
    (lambda c: c | {"columns": c["columns"] + [c["columns"][0]]}, "unique"),
    (lambda c: c | {"columns": c["columns"][:2]}, "need the graph inputs"),
    (lambda c: c | {"columns": [c["columns"][0], {**c["columns"][1], "fill": "4th"}, c["columns"][2]]},
     "fill '4th' is not one of its categories"),
    (lambda c: c | {"columns": [c["columns"][0], {**c["columns"][1], "categories": []}, c["columns"][2]]},
     "non-empty, unique categories"),
    (lambda c: c | {"columns": [c["columns"][0], {**c["columns"][1], "categories": ["3rd", "3rd"]}, c["columns"][2]]},
     "non-empty, unique categories"),
    (lambda c: c | {"columns": [{**c["columns"][0], "fill": "old"}, *c["columns"][1:]]}, "finite number as fill"),
    (lambda c: c | {"columns": [{**c["columns"][0], "categories": ["a"]}, *c["columns"][1:]]}, "no categories"),
    (lambda c: c | {"columns": None}, "'inputs' is only for a model with 'columns'"),
    (lambda c: c | {"inputs": c["inputs"][::-1], "input": None}, "need the graph inputs"),
    (lambda c: c | {"feature_names": ["a", "b", "c"]}, "must be the column names"),
    (lambda c: c | {"golden": [{"input": ["old", "1st", 1.0], "output": [0.0]}]}, "golden example 0"),
    (lambda c: c | {"golden": [{"input": [1.0, 2.0, 1.0], "output": [0.0]}]}, "golden example 0"),
])
def test_invalid_table_cards_are_refused_with_a_reason(change, message):
    data = tables.card("0" * 64).model_dump(mode="json", exclude={"feature_names"})
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(change(data))


def test_a_table_card_fills_input_and_feature_names_and_round_trips():
    card = tables.card("0" * 64)
    assert card.input.name == "features" and card.feature_names == ["age", "class", "fare"]
    assert card.n_features == 3 and [i.dtype for i in card.graph_inputs] == ["float32", "string"]
    assert ModelCard.model_validate_json(card.model_dump_json()) == card
    assert card.golden[1].input == [None, "2nd", 30.0]
    other = helpers.make_card(helpers.BINARY, "0" * 64)  # a one-input model's card is written as before
    assert not {"columns", "inputs"} & set(other.model_dump(mode="json")) and other.graph_inputs == [other.input]


# Loading: the graph's inputs as the card declares them, golden rows replayed through the decode path

def test_golden_rows_with_nulls_replay_at_load_and_a_wrong_one_fails(tmp_path):
    good = load_version("t", 1, tables.write(tmp_path / "a"), 1)
    assert good.status == READY and good.model.fields == ("features", "categories")
    folder = tables.write(tmp_path / "b")
    card = read_card(folder / CARD_FILE)
    wrong = card.golden[2].model_copy(update={"output": [card.golden[2].output[0] + 1]})
    helpers.edit_card(folder, golden=[card.golden[0], wrong])
    bad = load_version("t", 1, folder, 1)
    assert bad.status == FAILED and bad.reason.startswith("golden example 1 output 0: model gives 76")


@pytest.mark.parametrize("column, change, reason", [
    (0, {"fill": 99.0}, "column 'age': the card's fill 99.0 answers otherwise than a missing value"),
    (1, {"fill": "1st"}, "column 'class': the card's fill '1st' answers otherwise than a missing value"),
    (1, {"categories": ["1st", "2nd", "Mars"], "fill": "2nd"}, "column 'class': the card's fill '2nd'"),
    (1, {"categories": ["1st", "2nd", "3rd", "Mars"]}, "column 'class': category 'Mars' of the card answers as a "
                                                      "value the graph never saw"),
])
def test_a_card_whose_fills_or_categories_are_not_the_graphs_is_refused(tmp_path, column, change, reason):
    # Edited by hand, it loaded: the answers were the graph's, the warnings the card's (a missing
    # age "filled with 99.0" was answered as filled with 28).
    folder = tables.write(tmp_path)
    columns = list(read_card(folder / CARD_FILE).columns)
    columns[column] = columns[column].model_copy(update=change)
    helpers.edit_card(folder, columns=columns)
    entry = load_version("t", 1, folder, 1)
    assert entry.status == FAILED and entry.reason.startswith(reason), entry.reason


def test_a_two_input_graph_without_columns_is_refused_as_today(tmp_path):
    session = ort.InferenceSession(tables.graph(), providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match=r"the graph has 2 inputs \['features', 'categories'\]; a served graph "
                                         r"has exactly one, \[batch, n_features\]"):
        runtime.signature(session, "values")
    card = tables.card("0" * 64)
    first, out = runtime.signature(session, "values", card.graph_inputs)
    assert (first.name, out.name) == ("features", "values")


# /predict

async def test_predict_objects_lists_nulls_absent_keys_and_unseen_categories(client):
    objects = [dict(zip(["age", "class", "fare"], r)) for r in ROWS]
    del objects[2]["fare"], objects[2]["class"]  # absent keys are missing too
    for instances in (objects, ROWS):
        r = await client.post("/models/tiny-table/predict", json={"instances": instances})
        assert r.status_code == 200, r.text
        body = r.json()
        PredictResponse.model_validate(body)
        assert all(tables.close(v, tables.expected(row)) for v, row in zip(values(body), ROWS))
        assert [p.get("warnings") for p in body["predictions"]] == WARNINGS


async def test_columns_carry_each_rows_warnings_when_any_row_has_some(client):
    for instances, warned in ((ROWS, True), (ROWS[:1], False)):
        body = {"instances": instances}
        rows = (await client.post("/models/tiny-table/predict", json=body)).json()
        r = await client.post("/models/tiny-table/predict", json=body | {"format": "columns"})
        assert r.status_code == 200, r.text
        PredictResponse.model_validate(r.json())
        got = r.json()["predictions"]
        assert got == helpers.as_columns("regression", rows["predictions"], [])
        assert got.get("warnings") == ([w or [] for w in WARNINGS] if warned else None)


async def test_clean_rows_answer_without_warnings_byte_for_byte(client):
    r = await client.post("/models/tiny-table/predict", json={"instances": [{"age": 22, "class": "1st", "fare": 7.25}]})
    assert r.content == b'{"model":"tiny-table","version":1,"task":"regression","predictions":[{"value":36.625}]}'
    r = await client.post("/models/tiny-binary/predict", json={"instances": [[1, 2, 3]]})
    assert r.status_code == 200 and "warnings" not in r.text


@pytest.mark.parametrize("instances, message", [
    ([{"age": "old", "class": "1st", "fare": 1}], 'row 0, feature 0 (age) is not a number: "old"'),
    ([[1, "1st", 2], [1, 3, 2]], "row 1, feature 1 (class) is not a string: 3; it is a categorical feature"),
    ([[True, "1st", 2]], "row 0, feature 0 (age) is not a number: true"),
    ([[1, ["1st"], 2]], 'row 0, feature 1 (class) is not a string: ["1st"]'),
    ([[1, "1st", {"x": 1}]], 'row 0, feature 2 (fare) is not a number: {"x":1}'),
    ([{"age": 1, "klass": "1st"}], "row 0: unknown features ['klass']; expected some of ['age', 'class', 'fare']"),
    ([[1, "1st"]], "expected 3 features per row, row 0 has 2; a missing value is null"),
    ([[1, "1st", 2], 5], "row 1 must be an object keyed by feature name or a list of 3 values"),
    ([[1e39, "1st", 2]], "row 0, feature 0 (age) is 1e+39, which is not a finite float32"),
    ([[1, "1st", -1e39]], "row 0, feature 2 (fare) is -1e+39, which is not a finite float32"),
    ([], "'instances' must be a non-empty list of rows, got []"),
])
async def test_predict_type_errors_are_400_naming_row_and_feature(client, instances, message):
    r = await client.post("/models/tiny-table/predict", json={"instances": instances})
    assert r.status_code == 400 and r.json()["error"].startswith(message), r.text


async def test_concurrent_requests_are_batched_and_each_gets_its_rows(client):
    bodies = [{"instances": ROWS[i % 5:i % 5 + 1 + i % 3]} for i in range(30)]
    answers = await asyncio.gather(*(client.post("/models/tiny-table/predict", json=b) for b in bodies))
    for body, r in zip(bodies, answers):
        got = r.json()["predictions"]
        assert [p["value"] for p in got] == pytest.approx([tables.expected(row) for row in body["instances"]])
        assert [p.get("warnings") for p in got] == [WARNINGS[ROWS.index(row)] for row in body["instances"]]


def test_batcher_concatenates_each_input(table_root):
    model = load_version("tiny-table", 1, table_root / "tiny-table" / "1", 1, (64, 5.0)).model
    card = model.card

    async def main():
        xs = [columns.rows([row] * (k + 1), card, 10) for k, row in enumerate(ROWS)]
        return await asyncio.gather(*(model.batcher.submit(x) for x in xs))

    outs = asyncio.run(main())
    assert [len(o) for o in outs] == [1, 2, 3, 4, 5]
    for out, row in zip(outs, ROWS):
        assert out[:, 0].tolist() == pytest.approx([tables.expected(row)] * len(out))
    assert model.batcher.lone == 0  # one batch held them all


# Open Inference Protocol (V2)

def v2_body(rows: list[list], names=("features", "categories")) -> dict:
    tensors = {"features": {"name": "features", "datatype": "FP32", "shape": [len(rows), 2],
                            "data": [[r[0], r[2]] for r in rows]},
               "categories": {"name": "categories", "datatype": "BYTES", "shape": [len(rows), 1],
                              "data": [r[1] for r in rows]}}
    return {"inputs": [tensors[n] for n in names]}


async def test_v2_json_takes_both_inputs_by_name_and_reports_warnings(client):
    for names in (("features", "categories"), ("categories", "features")):
        r = await client.post("/v2/models/tiny-table/infer", json=v2_body(ROWS, names))
        assert r.status_code == 200, r.text
        body = InferenceResponse.model_validate(r.json())
        assert all(tables.close(v, tables.expected(row)) for v, row in zip(body.outputs[0].data, ROWS))
        assert body.parameters["warnings"].split("\n") == [
            f"row {i}: {w}" for i, ws in enumerate(WARNINGS) for w in ws or []]
    r = await client.post("/v2/models/tiny-table/infer", json=v2_body(ROWS[:1]))
    assert "parameters" not in r.json()


@pytest.mark.parametrize("change, message", [
    (lambda b: b | {"inputs": b["inputs"][:1]},
     "model 'tiny-table' takes inputs ['features', 'categories'], got ['features']"),
    (lambda b: b | {"inputs": [b["inputs"][0]] * 2},
     "takes inputs ['features', 'categories'], got ['features', 'features']"),
    (lambda b: {"inputs": [b["inputs"][0], {**b["inputs"][1], "datatype": "FP32"}]},
     "model input 'categories' is BYTES"),
    (lambda b: {"inputs": [b["inputs"][0], {**b["inputs"][1], "data": [1]}]}, "row 0, feature 0 is not a string: 1"),
    (lambda b: {"inputs": [{**b["inputs"][0], "data": [1, "x"]}, b["inputs"][1]]}, "row 0, feature 1 is not a number"),
    (lambda b: {"inputs": [b["inputs"][0], {**b["inputs"][1], "shape": [2, 1], "data": ["1st", "2nd"]}]},
     "inputs 'features' and 'categories' must have as many rows, got 1 and 2"),
])
async def test_v2_input_errors_are_400(client, change, message):
    r = await client.post("/v2/models/tiny-table/infer", json=change(v2_body(ROWS[:1])))
    assert r.status_code == 400 and message in r.json()["error"], r.text


def bytes_tensor(texts: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


async def test_v2_binary_tensors_fp32_with_nan_and_bytes(client):
    features = np.array([[np.nan if r[0] is None else r[0], np.nan if r[2] is None else r[2]] for r in ROWS], "<f4")
    cats = bytes_tensor(["" if r[1] is None else r[1] for r in ROWS])
    head = {"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [5, 2], "parameters": {"binary_data_size": features.nbytes}},
        {"name": "categories", "datatype": "BYTES", "shape": [5, 1], "parameters": {"binary_data_size": len(cats)}}],
        "outputs": [{"name": "values", "parameters": {"binary_data": True}}]}
    header = json.dumps(head).encode()
    r = await client.post("/v2/models/tiny-table/infer", content=header + features.tobytes() + cats,
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200, r.text
    size = int(r.headers["inference-header-content-length"])
    got = np.frombuffer(r.content[size:], "<f4").tolist()
    assert all(tables.close(v, tables.expected(row)) for v, row in zip(got, ROWS))
    bad = header + features.tobytes() + cats[:-1]
    r = await client.post("/v2/models/tiny-table/infer", content=bad,
                          headers={"Inference-Header-Content-Length": str(len(header))})
    want = f"input 'categories' declares {len(cats)} bytes of binary data, the body carries {len(cats) - 1}"
    assert r.status_code == 400 and r.json()["error"] == want


async def test_metadata_lists_both_inputs(client):
    meta = MetadataModelResponse.model_validate((await client.get("/v2/models/tiny-table")).json())
    assert [i.model_dump(mode="json") for i in meta.inputs] == [
        {"name": "features", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "categories", "datatype": "BYTES", "shape": [-1, 1]}]
    tf = (await client.get("/v1/models/tiny-table/metadata")).json()
    inputs = tf["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {k: v["dtype"] for k, v in inputs.items()} == {"features": "DT_FLOAT", "categories": "DT_STRING"}
    detail = (await client.get("/models/tiny-table/versions/1")).json()
    assert [i["name"] for i in detail["signature"]["inputs"]] == ["features", "categories"]
    assert detail["card"]["columns"][1]["categories"] == tables.CATEGORIES


# TensorFlow Serving

async def test_tfserving_row_and_columnar_forms(client):
    instances = [{"features": [r[0], r[2]], "categories": [r[1]]} for r in ROWS]
    r = await client.post("/v1/models/tiny-table:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    assert [p[0] for p in r.json()["predictions"]] == pytest.approx([tables.expected(row) for row in ROWS])
    inputs = {"categories": [[r[1]] for r in ROWS], "features": [[r[0], r[2]] for r in ROWS]}
    r = await client.post("/v1/models/tiny-table:predict", json={"inputs": inputs})
    assert [p[0] for p in r.json()["outputs"]] == pytest.approx([tables.expected(row) for row in ROWS])
    # TF Serving's clients send bytes as {"b64": ...}: the same strings, the same answers
    b64 = {"categories": [[None if r[1] is None else {"b64": base64.b64encode(r[1].encode()).decode()}] for r in ROWS],
           "features": inputs["features"]}
    r = await client.post("/v1/models/tiny-table:predict", json={"inputs": b64})
    assert [p[0] for p in r.json()["outputs"]] == pytest.approx([tables.expected(row) for row in ROWS])


@pytest.mark.parametrize("body, message", [
    ({"instances": [{"features": [1, 2]}]}, "instance 0 names inputs ['features']; the model's inputs are"),
    ({"instances": [[1, 2]]}, "instance 0 must be an object naming the model's inputs"),
    ({"inputs": {"features": [[1, 2]], "categories": [["1st"], ["2nd"]]}}, "must have as many rows, got 1 and 2"),
    ({"inputs": {"features": [[1, 2]], "categories": [[1]]}}, "row 0, feature 0 (class) is not a string: 1"),
    ({"inputs": [[1, 2]]}, "'inputs' must be an object naming the model's inputs"),
    ({"inputs": {"features": [[1, 2]], "categories": [[{"b64": "%%%"}]]}},
     'row 0, feature 0 (class): {"b64":"%%%"} is not base64 of UTF-8 text'),
    ({"inputs": {"features": [[1, 2]], "categories": [[{"b64": "/w=="}]]}}, "is not base64 of UTF-8 text"),
    ({"inputs": {"features": [[1, 2]], "categories": [[{"b64": 1}]]}}, "row 0, feature 0 (class) is not a string"),
])
async def test_tfserving_errors_are_400(client, body, message):
    r = await client.post("/v1/models/tiny-table:predict", json=body)
    assert r.status_code == 400 and message in r.json()["error"], r.text


# Tables of only text or only numbers: one graph input, `categories` or `features`

async def test_a_text_only_table_has_categories_as_its_one_input(client):
    meta = (await client.get("/v2/models/tiny-text")).json()
    assert meta["inputs"] == [{"name": "categories", "datatype": "BYTES", "shape": [-1, 1]}]
    r = await client.post("/models/tiny-text/predict", json={"instances": [{"class": "2nd"}, {"class": "crew"}, {}]})
    assert [p["value"] for p in r.json()["predictions"]] == [21.0, 1.0, 31.0]
    assert [p.get("warnings") for p in r.json()["predictions"]] == [None, [UNSEEN_CREW], [FILLED_CLASS]]
    body = {"inputs": [{"name": "categories", "datatype": "BYTES", "shape": [2, 1], "data": ["1st", None]}]}
    r = await client.post("/v2/models/tiny-text/infer", json=body)
    assert r.json()["outputs"][0]["data"] == [11.0, 31.0]
    assert r.json()["parameters"] == {"warnings": f"row 1: {FILLED_CLASS}"}
    r = await client.post("/v1/models/tiny-text:predict", json={"instances": [["1st"], {"categories": ["2nd"]}]})
    assert r.json() == {"predictions": [[11.0], [21.0]]}


async def test_a_numbers_only_table_takes_null_for_missing(client):
    r = await client.post("/models/tiny-numbers/predict", json={"instances": [[2, None], {"fare": 4}]})
    assert [p["value"] for p in r.json()["predictions"]] == [8.0, 31.0]
    assert [p["warnings"] for p in r.json()["predictions"]] == [[FILLED_FARE], [FILLED_AGE]]
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 2], "data": [None, 2]}]}
    assert (await client.post("/v2/models/tiny-numbers/infer", json=body)).json()["outputs"][0]["data"] == [30.0]
    r = await client.post("/v1/models/tiny-numbers:predict", json={"inputs": [[2, None], [None, 4]]})
    assert r.json() == {"outputs": [[8.0], [31.0]]}


def test_a_text_the_card_names_missing_is_warned_as_filled_not_as_unseen():
    """A card's `missing_texts` (training's --na-values) are missing values, as "" is; the graph
    fills them (tests/training/test_categories.py), and the warning says so."""
    plan = tables.COLUMNS[1].model_copy(update={"missing_texts": ["NA"]})
    card = tables.card("0" * 64, golden=[], columns=[plan])
    x = columns.table(card, None, np.array([["NA"], ["crew"], ["1st"], [""]], dtype=object))
    assert columns.warnings(card, x) == [[FILLED_CLASS], [UNSEEN_CREW], [], [FILLED_CLASS]]
