"""A short way in for the inference routes: straight from the middleware stack to the endpoint.

FastAPI's per-route machinery (route context, dependency solving, two exit stacks, the
exception-handling wrapper) costs more per request than decoding, running and encoding a small
request together: measured with bench/, a bare FastAPI endpoint that only parses its body
answers about a quarter as fast as a bare ASGI app. The inference endpoints take nothing but
the `Request` and string path parameters and answer a `Response` themselves, so for them
`HotPath` matches the path, calls the very same endpoint function and turns any failure into the
same `{"error": ...}` answer through `errors.to_response`. Everything outside it (request id,
deadline, metrics, access log, auth, body limit) still applies; the routes stay declared on
their routers, for the OpenAPI document and for every other method and path.
"""

from __future__ import annotations

import inspect

from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import to_response


class HotPath:
    """ASGI middleware serving POSTs to `routes` directly; anything else goes on to `app`."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]):
        self.app = app
        # Only endpoints that take exactly the request and the path parameters, as the router would call them.
        self.routes = [r for r in routes if "POST" in (getattr(r, "methods", None) or ())
                       and set(inspect.signature(r.endpoint).parameters) == {"request", *r.param_convertors}]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = get_route_path(scope)
            for route in self.routes:
                match = route.path_regex.match(path)
                if match is not None:
                    params = {k: route.param_convertors[k].convert(v) for k, v in match.groupdict().items()}
                    return await self._serve(route, params, scope, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(route, params: dict, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"], scope["path_params"], scope["endpoint"] = route, params, route.endpoint
        try:
            response = await route.endpoint(request=Request(scope, receive), **params)
        except Exception as exc:  # the one mapping of failures, as for every other route
            response = to_response(exc)
        await response(scope, receive, send)
