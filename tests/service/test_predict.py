"""The JSON predict API in process: every task's answers, versions, names, top_k, defaults."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest

from service.types.predict import COLUMNS, PREDICTIONS, PredictResponse
from service.config import Settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import DATA

pytestmark = pytest.mark.anyio


def payload(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def rows_as_lists(spec, instances) -> list[list[float]]:
    return [[r[f] for f in spec.feature_names] if isinstance(r, dict) else r for r in instances]


async def predict(client, path: str, body: dict) -> PredictResponse:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    parsed = PredictResponse.model_validate(orjson.loads(response.content))  # orjson: no NaN allowed
    kind = PREDICTIONS[parsed.task]
    assert all(type(p) is kind for p in parsed.predictions)
    return parsed


def approx(tree):
    """pytest.approx for nested dicts and lists of floats."""
    if isinstance(tree, dict):
        return {k: approx(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [approx(v) for v in tree]
    return pytest.approx(tree) if isinstance(tree, float) else tree


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


async def test_binary(client):
    body = payload("predict_binary.json")
    got = await predict(client, "/predict", body)
    logits = helpers.BINARY.logits(rows_as_lists(helpers.BINARY, body["instances"]))[:, 0]
    assert (got.model, got.version, got.task.value) == ("tiny-binary", 1, "binary")
    assert [p.probability for p in got.predictions] == pytest.approx([sigmoid(z) for z in logits.tolist()])
    assert [p.label for p in got.predictions] == ["yes", "yes", "no", "yes", "no"]  # 0.5 is "yes"
    assert [p.probability for p in got.predictions][-2:] == [1.0, 0.0]  # logits +-1000


async def test_multiclass(client):
    body = payload("predict_multiclass.json")
    got = await predict(client, "/predict", body)
    assert (got.model, got.version) == ("tiny-multiclass", 2)
    logits = helpers.MULTICLASS_V2.logits(body["instances"])
    first = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert got.predictions[0].label == "dog" and got.predictions[0].probability == pytest.approx(first[1])
    assert [(t.label, t.probability) for t in got.predictions[0].top_k] == [
        ("dog", pytest.approx(first[1])), ("emu", pytest.approx(first[2]))]
    assert got.predictions[1].model_dump() == {"label": "cat", "probability": 1.0, "top_k": [
        {"label": "cat", "probability": 1.0}, {"label": "emu", "probability": 0.0}]}
    assert got.predictions[2].label == "emu" and got.predictions[2].probability == pytest.approx(
        math.e / (1 + math.e))  # logits [-1000, 0, 1]
    assert all(math.isfinite(t.probability) for p in got.predictions for t in p.top_k)


async def test_multilabel(client):
    got = await predict(client, "/predict", payload("predict_multilabel.json"))
    p = [pred.model_dump() for pred in got.predictions]
    assert p[0] == {"labels": ["even", "prime"],  # logits [1, 1, 0]: 0.5 < 0.9 for closed_loop
                    "probabilities": {"even": pytest.approx(sigmoid(1)), "prime": pytest.approx(sigmoid(1)),
                                      "closed_loop": 0.5}}
    assert p[1] == {"labels": ["even", "closed_loop"], "probabilities": {"even": 1.0, "prime": 0.0, "closed_loop": 1.0}}
    assert p[2]["labels"] == ["prime"]


async def test_regression_scalar_and_named_rows(client):
    got = await predict(client, "/predict", payload("predict_regression.json"))
    assert [p.value for p in got.predictions] == [9.0, -1.0, -999.0]  # 2 x1 + 3 x2 + 1


async def test_regression_with_two_targets(client):
    got = await predict(client, "/models/tiny-regression2/predict", {"instances": [[1, 2], [0, 0]]})
    assert [p.value for p in got.predictions] == [[1.0, 2.5], [0.0, 0.5]]


async def test_version_selection(client):
    body = {"instances": [[0, 0, 0, 0]]}
    newest = await predict(client, "/models/tiny-multiclass/predict", body)
    older = await predict(client, "/models/tiny-multiclass/versions/1/predict", body)
    by_body = await predict(client, "/predict", {"model": "tiny-multiclass", "version": 1, **body})
    by_string = await predict(client, "/models/tiny-multiclass/predict", {"version": "1", **body})
    assert newest.version == 2 and newest.predictions[0].label == "emu"  # v2 adds 1 to emu
    assert older.version == by_body.version == by_string.version == 1
    assert older.predictions[0].probability == pytest.approx(1 / 3)


@pytest.mark.parametrize("top_k, expected", [(None, 3), (0, 0), (1, 1), (2, 2), (3, 3), (50, 3)])
async def test_top_k_is_bounded_by_the_classes(client, top_k, expected):
    body = {"instances": [[0, 0, 0, 0], [3, 1, 0, 0]]} | ({} if top_k is None else {"top_k": top_k})
    got = await predict(client, "/models/tiny-multiclass/predict", body)
    full = await predict(client, "/models/tiny-multiclass/predict", body | {"top_k": 3})
    assert [len(p.top_k) for p in got.predictions] == [expected, expected]
    # However many classes are listed, each row's label and probability are the same.
    assert [(p.label, p.probability) for p in got.predictions] == [(p.label, p.probability) for p in full.predictions]
    assert [p.top_k for p in got.predictions] == [p.top_k[:expected] for p in full.predictions]


async def test_top_k_is_ignored_by_other_tasks(client):
    got = await predict(client, "/models/tiny-binary/predict", {"instances": [[0, 0, 0]], "top_k": 2})
    assert got.predictions[0].model_dump() == {"label": "yes", "probability": 0.5}


@pytest.mark.parametrize("name, expected", [
    ("nonfinite-binary", [{"label": "yes", "probability": sigmoid(2)}, {"label": None, "probability": None},
                          {"label": "yes", "probability": 1.0}]),
    ("nonfinite-multiclass", [{"label": "a", "probability": sigmoid(2), "top_k": [
        {"label": "a", "probability": sigmoid(2)}, {"label": "b", "probability": sigmoid(-2)}]},
        {"label": None, "probability": None, "top_k": []},
        {"label": "a", "probability": 1.0, "top_k": [{"label": "a", "probability": 1.0}, {"label": "b", "probability": 0.0}]}]),
    ("nonfinite-multilabel", [{"labels": ["a", "b"], "probabilities": {"a": sigmoid(2), "b": 0.5}},
                              {"labels": None, "probabilities": {"a": None, "b": 0.5}},
                              {"labels": ["a", "b"], "probabilities": {"a": 1.0, "b": 0.5}}]),
    ("nonfinite-regression", [{"value": 2.0}, {"value": None}, {"value": None}]),
])
async def test_non_finite_model_outputs_are_null_in_valid_json(client, name, expected):
    # Inputs [4, 0], [-1, 0], [0, 2] make the graph output 2, NaN and +inf.
    got = await predict(client, f"/models/{name}/predict", {"instances": [[4, 0], [-1, 0], [0, 2]]})
    assert [p.model_dump() for p in got.predictions] == approx(expected)


COLUMN_ASKS = [  # every task, versions, top_k, non-finite outputs (null), one row and several
    ("/predict", payload("predict_binary.json")),
    ("/predict", payload("predict_multiclass.json")),
    ("/predict", payload("predict_multilabel.json")),
    ("/predict", payload("predict_regression.json")),
    ("/models/tiny-regression2/predict", {"instances": [[1, 2], [0, 0]]}),
    ("/models/tiny-multiclass/versions/1/predict", {"instances": [[0, 0, 0, 0]]}),
    *[("/models/tiny-multiclass/predict", {"instances": [[0, 0, 0, 0], [3, 1, 0, 0]], "top_k": k}) for k in (0, 1, 50)],
    *[(f"/models/nonfinite-{task}/predict", {"instances": [[4, 0], [-1, 0], [0, 2]]})
      for task in ("binary", "multiclass", "multilabel", "regression")],
]


@pytest.mark.parametrize("path, body", COLUMN_ASKS)
async def test_columns_are_the_rows_turned_inside_out(client, path, body):
    rows = await client.post(path, json=body)
    as_rows = await client.post(path, json=body | {"format": "rows"})
    null = await client.post(path, json=body | {"format": None})
    cols = await client.post(path, json=body | {"format": "columns"})
    assert rows.status_code == cols.status_code == 200, cols.text
    assert as_rows.content == null.content == rows.content  # "rows" is the default
    assert cols.headers["content-type"] == "application/json"
    got = PredictResponse.model_validate(orjson.loads(cols.content))  # orjson: no NaN allowed
    assert type(got.predictions) is COLUMNS[got.task]
    r, c = orjson.loads(rows.content), orjson.loads(cols.content)
    assert list(c) == list(r) and all(c[k] == r[k] for k in ("model", "version", "task"))
    labels = list(r["predictions"][0].get("probabilities", {}))
    assert c["predictions"] == helpers.as_columns(r["task"], r["predictions"], labels)


@pytest.mark.parametrize("form", ["Columns", "", "records", 1, True, ["columns"], {"columns": 1}])
async def test_an_unknown_format_is_a_400(client, form):
    r = await client.post("/models/tiny-binary/predict", json={"instances": [[0, 0, 0]], "format": form})
    assert r.status_code == 400
    assert r.json() == {"error": f"'format' must be \"rows\" or \"columns\", got {orjson.dumps(form).decode()}"}


async def test_content_type_is_not_required(client):
    raw = orjson.dumps({"model": "tiny-binary", "instances": [[0, 0, 0]]})
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/json"}):
        response = await client.post("/predict", content=raw, headers=headers)
        assert response.status_code == 200 and response.json()["predictions"][0]["probability"] == 0.5


async def test_default_model_from_settings(model_root):
    app = create_app(Settings(model_root=model_root, default_model="tiny-regression"))
    async with helpers.serve(app) as client:
        got = await predict(client, "/predict", {"instances": [[1, 1]]})
    assert (got.model, got.predictions[0].value) == ("tiny-regression", 6.0)


async def test_only_model_needs_no_name(tmp_path):
    helpers.write_model(tmp_path, helpers.MULTILABEL)
    async with helpers.serve(create_app(Settings(model_root=tmp_path))) as client:
        got = await predict(client, "/predict", {"instances": [[0, 0]]})
    assert got.model == "tiny-multilabel"


async def test_max_rows_is_accepted(client):
    got = await predict(client, "/models/tiny-binary/predict", {"instances": [[0, 0, 0]] * 100})
    assert len(got.predictions) == 100


def test_gateway_matches_exactly_the_inference_routes(settings):
    gateway = create_app(settings)

    def match(path, method="POST", root_path=""):
        found = gateway.match({"type": "http", "method": method, "path": path, "root_path": root_path})
        return None if found is None else (found[0].path, found[1])

    assert match("/predict") == ("/predict", {})
    assert match("/models/m/versions/2/predict") == ("/models/{name}/versions/{version}/predict",
                                                      {"name": "m", "version": "2"})
    assert match("/v2/models/m/infer") == ("/v2/models/{name}/infer", {"name": "m"})
    assert match("/v2/models/m/versions/1/infer") == ("/v2/models/{name}/versions/{version}/infer",
                                                      {"name": "m", "version": "1"})
    assert match("/v1/models/m:predict") == ("/v1/models/{name}:predict", {"name": "m"})
    assert match("/v1/models/m/versions/3:predict") == ("/v1/models/{name}/versions/{version}:predict",
                                                        {"name": "m", "version": "3"})
    assert match("/v1/models/m:classify") == ("/v1/models/{name}:{method}", {"name": "m", "method": "classify"})
    for other in ["/predict/", "//predict", "/predictx", "/v2/models/m/ready", "/v2", "/health/ready", "/", ""]:
        assert match(other) is None, other
    assert match("/predict", "GET") is None
    assert match("/api/predict", root_path="/api") == ("/predict", {})


def test_gateway_remembers_a_bounded_number_of_matches_and_hands_out_fresh_params(settings, monkeypatch):
    from service.http import gateway as module

    gateway = create_app(settings)
    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "root_path": ""}
    route, params = gateway.match(scope)
    params["name"] = "changed by an endpoint"
    assert gateway.match(scope) == (route, {"name": "m"})
    # The same path under another root path is matched on its own.
    assert gateway.match({**scope, "path": "/api/v2/models/m/infer", "root_path": "/api"})[1] == {"name": "m"}
    monkeypatch.setattr(module, "MATCHES_KEPT", 8)
    for i in range(50):  # paths are the clients' to choose: what is kept stays bounded
        assert gateway.match({**scope, "path": f"/v2/models/m{i}/infer"})[1] == {"name": f"m{i}"}
        assert gateway.match({**scope, "path": f"/nothing/{i}"}) is None
    assert len(gateway._matched) <= 8


def test_an_inference_route_the_gateway_cannot_call_is_refused_at_build(settings):
    from fastapi import APIRouter, FastAPI

    from service.http.gateway import Gateway
    from service.observe import Observer

    router = APIRouter()

    @router.post("/models/{name}/explain")
    async def explain(name: str, request, depth: int = 1):
        return None

    with pytest.raises(TypeError, match="/models/{name}/explain must take exactly"):
        Gateway(FastAPI(), [router], Observer(None), ())
