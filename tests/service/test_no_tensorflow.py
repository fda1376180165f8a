"""The serving install has no TensorFlow (nor onnx): `tinyserve serve`, building and starting the app must not import them."""

from __future__ import annotations

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
