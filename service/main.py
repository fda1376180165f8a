"""The app factory: settings in, FastAPI app out; the model repository loads in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from service import errors, logs, metrics, watcher
from service.api import admin, health, models, predict, tfserving, v2
from service.api import metrics as metrics_api
from service.auth import BearerAuth
from service.config import Settings, get_settings
from service.hotpath import FastPath
from service.observe import Observe, Observer
from service.repository import Repository


def _version() -> str:
    try:
        return version("tinyserve")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


class TinyServe(FastAPI):
    """FastAPI with `FastPath` in front of its middleware stack: inference POSTs never enter it.

    Once the lifespan has started, and unless FastAPI's native OpenTelemetry support found a
    configured provider then (it checks the providers and the environment on every request:
    ~10 us), inference POSTs are matched before FastAPI's own `__call__` as well.
    """

    fast_path: dict
    direct: FastPath | None = None

    def build_middleware_stack(self):
        return FastPath(super().build_middleware_stack(), **self.fast_path)

    def go_direct(self) -> None:
        """Serve inference POSTs before FastAPI's `__call__` when no telemetry would see them."""
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        telemetry = getattr(self, "_native_telemetry", None)  # private to FastAPI: tolerate its absence
        self.direct = None if telemetry is not None and telemetry.enabled() else self.middleware_stack

    async def __call__(self, scope, receive, send) -> None:
        direct = self.direct
        if direct is not None and not self.root_path:
            found = direct.match(scope)
            if found is not None:
                scope["app"] = self  # as Starlette.__call__ does, for `request.app`
                return await direct.serve(*found, scope, receive, send)
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing loads until the lifespan starts, so building is cheap and side-effect free."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The first load is synchronous and finishes before the server accepts a request;
        # later ones (poll, POST /admin/reload) load in a thread beside the serving versions.
        repo = Repository(settings.model_root, settings.threads, settings.default_model).load()
        app.state.repository = repo
        # What is alive now (modules, app, models) lives as long as the process: moved out of the
        # collector's reach, a full collection no longer rescans it (~30% of a 256-row predict).
        gc.freeze()
        watcher.publish(app, repo.last_change)
        app.go_direct()
        poller = asyncio.create_task(watcher.poll(app, settings.poll_seconds)) if settings.poll_seconds else None
        try:
            yield
        finally:
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

    app = TinyServe(
        title="tinyserve",
        version=_version(),
        description="Small Keras networks exported to ONNX, served over JSON with onnxruntime.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.repository = None
    app.state.metrics = metrics.Metrics() if settings.metrics_enabled else None
    app.state.access_log = logs.AccessLog() if settings.access_log else None
    observer = Observer(app.state.metrics, settings.request_timeout_seconds, app.state.access_log)
    errors.install(app)
    # Added last is outermost: Observe sees every answer, the 401s and the catch-all 500s included.
    if settings.api_tokens:
        app.add_middleware(BearerAuth, tokens=settings.api_tokens)
    app.add_middleware(Observe, observer=observer)
    # In front of all of it: the inference routes skip FastAPI's per-route cost and every middleware layer.
    app.fast_path = dict(routes=[*predict.router.routes, *v2.router.routes, *tfserving.router.routes],
                         observer=observer, tokens=settings.api_tokens)
    routers = [predict.router, models.router, health.router, v2.router, tfserving.router]
    routers += [metrics_api.router] if settings.metrics_enabled else []
    routers += [admin.router] if settings.admin else []
    for router in routers:
        app.include_router(router)
    return app
