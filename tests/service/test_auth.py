"""Bearer tokens, admin switch, and names from URLs or bodies never reaching the filesystem."""

from __future__ import annotations

import logging
import shutil
import os
import subprocess
import sys

import pytest

from service.config import Settings, SettingsError, get_settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import REGRESSION, write_model

pytestmark = pytest.mark.anyio
TOKENS = "first-token,second-token"
ROW = {"instances": [[1, 2]]}
V2_BODY = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
PROTECTED = [
    ("POST", "/predict", {"json": {"model": "tiny-regression", **ROW}}),
    ("POST", "/models/tiny-regression/predict", {"json": ROW}),
    ("POST", "/models/tiny-regression/versions/1/predict", {"json": ROW}),
    ("POST", "/v2/models/tiny-regression/infer", {"json": V2_BODY}),
    ("POST", "/v2/models/tiny-regression/versions/1/infer", {"json": V2_BODY}),
    ("POST", "/v1/models/tiny-regression:predict", {"json": ROW}),
    ("POST", "/v1/models/tiny-regression/versions/1:predict", {"json": ROW}),
    ("GET", "/models", {}), ("GET", "/v2/models/tiny-regression", {}), ("GET", "/v1/models/tiny-regression", {}),
    ("GET", "/models/tiny-regression/versions/1/report", {}),
    ("POST", "/admin/reload", {}),
]
OPEN = ["/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json", "/docs"]


@pytest.fixture
async def secured(tmp_path):
    # With a report, every protected route exists: a valid token must get 200 on each.
    report = write_model(tmp_path, REGRESSION) / "report"
    report.mkdir()
    (report / "report.md").write_text("# tiny-regression version 1\n")
    async with helpers.serve(create_app(Settings(model_root=tmp_path, api_tokens=TOKENS))) as client:
        yield client


@pytest.mark.parametrize("method, path, kwargs", PROTECTED)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer first-token-x", "first-token", "Basic Zmlyc3Q="])
async def test_protected_routes_need_a_valid_token(secured, method, path, kwargs, auth):
    headers = {"Authorization": auth} if auth else {}
    response = await secured.request(method, path, headers=headers, **kwargs)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert list(response.json()) == ["error"] and "bearer token" in response.json()["error"]


@pytest.mark.parametrize("method, path, kwargs", PROTECTED)
@pytest.mark.parametrize("token", ["first-token", "second-token"])
async def test_any_configured_token_opens_them(secured, method, path, kwargs, token):
    response = await secured.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", OPEN)
async def test_probes_metrics_and_docs_stay_open(secured, path):
    assert (await secured.get(path)).status_code == 200


async def test_admin_can_be_switched_off_with_tokens(tmp_path):
    write_model(tmp_path, REGRESSION)
    settings = Settings(model_root=tmp_path, api_tokens=TOKENS, admin_enabled=False)
    async with helpers.serve(create_app(settings)) as client:
        response = await client.post("/admin/reload", headers={"Authorization": "Bearer first-token"})
        assert response.status_code == 404


def test_tokens_parse_from_a_list_or_commas_and_stay_out_of_repr(monkeypatch):
    monkeypatch.setenv("TINYSERVE_API_TOKENS", '["a", "b"]')
    assert Settings().api_tokens == ("a", "b") and Settings().admin
    monkeypatch.setenv("TINYSERVE_API_TOKENS", " a , b ")
    assert Settings().api_tokens == ("a", "b") and "a" not in repr(Settings()).split("model_root")[0]
    monkeypatch.delenv("TINYSERVE_API_TOKENS")
    assert Settings().api_tokens == () and not Settings().admin


# Set but unusable: each must stop start-up rather than turn auth off (fail closed).
@pytest.mark.parametrize("value, why", [
    ("", "holds no token"), ("  ", "holds no token"), ("[]", "holds no token"),
    (" , ", "an empty entry"), ("a,,b", "an empty entry"), ("a,", "an empty entry"),
    ('[""]', "an empty entry"), ('["a", " "]', "an empty entry"), ("[1,2]", "JSON type number"),
    ('["a", null]', "JSON type NoneType"), ("[", "not a JSON list"), ('{"a": 1', "spaces or non-ASCII"),
    ("two words", "spaces or non-ASCII"), ("caf\u00e9", "spaces or non-ASCII"),
])
def test_a_token_setting_without_usable_tokens_stops_start_up(monkeypatch, value, why):
    monkeypatch.setenv("TINYSERVE_API_TOKENS", value)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match=why) as refused:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert str(refused.value).startswith("TINYSERVE_API_TOKENS: ") and "\n" not in str(refused.value)


