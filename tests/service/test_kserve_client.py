"""KServe's own Python SDK (`InferenceRESTClient`) against /v2, JSON and binary tensor data.

The SDK pins packages the train extra needs newer (pandas<3, psutil<6), so it runs in a venv of its
own, made here from `requirements/kserve-client.txt` on first use (about a minute) and kept in
`.venv-kserve` until that lock changes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest

from service.config import DEFAULT_MODEL_ROOT
from tests.service import helpers

LOCK = helpers.REPO_ROOT / "requirements" / "kserve-client.txt"
VENV = helpers.REPO_ROOT / ".venv-kserve"
CLIENT = helpers.REPO_ROOT / "tests" / "service" / "kserve_client.py"


@pytest.fixture(scope="module")
def kserve_python() -> str:
    stamp, python = VENV / "lock.sha256", VENV / "bin" / "python"
    wanted = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        # As .ci/bootstrap does: the pip that venv bundles with Python 3.11 (23.2) refuses a hashed
        # lock whose package asks for an extra (kserve wants uvicorn[standard]) once PyPI has a
        # newer release of that package than the lock pins.
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--require-hashes", "-r", str(LOCK)],
                       check=True, timeout=900)
        stamp.write_text(wanted)
    return str(python)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    env = {"TINYSERVE_MODEL_ROOT": str(DEFAULT_MODEL_ROOT), "TINYSERVE_LOG_LEVEL": "warning"}
    with helpers.running_server(env, tmp_path_factory.mktemp("kserve") / "server.log") as url:
        yield url


def test_kserve_sdk_gets_the_same_answers_as_any_v2_client(kserve_python, default_server):
    rows = (np.arange(2 * 64).reshape(2, 64) % 17).tolist()
    done = subprocess.run([kserve_python, str(CLIENT), default_server, "digits", "features", json.dumps(rows)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    body = {"inputs": [{"name": "features", "shape": [2, 64], "datatype": "FP32", "data": rows}],
            "outputs": [{"name": "probabilities"}, {"name": "labels"}]}
    plain = httpx.post(f"{default_server}/v2/models/digits/infer", json=body, timeout=30).json()
    expected = {o["name"]: np.reshape(o["data"], o["shape"]).tolist() for o in plain["outputs"]}
    for mode in ("json", "binary"):
        assert got[mode]["model"] == "digits" and got[mode]["id"] == f"kserve-{mode == 'binary'}"
        assert got[mode]["outputs"]["labels"] == expected["labels"]
        np.testing.assert_allclose(got[mode]["outputs"]["probabilities"], expected["probabilities"], rtol=1e-6)
