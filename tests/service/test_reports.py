"""Each version's training report, served from the default model repository."""

from __future__ import annotations

import pytest

from service.config import DEFAULT_MODEL_ROOT, Settings
from service.main import create_app
from tests.service import helpers

pytestmark = pytest.mark.anyio
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def default_client():
    async with helpers.serve(create_app(Settings(model_root=DEFAULT_MODEL_ROOT, poll_seconds=0))) as client:
        yield client


async def test_report_markdown(default_client):
    response = await default_client.get("/models/digits/versions/1/report")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert response.text.startswith("# digits version 1")
    same = await default_client.get("/models/digits/versions/1/report/report.md")
    assert same.text == response.text


@pytest.mark.parametrize("name", ["digits", "digits-binary", "digit-traits", "diabetes"])
async def test_report_files_listed_and_served(default_client, name):
    detail = (await default_client.get(f"/models/{name}/versions/1")).json()
    assert f"/models/{name}/versions/1/report/report.md" in detail["report"]
    pngs = [url for url in detail["report"] if url.endswith(".png")]
    assert pngs
    for url in pngs:
        response = await default_client.get(url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG)


async def test_confusion_matrix(default_client):
    response = await default_client.get("/models/digits/versions/1/report/confusion_matrix.png")
    assert response.status_code == 200 and response.content.startswith(PNG)


@pytest.mark.parametrize("url", ["/models/digits/versions/1/report/nope.png", "/models/digits/versions/2/report",
                                 "/models/nope/versions/1/report", "/models/digits/versions/1/report/model.onnx",
                                 "/models/digits/versions/1/report/card.json"])
async def test_missing_report_files_are_json_404(default_client, url):
    response = await default_client.get(url)
    assert response.status_code == 404 and list(response.json()) == ["error"]


async def test_version_without_report(client):
    response = await client.get("/models/tiny-regression/versions/1/report")
    assert response.status_code == 404 and "no report file 'report.md'" in response.json()["error"]
    assert (await client.get("/models/tiny-regression/versions/1")).json()["report"] == []
