"""The JSON predict API: `POST /predict` and its per-model and per-version forms.

Each route reads the raw body itself (no Content-Type needed), looks the model up with
`Repository.get` (404/503), then `predict`: `codec.rows` (400) -> `deps.run` (the path
the V2 and TF Serving routes share), which applies `tasks.postprocess`, and answers orjson bytes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import codec, tasks
from service.api import deps
from service.api.examples import openapi_examples
from service.api.schemas import ErrorResponse, PredictRequest, PredictResponse
from service.errors import json_response
from service.runtime import LoadedModel

router = APIRouter(tags=["predict"])

ANY_MODEL = frozenset({"model", "version", "instances", "top_k"})
ONE_MODEL = frozenset({"version", "instances", "top_k"})
ONE_VERSION = frozenset({"instances", "top_k"})


async def predict(request: Request, model: LoadedModel, body: dict, max_rows: int) -> dict:
    """Decode the rows, run them and postprocess into one prediction dict per row."""
    x = codec.rows(body["instances"], model.card, max_rows)
    k = codec.top_k(body)
    return {"model": model.name, "version": model.version, "task": model.card.task.value,
            "predictions": await deps.run(request, model, x, (tasks.postprocess, model.card, k))}


def _docs(fields: frozenset[str]) -> dict:
    exclude = {"model", "version"} - fields
    schema = PredictRequest.model_json_schema()
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in exclude}
    examples = openapi_examples(with_model="model" in fields)
    return {
        "openapi_extra": {"requestBody": {"required": True, "content": {
            "application/json": {"schema": schema, "examples": examples}}}},
        "responses": {200: {"model": PredictResponse}, 400: {"model": ErrorResponse},
                      404: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                      503: {"model": ErrorResponse}},
        "response_class": Response,
    }


@router.post("/predict", **_docs(ANY_MODEL))
async def predict_any(request: Request) -> Response:
    """Predict with the model named in the body, or the default model."""
    repo, settings = deps.repository(request), deps.settings(request)
    body = codec.parse_object(await codec.read_body(request, settings.max_body_bytes), ANY_MODEL)
    model = deps.model(request, repo.resolve(codec.text_field(body, "model")), codec.version_field(body))
    return json_response(await predict(request, model, body, settings.max_rows))


@router.post("/models/{name}/predict", **_docs(ONE_MODEL))
async def predict_model(name: str, request: Request) -> Response:
    """Predict with the named model, its newest ready version unless the body names one."""
    settings = deps.settings(request)
    body = codec.parse_object(await codec.read_body(request, settings.max_body_bytes), ONE_MODEL)
    model = deps.model(request, name, codec.version_field(body))
    return json_response(await predict(request, model, body, settings.max_rows))


@router.post("/models/{name}/versions/{version}/predict", **_docs(ONE_VERSION))
async def predict_version(name: str, version: str, request: Request) -> Response:
    """Predict with one version of the named model."""
    settings = deps.settings(request)
    model = deps.model(request, name, version)
    body = codec.parse_object(await codec.read_body(request, settings.max_body_bytes), ONE_VERSION)
    return json_response(await predict(request, model, body, settings.max_rows))
