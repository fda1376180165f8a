"""Admin routes, served only when `Settings.admin` is on (by default: when api_tokens is set)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import dataplane, watcher
from service.errors import ErrorResponse, json_response

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/reload", responses={503: {"model": ErrorResponse}})
async def reload(request: Request) -> Response:
    """Reload the model root now: what was added, replaced, removed, what failed to load, and the
    folders that could not be read (their models are left as they were)."""
    repo = dataplane.repository(request)
    change = await watcher.reload(request.app)
    return json_response(change | {"unreadable": {str(folder): why for folder, why in repo.unreadable.items()}})
