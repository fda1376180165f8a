"""The native predict API: `POST /predict` and its per-model and per-version forms.

Each route hands its request to `dataplane.infer` with the predict codec for the fields its body
may hold; the wire rules are in `service.codecs.predict`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import dataplane
from service.api.examples import openapi_examples
from service.codecs.predict import ANY_MODEL, ONE_MODEL, ONE_VERSION, codec
from service.types.predict import ErrorResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])
_ANY, _ONE_MODEL, _ONE_VERSION = codec(ANY_MODEL), codec(ONE_MODEL), codec(ONE_VERSION)


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
    return await dataplane.infer(request, _ANY)


@router.post("/models/{name}/predict", **_docs(ONE_MODEL))
async def predict_model(name: str, request: Request) -> Response:
    """Predict with the named model, its newest ready version unless the body names one."""
    return await dataplane.infer(request, _ONE_MODEL, name)


@router.post("/models/{name}/versions/{version}/predict", **_docs(ONE_VERSION))
async def predict_version(name: str, version: str, request: Request) -> Response:
    """Predict with one version of the named model."""
    return await dataplane.infer(request, _ONE_VERSION, name, version)
