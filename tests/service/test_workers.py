"""Several uvicorn workers: /metrics sums what every worker counted."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

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
