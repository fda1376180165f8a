"""What every request records, and the deadline it runs under (`service.http.gateway` applies them).

Routes tell it what they served by writing into the ASGI scope (see `note_model` and
`note_inference`): the model looked up, the rows and the model time. The endpoint label is the
matched route's template, never the raw path.

Request ids: a client's `X-Request-ID` is kept when it is 1-64 characters of `[A-Za-z0-9._:-]`,
otherwise (absent, too long, anything else) the server makes one (32 hex digits); either way it
is returned in the `X-Request-ID` response header and logged. Bodies are never logged.

Timeout: a request still unanswered after `request_timeout_seconds` is cancelled and answered
`504 {"error": ...}`, or `408` (and the connection closed) when its body was still arriving.
Inference runs on the event loop, so the deadline is enforced at the next await (reading the
body, sending the answer); these networks run in microseconds, so in practice it bounds slow
clients and anything waiting. `Deadlines` sweeps the requests in flight every tenth of the
deadline (at most 50 ms apart) while any are, instead of arming a timer per request.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re

from starlette.responses import Response
from starlette.types import Scope

from service.errors import error_response
from service.logs import AccessLog
from service.metrics import NONE, Metrics

MODEL, ROWS, INFERENCE = "tinyserve.model", "tinyserve.rows", "tinyserve.inference"
BODY_LATE = "tinyserve.body_late"  # the deadline came while the body was still arriving (`read_body`)
REQUEST_ID = b"x-request-id"
_ID_RE = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
UNMATCHED = "unmatched"


def note_model(scope: Scope, model: object) -> None:
    """Record the model a request was routed to (a `LoadedModel`)."""
    scope[MODEL] = model


def note_inference(scope: Scope, rows: int, seconds: float) -> None:
    """Record the rows run and the model time (`service.dataplane.run`)."""
    scope[ROWS] = rows
    scope[INFERENCE] = seconds


def request_id(scope: Scope) -> bytes:
    """The client's X-Request-ID when it is safe to echo and log, else a fresh one (`new_id`)."""
    for key, value in scope["headers"]:
        if key == REQUEST_ID:
            return value if _ID_RE.fullmatch(value) else new_id()
    return new_id()


def new_id() -> bytes:
    """A fresh request id: 16 hex digits drawn once per process, then a 16-digit hex counter.

    Unique across workers and restarts (the random half) and within a process (the counter),
    without a `getrandom` system call per request.
    """
    return b"%s%016x" % (_id_prefix, next(_id_count))


def _new_id_prefix() -> None:
    global _id_prefix, _id_count
    _id_prefix, _id_count = os.urandom(8).hex().encode(), itertools.count()


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker draws its own half


class Deadline:
    """One request's deadline: its task, when it expires and whether it did."""

    __slots__ = ("task", "expires", "expired")

    def __init__(self, task: asyncio.Task, expires: float):
        self.task, self.expires, self.expired = task, expires, False

    def caught(self) -> bool:
        """In `except CancelledError`: True (and the cancel undone) when the deadline caused it."""
        if self.expired:
            self.task.uncancel()
        return self.expired


class Deadlines:
    """Cancel requests still running `seconds` after they started (then answered 504, or 408).

    One sweep over the requests in flight every `seconds / 10` (at most 50 ms) while any are,
    rather than a timer per request: a request costs a set insert and removal, and expires at
    most one sweep interval late.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.tick = min(seconds / 10, 0.05)
        self.running: set[Deadline] = set()
        self._sweeping: asyncio.AbstractEventLoop | None = None  # the loop a sweep is scheduled on

    def start(self) -> Deadline:
        """Register the current task's request."""
        loop = asyncio.get_running_loop()
        deadline = Deadline(asyncio.current_task(loop), loop.time() + self.seconds)
        self.running.add(deadline)
        if self._sweeping is not loop:
            self._sweeping = loop
            loop.call_later(self.tick, self._sweep, loop)
        return deadline

    def end(self, deadline: Deadline) -> None:
        """The request is over, answered or not."""
        self.running.discard(deadline)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for deadline in self.running:
            if not deadline.expired and deadline.expires <= now:
                deadline.expired = True
                deadline.task.cancel()
        if self.running:
            loop.call_later(self.tick, self._sweep, loop)
        else:
            self._sweeping = None


def timeout_response(seconds: float, scope: Scope) -> Response:
    """The answer of a request cancelled by its deadline: 408 when its body had not all arrived
    (the client was slow), 504 otherwise."""
    if scope.get(BODY_LATE):  # the rest of the body may never come: the connection ends with the answer
        return error_response(f"the request body did not arrive within {seconds:g} s", 408, {"connection": "close"})
    return error_response(f"request took longer than {seconds:g} s and was cancelled", 504)


class Observer:
    """What every request records: metrics, one access-log line; and the deadline it runs under."""

    def __init__(self, metrics: Metrics | None, timeout: float = 0.0, access: AccessLog | None = None):
        self.metrics = metrics
        self.timeout = timeout or None
        self.deadlines = Deadlines(timeout) if timeout else None
        self.access = access

    def record(self, scope: Scope, endpoint: str, rid: bytes, status: int, seconds: float) -> None:
        """Count the request in the metrics and write its access line."""
        model = scope.get(MODEL)
        rows = scope.get(ROWS)
        if self.metrics is not None:
            name, version = (model.name, str(model.version)) if model is not None else (NONE, NONE)
            self.metrics.observe(name, version, endpoint, status, seconds, rows, scope.get(INFERENCE))
        if self.access is not None and self.access.enabled():
            client = scope.get("client")
            self.access.write({
                "request_id": rid.decode(), "client": client[0] if client else None,
                "method": scope["method"], "path": endpoint, "status": status,
                "latency_ms": int(seconds * 1e6 + 0.5) / 1000, "model": model.name if model else None,
                "version": model.version if model else None, "rows": rows})
