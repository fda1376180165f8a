"""GET /metrics in the Prometheus text format (see `service.metrics` for what is measured)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latency, inference time, rows, in-flight, model status."""
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
