"""TF Serving REST: predict (row and columnar), model status, metadata, with bodies from its REST guide."""

from __future__ import annotations

import json

import httpx
import numpy as np
import orjson
import pytest

from service.config import Settings
from service.main import create_app
from service.types.tfserving import (ColumnarResponse, GetModelMetadataResponse, GetModelStatusResponse,
                                     RowResponse)
from tests.service import helpers
from tests.service.helpers import DATA
from tests.service.test_errors import assert_error

pytestmark = pytest.mark.anyio

TF_DATA = DATA.parent / "tfserving"
BAD_REQUESTS = json.loads((TF_DATA / "bad_requests.json").read_text())
ROWS = [[1.0, 2.0, 5.0], [3.0, 1.0, 0.5]]  # the rows of the tiny-features examples


def body(name: str) -> bytes:
    return (TF_DATA / name).read_bytes()


def features_probabilities(rows) -> list[list[float]]:
    return helpers.ref_softmax(helpers.FEATURES.logits(rows)).tolist()


async def test_half_plus_two_as_in_the_guide(client):
    # The guide's `curl -d '{"instances": [1.0, 2.0, 5.0]}' .../half_plus_two:predict`; our output is [rows, 1].
    response = await client.post("/v1/models/half-plus-two:predict", content=body("predict_half_plus_two.json"))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert RowResponse.model_validate(response.json()).predictions == [[2.5], [3.0], [4.5]]


@pytest.mark.parametrize("name, key", [("predict_signature_rows.json", "predictions"),
                                       ("predict_named_instances.json", "predictions"),
                                       ("predict_columnar_named.json", "outputs"),
                                       ("predict_columnar.json", "outputs")])
async def test_guide_formats_give_probabilities_per_row(client, name, key):
    response = await client.post("/v1/models/tiny-features:predict", content=body(name))
    assert response.status_code == 200, response.text
    parsed = (RowResponse if key == "predictions" else ColumnarResponse).model_validate(response.json())
    got = getattr(parsed, key)
    assert np.allclose(got, features_probabilities(ROWS), rtol=1e-6) and len(got) == 2 and len(got[0]) == 3


async def test_every_task(client):
    binary = (await client.post("/v1/models/tiny-binary:predict", json={"instances": [[1, 1, 1], [0, 0, 0]]})).json()
    multilabel = (await client.post("/v1/models/tiny-multilabel:predict", json={"inputs": [[1, 1]]})).json()
    regression = (await client.post("/v1/models/tiny-regression2:predict", json={"instances": [[1, 2]]})).json()
    np.testing.assert_allclose(binary["predictions"], [[1 / (1 + np.exp(-2.0))], [0.5]], rtol=1e-6)
    np.testing.assert_allclose(multilabel["outputs"], [helpers.ref_sigmoid(np.array([1.0, 1.0, 0.0]))], rtol=1e-6)
    assert regression == {"predictions": [[1.0, 2.5]]}


async def test_unknown_fields_are_ignored(client):
    plain = await client.post("/v1/models/tiny-binary:predict", json={"instances": [[1, 1, 1]]})
    extra = await client.post("/v1/models/tiny-binary:predict",
                              json={"instances": [[1, 1, 1]], "examples": [], "model_spec": {"name": "x"}})
    assert extra.status_code == plain.status_code == 200 and extra.json() == plain.json()


async def test_version_path_and_the_colon(client):
    rows = {"instances": [[0, 0, 0, 0]]}
    newest = (await client.post("/v1/models/tiny-multiclass:predict", json=rows)).json()["predictions"][0]
    older = (await client.post("/v1/models/tiny-multiclass/versions/1:predict", json=rows)).json()["predictions"][0]
    assert older == pytest.approx([1 / 3] * 3) and newest != older


async def test_a_version_is_a_number_and_the_default_signature_may_be_named_empty(client):
    # TF Serving reads the path's version as a number, and "" as the default signature: the
    # metadata's own "signature_name" sent back was a 400, "01" a 404.
    rows = {"instances": [[0, 0, 0, 0]]}
    first = await client.post("/v1/models/tiny-multiclass/versions/1:predict", json=rows)
    for path in ("/v1/models/tiny-multiclass/versions/01:predict", "/v1/models/tiny-multiclass/versions/001:predict"):
        assert (await client.post(path, json=rows)).json() == first.json()
    assert (await client.get("/v1/models/tiny-multiclass/versions/01")).json()["model_version_status"][0]["version"] == "1"
    assert (await client.get("/v1/models/tiny-multiclass/versions/01/metadata")).json()["model_spec"]["version"] == "1"
    long = "1" * 4301  # past the digits int() converts: a 500 for a moment
    assert (await client.get(f"/v1/models/tiny-multiclass/versions/{long}")).status_code == 404
    assert (await client.post(f"/v1/models/tiny-multiclass/versions/{long}:predict", json=rows)).status_code == 404
    named = await client.post("/v1/models/tiny-multiclass/versions/1:predict", json={**rows, "signature_name": ""})
    assert named.status_code == 200 and named.json() == first.json()


