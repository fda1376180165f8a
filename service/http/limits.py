"""Connection limits that uvicorn leaves to the application: how many, how slow, how large a head.

uvicorn's HTTP parser takes a request head however long it lasts and however large it grows, and
takes any number of connections. `Guard` watches each connection's bytes before uvicorn reads
them, with a parser of its own (httptools, as uvicorn's) that marks where each request head
begins and ends and adds up what it holds:

- a connection past `max_connections` (per worker) makes room by closing, with a 503, the
  connection that has waited longest for a request head (one that sent nothing, or not all of a
  head: a client that keeps connections open without using them cannot shut others out); when
  every connection is in a request, the new one is answered 503 and closed as soon as its first
  bytes show it is no health check (`PROBES`), and after its one health check it may send nothing
  more: clients holding every connection in a slow request do not fail the liveness probe, which
  would have the orchestrator restart a server that works. At most `PROBE_SLOTS` such connections
  wait for their first bytes at a time (past them, a new one is refused at once), and no new
  connection closes one of them to make room;
- a head larger than `max_head_bytes` is answered 431 and the connection closed;
- a head not complete `head_timeout` seconds after its first byte (or, for the first request,
  after the connection opened) is answered 408 and the connection closed; blank lines before a
  request line count as part of its head. Between requests on a kept-alive connection (no byte
  sent), uvicorn's own keep-alive timeout applies.

Every answer is `{"error": ...}` JSON. A request uvicorn refuses as malformed is left to uvicorn.
Each refusal is counted by its reason in `Limits.refusals` (published by `service.metrics` as
`tinyserve_connections_refused_total`) and logged with the counts so far, at most once a minute: a
burst's later refusals are in the line written when the minute is up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import httptools

from service.errors import error_body

log = logging.getLogger(__name__)
REQUEST_LINE = len(b"OPTIONS  HTTP/1.1\r\n")  # a request line beside its target, at most
LOG_EVERY = 60.0  # seconds between two log lines about refusals, at least
PROBES = (b"GET /health/", b"GET /v2/health/")  # request lines served past the connection cap
PROBE_SLOTS = 8  # connections past the cap that may wait to show they are a health check


def answer(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection; a 503 (too many connections)
    says when to try again, as the app's own 503s for a busy worker do."""
    body = error_body(message)
    retry = b"retry-after: 1\r\n" if status == 503 else b""
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s"
            b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), retry, body))


