"""Command line: train built-in models, or a model from your own table, into a model repository.

    python -m training --all --out models
    python -m training --dataset digits --hidden 25,15 --l2 1e-3 --out models
    python -m training --csv cancer.csv --target diagnosis --out models
    python -m training --csv traits.csv --targets even,prime,closed_loop --out models
    python -m training import model.keras --task binary --labels no,yes --out models

`import` turns a model made elsewhere (Keras or ONNX) into a served version: see training/importer.py
and `python -m training import --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out

# Nothing here needs the train extra: where it is missing, main says so in one line.
from service.card import MODEL_FILE, NAME_RE, Task  # noqa: E402
from service.cli import missing_extra  # noqa: E402
from training.config import RECIPES, Config  # noqa: E402
from training.importer import PROG as IMPORT_PROG, main as import_main, names  # noqa: E402
from training.publish import DEFAULT_ROOT, DEFAULT_ROOT_HELP  # noqa: E402
from training.quiet import quiet_stderr  # noqa: E402

PROG = "python -m training"
SEED_MAX = 2**32 - 1  # NumPy's legacy seed, which Keras sets, takes no more


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise CliError(message)


def parse_hidden(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in text.split(",")) if text.strip() else ()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"hidden layers must be positive integers separated by commas, like 25,15; got {text!r}")
    if any(u < 1 for u in units):
        raise argparse.ArgumentTypeError(f"hidden layer sizes must be positive, got {text!r}")
    return units


def _number(kind, text: str):
    """`text` as a finite number of `kind`: inf or nan would train a model of NaNs."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive(kind):
    def convert(text: str):
        value = _number(kind, text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
        return value
    return convert


def _non_negative_float(text: str) -> float:
    value = _number(float, text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _seed(text: str) -> int:
    value = _number(int, text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_MAX}, got {text!r}")
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from training.datasets import BUILTIN  # scikit-learn: the train extra

    p = _Parser(prog=prog, description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", choices=sorted(BUILTIN), help="built-in data set to train")
    which.add_argument("--all", action="store_true", help="train every built-in data set")
    which.add_argument("--csv", type=Path, metavar="FILE",
                       help="train from a CSV file (or .parquet, when pyarrow is installed)")
    table = p.add_argument_group("training from a file")
    table.add_argument("--target", help="target column (binary, multiclass or regression)")
    table.add_argument("--targets", type=names, help="0/1 label columns, e.g. A,B,C (multilabel), "
                       "or several regression targets with --task regression")
    table.add_argument("--task", choices=[t.value for t in Task],
                       help="task; guessed from the target when left out")
    table.add_argument("--drop", type=names, default=[], help="columns to leave out, e.g. id,name")
    table.add_argument("--keep", type=names, default=[],
                       help="columns to keep although they look like a row index (no header, or "
                       "0..n-1 / 1..n in order), which are otherwise left out with a warning")
    table.add_argument("--na-values", type=names, default=[], metavar="TEXT",
                       help="cell texts that also mean missing, e.g. NA,None (by default only an "
                       "empty cell is missing)")
    table.add_argument("--positive", help="the positive class of a binary target "
                       "(default: the last of the two, sorted)")
    p.add_argument("--out", type=Path, default=DEFAULT_ROOT,
                   help=f"model repository to write into (default: {DEFAULT_ROOT_HELP})")
    p.add_argument("--name", help="model name (default: the data set's name)")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help="print only the summary (and errors)")
    talk.add_argument("--verbose", action="store_true", help="print Keras's line per epoch, "
                      "TensorFlow's start-up lines and library warnings")
    p.add_argument("--hidden", type=parse_hidden, help="hidden layer sizes, e.g. 25,15")
    p.add_argument("--l2", type=_non_negative_float, help="L2 weight regularization")
    p.add_argument("--epochs", type=_positive(int), help="maximum epochs (early stopping on "
                   "the validation loss restores the best weights)")
    p.add_argument("--patience", type=_positive(int), help="early-stopping patience in epochs")
    p.add_argument("--learning-rate", type=_positive(float), help="Adam learning rate")
    p.add_argument("--batch-size", type=_positive(int), help="mini-batch size")
    p.add_argument("--seed", type=_seed, help="seed for the split and the weights")
    p.add_argument("--output-activation", choices=["linear", "relu"],
                   help="regression output: linear, or relu for non-negative targets")
    p.add_argument("--tune-thresholds", choices=["f1", "accuracy", "balanced_accuracy", "none"],
                   help="metric the binary / per-label thresholds are chosen for on the "
                   "validation split (default f1; none keeps 0.5)")
    p.set_defaults(prog=prog)
    return p


def config_for(dataset: str, args: argparse.Namespace) -> Config:
    """The data set's recipe, with whatever the command line overrides."""
    cfg = RECIPES.get(dataset, Config())
    overrides = {k: getattr(args, k) for k in ("hidden", "l2", "epochs", "patience",
                                               "learning_rate", "batch_size", "seed",
                                               "output_activation", "tune_thresholds")
                 if getattr(args, k) is not None}
    return replace(cfg, **overrides)


def command_for(source: list[str], name: str, cfg: Config) -> str:
    """The full command that trains this model again, every hyper-parameter spelled out."""
    parts = ["python", "-m", "training", *source, "--name", name,
             "--hidden", ",".join(map(str, cfg.hidden)), "--l2", repr(cfg.l2),
             "--epochs", str(cfg.epochs), "--patience", str(cfg.patience),
             "--learning-rate", repr(cfg.learning_rate), "--batch-size", str(cfg.batch_size),
             "--seed", str(cfg.seed), "--output-activation", cfg.output_activation,
             "--tune-thresholds", cfg.tune_thresholds]
    return shlex.join(parts)


def table_source(args: argparse.Namespace) -> list[str]:
    """The data arguments of a --csv run, as they will be recorded in the card."""
    source = ["--csv", str(args.csv)]
    if args.target:
        source += ["--target", args.target]
    if args.targets:
        source += ["--targets", ",".join(args.targets)]
    if args.task:
        source += ["--task", args.task]
    if args.drop:
        source += ["--drop", ",".join(args.drop)]
    if args.keep:
        source += ["--keep", ",".join(args.keep)]
    if args.na_values:
        source += ["--na-values", ",".join(args.na_values)]
    if args.positive:
        source += ["--positive", args.positive]
    return source


def check_writable(root: Path) -> None:
    from training.publish import unwritable

    problem = unwritable(root)
    if problem:
        raise CliError(problem)


def load_jobs(args: argparse.Namespace) -> list[tuple]:
    """(data set, config, command, model name) for each model to train.

    Data first: a bad file answers in a second, before TensorFlow loads."""
    if args.csv:
        from training.tabular import load_table
        data = load_table(args.csv, args.target, args.targets,
                          Task(args.task) if args.task else None, args.drop, args.positive,
                          name=args.name, keep=args.keep, na_values=args.na_values,
                          warn=partial(_warn, args.prog))
        cfg = config_for("", args)
        return [(data, cfg, command_for(table_source(args), data.name, cfg), data.name)]
    from training.datasets import BUILTIN, load_builtin
    jobs = []
    for dataset in sorted(BUILTIN) if args.all else [args.dataset]:
        cfg = config_for(dataset, args)
        name = args.name or dataset
        jobs.append((load_builtin(dataset), cfg, command_for(["--dataset", dataset], name, cfg), name))
    return jobs


def train_all(jobs: list[tuple], args: argparse.Namespace) -> list[tuple]:
    """Train each job; unless --verbose, TensorFlow's C++ lines and library warnings go nowhere
    (a failure still ends in the one error line main prints)."""
    with contextlib.nullcontext() if args.verbose else quiet_stderr():
        from training.pipeline import train_one
        rows = []
        for data, cfg, command, name in jobs:
            if not args.quiet:
                print(f"== training {name} ({data.task.value}) on {args.csv or data.name}",
                      flush=True)
            rows.append(train_one(data, cfg, args.out, command, name=name, verbose=args.verbose))
            if not args.quiet:
                for line in filled(rows[-1][0]):
                    print(line)
    return rows


def filled(card) -> list[str]:
    """One line per column with missing training values: how many, and what filled them."""
    what = {"numeric": "the training median", "categorical": "the most frequent training category"}
    return [f"{c.name!r}: {c.missing_in_training} of {card.splits.train} training rows missing, "
            f"filled with {c.fill!r} ({what[c.kind]})"
            for c in card.columns or [] if c.missing_in_training]


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run the command as `prog` (how errors and --help name it); returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    command = train
    if argv[:1] == ["import"]:
        command, argv, prog = import_main, argv[1:], IMPORT_PROG
    try:
        return command(argv, prog)
    except ModuleNotFoundError as e:  # a serving install: scikit-learn, TensorFlow and the rest are missing
        return missing_extra(prog, e)


def train(argv: list[str], prog: str = PROG) -> int:
    """The training command (everything but `import`); returns the exit status."""
    try:
        args = build_parser(prog).parse_args(argv)
        if args.all and args.name:
            raise CliError("--name applies to one --dataset, not to --all")
        if not args.csv and (args.target or args.targets or args.task or args.drop
                             or args.positive or args.keep or args.na_values):
            raise CliError("--target, --targets, --task, --drop, --keep, --na-values and "
                           "--positive go with --csv")
        if args.csv and not args.name and not NAME_RE.fullmatch(args.csv.stem):
            raise CliError(f"the file name {args.csv.stem!r} is not a valid model name; "
                           "choose one with --name")
        if args.name is not None and not NAME_RE.fullmatch(args.name):
            raise CliError(f"model name {args.name!r} must match {NAME_RE.pattern}")
        check_writable(args.out)
        jobs = load_jobs(args)
        print_summary(train_all(jobs, args))
        return 0
    except CliError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as e:  # bad data, I/O, a failed export
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _warn(prog: str, message: str) -> None:
    print(f"{prog}: warning: {message}", file=sys.stderr)


def print_summary(rows) -> None:
    """A line per model: the headline metric as served, at 0.5 and for both baselines; then
    warnings about small splits and thresholds that were tuned but not served."""
    from training.report import headline, quality_warnings, threshold_notes
    header = ("model", "version", "task", "metric", "network", "at 0.5", "linear", "trees",
              "parity", "onnx size")
    lines = [header]
    for card, path in rows:
        key, values = headline(card)
        parity = f"{card.parity.max_abs_diff:.1e} {'ok' if card.parity.passed else 'WARN'}"
        size = f"{(path / MODEL_FILE).stat().st_size / 1024:.1f} KiB"
        lines.append((card.name, str(card.version), card.task.value, key,
                      *("-" if v is None else f"{v:.4f}" for v in values), parity, size))
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    print()
    for r in lines:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for card, path in rows:
        for warning in quality_warnings(card):
            print(f"warning: {card.name}: {warning}")
        for note in threshold_notes(card):
            print(f"{card.name}: threshold {note}")
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
