"""Connection limits over real sockets: slow or endless request heads, and too many connections.

Each test runs `python -m service` and talks to it on 127.0.0.1 with raw sockets, bounded in time.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time

import httpx
import pytest

from tests.service import helpers

HEAD = b"GET /health/live HTTP/1.1\r\nHost: x\r\n"


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def answered(sock: socket.socket) -> bool:
    """Whether the server has sent something (or closed) on this connection, without waiting."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
        return True
    except BlockingIOError:
        return False
    finally:
        sock.settimeout(10)


def answer(sock: socket.socket, reset_ok: bool = False) -> tuple[int, dict]:
    """The status and JSON body of the one answer before the server closes the connection.

    `reset_ok`: the server may close with bytes of ours unread, so its kernel resets the
    connection; the bytes that arrived before the reset are the answer (none: no answer, a failure)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        if not reset_ok:
            raise
    assert data, "the connection closed without an answer"
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), data
    return int(head.split()[1]), json.loads(body)


def trickle(sock: socket.socket, data: bytes, every: float = 0.25, limit: float = 6) -> float:
    """Send `data` every `every` seconds until the server answers (or `limit` seconds pass); how
    long that took."""
    started = time.monotonic()
    while not answered(sock) and time.monotonic() - started < limit:
        try:
            sock.sendall(data)
        except OSError:  # answered and closed meanwhile
            break
        time.sleep(every)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def guarded(model_root, tmp_path_factory):
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_LOG_LEVEL": "warning",
           "TINYSERVE_HEAD_TIMEOUT_SECONDS": "1", "TINYSERVE_MAX_CONNECTIONS": "20",
           "TINYSERVE_REQUEST_TIMEOUT_SECONDS": "1"}
    with helpers.running_server(env, tmp_path_factory.mktemp("guarded") / "server.log") as url:
        yield url


@pytest.mark.parametrize("sent", [b"", b"POST /predict HTTP/1.1\r\n", HEAD])
def test_a_head_that_does_not_arrive_in_time_is_408(guarded, sent):
    with connect(guarded) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        status, body = answer(sock)
    assert status == 408 and body == {"error": "request head not received within 1 s"}
    assert time.monotonic() - started < 8  # closed by the sweep, not left open


def test_a_slow_head_on_a_kept_alive_connection_is_timed_too(guarded):
    with connect(guarded) as sock:
        sock.sendall(HEAD + b"\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        sock.sendall(b"GET /health/live HTTP/1.1\r\n")  # the next head starts, and stalls
        assert answer(sock) == (408, {"error": "request head not received within 1 s"})


def test_blank_lines_trickled_between_requests_are_a_head_and_timed(guarded):
    # The parser skips blank lines before a request line, and any byte stops uvicorn's keep-alive
    # timer: without the head timer they held a connection slot for as long as they came.
    with connect(guarded) as sock:
        sock.sendall(HEAD + b"\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        assert trickle(sock, b"\r\n") < 6
        assert answer(sock) == (408, {"error": "request head not received within 1 s"})


def test_a_body_trickling_past_the_deadline_is_408_and_the_connection_closed(guarded):
    # A chunked body that never ends, a byte every 0.25 s: without the close, the connection would
    # stay the client's for as long as it trickles, with no deadline left to end it.
    with connect(guarded) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\n")
        assert trickle(sock, b"1\r\n \r\n") < 6
        status, body = answer(sock)  # reads until the server closes
    assert (status, body) == (408, {"error": "the request body did not arrive within 1 s"})


@pytest.mark.parametrize("extra", [b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n",
                                   b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(400)) + b"\r\n"])
def test_a_head_over_the_size_limit_is_431(guarded, extra):
    with connect(guarded) as sock:
        sock.sendall(HEAD + extra)
        assert answer(sock) == (431, {"error": "request head exceeds 32768 bytes"})


def test_a_request_pipelined_after_a_body_the_server_did_not_read_is_answered(guarded):
    # The 404 is sent before the 200 KB body is read; the next head then arrives in a chunk that
    # begins inside that body, whose bytes once counted as head: 431, and the request was lost.
    body = b"[" + b"1," * 100_000 + b"1]"
    first = b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    with connect(guarded) as sock:
        sock.sendall(first + body + HEAD + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 404 "), data[:200]
    assert data.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 200 OK" in data, data[-400:]


def test_a_header_streamed_without_end_is_cut_at_the_limit(guarded):
    with connect(guarded) as sock:
        sock.sendall(HEAD + b"X-Endless: ")
        sent = 0
        try:
            while sent < 8 * 1024 * 1024 and not answered(sock):  # stop sending once answered
                sock.sendall(b"c" * 4096)
                sent += 4096
        except OSError:  # the server answered and closed (or reset) meanwhile: the rest cannot be sent
            pass
        # It closes with our later bytes unread, so the connection may end in a reset: the 431 that
        # came before it must still be there to read; a reset (or close) without it fails here.
        status, body = answer(sock, reset_ok=True)
    assert (status, body) == (431, {"error": "request head exceeds 32768 bytes"})
    assert sent < 8 * 1024 * 1024


def test_past_the_connection_cap_a_new_connection_is_503_and_the_rest_served(guarded):
    held = [connect(guarded) for _ in range(30)]
    try:
        time.sleep(0.3)  # well within the 1 s head timeout: only refused connections have an answer
        refused = [answer(sock) for sock in held if answered(sock)]
        assert 10 <= len(refused) <= 10 + 1  # the cap is 20 (the readiness probe's may linger)
        assert set(map(json.dumps, refused)) == {json.dumps(
            [503, {"error": "too many connections: this server takes 20 at a time"}])}
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(guarded + "/health/live", timeout=10).status_code == 200


def test_websocket_upgrade_requests_are_answered_as_http_and_use_up_no_connection_slot(guarded):
    # Each was once handed to uvicorn's WebSocket protocol, out of the connection guard's sight:
    # its slot was never given back, and past the cap every new connection was refused.
    for _ in range(25):  # more than the cap of 20
        with connect(guarded) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 404 ")
    time.sleep(0.2)
    assert httpx.get(guarded + "/health/live", timeout=10).status_code == 200


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_thousand_idle_or_half_sent_connections_leave_other_clients_served(model_root, tmp_path):
    # Within the cap they stay open (until the head timeout); other clients are still answered,
    # and the server holds no more descriptors than the cap allows.
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_LOG_LEVEL": "warning",
           "TINYSERVE_HEAD_TIMEOUT_SECONDS": "60", "TINYSERVE_MAX_CONNECTIONS": "1050"}
    procs: list = []
    body = b'{"model": "tiny-regression", "instances": [[1, 2]]}'
    with helpers.running_server(env, tmp_path / "server.log", procs=procs) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        def latencies() -> list[float]:
            out = []
            for _ in range(30):
                started = time.perf_counter()
                with httpx.Client(base_url=url, timeout=10) as fresh:  # a new connection each time
                    assert fresh.post("/predict", content=body).status_code == 200
                out.append(time.perf_counter() - started)
            return out

        before = latencies()
        held = [connect(url) for _ in range(1000)]
        try:
            for i, sock in enumerate(held):
                sock.sendall(b"" if i % 2 else b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            during = latencies()
            assert client.get("/health/ready").status_code == 200
            fds = _fds(procs[0].pid)
            extra = [connect(url) for _ in range(100)]
            time.sleep(0.5)
            over = sum(1 for sock in extra if answered(sock) and answer(sock)[0] == 503)
            fds_over = _fds(procs[0].pid)
            for sock in extra:
                sock.close()
        finally:
            for sock in held:
                sock.close()
    print(f"median latency: {statistics.median(before) * 1e3:.1f} ms before, "
          f"{statistics.median(during) * 1e3:.1f} ms with 1,000 idle connections; fds {fds}, {fds_over}")
    assert statistics.median(during) < 2.0  # answered, not stuck behind the idle connections
    assert 1000 < fds < 1050 + 64 and fds_over < 1050 + 64  # the cap, plus the process's own files
    assert over >= 40  # what the cap leaves for the extra hundred is refused 503
