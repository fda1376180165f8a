"""The command line: bad arguments end in one line and a non-zero exit; training writes versions."""

import subprocess
import sys

import pytest

from service.card import read_card
from tests.service.helpers import REPO_ROOT
from training.__main__ import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["--dataset", "nope"], "invalid choice: 'nope'"),
    (["--dataset", "digits", "--hidden", "25,x"], "like 25,15; got '25,x'"),
    (["--dataset", "digits", "--hidden", "25,0"], "must be positive"),
    (["--dataset", "digits", "--epochs", "0"], "must be greater than 0"),
    (["--dataset", "digits", "--learning-rate", "fast"], "expected a number, got 'fast'"),
    (["--dataset", "digits", "--l2", "-1"], "must be 0 or more"),
    (["--dataset", "digits", "--out", "/proc/no-such-place"], "cannot write to output folder"),
    (["--all", "--name", "x"], "--name applies to one --dataset"),
    (["--dataset", "digits", "--name", "../escape"], "model name '../escape' must match"),
    ([], "one of the arguments --dataset --all is required"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(args, message):
    result = run_cli(*args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("python -m training")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "models").write_text("a file where a folder should be")
    result = run_cli("--dataset", "digits", "--out", str(locked / "models"))
    assert result.returncode == 2 and "cannot write to output folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_trains_new_versions_and_prints_a_summary(tmp_path, capsys):
    args = ["--dataset", "digits-binary", "--epochs", "2", "--out", str(tmp_path), "--name", "tiny"]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "parity" in out and "onnx size" in out and "accuracy" in out
    first, second = read_card(tmp_path / "tiny/1/card.json"), read_card(tmp_path / "tiny/2/card.json")
    assert (first.version, second.version) == (1, 2)
    assert first.name == "tiny" and first.training.dataset == "digits-binary"
    assert first.training.epochs == 2 and "--epochs 2" in first.training.command
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left behind
