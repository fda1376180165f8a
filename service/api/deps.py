"""What the lifespan put on `app.state`, for routes to fetch with a typed call.

These are plain functions rather than FastAPI `Depends`: dependency resolution costs more per
request than the onnxruntime call itself on these small networks (measured ~40 us of ~190 us
for a one-row predict), and the predict path is benchmarked against a bare endpoint.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from starlette.requests import Request

from service import inference, observe
from service.batching import Post, answer
from service.config import Settings
from service.errors import NotReady
from service.repository import Repository
from service.runtime import LoadedModel


def repository(request: Request) -> Repository:
    """The loaded model repository; 503 before the lifespan has put it in place."""
    repo = request.app.state.repository
    if repo is None:
        raise NotReady("models are still loading")
    return repo


def settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


def not_ready_reason(request: Request) -> str | None:
    """Why the server should not take traffic yet (see `Repository.not_ready_reason`), or None."""
    repo = request.app.state.repository
    return "models are still loading" if repo is None else repo.not_ready_reason()


def model(request: Request, name: str, version: int | str | None = None) -> LoadedModel:
    """`Repository.get` (404/503), noting the model on the request for its metrics and access log."""
    found = repository(request).get(name, version)
    observe.note_model(request.scope, found)
    return found


async def run(request: Request, found: LoadedModel, x: np.ndarray, post: Post | None = None) -> Any:
    """Run the model, through its batcher when batching is on, and return `post` applied to the
    output rows (`batching.answer`: once per batch for requests asking alike); note the rows and
    the time (the wait for a batch and the answer included) on the request."""
    start = time.perf_counter()
    s = request.app.state.settings
    batcher = inference.batcher(found, s.batch_max_size, s.batch_max_delay_ms)
    result = answer(post, found.run(x)) if batcher is None else await batcher.submit(x, post)
    observe.note_inference(request.scope, len(x), time.perf_counter() - start)
    return result
