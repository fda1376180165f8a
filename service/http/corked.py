"""uvicorn's httptools HTTP/1.1 protocol on a corked transport: each answer in one system call.

uvicorn writes a response's head and its body in two `write` calls. `CorkedTransport` holds the
head and sends it with what follows in one `writelines` (one `writev` on uvloop), as Node's HTTP
server corks a response: a lone request's answer leaves as soon as its body is written; while
other connections owe an answer (`OWED`: a request head arrived on them, and nothing has been
sent since) it leaves at the end of the event-loop step, with the answers that step finished, so
that their clients come back together; anything written alone (a `100 Continue`) leaves at the
end of the step. A head counts from the moment it arrives, before its request starts running.
The count errs low, never high (a `100 Continue` settles its connection early; a pipelined
second request is not counted): such an answer leaves at once rather than with the others.

One request header is dropped before uvicorn parses it: `Upgrade` (`h2c`, what `curl --http2`
sends over plain HTTP, or `websocket`). The server speaks HTTP/1.1 only, and the HTTP parser stops
at an upgrade request's head, so the request would lose its body; without the header it is
served as HTTP/1.1. The scan looks at the head a chunk begins with, when no head or body is under
way as the chunk begins (as the connection guard's parser saw it): real clients send a head in
one piece. An upgrade the scan misses (a head that came in pieces, or pipelined behind a body in
one chunk) is refused by the guard with a 400 saying so, and the connection closed: past an
upgrade, neither the guard's parser nor uvicorn's reads on. uvicorn runs with no WebSocket
protocol (`service/__main__.py`), so no connection leaves this protocol (and the guard's count).

Pipelined requests are bounded: uvicorn reads on while it has requests queued on a connection
(it resumes reading after each answer), so a client that sends requests without reading the
answers would have it queue them all, without end. Once a connection has more than `PIPELINE`
requests whose answers have not begun (its heads as the guard counted them, less the answers'
heads written), reading it stops until they are down to `PIPELINE`; uvicorn's own wish to pause
(a body it has not read yet) still holds.

Everything else about HTTP is uvicorn's. Closing (or aborting) the transport sends (or drops) what
is held first. One case differs: should the client half-close within the very step an answer is
held in, that answer is dropped where uvicorn's own protocol would have handed it to the socket.

`Protocol` wraps uvicorn's protocol rather than subclassing it; uvicorn takes it by name.
What it is worth against uvicorn's own (`TINYSERVE_HTTP=httptools`) is in bench/README.md.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import get_settings
from service.http.limits import Guard, Limits


class Owed:
    """How many connections of this process owe an answer (see the module docstring)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


OWED = Owed()
PIPELINE = 32  # requests a connection may have sent and not begun to be answered, before reading stops
_ANSWER = b"HTTP/1.1 "  # how uvicorn's every answer begins: its head, written in one piece
# A whole `Upgrade` header line (any case); the scan for "pgrade" first keeps it off most data.
_HEAD_SCAN = 2048  # how far into a chunk to look for it: such heads are short, bodies may be long
_UPGRADE = re.compile(rb"\r\nupgrade[ \t]*:[^\r\n]*(?=\r\n)", re.IGNORECASE)


