"""Open Inference Protocol (KServe V2) REST routes, as Triton and KServe clients call them.

Inference goes through `dataplane.infer` with the V2 codec; the wire rules are in `service.codecs.v2`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import dataplane
from service.codecs import v2 as v2_codec
from service.errors import NotReady, json_response
from service.types.v2 import (ErrorResponse, InferenceRequest, InferenceResponse, MetadataModelResponse,
                              MetadataServerResponse, ModelReadyResponse, ServerLiveResponse,
                              ServerReadyResponse)

router = APIRouter(prefix="/v2", tags=["v2"])


def _docs(ok: type, body: type | None = None) -> dict:
    errors = {status: {"model": ErrorResponse} for status in (400, 404, 503)}
    extra = {"openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline(body.model_json_schema()) if body else {}}}}}}
    return {"responses": {200: {"model": ok}, **errors}, "response_class": Response, **(extra if body else {})}


def _inline(schema: dict, defs: dict | None = None) -> object:
    """Replace pydantic's local `$defs` references, which mean nothing inside an OpenAPI document."""
    defs = schema.pop("$defs", {}) if defs is None else defs
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(dict(defs[schema["$ref"].rsplit("/", 1)[-1]]), defs)
        return {k: _inline(v, defs) for k, v in schema.items()}
    return [_inline(v, defs) for v in schema] if isinstance(schema, list) else schema


@router.get("/health/live", **_docs(ServerLiveResponse))
async def live() -> Response:
    """Server live: the process is up and answering."""
    return json_response({"live": True})


@router.get("/health/ready", **_docs(ServerReadyResponse))
async def ready(request: Request) -> Response:
    """Server ready: 200 once models serve (the rules of /health/ready), else 503."""
    reason = dataplane.not_ready_reason(request)
    if reason is not None:
        raise NotReady(f"not ready: {reason}")
    return json_response({"ready": True, "live": True})


@router.get("", **_docs(MetadataServerResponse))
@router.get("/", include_in_schema=False)
async def server_metadata(request: Request) -> Response:
    """Server metadata: name, version and the supported extensions."""
    return json_response(v2_codec.server_metadata(request.app.version))


@router.get("/models/{name}", **_docs(MetadataModelResponse))
async def model_metadata(name: str, request: Request) -> Response:
    """Model metadata of the newest ready version."""
    return _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", **_docs(MetadataModelResponse))
async def version_metadata(name: str, version: str, request: Request) -> Response:
    """Model metadata of one version."""
    return _metadata(request, name, version)


@router.get("/models/{name}/ready", **_docs(ModelReadyResponse))
async def model_ready(name: str, request: Request) -> Response:
    """Model ready: 200 when a version serves, 404 unknown model, 503 none ready."""
    return json_response({"name": dataplane.lookup(request, name).name, "ready": True})


@router.get("/models/{name}/versions/{version}/ready", **_docs(ModelReadyResponse))
async def version_ready(name: str, version: str, request: Request) -> Response:
    """Model ready for one version: 200, 404 unknown model or version, 503 failed to load."""
    return json_response({"name": dataplane.lookup(request, name, version).name, "ready": True})


@router.post("/models/{name}/infer", **_docs(InferenceResponse, InferenceRequest))
async def infer(name: str, request: Request) -> Response:
    """Inference with the newest ready version."""
    return await dataplane.infer(request, v2_codec.CODEC, name)


@router.post("/models/{name}/versions/{version}/infer", **_docs(InferenceResponse, InferenceRequest))
async def infer_version(name: str, version: str, request: Request) -> Response:
    """Inference with one version."""
    return await dataplane.infer(request, v2_codec.CODEC, name, version)


def _metadata(request: Request, name: str, version: str | None) -> Response:
    model = dataplane.lookup(request, name, version)  # noted for the metrics, as inference notes it
    return json_response(v2_codec.model_metadata(model, dataplane.repository(request).ready_versions(name)))
