"""The real Triton HTTP client against `python -m service`: JSON tensors and binary tensor data."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.service import helpers, tables


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
    np.testing.assert_allclose(result.as_numpy("probabilities"), helpers.ref_softmax(logits), rtol=1e-6)
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


@pytest.fixture(scope="module")
def table_client(tmp_path_factory):
    """A second server, for a table model (issue 15): inputs `features` FP32 and `categories` BYTES."""
    root = tmp_path_factory.mktemp("tables")
    tables.write(root)
    env = {"TINYSERVE_MODEL_ROOT": str(root), "TINYSERVE_LOG_LEVEL": "warning"}
    with helpers.running_server(env, tmp_path_factory.mktemp("table-server") / "server.log") as url:
        c = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=10)
        yield c
        c.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_table_model_takes_a_bytes_input(table_client, binary):
    meta = table_client.get_model_metadata("tiny-table")
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("features", "FP32"), ("categories", "BYTES")]
    rows = [[22.0, "1st", 7.25], [None, "2nd", 30.0], [35.0, "crew", None]]
    features = np.array([[np.nan if r[0] is None else r[0], np.nan if r[2] is None else r[2]] for r in rows], np.float32)
    if not binary:  # JSON has no NaN: a missing number is null, which numpy arrays cannot carry
        features = features[:1]
        rows = rows[:1]
    categories = np.array([[r[1].encode()] for r in rows[:len(features)]], dtype=np.object_)
    tensors = []
    for name, array in (("categories", categories), ("features", features)):  # any order
        tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    result = table_client.infer("tiny-table", tensors, outputs=[triton.InferRequestedOutput("values", binary)])
    assert result.as_numpy("values")[:, 0].tolist() == pytest.approx([tables.expected(r) for r in rows])
    warnings = (result.get_response().get("parameters") or {}).get("warnings")
    assert warnings == (None if not binary else
                        "row 1: 'age' is missing: filled with 28.0\n"
                        "row 2: 'class' = 'crew' is not a category seen in training: encoded as all zeros\n"
                        "row 2: 'fare' is missing: filled with 10.0")
