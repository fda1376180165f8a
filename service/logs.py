"""Structured logs: one JSON object per line, for the service, uvicorn and the per-request access log.

`config(level)` is a `logging.config.dictConfig` dict; `python -m service` hands it to uvicorn,
which applies it in every worker. Building an app never touches logging (tests keep theirs).
"""

from __future__ import annotations

import logging
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
