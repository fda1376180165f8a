"""The real Triton HTTP client against `python -m service`: JSON tensors and binary tensor data."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service import tasks
from tests.service import helpers


@pytest.fixture
def client(server_url):
    c = triton.InferenceServerClient(server_url.removeprefix("http://"), network_timeout=10)
    yield c
    c.close()


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny-multiclass") and client.is_model_ready("tiny-multiclass", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("tiny-multiclass", "9")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("tiny-features")
    assert meta["platform"] == "onnx_onnxv1" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities", "labels"]
    assert client.get_model_metadata("tiny-multiclass", "1")["versions"] == ["1", "2"]


def inputs(rows: np.ndarray, binary: bool, name: str = "x") -> list:
    tensor = triton.InferInput(name, list(rows.shape), triton.np_to_triton_dtype(rows.dtype))
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return [tensor]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_requested_outputs(client, binary):
    rows = np.array([[1, 2, 0.5, 0], [1000, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("labels", "probabilities", "logits")]
    result = client.infer("tiny-multiclass", inputs(rows, binary), outputs=outputs, request_id="r1")
    assert result.get_response()["id"] == "r1" and result.get_response()["model_version"] == "2"
    logits = helpers.MULTICLASS_V2.logits(rows)
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    np.testing.assert_allclose(result.as_numpy("probabilities"), tasks.softmax(logits.astype(np.float64)), rtol=1e-6)
    labels = result.as_numpy("labels")
    assert labels.shape == (3, 1)
    assert [v.decode() if isinstance(v, bytes) else v for v in labels[:, 0]] == ["dog", "cat", "emu"]


def test_infer_default_outputs_are_binary(client):
    # Without requested outputs tritonclient sends binary_data_output: every output comes back binary.
    rows = np.array([[1, 1], [-9, -9]], np.float32)
    result = client.infer("tiny-multilabel", inputs(rows, True), model_version="1")
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert result.as_numpy("labels")[:, 0].tolist() == [b"even,prime", b""]
    assert result.as_numpy("probabilities").dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.uint8])
def test_other_input_datatypes(client, dtype):
    rows = np.array([[1, 2]], dtype)
    for binary in (False, True):
        result = client.infer("tiny-regression", inputs(rows, binary), outputs=[triton.InferRequestedOutput("logits", binary)])
        assert result.as_numpy("logits").tolist() == [[9.0]]


def test_compressed_request(client):
    rows = np.array([[1.0], [2.0], [5.0]], np.float32)
    result = client.infer("half-plus-two", inputs(rows, True), request_compression_algorithm="gzip",
                          response_compression_algorithm="gzip")
    assert result.as_numpy("values").tolist() == [[2.5], [3.0], [4.5]]


@pytest.mark.parametrize("model, rows, outputs, status, message", [
    ("tiny-binary", np.zeros((1, 4), np.float32), None, "400", "must have shape [rows, 3], got [1, 4]"),
    ("tiny-binary", np.zeros((1, 3), np.bool_), None, "400", "BOOL data cannot be cast"),
    ("tiny-binary", np.array([[0, 0, 2**30]], np.int64), None, "400", "beyond +-2^24"),
    ("tiny-regression", np.zeros((1, 2), np.float32), ["labels"], "400", "unknown output(s) ['labels']"),
    ("nope", np.zeros((1, 2), np.float32), None, "404", "unknown model 'nope'"),
])
def test_errors_reach_the_client(client, model, rows, outputs, status, message):
    requested = [triton.InferRequestedOutput(n) for n in outputs] if outputs else None
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs(rows, True), outputs=requested)
    assert info.value.status() == status and message in info.value.message()
