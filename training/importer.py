"""Import a model made elsewhere, a Keras file or an ONNX graph, as a served version folder.

    python -m training import churn.keras --task binary --labels stay,leave --out models
    python -m training import iris.onnx --task multiclass --labels-file labels.txt \\
        --output probabilities --samples rows.csv --out models

Writes `<out>/<name>/<version>/model.onnx` and a card of facts: the signature read from the graph,
its SHA-256, where it came from (`source`), what its output holds (`output_kind`, see
`training.output_kind`), golden examples computed with onnxruntime and, for a Keras file, the
parity proof against Keras on the sample rows. Nothing about training is invented: those card
fields stay absent. The version is checked with the service's own loader before it is published;
anything wrong ends with one line on stderr, a non-zero exit, and nothing written.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from service.card import (CARD_FILE, MODEL_FILE, NAME_RE, VERSION_MAX, VERSION_RE, Golden, ModelCard, OutputKind,
                          Source, Task, TensorSpec, sha256_file, write_card)
from training.convert import Converted, ImportFailed, decide_kind, from_keras, from_onnx, line
from training.output_kind import not_probabilities, probabilities_already
from training.publish import (DEFAULT_ROOT, DEFAULT_ROOT_HELP, library_versions, next_version, now, publish,
                              serving_problem, unwritable)

PROG = "python -m training import"
FORMATS = {".keras": "keras", ".h5": "keras", ".onnx": "onnx"}
GOLDEN_ROWS = 5
DEFAULT_THRESHOLD = 0.5
KERAS_LIBRARIES = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy")
ONNX_LIBRARIES = ("onnx", "onnxruntime", "numpy")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise ImportFailed(message)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a Keras file (.keras, or .h5 where Keras 3 loads it) or an ONNX file")
    p.add_argument("--task", required=True, choices=[t.value for t in Task], help="what the model does")
    p.add_argument("--name", help="model name (default: the file's name without its extension)")
    p.add_argument("--version", type=int, help="version number (default: one more than the newest)")
    p.add_argument("--out", type=Path, default=DEFAULT_ROOT, help=f"model repository (default: {DEFAULT_ROOT_HELP})")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=names, help="class or label names in output order, e.g. cat,dog "
                       "(binary: negative,positive; regression: target names)")
    labels.add_argument("--labels-file", type=Path, help="a file with one label per line, in output order")
    p.add_argument("--feature-names", type=names, help="input feature names in column order, e.g. age,bmi")
    p.add_argument("--thresholds", type=names, help="binary: one threshold; multilabel: one per label (default 0.5)")
    p.add_argument("--output", help="the output to serve when the model has several")
    p.add_argument("--output-kind", choices=[OutputKind.logits.value, OutputKind.probabilities.value],
                   help="what a classifier's output holds (default: found from the model)")
    p.add_argument("--samples", type=Path, help="sample rows for golden examples and parity: CSV (a header "
                   "row names the features) or .npy (default: 5 seeded random rows)")
    p.add_argument("--description", default="", help="one line about the model")
    return p


def names(text: str) -> list[str]:
    """A command-line list: names (or numbers) separated by commas, spaces around them dropped."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return items


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run the import command as `prog` (how errors and --help name it); returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(prog).parse_args(argv)
        card, folder = import_model(args, shlex.join(["python", "-m", "training", "import", *argv]))
    except ImportFailed as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as e:  # an I/O error, a failed export or parity
        print(f"{prog}: error: {line(e)}", file=sys.stderr)
        return 1
    n_in, n_out = card.n_features, card.n_outputs
    print(f"imported {args.model.name} as {card.name} version {card.version} ({card.task.value}, "
          f"{n_in} feature{'s' * (n_in != 1)}, {n_out} output{'s' * (n_out != 1)} of {card.output_kind.value}) "
          f"into {folder}")
    return 0


