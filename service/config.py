"""Service settings: one class, read from `TINYSERVE_*` environment variables."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE = Path(__file__).resolve().parent
# The default models ship inside the package, so an installed wheel serves them from anywhere;
# in a checkout service/default_models is a link to the repository's models/.
DEFAULT_MODEL_ROOT = (PACKAGE / "default_models").resolve()
# The source checkout the code runs from (bench/ and the repository's models/ are there), or None
# for an installed wheel.
CHECKOUT = PACKAGE.parent if (PACKAGE.parent / "pyproject.toml").is_file() else None


def package_version() -> str:
    """The installed distribution's version."""
    try:
        return version("tinyserve")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"
# What a bearer token may hold (RFC 6750's b64token is a subset): visible ASCII, no spaces.
TOKEN_RE = re.compile(r"[!-~]+")
Finite = Annotated[float, Field(allow_inf_nan=False)]  # "inf" would wait (or poll) forever
PENDING_BODY_BYTES = 64 * 1024 * 1024  # the bodies under way a worker holds, unless set


class Settings(BaseSettings):
    """Everything an operator can configure, e.g. `TINYSERVE_PORT=9000`."""

    model_config = SettingsConfigDict(env_prefix="TINYSERVE_", frozen=True)

    model_root: Path = Field(
        DEFAULT_MODEL_ROOT,
        description="Model repository: <model_root>/<name>/<version>/{model.onnx,card.json}.",
    )
    default_model: str | None = Field(
        None,
        description="Model used by POST /predict when the request names none. Without it, "
        "the model may be left out only when the repository holds exactly one model.",
    )
    strict_readiness: bool = Field(
        False, description="Ready only while every model found has a version serving (as Triton's "
        "--strict-readiness): a rollout whose new replicas cannot load a model stops there. Off, one bad "
        "model does not take a replica out of rotation while the others serve.",
    )
    host: str = Field("127.0.0.1", description="Interface to listen on; 0.0.0.0 exposes the server.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    threads: int = Field(
        1, ge=1, description="onnxruntime intra-op threads per model session, in each worker. 1 measures "
        "best for small networks: a run takes microseconds, less than waking a thread pool costs.",
    )
    batch_max_size: int = Field(
        64, ge=0, description="Adaptive batching: most rows run together when concurrent requests are "
        "queued for one model; 0 or 1 turns batching off. A model's serving.json "
        '(next to its versions, e.g. {"batch_max_size": 0} or {"batch_max_size": 256, "batch_max_delay_ms": 2}) '
        "overrides it.",
    )
    batch_max_delay_ms: Finite = Field(
        0.0, ge=0, description="Adaptive batching: longest a request waits for others to join its batch. "
        "0 runs the batch on the next event-loop turn, or a few turns later while each turn brings more "
        "requests: no timer, and a lone request is not held back (measured best for small networks, see "
        "bench/README.md).",
    )
    workers: int = Field(
        1, ge=1, description="uvicorn worker processes; above 1, metrics are shared through "
        "PROMETHEUS_MULTIPROC_DIR (a temporary directory unless set).",
    )
    http: Literal["corked", "httptools"] = Field(
        "corked", description="HTTP/1.1 protocol: uvicorn's httptools protocol sending each answer in one "
        "write (corked), or exactly as uvicorn ships it (httptools: the head and the body in two writes).",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and of uvicorn."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="Largest accepted request body in bytes; larger is 413."
    )
    max_pending_body_bytes: int | None = Field(
        None, ge=1, description="Most bytes of request bodies one worker holds while they arrive, all "
        "requests together (a body is held until its last byte); a request that would pass it is "
        "answered 503 with Retry-After. Unset: 64 MiB, or max_body_bytes when that is larger; set, at "
        "least max_body_bytes.",
    )
    max_rows: int = Field(4096, ge=1, description="Most rows (instances) accepted in one request.")
    max_connections: int = Field(
        1000, ge=1, description="Most open connections per worker; one more closes, with a 503, the one "
        "waiting longest for a request head, or is answered 503 and closed when every one is in a request."
    )
    max_head_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest request head (request line and headers) in bytes; "
        "larger is answered 431 and the connection closed.",
    )
    head_timeout_seconds: Finite = Field(
        10.0, gt=0, description="A request head (the first one from when the connection opens) must "
        "arrive within this many seconds, or it is answered 408 and the connection closed.",
    )
    keep_alive_seconds: Finite = Field(
        5.0, gt=0, description="An idle kept-alive connection is closed after this many seconds (uvicorn's "
        "keep-alive timeout). Behind a proxy or load balancer that keeps connections to the server "
        "open, set it longer than the proxy's idle timeout, or the proxy may send a request on a "
        "connection the server is closing (a 502).",
    )
    request_timeout_seconds: Finite = Field(
        30.0, ge=0, description="A request unanswered after this many seconds is cancelled and answered "
        "504, or 408 when its body has not all arrived; 0 disables the deadline.",
    )
    poll_seconds: Finite = Field(
        2.0, ge=0, description="How often the model root is checked for added, changed or removed "
        "versions, which load beside the running ones and swap in; 0 disables polling.",
    )
    api_tokens: Annotated[tuple[str, ...], NoDecode] = Field(
        (), repr=False, description="Bearer tokens, comma-separated or a JSON list; when set, every route "
        "except the health probes, /metrics and the API docs needs `Authorization: Bearer <token>`.",
    )
    admin_enabled: bool | None = Field(
        None, description="Serve POST /admin/reload. Unset means on exactly when api_tokens is set, so "
        "admin never runs unauthenticated unless asked for explicitly.",
    )
    graceful_shutdown_seconds: Finite = Field(
        30.0, ge=0, description="On SIGTERM, stop accepting connections and give in-flight requests up "
        "to this many seconds to finish before closing them.",
    )
    metrics_enabled: bool = Field(True, description="Collect Prometheus metrics and serve GET /metrics.")
    access_log: bool = Field(True, description="Log one JSON line per request at info level.")

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: object) -> tuple[str, ...]:
        # Fails closed: a value that is set but yields no usable token stops start-up instead of
        # turning auth off. Unset (the default) is the only way to run without tokens.
        if isinstance(value, str):
            text = value.strip()
            if not text:
                raise ValueError("is set but holds no token; unset it to run without auth")
            try:
                items = json.loads(text) if text.startswith("[") else text.split(",")
            except ValueError:
                raise ValueError("is not a JSON list of strings") from None
            if isinstance(items, list) and all(isinstance(t, str) for t in items):
                items = [t.strip() for t in items]
        elif value == ():  # the default: no tokens, no auth
            return ()
        else:
            items = value
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError("is set but holds no token; unset it to run without auth")
        for token in items:
            if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
                raise ValueError(f"must be non-empty tokens of visible ASCII characters (comma-separated "
                                 f"or a JSON list of strings); got {_shown(token)}")
        return tuple(items)

    @property
    def body_budget(self) -> int:
        """What `max_pending_body_bytes` means: its value, or unset 64 MiB or one largest body."""
        return self.max_pending_body_bytes or max(PENDING_BODY_BYTES, self.max_body_bytes)

    @model_validator(mode="after")
    def _a_body_fits(self) -> Settings:
        if self.max_pending_body_bytes is not None and self.max_pending_body_bytes < self.max_body_bytes:
            raise ValueError(f"TINYSERVE_MAX_PENDING_BODY_BYTES={self.max_pending_body_bytes} is less than "
                             f"TINYSERVE_MAX_BODY_BYTES={self.max_body_bytes}: no body of the largest size "
                             "could be received; raise it, or lower TINYSERVE_MAX_BODY_BYTES")
        return self

    @property
    def admin(self) -> bool:
        """Whether the admin routes are served (see `admin_enabled`)."""
        return bool(self.api_tokens) if self.admin_enabled is None else self.admin_enabled

    @field_validator("model_root", "default_model", "host", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        # An empty variable (a template's blank value) would mean the working directory, a model
        # named "", or every interface: refused rather than guessed at.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; unset it for the default")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def _shown(token: object) -> str:
    """A refused token's kind, never its value: settings errors end up in logs."""
    if isinstance(token, str):
        return "an empty entry" if not token else "an entry with spaces or non-ASCII characters"
    return f"an entry of JSON type {'number' if isinstance(token, (int, float)) else type(token).__name__}"


# The variables Kubernetes sets for each Service of a namespace (its "Service links"), here for a
# Service whose name begins with tinyserve (KServe's tinyserve-predictor among them).
SERVICE_LINK = re.compile(r"TINYSERVE(_\w+?)?_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each TINYSERVE_* variable that names no setting (a typo leaves its setting at the
    default), with the nearest setting's name; Kubernetes' Service links aside."""
    lines = []
    for name, nearest in _unknown(environ).items():
        hint = f" (did you mean TINYSERVE_{nearest.upper()}?)" if nearest else ""
        lines.append(f"{name} is not a setting{hint}: it is ignored")
    return lines


def _unknown(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each TINYSERVE_* variable that names no setting, with the nearest setting's name or None."""
    known = [f"TINYSERVE_{name.upper()}" for name in Settings.model_fields]
    return {name: next(iter(difflib.get_close_matches(name.removeprefix("TINYSERVE_").lower(),
                                                      list(Settings.model_fields), n=1)), None)
            for name in sorted(n.upper() for n in environ)
            if name.startswith("TINYSERVE_") and name not in known and not SERVICE_LINK.fullmatch(name)}


def _auth_misspelt(settings: Settings, environ: Mapping[str, str]) -> None:
    """Without tokens the server answers everyone: a variable that was meant to set them stops
    start-up rather than leave a server open that was meant to be closed."""
    values = {n.upper(): v for n, v in environ.items()}
    meant = [name for name, nearest in _unknown(environ).items()
             if nearest == "api_tokens" and values[name].strip() and not name.endswith("_FILE")
             and difflib.SequenceMatcher(None, name.removeprefix("TINYSERVE_"), "API_TOKENS").ratio() >= 0.85]
    if meant and not settings.api_tokens:
        raise SettingsError(f"{meant[0]} is not a setting (did you mean TINYSERVE_API_TOKENS?), and without "
                            "TINYSERVE_API_TOKENS the server would answer every client: rename it")


class SettingsError(ValueError):
    """Settings that cannot start the server, worded as one line naming each variable."""


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, read once; tests call `get_settings.cache_clear()`."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SettingsError("; ".join(map(_problem, exc.errors(include_url=False)))) from None
    _auth_misspelt(settings, os.environ)
    return settings


def _problem(error: dict) -> str:
    """One setting's problem, with the value given unless it is a secret."""
    field = ".".join(map(str, error["loc"]))
    if not field:  # a problem of several settings together: its message names them
        return error["msg"].removeprefix("Value error, ")
    shown = "" if field == "api_tokens" else f"={error.get('input')!r}"
    return f"TINYSERVE_{field.upper()}{shown}: {error['msg'].removeprefix('Value error, ')}"
