"""Several uvicorn workers: /metrics sums what every worker counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from service.metrics import Metrics
from tests.service import helpers

# Each worker folds its counts into the shared files at least once a second (service.metrics).
FLUSH_WAIT_SECONDS = 3.0


def scrape(url: str, done) -> str:
    """GET /metrics until `done(text)` or FLUSH_WAIT_SECONDS have passed; the last text."""
    deadline = time.monotonic() + FLUSH_WAIT_SECONDS
    while True:
        text = httpx.get(f"{url}/metrics").text
        if done(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_two_workers_metrics_are_aggregated(model_root, tmp_path):
    shared = tmp_path / "prom"
    shared.mkdir()
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_WORKERS": "2", "TINYSERVE_LOG_LEVEL": "warning",
           "TINYSERVE_POLL_SECONDS": "0", "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with helpers.running_server(env, tmp_path / "server.log") as url:
        n = 0
        for _ in range(60):  # new connections until both workers have answered some
            for _ in range(10):
                with httpx.Client(base_url=url, headers={"Connection": "close"}) as client:
                    assert client.post("/models/tiny-regression/predict",
                                       json={"instances": [[1, 2]]}).status_code == 200
                n += 1
            if len({f.name.split("_")[-1] for f in shared.glob("counter_*.db")}) >= 2:
                break
        text = scrape(url, lambda t: helpers.metric(t, "tinyserve_requests_total", model="tiny-regression",
                                                     endpoint="/models/{name}/predict", status="200") == n)
        pids = {f.name.split("_")[-1] for f in shared.glob("counter_*.db")}
    assert len(pids) == 2, pids
    assert helpers.metric(text, "tinyserve_requests_total", model="tiny-regression", version="1",
                          endpoint="/models/{name}/predict", status="200") == n
    assert helpers.metric(text, "tinyserve_model_version_status", model="tiny-regression", version="1",
                          status="ready") == 1


def test_two_workers_without_a_multiproc_dir_get_a_temporary_one(model_root, tmp_path):
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_WORKERS": "2", "TINYSERVE_LOG_LEVEL": "warning",
           "TINYSERVE_POLL_SECONDS": "0"}
    with helpers.running_server(env, tmp_path / "server.log") as url:
        for _ in range(40):
            with httpx.Client(base_url=url, headers={"Connection": "close"}) as client:
                assert client.get("/health/live").status_code == 200
        text = scrape(url, lambda t: helpers.metric(t, "tinyserve_requests_total", endpoint="/health/live",
                                                     status="200") == 40)
    assert helpers.metric(text, "tinyserve_requests_total", endpoint="/health/live", status="200") == 40


def test_a_killed_workers_model_status_leaves_the_metrics(tmp_path, monkeypatch):
    # A worker killed outright never drops its live gauges; uvicorn starts another in its place,
    # and the dead one's "ready" for a model it served once would count for good.
    code = ("import sys, time; from service.metrics import Metrics; m = Metrics(); "
            "m.version_status.labels('gone', '1', 'ready').set(1); print('set', flush=True); time.sleep(60)")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=helpers.REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline() == "set\n"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        alive = Metrics().render()[0].decode()
        assert helpers.metric(alive, "tinyserve_model_version_status", model="gone", version="1", status="ready") == 1
        worker.kill()
        worker.wait(timeout=10)
        dead = Metrics().render()[0].decode()
    finally:
        worker.kill()
        worker.wait(timeout=10)
    assert helpers.metric(dead, "tinyserve_model_version_status", model="gone", version="1", status="ready") is None


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_several_workers_end_as_one_does_on_a_signal(model_root, tmp_path, sig, status):
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_WORKERS": "2", "TINYSERVE_POLL_SECONDS": "0",
           "TINYSERVE_WORKER": "3"}
    procs = []
    with helpers.running_server(env, tmp_path / "server.log", procs=procs):
        procs[0].send_signal(sig)
        assert procs[0].wait(30) == status, (tmp_path / "server.log").read_text()[-2000:]
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log
    assert log.count("TINYSERVE_WORKER is not a setting (did you mean TINYSERVE_WORKERS?)") == 1, log  # not per worker


def test_a_worker_that_fails_to_start_ends_the_server_with_a_failure(model_root, tmp_path):
    # uvicorn's supervisor stops the other workers and returns as it does after SIGTERM: the
    # server must not end with status 0 (a supervisor would take it for a clean stop).
    (tmp_path / "sitecustomize.py").write_text(
        "import os\n"
        "if 'PROMETHEUS_MULTIPROC_DIR' in os.environ:  # a worker: its parent set this for it\n"
        "    from service.repository import Repository\n"
        "    def load(self):\n"
        "        raise MemoryError('the models do not fit')\n"
        "    Repository.load = load  # the lifespan fails, so does the worker's start\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TINYSERVE_", "PROMETHEUS_"))}
    env = {**clean, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(helpers.REPO_ROOT)]),
           "TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_WORKERS": "2", "TINYSERVE_POLL_SECONDS": "0",
           "TINYSERVE_HOST": "127.0.0.1", "TINYSERVE_PORT": str(helpers.free_port())}
    done = subprocess.run([sys.executable, "-m", "service"], cwd=helpers.REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == "python -m service: error: a worker failed to start (its log above " \
        "says why); the others were stopped", done.stderr[-2000:]
    assert "MemoryError: the models do not fit" in done.stderr + done.stdout