class CorkedTransport:
    """A transport that sends a response's head with what follows it in one call (see the module)."""

    __slots__ = ("transport", "loop", "held", "owed", "owing", "asked", "answered", "wants_pause", "full", "paused")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, owed: Owed | None = None):
        self.transport = transport
        self.loop = loop
        self.held: list[bytes] | None = None
        self.owed = Owed() if owed is None else owed  # with other answers owed, hold until the step ends
        self.owing = False  # whether this connection is counted in `owed`
        self.asked = self.answered = 0  # request heads received, answers begun
        self.wants_pause = self.full = self.paused = False  # uvicorn's wish, the pipeline's, the transport's state

    def expect(self, asked: int) -> None:
        """Request heads arrived, `asked` so far: this connection owes an answer until it next sends,
        and stops being read while too many are pipelined."""
        self.asked = asked
        if not self.owing:
            self.owing = True
            self.owed.count += 1
        if asked - self.answered > PIPELINE and not self.full:
            self.full = True
            self._reading()

    def pause_reading(self) -> None:
        self.wants_pause = True
        self._reading()

    def resume_reading(self) -> None:
        self.wants_pause = False
        self._reading()

    def _reading(self) -> None:
        paused = self.wants_pause or self.full
        if paused != self.paused:
            self.paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def settle(self) -> None:
        """This connection owes nothing (it sent, or it is gone)."""
        if self.owing:
            self.owing = False
            self.owed.count -= 1

    def write(self, data: bytes) -> None:
        if data.startswith(_ANSWER) and data[9:10] != b"1":  # an answer's head, not a 100 Continue
            self.answered += 1
            if self.full and self.asked - self.answered <= PIPELINE:
                self.full = False
                self._reading()
        if self.held is None:
            self.held = [data]
            self.loop.call_soon(self.flush)
        else:
            self.held.append(data)
            if self.owed.count <= self.owing:  # no other connection owes an answer: send now
                self.flush()

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is held, in order, in one call."""
        held, self.held = self.held, None
        if held:
            self.settle()
            if not self.transport.is_closing():
                if len(held) == 1:
                    self.transport.write(held[0])
                else:
                    self.transport.writelines(held)

    def close(self) -> None:
        self.flush()
        self.settle()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self.held = None
        self.settle()
        self.transport.abort()

    def is_closing(self) -> bool:  # asked after every answer, so not left to `__getattr__`
        return self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(map(len, self.held or ()))

    def __getattr__(self, name: str):
        return getattr(self.transport, name)  # get_extra_info, set_write_buffer_limits, ...


def limits() -> Limits:
    """This process's connection limits (`service.http.limits`), from the settings, made once."""
    global _limits
    if _limits is None:
        settings = get_settings()
        _limits = Limits(settings.max_connections, settings.max_head_bytes, settings.head_timeout_seconds)
    return _limits


_limits: Limits | None = None


def refusals() -> Mapping[str, int]:
    """The connections this process's guard refused, by reason (none before the first connection)."""
    return _limits.refusals if _limits is not None else {}


class Protocol(asyncio.Protocol):
    """uvicorn's httptools protocol on a `CorkedTransport`, behind the connection `Guard`; made as
    uvicorn makes its protocols."""

    def __init__(self, config, server_state, app_state: dict, _loop: asyncio.AbstractEventLoop | None = None):
        self.http = HttpToolsProtocol(config=config, server_state=server_state, app_state=app_state)
        self.loop = _loop or asyncio.get_event_loop()
        self.guard: Guard | None = None
        self.corked: CorkedTransport | None = None  # set once uvicorn's protocol has the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.guard = Guard(limits(), transport, self.loop)
        if not self.guard.closed:
            self.corked = CorkedTransport(transport, self.loop, OWED)
            self.http.connection_made(self.corked)

    def data_received(self, data: bytes) -> None:
        guard = self.guard
        if not guard.body and not guard.head_bytes and (data.find(b"pgrade", 0, _HEAD_SCAN) >= 0 or
                                                        data.find(b"PGRADE", 0, _HEAD_SCAN) >= 0):
            # Only the header lines of the head the chunk begins with (past any blank lines), or the
            # whole chunk when that head goes on past it.
            end = data.find(b"\r\n\r\n", len(data) - len(data.lstrip(b"\r\n")))
            head = len(data) if end < 0 else end + 2
            data = _UPGRADE.sub(b"", data[:head]) + data[head:]
        if self.guard.admit(data):
            if self.guard.ended:  # a request head is complete: its answer is now owed
                self.corked.expect(self.guard.requests)
            self.http.data_received(data)

    def eof_received(self) -> bool | None:
        return self.http.eof_received() if self.corked is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.lost()
        if self.corked is not None:
            self.corked.settle()
            self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()
