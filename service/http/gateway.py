"""The outermost ASGI app: every HTTP request is wrapped here, once, and inference is answered here.

For every request, whatever its route: request id, bearer-token check, deadline, error mapping,
metrics and the access line. Inference POSTs (every POST route of the routers given as
`inference`) are then answered by calling their endpoint directly, as plain calls: FastAPI's
per-route machinery (dependency solving, exit stacks, its middleware layers) costs more than
decoding, running and encoding a small request. Everything else goes to the FastAPI app, which
also serves the OpenAPI document of every route, the inference ones included: the routers are
the one route table, and Starlette's own `Route.matches` picks the route in both places.

An inference endpoint takes the `Request` and its path parameters and returns a `Response`;
one that does not is refused when the gateway is built, rather than served another way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from service.auth import refusal
from service.errors import error_response, to_response
from service.observe import MODEL, REQUEST_ID, UNMATCHED, Observer, request_id, timeout_response

log = logging.getLogger(__name__)
MATCHES_KEPT = 1024
_UNKNOWN = object()
CLIENT_GONE = 499  # recorded for a request whose client left before its body arrived (nginx's code)
# How uvicorn's cancel of the requests still running at the end of a graceful shutdown reads
# (uvicorn.server; no public name): should it read otherwise, such a request gets uvicorn's 500 again.
SHUTDOWN_CANCEL = "graceful shutdown"
SHUT_DOWN = error_response("the server shut down before this request finished; send it again", 503,
                           {"connection": "close"})


class Gateway:
    """ASGI app in front of `api` (see the module docstring)."""

    def __init__(self, api: FastAPI, inference: list[APIRouter], observer: Observer, tokens: tuple[str, ...]):
        self.api = api
        self.observer = observer
        self.tokens = tuple(t.encode() for t in tokens) or None
        # By the path's first segment, so that a request tries only the routes that can match it.
        self.routes: dict[str, list[APIRoute]] = {}
        # A POST's (path, root path) -> what `_match` found: the table is fixed, so one match per path.
        self._matched: dict[tuple[str, str], tuple[APIRoute, dict] | None] = {}
        for router in inference:
            for route in router.routes:
                if "POST" in route.methods:
                    _check(route)
                    self.routes.setdefault(_head(route.path), []).append(route)

    @property
    def state(self):
        """The FastAPI app's state: settings, repository, metrics, access log."""
        return self.api.state

    @property
    def router(self):
        """The FastAPI app's router, whose lifespan loads the models."""
        return self.api.router

    def openapi(self) -> dict:
        """The OpenAPI document of every route."""
        return self.api.openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan, above all
            return await self.api(scope, receive, send)
        start = time.perf_counter()
        rid = request_id(scope)
        observer = self.observer
        metrics = observer.metrics
        if metrics is not None:
            metrics.in_flight_now += 1
        deadlines = observer.deadlines
        deadline = deadlines.start() if deadlines is not None else None
        exchange = _Exchange(send, rid)
        try:
            await self._serve(scope, receive, exchange)
        except asyncio.CancelledError as exc:
            if deadline is None or not deadline.caught():
                if SHUTDOWN_CANCEL not in str(exc):  # anyone else's cancel (an embedding caller's) is theirs
                    raise
                # uvicorn's, once a graceful shutdown has run out of time: answered (or, when its
                # answer has begun, ended) without the traceback uvicorn logs for an exception.
                asyncio.current_task().uncancel()
                log.warning("request %s cancelled: the server shut down before it finished", rid.decode())
                if exchange.status is None:
                    await exchange.answer(SHUT_DOWN)
                return
            if exchange.status is not None:  # too late for a status line; end the connection
                raise TimeoutError from None
            await exchange.answer(timeout_response(observer.timeout, scope))
        finally:
            if deadline is not None:
                deadlines.end(deadline)
            if metrics is not None:
                metrics.in_flight_now -= 1
            observer.record(scope, exchange.endpoint, rid, exchange.status or 500, time.perf_counter() - start)

    async def _serve(self, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        refused = refusal(scope, self.tokens) if self.tokens is not None else None
        if refused is not None:
            return await exchange.answer(refused)
        found = self.match(scope)
        if found is None:
            return await self._forward(scope, receive, exchange)
        route, params = found
        exchange.endpoint = route.path
        scope["app"], scope["route"], scope["endpoint"], scope["path_params"] = self.api, route, route.endpoint, params
        try:
            response = await route.endpoint(request=Request(scope, receive), **params)
        except ClientDisconnect:  # the client left mid-body: nobody to answer, nothing went wrong here
            exchange.status = CLIENT_GONE
            return
        except Exception as exc:  # the one mapping of failures, as for every other route
            response = to_response(exc)
        await exchange.answer(response)

    def match(self, scope: Scope) -> tuple[APIRoute, dict] | None:
        """The inference route of a POST and its path parameters (a fresh dict), or None."""
        if scope["method"] != "POST":
            return None
        key = (scope["path"], scope.get("root_path", ""))
        found = self._matched.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = self._match(scope)
            if len(self._matched) >= MATCHES_KEPT:  # paths are the clients' to choose: keep a bounded few
                self._matched.clear()
            self._matched[key] = found
        return None if found is None else (found[0], dict(found[1]))

    def _match(self, scope: Scope) -> tuple[APIRoute, dict] | None:
        routes = self.routes.get(_head(scope["path"]), ()) if not scope.get("root_path") else \
            [r for group in self.routes.values() for r in group]
        for route in routes:
            how, child = route.matches(scope)
            if how is Match.FULL:
                return route, child["path_params"]
        return None

    async def _forward(self, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        """Hand the request to FastAPI, whose exception handlers answer its failures. A HEAD is
        served as its GET, whose body uvicorn leaves out (RFC 9110: a server answers HEAD wherever it
        answers GET)."""
        inner = {**scope, "method": "GET"} if scope["method"] == "HEAD" else scope
        try:
            await self.api(inner, receive, exchange.send)
        except Exception as exc:
            # Starlette answers an unexpected error through `to_response` (which logs it) and
            # raises it again: answered, it ends here; half sent, the connection must end.
            if exchange.status is None:
                await exchange.answer(to_response(exc))
            elif not exchange.done:
                log.error("error after the response started", exc_info=exc)
                raise
        finally:
            route = inner.get("route")
            exchange.endpoint = getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED
            if inner is not scope and MODEL in inner:  # the model a status or metadata route looked up
                scope[MODEL] = inner[MODEL]


class _Exchange:
    """One request's way out: adds the request id, and remembers the status and the route."""

    __slots__ = ("_send", "rid", "status", "done", "endpoint")

    def __init__(self, send: Send, rid: bytes):
        self._send, self.rid = send, rid
        self.status: int | None = None
        self.done = False
        self.endpoint = UNMATCHED

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), (REQUEST_ID, self.rid)]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.done = True
        await self._send(message)

    async def answer(self, response: Response) -> None:
        """Send a complete response (no background task) in two messages."""
        self.status = response.status_code
        await self._send({"type": "http.response.start", "status": response.status_code,
                          "headers": [*response.raw_headers, (REQUEST_ID, self.rid)]})
        await self._send({"type": "http.response.body", "body": response.body})
        self.done = True


def _check(route: APIRoute) -> None:
    expected = {"request", *route.param_convertors}
    got = set(inspect.signature(route.endpoint).parameters)
    if got != expected:
        raise TypeError(f"inference route {route.path} must take exactly {sorted(expected)}, "
                        f"its endpoint takes {sorted(got)}")


def _head(path: str) -> str:
    """The first segment of a path: "v2" for "/v2/models/x/infer"."""
    return path[1:].partition("/")[0]
