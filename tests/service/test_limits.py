"""Request deadline (504) and graceful shutdown under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time

import httpx
import pytest

from service.config import Settings
from service.main import create_app
from tests.service import helpers

pytestmark = pytest.mark.anyio
BODY = b'{"model": "tiny-regression", "instances": [[1, 2]]}'


async def slow_body(seconds: float):
    """The body in two halves, `seconds` apart: a slow client."""
    yield BODY[:10]
    await asyncio.sleep(seconds)
    yield BODY[10:]


async def test_a_body_slower_than_the_deadline_is_408(model_root):
    app = create_app(Settings(model_root=model_root, request_timeout_seconds=0.2))
    async with helpers.serve(app) as client:
        response = await client.post("/predict", content=slow_body(1.0))
        assert response.status_code == 408
        assert response.json() == {"error": "the request body did not arrive within 0.2 s"}
        assert "x-request-id" in response.headers
        assert (await client.post("/predict", content=slow_body(0.01))).status_code == 200
        text = (await client.get("/metrics")).text
        assert helpers.metric(text, "tinyserve_requests_total", endpoint="/predict", status="408") == 1
        assert helpers.metric(text, "tinyserve_requests_in_flight") == 1


async def test_a_request_over_the_deadline_is_504(model_root):
    # The body is in; what takes too long is the answer: a batch that waits longer than the deadline.
    app = create_app(Settings(model_root=model_root, request_timeout_seconds=0.2,
                              batch_max_size=64, batch_max_delay_ms=1000))
    async with helpers.serve(app) as client:
        response = await client.post("/predict", content=BODY)
        assert response.status_code == 504
        assert response.json() == {"error": "request took longer than 0.2 s and was cancelled"}
        assert "x-request-id" in response.headers
        text = (await client.get("/metrics")).text
        assert helpers.metric(text, "tinyserve_requests_total", endpoint="/predict", status="504") == 1


async def test_no_deadline_when_zero(model_root):
    app = create_app(Settings(model_root=model_root, request_timeout_seconds=0))
    async with helpers.serve(app) as client:
        assert (await client.post("/predict", content=slow_body(0.3))).status_code == 200


def test_sigterm_lets_in_flight_requests_finish(model_root, tmp_path):
    """Slow requests in flight at SIGTERM all complete with 200; fast clients never see a broken answer."""
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_LOG_LEVEL": "warning",
           "TINYSERVE_POLL_SECONDS": "0"}
    results: dict[str, list] = {"slow": [], "fast": [], "refused_after_sigterm": []}
    procs = []
    with helpers.running_server(env, tmp_path / "server.log", procs=procs) as url:
        pid = procs[0].pid

        async def slow(client):
            response = await client.post("/predict", content=slow_body(1.5))
            results["slow"].append(response.status_code)

        async def fast(sigterm_sent):
            async with httpx.AsyncClient(base_url=url, timeout=20) as client:
                await fast_loop(client, sigterm_sent)

        async def fast_loop(client, sigterm_sent):
            while True:
                try:
                    response = await client.post("/predict", content=BODY)
                except httpx.TransportError:
                    # After SIGTERM a new connection is refused or an idle keep-alive one closed: not an
                    # accepted request. Before SIGTERM it would be a failure.
                    assert sigterm_sent.is_set()
                    results["refused_after_sigterm"].append(1)
                    return
                results["fast"].append(response.status_code)

        async def main():
            sigterm_sent = asyncio.Event()
            async with httpx.AsyncClient(base_url=url, timeout=20) as client:
                slow_tasks = [asyncio.create_task(slow(client)) for _ in range(8)]
                fast_tasks = [asyncio.create_task(fast(sigterm_sent)) for _ in range(4)]
                await asyncio.sleep(0.5)  # every slow request is now mid-body on the server
                os.kill(pid, signal.SIGTERM)
                sigterm_sent.set()
                started = time.monotonic()
                await asyncio.gather(*slow_tasks, *fast_tasks)
                return time.monotonic() - started

        waited = asyncio.run(main())
        assert procs[0].wait(timeout=30) == 0  # a graceful stop is a clean exit, not death by signal
    assert results["slow"] == [200] * 8
    assert results["fast"] and set(results["fast"]) == {200}
    assert waited >= 0.5  # the server waited for the slow bodies instead of cutting them off



def test_a_request_still_running_when_the_graceful_shutdown_ends_is_answered_503(model_root, tmp_path):
    # uvicorn cancels what is still running once the grace period is over: the request's client
    # gets JSON saying so, and the log a line, where it got a text 500 and the log a traceback.
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_LOG_LEVEL": "info", "TINYSERVE_POLL_SECONDS": "0",
           "TINYSERVE_GRACEFUL_SHUTDOWN_SECONDS": "0.5", "TINYSERVE_REQUEST_TIMEOUT_SECONDS": "30"}
    procs = []
    with helpers.running_server(env, tmp_path / "server.log", procs=procs) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY[:10]))  # the rest never comes
            time.sleep(1.0)  # the head is read and the request waits for its body
            procs[0].send_signal(signal.SIGTERM)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert procs[0].wait(timeout=30) == 0
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"content-type: application/json" in head, answer
    assert json.loads(body) == {"error": "the server shut down before this request finished; send it again"}
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "the server shut down before it finished" in log
    assert '"status":503' in log  # the access line


async def test_a_callers_own_cancel_is_not_taken_for_a_shutdown(model_root):
    # Served in process (an embedding, or httpx's ASGI transport): the caller's timeout stays its own.
    app = create_app(Settings(model_root=model_root, batch_max_delay_ms=500))
    async with helpers.serve(app) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.post("/predict", content=BODY)
