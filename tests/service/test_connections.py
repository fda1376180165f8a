"""Connection limits over real sockets: slow or endless request heads, and too many connections.

Each test runs `python -m service` and talks to it on 127.0.0.1 with raw sockets, bounded in time.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
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


def _server(model_root, folder, **settings: str):
    """A server of the test models with these settings (TINYSERVE_ names, lowercase, without it)."""
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_LOG_LEVEL": "warning",
           **{f"TINYSERVE_{k.upper()}": v for k, v in settings.items()}}
    return helpers.running_server(env, folder / "server.log")


@pytest.fixture(scope="module")
def guarded(model_root, tmp_path_factory):
    with _server(model_root, tmp_path_factory.mktemp("guarded"), head_timeout_seconds="1", max_connections="20",
                 request_timeout_seconds="1") as url:
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


def refusals(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    reasons = ("too_many_connections", "idle_closed", "head_timeout", "head_too_large", "upgrade")
    return {why: helpers.metric(text, "tinyserve_connections_refused_total", reason=why) or 0 for why in reasons}


def test_past_the_connection_cap_the_longest_idle_connections_make_room(guarded):
    # They were kept and each new connection refused: a client holding the cap's worth of unused
    # connections shut out every other one, the health probes included.
    before = refusals(guarded)
    held = [connect(guarded) for _ in range(30)]
    try:
        time.sleep(0.3)  # well within the 1 s head timeout: only refused connections have an answer
        refused = [i for i, sock in enumerate(held) if answered(sock)]
        assert refused == list(range(len(refused))) and 10 <= len(refused) <= 10 + 1  # the oldest; cap 20
        assert {json.dumps(answer(held[i])) for i in refused} == {json.dumps([503, {"error": (
            "too many connections: this server takes 20 at a time, and closed this one, which had not sent a "
            "request, to make room for another")}])}
        assert httpx.get(guarded + "/health/live", timeout=10).status_code == 200  # one more, served
    finally:
        for sock in held:
            sock.close()
    after = refusals(guarded)
    assert after["idle_closed"] - before["idle_closed"] >= 11 and after["too_many_connections"] == before["too_many_connections"]


def test_past_the_connection_cap_with_every_connection_in_a_request_a_new_one_is_503_unless_a_probe(guarded):
    # The liveness probe was refused as well: clients holding every connection in a slow body
    # failed it until their bodies timed out, and the orchestrator restarted a working server.
    before = refusals(guarded)
    busy = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"  # its body still coming
    held = [connect(guarded) for _ in range(20)]
    try:
        for sock in held:
            sock.sendall(busy)
        time.sleep(0.2)
        with connect(guarded) as extra:
            extra.sendall(b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n")
            head = extra.recv(65536, socket.MSG_PEEK)
            assert answer(extra, reset_ok=True) == (503, {"error": "too many connections: this server takes 20 at a time"})
        assert b"\r\nretry-after: 1\r\n" in head
        for path in ("/health/live", "/health/ready", "/v2/health/live"):
            assert httpx.get(guarded + path, timeout=10).status_code == 200, path
        assert not any(answered(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert refusals(guarded)["too_many_connections"] - before["too_many_connections"] == 1


@pytest.fixture(scope="module")
def capped(model_root, tmp_path_factory):
    with _server(model_root, tmp_path_factory.mktemp("capped"), head_timeout_seconds="5", max_connections="3") as url:
        yield url


def test_past_the_cap_a_health_check_gets_in_and_nothing_else(capped):
    # Let in on its first bytes alone, a connection that began with a health check served anything
    # after it, and each new connection closed the one before it that had not sent yet: the probe.
    from service.http.limits import PROBE_SLOTS

    busy = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    held = [connect(capped) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(busy)
        time.sleep(0.2)
        probe, other = connect(capped), connect(capped)
        time.sleep(0.2)
        other.sendall(b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer(other, reset_ok=True)[0] == 503
        probe.sendall(b"GET /hea")  # a request line in pieces
        time.sleep(0.1)
        probe.sendall(b"lth/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert probe.recv(65536).startswith(b"HTTP/1.1 200 OK")  # not closed to make room for `other`
        probe.sendall(b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n")  # then something else: refused
        assert answer(probe, reset_ok=True) == (503, {"error": "too many connections: this server takes 3 at a time"})
        waiting = [connect(capped) for _ in range(PROBE_SLOTS + 1)]  # silent: at most PROBE_SLOTS wait
        time.sleep(0.3)
        assert [answered(sock) for sock in waiting] == [False] * PROBE_SLOTS + [True]
        for sock in waiting:
            sock.close()
        probe.close()
        other.close()
        assert not any(answered(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()


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
    # and the server holds no more descriptors than the cap allows: past it, the longest idle go.
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
            over = sum(1 for sock in extra if answered(sock))
            made_room = sum(1 for sock in held if answered(sock) and answer(sock, reset_ok=True)[0] == 503)
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
    # Past the cap the new connections are kept, and as many of the longest idle ones closed with a 503.
    assert over == 0 and made_room >= 40


@pytest.fixture(scope="module")
def budgeted(model_root, tmp_path_factory):
    with _server(model_root, tmp_path_factory.mktemp("budgeted"), max_body_bytes="65536",
                 max_pending_body_bytes="131072", request_timeout_seconds="10") as url:
        yield url


def _padded(size: int) -> bytes:
    row = b'{"model": "tiny-regression", "instances": [[1, 2]]}'
    return row + b" " * (size - len(row))


def _status(sock: socket.socket) -> tuple[int, bytes]:
    head = sock.recv(65536)
    return int(head.split()[1]), head


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_arriving_slowly_hold_at_most_the_budget_and_the_rest_wait_their_turn(budgeted, chunked):
    # Each body is held until its last byte: clients sending large bodies slowly filled the memory
    # (a 512 MiB container was killed). Two bodies of 60,000 bytes, 50,000 sent, hold 100,000 of
    # the 131,072 a worker holds at once: a third is answered 503 with Retry-After, before its body
    # is sent when it declares its length; once the two finish, the same request is served.
    size, sent = 60_000, 50_000
    post = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
    slow = [connect(budgeted), connect(budgeted)]
    try:
        for sock in slow:
            sock.sendall(post + _padded(size)[:sent])
        deadline = time.monotonic() + 10
        while True:  # until the server has read both partial bodies (on a busy machine, a moment)
            with connect(budgeted) as third:
                if chunked:
                    third.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"%x\r\n%s\r\n" % (40_000, b" " * 40_000))
                else:
                    third.sendall(post)
                third.settimeout(0.5)
                try:
                    status, head = _status(third)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "the third request was never refused"
        assert status == 503 and b"retry-after: 1" in head.lower(), head
        assert b'"the server is receiving 100000 bytes of other request bodies, at most 131072 at a time; ' \
               b'send this request again in a moment"' in head
        for sock in slow:
            sock.sendall(_padded(size)[sent:])
            assert _status(sock)[0] == 200
    finally:
        for sock in slow:
            sock.close()
    assert httpx.post(budgeted + "/predict", content=_padded(size), timeout=10).status_code == 200


def test_a_budget_smaller_than_a_body_is_refused_at_start(tmp_path):
    env = {**os.environ, "TINYSERVE_MAX_BODY_BYTES": "2048", "TINYSERVE_MAX_PENDING_BODY_BYTES": "1024"}
    done = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ("TINYSERVE_MAX_PENDING_BODY_BYTES=1024 is less than TINYSERVE_MAX_BODY_BYTES=2048: no body of the "
            "largest size could be received") in done.stderr


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_setting(model_root, tmp_path):
    # uvicorn's 5 s could not be set: behind a proxy that keeps connections open longer, requests
    # raced the close (a 502).
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_KEEP_ALIVE_SECONDS": "1",
           "TINYSERVE_WORKER": "3"}
    with helpers.running_server(env, tmp_path / "server.log") as url, connect(url) as sock:
        sock.sendall(HEAD + b"\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server
        waited = time.monotonic() - started
    assert 0.5 < waited < 4, waited
    log = (tmp_path / "server.log").read_text()
    assert "TINYSERVE_WORKER is not a setting (did you mean TINYSERVE_WORKERS?): it is ignored" in log
