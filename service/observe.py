"""The one per-request ASGI middleware: request id, timeout, metrics and the JSON access log.

Pure ASGI rather than `BaseHTTPMiddleware`, which would cost a task and a memory stream per
request. Routes tell it what they served by writing into the ASGI scope (see `note_model` and
`note_inference`): the model looked up, the rows and the onnxruntime time. The endpoint label is
the matched route's template (`scope["route"]`, set by Starlette's router), never the raw path.

Request ids: a client's `X-Request-ID` is kept when it is 1-64 characters of `[A-Za-z0-9._:-]`,
otherwise (absent, too long, anything else) the server makes one; either way it is returned in
the `X-Request-ID` response header and logged. Bodies are never logged.

Timeout: a request still unanswered after `request_timeout_seconds` is cancelled and answered
`504 {"error": ...}`. Inference runs on the event loop, so the deadline is enforced at the next
await (reading the body, sending the answer); these networks run in microseconds, so in practice
it bounds slow clients and anything waiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import json_response
from service.logs import ACCESS
from service.metrics import NONE, Metrics

MODEL, ROWS, INFERENCE = "tinyserve.model", "tinyserve.rows", "tinyserve.inference"
REQUEST_ID = b"x-request-id"
_ID_RE = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
UNMATCHED = "unmatched"

access_log = logging.getLogger(ACCESS)


def note_model(scope: Scope, model: object) -> None:
    """Record the model a request was routed to (a `LoadedModel`)."""
    scope[MODEL] = model


def note_inference(scope: Scope, rows: int, seconds: float) -> None:
    """Record the rows run and the onnxruntime time."""
    scope[ROWS] = rows
    scope[INFERENCE] = seconds


def request_id(scope: Scope) -> bytes:
    """The client's X-Request-ID when it is safe to echo and log, else a fresh random one."""
    for key, value in scope["headers"]:
        if key == REQUEST_ID:
            return value if _ID_RE.match(value) else os.urandom(16).hex().encode()
    return os.urandom(16).hex().encode()


class Observe:
    """Wrap every HTTP request: id header, deadline, in-flight gauge, metrics and one access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None, timeout: float = 0.0, access: bool = True):
        self.app = app
        self.metrics = metrics
        self.timeout = timeout or None
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid = request_id(scope)
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, rid)]
            await send(message)

        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            if self.timeout is None:
                await self.app(scope, receive, send_with_id)
            else:
                await self._with_deadline(scope, receive, send_with_id, lambda: started)
        finally:
            if metrics is not None:
                metrics.in_flight.dec()
            self._record(scope, rid, status, time.perf_counter() - start)

    async def _with_deadline(self, scope: Scope, receive: Receive, send: Send, started) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.app(scope, receive, send)
        except TimeoutError:
            if started():  # too late for a status line; end the connection
                raise
            message = f"request took longer than {self.timeout:g} s and was cancelled"
            await json_response({"error": message}, 504)(scope, receive, send)

    def _record(self, scope: Scope, rid: bytes, status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED
        model = scope.get(MODEL)
        name, version = (model.name, str(model.version)) if model is not None else (NONE, NONE)
        rows = scope.get(ROWS)
        if self.metrics is not None:
            self.metrics.observe_request(name, version, endpoint, status, seconds)
            if rows is not None:
                self.metrics.observe_inference(name, version, endpoint, rows, scope[INFERENCE])
        if self.access and access_log.isEnabledFor(logging.INFO):
            access_log.info("request", extra={"fields": {
                "request_id": rid.decode(), "method": scope["method"], "path": endpoint, "status": status,
                "latency_ms": round(seconds * 1000, 3), "model": model.name if model else None,
                "version": model.version if model else None, "rows": rows}})
