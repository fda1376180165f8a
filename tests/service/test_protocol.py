"""The HTTP protocol: uvicorn's httptools protocol sending each answer in one write."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from service.http.corked import OWED, CorkedTransport, Owed, Protocol
from service.http import limits
from service.http.limits import Guard, Limits
from tests.service import helpers


class FakeTransport:
    """Records what a protocol asks of its transport."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.closing = False

    def write(self, data):
        self.calls.append(("write", bytes(data)))

    def writelines(self, lines):
        self.calls.append(("writelines", [bytes(d) for d in lines]))

    def close(self):
        self.calls.append(("close",))
        self.closing = True

    def abort(self):
        self.calls.append(("abort",))
        self.closing = True

    def write_eof(self):
        self.calls.append(("write_eof",))

    def is_closing(self):
        return self.closing

    def get_write_buffer_size(self):
        return 7

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self):
        self.calls.append(("pause_reading",))

    def resume_reading(self):
        self.calls.append(("resume_reading",))


def owing(fake: FakeTransport, loop, others: int) -> CorkedTransport:
    """A corked transport whose connection owes an answer, while `others` other connections do."""
    owed = Owed()
    owed.count = others
    corked = CorkedTransport(fake, loop, owed)
    corked.expect(1)
    return corked


def test_while_others_owe_answers_writes_of_one_step_leave_together_at_its_end():
    async def main():
        fake = FakeTransport()
        corked = owing(fake, asyncio.get_running_loop(), others=1)
        corked.write(b"head")
        corked.writelines([b"bo", b"dy"])
        assert fake.calls == [] and corked.get_write_buffer_size() == 7 + 8
        await asyncio.sleep(0)
        first = list(fake.calls)
        corked.write(b"next")
        await asyncio.sleep(0)
        corked.pause_reading()  # anything else reaches the transport itself
        return first, fake.calls

    first, calls = asyncio.run(main())
    assert first == [("writelines", [b"head", b"bo", b"dy"])]
    assert calls == [("writelines", [b"head", b"bo", b"dy"]), ("write", b"next"), ("pause_reading",)]


def test_an_answer_leaves_at_its_body_when_alone_and_at_the_end_of_the_step_when_not():
    async def main():
        loop = asyncio.get_running_loop()
        alone, busy = FakeTransport(), FakeTransport()
        lone, crowded = owing(alone, loop, others=0), owing(busy, loop, others=1)
        for corked in (lone, crowded):
            corked.write(b"head")
            corked.write(b"body")
        during = (list(alone.calls), list(busy.calls))
        await asyncio.sleep(0)
        return during, (alone.calls, busy.calls)

    during, after = asyncio.run(main())
    assert during == ([("writelines", [b"head", b"body"])], [])
    assert after == ([("writelines", [b"head", b"body"])], [("writelines", [b"head", b"body"])])


def test_close_sends_what_is_held_first_and_abort_drops_it():
    async def main():
        fake, other = FakeTransport(), FakeTransport()
        loop = asyncio.get_running_loop()
        closed, aborted = CorkedTransport(fake, loop), CorkedTransport(other, loop)
        closed.write(b"last words")
        closed.close()
        aborted.write(b"lost")
        aborted.abort()
        await asyncio.sleep(0)  # the flush scheduled by the writes finds nothing, or a closed transport
        return fake.calls, other.calls

    closed, aborted = asyncio.run(main())
    assert closed == [("write", b"last words"), ("close",)]
    assert aborted == [("abort",)]


async def answer(scope, receive, send):
    """A bare app: reads the body, echoes its length."""
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    text = b"%d" % len(body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(text))]})
    await send({"type": "http.response.body", "body": text})


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1\r\n\r\n"


def opened(app=answer, state: ServerState | None = None, fake: FakeTransport | None = None) -> Protocol:
    """This module's protocol as uvicorn makes it, for `app`, on a fake transport it was handed."""
    config = uvicorn.Config(app, http=Protocol, lifespan="off", log_level="warning",
                            server_header=False, date_header=False)
    config.load()
    protocol = Protocol(config=config, server_state=state or ServerState(), app_state={})
    protocol.connection_made(fake or FakeTransport())
    return protocol


def exchange(*chunks: bytes) -> list[list[tuple]]:
    """Feed uvicorn, on this module's protocol, each chunk in turn (letting the app run after each);
    what the transport was asked after each chunk, then after the connection is lost."""
    async def main():
        fake = FakeTransport()
        protocol = opened(fake=fake)
        seen = []
        for chunk in chunks:
            protocol.data_received(chunk)
            await asyncio.sleep(0.05)
            seen.append(list(fake.calls))
        protocol.connection_lost(None)
        return [*seen, fake.calls]

    return asyncio.run(main())