def test_python_m_service_ends_with_one_line_on_a_bad_token_setting(tmp_path):
    env = {**os.environ, "TINYSERVE_API_TOKENS": "[1,2]", "TINYSERVE_MODEL_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=helpers.REPO_ROOT)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "python -m service: error: TINYSERVE_API_TOKENS: must be non-empty tokens of visible ASCII characters "
        "(comma-separated or a JSON list of strings); got an entry of JSON type number"]


@pytest.mark.parametrize("tokens, admin, line, level", [
    ((), None, "auth off: no TINYSERVE_API_TOKENS, every route is open; admin routes off", "INFO"),
    (("a",), None, "auth on: 1 bearer token; admin routes on", "INFO"),
    (("a", "b"), None, "auth on: 2 bearer tokens; admin routes on", "INFO"),
    ((), True, "auth off: no TINYSERVE_API_TOKENS, every route is open; admin routes on, open to anyone: "
     "POST /admin/reload needs no token", "WARNING"),
])
async def test_start_up_log_says_whether_auth_is_on_and_never_the_tokens(tmp_path, caplog, tokens, admin, line,
                                                                          level):
    write_model(tmp_path, REGRESSION)
    caplog.set_level(logging.INFO, logger="service.main")
    settings = Settings(model_root=tmp_path, api_tokens=tokens, admin_enabled=admin, poll_seconds=0)
    async with helpers.serve(create_app(settings)):
        pass
    said = [(r.getMessage(), r.levelname) for r in caplog.records if r.name == "service.main"]
    assert said == [(line, level)]


# A complete, valid model outside the model root: every traversal attempt must miss it.
@pytest.fixture
async def fenced(tmp_path):
    write_model(tmp_path / "root", REGRESSION)
    write_model(tmp_path / "outside", REGRESSION.__class__(**{**REGRESSION.__dict__, "name": "evil"}))
    (tmp_path / "root" / "tiny-regression" / "1" / "report").mkdir()
    (tmp_path / "root" / "tiny-regression" / "1" / "report" / "report.md").write_text("# ok")
    (tmp_path / "secret.md").write_text("secret")
    app = create_app(Settings(model_root=tmp_path / "root", admin_enabled=True))
    async with helpers.serve(app):
        yield app, tmp_path


NAMES = ["../outside/evil", "..%2foutside%2fevil", "%2e%2e%2foutside%2fevil", "..%2Foutside%2Fevil",
         "%2e%2e/outside/evil", "/outside/evil", "%2Foutside%2Fevil", "..", "%2e%2e", "evil%00", "..%5coutside%5cevil"]
URLS = ["/models/{n}/predict", "/models/{n}/versions/1/predict", "/v2/models/{n}/infer", "/v2/models/{n}",
        "/v2/models/{n}/versions/1/infer", "/v1/models/{n}:predict", "/v1/models/{n}/versions/1:predict",
        "/v1/models/{n}/metadata", "/models/{n}", "/models/{n}/versions/1", "/models/{n}/versions/1/report",
        "/models/tiny-regression/versions/{n}", "/models/tiny-regression/versions/{n}/report",
        "/models/tiny-regression/versions/1/report/{n}"]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("name", NAMES)
async def test_traversal_in_urls_reaches_nothing(fenced, url, name):
    app, _ = fenced
    status, headers, body = await helpers.raw_request(app, "POST" if "pred" in url or "infer" in url else "GET",
                                                      url.format(n=name).encode(), b'{"instances": [[1, 2]]}')
    assert status in (400, 404, 405), (status, body)
    assert headers["content-type"] == "application/json" and b"secret" not in body


@pytest.mark.parametrize("name", ["../outside/evil", "/abs/outside/evil", "..\\outside\\evil", "../../etc/passwd",
                                  "tiny-regression/../../outside/evil", "..%2foutside%2fevil"])
