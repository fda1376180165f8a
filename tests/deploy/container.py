"""Drive deploy/container.sh from tests: every call bounded by a timeout, never a hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "container.sh"


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
