"""Property test of the whole HTTP surface, driven by the app's own OpenAPI document.

Every operation the app publishes (native, V2, TF Serving, models, reports, admin, health,
metrics) gets random path parameters (traversal strings and odd bytes included) and random JSON
or raw bodies: the server must never answer 5xx, and every error must be `{"error": str}` JSON.
"""

from __future__ import annotations

import json
import re
from functools import partial
from urllib.parse import quote

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings, strategies as st

from service.config import Settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import STANDARD

NAMES = [s.name for s in STANDARD]
TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from tests.service.helpers import standard_repository

    root = standard_repository(tmp_path_factory.mktemp("fuzz"))
    app = create_app(Settings(model_root=root, api_tokens=TOKEN, poll_seconds=0, max_rows=100,
                              max_body_bytes=64 * 1024))
    # A sync facade over the in-process async client, for hypothesis' sync test functions.
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(helpers.serve(app)) as aclient:
        yield lambda method, path, **kw: portal.call(partial(aclient.request, method, path, **kw))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Requests straight to the ASGI app, header bytes exactly as drawn (no client checks them)."""
    from tests.service.helpers import standard_repository

    root = standard_repository(tmp_path_factory.mktemp("fuzz-raw"))
    app = create_app(Settings(model_root=root, api_tokens=TOKEN, poll_seconds=0, max_rows=100,
                              max_body_bytes=64 * 1024))
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(helpers.serve(app)):
        yield lambda *args: portal.call(helpers.raw_request, app, *args)


@pytest.fixture(scope="module")
def operations(client):
    spec = client("GET", "/openapi.json").json()
    return sorted((method.upper(), path) for path, item in spec["paths"].items() for method in item)


param = st.one_of(st.sampled_from(NAMES), st.sampled_from(["1", "2", "0", "01", "-1", "99999999999", "report.md",
                                                           "confusion_matrix.png", "..", "../x", "%2e%2e",
                                                           "a:predict", "x" * 300]),
                  st.text(min_size=1, max_size=20))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "version", "instances", "inputs", "outputs", "top_k", "format", "name", "shape",
                         "datatype", "data", "signature_name", "parameters", "x"]) | st.text(max_size=5),
        inner, max_size=5),
    max_leaves=20)
bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_5xx_and_json_errors_everywhere(client, operations, data):
    method, template = data.draw(st.sampled_from(operations))
    path = re.sub(r"\{(\w+)\}", lambda m: quote(data.draw(param, label=m.group(1)), safe=""), template)
    body = data.draw(bodies) if method == "POST" else None
    auth = data.draw(st.sampled_from([TOKEN, "wrong", None]))
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    response = client(method, path, content=body, headers=headers)
    assert response.status_code < 500, (method, path, body, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json", (path, response.text)
        error = response.json()
        assert list(error) == ["error"] and isinstance(error["error"], str)


# Every header the service reads, a few it must ignore; values of any bytes, and some that look
# like numbers to `str.isdigit` but not to `int` (superscripts, other scripts' digits).
HEADER_NAMES = [b"content-length", b"content-encoding", b"inference-header-content-length", b"x-request-id",
                b"authorization", b"content-type", b"transfer-encoding", b"accept", b"host"]
TRICKY = [b"\xb2", b"1\xb9", b"\xc2\xb2", "\u0663".encode(), b" 12 ", b"-1", b"1e3", b"",
          b"99999999999999999999999", b"gzip", b"GZIP, br", b"Bearer fuzz-token"]
tricky = st.sampled_from(TRICKY)
header_values = st.one_of(tricky, st.binary(max_size=40), st.text(max_size=20).map(str.encode), tricky)


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_no_header_a_client_sends_gives_a_5xx(raw, operations, data):
    method, template = data.draw(st.sampled_from(operations))
    path = re.sub(r"\{(\w+)\}", lambda m: quote(data.draw(param, label=m.group(1)), safe=""), template)
    # Each known header present or not, plus a few of any name; a valid token on most requests,
    # so that the body and its headers are read rather than refused at the door.
    headers = [(name, data.draw(header_values, label=name.decode())) for name in HEADER_NAMES
               if data.draw(st.booleans(), label=f"send {name.decode()}")]
    headers += data.draw(st.lists(st.tuples(st.binary(min_size=1, max_size=10).map(bytes.lower), header_values),
                                  max_size=2), label="others")
    if data.draw(st.integers(0, 3), label="token"):
        headers.append((b"authorization", b"Bearer " + TOKEN.encode()))
    body = data.draw(bodies) if method == "POST" else b""
    status, out_headers, out = raw(method, path.encode(), body, headers)
    assert status < 500, (method, path, headers, out)
    if status >= 400:
        assert out_headers["content-type"] == "application/json", (path, headers, out)
        assert list(json.loads(out)) == ["error"]


def test_every_known_header_with_every_tricky_value_on_every_route(raw, operations):
    # The systematic half of the property test above: a real model and version in every path, so
    # that each route gets as far as reading its headers and body.
    token = (b"authorization", b"Bearer " + TOKEN.encode())
    for method, template in operations:
        path = template.format(name="tiny-binary", version="1", file="report.md").encode()
        body = b'{"instances": [[1, 2, 3]]}' if method == "POST" else b""
        for name in HEADER_NAMES:
            for value in TRICKY:
                status, out_headers, out = raw(method, path, body, [(name, value), token])
                assert status < 500 and (status < 400 or out_headers["content-type"] == "application/json"), \
                    (method, path, name, value, status, out)


def test_openapi_covers_every_protocol(operations):
    paths = {p for _, p in operations}
    assert {"/predict", "/v2/models/{name}/infer", "/v1/models/{name}:predict", "/admin/reload",
            "/models/{name}/versions/{version}/report/{file}", "/metrics"} <= paths
