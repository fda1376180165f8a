"""The command line: bad arguments end in one line and a non-zero exit; training writes versions."""

import subprocess
import sys

import pytest

from service.card import read_card
from tests.service.helpers import REPO_ROOT
from training.__main__ import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


# A serving install: None in sys.modules fails `import X` as a missing package does.
TRAIN_EXTRA_MODULES = ["sklearn", "tensorflow", "keras", "tf2onnx", "onnx", "threadpoolctl", "pandas", "matplotlib"]
TRAIN_EXTRA = 'pip install "tinyserve[train]"'


def run_without_train_extra(*args: str) -> subprocess.CompletedProcess:
    """`python -m training ARGS` where the train extra's packages cannot be imported."""
    code = (f"import runpy, sys; sys.modules.update(dict.fromkeys({TRAIN_EXTRA_MODULES!r})); "
            "runpy.run_module('training', run_name='__main__', alter_sys=True)")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,prog", [
    (["--help"], "python -m training"),
    (["--dataset", "digits", "--out", "{tmp}/models"], "python -m training"),
    (["import", "{tmp}/graph.onnx", "--task", "regression", "--out", "{tmp}/models"], "python -m training import"),
])
def test_without_the_train_extra_one_line_says_how_to_install_it(tmp_path, args, prog):
    from tests.training.test_import import onnx_graph

    onnx_graph(tmp_path / "graph.onnx", None)
    done = run_without_train_extra(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr  # one line, no traceback
    assert done.stderr.startswith(f"{prog}: error: ") and done.stderr.strip().endswith(
        f"the train extra installs it: {TRAIN_EXTRA}"), done.stderr
    assert not (tmp_path / "models").exists()


def test_import_help_needs_no_train_extra():
    done = run_without_train_extra("import", "--help")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("usage: python -m training import ")


UNWRITABLE = "/proc/no-such-place"


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
    (["--dataset", "digits", "--name", ""], "model name '' must match"),
    ([], "one of the arguments --dataset --all --csv is required"),
    (["--dataset", "digits", "--quiet", "--verbose"], "not allowed with argument --quiet"),
    # An --out nothing can be written to: were the value taken, the run would stop there, not train.
    (["--dataset", "digits", "--learning-rate", "inf", "--out", UNWRITABLE],
     "argument --learning-rate: expected a finite number, got 'inf'"),
    (["--dataset", "digits", "--learning-rate", "nan", "--out", UNWRITABLE],
     "argument --learning-rate: expected a finite number, got 'nan'"),
    (["--dataset", "digits", "--l2", "inf", "--out", UNWRITABLE], "argument --l2: expected a finite number, got 'inf'"),
    (["--dataset", "digits", "--seed", "-5", "--out", UNWRITABLE],
     "argument --seed: must be from 0 to 4294967295, got '-5'"),
    (["--dataset", "digits", "--seed", "4294967296", "--out", UNWRITABLE], "argument --seed: must be from 0 to 4294967295"),
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


@pytest.mark.slow
def test_quiet_by_default_silent_with_quiet_and_talkative_with_verbose(tmp_path):
    def run(*mode):
        result = run_cli("--dataset", "digits-binary", "--epochs", "2", "--out", str(tmp_path), *mode)
        assert result.returncode == 0, result.stderr
        return result.stdout, result.stderr

    out, err = run()
    assert "== training digits-binary" in out and "Epoch" not in out and err == ""
    out, err = run("--quiet")
    assert out.split()[0] == "model" and "== training" not in out and err == ""
    out, err = run("--verbose")
    assert "Epoch 2/2" in out


@pytest.mark.parametrize("content,args,message", [
    (b"", ["--target", "y"], "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", ["--target", "y"], "not a readable CSV"),
    (b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 15, ["--target", "z"], "target column(s) 'z' not in the file"),
    (b"a,b,y\n" + b"1,,0\n3,,1\n" * 15, ["--target", "y"], "feature column(s) 'b' hold no value"),
    (b"a,b,y\n" + b"".join(b"%d,id%d,%d\n" % (i % 7, i, i % 2) for i in range(150)), ["--target", "y"],
     "'b' (150 distinct values in 150 cells) have too many categories"),
    (b"a,b,y\n" + b"1,5,0\n3,5,1\n" * 15, ["--target", "y"], "feature column(s) 'b' are constant"),
    (b"a,b,y\n" + b"1,2,0\n3,4,0\n" * 15, ["--target", "y"], "has a single class"),
    (b"a,b,y\n1,2,\n" + b"1,2,0\n3,4,1\n" * 15, ["--target", "y"], "1 missing value(s), at line(s) 2"),
    (b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 15, ["--dataset", "digits"], "not allowed with argument"),
    (b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 15, [], "either --target COLUMN or --targets"),
    (b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 15, ["--target", "y", "--keep", "c"],
     "--keep column(s) 'c' not in the file; columns are: a, b, y"),
    (b",".join(b"c%d" % i for i in range(60)) + b",y\n" + (b"1," * 60 + b"0\n") * 30, ["--target", "z"],
     "columns are: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, "
     "c20, c21, c22, c23, c24, c25, c26, c27, c28, c29, c30, c31, c32, c33, c34, c35, c36, c37, c38, c39, c40, "
     "c41, c42, c43, c44, c45, c46, c47, c48, c49, ... (11 more)"),
    (b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 15, ["--target", "y", "--drop", "a,y"],
     "--drop names the target column(s) 'y'; it leaves out feature columns only"),
    (b"a,b,y\n" + b"".join(b"%d,%d,%d\n" % (i % 7, i % 5, i % 9) for i in range(30)), ["--target", "y"],
     "have fewer than 5 rows; the stratified split needs at least 5; the task was guessed multiclass from the "
     "target's whole numbers: if it is a quantity, say --task regression"),
])
def test_bad_files_give_one_line_and_nonzero_exit(tmp_path, content, args, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    result = run_cli("--csv", str(path), "--out", str(tmp_path / "models"), *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("python -m training")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "tensorflow" not in result.stderr.lower()


def test_a_suggested_fix_pasted_into_a_shell_is_understood(tmp_path):
    import shlex

    path = tmp_path / "data.csv"
    path.write_bytes(b",a,b,y\n" + b"".join(b"r%d,%d,%d,%d\n" % (i, i % 7, i % 5, i % 2) for i in range(30)))
    result = run_cli("--csv", str(path), "--target", "y", "--keep", "Unnamed: 0",
                     "--out", str(tmp_path / "models"))
    assert "--drop 'Unnamed: 0'" in result.stderr, result.stderr
    fix = shlex.split(result.stderr.split("leave them out with ")[1])
    args = build_parser().parse_args(["--csv", str(path), "--target", "y", *fix])
    assert args.drop == ["Unnamed: 0"]


def test_row_index_column_is_left_out_with_one_warning_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b",a,b,y\n" + b"".join(b"%d,%d,x,%d\n" % (i, i % 7, i % 2) for i in range(30)))
    result = run_cli("--csv", str(path), "--target", "y", "--out", str(tmp_path / "models"))
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--keep 'Unnamed: 0'" in warnings[0], result.stderr
    assert "'b' are constant" in result.stderr  # the run goes on without the index column


def test_file_name_that_is_not_a_model_name(tmp_path):
    path = tmp_path / "my data.csv"
    path.write_bytes(b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 15)
    result = run_cli("--csv", str(path), "--target", "y", "--out", str(tmp_path))
    assert result.returncode == 2 and "choose one with --name" in result.stderr


@pytest.mark.slow
def test_trains_from_csv_with_tuned_threshold_and_report(tmp_path):
    from training.example_csv import write_cancer_csv
    csv = write_cancer_csv(tmp_path / "cancer.csv")
    out = tmp_path / "models"
    assert main(["--csv", str(csv), "--target", "diagnosis", "--positive", "malignant",
                 "--epochs", "20", "--out", str(out)]) == 0
    folder = out / "cancer" / "1"
    card = read_card(folder / "card.json")
    assert card.task.value == "binary" and card.labels == ["benign", "malignant"]
    assert card.feature_names[0] == "mean_radius" and card.training.threshold_metric == "f1"
    assert card.metrics_at_half is not None and 0 < card.thresholds[0] < 1
    assert "--csv" in card.training.command and "--positive malignant" in card.training.command
    report = folder / "report"
    assert {p.name for p in report.iterdir()} == {"report.md", "learning_curves.png",
                                                  "confusion_matrix.png"}
    assert (report / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    text = (report / "report.md").read_text()
    assert "| accuracy |" in text and "network at 0.5" in text and "baseline" in text


def test_a_long_list_of_classes_is_cut_in_the_message(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b,y\n" + b"".join(b"%d,%d,class%d\n" % (i % 7, i % 5, i) for i in range(3000)))
    result = run_cli("--csv", str(path), "--target", "y", "--task", "multiclass", "--out", str(tmp_path / "models"))
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("python -m training")]
    assert result.returncode == 1 and len(line) < 400, line
    assert "'class9' (1), ... (2990 more) of 'y' have fewer than 5 rows" in line and "guessed" not in line, line


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--dataset", "digits-binary", "--learning-rate", "1e30", "--l2", "0", "--epochs", "20"],
                                  ["--dataset", "digits", "--learning-rate", "1e30", "--epochs", "3"]])
def test_a_diverged_network_is_not_published(tmp_path, capsys, args):
    assert main([*args, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training diverged: the model's outputs are not finite (NaN or inf)" in err, err
    assert "try a smaller --learning-rate (this run used 1e+30)" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_training_publishes_only_what_the_service_would_serve(tmp_path, capsys, monkeypatch):
    import training.pipeline

    monkeypatch.setattr(training.pipeline, "serving_problem", lambda name, version, folder: "golden example 0 differs")
    assert main(["--dataset", "digits-binary", "--epochs", "1", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "python -m training: error: the trained model would not serve: golden example 0 differs\n", err
    assert not (tmp_path / "digits-binary").exists() and not any(tmp_path.iterdir())
