"""The serving install has no TensorFlow (nor onnx): `tinyserve serve`, building and starting the app must not import them."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.service.helpers import REPO_ROOT

SCRIPT = """
import asyncio, sys
import service.main, service.cli, service.__main__  # the `tinyserve serve` path too
from service.config import Settings
app = service.main.create_app(Settings(model_root=sys.argv[1]))
async def start():
    async with app.router.lifespan_context(app):
        assert app.state.repository.not_ready_reason() is None
asyncio.run(start())
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "tf2onnx", "onnx"})))
"""


def test_service_imports_no_tensorflow(model_root):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(model_root)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_onnxruntime_writes_and_sends_no_telemetry(model_root, tmp_path):
    # onnxruntime 1.32 wrote a device id and an event store under ~/.cache (and printed a warning
    # where HOME was not writable, as in the image) on import, unless told not to first.
    script = ("import PACKAGE\n"
              "import sys, numpy as np, onnxruntime\n"
              "s = onnxruntime.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
              "s.run(None, {s.get_inputs()[0].name: np.zeros((1, s.get_inputs()[0].shape[1]), np.float32)})\n")
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    for package in ("service", "training"):
        home = tmp_path / package
        home.mkdir()
        model = str(model_root / "tiny-binary" / "1" / "model.onnx")
        result = subprocess.run([sys.executable, "-c", script.replace("PACKAGE", package), model], cwd=REPO_ROOT,
                                env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert list(home.rglob("*")) == [] and "telemetry" not in result.stderr
