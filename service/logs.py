"""Structured logs: one JSON object per line, for the service, uvicorn and the per-request access log.

`config(level)` is a `logging.config.dictConfig` dict; `python -m service` hands it to uvicorn,
which applies it in every worker. Building an app never touches logging (tests keep theirs).

The access log is the exception, since it writes a line per request: `AccessLog` writes the very
same JSON line (same fields and order as `JsonFormatter` would give) into a buffer that goes to
stderr in one write `FLUSH_SECONDS` after its first line, beyond `FLUSH_BYTES`, and at shutdown
(the lifespan calls `flush`). It writes while the `tinyserve.access` logger is enabled at info.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import orjson

ACCESS = "tinyserve.access"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...}`; an access record's `fields` dict is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": _iso(record.created), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


FLUSH_SECONDS = 0.2
FLUSH_BYTES = 64 * 1024
_ACCESS_HEAD = orjson.dumps({"level": "info", "logger": ACCESS, "msg": "request"})[1:-1]


class AccessLog:
    """Buffered JSON access lines on stderr; see the module docstring."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS)
        self._buffer = bytearray()
        self._handle: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = b""
        self._ms = -1
        self._head = b""  # the line up to the request's own fields, remade once a millisecond

    def enabled(self) -> bool:
        """Whether lines are wanted now (logging's own cached level check)."""
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict) -> None:
        """Buffer one access line: `{"ts", "level", "logger", "msg", **fields}`, the bytes orjson
        gives for that dict, made from a cached head and the encoded `fields`."""
        ms = int(time.time() * 1000)
        if ms != self._ms:
            second, self._ms = ms // 1000, ms
            if second != self._second:  # strftime once a second, not once a line
                self._second = second
                self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
            self._head = b'{"ts":"%s.%03dZ",%s,' % (self._stamp, ms % 1000, _ACCESS_HEAD)
        buffer = self._buffer
        buffer += self._head
        buffer += memoryview(orjson.dumps(fields, default=str, option=orjson.OPT_APPEND_NEWLINE))[1:]
        if len(buffer) >= FLUSH_BYTES:
            self.flush()
        elif self._handle is None:
            try:
                self._handle = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop (a direct call): write now
                self.flush()

    def flush(self) -> None:
        """Write every buffered line to stderr now (its byte stream when it has one: no decoding)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._buffer:
            data, self._buffer = self._buffer, bytearray()
            stream = sys.stderr  # looked up now, so redirections (and pytest's capture) apply
            raw = getattr(stream, "buffer", None)
            stream.flush()  # whatever logging wrote before goes first
            if raw is not None:
                raw.write(data)
                raw.flush()
            else:
                stream.write(data.decode())
                stream.flush()


def config(level: str) -> dict:
    """Everything (root, uvicorn, our access log) as JSON lines on stderr at `level`."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {name: {"handlers": [], "level": level, "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "service", ACCESS)},
    }