async def test_traversal_in_the_body_reaches_nothing(fenced, name):
    app, root = fenced
    body = f'{{"model": "{name.replace(chr(92), chr(92) * 2)}", "instances": [[1, 2]]}}'.encode()
    status, _, out = await helpers.raw_request(app, "POST", b"/predict", body)
    assert status == 404 and b"unknown model" in out
    for version in ("../../outside/evil/1", "1/../1", "/1"):
        body = f'{{"model": "tiny-regression", "version": "{version}", "instances": [[1, 2]]}}'.encode()
        status, _, out = await helpers.raw_request(app, "POST", b"/predict", body)
        assert status in (400, 404), out


@pytest.mark.parametrize("file", ["../card.json", "..%2fcard.json", "%2e%2e%2fcard.json", "..%2f..%2f..%2fsecret.md",
                                  "%2fetc%2fpasswd", "report.md%00.png", "REPORT.MD", ".hidden.md", "card.json"])
async def test_report_file_traversal(fenced, file):
    app, _ = fenced
    status, _, body = await helpers.raw_request(
        app, "GET", f"/models/tiny-regression/versions/1/report/{file}".encode())
    assert status == 404 and b"secret" not in body and b"sha256" not in body


# `$` in a regex also matches before a trailing newline: every name, version and file segment
# must be matched whole, so "1%0A" is not version 1 and "x.md%0A" is not a report file.
@pytest.mark.parametrize("method, path", [
    ("POST", "/models/tiny-regression/versions/1%0A/predict"),
    ("POST", "/v2/models/tiny-regression/versions/1%0A/infer"),
    ("POST", "/v1/models/tiny-regression/versions/1%0A:predict"),
    ("GET", "/v2/models/tiny-regression/versions/1%0A"),
    ("GET", "/models/tiny-regression/versions/1%0A/report"),
    ("POST", "/models/tiny-regression%0A/predict"),
])
async def test_a_trailing_newline_never_names_a_version_or_model(tmp_path, method, path):
    write_model(tmp_path, REGRESSION)
    async with helpers.serve(create_app(Settings(model_root=tmp_path, poll_seconds=0))) as client:
        response = await client.request(method, path, **({"json": ROW} if method == "POST" else {}))
        assert response.status_code == 404, response.text
        assert set(response.json()) == {"error"}


def _outside_report(tmp_path):
    folder = tmp_path / "elsewhere" / "report"
    folder.mkdir(parents=True)
    (folder / "report.md").write_text("secret report")
    (folder / "secret.md").write_text("secret")
    return folder


@pytest.mark.parametrize("link", ["report", "version", "model", "inside"])
async def test_report_files_resolve_inside_the_model_root_whatever_part_is_a_link(tmp_path, link):
    root = tmp_path / "root"
    version = write_model(root, REGRESSION)
    report = _outside_report(tmp_path)
    if link == "report":  # the report folder links out of the root
        (version / "report").symlink_to(report, target_is_directory=True)
    elif link in ("version", "model"):  # a whole version (or model) folder that lives outside
        real = write_model(tmp_path / "elsewhere", REGRESSION)
        report.rename(real / "report")
        moved = version if link == "version" else version.parent
        shutil.rmtree(moved)
        moved.symlink_to(real if link == "version" else real.parent, target_is_directory=True)
    else:  # a link that stays inside the root is followed
        inner = root / "shared-report"
        report.rename(inner)
        (version / "report").symlink_to(inner, target_is_directory=True)
    async with helpers.serve(create_app(Settings(model_root=root, poll_seconds=0))) as client:
        assert (await client.post("/models/tiny-regression/predict", json=ROW)).status_code == 200
        for file in ("", "/report.md", "/secret.md"):
            response = await client.get(f"/models/tiny-regression/versions/1/report{file}")
            if link == "inside":
                assert response.status_code == 200 and "secret" in response.text
            else:
                assert response.status_code == 404 and "secret" not in response.text.replace("secret.md", "")
        listed = (await client.get("/models/tiny-regression/versions/1")).json().get("report", [])
        assert bool(listed) == (link == "inside")
