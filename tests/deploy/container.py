"""Drive deploy/container.sh from tests: every call bounded by a timeout, never a hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "container.sh"
IMAGE = "tinyserve:test"


def sh(*args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    """Run `deploy/container.sh ARGS`; on timeout kill its whole process group and fail."""
    proc = subprocess.Popen(["bash", str(SCRIPT), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"container.sh {' '.join(args)} took more than {timeout} s") from None
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and result.returncode != 0:
        raise AssertionError(f"container.sh {' '.join(args)} exited {result.returncode}:\n"
                             f"{out[-3000:]}\n{err[-3000:]}")
    return result


def engine(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """The container engine (docker or podman), set up exactly as container.sh sets it up."""
    return sh("engine", *args, timeout=timeout, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        state = engine("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        if state not in ("created", "running"):
            logs = engine("logs", name, check=False)
            raise AssertionError(f"container {state}:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready after {timeout} s")


def start(*run_args: str, container_port: int = 8000) -> tuple[str, str]:
    """Run the image detached and read-only on a free loopback port, wait until ready; (name, url)."""
    name, port = f"tinyserve-test-{uuid.uuid4().hex[:10]}", free_port()
    # Docker runs the HEALTHCHECK on its timer: make the first one come soon.
    extra = ["--health-interval", "2s"] if sh("which", timeout=30).stdout.strip() == "docker" else []
    engine("run", "-d", "--name", name, "--read-only", "-p", f"127.0.0.1:{port}:{container_port}",
           *extra, *run_args, IMAGE, timeout=60)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, name)
    except BaseException:
        engine("rm", "-f", name, check=False)
        raise
    return name, url
