"""The app factory: settings in, FastAPI app out; the model repository loads in the lifespan."""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from service import errors
from service.api import health, models, predict, tfserving, v2
from service.config import Settings, get_settings
from service.repository import Repository


def _version() -> str:
    try:
        return version("tinyserve")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing loads until the lifespan starts, so building is cheap and side-effect free."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Loading is synchronous and finishes before the server accepts a request.
        app.state.repository = Repository(settings.model_root, settings.threads, settings.default_model).load()
        yield
        app.state.repository = None

    app = FastAPI(
        title="tinyserve",
        version=_version(),
        description="Small Keras networks exported to ONNX, served over JSON with onnxruntime.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.repository = None
    errors.install(app)
    for router in (predict.router, models.router, health.router, v2.router, tfserving.router):
        app.include_router(router)
    return app
