"""Models made elsewhere: outputs that already are probabilities, float64 and integer inputs, and
a repository laid out as TF Serving and Triton users lay theirs out (the folders decide)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.card import OutputKind, TensorSpec, read_card
from service.config import Settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import REPO_ROOT, Spec, write_model

pytestmark = pytest.mark.anyio
ROWS = [[1.0, -2.0], [0.5, 0.25], [-3.0, 4.0]]


def _with_probabilities(root, spec: Spec, op: str):
    """The spec's graph followed by `op` (Softmax or Sigmoid), its card saying so."""
    folder = write_model(root, spec)
    model = onnx.load(folder / "model.onnx")
    model.graph.node[-1].output[0] = "scores"
    model.graph.node.append(helper.make_node(op, ["scores"], [spec.output_name]))
    onnx.save(model, folder / "model.onnx")
    card = read_card(folder / "card.json")
    golden = [g.model_copy(update={"output": _expected(op, spec.logits([g.input]))[0].tolist()}) for g in card.golden]
    helpers.edit_card(folder, output_kind=OutputKind.probabilities, golden=golden)
    helpers.reseal(folder)
    return folder


def _expected(op: str, logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    if op == "Sigmoid":
        return 1 / (1 + np.exp(-x))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


BINARY = Spec("p-binary", "binary", [[1.0], [-0.5]], [-0.2], ["no", "yes"], thresholds=[0.5])
MULTICLASS = Spec("p-multiclass", "multiclass", [[1.0, 0.0, -1.0], [0.0, 2.0, 0.5]], [0.0, 0.1, 0.0],
                  ["a", "b", "c"])
MULTILABEL = Spec("p-multilabel", "multilabel", [[1.0, 0.0], [0.0, -1.0]], [0.0, 0.3], ["x", "y"],
                  thresholds=[0.5, 0.5])


@pytest.mark.parametrize("spec,op", [(BINARY, "Sigmoid"), (MULTICLASS, "Softmax"), (MULTILABEL, "Sigmoid")])
async def test_probability_outputs_are_answered_as_they_are(tmp_path, spec, op):
    _with_probabilities(tmp_path, spec, op)
    probs = _expected(op, spec.logits(ROWS))
    async with helpers.serve(create_app(Settings(model_root=tmp_path, poll_seconds=0))) as client:
        native = (await client.post(f"/models/{spec.name}/predict", json={"instances": ROWS})).json()
        body = {"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP32", "data": ROWS}]}
        v2 = {o["name"]: o for o in (await client.post(f"/v2/models/{spec.name}/infer", json=body)).json()["outputs"]}
        tfs = (await client.post(f"/v1/models/{spec.name}:predict", json={"instances": ROWS})).json()
    np.testing.assert_allclose(np.reshape(v2["logits"]["data"], probs.shape), probs, atol=1e-6)  # raw: the graph's
    np.testing.assert_allclose(np.reshape(v2["probabilities"]["data"], probs.shape), probs, atol=1e-6)
    np.testing.assert_allclose(tfs["predictions"], probs, atol=1e-6)
    answers = native["predictions"]
    if spec.task == "binary":
        assert [a["probability"] for a in answers] == pytest.approx(probs[:, 0].tolist(), abs=1e-6)
        assert [a["label"] for a in answers] == ["yes" if p >= 0.5 else "no" for p in probs[:, 0]]
    elif spec.task == "multiclass":
        assert [a["top_k"][0]["probability"] for a in answers] == pytest.approx(probs.max(axis=1).tolist(), abs=1e-6)
        assert [a["label"] for a in answers] == [spec.labels[i] for i in probs.argmax(axis=1)]
    else:
        np.testing.assert_allclose([list(a["probabilities"].values()) for a in answers], probs, atol=1e-6)
        assert [a["labels"] for a in answers] == [[n for n, p in zip(spec.labels, r) if p >= 0.5] for r in probs]


