"""The way in for inference: POSTs to the inference routes, served in one coroutine without FastAPI.

FastAPI's per-route machinery (route context, dependency solving, two exit stacks, the
exception-handling wrapper) and one ASGI layer per middleware cost more per request than
decoding, running and encoding a small request together: measured with bench/, a bare FastAPI
endpoint that only parses its body answers about a quarter as fast as a bare ASGI app. The
inference endpoints take nothing but the `Request` and string path parameters and answer a
`Response` themselves, so `FastPath`, the outermost ASGI callable, matches a POST's path against
them and does, as plain calls: request id, bearer-token check, deadline, the very same endpoint
function (any failure becomes the same `{"error": ...}` answer through `errors.to_response`), the
answer in two `send`s with its X-Request-ID, and the metrics and access line (`Observer`).
Everything else (other methods and paths) goes to the FastAPI app and its middlewares unchanged;
the routes stay declared on their routers, for the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import inspect
import time

from starlette._utils import get_route_path
from starlette.convertors import StringConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import refusal
from service.errors import to_response
from service.observe import REQUEST_ID, UNMATCHED, Observer, request_id, timeout_response


class FastPath:
    """ASGI app serving POSTs to `routes` directly; anything else goes on to `app`."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], observer: Observer, tokens: list[str] | None):
        self.app = app
        # Only endpoints that take exactly the request and the path parameters, as the router would call them.
        self.routes = [r for r in routes if "POST" in (getattr(r, "methods", None) or ())
                       and set(inspect.signature(r.endpoint).parameters) == {"request", *r.param_convertors}]
        # Each with its parameter convertors, None when all are strings (converting is then a no-op).
        self.every = [(r, None if all(type(c) is StringConvertor for c in r.param_convertors.values())
                       else r.param_convertors) for r in self.routes]
        # By the path's first segment, so a request tries only the routes that can match it (in
        # order); all of them, should a route's first segment be a parameter.
        self.by_head: dict[str, list[tuple]] | None = {}
        for entry in self.every:
            self.by_head.setdefault(_head(entry[0].path), []).append(entry)
        if any("{" in head for head in self.by_head):
            self.by_head = None
        self.observer = observer
        self.tokens = tuple(t.encode() for t in tokens) if tokens else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.match(scope)
        if found is not None:
            return await self.serve(*found, scope, receive, send)
        await self.app(scope, receive, send)

    def match(self, scope: Scope) -> tuple[BaseRoute, dict] | None:
        """The inference route of a POST and its path parameters (converted, as the router does), or None."""
        if scope["type"] == "http" and scope["method"] == "POST":
            path = get_route_path(scope)
            for route, convertors in self.every if self.by_head is None else self.by_head.get(_head(path), ()):
                match = route.path_regex.match(path)
                if match is not None:
                    params = match.groupdict()
                    if convertors is not None:
                        params = {k: convertors[k].convert(v) for k, v in params.items()}
                    return route, params
        return None

    async def serve(self, route, params: dict, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one matched request, start to finish."""
        start = time.perf_counter()
        rid = request_id(scope)
        observer = self.observer
        metrics = observer.metrics
        if metrics is not None:
            metrics.in_flight_now += 1
        deadlines = observer.deadlines
        deadline = deadlines.start() if deadlines is not None else None
        endpoint, status, started = route.path, 500, False
        try:
            try:
                response = refusal(scope, self.tokens) if self.tokens is not None else None
                if response is not None:
                    endpoint = UNMATCHED  # refused before routing, as BearerAuth does for every route
                else:
                    scope["route"], scope["endpoint"] = route, route.endpoint
                    scope["path_params"] = params
                    try:
                        response = await route.endpoint(request=Request(scope, receive), **params)
                    except Exception as exc:  # the one mapping of failures, as for every other route
                        response = to_response(exc)
                status, started = response.status_code, True
                await _answer(send, response, rid)
            except asyncio.CancelledError:
                if deadline is None or not deadline.caught():
                    raise
                if started:  # too late for a status line; end the connection
                    raise TimeoutError from None
                status = 504
                await _answer(send, timeout_response(observer.timeout), rid)
            finally:
                if deadline is not None:
                    deadlines.end(deadline)
        finally:
            if metrics is not None:
                metrics.in_flight_now -= 1
            observer.record(scope, endpoint, rid, status, time.perf_counter() - start)


def _head(path: str) -> str:
    """The first segment of a path: "v2" for "/v2/models/x/infer"."""
    return path[1:].partition("/")[0]


async def _answer(send: Send, response: Response, rid: bytes) -> None:
    # What `Response.__call__` sends, with the request id added: two messages, no background task.
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [*response.raw_headers, (REQUEST_ID, rid)]})
    await send({"type": "http.response.body", "body": response.body})
