"""uvicorn's httptools HTTP/1.1 protocol, sending each answer in one system call.

uvicorn writes a response's head when the app sends `http.response.start` and its body when the
app sends `http.response.body`: two `write` calls, each a system call that may wake the client.
`Protocol` gives uvicorn a `CorkedTransport`, which holds the head and sends it together with
what follows as one `writelines` (a single `writev` on uvloop, which uvicorn runs here; asyncio's
own loop joins the bytes and writes once), the way Node's HTTP server corks a response:

- the request is the only one in flight: the answer leaves as soon as its body is written;
- other requests are in flight: it leaves at the end of the event-loop step, with the answers
  the same step finished (whose clients then come back together, so the next batch is fuller);
- anything written alone (a `100 Continue`, a streamed chunk) leaves at the end of the step.

Everything else about HTTP is uvicorn's: parsing, keep-alive, pipelining, flow control,
timeouts, shutdown. The bytes on the wire and their order are unchanged. Closing (or aborting)
the transport sends (or drops) what is held first, as the transport itself would. One case
differs: should the transport start closing on its own (the client half-closed) within the very
step an answer is held in, that answer is dropped where uvicorn's own protocol would have handed
it to the socket; uvicorn drops it too when the half-close comes a moment earlier.

Measured with bench/ (A/B against uvicorn's own protocol, `TINYSERVE_HTTP=httptools`): see
bench/README.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sized

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport that sends a response's head with what follows it in one call (see the module)."""

    __slots__ = ("transport", "loop", "held", "busy")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, busy: Sized = ()):
        self.transport = transport
        self.loop = loop
        self.held: list[bytes] | None = None
        self.busy = busy  # the requests in flight: with others, hold the answer until the step ends

    def write(self, data: bytes) -> None:
        if self.held is None:
            self.held = [data]
            self.loop.call_soon(self.flush)
        else:
            self.held.append(data)
            if len(self.busy) <= 1:
                self.flush()

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is held, in order, in one call."""
        held, self.held = self.held, None
        if held and not self.transport.is_closing():
            if len(held) == 1:
                self.transport.write(held[0])
            else:
                self.transport.writelines(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self.held = None
        self.transport.abort()

    def is_closing(self) -> bool:  # asked after every answer: spared the `__getattr__` detour
        return self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(map(len, self.held or ()))

    def __getattr__(self, name: str):
        return getattr(self.transport, name)  # pause_reading, resume_reading, get_extra_info, ...


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `CorkedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop, self.server_state.tasks))
