"""The OpenAPI document at /openapi.json: FastAPI's, with what FastAPI assumes put right.

FastAPI documents a 422 for every route with parameters; this service never sends one (a request
it cannot read is a 400, see `service.errors`), so the 422s and their schemas go. With tokens set,
every route but the open ones (`service.auth`) may answer 401, which is added to each.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.auth import OPEN_PATHS

ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def document(app: FastAPI, auth: bool) -> dict:
    """The document, made once per app (FastAPI's documented way to change it: `app.openapi`)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        for path, item in schema["paths"].items():
            for operation in item.values():
                responses = operation["responses"]
                responses.pop("422", None)
                if auth and path not in OPEN_PATHS:
                    responses["401"] = {"description": "Missing or invalid bearer token", **ERROR}
        for unsent in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unsent, None)
        app.openapi_schema = schema
    return app.openapi_schema
