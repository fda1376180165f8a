"""Fixtures in layers: model root -> settings -> app -> client, plus a real server process."""

from __future__ import annotations

import os

import pytest

from service.config import Settings, get_settings
from service.main import create_app
from tests.service import helpers


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_tinyserve_env(monkeypatch):
    """A developer's TINYSERVE_* variables must not leak into tests."""
    for key in [k for k in os.environ if k.startswith("TINYSERVE_")]:
        monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    """The standard tiny repository; read-only, so tests may share it."""
    return helpers.standard_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture
def settings(model_root):
    return Settings(model_root=model_root, max_rows=100, max_body_bytes=64 * 1024)


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
async def client(app):
    async with helpers.serve(app) as client:
        yield client


@pytest.fixture(scope="session")
def server_url(model_root, tmp_path_factory):
    """A real `python -m service` on a free loopback port, serving the standard repository."""
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_MAX_BODY_BYTES": str(64 * 1024),
           "TINYSERVE_LOG_LEVEL": "warning"}
    with helpers.running_server(env, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url
