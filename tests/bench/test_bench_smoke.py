"""The benchmark still runs end to end: a one-cell, one-second `python -m bench --quick`, alone
and with `--baseline HEAD` (the committed service in a temporary git worktree beside this one).

No timing is asserted; wrk must be installed (bash .ci/bootstrap test, or the benchmark installs
it with apt as root): without it this test fails rather than skips.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out),
                           "--variant", "http:TINYSERVE_HTTP=httptools"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| tinyserve | /predict | 1 | 16 |" in done.stdout
    assert "/predict ÷ fastapi" in done.stdout and "cold start" in done.stdout
    assert "# tinyserve+http: TINYSERVE_HTTP=httptools" in done.stdout and "http ÷ /predict" in done.stdout
    result = json.loads(out.read_text())
    cells = {(c["server"], c["protocol"]) for c in result["cells"]}
    assert cells == {("raw-asgi", "predict"), ("fastapi", "predict"), ("tinyserve", "predict"),
                     ("tinyserve+http", "predict")}
    assert all(c["rps"] > 0 and c["errors"] == 0 for c in result["cells"])
    assert result["cold_start_s"]["tinyserve"] > 0 and result["rss_mb"]["tinyserve"]["process"] > 0


@pytest.mark.parametrize("option, value, expected", [
    ("--variant", "TINYSERVE_HTTP=httptools", "expected NAME:TINYSERVE_X=VALUE"),
    ("--variant", "x:TINYSERVE_HTTP=httptools,B", "expected NAME:TINYSERVE_X=VALUE"),
    ("--variant", "x:", "expected NAME:TINYSERVE_X=VALUE"),
    ("--batch", "64", "expected SIZE,DELAY_MS"),
    ("--rows", "abc", "--rows: expected comma-separated integers of 1 or more"),
    ("--concurrency", "1,x", "--concurrency: expected comma-separated integers"),
    ("--concurrency", "16,0", "--concurrency: expected comma-separated integers of 1 or more"),
    ("--duration", "0", "--duration: expected an integer of 1 or more"),
    ("--env", "FOO", "--env: expected TINYSERVE_X=VALUE"),
])
def test_a_malformed_option_is_refused(option, value, expected):
    done = subprocess.run([sys.executable, "-m", "bench", option, value], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and expected in done.stderr
    assert "Traceback" not in done.stderr


def test_a_baseline_commit_runs_beside_the_service_and_its_worktree_is_removed(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--baseline", "HEAD",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| baseline | /predict | 1 | 16 |" in done.stdout
    assert "| tinyserve ÷ baseline | per round |" in done.stdout
    assert re.search(r"^\| 1 \| 16 \| /predict \| \d+\.\d\d \| \d+\.\d\d \|$", done.stdout, re.M), done.stdout
    assert "Issue 13 cells" in done.stdout and "not all measured" in done.stdout  # --quick has one cell
    worktree = re.search(r"git worktree (\S+) \(removed\)", done.stdout).group(1)
    assert not Path(worktree).exists()
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=ROOT, capture_output=True,
                            text=True)
    assert worktree not in listed.stdout
    result = json.loads(out.read_text())
    servers = {(c["server"], c["protocol"]) for c in result["cells"]}
    assert {("tinyserve", "predict"), ("baseline", "predict")} <= servers
    assert result["baseline"]["ref"] == "HEAD" and len(result["baseline"]["commit"]) == 40
    assert result["baseline"]["cells"][0]["ratio"] > 0 and result["baseline"]["issue13"] is None


def test_a_pair_run_loads_both_servers_at_once_and_removes_its_worktree():
    done = subprocess.run([sys.executable, "-m", "bench.pair", "--baseline", "HEAD", "--rows", "1",
                           "--protocols", "predict,v2", "--repeats", "1", "--seconds", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\| 1 \| (/predict|V2 JSON) \| [\d,]+ \| [\d,]+ \| (\d+\.\d{3}) \| ", done.stdout, re.M)
    assert [label for label, _ in rows] == ["/predict", "V2 JSON"] and all(float(r) > 0 for _, r in rows)
    assert "Issue 13 cells" not in done.stdout  # 256 rows not measured: no verdict
    listed = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True)
    assert "tinyserve-baseline-" not in listed.stdout


def test_a_pair_run_against_a_floor_posts_the_floor_its_body():
    done = subprocess.run([sys.executable, "-m", "bench.pair", "--floor", "fastapi", "--rows", "1",
                           "--protocols", "v2,predict-top0,predict-cols", "--repeats", "1", "--seconds", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr  # a cell with any non-2xx answer fails the run
    assert "and the fastapi floor, both on core" in done.stdout
    for label in ("V2 JSON", "/predict top_k 0", "/predict columns"):
        assert re.search(rf"^\| 1 \| {label} \| [\d,]+ \| [\d,]+ \| \d+\.\d{{3}} \| ", done.stdout, re.M), done.stdout
    assert "Issue 13 cells" not in done.stdout


@pytest.mark.parametrize("argv, expected", [
    (["--floor", "fastapi"], "--floor: not allowed with argument --baseline"),
    (["--protocols", "grpc"], "--protocols: expected some of"),
    (["--rows", "one"], "--rows: expected comma-separated integers"),
    (["--seconds", "-1"], "--seconds: expected an integer of 1 or more"),
    (["--env", "TINYSERVE_MODEL_ROOT=/tmp"], "expected TINYSERVE_X=VALUE"),
    (["--env", "BATCH"], "expected TINYSERVE_X=VALUE"),
])
def test_a_pair_run_refuses_a_bad_option_in_one_line(argv, expected):
    done = subprocess.run([sys.executable, "-m", "bench.pair", "--baseline", "HEAD", *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and expected in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("argv, code, expected", [
    (["--baseline", "no-such-ref-anywhere"], 1, "--baseline no-such-ref-anywhere: not a commit of"),
    (["--baseline", "HEAD", "--env", "TINYSERVE_MODEL_ROOT=/tmp"], 2,
     "cannot take --env TINYSERVE_MODEL_ROOT"),
])
def test_a_baseline_that_cannot_run_is_one_clear_line(argv, code, expected):
    done = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == code and expected in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("proto", ["predict", "v2", "v2bin", "predict-top0", "predict-cols", "predict-cols0"])
def test_the_profiles_steps_alone_run_each_protocols_request(proto):
    """`python -m bench.profile` measures each step of the request the benchmark sends, alone:
    the bodies decode and answer through the service's own codecs (py-spy is not needed for this)."""
    from bench import __main__ as bench
    from bench import profile
    steps = profile.alone(proto, bench.bodies(profile.ROWS)[proto])
    assert list(steps)[-4:] == ["request decoded (parse, envelope, rows -> float32)", "model run (onnxruntime)",
                                "answer (probabilities, decisions, rows' JSON)", "encode the response"]
    assert ("the body's JSON alone (simdjson.Parser().parse)" in steps) == (proto != "v2bin")
    assert all(us > 0 for us in steps.values())