def import_model(args: argparse.Namespace, command: str) -> tuple[ModelCard, Path]:
    """Convert, check and publish one model; raises ImportFailed with the reason."""

    path, task = args.model, Task(args.task)
    fmt = _format(path)
    name = path.stem if args.name is None else args.name
    if not NAME_RE.fullmatch(name):
        raise ImportFailed(f"model name {name!r} must match {NAME_RE.pattern}; choose one with --name")
    if args.version is not None and not VERSION_RE.fullmatch(str(args.version)):
        raise ImportFailed(f"--version must be 1 to {VERSION_MAX} (the version folders the server serves), "
                           f"got {args.version}")
    if args.out.exists() and not args.out.is_dir():
        raise ImportFailed(f"--out {args.out} is a file; it names the model repository, a directory")
    problem = unwritable(args.out)
    if problem:
        raise ImportFailed(problem)
    version = args.version or next_version(args.out, name)
    if (args.out / name / str(version)).exists():
        raise ImportFailed(f"{args.out / name / str(version)} exists already; choose another --version")
    labels = _read_lines(args.labels_file) if args.labels_file else args.labels  # the card checks them
    samples, header = _samples(args.samples) if args.samples else (None, None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name / str(version)
        folder.mkdir(parents=True)
        convert = from_keras if fmt == "keras" else from_onnx
        converted = convert(path, args.output, task, args.output_kind, folder / MODEL_FILE)
        card = _card(args, name, version, task, labels, _features(args.feature_names, header, args.samples), samples, converted,
                     Source(file=path.name, format=fmt, sha256=sha256_file(path), output=converted.chosen,
                            output_kind_from=_kind_from(args, task, converted), samples=_samples_from(args),
                            command=command), folder / MODEL_FILE)
        write_card(card, folder / CARD_FILE)
        reason = serving_problem(name, version, folder)
        if reason is not None:
            raise ImportFailed(f"the imported model would not serve: {reason}")
        _, target = publish(args.out, name, version, lambda staging: _copy(folder, staging))
    return card, target


def _format(path: Path) -> str:
    if path.is_dir():
        raise ImportFailed(f"{path} is a directory; name the model file ({', '.join(FORMATS)})")
    if not path.is_file():
        raise ImportFailed(f"no such file: {path}")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImportFailed(f"{path.name} is not a model file this command reads: expected {', '.join(FORMATS)}")
    return fmt


def _read_lines(path: Path) -> list[str]:
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ImportFailed(f"cannot read labels file {path}: {line(e)}")
    if not any(lines):
        raise ImportFailed(f"labels file {path} holds no label: write one a line, in output order")
    return [line for line in lines if line]


def _samples(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Sample rows from a CSV (its first row may name the features) or a .npy file."""
    try:
        if path.suffix.lower() == ".npy":
            rows, header = np.load(path, allow_pickle=False), None
        else:
            with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's byte-order mark is no name
                table = [r for r in csv.reader(f) if r]
            header = [h.strip() for h in table.pop(0)] if table and not _numeric(table[0]) else None
            rows = np.array(table, dtype=np.float64)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ImportFailed(f"cannot read sample rows from {path}: {line(e)}")
    if rows.ndim != 2 or not len(rows) or rows.dtype.kind not in "iuf" or not np.isfinite(rows).all():
        raise ImportFailed(f"sample rows in {path} must be a table of finite numbers, one row per line")
    return rows.astype(np.float64), header


def _features(given: list[str] | None, header: list[str] | None, path: Path | None) -> list[str] | None:
    """The feature names: the option's, or the samples' header; both must agree when both are given."""
    if given and header and header != given:
        raise ImportFailed(f"--feature-names {','.join(given)} differ from the header of {path.name} "
                           f"({','.join(header)}): leave one out or make them agree")
    return given or header


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _kind_from(args: argparse.Namespace, task: Task, converted: Converted) -> str:
    if task is Task.regression:
        return "the task: regression outputs are values"
    return "--output-kind" if args.output_kind else converted.kind_from


def _samples_from(args: argparse.Namespace) -> str:
    if args.samples:
        return f"{args.samples.name}"
    return f"{GOLDEN_ROWS} rows drawn from a standard normal (seed 0): no sample rows were given"


def _card(args, name: str, version: int, task: Task, labels: list[str] | None, features: list[str] | None,
          samples: np.ndarray | None, converted: Converted, source: Source, model_path: Path) -> ModelCard:
    import onnxruntime as ort

    from service import runtime

    # The service's options: onnxruntime's notes on the graph (unused initializers) are not this
    # command's output.
    session = ort.InferenceSession(str(model_path), runtime.session_options(1), providers=["CPUExecutionProvider"])
    try:
        graph_in, graph_out = runtime.signature(session, converted.output)
    except ValueError as e:
        raise ImportFailed(f"{args.model.name} cannot serve: {e}")
    n = graph_in.shape[1]
    rows = _rows(samples, n, graph_in.dtype, args.samples)
    out = session.run([converted.output], {graph_in.name: rows.astype(graph_in.dtype)})[0]
    width = out.shape[1] if out.ndim == 2 else None
    if width is None:
        raise ImportFailed(f"output {converted.output!r} gives shape {list(out.shape)}; a served output is "
                           "[batch, n_outputs]")
    if task is Task.binary and width != 1:
        raise ImportFailed(f"a binary model serves one output column (the positive class); {converted.output!r} "
                           f"has {width}: import it with --task multiclass and {width} labels")
    _finite(out[:GOLDEN_ROWS], args.samples)
    output_kind = decide_kind(task, args.output_kind, converted.kind, converted.kind_from, converted.one_class)
    _check_kind(out, task, output_kind, args, converted)
    keras_model, parity = converted.keras, None
    if keras_model is not None:  # TensorFlow, for a Keras file only (it is loaded already)
        from training.export import check_parity
        parity = check_parity(keras_model, model_path, rows)
    fields = dict(
        name=name, version=version, task=task, description=args.description,
        input=TensorSpec(name=graph_in.name, shape=[-1, n], dtype=graph_in.dtype),
        output=TensorSpec(name=graph_out.name, shape=[-1, width], dtype=graph_out.dtype),
        output_kind=output_kind, feature_names=features,
        labels=labels or _default_labels(task, width), thresholds=_thresholds(args.thresholds, task, width),
        source=source, parity=parity, sha256=sha256_file(model_path),
        library_versions=library_versions(KERAS_LIBRARIES if keras_model is not None else ONNX_LIBRARIES),
        golden=[Golden(input=r.tolist(), output=o.tolist()) for r, o in zip(rows[:GOLDEN_ROWS], out)],
        created_at=now())
    try:
        return ModelCard(**fields)
    except ValidationError as e:
        raise ImportFailed("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors()))


def _rows(samples: np.ndarray | None, n: int, dtype: str, path: Path | None) -> np.ndarray:
    """The sample rows as float32 (what the service feeds), or seeded random ones."""
    if samples is None:
        samples = np.random.default_rng(0).standard_normal((GOLDEN_ROWS, n))
        samples = samples.round() if dtype.startswith("int") else samples
    if samples.shape[1] != n:
        raise ImportFailed(f"sample rows in {path} have {samples.shape[1]} columns; the model takes {n} features")
    rows = samples.astype(np.float32)
    if dtype.startswith("int") and not (rows == np.round(rows)).all():
        raise ImportFailed(f"the model's input is {dtype}: sample rows must be whole numbers")
    return rows


def _finite(out: np.ndarray, path: Path | None) -> None:
    """Golden examples are numbers: an output that is NaN or infinite on a sample row cannot be one."""
    bad = [i for i, row in enumerate(out) if not np.isfinite(row).all()]
    if not bad:
        return
    if path is None:
        raise ImportFailed(f"the model's output is not finite (NaN or inf) on {len(bad)} of the {len(out)} random "
                           "sample rows (standard normal, seed 0): pass rows of its own data with --samples FILE "
                           "(CSV or .npy)")
    raise ImportFailed(f"the model's output is not finite (NaN or inf) on row(s) {bad} of {path.name} (counted "
                       f"from 0, without a CSV's header): the first {GOLDEN_ROWS} sample rows become golden "
                       "examples; pass rows it answers with --samples")


def _check_kind(out: np.ndarray, task: Task, kind: OutputKind, args: argparse.Namespace, converted: Converted) -> None:
    """An output said or found to hold probabilities must hold them on the sample rows (else the
    service would answer logits as probabilities, or a sigmoid's scores as a softmax's), and a
    multiclass output said or found to hold logits must not be probabilities already (a second
    softmax would flatten every answer)."""
    rows = f"of {args.samples.name}" if args.samples else "of the random sample rows"
    problem = not_probabilities(out, task is Task.multiclass, rows) if kind is OutputKind.probabilities else \
        probabilities_already(out, rows) if kind is OutputKind.logits and task is Task.multiclass else None
    if problem is not None:
        said = f"--output-kind {kind.value}" if args.output_kind else \
            f"the output was taken to hold {kind.value} ({converted.kind_from})"
        raise ImportFailed(f"{said}, but {problem}")


def _default_labels(task: Task, width: int) -> list[str]:
    if task is Task.regression:
        return ["value"] if width == 1 else [f"value_{i}" for i in range(width)]
    return [str(i) for i in range(2 if task is Task.binary else width)]


def _thresholds(given: list[str] | None, task: Task, width: int) -> list[float] | None:
    """The thresholds given (the card checks which tasks take them, how many and their range), or
    the default ones of a binary or multilabel model."""
    if not given:
        return [DEFAULT_THRESHOLD] * width if task in (Task.binary, Task.multilabel) else None
    try:
        return [float(t) for t in given]
    except ValueError:
        raise ImportFailed(f"--thresholds must be numbers between 0 and 1, got {','.join(given)}")


def _copy(folder: Path, staging: Path) -> None:
    for file in (MODEL_FILE, CARD_FILE):
        shutil.copyfile(folder / file, staging / file)


