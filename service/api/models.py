"""Model metadata: what is in the repository, each version's card, signature and status."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import deps
from service.errors import json_response
from service.repository import READY, Entry, Repository

router = APIRouter(tags=["models"])


def model_summary(repo: Repository, name: str) -> dict:
    """Name, task, status ("ready" if any version serves), default version and every version's status."""
    entries = sorted(repo.versions(name).values(), key=lambda e: e.version)
    default = repo.default_entry(name)
    cards = [e.card for e in ([default] if default else []) + entries[::-1] if e.card is not None]
    return {"name": name, "task": cards[0].task.value if cards else None,
            "status": READY if default else "failed",
            "default_version": default.version if default else None,
            "versions": [e.summary() for e in entries]}


def version_detail(entry: Entry) -> dict:
    """One version: status (and reason), card without golden examples, signature from the session."""
    return {"name": entry.name, **entry.summary(),
            "card": entry.card.public() if entry.card else None,
            "signature": entry.model.signature() if entry.model else None}


@router.get("/models")
async def list_models(request: Request) -> Response:
    """List every model with its task, status and versions."""
    repo = deps.repository(request)
    return json_response({"models": [model_summary(repo, name) for name in sorted(repo.entries)]})


@router.get("/models/{name}")
async def describe_model(name: str, request: Request) -> Response:
    """Describe a model: its versions and the card and signature of its default version."""
    repo = deps.repository(request)
    summary = model_summary(repo, name)
    default = repo.default_entry(name)
    detail = version_detail(default) if default else {"card": None, "signature": None}
    return json_response(summary | {"card": detail["card"], "signature": detail["signature"]})


@router.get("/models/{name}/versions/{version}")
async def describe_version(name: str, version: str, request: Request) -> Response:
    """Describe one version: card (without golden examples), signature and status."""
    return json_response(version_detail(deps.repository(request).entry(name, version)))
