"""Model metadata: what is in the repository, each version's card, signature, status and report.

A version's training report is the `report/` folder beside its model: `report.md` and the PNGs it
shows. Only plain names matching `REPORT_FILE_RE` that are regular files listed in that folder
are served, so a name from the URL never becomes a path of its own.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from service import dataplane
from service.errors import ErrorResponse, NotFound, json_response
from service.repository import READY, Entry, Repository

router = APIRouter(tags=["models"])
# Every route reads the repository (503 until it has loaded); those naming a model or version 404.
_LOADED = {503: {"model": ErrorResponse}}
_FOUND = {404: {"model": ErrorResponse}, **_LOADED}

REPORT_DIR, REPORT_MD = "report", "report.md"
REPORT_FILE_RE = re.compile(r"^[A-Za-z0-9_-]+\.(png|md)$")
MEDIA_TYPES = {"png": "image/png", "md": "text/markdown; charset=utf-8"}


def report_files(entry: Entry) -> list[str]:
    """The servable files of a version's report folder, sorted; empty when it has none.

    A file is servable when it is a plain file (not a link) whose real path, every symlink on the
    way followed (the folder, the version, the model), lies inside the model root's real path.
    """
    folder = entry.path / REPORT_DIR
    try:
        names = sorted(p.name for p in folder.iterdir())
        root = entry.path.parents[1].resolve(strict=True)
        inside = folder.resolve(strict=True).is_relative_to(root)
    except OSError:
        return []
    return [n for n in names if inside and REPORT_FILE_RE.fullmatch(n) and (folder / n).is_file()
            and not (folder / n).is_symlink()]


def report_file(entry: Entry, file: str) -> Response:
    """One report file with its content type; 404 JSON unless it is listed by `report_files`."""
    if not REPORT_FILE_RE.fullmatch(file) or file not in report_files(entry):
        raise NotFound(f"{entry.name} version {entry.version} has no report file {file[:100]!r}; "
                       f"files: {report_files(entry)}")
    return FileResponse(entry.path / REPORT_DIR / file, media_type=MEDIA_TYPES[file.rsplit(".", 1)[1]])


def model_summary(repo: Repository, name: str) -> dict:
    """Name, task, status ("ready" if any version serves), default version and every version's status."""
    entries = sorted(repo.versions(name).values(), key=lambda e: e.version)
    default = repo.default_entry(name)
    cards = [e.card for e in ([default] if default else []) + entries[::-1] if e.card is not None]
    return {"name": name, "task": cards[0].task.value if cards else None,
            "status": READY if default else "failed",
            "default_version": default.version if default else None,
            "versions": [e.summary() for e in entries]}


def origin(entry: Entry) -> str | None:
    """What the card says the model was trained or imported as ("digits/1"): provenance only, since
    the folders decide the name and version it serves as."""
    card = entry.card
    if card is None or card.name is None:
        return None
    return card.name if card.version is None else f"{card.name}/{card.version}"


def version_detail(entry: Entry) -> dict:
    """One version: status (and reason), card without golden examples, signature from the session."""
    base = f"/models/{entry.name}/versions/{entry.version}/report"
    return {"name": entry.name, **entry.summary(), "origin": origin(entry),
            "card": entry.card.public() if entry.card else None,
            "signature": entry.model.signature() if entry.model else None,
            "report": [f"{base}/{f}" for f in report_files(entry)]}


@router.get("/models", responses=_LOADED)
async def list_models(request: Request) -> Response:
    """List every model with its task, status and versions."""
    repo = dataplane.repository(request)
    return json_response({"models": [model_summary(repo, name) for name in sorted(repo.entries)]})


@router.get("/models/{name}", responses=_FOUND)
async def describe_model(name: str, request: Request) -> Response:
    """Describe a model: its versions and the card and signature of its default version."""
    repo = dataplane.repository(request)
    dataplane.entry(request, name)  # noted for the metrics
    summary = model_summary(repo, name)
    default = repo.default_entry(name)
    detail = version_detail(default) if default else {"origin": None, "card": None, "signature": None}
    return json_response(summary | {k: detail[k] for k in ("origin", "card", "signature")})


@router.get("/models/{name}/versions/{version}", responses=_FOUND)
async def describe_version(name: str, version: str, request: Request) -> Response:
    """Describe one version: card (without golden examples), signature and status."""
    return json_response(version_detail(dataplane.entry(request, name, version)))


@router.get("/models/{name}/versions/{version}/report", response_class=Response,
            responses={200: {"content": {"text/markdown": {}}}, **_FOUND})
async def version_report(name: str, version: str, request: Request) -> Response:
    """The version's training report (report.md as text/markdown); 404 when it has none."""
    return report_file(dataplane.entry(request, name, version), REPORT_MD)


@router.get("/models/{name}/versions/{version}/report/{file}", response_class=Response,
            responses={200: {"content": {"image/png": {}, "text/markdown": {}}}, **_FOUND})
async def version_report_file(name: str, version: str, file: str, request: Request) -> Response:
    """One file (PNG or Markdown) of the version's report folder."""
    return report_file(dataplane.entry(request, name, version), file)