def test_uvicorn_sends_each_answer_in_one_call():
    *_, calls = exchange(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc",
                         b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    assert calls == [("writelines", [HEAD, b"3"]), ("writelines", [HEAD, b"0"]), ("close",)]


def test_expect_100_continue_still_reaches_the_client_before_the_body():
    before_body, _, calls = exchange(
        b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n", b"hi")
    assert before_body == [("write", b"HTTP/1.1 100 Continue\r\n\r\n")]
    assert calls[1:] == [("writelines", [HEAD, b"2"]), ("close",)]


@pytest.mark.parametrize("upgrade", [b"Upgrade: h2c", b"upgrade:h2c", b"UPGRADE: H2C ", b"Upgrade: websocket"])
def test_an_upgrade_is_ignored_and_the_body_read(upgrade):
    # curl --http2 over plain HTTP asks to upgrade; the request is served as HTTP/1.1, body and all.
    *_, calls = exchange(b"POST /a HTTP/1.1\r\nhost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n" + upgrade +
                         b"\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\ncontent-length: 3\r\n\r\nabc")
    assert calls == [("writelines", [HEAD, b"3"]), ("close",)]


def test_an_upgrade_header_inside_a_body_is_left_alone():
    *_, calls = exchange(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 16\r\n\r\n\r\nupgrade: h2c\r\n")
    assert calls == [("writelines", [HEAD.replace(b"length: 1", b"length: 2"), b"16"]), ("close",)]


def test_an_upgrade_line_in_a_later_chunk_of_a_body_is_left_alone():
    # A body's next chunk may hold such a line and a blank line (a BYTES tensor's text, say).
    *_, calls = exchange(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\nab",
                         b"\r\nupgrade: h2c\r\n\r\n")
    assert calls == [("writelines", [HEAD.replace(b"length: 1", b"length: 2"), b"20"]), ("close",)]


def test_an_upgrade_is_ignored_in_the_head_after_a_body_ends():
    *_, calls = exchange(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nab", b"c",
                         b"POST /b HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\ncontent-length: 2\r\n\r\nde")
    assert calls == [("writelines", [HEAD, b"3"]), ("writelines", [HEAD, b"2"]), ("close",)]


def test_real_server_keep_alive_and_pipelining(server_url):
    # Through `python -m service` (which runs this protocol): two pipelined requests on one
    # connection get their two answers, in order, and the connection stays open for a third.
    host, port = server_url.removeprefix("http://").split(":")
    body = b'{"model": "tiny-regression", "instances": [[1.0, 2.0]]}'
    request = (b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n"
               b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < 2 or not data.endswith(b"}]}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert data.index(b'{"status":"live"}') < data.index(b'"predictions"')
        s.sendall(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b'{"status":"live"}' in s.recv(65536)


def test_real_server_serves_an_h2c_upgrade_request_as_http_1_1(server_url):
    host, port = server_url.removeprefix("http://").split(":")
    body = b'{"model": "tiny-regression", "instances": [[1.0, 2.0]]}'
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n%s" % (len(body), body))
        data = b""
        while not data.endswith(b"}]}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and b'"predictions"' in data


@pytest.mark.parametrize("rows", [1, 2000])
def test_real_server_answers_small_and_large(server_url, rows):
    import httpx

    body = {"model": "tiny-regression", "instances": [[1.0, 2.0]] * rows}
    with httpx.Client(base_url=server_url, timeout=20) as client:
        for _ in range(3):
            response = client.post("/predict", json=body)
            assert response.status_code == 200 and len(response.json()["predictions"]) == rows


@pytest.mark.parametrize("value, protocol", [(None, "service.http.corked:Protocol"), ("corked", "service.http.corked:Protocol"),
                                             ("httptools", "httptools")])
def test_the_setting_picks_the_protocol_uvicorn_runs(monkeypatch, value, protocol):
    import uvicorn

    import service.__main__ as entry
    from service.config import get_settings

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.update(options))
    monkeypatch.setattr(entry, "_unlistenable", lambda addresses: None)  # binds no port
    if value is not None:
        monkeypatch.setenv("TINYSERVE_HTTP", value)
    get_settings.cache_clear()
    try:
        entry.main()
    finally:
        get_settings.cache_clear()
    assert ran["http"] == protocol


def test_while_another_connection_owes_an_answer_an_answer_waits_for_the_end_of_the_step():
    # Through uvicorn: the heads of /a and /b arrive before either request runs, so /a's answer
    # is held while /b's is owed (its request not even started), and /b's too, as /a's has not
    # left yet when /b answers in the same step; /alone, later, is the only one owed: at once.
    # What each connection's transport was asked right after its app sent the body shows it.
    fakes: dict[str, FakeTransport] = {}
    at_body: dict[str, list] = {}
    owed: list[int] = []

    async def main():
        async def app(scope, receive, send):
            await receive()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"1")]})
            await send({"type": "http.response.body", "body": b"1"})
            at_body[scope["path"]] = list(fakes[scope["path"]].calls)

        state, protocols = ServerState(), []

        def request(path: str) -> None:
            fakes[path] = FakeTransport()
            protocols.append(opened(app, state, fakes[path]))
            protocols[-1].data_received(b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n" % path.encode())

        request("/a")
        request("/b")
        owed.append(OWED.count)
        await asyncio.sleep(0.05)
        owed.append(OWED.count)
        request("/alone")
        await asyncio.sleep(0.05)
        for protocol in protocols:
            protocol.connection_lost(None)
        owed.append(OWED.count)

    before = OWED.count
    asyncio.run(main())
    answer = ("writelines", [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1\r\n\r\n", b"1"])
    assert at_body == {"/a": [], "/b": [], "/alone": [answer]}
    assert {path: fake.calls for path, fake in fakes.items()} == {path: [answer, ("close",)] for path in fakes}
    assert owed == [before + 2, before, before]


def test_a_connection_lost_before_its_answer_owes_nothing():
    async def main():
        protocol = opened()
        protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n12")  # body cut short
        during = OWED.count
        protocol.connection_lost(None)
        await asyncio.sleep(0.05)
        return during

    before = OWED.count
    assert asyncio.run(main()) == before + 1
    assert OWED.count == before


def test_a_connection_settles_when_it_sends_closes_aborts_or_is_reset():
    async def main():
        loop, owed, seen = asyncio.get_running_loop(), Owed(), []
        for end in ("flush", "close", "abort"):
            corked = CorkedTransport(FakeTransport(), loop, owed)
            corked.expect(1)
            corked.expect(2)  # a second head before the answer (pipelining) counts once
            seen.append(owed.count)
            if end == "flush":
                corked.write(b"answer")
                await asyncio.sleep(0)
            else:
                getattr(corked, end)()
            seen.append(owed.count)
        protocol = opened()
        before = OWED.count
        protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n12")
        seen.append(OWED.count - before)
        protocol.connection_lost(ConnectionResetError())  # reset by the peer, not closed by uvicorn
        seen.append(OWED.count - before)
        return seen

    assert asyncio.run(main()) == [1, 0, 1, 0, 1, 0, 1, 0]


def test_a_connection_is_not_read_while_more_than_pipeline_requests_wait_for_their_answers():
    # uvicorn resumes reading after each answer, whatever it has queued: a client that sends
    # requests and never reads the answers had them all queued (hundreds of MB), without end.
    from service.http.corked import PIPELINE

    async def main():
        release = asyncio.Event()

        async def slow(scope, receive, send):
            await release.wait()
            await answer(scope, receive, send)

        fake = FakeTransport()
        protocol = opened(app=slow, fake=fake)
        n = PIPELINE + 8
        protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n" * n)
        await asyncio.sleep(0.05)
        reading = [(0, [c[0] for c in fake.calls if c[0].endswith("reading")])]
        answered = 0
        while answered < n:  # one answer at a time, each a step of the loop
            release.set()
            await asyncio.sleep(0)
            release.clear()
            answered = sum(1 for c in fake.calls for d in (c[1] if c[0] == "writelines" else [c[1]] if c[0] == "write"
                                                            else []) if d.startswith(b"HTTP/1.1 200"))
            reading.append((answered, [c[0] for c in fake.calls if c[0].endswith("reading")]))
            if answered == 1:
                after_first = reading[-1][1]
        protocol.connection_lost(None)
        return reading[0], after_first, reading, answered

    first, after_first, reading, answered = asyncio.run(main())
    assert first == (0, ["pause_reading"]) and after_first == ["pause_reading"]  # still paused after uvicorn resumes
    resumed = next(n for n, calls in reading if calls == ["pause_reading", "resume_reading"])
    assert resumed == 8 and reading[-1][1] == ["pause_reading", "resume_reading"], reading  # PIPELINE left waiting
    assert answered == PIPELINE + 8


def test_only_a_complete_head_makes_a_connection_owe():
    # The rest of a body, or the start of the next head, is no new request: after the answer,
    # the connection owes nothing until the next head is complete.
    async def main():
        protocol = opened()
        before, seen = OWED.count, []
        for chunk in (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n12", b"34",
                      b"POST / HTTP/1.1\r\nhost: x\r\n", b"content-length: 0\r\n\r\n"):
            protocol.data_received(chunk)
            seen.append(OWED.count - before)
            await asyncio.sleep(0.05)  # the app answers once the body is complete
            seen.append(OWED.count - before)
        protocol.connection_lost(None)
        return seen

    assert asyncio.run(main()) == [1, 1, 1, 0, 0, 0, 1, 0]


def test_an_upgrade_the_scan_missed_is_refused_by_the_guard():
    # Past an upgrade neither the guard's parser nor uvicorn's reads on: the request lost its body,
    # and the connection escaped the head limits. This server speaks HTTP/1.1 alone: a 400, closed.
    async def main():
        fake = FakeTransport()
        guard = Guard(Limits(10, 8192, 5.0), fake, asyncio.get_running_loop())
        admitted = guard.admit(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        guard.lost()
        return admitted, fake.calls

    admitted, calls = asyncio.run(main())
    assert admitted is False and calls[0][1].startswith(b"HTTP/1.1 400 ") and calls[-1] == ("close",)
    assert b"this server speaks HTTP/1.1 only: send the request without an Upgrade header" in calls[0][1]


@pytest.mark.parametrize("chunks", [
    # the head in pieces, the Upgrade line in a later one
    [b"POST /a HTTP/1.1\r\nhost: x\r\n", b"upgrade: h2c\r\nconnection: upgrade\r\ncontent-length: 3\r\n\r\nabc"],
    # the head's last line break (or half of it) and the body in the next chunk, the body holding such a line
    [b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r", b"\nx\r\nupgrade: h2c\r\n\r\ny"],
    [b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n", b"\r\nx\r\nupgrade: h2c\r\n\r\ny"],
])
def test_a_head_in_pieces_is_never_scanned_for_an_upgrade(chunks):
    # The scan once took the first blank line of a later chunk for the head's end, and cut a line
    # out of the body; a missed upgrade is refused, never served without its body.
    *_, calls = exchange(*chunks)
    upgrade_in_head = b"upgrade: h2c\r\nconnection" in chunks[1]
    if upgrade_in_head:
        assert calls[0][1].startswith(b"HTTP/1.1 400 ") and calls[-1] == ("close",)
    else:
        assert calls == [("writelines", [HEAD.replace(b"length: 1", b"length: 2"), b"20"]), ("close",)]


def test_blank_lines_before_a_head_do_not_hide_its_upgrade():
    *_, calls = exchange(b"\r\n\r\nPOST /a HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: h2c\r\n"
                         b"content-length: 3\r\n\r\nabc")
    assert calls == [("writelines", [HEAD, b"3"]), ("close",)]


def _guarded(chunks: list[bytes], max_head: int = 1000) -> tuple[list[bool], list[tuple]]:
    """What a guard with a `max_head`-byte limit admits of `chunks`, and what it wrote."""
    async def main():
        fake = FakeTransport()
        guard = Guard(Limits(10, max_head, 5.0), fake, asyncio.get_running_loop())
        admitted = [guard.admit(chunk) for chunk in chunks]
        guard.lost()
        return admitted, fake.calls

    return asyncio.run(main())


def _post(body: bytes, path: bytes = b"/predict") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (path, len(body), body)


GET = b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n"


@pytest.mark.parametrize("cut", [100, 3000, 5050, 5055, 5062])
def test_a_head_after_the_rest_of_a_body_counts_from_where_it_begins(cut):
    # A chunk that starts inside a 5,000-byte body and holds the next request: the body's bytes
    # are no part of the next head (they once counted, and a valid request got 431).
    stream = _post(b"x" * 5000) + _post(b"{}") + GET
    admitted, calls = _guarded([stream[:cut], stream[cut:]])
    assert admitted == [True, True] and calls == []


def test_many_pipelined_heads_in_one_chunk_count_one_by_one():
    # 200 small requests and the start of the next in one chunk: each head is small.
    stream = (GET + _post(b"{}")) * 100 + GET
    admitted, calls = _guarded([stream[:-10], stream[-10:]])
    assert admitted == [True, True] and calls == []


@pytest.mark.parametrize("cuts", [[-1], [-2], [-3], [-4], [-3, -2], [-4, -3, -2, -1]])
def test_a_blank_line_split_between_chunks_ends_the_head_there(cuts):
    # The head ends at the blank line that straddles the chunks (one byte of it per chunk, even),
    # not at one later in the body.
    head = b"POST / HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 500
    body = b"b" * 700 + b"\r\n\r\n"
    stream = head + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
    bounds = [0, *(len(stream) + c for c in cuts), len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    chunks[-1] += body + GET
    admitted, calls = _guarded(chunks)
    assert admitted == [True] * len(chunks) and calls == []


def _chunked(pieces: list[bytes]) -> bytes:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return b"POST /predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"


BIG = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 1200 + b"\r\n\r\n"


@pytest.mark.parametrize("before", [b"\r\n\r\n", b"\r\n" * 300, _chunked([b"hello"]), _post(b"x" * 20)])
def test_a_large_head_is_refused_whatever_comes_before_it_in_the_chunk(before):
    # Blank lines before a request line (which the parser skips), or a chunked body's terminator,
    # once looked like the head's end: a head of any size passed in one chunk.
    admitted, calls = _guarded([before + BIG])
    assert admitted == [False] and calls[0][1].startswith(b"HTTP/1.1 431 ")


def test_a_chunked_body_of_many_small_chunks_before_a_request_is_no_head():
    # 3,000 one-byte chunks: 18,000 bytes of framing the parser does not hand over as body.
    admitted, calls = _guarded([_chunked([b"x"] * 3000) + GET])
    assert admitted == [True] and calls == []


@pytest.mark.parametrize("cut", [None, 5100, 5200])
def test_a_large_head_after_a_body_is_still_refused(cut):
    big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 1200 + b"\r\n\r\n"
    stream = _post(b"x" * 5000) + big + GET
    admitted, calls = _guarded([stream] if cut is None else [stream[:cut], stream[cut:]])
    assert admitted[-1] is False
    assert calls[0][1].startswith(b"HTTP/1.1 431 ") and calls[-1] == ("close",)


def test_refusals_are_counted_and_logged_at_most_once_a_minute(caplog, monkeypatch):
    # The guard's answers never reach the app: they left no metric and no log line. A burst's
    # later refusals are in the line written when the minute is up, not left unsaid.
    monkeypatch.setattr(limits, "LOG_EVERY", 0.2)

    async def main():
        state = Limits(10, 1024, 5.0)
        for _ in range(3):
            guard = Guard(state, FakeTransport(), asyncio.get_running_loop())
            guard.admit(b"GET / HTTP/1.1\r\nx-big: " + b"a" * 2000 + b"\r\n\r\n")
            guard.lost()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        return state.refusals

    assert asyncio.run(main()) == {"head_too_large": 3}
    said = "connections refused since start (head_too_large: {}); logged at most once a minute, each counted in " \
        "tinyserve_connections_refused_total"
    assert [r.getMessage() for r in caplog.records if r.name == "service.http.limits"] == [said.format(1), said.format(3)]


def _rss_kb(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("VmRSS:")[1].split()[0])


def test_a_client_that_pipelines_without_reading_cannot_fill_the_servers_memory(model_root, tmp_path):
    # Requests sent for a few seconds on one connection whose client reads nothing: uvicorn alone
    # queued every one it read (267 MB in a run of this test) long after the answers had stopped;
    # now what one read brings, beyond the PIPELINE waiting, is the most it queues.
    procs = []
    env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_LOG_LEVEL": "warning", "TINYSERVE_POLL_SECONDS": "0"}
    with helpers.running_server(env, tmp_path / "server.log", procs=procs) as url:
        host, port = url.removeprefix("http://").split(":")
        before = _rss_kb(procs[0].pid)
        chunk = b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n" * 1000
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((host, int(port)))
            s.setblocking(False)
            sent, deadline = 0, time.monotonic() + 4
            while time.monotonic() < deadline:
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    time.sleep(0.01)
            grown = _rss_kb(procs[0].pid) - before
            assert httpx.get(f"{url}/health/live").status_code == 200  # the others are still served
    assert grown < 64 * 1024, f"the server grew by {grown} kB while a client sent {sent} bytes of requests"
