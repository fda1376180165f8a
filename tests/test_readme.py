"""The README stays true to the code: every setting is documented, the commands it gives exist."""

import re
import subprocess
from pathlib import Path

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_settings_table():
    documented = set(re.findall(r"^\| `(TINYSERVE_[A-Z_]+)` \|", README, flags=re.M))
    assert documented == {f"TINYSERVE_{name.upper()}" for name in Settings.model_fields}


def test_ci_runs_exactly_the_readme_test_command():
    assert "bash .ci/bootstrap test " in README and "bash .ci/bootstrap serve " in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash \.ci/bootstrap test$", ci, flags=re.M)


def test_quick_start_is_the_conventional_python_path():
    first = re.search(r"```sh\n(.*?)```", README, flags=re.S).group(1)
    assert first.splitlines()[:2] == [
        'python3 -m venv .venv && .venv/bin/pip install ".[train]"',
        ".venv/bin/tinyserve serve       # the four default models on http://127.0.0.1:8000"]
    assert README.index(first) < README.index("bash .ci/bootstrap serve ")


def test_only_ways_to_serve_that_give_the_same_logs_and_protocol_are_documented():
    # Bare uvicorn logs plain text and runs its own protocol: service/__main__.py is the one start.
    assert "uvicorn --factory" not in README and "uvicorn service." not in README
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^CMD \["python3", "-m", "service"\]$', dockerfile, flags=re.M)


def test_the_tritonclient_snippet_says_how_to_install_it():
    before = README[:README.index("import tritonclient.http")]
    assert 'pip install "tritonclient[http]"' in before[-400:]


def test_the_worked_example_writes_only_where_git_ignores():
    example = README[README.index("## Your own table"):README.index("\n## ", README.index("## Your own table"))]
    written = re.findall(r"example_csv (\S+)", example) + re.findall(r"--out (\S+)", example)
    written += re.findall(r"-d @(\S+)", example)
    assert len(written) >= 3, written
    done = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == written, f"not git-ignored: {set(written) - set(done.stdout.split())}"
