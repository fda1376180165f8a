"""Typed dependencies handing routes what the lifespan put on `app.state`.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.errors import NotReady
from service.repository import Repository


async def repository(request: Request) -> Repository:
    """The loaded model repository; 503 before the lifespan has put it in place."""
    repo = getattr(request.app.state, "repository", None)
    if repo is None:
        raise NotReady("models are still loading")
    return repo


async def settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


Repo = Annotated[Repository, Depends(repository)]
Config = Annotated[Settings, Depends(settings)]
