"""Build the image, run it read-only, and drive it over HTTP the way a user and an orchestrator do.

Uses Docker where an engine answers `docker info`, else podman set up by deploy/container.sh
(which also makes the Debian base image once, when missing). Nothing here skips: a host that
cannot build or run the image fails the suite. Every step has a timeout.
"""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest
import yaml

from tests.deploy.container import IMAGE, ROOT, engine, sh, start

MODELS = ROOT / "models"
DEFAULT_MODELS = sorted(p.name for p in MODELS.iterdir() if (p / "1" / "card.json").is_file())


def _row(model: str) -> list[float]:
    card = json.loads((MODELS / model / "1" / "card.json").read_text())
    return [0.5] * card["input"]["shape"][1]


@pytest.fixture(scope="module")
def image():
    """The serving image, built from this checkout (cached layers make a rebuild seconds)."""
    started = time.monotonic()
    sh("build", IMAGE, timeout=900)
    print(f"\nbuilt {IMAGE} in {time.monotonic() - started:.0f} s")
    return IMAGE


@pytest.fixture(scope="module")
def container(image):
    """The image as `docker run -p 8000:8000 IMAGE` would start it, plus --read-only."""
    name, url = start()
    try:
        yield name, url
    finally:
        engine("rm", "-f", name, check=False)


def test_image_is_small_and_has_no_build_tools(image, container):
    size = int(engine("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    print(f"\n{image}: {size / 1e6:.0f} MB")
    assert size < 450e6, f"serving image grew to {size / 1e6:.0f} MB"
    name, _ = container
    probe = ("import importlib.util as u, os, shutil, sys; "
             "assert u.find_spec('tensorflow') is None and u.find_spec('keras') is None, 'TensorFlow'; "
             "assert not any(shutil.which(c) for c in ('gcc', 'cc', 'curl')), 'tools'; "
             "assert not os.path.exists('/root/.cache/pip'), 'pip cache'")
    engine("exec", name, "python3", "-c", probe)


def test_live_and_ready(container):
    _, url = container
    assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
    ready = httpx.get(f"{url}/health/ready", timeout=5)
    assert ready.status_code == 200
    assert sorted(ready.json()["serving"]) == DEFAULT_MODELS


@pytest.mark.parametrize("model", DEFAULT_MODELS)
def test_predicts_with_each_default_model(container, model):
    _, url = container
    response = httpx.post(f"{url}/predict", json={"model": model, "instances": [_row(model)]}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and len(body["predictions"]) == 1


def test_bad_request_gets_a_json_error(container):
    _, url = container
    response = httpx.post(f"{url}/predict", json={"model": "digits", "instances": [[1.0, 2.0]]}, timeout=10)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert "64" in response.json()["error"]


def test_runs_as_non_root(container):
    name, _ = container
    assert engine("exec", name, "id", "-u").stdout.strip() != "0"
    # The server process itself (PID 1), not only a fresh exec.
    status = engine("exec", name, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert "0" not in uids, status


def test_the_deployments_pre_stop_command_runs_in_the_image(container):
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    command = deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    name, _ = container
    engine("exec", name, *command[:1], "0")  # the same program, without the pause


def test_health_check_reports_healthy(container):
    name, _ = container
    if sh("which", timeout=30).stdout.strip() == "podman":
        # No systemd here to fire the timer: run the image's HEALTHCHECK on demand.
        assert engine("healthcheck", "run", name, check=False, timeout=30).returncode == 0
        return
    deadline = time.monotonic() + 60
    while (status := engine("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()) != "healthy":
        assert status == "starting" and time.monotonic() < deadline, status
        time.sleep(1)


def test_serves_mounted_models_with_the_kserve_settings(image, tmp_path):
    """KServe's layout: its own models at /mnt/models, port 8080, env straight from the manifest."""
    isvc = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    spec = isvc["spec"]["predictor"]["containers"][0]
    env = [f"{e['name']}={e['value']}" for e in spec["env"] if e["name"].startswith("TINYSERVE_")]
    mine = tmp_path / "models"
    shutil.copytree(MODELS / "diabetes", mine / "diabetes")
    for path in [mine, *mine.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's non-root user
    args = [f"--env={e}" for e in env] + ["-v", f"{mine}:/mnt/models:ro"]
    name, url = start(*args, container_port=spec["ports"][0]["containerPort"])
    try:
        assert [m["name"] for m in httpx.get(f"{url}/models", timeout=5).json()["models"]] == ["diabetes"]
        for probe in (spec["readinessProbe"], spec["livenessProbe"]):
            assert httpx.get(url + probe["httpGet"]["path"], timeout=5).status_code == 200
        row = dict(zip("age sex bmi bp s1 s2 s3 s4 s5 s6".split(), [50, 1, 25, 90, 180, 100, 50, 4, 4.5, 90]))
        response = httpx.post(f"{url}/predict", json={"instances": [row]}, timeout=10)
        assert response.status_code == 200, response.text
        if sh("which", timeout=30).stdout.strip() == "podman":
            assert engine("healthcheck", "run", name, check=False, timeout=30).returncode == 0
    finally:
        engine("rm", "-f", name, check=False)


def test_stops_cleanly_and_quickly(container):
    """SIGTERM lets uvicorn drain and exit 0 well within the stop timeout (no SIGKILL, no 137)."""
    name, _ = container
    started = time.monotonic()
    engine("stop", "-t", "10", name, timeout=30)
    elapsed = time.monotonic() - started
    state = engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    logs = engine("logs", name, check=False)
    assert state == "0", f"exit code {state}"
    assert elapsed < 8, f"stop took {elapsed:.1f} s"
    assert "Shutting down" in logs.stdout + logs.stderr
