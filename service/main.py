"""The app factory: settings in, FastAPI app out; the model repository loads in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import errors, logs, metrics, watcher
from service.api import admin, docs, health, models, predict, tfserving, v2
from service.api import metrics as metrics_api
from service.codecs.json import Bodies
from service.config import Settings, get_settings, package_version, unknown_variables
from service.http.gateway import Gateway
from service.observe import Observer
from service.repository import Repository

log = logging.getLogger(__name__)


def _auth_line(settings: Settings) -> tuple[int, str]:
    """What the start-up log says of auth, and at which level: on or off, how many tokens (never the
    tokens), admin. Admin without tokens lets anyone reload the models: a warning, not in passing."""
    tokens = len(settings.api_tokens)
    auth = f"auth on: {tokens} bearer token{'s' if tokens != 1 else ''}" if tokens else \
        "auth off: no TINYSERVE_API_TOKENS, every route is open"
    if settings.admin and not tokens:
        return logging.WARNING, f"{auth}; admin routes on, open to anyone: POST /admin/reload needs no token"
    return logging.INFO, f"{auth}; admin routes {'on' if settings.admin else 'off'}"


async def _stop(app: FastAPI, poller: asyncio.Task | None) -> None:
    """At shutdown: stop polling, write what is buffered (access lines, metrics), unload."""
    if poller is not None:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    if app.state.access_log is not None:
        app.state.access_log.flush()
    if app.state.metrics is not None:
        app.state.metrics.flush()
    metrics.worker_exit()
    app.state.repository = None


def create_app(settings: Settings | None = None) -> Gateway:
    """Build the app; nothing loads until the lifespan starts, so building is cheap and side-effect free."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The first load is synchronous and finishes before the server accepts a request;
        # later ones (poll, POST /admin/reload) load in a thread beside the serving versions.
        repo = Repository(settings.model_root, settings.threads, settings.default_model,
                          (settings.batch_max_size, settings.batch_max_delay_ms), settings.strict_readiness).load()
        app.state.repository = repo
        level, line = _auth_line(settings)
        log.log(level, line)
        for line in unknown_variables(os.environ) if settings.workers == 1 else ():  # else said by the parent
            log.warning(line)
        # What is alive now (modules, the app, the first models) is moved out of the collector's
        # reach, so a full collection no longer rescans it. A model holds no reference cycle: one
        # removed later is freed by its last reference, frozen or not.
        gc.freeze()
        watcher.publish(app, repo.last_change)
        poller = asyncio.create_task(watcher.poll(app, settings.poll_seconds)) if settings.poll_seconds else None
        try:
            yield
        finally:
            await _stop(app, poller)

    app = FastAPI(
        title="tinyserve",
        version=package_version(),
        description="Small Keras networks exported to ONNX, served over JSON with onnxruntime.",
        lifespan=lifespan,
        # A trailing slash is another path, answered 404 JSON like any unknown one: a redirect
        # answers an API client's POST with an empty body it does not follow.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.bodies = Bodies(settings.max_body_bytes, settings.body_budget)
    app.state.repository = None
    app.state.metrics = metrics.Metrics() if settings.metrics_enabled else None
    app.state.access_log = logs.AccessLog() if settings.access_log else None
    errors.install(app)
    inference = [predict.router, v2.router, tfserving.router]
    routers = [*inference, models.router, health.router]
    routers += [metrics_api.router] if settings.metrics_enabled else []
    routers += [admin.router] if settings.admin else []
    for router in routers:
        app.include_router(router)
    app.openapi = lambda: docs.document(app, bool(settings.api_tokens))
    observer = Observer(app.state.metrics, settings.request_timeout_seconds, app.state.access_log)
    return Gateway(app, inference, observer, settings.api_tokens)
