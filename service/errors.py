"""One exception tree carrying its HTTP status, and the one place an error body is made.

Every error body is `error_body(...)`: `{"error": "<message>"}` (in a response made by
`error_response`; the connection guard writes its few answers to the socket itself). FastAPI's
request-validation errors become 400 (never 422), Starlette's routing errors keep their status
(404 unknown route, 405 wrong method), and anything unexpected is logged and answered
`500 {"error": "internal error"}`.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)
MESSAGE_LIMIT = 2000  # characters of an error message; beyond it a message is mostly what it quotes of the request


class ServiceError(Exception):
    """A failure with a message meant for the client and the HTTP status that goes with it."""

    status = 500
    headers: dict | None = None  # sent with the answer

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    status = 400


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class UnsupportedMediaType(ServiceError):
    status = 415


class NotReady(ServiceError):
    status = 503


class Busy(ServiceError):
    """A limit of the whole worker, not of the request: the same request may pass in a moment."""

    status = 503
    headers = {"retry-after": "1"}


class ErrorResponse(BaseModel):
    """The body of every failure, whatever its status or protocol: the V2 spec's
    $inference_error_response and TF Serving's error object have this one field too."""

    model_config = ConfigDict(extra="forbid")

    error: str


def json_bytes(body: bytes, status: int = 200, headers: dict | None = None) -> Response:
    """A response of ready-made JSON bytes."""
    return Response(body, status, headers, media_type="application/json")


def json_response(content: object, status: int = 200, headers: dict | None = None) -> Response:
    """Encode with orjson; NaN and infinities, should any slip through, become null."""
    return json_bytes(orjson.dumps(content), status, headers)


def error_body(message: str, **extra: object) -> bytes:
    """The error body every failure is answered with; `extra` fields follow the message, which is
    cut after `MESSAGE_LIMIT` characters (what a message quotes of a request may be most of it)."""
    if len(message) > MESSAGE_LIMIT:
        message = f"{message[:MESSAGE_LIMIT]}... ({len(message) - MESSAGE_LIMIT} more characters)"
    return orjson.dumps({"error": message, **extra})


def error_response(message: str, status: int, headers: dict | None = None, **extra: object) -> Response:
    """A failure's answer: `error_body` with `status`."""
    return json_bytes(error_body(message, **extra), status, headers)


def to_response(exc: Exception) -> Response:
    """The one mapping from an exception to an error response."""
    if isinstance(exc, ServiceError):
        return error_response(exc.message, exc.status, exc.headers)
    if isinstance(exc, RequestValidationError):
        return error_response(_validation_message(exc), 400)
    if isinstance(exc, HTTPException):
        return error_response(str(exc.detail), exc.status_code, exc.headers)
    log.exception("unexpected error", exc_info=exc)
    return error_response("internal error", 500)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    return "invalid request: " + "; ".join(parts)


async def _handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 404 and exc.detail == "Not Found":
        # Starlette's answer for a path no route matches (the path is the client's own: not echoed)
        slash = " (paths end without '/')" if request.url.path.endswith("/") and request.url.path != "/" else ""
        return error_response(f"no route matches this {request.method} request's path{slash}; the API is listed "
                              "at /docs", 404)
    return to_response(exc)


def install(app: FastAPI) -> None:
    """Answer every failure FastAPI sees through `to_response`, unexpected ones included."""
    for exc_type in (ServiceError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(exc_type, _handler)
