"""The Dockerfile's `train` stage can rebuild a default model; the serving image then serves it."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.deploy.container import IMAGE, engine, sh, start

TRAIN_IMAGE = "tinyserve-train:test"


@pytest.mark.slow
def test_train_stage_rebuilds_a_model_the_serving_image_serves(tmp_path):
    started = time.monotonic()
    sh("build", TRAIN_IMAGE, "--target", "train", timeout=1200)  # TensorFlow: minutes the first time
    print(f"\nbuilt {TRAIN_IMAGE} in {time.monotonic() - started:.0f} s")
    out = tmp_path / "out"
    out.mkdir()
    engine("run", "--rm", "-v", f"{out}:/out", TRAIN_IMAGE,
           "python3", "-m", "training", "--dataset", "diabetes", "--epochs", "3", "--out", "/out", timeout=300)
    card = json.loads((out / "diabetes" / "1" / "card.json").read_text())
    assert card["name"] == "diabetes" and (out / "diabetes" / "1" / "model.onnx").stat().st_size > 0

    sh("build", IMAGE, timeout=900)  # cached when test_container ran first
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    name, url = start("-v", f"{out}:/models:ro")
    try:
        response = httpx.post(f"{url}/predict", json={"instances": [[0.0] * 10]}, timeout=10)
        assert response.status_code == 200, response.text
    finally:
        engine("rm", "-f", name, check=False)
