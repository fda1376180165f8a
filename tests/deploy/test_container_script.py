"""deploy/container.sh without a container engine: stand-ins for podman and timeout record each call.

What is checked: `run` has no time limit (the server runs until stopped), `run -d` prints the
command that stops it and that command works, builds keep their time limit.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.container import SCRIPT

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0") $1" in
  "timeout "*) shift; exec "$@" ;;
  "podman run") case " $* " in *" -d "*) echo 0123456789abcdef0123456789abcdef ;; esac ;;
esac
exit 0
"""


@pytest.fixture
def calls(tmp_path, monkeypatch) -> Path:
    """Where the stand-ins write one line per call; they come first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("podman", "timeout"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(log))
    monkeypatch.setenv("CONTAINER_ENGINE", "podman")
    monkeypatch.setenv("TINYSERVE_PODMAN_DIR", str(tmp_path / "podman"))
    return log


def script(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_run_has_no_time_limit(calls):
    script("run", "-v", "/my/models:/models:ro")
    assert calls.read_text().splitlines() == [
        "podman run --rm -p 127.0.0.1:8000:8000 -v /my/models:/models:ro tinyserve:latest"]


def test_run_detached_prints_the_stop_command_which_stops_it(calls, monkeypatch):
    monkeypatch.setenv("PORT", "8123")
    out = script("run", "-d", "-e", "TINYSERVE_LOG_LEVEL=debug").stdout
    assert calls.read_text().splitlines() == [
        "timeout 900 podman run -d --rm -p 127.0.0.1:8123:8000 -e TINYSERVE_LOG_LEVEL=debug tinyserve:latest",
        "podman run -d --rm -p 127.0.0.1:8123:8000 -e TINYSERVE_LOG_LEVEL=debug tinyserve:latest"]
    assert "http://127.0.0.1:8123" in out
    stop = out.splitlines()[-1].split("stop it with: ", 1)[1]
    assert stop == f"bash {SCRIPT} stop 0123456789ab"
    calls.unlink()
    subprocess.run(stop.split(), check=True, capture_output=True, timeout=60)
    assert calls.read_text().splitlines() == ["timeout 900 podman stop 0123456789ab",
                                              "podman stop 0123456789ab"]


def test_builds_keep_their_time_limit(calls):
    script("build")
    lines = calls.read_text().splitlines()
    assert any(line.startswith("timeout 900 podman build ") for line in lines), lines
    podman = [line for line in lines if line.startswith("podman ")]
    bounded = [line.removeprefix("timeout 900 ") for line in lines if line.startswith("timeout ")]
    assert podman == bounded, lines  # every podman call went through timeout
