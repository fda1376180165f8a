"""Model updates without downtime: reload on demand and poll the model root for changes.

Both paths call `reload`, which runs `Repository.refresh` (load in a worker thread, swap on the
loop; the rules are in `service.repository`) and then publishes the outcome to the metrics and
the log. With several workers each polls on its own; POST /admin/reload reaches one worker only,
so leave polling on (the default) when running more than one.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

log = logging.getLogger(__name__)


def publish(app: FastAPI, change: dict) -> None:
    """Tell the metrics and the log what a (re)load did."""
    repo = app.state.repository
    if app.state.metrics is not None:
        app.state.metrics.record_models(repo.entries, change["failed"])
    if any(change.values()):
        log.info("model repository changed", extra={"fields": change})


async def reload(app: FastAPI) -> dict:
    """Load what changed under the model root and swap it in; the change summary."""
    change = await app.state.repository.refresh()
    publish(app, change)
    return change


async def poll(app: FastAPI, seconds: float) -> None:
    """Reload every `seconds` until cancelled; a failing pass is logged and the next one tries again."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await reload(app)
        except Exception:
            log.exception("model repository poll failed")
