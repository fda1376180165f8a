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

from service.errors import ServiceError

log = logging.getLogger(__name__)


def publish(app: FastAPI, change: dict) -> None:
    """Tell the metrics and the log what a (re)load did."""
    repo = app.state.repository
    if app.state.metrics is not None:
        app.state.metrics.record_models(repo.entries, change["failed"])
    if any(change.values()):
        log.info("model repository changed", extra={"fields": change})


async def reload(app: FastAPI) -> dict:
    """Load what changed under the model root and swap it in; the change summary.

    A caller that stops waiting (a request past its deadline) does not stop the reload: what it
    loads is still swapped in and published, and the next reload waits for it (the repository's
    lock is held by the reload, not by its caller)."""
    task = asyncio.ensure_future(_reload(app, app.state.repository))
    _running.add(task)
    task.add_done_callback(_running.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log_failure)  # nobody is left to hear how it ends
        raise


_running: set[asyncio.Task] = set()  # the loop holds tasks weakly: these are the reloads under way


async def _reload(app: FastAPI, repo) -> dict:
    change = await repo.refresh()
    if app.state.repository is repo:  # not shut down meanwhile
        publish(app, change)
    return change


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("model repository reload failed", exc_info=task.exception())


async def poll(app: FastAPI, seconds: float) -> None:
    """Reload every `seconds` until cancelled; a failing pass is logged and the next one tries again."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await reload(app)
        except ServiceError as exc:  # said in its message: no traceback
            log.error("model repository poll failed: %s", exc.message)
        except Exception:
            log.exception("model repository poll failed")