def _typed_input(root, name: str, elem: int, dtype: str):
    """y = x @ [[2], [3]] + 1 on a float64 or integer input, cast to float inside the graph."""
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["values"])]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", elem, ["batch", 2])],
                              [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", 1])],
                              initializer=[numpy_helper.from_array(np.array([[2.0], [3.0]], np.float32), "W"),
                                           numpy_helper.from_array(np.array([1.0], np.float32), "B")])
    spec = Spec(name, "regression", [[2.0], [3.0]], [1.0], ["y"], output_name="values",
                golden_inputs=[[1, 2], [-3, 5]])
    folder = write_model(root, spec)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              folder / "model.onnx")
    helpers.edit_card(folder, input=TensorSpec(name="x", shape=[-1, 2], dtype=dtype))
    helpers.reseal(folder)


async def test_float64_and_integer_inputs_take_exact_features(tmp_path):
    _typed_input(tmp_path, "wide", TensorProto.DOUBLE, "float64")
    _typed_input(tmp_path, "whole", TensorProto.INT64, "int64")
    async with helpers.serve(create_app(Settings(model_root=tmp_path, poll_seconds=0))) as client:
        for name in ("wide", "whole"):
            got = await client.post(f"/models/{name}/predict", json={"instances": [[1, 2], [4, -1]]})
            assert [p["value"] for p in got.json()["predictions"]] == [9.0, 6.0], got.text
        fraction = await client.post("/models/whole/predict", json={"instances": [[1, 2.5]]})
        huge = await client.post("/models/whole/predict", json={"instances": [[1, 2**25]]})
        half = await client.post("/models/wide/predict", json={"instances": [[1, 2.5]]})
        meta = (await client.get("/v2/models/whole")).json()
        # Values float32 would round to an integer: checked as sent, on every protocol.
        near = [await client.post("/models/whole/predict", json={"instances": [[1, v]]})
                for v in (2.00000001, 16777217, 16777216.4, -16777217)]
        near.append(await client.post("/v1/models/whole:predict", json={"instances": [[1, 16777217]]}))
        for datatype in ("FP32", "FP64"):
            body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": [1, 2.00000001]}]}
            near.append(await client.post("/v2/models/whole/infer", json=body))
        edge = await client.post("/models/whole/predict", json={"instances": [[1, 16777216], [-16777216, 0]]})
    assert [r.status_code for r in near] == [400] * 7, [r.text for r in near]
    assert all("send whole numbers within +-2^24" in r.json()["error"] for r in near)
    assert "row 0, feature 1 is 2.00000001;" in near[0].json()["error"]
    assert "row 0, feature 1 is 16777217.0;" in near[1].json()["error"]
    assert edge.status_code == 200, edge.text  # +-2^24 themselves are whole and exact
    assert fraction.status_code == 400 and "row 0, feature 1 is 2.5" in fraction.json()["error"]
    assert huge.status_code == 400 and "whole numbers within +-2^24" in huge.json()["error"]
    assert half.json()["predictions"][0]["value"] == 10.5
    assert meta["inputs"][0]["datatype"] == "FP32"  # what every request is decoded to


async def test_a_float64_output_is_served_as_the_fp32_it_is_declared(tmp_path):
    # y = x @ [[0.1], [0.2]] in float64: 0.30000000000000004 for [1, 1], 0.3 as float32.
    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE), helper.make_node("MatMul", ["xd", "W"], ["y"])]
    graph = helper.make_graph(nodes, "double", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 1])],
                              initializer=[numpy_helper.from_array(np.array([[0.1], [0.2]]), "W")])
    spec = Spec("double", "regression", [[0.1], [0.2]], [0.0], ["y"], output_name="y", golden_inputs=[[1, 1]])
    folder = write_model(tmp_path, spec)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              folder / "model.onnx")
    helpers.edit_card(folder, output=TensorSpec(name="y", shape=[-1, 1], dtype="float64"))
    helpers.reseal(folder)
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 1]}]}
    async with helpers.serve(create_app(Settings(model_root=tmp_path, poll_seconds=0))) as client:
        meta = (await client.get("/v2/models/double")).json()
        v2 = (await client.post("/v2/models/double/infer", json=body)).json()
        tfs = (await client.post("/v1/models/double:predict", json={"instances": [[1, 1]]})).json()
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]
    assert v2["outputs"][0]["datatype"] == "FP32" and v2["outputs"][0]["data"] == [0.3]
    assert tfs["predictions"] == [[0.3]]


