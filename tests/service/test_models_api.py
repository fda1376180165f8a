"""Model metadata, health probes and the OpenAPI docs."""

from __future__ import annotations

import numpy as np
import pytest

from service.card import ModelCard
from service.config import Settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import BINARY, MULTICLASS_V1, MULTICLASS_V2, Spec

pytestmark = pytest.mark.anyio


async def test_list_models(client):
    response = await client.get("/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(models) == {s.name for s in helpers.STANDARD}
    assert models["tiny-multiclass"] == {
        "name": "tiny-multiclass", "task": "multiclass", "status": "ready", "default_version": 2,
        "versions": [{"version": 1, "status": "ready"}, {"version": 2, "status": "ready"}]}
    assert models["tiny-regression"]["task"] == "regression"


async def test_describe_model_shows_the_default_version(client):
    body = (await client.get("/models/tiny-multiclass")).json()
    assert body["default_version"] == 2 and body["card"]["version"] == 2
    assert "golden" not in body["card"]
    expected = helpers.make_card(MULTICLASS_V2, body["card"]["sha256"]).public()
    assert body["card"] == expected
    assert body["signature"] == {"inputs": [{"name": "x", "shape": [-1, 4], "dtype": "float32"}],
                                 "outputs": [{"name": "logits", "shape": [-1, 3], "dtype": "float32"}]}


async def test_describe_version(client):
    body = (await client.get("/models/tiny-binary/versions/1")).json()
    assert (body["name"], body["version"], body["status"]) == ("tiny-binary", 1, "ready")
    assert "reason" not in body and body["card"]["feature_names"] == ["a", "b", "c"]
    assert body["origin"] == "tiny-binary/1" and body["card"]["output_kind"] == "logits"
    ModelCard.model_validate({**body["card"], "golden": []})  # the public card is the card minus golden


async def test_unknown_model_or_version_is_404(client):
    assert (await client.get("/models/nope")).status_code == 404
    assert (await client.get("/models/tiny-binary/versions/2")).status_code == 404
    assert (await client.get("/models/tiny-binary/versions/x")).status_code == 404


async def test_failed_versions_are_described_with_their_reason(tmp_path):
    helpers.write_model(tmp_path, MULTICLASS_V1)
    helpers.edit_card(helpers.write_model(tmp_path, MULTICLASS_V2), sha256="0" * 64)
    helpers.edit_card(helpers.write_model(tmp_path, BINARY), name="other")
    async with helpers.serve(create_app(Settings(model_root=tmp_path))) as client:
        models = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
        version = (await client.get("/models/tiny-multiclass/versions/2")).json()
        binary = (await client.get("/models/tiny-binary")).json()
        ready = await client.get("/health/ready")
    assert models["tiny-multiclass"]["status"] == "ready" and models["tiny-multiclass"]["default_version"] == 1
    assert models["tiny-multiclass"]["versions"][1]["status"] == "failed"
    assert version["status"] == "failed" and version["reason"].startswith("model.onnx sha256 is")
    assert version["card"]["version"] == 2 and version["signature"] is None
    # The folders decide the name and version; the card's own are provenance, never a reason to refuse.
    assert binary["status"] == "ready" and binary["default_version"] == 1 and binary["origin"] == "other/1"
    assert binary["task"] == "binary" and "reason" not in binary["versions"][0]
    assert ready.status_code == 200  # one good model is enough to take traffic
    assert set(ready.json()["failed"]) == {"tiny-multiclass/2"}


async def test_health(client):
    live = await client.get("/health/live")
    ready = await client.get("/health/ready")
    assert live.status_code == 200 and live.json() == {"status": "live"}
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["serving"]["tiny-multiclass"] == 2


@pytest.mark.parametrize("root", ["missing", "empty"])
async def test_missing_or_empty_root_is_live_but_not_ready(tmp_path, root):
    path = tmp_path / "models" if root == "missing" else tmp_path
    async with helpers.serve(create_app(Settings(model_root=path))) as client:
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert (await client.get("/models")).json() == {"models": []}
    assert ready.status_code == 503
    assert ready.json() == {"error": f"not ready: no model is serving from {path}", "failed": {}}


async def test_not_ready_while_the_default_model_is_missing(model_root):
    async with helpers.serve(create_app(Settings(model_root=model_root, default_model="nope"))) as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 503 and "default model 'nope' is not serving" in ready.json()["error"]


async def test_strict_readiness_is_the_setting_on_both_health_apis(tmp_path):
    helpers.write_model(tmp_path, helpers.MULTICLASS_V1)
    folder = helpers.write_model(tmp_path, helpers.BINARY)
    (folder / "model.onnx").write_bytes(b"broken")
    for strict, status in ((False, 200), (True, 503)):
        async with helpers.serve(create_app(Settings(model_root=tmp_path, strict_readiness=strict))) as client:
            ready, v2 = await client.get("/health/ready"), await client.get("/v2/health/ready")
        assert (ready.status_code, v2.status_code) == (status, status), (strict, ready.text, v2.text)
    assert ready.json()["error"] == "not ready: strict readiness: model(s) ['tiny-binary'] have no version serving"


# Stand-ins for the default repository, same names and signatures, so the doc examples can run.
rng = np.random.default_rng(1)
DOC_MODELS = [
    Spec("digits-binary", "binary", rng.normal(0, 0.1, (64, 1)).tolist(), [0.0], ["0", "1"], thresholds=[0.5]),
    Spec("digits", "multiclass", rng.normal(0, 0.1, (64, 10)).tolist(), [0.0] * 10, [str(i) for i in range(10)]),
    Spec("digit-traits", "multilabel", rng.normal(0, 0.1, (64, 3)).tolist(), [0.0] * 3,
         ["even", "prime", "closed_loop"], thresholds=[0.5] * 3),
    Spec("diabetes", "regression", rng.normal(0, 0.1, (10, 1)).tolist(), [150.0], ["progression"],
         feature_names=["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]),
]


async def test_docs_examples_cover_every_task_and_work(tmp_path):
    for spec in DOC_MODELS:
        helpers.write_model(tmp_path, spec)
    async with helpers.serve(create_app(Settings(model_root=tmp_path))) as client:
        assert (await client.get("/docs")).status_code == 200
        paths = (await client.get("/openapi.json")).json()["paths"]
        answers = {}
        for path in ("/predict", "/models/{name}/predict"):
            examples = paths[path]["post"]["requestBody"]["content"]["application/json"]["examples"]
            assert set(examples) == {"binary", "multiclass", "multilabel", "regression", "bulk", "columns"}
            for key, example in examples.items():
                task = "multiclass" if key in ("bulk", "columns") else key
                body = example["value"]
                url = "/predict" if path == "/predict" else f"/models/{DOC_MODELS[_task_index(task)].name}/predict"
                response = await client.post(url, json=body)
                assert response.status_code == 200, response.text
                answers[task] = response.json()["task"]
                if key == "bulk":  # several rows, no ranking asked for
                    predictions = response.json()["predictions"]
                    assert len(predictions) == 2 and all(p["top_k"] == [] and p["label"] for p in predictions)
                if key == "columns":  # the same rows, a list per field
                    columns = response.json()["predictions"]
                    assert len(columns["label"]) == 2 and [len(t) for t in columns["top_k"]["label"]] == [2, 2]
    assert answers == {t: t for t in answers} and len(answers) == 4


def _task_index(task: str) -> int:
    return [s.task for s in DOC_MODELS].index(task)
