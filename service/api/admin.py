"""Admin routes, served only when `Settings.admin` is on (by default: when api_tokens is set)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import dataplane, watcher
from service.errors import ErrorResponse, json_response

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/reload", responses={503: {"model": ErrorResponse}})
async def reload(request: Request) -> Response:
    """Reload the model root now: what was added, replaced, removed and what failed to load."""
    dataplane.repository(request)
    return json_response(await watcher.reload(request.app))