class Limits:
    """The settings, the connections open in this process, and those waiting for a head."""

    def __init__(self, max_connections: int, max_head_bytes: int, head_timeout: float):
        self.max_connections = max_connections
        self.max_head_bytes = max_head_bytes
        self.head_timeout = head_timeout
        self.open = 0
        self.extra = 0  # connections past the cap let in for a health check
        self.waiting: dict[Guard, float] = {}  # guard -> when its head began, the longest waiting first
        self._sweeping = False
        self.refusals: Counter[str] = Counter()  # connections refused, by reason
        self._logged = -LOG_EVERY  # when refusals were last logged
        self._log_due: asyncio.TimerHandle | None = None

    def refused(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        """Count a refusal, and log the counts now or, within a minute of the last line, when it is up."""
        self.refusals[reason] += 1
        if self._log_due is None:
            self._log_due = loop.call_later(max(0.0, self._logged + LOG_EVERY - time.monotonic()), self._log)

    def _log(self) -> None:
        self._logged, self._log_due = time.monotonic(), None
        counts = ", ".join(f"{why}: {n}" for why, n in sorted(self.refusals.items()))
        log.warning("connections refused since start (%s); logged at most once a minute, each counted in "
                    "tinyserve_connections_refused_total", counts)

    def wait(self, guard: Guard, loop: asyncio.AbstractEventLoop) -> None:
        """A head begins on `guard`'s connection; it is timed from now."""
        self.waiting[guard] = time.monotonic()
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self.head_timeout / 4, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # One pass over the pending heads a few times per timeout, rather than a timer per request.
        late = time.monotonic() - self.head_timeout
        for guard in [g for g, began in self.waiting.items() if began <= late]:
            guard.refuse(408, "Request Timeout", f"request head not received within {self.head_timeout:g} s",
                         "head_timeout")
        if self.waiting:
            loop.call_later(self.head_timeout / 4, self._sweep, loop)
        else:
            self._sweeping = False


class Guard:
    """One connection's watch: where heads begin and end, and their size (see the module).

    A complete head's size is what the parser hands over of it (the request target, each header
    line), so it does not depend on where chunks begin or on what came before the head in them.
    A head still arriving when a chunk ends is counted in bytes, from where it began in that
    chunk: after the body bytes the parser handed over (`on_body`) and the heads before it. That
    count only cuts a head that does not end: the framing of a chunked body and blank lines
    before a request line are not among what the parser hands over, so it errs large with them,
    and once the head is complete its own size decides.
    """

    __slots__ = ("limits", "transport", "loop", "parser", "head_bytes", "size", "ended", "body", "closed", "start",
                 "at", "requests", "first", "extra")

    def __init__(self, limits: Limits, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.limits, self.transport, self.loop = limits, transport, loop
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.head_bytes = 0  # bytes of the head being read, in the chunks before this one (0: none is)
        self.size = 0  # what the parser has handed over of that head so far
        self.ended = False  # whether a head ended within the chunk being read
        self.body = False  # whether the parser is within a request's body (where the last chunk ended)
        self.closed = False
        self.start = 0  # where in this chunk the head being read began (0: in an earlier chunk)
        self.at = 0  # how far into this chunk the parser is known to be
        self.requests = 0  # complete request heads so far
        self.first: bytes | None = None  # past the cap: its first bytes, until they show a health check
        self.extra = False  # past the cap, let in for one health check (counted in `limits.extra`)
        limits.open += 1
        if limits.open > limits.max_connections:
            idle = next((g for g in limits.waiting if not g.extra), None)  # waiting longest for a head
            if idle is not None:
                idle.refuse(503, "Service Unavailable", f"too many connections: this server takes "
                            f"{limits.max_connections} at a time, and closed this one, which had not sent a "
                            "request, to make room for another", "idle_closed")
            elif limits.extra < PROBE_SLOTS:
                self.first, self.extra = b"", True
                limits.extra += 1
            else:
                self._too_many()
                return
        limits.wait(self, loop)

    def _too_many(self) -> None:
        self.refuse(503, "Service Unavailable",
                    f"too many connections: this server takes {self.limits.max_connections} at a time",
                    "too_many_connections")

    def admit(self, data: bytes) -> bool:
        """Whether uvicorn may read `data`; False once the connection has been refused."""
        if self.closed:
            return False
        if self.first is not None:  # past the cap: a health check, or nothing
            first = self.first + data[:16]
            if first.startswith(PROBES):
                self.first = None
            elif any(probe.startswith(first) for probe in PROBES):
                self.first = first  # a request line in pieces: the next bytes tell
            else:
                self._too_many()
                return False
        self.ended = False
        parser = self.parser
        if parser is None:  # uvicorn's parser refuses what this one did: its answer, not ours
            return True
        self.start = self.at = 0
        if not self.body and self not in self.limits.waiting:  # a head begins (blank lines included)
            self.limits.wait(self, self.loop)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade header `corked.Protocol` did not take out (a head that came in pieces):
            # this server speaks HTTP/1.1 alone, and past an upgrade neither parser reads on.
            self.refuse(400, "Bad Request", "this server speaks HTTP/1.1 only: send the request without an "
                        "Upgrade header", "upgrade")
        except httptools.HttpParserError:
            self.parser = None
            self.limits.waiting.pop(self, None)
        if self in self.limits.waiting and not self.closed:  # the head goes on past this chunk
            self.head_bytes += len(data) - self.start
            self._check(self.head_bytes)
        if self.extra and self.requests > 1:  # let in past the cap for its health check alone
            self._too_many()
        return not self.closed

    def refuse(self, status: int, reason: str, message: str, why: str) -> None:
        """Answer `status` with `message`, then close the connection; counted as `why`."""
        self.limits.waiting.pop(self, None)
        if not self.closed:
            self.limits.refused(why, self.loop)
            self.closed = True
            self.parser = None
            if not self.transport.is_closing():
                self.transport.write(answer(status, reason, message))
                self.transport.close()

    def lost(self) -> None:
        """The connection is gone, whoever closed it."""
        self.limits.waiting.pop(self, None)
        self.limits.open -= 1
        if self.extra:
            self.extra = False
            self.limits.extra -= 1
        self.closed = True
        self.parser = None

    # httptools callbacks: a head begins, its target and header lines, it ends; body bytes go by;
    # the request ends.
    def on_message_begin(self) -> None:
        self.head_bytes, self.size, self.start = 0, 0, self.at
        if self not in self.limits.waiting and not self.closed:
            self.limits.wait(self, self.loop)

    def on_url(self, url: bytes) -> None:
        self.size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.size += len(name) + len(value) + 4  # "name: value\r\n"

    def on_headers_complete(self) -> None:
        self.limits.waiting.pop(self, None)
        self.ended = self.body = True
        self.requests += 1
        size = self.size + REQUEST_LINE + 2  # the request line's method and version, the blank line
        self._check(size)
        self.at = max(self.at, self.start + size - self.head_bytes)  # where the next head may begin

    def on_body(self, body: bytes) -> None:
        self.at += len(body)

    def on_message_complete(self) -> None:
        self.body = False
        self.head_bytes = 0  # no head is under way: the next chunk begins one, if anything

    def _check(self, size: int) -> None:
        if size > self.limits.max_head_bytes and not self.closed:
            self.refuse(431, "Request Header Fields Too Large",
                        f"request head exceeds {self.limits.max_head_bytes} bytes", "head_too_large")
