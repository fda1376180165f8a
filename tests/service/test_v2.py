"""Open Inference Protocol (V2) in process: endpoints, outputs, datatypes, shapes, binary data, errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest

from service.codecs import v2
from service.config import Settings
from service.main import create_app
from service.types.v2 import (InferenceResponse, MetadataModelResponse, MetadataServerResponse,
                              ModelReadyResponse, ServerLiveResponse, ServerReadyResponse)
from tests.service import helpers
from tests.service.helpers import DATA
from tests.service.test_errors import assert_error

pytestmark = pytest.mark.anyio

V2_DATA = DATA.parent / "v2"
BAD_REQUESTS = json.loads((V2_DATA / "bad_requests.json").read_text())


def tensor(rows, name="x", datatype="FP32", shape=None) -> dict:
    flat = np.asarray(rows).ravel().tolist()
    return {"name": name, "shape": shape or list(np.shape(rows)), "datatype": datatype, "data": flat}


async def infer(client, model: str, body: dict, version: int | None = None) -> InferenceResponse:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    response = await client.post(path, content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return InferenceResponse.model_validate(orjson.loads(response.content))


def as_numpy(out) -> np.ndarray:
    dtype = object if out.datatype.value == "BYTES" else np.float32
    return np.array(out.data, dtype=dtype).reshape(out.shape)


def expected(spec, rows) -> dict[str, np.ndarray]:
    """What every output should hold, computed with plain numpy from the spec's weights and bias and
    the documented task semantics (nothing from `service.tasks`): binary, sigmoid and labels[1] at or
    over the threshold; multiclass, softmax and the first of the largest logits; multilabel, a
    sigmoid per label and the labels at or over their own thresholds, joined by ","; regression, the value."""
    logits = spec.logits(rows)
    if spec.task == "regression":
        return {spec.output_name: logits}
    if spec.task == "binary":
        probs = helpers.ref_sigmoid(logits)
        labels = [spec.labels[1] if p >= spec.thresholds[0] else spec.labels[0] for p in probs[:, 0]]
    elif spec.task == "multiclass":
        probs = helpers.ref_softmax(logits)
        labels = [spec.labels[int(np.argmax(row))] for row in logits]  # argmax: the first of ties
    else:
        probs = helpers.ref_sigmoid(logits)
        labels = [",".join(a for a, p, t in zip(spec.labels, row, spec.thresholds) if p >= t) for row in probs]
    return {spec.output_name: logits, "probabilities": probs, "labels": np.array(labels, object).reshape(-1, 1)}


async def test_server_endpoints(client):
    assert ServerLiveResponse.model_validate((await client.get("/v2/health/live")).json()).live
    ready = ServerReadyResponse.model_validate((await client.get("/v2/health/ready")).json())
    assert ready.ready and ready.live
    for path in ("/v2", "/v2/"):
        meta = MetadataServerResponse.model_validate((await client.get(path)).json())
        assert meta.name == "tinyserve" and meta.extensions == ["binary_tensor_data"]


async def test_not_ready_before_loading_and_without_models(app, tmp_path):
    import httpx
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_error(await client.get("/v2/health/ready"), 503, "not ready: models are still loading")
        assert_error(await client.get("/v2/models/tiny-binary"), 503, "models are still loading")
        assert (await client.get("/v2/health/live")).json() == {"live": True}
    async with helpers.serve(create_app(Settings(model_root=tmp_path))) as client:
        assert_error(await client.get("/v2/health/ready"), 503, "no model is serving")
        # /predict without a model name: not "name a model ...; available: []" (400)
        assert_error(await client.post("/predict", json={"instances": [[1, 2]]}), 503,
                     f"no model is serving from {tmp_path}")


@pytest.mark.parametrize("path, version", [("/v2/models/tiny-multiclass", 2),
                                           ("/v2/models/tiny-multiclass/versions/1", 1)])
async def test_model_metadata(client, path, version):
    meta = MetadataModelResponse.model_validate((await client.get(path)).json())
    assert meta.model_dump(mode="json") == {
        "name": "tiny-multiclass", "versions": ["1", "2"], "platform": "onnx_onnxv1",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "labels", "datatype": "BYTES", "shape": [-1, 1]}]}


async def test_metadata_uses_the_real_tensor_names(client):
    features = (await client.get("/v2/models/tiny-features")).json()
    values = (await client.get("/v2/models/half-plus-two")).json()
    assert features["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
    assert values["outputs"] == [{"name": "values", "datatype": "FP32", "shape": [-1, 1]}]


async def test_model_ready(client):
    for path in ("/v2/models/tiny-multiclass/ready", "/v2/models/tiny-multiclass/versions/1/ready"):
        response = await client.get(path)
        assert response.status_code == 200
        assert ModelReadyResponse.model_validate(response.json()).model_dump() == {"name": "tiny-multiclass", "ready": True}


async def test_failed_model_is_503_everywhere(tmp_path):
    helpers.write_model(tmp_path, helpers.BINARY)
    helpers.edit_card(helpers.write_model(tmp_path, helpers.REGRESSION), sha256="0" * 64)
    body = {"inputs": [tensor([[0, 0]])]}
    async with helpers.serve(create_app(Settings(model_root=tmp_path))) as client:
        assert_error(await client.get("/v2/models/tiny-regression/ready"), 503, "has no version ready to serve")
        assert_error(await client.get("/v2/models/tiny-regression/versions/1/ready"), 503, "version 1 is not serving")
        assert_error(await client.get("/v2/models/tiny-regression"), 503, "has no version ready")
        assert_error(await client.post("/v2/models/tiny-regression/infer", json=body), 503, "has no version ready")
        assert (await client.get("/v2/health/ready")).status_code == 200  # the good model serves


@pytest.mark.parametrize("spec, rows", [
    (helpers.BINARY, [[1, 1, 1], [0, 0, 0], [0, -0.25, 1], [1000, 0, 0]]),
    (helpers.MULTICLASS_V2, [[1, 2, 0.5, 0], [1000, 0, 0, 0], [0, 0, 0, 0]]),
    (helpers.MULTILABEL, [[1, 1], [1000, -1000], [-1, 3], [-5, -5]]),
    (helpers.REGRESSION2, [[1, 2], [0, 0]]),
    (helpers.FEATURES, [[1.0, 2.0, 5.0]]),
    (helpers.HALF_PLUS_TWO, [[1.0], [2.0], [5.0]]),
])
async def test_every_task_returns_all_its_outputs(client, spec, rows):
    got = await infer(client, spec.name, {"inputs": [tensor(rows, name=spec.input_name)]})
    want = expected(spec, rows)
    assert (got.model_name, got.model_version, got.id) == (spec.name, str(spec.version), None)
    assert [o.name for o in got.outputs] == list(want)
    for out in got.outputs:
        assert out.datatype.value == ("BYTES" if out.name == "labels" else "FP32")
        if out.name == "labels":
            assert as_numpy(out).tolist() == want["labels"].tolist()
        else:
            np.testing.assert_allclose(as_numpy(out), want[out.name], rtol=1e-6, atol=1e-7)


async def test_spec_example_id_parameters_and_requested_output(client):
    body = json.loads((V2_DATA / "infer_spec_example.json").read_text())
    body["inputs"][0]["name"] = "x"
    body["parameters"] = {"priority": 1, "custom": "ignored", "flag": True, "ratio": 0.5}
    got = await infer(client, "tiny-multiclass", body)
    assert got.id == "42" and [o.name for o in got.outputs] == ["probabilities"]
    rows = [[1, 2, 3, 4], [5, 6, 7, 8]]
    np.testing.assert_allclose(as_numpy(got.outputs[0]), expected(helpers.MULTICLASS_V2, rows)["probabilities"], rtol=1e-6)


async def test_unknown_fields_are_ignored_as_the_spec_allows(client):
    # KServe's InferenceRESTClient sends "model_name" in the body; the OIP schema forbids no property.
    plain = {"inputs": [tensor([[0, 0, 0]])], "outputs": [{"name": "labels"}, {"name": "logits"}]}
    extra = {"model_name": "tiny-binary", "model_version": "1", "future": {"x": [1]},
             "inputs": [{**tensor([[0, 0, 0]]), "id": "i", "extra": [[1]]}],
             "outputs": [{"name": "labels", "other": 1}, {"name": "logits"}]}
    assert await infer(client, "tiny-binary", extra) == await infer(client, "tiny-binary", plain)


async def test_outputs_come_in_the_requested_order(client):
    body = {"inputs": [tensor([[0, 0, 0]])], "outputs": [{"name": "labels"}, {"name": "logits"}]}
    got = await infer(client, "tiny-binary", body)
    assert [(o.name, o.shape, o.data) for o in got.outputs] == [("labels", [1, 1], ["yes"]), ("logits", [1, 1], [0.0])]


async def test_an_empty_outputs_list_asks_for_every_output(client):
    # The spec: "if not specified all outputs produced by the model will be returned".
    every = await infer(client, "tiny-binary", {"inputs": [tensor([[0, 0, 0]])]})
    empty = await infer(client, "tiny-binary", {"inputs": [tensor([[0, 0, 0]])], "outputs": []})
    assert empty.outputs == every.outputs and len(every.outputs) == 3


async def test_versions(client):
    body = {"inputs": [tensor([[0, 0, 0, 0]])], "outputs": [{"name": "labels"}]}
    assert (await infer(client, "tiny-multiclass", body)).outputs[0].data == ["emu"]
    older = await infer(client, "tiny-multiclass", body, version=1)
    assert older.model_version == "1" and older.outputs[0].data == ["cat"]  # all tied: the first class


async def test_nested_data_is_the_same_as_flat(client):
    rows = [[1, 2, 3, 4], [4, 3, 2, 1]]
    flat = await infer(client, "tiny-multiclass", {"inputs": [tensor(rows)]})
    nested = await infer(client, "tiny-multiclass", {"inputs": [{**tensor(rows), "data": rows}]})
    assert flat.outputs == nested.outputs


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                                      "UINT8", "UINT16", "UINT32", "UINT64"])
async def test_numeric_datatypes_are_cast_to_the_fp32_input(client, datatype):
    rows = [[1, 2, 0, 3], [16, 0, 1, 2]]
    got = await infer(client, "tiny-multiclass", {"inputs": [tensor(rows, datatype=datatype)]})
    np.testing.assert_allclose(as_numpy(got.outputs[0]), helpers.MULTICLASS_V2.logits(rows))


async def test_integers_up_to_2_pow_24_are_exact(client):
    rows = [[2**24, 0], [-(2**24), 0]]  # tiny-regression2 answers [x1, x2 + 0.5]
    got = await infer(client, "tiny-regression2", {"inputs": [tensor(rows, datatype="INT64")]})
    assert got.outputs[0].data == [2.0**24, 0.5, -(2.0**24), 0.5]


async def test_non_finite_outputs_are_strings_and_unlabelled(client):
    got = await infer(client, "nonfinite-multiclass", {"inputs": [tensor([[4, 0], [-1, 0], [0, 2]])]})
    logits, probs, labels = got.outputs
    assert logits.data == [2.0, 0.0, "NaN", 0.0, "Infinity", 0.0]
    # NaN: no probabilities, no label; +inf: the limit of the softmax, the whole probability
    assert probs.data[2:] == ["NaN", "NaN", 1.0, 0.0] and labels.data == ["a", "", "a"]
    assert np.isnan(as_numpy(logits)[1, 0]) and as_numpy(logits)[2, 0] == np.inf


async def test_finite_values_beside_non_finite_ones_keep_their_float32_text(client):
    # sqrt(2) as FP32 is written 1.4142135 whether or not another value of its output is NaN.
    path = "/v2/models/nonfinite-multiclass/infer"
    alone = await client.post(path, content=orjson.dumps({"inputs": [tensor([[2, 0]])]}))
    beside = await client.post(path, content=orjson.dumps({"inputs": [tensor([[2, 0], [-1, 0]])]}))
    assert b'"data":[1.4142135,0.0]' in alone.content
    assert b'"data":[1.4142135,0.0,"NaN",0.0]' in beside.content


@pytest.mark.parametrize(("text", "holds"), [
    (b"{}", False), (b'{"outputs":[1.5,2e-5]}', False), (b'{"u":"uuu","nul":"ull"}', False),
    (b"[null]", True), (b'{"data":[1.0,null]}', True), (b'{"uu":"nuull","x":null}', True),
    (b'{"x":"nul"}', False), (b'{"x":"null"}', True), (b"[1,nul", False),
    # More `u`s than the byte search looks at one by one (labels like "true"): the word search takes the rest.
    (b'{"outputs":[1.5],"data":[' + b'"true",' * 30 + b'"false"]}', False),
    (b'{"outputs":[1.5],"data":[' + b'"true",' * 30 + b'null]}', True),
    (b"u" * v2.U_STEPS + b"null", True), (b"u" * (v2.U_STEPS - 1) + b"null", True),
    (b"u" * (v2.U_STEPS + 1) + b"nul", False), (b"nul" + b"u" * v2.U_STEPS + b"l", False)])
def test_holds_null_finds_the_word_wherever_it_is(text, holds):
    assert v2._holds_null(text) is holds is (b"null" in text)


@pytest.mark.parametrize("request_id", ["null", "u", "a nullu"])
async def test_an_id_holding_null_or_u_leaves_finite_outputs_numbers(client, request_id):
    got = await infer(client, "tiny-multiclass", {"id": request_id, "inputs": [tensor([[1, 2, 0, 3]])]})
    assert got.id == request_id and all(type(v) is float for v in got.outputs[0].data + got.outputs[1].data)
    odd = await infer(client, "nonfinite-multiclass", {"id": request_id, "inputs": [tensor([[-1, 0]])]})
    assert odd.outputs[0].data[0] == "NaN" and odd.outputs[1].data == ["NaN", "NaN"]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c["id"] for c in BAD_REQUESTS])
async def test_bad_requests(client, case):
    content = case["raw"].encode() if "raw" in case else orjson.dumps(case["json"]) if "json" in case else None
    response = await client.request(case.get("method", "POST"), case["path"], content=content)
    assert_error(response, case["status"], case["error"])


async def test_more_rows_than_the_maximum(client, settings):
    rows = [[0, 0, 0]] * (settings.max_rows + 1)
    response = await client.post("/v2/models/tiny-binary/infer", json={"inputs": [tensor(rows)]})
    assert_error(response, 400, f"must have 1 to {settings.max_rows} rows, shape says {settings.max_rows + 1}")


async def test_body_over_the_limit_is_413(client, settings):
    response = await client.post("/v2/models/tiny-binary/infer", content=b" " * (settings.max_body_bytes + 1))
    assert_error(response, 413, "exceeds the limit")


# The binary tensor data extension, by hand: JSON header, then raw tensors.
def binary_request(header: dict, *chunks: bytes) -> tuple[bytes, dict]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


def split(response) -> tuple[dict, bytes]:
    n = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:n]), response.content[n:]


async def test_binary_input_and_outputs(client):
    rows = np.array([[1, 2, 0.5, 0], [0, 0, 0, 0]], np.float32)
    header = {"id": "b", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": rows.nbytes}}],
              "outputs": [{"name": "logits", "parameters": {"binary_data": True}}, {"name": "labels",
                          "parameters": {"binary_data": True}}, {"name": "probabilities"}]}
    body, headers = binary_request(header, rows.tobytes())
    response = await client.post("/v2/models/tiny-multiclass/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    head, tail = split(response)
    InferenceResponse.model_validate(head)
    logits, labels, probs = head["outputs"]
    assert logits == {"name": "logits", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}
    assert labels == {"name": "labels", "datatype": "BYTES", "shape": [2, 1], "parameters": {"binary_data_size": 14}}
    assert "data" in probs and "parameters" not in probs
    np.testing.assert_array_equal(np.frombuffer(tail[:24], "<f4").reshape(2, 3), helpers.MULTICLASS_V2.logits(rows))
    assert tail[24:] == struct.pack("<I", 3) + b"dog" + struct.pack("<I", 3) + b"emu"


async def test_binary_data_output_makes_every_output_binary(client):
    body = {"parameters": {"binary_data_output": True}, "inputs": [tensor([[1, 1], [-9, -9]])]}
    response = await client.post("/v2/models/tiny-multilabel/infer", json=body)
    head, tail = split(response)
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert [o["name"] for o in head["outputs"]] == ["logits", "probabilities", "labels"]
    assert sizes == [24, 24, 4 + len(b"even,prime") + 4] and len(tail) == sum(sizes)
    assert tail[48:] == struct.pack("<I", 10) + b"even,prime" + struct.pack("<I", 0)


@pytest.mark.parametrize("datatype, dtype", [("FP64", "<f8"), ("FP16", "<f2"), ("INT16", "<i2"), ("UINT64", "<u8")])
async def test_binary_inputs_of_other_types(client, datatype, dtype):
    raw = np.array([[3, 4]], dtype=dtype).tobytes()
    header = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}]}
    body, headers = binary_request(header, raw)
    response = await client.post("/v2/models/tiny-regression/infer", content=body, headers=headers)
    assert response.json()["outputs"][0]["data"] == [19.0]


async def test_fp16_json_data_is_the_fp16_binary_data_would_be(client):
    # 0.1 is 0.0999755859375 as FP16: the same features whichever way the FP16 row is sent
    row = [[0.1, 1000.3]]  # tiny-regression answers 2 * x1 + 3 * x2 + 1
    halves = np.array(row, dtype="<f2")
    header = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP16",
                          "parameters": {"binary_data_size": halves.nbytes}}]}
    body, headers = binary_request(header, halves.tobytes())
    binary = (await client.post("/v2/models/tiny-regression/infer", content=body, headers=headers)).json()
    as_json = await infer(client, "tiny-regression", {"inputs": [tensor(row, datatype="FP16")]})
    expected = float((halves.astype(np.float32) @ np.array([2, 3], np.float32) + 1)[0])
    assert binary["outputs"][0]["data"] == as_json.outputs[0].data == [pytest.approx(expected, rel=1e-6)]
    assert as_json.outputs[0].data != [pytest.approx(2 * 0.1 + 3 * 1000.3 + 1, rel=1e-7)]


async def test_fp16_json_data_beyond_fp16s_range_is_refused(client):
    body = {"inputs": [{**tensor([[1, 2], [3, 70000]]), "datatype": "FP16"}]}
    response = await client.post("/v2/models/tiny-regression/infer", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": "input 'x' (FP16): row 1, feature 1 is 70000.0, outside FP16's range "
                                        "(|x| <= 65504)"}


@pytest.mark.parametrize("header_length, header, tail, error", [
    ("abc", None, b"", "inference-header-content-length must be a byte count"),
    ("99999", None, b"", "must be a byte count within the"),
    (None, {"binary_data_size": 12}, b"", "declares 12 bytes of binary data, the body carries 0"),
    (None, {"binary_data_size": 8}, b"\0" * 8, "needs binary_data_size 12, got 8"),
    (None, {"binary_data_size": True}, b"\0" * 12, "needs binary_data_size 12, got True"),
    (None, {"binary_data_size": "12"}, b"\0" * 12, "needs binary_data_size 12, got '12'"),
    (None, {}, b"\0" * 12, "12 bytes of binary data follow the JSON, but no input declares binary_data_size"),
    (None, {"binary_data_size": 12}, b"\0" * 13, "declares 12 bytes of binary data, the body carries 13"),
    (None, {"binary_data_size": 12}, np.array([0, np.inf, 0], "<f4").tobytes(), "row 0, feature 1 (b) is inf"),
    (None, {"binary_data_size": 12}, np.array([0, np.nan, 0], "<f4").tobytes(), "row 0, feature 1 (b) is nan"),
])
async def test_bad_binary_requests(client, header_length, header, tail, error):
    inp = {"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": header or {}}
    if not header and not tail:
        inp["data"] = [0, 0, 0]
    head = orjson.dumps({"inputs": [inp]})
    length = header_length or str(len(head))
    response = await client.post("/v2/models/tiny-binary/infer", content=head + tail,
                                 headers={"Inference-Header-Content-Length": length})
    assert_error(response, 400, error)


async def test_binary_data_without_the_header_length_says_it_is_missing(client):
    body, _ = binary_request({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                          "parameters": {"binary_data_size": 12}}]}, b"\xff" * 12)
    message = assert_error(await client.post("/v2/models/tiny-binary/infer", content=body), 400, "malformed JSON: ")
    assert message.endswith("(binary tensor data after the JSON needs the Inference-Header-Content-Length "
                            "header: the JSON's length in bytes)")
    plain = await client.post("/v2/models/tiny-binary/infer", content=b'{"inputs": [}')  # no binary: no hint
    assert "Inference-Header" not in assert_error(plain, 400, "malformed JSON: ")


async def test_data_and_binary_together_is_400(client):
    inp = {**tensor([[0, 0, 0]]), "parameters": {"binary_data_size": 12}}
    body, headers = binary_request({"inputs": [inp]}, b"\0" * 12)
    response = await client.post("/v2/models/tiny-binary/infer", content=body, headers=headers)
    assert_error(response, 400, "has both 'data' and binary_data_size")


async def test_docs_list_the_v2_routes(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
            "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}",
            "/v2/models/{name}/versions/{version}/ready", "/v2/models/{name}/versions/{version}/infer"} <= set(paths)
    schema = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(schema) and "inputs" in schema["properties"]


@pytest.mark.parametrize("length", [b"\xb2", b"1\xb9", b"\xb3\xb3"])
async def test_header_length_in_other_digits_is_400_not_500(app, length):
    # Header values are latin-1: b"\xb2" is "²", which str.isdigit() takes and int() does not (issue 17).
    async with helpers.serve(app):
        status, _, body = await helpers.raw_request(app, "POST", b"/v2/models/tiny-binary/infer", b"{}",
                                                    [(b"inference-header-content-length", length)])
    assert status == 400 and "must be a byte count" in orjson.loads(body)["error"]
