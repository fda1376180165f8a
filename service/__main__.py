"""`python -m service`: serve the model repository with uvicorn, configured by TINYSERVE_* variables
and `tinyserve serve`'s flags (`python -m service --help`).

`tinyserve serve` runs this same `main`, so every way to start the server gets the same JSON log
lines, the same HTTP protocol and the same settings.
"""

from __future__ import annotations

import logging.config
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import Settings

# The server's modules (uvicorn, FastAPI, onnxruntime) are imported where they are used, so that
# `--help`, a bad flag or an early Ctrl-C need none of them (`python -m service` runs this file
# before anything else).

STARTUP_FAILURE = 3  # uvicorn's status when one worker fails to start
HTTP_PROTOCOLS = {"corked": "service.http.corked:Protocol", "httptools": "httptools"}


def main(prog: str = "python -m service") -> int:
    """Read the settings, build the app and serve it until interrupted; a bad setting is one line."""
    from service.config import SettingsError, get_settings

    try:
        settings = get_settings()
        serve(settings)
    except SettingsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except WorkerFailed as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    return 0


def serve(settings: Settings) -> None:
    """Run uvicorn with the service's log format and HTTP protocol, in one process or several."""
    import uvicorn

    from service import logs
    from service.config import SettingsError, unknown_variables
    from service.main import create_app

    _check_address(settings.host, settings.port)
    workers = settings.workers
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if shared and not (os.path.isdir(shared) and os.access(shared, os.W_OK | os.X_OK)):
        # prometheus-client would fail on it in every worker, with a traceback each
        raise SettingsError(f"PROMETHEUS_MULTIPROC_DIR={shared!r}: not a writable directory; create it, or "
                            f"unset it (several workers then share a temporary one)")
    options = dict(host=settings.host, port=settings.port, log_level=settings.log_level,
                   log_config=logs.config(settings.log_level), access_log=False,  # ours is the access log
                   timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
                   timeout_keep_alive=settings.keep_alive_seconds,
                   server_header=False,  # no "server: uvicorn" on every answer; the date header stays
                   ws="none",  # no route speaks WebSocket: see service/http/corked.py
                   http=HTTP_PROTOCOLS[settings.http])
    # uvicorn raises the signal it caught again once it has shut down gracefully; answered here, a
    # SIGTERM ends with status 0 and Ctrl-C with 130, neither with a traceback.
    signal.signal(signal.SIGTERM, _exit_with(0))
    signal.signal(signal.SIGINT, _exit_with(130))
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    # A misspelt variable is said once, here, rather than by every worker.
    logging.config.dictConfig(options["log_config"])
    for line in unknown_variables(os.environ):
        logging.getLogger("service").warning(line)
    # Workers are fresh processes: they see this variable before importing prometheus_client,
    # so each writes its metrics to files there and /metrics sums them all.
    own_dir = None
    if not shared:
        try:
            own_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tinyserve-metrics-")
        except OSError as exc:  # a read-only filesystem without a writable /tmp
            raise SettingsError(f"TINYSERVE_WORKERS={workers}: the workers share their metrics through files, "
                                f"and no temporary directory is writable ({exc}); mount one at /tmp, or "
                                f"set PROMETHEUS_MULTIPROC_DIR to a writable directory") from None
    try:
        stopped_by = _signals_during(lambda: uvicorn.run("service.main:create_app", factory=True, workers=workers,
                                                         **options))
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    _exit_as_one_worker(stopped_by)


def _signals_during(run) -> bytes:
    """Run `run`; the signals the process received meanwhile (signal.set_wakeup_fd's bytes).

    uvicorn's supervisor of workers answers SIGINT and SIGTERM with its own handlers and returns as
    it does when a worker fails to start (it then stops the others): what it received tells the two
    apart."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    try:
        run()
    finally:
        signal.set_wakeup_fd(previous)
        try:
            received = os.read(read, 4096)
        except BlockingIOError:
            received = b""
        os.close(read)
        os.close(write)
    return received


def _exit_as_one_worker(received: bytes) -> None:
    """End as one worker would: SIGINT with 130, SIGTERM with 0, a worker that failed to start with
    uvicorn's start-up failure status (its log said why)."""
    if signal.SIGINT in received:
        raise SystemExit(130)
    if signal.SIGTERM not in received:
        raise WorkerFailed("a worker failed to start (its log above says why); the others were stopped")


class WorkerFailed(Exception):
    """A worker process ended before it served; uvicorn stopped the others."""


def _check_address(host: str, port: int) -> None:
    """Before the models load: a host that does not resolve, or a port another server holds, is a
    setting's error, named as one."""
    from service.config import SettingsError

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise SettingsError(f"TINYSERVE_HOST={host!r}: {exc}") from None
    problem = _unlistenable(addresses)
    if problem:
        raise SettingsError(f"cannot listen on {host}:{port}: {problem}")


def _unlistenable(addresses: list[tuple]) -> str | None:
    """Why one of the addresses cannot be bound, as asyncio's server binds each of them (address
    reuse on, an IPv6 socket for IPv6 only), or None."""
    for family, kind, proto, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc.strerror or str(exc)
    return None


def _exit_with(status: int):
    def stop(signum, frame):
        raise SystemExit(status)
    return stop


if __name__ == "__main__":
    try:
        from service import cli

        sys.exit(cli.serve(sys.argv[1:], prog="python -m service"))
    except KeyboardInterrupt:  # before the server's own handler is in place
        print("python -m service: interrupted", file=sys.stderr)
        sys.exit(130)
