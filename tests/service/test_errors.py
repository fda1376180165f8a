"""Every failure is JSON {"error": ...} with a deliberate status; never a 422, never a bare 500."""

from __future__ import annotations

import gzip
import json
import logging
import zlib

import httpx
import orjson
import pytest

from service import errors, repository, runtime
from service.config import Settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import DATA

pytestmark = pytest.mark.anyio

BAD_REQUESTS = json.loads((DATA / "bad_requests.json").read_text())


def assert_error(response: httpx.Response, status: int, contains: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = orjson.loads(response.content)
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert contains in body["error"]
    return body["error"]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c["id"] for c in BAD_REQUESTS])
async def test_bad_requests(client, case):
    kwargs = {"content": case["raw"].encode()} if "raw" in case else {}
    if "json" in case:
        kwargs = {"content": orjson.dumps(case["json"]), "headers": {"content-type": "application/json"}}
    response = await client.request(case.get("method", "POST"), case["path"], **kwargs)
    assert_error(response, case["status"], case["error"])


async def test_messages_quoting_a_huge_request_are_cut(client):
    name = "m" * 50_000  # the test settings take bodies of up to 64 KiB
    message = assert_error(await client.post("/predict", json={"model": name, "instances": [[0, 0, 0]]}), 404)
    assert message.startswith("unknown model 'mmm") and message.endswith(" more characters)")
    assert len(message) < errors.MESSAGE_LIMIT + 40
    keys = {f"k{i}": 1 for i in range(4_000)}  # a 400 listing every unknown key, cut
    message = assert_error(await client.post("/predict", json={**keys, "instances": [[0, 0, 0]]}), 400)
    assert len(message) < errors.MESSAGE_LIMIT + 40 and "k0" in message


