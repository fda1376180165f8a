"""`tinyserve`: one command, a subcommand per job.

    tinyserve serve [--models DIR] [--host HOST] [--port N] [--workers N] [--log-level LEVEL]
    tinyserve train ARGS      python -m training ARGS (needs the train extra)
    tinyserve import ARGS     python -m training import ARGS (needs the train extra)
    tinyserve bench ARGS      python -m bench ARGS (from a source checkout)

This module imports nothing heavy: `serve` loads the server only, never TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys

from service.config import CHECKOUT, package_version

TRAIN_EXTRA = 'pip install "tinyserve[train]"'
# Each flag sets its TINYSERVE_* variable rather than a Settings field: worker processes read the
# settings from the environment, so flags and variables then mean the same in every process.
SERVE_FLAGS = {"models": "MODEL_ROOT", "host": "HOST", "port": "PORT", "workers": "WORKERS",
               "log_level": "LOG_LEVEL"}
FORWARDED = {
    "train": "train a model (python -m training; `tinyserve train --help` lists its options)",
    "import": "import a model you already have (python -m training import)",
    "bench": "benchmark the service (python -m bench; from a source checkout)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tinyserve", description="Serve, train and benchmark small ONNX models.")
    p.add_argument("--version", action="version", version=f"tinyserve {package_version()}")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Each command owns its options, --help included: `main` hands it everything after its name.
    commands.add_parser("serve", help="serve a model repository over HTTP (python -m service)", add_help=False)
    for name, text in FORWARDED.items():
        commands.add_parser(name, help=text, add_help=False)
    return p


def serve_parser(prog: str) -> argparse.ArgumentParser:
    """The options of `tinyserve serve`, which are those of `python -m service`."""
    serve = _Parser(prog=prog, description="Serve a model repository over HTTP: `tinyserve serve` and "
                    "`python -m service` are one command. Flags override their TINYSERVE_* variables; "
                    "every other setting is a variable (see service/config.py).")
    serve.add_argument("--models", metavar="DIR",
                       help="model repository, <DIR>/<name>/<version>/ (TINYSERVE_MODEL_ROOT; "
                       "default: the bundled default models)")
    serve.add_argument("--host", help="interface to listen on (TINYSERVE_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (TINYSERVE_PORT; default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (TINYSERVE_WORKERS; default 1)")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"],
                       help="log level (TINYSERVE_LOG_LEVEL; default info)")
    return serve


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "serve":
            return serve(argv[1:])
        if argv and argv[0] in FORWARDED:
            return _forward(argv[0], argv[1:])
        build_parser().parse_args(argv)  # --help, --version, or a one-line error: each exits
        return 2  # not reached: a command named first was handled above
    except KeyboardInterrupt:
        print("tinyserve: interrupted", file=sys.stderr)
        return 130


def serve(argv: list[str], prog: str = "tinyserve serve") -> int:
    args = serve_parser(prog).parse_args(argv)
    for flag, name in SERVE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"TINYSERVE_{name}"] = str(value)
    from service.__main__ import main as serve_main  # after the variables are set: settings are read once

    return serve_main(prog=prog)


def _forward(command: str, argv: list[str]) -> int:
    if command == "bench":
        return _bench(argv)
    try:
        if command == "import":
            from training.importer import main as import_main

            return import_main(argv, prog="tinyserve import")
        import training.__main__ as training_cli

        return training_cli.main(argv, prog="tinyserve train")
    except ModuleNotFoundError as e:  # a serving install: scikit-learn, TensorFlow and the rest are missing
        return missing_extra(f"tinyserve {command}", e)


def _bench(argv: list[str]) -> int:
    if CHECKOUT is None or not (CHECKOUT / "bench" / "__main__.py").is_file():
        return _fail("bench", "the benchmark runs from a source checkout (it needs bench/ and wrk): "
                     'clone the repository and run `pip install -e ".[train]"` there')
    # bench is not part of the package: it measures the checkout it lives in.
    sys.path.insert(0, str(CHECKOUT))
    import bench.__main__ as bench_cli

    return bench_cli.main(argv, prog="tinyserve bench")


def missing_extra(prog: str, exc: ModuleNotFoundError) -> int:
    """The one line of a command that needs the train extra, run where it is missing; status 2."""
    print(f"{prog}: error: {exc}; the train extra installs it: {TRAIN_EXTRA}", file=sys.stderr)
    return 2


def _fail(command: str, message: str) -> int:
    print(f"tinyserve {command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
