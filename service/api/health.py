"""Liveness and readiness probes; readiness rules are in `service.repository`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import dataplane
from service.errors import ErrorResponse, error_response, json_response
from service.repository import FAILED

router = APIRouter(tags=["health"])


class NotReadyResponse(ErrorResponse):
    """Why the server is not ready, and every version that failed to load with its reason."""

    failed: dict[str, str]


@router.get("/health/live")
async def live() -> Response:
    """Liveness: the process is up and answering."""
    return json_response({"status": "live"})


@router.get("/health/ready", responses={503: {"model": NotReadyResponse}})
async def ready(request: Request) -> Response:
    """Readiness: 200 once models serve, else 503; failed versions are listed either way."""
    repo, reason = request.app.state.repository, dataplane.not_ready_reason(request)
    failed = {} if repo is None else {
        f"{name}/{v}": e.reason for name, versions in repo.entries.items()
        for v, e in versions.items() if e.status == FAILED}
    if reason is not None:
        return error_response(f"not ready: {reason}", 503, failed=failed)
    serving = {name: e.version for name in repo.entries if (e := repo.default_entry(name))}
    return json_response({"status": "ready", "serving": serving, "failed": failed})
