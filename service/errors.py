"""One exception tree carrying its HTTP status, and one function turning any failure into JSON.

Every error response is `{"error": "<message>"}`. FastAPI's request-validation errors become 400
(never 422), Starlette's routing errors keep their status (404 unknown route, 405 wrong method),
and anything unexpected is logged and answered `500 {"error": "internal error"}`.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A failure with a message meant for the client and the HTTP status that goes with it."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    status = 400


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class NotReady(ServiceError):
    status = 503


class JSONBytes(Response):
    """A response of ready-made JSON bytes: the same two headers Starlette's `Response` makes
    (content-length, content-type), set directly (its `init_headers` costs more than the
    onnxruntime call of a one-row predict). With extra `headers` it is a plain `Response`."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200, headers: dict | None = None):
        if headers:
            super().__init__(body, status, headers)
            return
        self.body, self.status_code, self.background = body, status, None
        self.raw_headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]


def json_response(content: object, status: int = 200, headers: dict | None = None) -> Response:
    """Encode with orjson; NaN and infinities, should any slip through, become null."""
    return JSONBytes(orjson.dumps(content), status, headers)


def to_response(exc: Exception) -> Response:
    """The one mapping from an exception to an `{"error": ...}` response."""
    if isinstance(exc, ServiceError):
        return json_response({"error": exc.message}, exc.status)
    if isinstance(exc, RequestValidationError):
        return json_response({"error": _validation_message(exc)}, 400)
    if isinstance(exc, HTTPException):
        return json_response({"error": str(exc.detail)}, exc.status_code, exc.headers)
    log.exception("unexpected error", exc_info=exc)
    return json_response({"error": "internal error"}, 500)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    return "invalid request: " + "; ".join(parts)


async def _handler(request: Request, exc: Exception) -> Response:
    return to_response(exc)


class CatchAll:
    """ASGI middleware answering JSON 500 for exceptions no handler claimed.

    Starlette's own catch-all answers plain text and then re-raises into the server, so the
    route's crash would surface twice; this one logs once and ends the request cleanly.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:  # headers are gone; all we can do is log and drop the connection
                log.exception("error after the response started", exc_info=exc)
                raise
            await to_response(exc)(scope, receive, send)


def install(app: FastAPI) -> None:
    """Route every failure through `to_response`."""
    for exc_type in (ServiceError, RequestValidationError, HTTPException):
        app.add_exception_handler(exc_type, _handler)
    app.add_middleware(CatchAll)
