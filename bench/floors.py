"""The two floor servers the service is measured against, served by the same uvicorn.

- `raw`: a bare ASGI app that reads the body and answers a constant: the cost of uvicorn alone.
- `fastapi`: a bare FastAPI endpoint that parses the body with orjson and answers a constant:
  the cost of the framework and of JSON decoding, with no validation, model or encoding.

Both answer every POST path, so the same wrk script drives them and the service alike.
`python -m bench.floors raw|fastapi PORT` serves one.
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

ANSWER = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def raw(scope, receive, send) -> None:
    """Read the whole body, answer the constant."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def fastapi_app():
    """One catch-all POST endpoint: orjson-parse the body, answer the constant."""
    app = FastAPI()

    @app.post("/{path:path}")
    async def endpoint(path: str, request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(ANSWER, media_type="application/json")

    return app


def serve(kind: str, port: int, workers: int = 1) -> None:
    """The uvicorn options every bench server shares: uvloop, httptools, no access log."""
    app = {"raw": "bench.floors:raw", "fastapi": "bench.floors:fastapi_app"}[kind]
    uvicorn.run(app, factory=kind == "fastapi", host="127.0.0.1", port=port, workers=workers,
                loop="uvloop", http="httptools", log_level="warning", access_log=False)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1)
