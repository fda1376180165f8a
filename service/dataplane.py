"""The data plane: the one path every inference request takes, whatever its protocol.

    body (413) -> model lookup (404/503; after the decode when the body may name the model or its
    version, as on the native API) -> codec decode (400) -> the graph's input type
    (`LoadedModel.feed`, 400) -> the model's batcher, or a straight run -> post: the task's
    answer made of the output rows -> codec encode (which also gets the decoded batch, from which
    a table model's answers take their warnings: `service.codecs.columns.warnings`)

A protocol brings a `Codec` (its wire format both ways, in `service.codecs`) and a router that
calls `infer`; nothing else in this path knows one protocol from another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from service import observe
from service.batching import Post
from service.codecs.json import read_body
from service.errors import NotReady
from service.repository import LOADING, Entry, Repository
from service.runtime import LoadedModel


@dataclass(frozen=True)
class Codec:
    """What a protocol adds to the data plane; `req` is its decoded request, whatever its type."""

    parse: Callable[[bytes, dict, int], Any]  # body, ASGI scope, body limit -> req (400)
    # req, model, max rows -> float32 rows, or a table model's structured rows (runtime) (400)
    matrix: Callable[[Any, LoadedModel, int], np.ndarray]
    post: Callable[[Any, LoadedModel], Post]  # what the answer is made of the output rows
    encode: Callable[[Any, LoadedModel, Any, np.ndarray], Response]  # req, model, what `post` returned, matrix
    # When the body may name the model or version (the native API): req -> (name, version).
    target: Callable[[Any], tuple[str | None, int | str | None]] | None = None


def repository(request: Request) -> Repository:
    """The loaded model repository; 503 before the lifespan has put it in place."""
    repo = request.app.state.repository
    if repo is None:
        raise NotReady(LOADING)
    return repo


def not_ready_reason(request: Request) -> str | None:
    """Why the server should not take traffic yet (see `Repository.not_ready_reason`), or None."""
    repo = request.app.state.repository
    return LOADING if repo is None else repo.not_ready_reason()


def lookup(request: Request, name: str | None, version: int | str | None = None) -> LoadedModel:
    """The model a request means (404/503), noted on the request for its metrics and access log."""
    repo = repository(request)
    found = repo.get(repo.resolve(name), version)
    observe.note_model(request.scope, found)
    return found


def entry(request: Request, name: str, version: int | str | None = None) -> Entry:
    """A version's entry, ready or not (404), for the status and metadata routes; without a version
    the model's default, else its newest. Noted on the request, as `lookup` notes a model."""
    repo = repository(request)
    if version is not None:
        found = repo.entry(name, version)
    else:
        versions = repo.versions(name)
        found = repo.default_entry(name) or versions[max(versions)]
    observe.note_model(request.scope, found)
    return found


async def infer(request: Request, codec: Codec, name: str | None = None, version: str | None = None) -> Response:
    """Answer one inference request. The model is looked up before the body is read unless the
    body may name it or its version (`Codec.target`, without a version in the URL)."""
    state = request.app.state
    settings, bodies = state.settings, state.bodies
    model = lookup(request, name, version) if codec.target is None or version is not None else None
    req = codec.parse(await read_body(request.receive, request.scope, bodies), request.scope, bodies.limit)
    if model is None:
        named, version = codec.target(req)
        model = lookup(request, name if name is not None else named, version)
    x = model.feed(codec.matrix(req, model, settings.max_rows))
    return codec.encode(req, model, await run(request, model, x, codec.post(req, model)), x)


async def run(request: Request, model: LoadedModel, x: np.ndarray, post: Post) -> Any:
    """`post` of the model's output for `x`, through its batcher when it has one; the rows and the
    time (any wait for a batch and the answer included) are noted on the request."""
    start = time.perf_counter()
    batcher = model.batcher
    result = post(model.run(x)) if batcher is None else await batcher.submit(x, post)
    observe.note_inference(request.scope, len(x), time.perf_counter() - start)
    return result
