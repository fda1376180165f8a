"""`python -m service`: serve the model repository with uvicorn, configured by TINYSERVE_* variables.

`tinyserve serve` runs this same `main`, so every way to start the server gets the same JSON log
lines, the same HTTP protocol and the same settings.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import uvicorn
from pydantic import ValidationError

from service import logs
from service.config import Settings, get_settings
from service.main import create_app

HTTP_PROTOCOLS = {"corked": "service.http.corked:Protocol", "httptools": "httptools"}


def settings_error(error: ValidationError) -> str:
    """A bad setting in one line, named as the variable that holds it."""
    return "; ".join(f"TINYSERVE_{'_'.join(map(str, e['loc'])).upper()}={e.get('input')!r}: {e['msg']}"
                     for e in error.errors())


def main(prog: str = "python -m service") -> int:
    """Read the settings, build the app and serve it until interrupted; a bad setting is one line."""
    try:
        settings = get_settings()
    except ValidationError as e:
        print(f"{prog}: error: {settings_error(e)}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


def serve(settings: Settings) -> None:
    """Run uvicorn with the service's log format and HTTP protocol, in one process or several."""
    workers = settings.workers
    options = dict(host=settings.host, port=settings.port, log_level=settings.log_level,
                   log_config=logs.config(settings.log_level), access_log=False,  # ours is the access log
                   timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
                   server_header=False,  # no "server: uvicorn" on every answer; the date header stays
                   http=HTTP_PROTOCOLS[settings.http])
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    # Workers are fresh processes: they see this variable before importing prometheus_client,
    # so each writes its metrics to files there and /metrics sums them all.
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tinyserve-metrics-")
    try:
        uvicorn.run("service.main:create_app", factory=True, workers=workers, **options)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
