"""The OpenAPI document says what the routes do: schemathesis, with every check, finds nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.config import DEFAULT_MODEL_ROOT, Settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import DATA

CONFIG = DATA / "schemathesis.toml"


@pytest.mark.parametrize("tokens", [None, "open-sesame"])
def test_schemathesis_with_every_check_finds_no_failure(tmp_path, tokens):
    env = {"TINYSERVE_MODEL_ROOT": str(DEFAULT_MODEL_ROOT), "TINYSERVE_LOG_LEVEL": "warning",
           "TINYSERVE_ACCESS_LOG": "false", "TINYSERVE_POLL_SECONDS": "0",
           **({"TINYSERVE_API_TOKENS": tokens} if tokens else {})}
    auth = ["--header", f"Authorization: Bearer {tokens}"] if tokens else []
    with helpers.running_server(env, tmp_path / "server.log") as url:
        done = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
             f"{url}/openapi.json", "--checks", "all", "--max-examples", "25", "--seed", "1",
             "--no-color", *auth],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.parametrize("tokens, has_401", [((), False), (("t",), True)])
def test_the_document_lists_only_statuses_the_routes_send(tokens, has_401):
    doc = create_app(Settings(api_tokens=tokens)).openapi()
    operations = {(path, method): op for path, item in doc["paths"].items() for method, op in item.items()}
    assert not [key for key, op in operations.items() if "422" in op["responses"]]
    assert set(operations["/models/{name}", "get"]["responses"]) >= {"200", "404", "503"}
    assert ("401" in operations["/predict", "post"]["responses"]) == has_401
    assert "401" not in operations["/health/ready", "get"]["responses"]
