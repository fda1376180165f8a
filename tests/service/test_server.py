"""The service as users run it: `python -m service` in its own process, over real HTTP."""

from __future__ import annotations

import socket

import httpx
import orjson
import pytest

from tests.service import helpers


@pytest.fixture
def http(server_url):
    with httpx.Client(base_url=server_url, timeout=10) as client:
        yield client


def test_probes(http):
    assert http.get("/health/live").json() == {"status": "live"}
    ready = http.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["serving"]["tiny-multiclass"] == 2


def _head(http, path: str) -> tuple[bytes, bytes]:
    """A HEAD's status line and headers, and its body, read off the socket: httpx reads no body
    after a HEAD, whatever the server sends."""
    with socket.create_connection((http.base_url.host, http.base_url.port), timeout=10) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/v2",
                                  "/v2/models/tiny-binary", "/v2/models/tiny-binary/ready", "/models",
                                  "/models/tiny-binary/versions/1", "/v1/models/tiny-binary", "/openapi.json"])
def test_a_head_is_its_get_without_the_body(http, path):
    # Probes and uptime checks send HEAD: wherever a GET is answered, so is a HEAD.
    head, body = _head(http, path)
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"", (path, head, body)
    assert f"content-length: {len(http.get(path).content)}".encode() in head.lower(), (path, head)


@pytest.mark.parametrize("path, status", [("/predict", 405), ("/nope", 404), ("/v2/models/nope", 404)])
def test_a_head_of_what_has_no_get_is_its_gets_error_without_the_body(http, path, status):
    head, body = _head(http, path)
    assert head.startswith(b"HTTP/1.1 %d " % status) and body == b"", (path, head, body)


def test_predict_without_content_type(http):
    raw = orjson.dumps({"model": "tiny-regression", "instances": [[1, 2], {"x1": 0, "x2": 0}]})
    response = http.post("/predict", content=raw)
    assert "content-type" not in response.request.headers
    assert response.status_code == 200
    assert response.json() == {"model": "tiny-regression", "version": 1, "task": "regression",
                               "predictions": [{"value": 9.0}, {"value": 1.0}]}


def test_every_route_answers(http):
    body = {"instances": [[0, 0, 0, 0]]}
    assert http.post("/models/tiny-multiclass/predict", json=body).json()["version"] == 2
    assert http.post("/models/tiny-multiclass/versions/1/predict", json=body).json()["version"] == 1
    assert http.get("/models").status_code == 200
    assert http.get("/models/tiny-binary/versions/1").json()["status"] == "ready"
    assert http.get("/docs").status_code == 200


@pytest.mark.parametrize("method, path, kwargs, status", [
    ("GET", "/nope", {}, 404),
    ("GET", "/predict", {}, 405),
    ("POST", "/predict", {"content": b"{nope"}, 400),
    ("POST", "/predict", {"json": {"model": "tiny-binary", "instances": [[0, 0]]}}, 400),
    ("POST", "/predict", {"json": {"model": "nope", "instances": [[0]]}}, 404),
    ("POST", "/predict", {"content": b" " * (64 * 1024 + 1)}, 413),
    ("POST", "/predict", {"content": iter([b" " * 1024] * 70)}, 413),  # chunked, no Content-Length
])
def test_errors_are_json(http, method, path, kwargs, status):
    response = http.request(method, path, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error"]


def test_server_with_nothing_to_serve_is_live_but_not_ready(tmp_path):
    env = {"TINYSERVE_MODEL_ROOT": str(tmp_path / "missing")}
    with helpers.running_server(env, tmp_path / "server.log", probe="/health/live") as url:
        ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 503 and "no model is serving" in ready.json()["error"]
    log = (tmp_path / "server.log").read_text()
    assert f"no models found: the model root {tmp_path / 'missing'} is not a folder" in log
