"""Faults in the model repository: each fails one version, visibly, and every other model serves on."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from service.card import MODEL_FILE
from service.config import Settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import BINARY, MULTICLASS_V1, REGRESSION, metric, onnx_model, reseal, write_model

pytestmark = pytest.mark.anyio


def truncated(root):
    folder = write_model(root, dataclasses.replace(BINARY, name="broken"))
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[: len(data) // 2])
    reseal(folder)  # the hash matches, so it is onnxruntime that refuses it


def hash_mismatch(root):
    folder = write_model(root, dataclasses.replace(BINARY, name="broken"))
    helpers.edit_card(folder, sha256="f" * 64)


def nan_output(root):
    spec = dataclasses.replace(BINARY, name="broken")
    folder = write_model(root, spec)  # golden outputs from the finite model; the graph below gives NaN
    (folder / MODEL_FILE).write_bytes(onnx_model(dataclasses.replace(spec, bias=[-1e6], post="Sqrt")))
    reseal(folder)


FAULTS = {"truncated model.onnx": (truncated, "InvalidProtobuf"), "hash mismatch": (hash_mismatch, "sha256"),
          "NaN output": (nan_output, "golden example")}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("when", ["at start", "after a reload"])
async def test_fault_fails_one_version_and_the_rest_serve(tmp_path, fault, when):
    make, reason = FAULTS[fault]
    for spec in (MULTICLASS_V1, REGRESSION):
        write_model(tmp_path, spec)
    if when == "at start":
        make(tmp_path)
    app = create_app(Settings(model_root=tmp_path, admin_enabled=True, poll_seconds=0))
    async with helpers.serve(app) as client:
        if when == "after a reload":
            make(tmp_path)
            change = (await client.post("/admin/reload")).json()
            assert [f["model"] for f in change["failed"]] == ["broken"] and reason in change["failed"][0]["reason"]
        await _assert_only_broken_is_down(client, reason)


async def _assert_only_broken_is_down(client, reason):
    assert (await client.post("/predict", json={"model": "tiny-regression", "instances": [[1, 2]]})).status_code == 200
    assert (await client.post("/models/tiny-multiclass/predict", json={"instances": [[0] * 4]})).status_code == 200
    broken = await client.post("/predict", json={"model": "broken", "instances": [[0, 0, 0]]})
    assert broken.status_code == 503 and reason in broken.json()["error"]
    models = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
    assert models["broken"]["status"] == "failed" and reason in models["broken"]["versions"][0]["reason"]
    assert models["tiny-regression"]["status"] == "ready"
    ready = await client.get("/health/ready")
    assert ready.status_code == 200 and reason in ready.json()["failed"]["broken/1"]
    text = (await client.get("/metrics")).text
    assert metric(text, "tinyserve_model_version_status", model="broken", version="1", status="failed") == 1
    assert metric(text, "tinyserve_model_version_status", model="tiny-regression", version="1", status="ready") == 1
    assert metric(text, "tinyserve_model_load_failures_total", model="broken") == 1


async def test_model_folder_removed_while_serving(tmp_path):
    for spec in (MULTICLASS_V1, REGRESSION):
        write_model(tmp_path, spec)
    app = create_app(Settings(model_root=tmp_path, admin_enabled=True, poll_seconds=0))
    async with helpers.serve(app) as client:
        shutil.rmtree(tmp_path / "tiny-multiclass")
        # Until the next reload the loaded session keeps answering: files are only read at load.
        assert (await client.post("/models/tiny-multiclass/predict", json={"instances": [[0] * 4]})).status_code == 200
        assert (await client.post("/admin/reload")).json()["removed"] == ["tiny-multiclass/1"]
        gone = await client.post("/models/tiny-multiclass/predict", json={"instances": [[0] * 4]})
        assert gone.status_code == 404 and "unknown model" in gone.json()["error"]
        assert [m["name"] for m in (await client.get("/models")).json()["models"]] == ["tiny-regression"]
        assert (await client.get("/health/ready")).json()["serving"] == {"tiny-regression": 1}
        assert (await client.post("/predict", json={"model": "tiny-regression", "instances": [[1, 2]]})).status_code == 200
        text = (await client.get("/metrics")).text
        for status in ("ready", "failed"):
            assert metric(text, "tinyserve_model_version_status", model="tiny-multiclass", version="1",
                          status=status) == 0


async def test_a_vanished_root_keeps_serving_and_an_emptied_one_makes_the_server_unready(tmp_path):
    write_model(tmp_path / "root", REGRESSION)
    app = create_app(Settings(model_root=tmp_path / "root", admin_enabled=True, poll_seconds=0))
    async with helpers.serve(app) as client:
        shutil.rmtree(tmp_path / "root")  # gone as a whole: an unmounted volume, not a withdrawal
        await client.post("/admin/reload")
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.post("/predict", json={"instances": [[1, 2]]})).status_code == 200
        (tmp_path / "root").mkdir()  # there, and empty: every model was taken away
        await client.post("/admin/reload")
        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and "no model is serving" in ready.json()["error"]
        assert (await client.get("/health/live")).status_code == 200
