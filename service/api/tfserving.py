"""TensorFlow Serving REST routes: predict, model status and model metadata under /v1/models.

`{name}:predict` works as a path: Starlette's `{name}` matches `[^/]+`, which backtracks to leave
":predict" to the literal (model names cannot contain ':'). Wire rules: `service.codecs.tfserving`.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from starlette.responses import Response

from service import dataplane
from service.codecs import tfserving as tfserving_codec
from service.errors import NotFound, json_response
from service.types.tfserving import (ColumnarResponse, ErrorResponse, GetModelMetadataResponse,
                                     GetModelStatusResponse, PredictRequest, RowResponse)

router = APIRouter(prefix="/v1/models", tags=["tfserving"])


def _docs(ok: object, body: type | None = None) -> dict:
    errors = {status: {"model": ErrorResponse} for status in (400, 404, 503)}
    extra = {"openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": body.model_json_schema()}}}}} if body else {}
    return {"responses": {200: {"model": ok}, **errors}, "response_class": Response, **extra}


@router.post("/{name}:predict", **_docs(RowResponse | ColumnarResponse, PredictRequest))
async def predict(name: str, request: Request) -> Response:
    """Predict with the newest ready version (row or columnar format)."""
    return await dataplane.infer(request, tfserving_codec.CODEC, name)


@router.post("/{name}/versions/{version}:predict", **_docs(RowResponse | ColumnarResponse, PredictRequest))
async def predict_version(name: str, version: str, request: Request) -> Response:
    """Predict with one version (row or columnar format)."""
    return await dataplane.infer(request, tfserving_codec.CODEC, name, tfserving_codec.version(version))


@router.post("/{name}:{method}", include_in_schema=False)
async def other_method(name: str, method: str, request: Request) -> Response:
    """TF Serving's :classify and :regress (JSON `examples`, feature maps for a tf.Example-reading
    signature) are not served: these models have one signature, serving_default, for :predict."""
    raise NotFound(_unsupported(method))


@router.post("/{name}/versions/{version}:{method}", include_in_schema=False)
async def other_version_method(name: str, version: str, method: str, request: Request) -> Response:
    """As `other_method`, for one version."""
    raise NotFound(_unsupported(method))


def _unsupported(method: str) -> str:
    return (f"method ':{method[:100]}' is not supported: the only signature is {tfserving_codec.SIGNATURE!r}, "
            "for ':predict' (TF Serving's :classify and :regress are not served)")


def _get_of_a_method(*parts: str) -> None:
    """A GET of `{name}:predict` would otherwise look a model named "digits:predict" up (404); a
    method not served is 404 whatever the HTTP method."""
    for part in parts:
        if ":" in part:
            method = part.partition(":")[2]
            if method != "predict":
                raise NotFound(_unsupported(method))
            raise HTTPException(405, "':predict' takes POST, not GET", {"Allow": "POST"})


@router.get("/{name}", **_docs(GetModelStatusResponse))
async def model_status(name: str, request: Request) -> Response:
    """Status of every version of a model."""
    _get_of_a_method(name)
    dataplane.entry(request, name)  # noted for the metrics
    return json_response(tfserving_codec.model_status(list(dataplane.repository(request).versions(name).values())))


@router.get("/{name}/versions/{version}", **_docs(GetModelStatusResponse))
async def version_status(name: str, version: str, request: Request) -> Response:
    """Status of one version."""
    _get_of_a_method(name, version)
    return json_response(tfserving_codec.model_status([dataplane.entry(request, name, tfserving_codec.version(version))]))


@router.get("/{name}/metadata", **_docs(GetModelMetadataResponse))
async def model_metadata(name: str, request: Request) -> Response:
    """Signature of the newest ready version."""
    return json_response(tfserving_codec.model_metadata(dataplane.lookup(request, name)))


@router.get("/{name}/versions/{version}/metadata", **_docs(GetModelMetadataResponse))
async def version_metadata(name: str, version: str, request: Request) -> Response:
    """Signature of one version."""
    return json_response(tfserving_codec.model_metadata(dataplane.lookup(request, name, tfserving_codec.version(version))))