def test_copies_serve_under_load_with_no_failed_request(tmp_path, tmp_path_factory):
    """`cp -r digits/1 digits/2`, then `rm -r digits/1`, then `cp -r digits digits-canary`, with clients
    hammering the model the whole time: every request answers 200, and each change is served.

    What is required does not depend on the machine's speed: answers came before the first change,
    requests were in flight while each change was made and picked up (from the file operation until
    the server shows it), and after the last one; the clients keep going after it until 100
    requests and 0.3 s, at most 30 s."""
    root = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "models" / "digits", root / "digits")
    row = {"instances": [[0.0] * 64]}
    env = {"TINYSERVE_MODEL_ROOT": str(root), "TINYSERVE_POLL_SECONDS": "0.05", "TINYSERVE_LOG_LEVEL": "warning"}
    with helpers.running_server(env, tmp_path_factory.mktemp("copies") / "server.log") as url:
        results, windows, stop = [], [], threading.Event()  # results: (path, status, version, sent, answered)

        async def hammer(path: str) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                while not stop.is_set():
                    sent = time.monotonic()
                    r = await client.post(path, json=row)
                    results.append((path, r.status_code, r.json().get("version"), sent, time.monotonic()))

        def wait_for(check) -> None:
            deadline = time.monotonic() + 15
            while not check():
                assert time.monotonic() < deadline, "the change was not served"
                time.sleep(0.02)

        def meta(name: str) -> dict:
            return httpx.get(f"{url}/models/{name}").json()

        def change(make, served) -> None:
            began = time.monotonic()
            make()
            wait_for(served)
            windows.append((began, time.monotonic()))

        def changes() -> None:
            try:
                wait_for(lambda: len(results) >= 4)  # version 1 served under load first, however slowly
                change(lambda: shutil.copytree(root / "digits" / "1", root / "digits" / "2"),
                       lambda: meta("digits")["default_version"] == 2)
                change(lambda: shutil.rmtree(root / "digits" / "1"),
                       lambda: [v["version"] for v in meta("digits")["versions"]] == [2])
                change(lambda: shutil.copytree(root / "digits", root / "digits-canary"),
                       lambda: meta("digits-canary").get("default_version") == 2)
                done = time.monotonic()
                while time.monotonic() - done < 30 and (len(results) < 100 or time.monotonic() - done < 0.3):
                    time.sleep(0.02)
            finally:
                stop.set()

        async def main() -> None:
            clients = [asyncio.create_task(hammer("/models/digits/predict")) for _ in range(4)]
            await asyncio.to_thread(changes)
            await asyncio.gather(*clients)

        asyncio.run(main())
        canary = meta("digits-canary")
        answer = httpx.post(f"{url}/models/digits-canary/predict", json=row).json()
    assert [r for r in results if r[1] != 200] == []
    assert len(windows) == 3
    for began, served in windows:  # some request was in flight during each change and its pick-up
        assert any(sent <= served and answered >= began for _, _, _, sent, answered in results), (began, served)
    assert any(sent > windows[-1][1] for _, _, _, sent, _ in results)  # and after the last one
    assert {r[2] for r in results} == {1, 2}  # served version 1, then version 2
    assert canary["origin"] == "digits/1" and answer["model"] == "digits-canary" and answer["version"] == 2
