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
        st.sampled_from(["model", "version", "instances", "inputs", "outputs", "top_k", "name", "shape",
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


def test_openapi_covers_every_protocol(operations):
    paths = {p for _, p in operations}
    assert {"/predict", "/v2/models/{name}/infer", "/v1/models/{name}:predict", "/admin/reload",
            "/models/{name}/versions/{version}/report/{file}", "/metrics"} <= paths