async def test_non_finite_outputs_are_null(client):
    got = (await client.post("/v1/models/nonfinite-regression:predict", json={"instances": [[4, 0], [-1, 0]]})).json()
    assert got == {"predictions": [[2.0], [None]]}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c["id"] for c in BAD_REQUESTS])
async def test_bad_requests(client, case):
    content = case["raw"].encode() if "raw" in case else orjson.dumps(case["json"]) if "json" in case else None
    assert_error(await client.request(case.get("method", "POST"), case["path"], content=content),
                 case["status"], case["error"])


async def test_model_status(client):
    status = GetModelStatusResponse.model_validate((await client.get("/v1/models/tiny-multiclass")).json())
    assert status.model_dump() == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}} for v in ("2", "1")]}
    one = (await client.get("/v1/models/tiny-multiclass/versions/1")).json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]


async def test_failed_version_status_and_predict(tmp_path):
    helpers.write_model(tmp_path, helpers.MULTICLASS_V1)
    helpers.edit_card(helpers.write_model(tmp_path, helpers.MULTICLASS_V2), sha256="0" * 64)
    async with helpers.serve(create_app(Settings(model_root=tmp_path))) as client:
        status = (await client.get("/v1/models/tiny-multiclass")).json()["model_version_status"]
        failed = await client.post("/v1/models/tiny-multiclass/versions/2:predict", json={"instances": [[0] * 4]})
        ok = await client.post("/v1/models/tiny-multiclass:predict", json={"instances": [[0] * 4]})
    assert status[0]["state"] == "END" and status[0]["status"]["error_code"] == "UNKNOWN"
    assert status[0]["status"]["error_message"].startswith("model.onnx sha256 is")
    assert status[1]["state"] == "AVAILABLE"
    assert_error(failed, 503, "version 2 is not serving")
    assert ok.status_code == 200


@pytest.mark.parametrize("path", ["/v1/models/tiny-features/metadata", "/v1/models/tiny-features/versions/1/metadata"])
async def test_metadata(client, path):
    meta = GetModelMetadataResponse.model_validate((await client.get(path)).json())
    dim = lambda n: {"size": n, "name": ""}  # noqa: E731
    assert meta.model_dump(by_alias=True) == {
        "model_spec": {"name": "tiny-features", "signature_name": "", "version": "1"},
        "metadata": {"signature_def": {"@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                                       "signature_def": {"serving_default": {
            "inputs": {"features": {"name": "features", "dtype": "DT_FLOAT",
                                    "tensor_shape": {"dim": [dim("-1"), dim("3")], "unknown_rank": False}}},
            "outputs": {"probabilities": {"name": "probabilities", "dtype": "DT_FLOAT",
                                          "tensor_shape": {"dim": [dim("-1"), dim("3")], "unknown_rank": False}}},
            "method_name": "tensorflow/serving/predict"}}}}}


async def test_regression_signature_names_the_raw_output(client):
    meta = (await client.get("/v1/models/half-plus-two/metadata")).json()
    assert list(meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]) == ["values"]


async def test_more_rows_than_the_maximum(client, settings):
    response = await client.post("/v1/models/tiny-features:predict", json={"inputs": [[0, 0, 0]] * (settings.max_rows + 1)})
    assert_error(response, 400, f"at most {settings.max_rows} rows per request")


def test_colon_routes_over_real_http(server_url):
    with httpx.Client(base_url=server_url, timeout=10) as http:
        response = http.post("/v1/models/tiny-features:predict", content=body("predict_named_instances.json"))
        version = http.post("/v1/models/tiny-features/versions/1:predict", content=body("predict_columnar.json"))
        encoded = http.post("/v1/models/tiny-features%3Apredict", content=body("predict_columnar.json"))
    assert "content-type" not in response.request.headers
    assert np.allclose(response.json()["predictions"], features_probabilities(ROWS))
    assert np.allclose(version.json()["outputs"], features_probabilities(ROWS))
    assert encoded.status_code == 200  # %3A decodes to ':' before routing
