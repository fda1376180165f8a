"""The committed default repository in models/: every version loads and answers one prediction."""

from __future__ import annotations

import pytest

from service.types.predict import PREDICTIONS, PredictResponse
from service.config import DEFAULT_MODEL_ROOT, Settings
from service.main import create_app
from tests.service import helpers

pytestmark = pytest.mark.anyio

EXPECTED_TASKS = {"digits-binary": "binary", "digits": "multiclass", "digit-traits": "multilabel",
                  "diabetes": "regression"}


@pytest.fixture
async def default_client():
    settings = Settings()
    assert settings.model_root == DEFAULT_MODEL_ROOT
    async with helpers.serve(create_app(settings)) as client:
        yield client


async def test_default_repository_is_ready(default_client):
    ready = await default_client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["failed"] == {}
    models = (await default_client.get("/models")).json()["models"]
    assert models, f"no models under {DEFAULT_MODEL_ROOT}"
    for model in models:
        assert model["status"] == "ready"
        assert all(v["status"] == "ready" for v in model["versions"]), model
    tasks = {m["name"]: m["task"] for m in models}
    assert {name: tasks.get(name) for name in EXPECTED_TASKS} == EXPECTED_TASKS


async def test_every_default_model_answers(default_client):
    models = (await default_client.get("/models")).json()["models"]
    assert models, f"no models under {DEFAULT_MODEL_ROOT}"
    for model in models:
        detail = (await default_client.get(f"/models/{model['name']}")).json()
        card = detail["card"]
        row = [0.0] * card["input"]["shape"][-1]
        if card["feature_names"]:
            row = dict(zip(card["feature_names"], row))
        response = await default_client.post(f"/models/{model['name']}/predict", json={"instances": [row, row]})
        assert response.status_code == 200, response.text
        got = PredictResponse.model_validate(response.json())
        assert (got.model, got.version, got.task.value) == (model["name"], model["default_version"], model["task"])
        assert len(got.predictions) == 2
        assert all(type(p) is PREDICTIONS[got.task] for p in got.predictions)
        labels = card["labels"]
        for p in got.predictions:
            if got.task.value in ("binary", "multiclass"):
                assert p.label in labels and 0.0 <= p.probability <= 1.0
            elif got.task.value == "multilabel":
                assert set(p.probabilities) == set(labels) and set(p.labels) <= set(labels)
            elif len(labels) > 1:
                assert isinstance(p.value, list) and len(p.value) == len(labels)
            else:
                assert isinstance(p.value, float)