# Every protocol reads its body through the one `read_body`: a compressed body is one on each.
COMPRESSED = [("/predict", {"model": "tiny-regression", "instances": [[1, 2]]}, "predictions", [{"value": 9.0}]),
              ("/v1/models/tiny-regression:predict", {"instances": [[1, 2]]}, "predictions", [[9.0]]),
              ("/v2/models/tiny-regression/infer",
               {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, "outputs", None)]


def _two_members(data: bytes) -> bytes:
    return gzip.compress(data[:7]) + gzip.compress(data[7:])  # RFC 1952: one body, two gzip members


@pytest.mark.parametrize("path, body, key, expected", COMPRESSED, ids=["predict", "tfserving", "v2"])
@pytest.mark.parametrize("headers, compress", [
    ([("Content-Encoding", "gzip")], gzip.compress), ([("Content-Encoding", "deflate")], zlib.compress),
    ([("Content-Encoding", "identity")], bytes), ([("Content-Encoding", " X-GZIP ")], gzip.compress),
    ([("Content-Encoding", "gzip")], _two_members),
    ([("Content-Encoding", "deflate, gzip")], lambda data: gzip.compress(zlib.compress(data))),
    ([("Content-Encoding", "identity"), ("Content-Encoding", "gzip")], gzip.compress),  # two fields: one list
], ids=["gzip", "deflate", "identity", "x-gzip", "gzip-members", "deflate-then-gzip", "two-fields"])
async def test_compressed_requests(client, path, body, key, expected, headers, compress):
    response = await client.post(path, content=compress(orjson.dumps(body)), headers=headers)
    assert response.status_code == 200, response.text
    got = response.json()[key]
    assert got == expected if expected is not None else got[0]["data"] == [9.0]


GZIPPED = gzip.compress(orjson.dumps(COMPRESSED[0][1]))


@pytest.mark.parametrize("path", [path for path, *_ in COMPRESSED], ids=["predict", "tfserving", "v2"])
@pytest.mark.parametrize("encoding, body, status, error", [
    ("br", b"{}", 415, "Content-Encoding 'br' is not supported; use gzip, deflate or none"),
    ("gzip, utf-8", b"{}", 415, "Content-Encoding 'utf-8' is not supported"),
    ("gzip", b"not gzip", 400, "body is not valid gzip data"),
    ("gzip", GZIPPED[:-8], 400, "body is not valid gzip data: it ends before its compressed stream does"),
    ("gzip", GZIPPED + b"garbage!", 400, "body is not valid gzip data"),
    ("deflate", zlib.compress(b"{}") + b"x", 400, "body is not valid deflate data: 1 bytes follow"),
    ("gzip", gzip.compress(b" " * (64 * 1024 + 1)), 413, "decompressed request body exceeds the limit"),
], ids=["unsupported", "unsupported-in-list", "not-gzip", "cut-short", "trailing-bytes", "after-deflate", "bomb"])
async def test_bad_compressed_requests(client, path, encoding, body, status, error):
    assert_error(await client.post(path, content=body, headers={"Content-Encoding": encoding}), status, error)


@pytest.mark.parametrize("path", [path for path, *_ in COMPRESSED], ids=["predict", "tfserving", "v2"])
async def test_a_gzip_body_without_its_content_encoding_is_said_to_be_one(client, path):
    # It was "malformed JSON: str is not valid UTF-8: surrogates not allowed".
    assert_error(await client.post(path, content=GZIPPED), 400,
                 "malformed JSON: the body is gzip-compressed; send it compressed once, with Content-Encoding: gzip")
    # sent with it, but compressed twice: the message must not only ask for the header it had
    assert_error(await client.post(path, content=gzip.compress(GZIPPED), headers={"Content-Encoding": "gzip"}), 400,
                 "malformed JSON: the body is gzip-compressed; send it compressed once, with Content-Encoding: gzip")


@pytest.mark.parametrize("word, at", [("NaN", 33), ("Infinity", 33), ("-Infinity", 34)])
async def test_nan_and_infinity_in_a_body_are_named(client, word, at):
    # Python's json.dumps writes them (pandas' to_dict of a missing value): a missing value is null.
    body = '{"model": "é", "instances": [[1, %s, 3]]}' % word  # a character of two bytes before it
    assert_error(await client.post("/predict", content=body.encode()), 400,
                 f"malformed JSON: {word} is not a JSON value: line 1 column {at + 1} (char {at}); "
                 "a missing value is null")


async def test_more_rows_than_the_maximum(client, settings):
    body = {"model": "tiny-binary", "instances": [[0, 0, 0]] * (settings.max_rows + 1)}
    assert_error(await client.post("/predict", json=body), 400, "at most 100 rows per request, got 101")


async def test_declared_body_over_the_limit_is_413(client, settings):
    big = b" " * (settings.max_body_bytes + 1)
    assert_error(await client.post("/predict", content=big), 413, f"exceeds the limit of {settings.max_body_bytes} bytes")


async def test_streamed_body_over_the_limit_is_413(client, settings):
    async def chunks():  # no Content-Length: the limit must hold on what actually arrives
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    response = await client.post("/models/tiny-binary/predict", content=chunks())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request body exceeds the limit")


async def test_body_at_the_limit_is_read(client, settings):
    body = orjson.dumps({"model": "tiny-binary", "instances": [[0, 0, 0]]})
    padded = body + b" " * (settings.max_body_bytes - len(body))
    assert (await client.post("/predict", content=padded)).status_code == 200


async def test_failed_model_is_503_and_others_serve(tmp_path):
    helpers.write_model(tmp_path, helpers.BINARY)
    helpers.edit_card(helpers.write_model(tmp_path, helpers.REGRESSION), sha256="0" * 64)
    async with helpers.serve(create_app(Settings(model_root=tmp_path))) as client:
        assert_error(await client.post("/models/tiny-regression/predict", json={"instances": [[0, 0]]}),
                     503, "model 'tiny-regression' has no version ready to serve")
        assert_error(await client.post("/models/tiny-regression/versions/1/predict", json={"instances": [[0, 0]]}),
                     503, "version 1 is not serving: model.onnx sha256 is")
        ok = await client.post("/models/tiny-binary/predict", json={"instances": [[0, 0, 0]]})
        assert ok.status_code == 200


async def test_before_loading_everything_is_503(app):
    # ASGITransport alone does not run the lifespan: this is the app before models are loaded.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_error(await client.post("/predict", json={"instances": [[0]]}), 503, "models are still loading")
        assert_error(await client.get("/models"), 503, "models are still loading")
        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and "models are still loading" in ready.json()["error"]
        assert (await client.get("/health/live")).status_code == 200


async def test_unexpected_exception_is_a_logged_json_500(app, monkeypatch, caplog):
    def explode(session, *signature):
        def run(batch):
            raise RuntimeError("onnxruntime fell over")
        return run

    # Patched before the models load: a model's batcher takes its `run` when the model loads.
    monkeypatch.setattr(repository, "_replay_golden", lambda model: None)
    monkeypatch.setattr(repository, "_smoke_run", lambda model: None)
    monkeypatch.setattr(runtime, "_runner", explode)
    async with helpers.serve(app) as client:
        with caplog.at_level(logging.ERROR, logger="service.errors"):
            response = await client.post("/models/tiny-binary/predict", json={"instances": [[0, 0, 0]]})
    assert_error(response, 500, "internal error")
    assert "onnxruntime fell over" not in response.text
    assert any("onnxruntime fell over" in r.getMessage() or "onnxruntime fell over" in str(r.exc_info)
               for r in caplog.records)


async def test_request_validation_errors_are_400_not_422(app):
    @app.api.get("/probe")
    async def probe(n: int) -> dict:
        return {"n": n}

    async with helpers.serve(app) as client:
        message = assert_error(await client.get("/probe", params={"n": "x"}), 400, "invalid request: query.n")
    assert "integer" in message


async def test_405_keeps_the_allow_header(client):
    response = await client.get("/predict")
    assert_error(response, 405)
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("method, path", [("POST", "/v2/models/tiny-regression/infer/"),
                                          ("POST", "/v1/models/tiny-regression:predict/"),
                                          ("GET", "/health/ready/")])
async def test_a_trailing_slash_is_a_404_not_an_empty_redirect(client, method, path):
    # A 307 to the path without it answered an API client's POST with no body and no JSON.
    assert_error(await client.request(method, path, json={}), 404, f"no route matches this {method} request's path")


async def test_a_get_of_a_tf_serving_method_is_405_with_its_allow_header(client):
    for path in ("/v1/models/tiny-regression:predict", "/v1/models/tiny-regression/versions/1:predict"):
        response = await client.get(path)
        assert_error(response, 405, "':predict' takes POST, not GET")
        assert response.headers["allow"] == "POST"


async def test_a_client_gone_mid_body_is_not_a_server_error(app, caplog):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"t"), (b"content-length", b"100")], "client": ("127.0.0.1", 1),
             "server": ("t", 80), "state": {}}
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async with helpers.serve(app) as client:
        with caplog.at_level(logging.ERROR):
            await app(scope, receive, send)
        text = (await client.get("/metrics")).text
    assert sent == []  # nobody to answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert helpers.metric(text, "tinyserve_requests_total", endpoint="/predict", status="499") == 1
    assert helpers.metric(text, "tinyserve_requests_total", endpoint="/predict", status="500") is None
