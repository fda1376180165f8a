"""Connection limits that uvicorn leaves to the application: how many, how slow, how large a head.

uvicorn's HTTP parser takes a request head however long it lasts and however large it grows, and
takes any number of connections. `Guard` watches each connection's bytes before uvicorn reads
them, with a parser of its own (httptools, as uvicorn's) that only marks where each request head
begins and ends:

- a connection past `max_connections` (per worker) is answered 503 and closed at once;
- a head larger than `max_head_bytes` is answered 431 and the connection closed;
- a head not complete `head_timeout` seconds after its first byte (or, for the first request,
  after the connection opened) is answered 408 and the connection closed. Between requests on a
  kept-alive connection, uvicorn's own keep-alive timeout applies.

Every answer is `{"error": ...}` JSON. A request uvicorn refuses as malformed is left to uvicorn.
"""

from __future__ import annotations

import asyncio
import time

import httptools
import orjson


def answer(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection."""
    body = orjson.dumps({"error": message})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body))


class Limits:
    """The settings, the connections open in this process, and those waiting for a head."""

    def __init__(self, max_connections: int, max_head_bytes: int, head_timeout: float):
        self.max_connections = max_connections
        self.max_head_bytes = max_head_bytes
        self.head_timeout = head_timeout
        self.open = 0
        self.waiting: dict[Guard, float] = {}  # guard -> when its head began
        self._sweeping = False

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
            guard.refuse(408, "Request Timeout", f"request head not received within {self.head_timeout:g} s")
        if self.waiting:
            loop.call_later(self.head_timeout / 4, self._sweep, loop)
        else:
            self._sweeping = False


class Guard:
    """One connection's watch: where heads begin and end, and their size (see the module).

    A chunk may hold the rest of one request's body, whole requests and the start of the next
    head (pipelining). So a head's size is counted from where it begins in the chunk: the bytes
    before it are body (the parser hands them to `on_body`) and the heads before it, each ending
    at its blank line. A chunked body's framing is not among what `on_body` hands over: with one,
    the next head counts from a little early, so it can only seem larger than it is.
    """

    __slots__ = ("limits", "transport", "loop", "parser", "head_bytes", "ended", "closed",
                 "data", "start", "at", "tail")

    def __init__(self, limits: Limits, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.limits, self.transport, self.loop = limits, transport, loop
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.head_bytes = 0  # bytes of the head so far in the chunks before this one
        self.ended = False  # whether a head ended within the chunk being read
        self.closed = False
        self.data = b""  # the chunk being read
        self.start = 0  # where in it the head being read began (0: in an earlier chunk)
        self.at = 0  # where in it the parser is: the end of the last head, plus body bytes since
        self.tail = b""  # the last bytes of a chunk that ended inside a head (its blank line may straddle)
        limits.open += 1
        if limits.open > limits.max_connections:
            self.refuse(503, "Service Unavailable",
                        f"too many connections: this server takes {limits.max_connections} at a time")
        else:
            limits.wait(self, loop)

    def admit(self, data: bytes) -> bool:
        """Whether uvicorn may read `data`; False once the connection has been refused."""
        if self.closed:
            return False
        self.ended = False
        parser = self.parser
        if parser is None:  # uvicorn's parser refuses what this one did: its answer, not ours
            return True
        self.data, self.start, self.at = data, 0, 0
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.parser = None  # uvicorn decides what an upgrade becomes
        except httptools.HttpParserError:
            self.parser = None
            self.limits.waiting.pop(self, None)
        self.data = b""
        if self in self.limits.waiting and not self.closed:  # the head goes on past this chunk
            self.head_bytes += len(data) - self.start
            self.tail = data[-3:]
            self._check(self.head_bytes)
        return not self.closed

    def refuse(self, status: int, reason: str, message: str) -> None:
        """Answer `status` with `message`, then close the connection."""
        self.limits.waiting.pop(self, None)
        if not self.closed:
            self.closed = True
            self.parser = None
            if not self.transport.is_closing():
                self.transport.write(answer(status, reason, message))
                self.transport.close()

    def lost(self) -> None:
        """The connection is gone, whoever closed it."""
        self.limits.waiting.pop(self, None)
        self.limits.open -= 1
        self.closed = True
        self.parser = None

    # httptools callbacks: a head begins, a head ends, body bytes go by.
    def on_message_begin(self) -> None:
        self.head_bytes, self.start = 0, self.at
        if self not in self.limits.waiting and not self.closed:
            self.limits.wait(self, self.loop)

    def on_headers_complete(self) -> None:
        self.limits.waiting.pop(self, None)
        self.ended = True
        data, start = self.data, self.start
        if self.head_bytes and start == 0 and (seam := (self.tail + data[:3]).find(b"\r\n\r\n")) >= 0:
            end = seam - len(self.tail) + 4  # the blank line began in the chunk before
        else:
            end = data.find(b"\r\n\r\n", start) + 4
        self.at = end
        self._check(self.head_bytes + end - start)

    def on_body(self, body: bytes) -> None:
        self.at += len(body)

    def _check(self, size: int) -> None:
        if size > self.limits.max_head_bytes:
            self.refuse(431, "Request Header Fields Too Large",
                        f"request head exceeds {self.limits.max_head_bytes} bytes")
