"""`tinyserve`: its subcommands, and that `serve` is exactly the server of `python -m service`."""

from __future__ import annotations

import json
import logging.config
import os
import socket
import subprocess
import sys

import httpx
import pytest
import uvicorn

import service.__main__ as python_m_service
import training.__main__ as training_cli
from service import cli, logs
from service.config import get_settings
from service.http.gateway import Gateway
from tests.service import helpers


@pytest.fixture(autouse=True)
def _restore_environ():
    """`tinyserve serve` sets TINYSERVE_* variables for its workers; none may outlive a test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


@pytest.fixture(autouse=True, scope="module")
def _no_leak():
    """What this module's tests leave in the environment is what they found."""
    before = {k: v for k, v in os.environ.items() if k.startswith("TINYSERVE_")}
    yield
    assert {k: v for k, v in os.environ.items() if k.startswith("TINYSERVE_")} == before


@pytest.fixture
def uvicorn_calls(monkeypatch):
    """What would have been handed to uvicorn.run, instead of serving (on any port: none is bound)."""
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    # The parent of several workers configures logging as uvicorn.run would: not this process's.
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)
    monkeypatch.setattr(python_m_service, "_unlistenable", lambda addresses: None)
    return calls


def run_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """`tinyserve ARGS` in its own process, from this checkout (the console script is `cli.main`)."""
    code = f"{prelude}import sys; from service.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=helpers.REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_serve_flags_are_the_settings(uvicorn_calls, model_root):
    assert cli.main(["serve", "--models", str(model_root), "--host", "127.0.0.2", "--port", "9123",
                     "--log-level", "warning"]) == 0
    [(app, options)] = uvicorn_calls
    settings = get_settings()
    assert (settings.model_root, settings.host, settings.port, settings.log_level) == (
        model_root, "127.0.0.2", 9123, "warning")
    assert (options["host"], options["port"], options["log_level"]) == ("127.0.0.2", 9123, "warning")
    assert isinstance(app, Gateway)


def test_serve_starts_uvicorn_exactly_as_python_m_service(uvicorn_calls, model_root):
    cli.main(["serve", "--models", str(model_root), "--port", "9123"])
    get_settings.cache_clear()
    # Set directly, not with monkeypatch: its undo would put back the values `serve` just wrote,
    # after `_restore_environ` has run, and they would leak into every later test.
    os.environ["TINYSERVE_MODEL_ROOT"] = str(model_root)
    os.environ["TINYSERVE_PORT"] = "9123"
    assert python_m_service.main() == 0
    (_, ours), (_, theirs) = uvicorn_calls
    assert ours == theirs
    assert ours["http"] == "service.http.corked:Protocol" and ours["access_log"] is False
    assert ours["log_config"] == logs.config("info")


def test_workers_read_the_flags_from_the_environment(uvicorn_calls, model_root):
    cli.main(["serve", "--models", str(model_root), "--workers", "2"])
    [(app, options)] = uvicorn_calls
    assert (app, options["factory"], options["workers"]) == ("service.main:create_app", True, 2)
    assert os.environ["TINYSERVE_MODEL_ROOT"] == str(model_root) and os.environ["TINYSERVE_WORKERS"] == "2"


def test_serve_over_http_logs_json_lines(model_root, tmp_path):
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "service.cli", "serve", "--models", str(model_root)]
    with helpers.running_server({}, log, command=command) as url:
        answer = httpx.post(f"{url}/predict", json={"model": "tiny-regression", "instances": [[1, 2]]})
        assert answer.json()["predictions"] == [{"value": 9.0}]
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON, uvicorn's included
    assert any(r.get("path") == "/predict" and r.get("status") == 200 for r in records)


@pytest.mark.parametrize("args, variable", [(["serve", "--port", "70000"], None),
                                            ([], "TINYSERVE_PORT=x")])
def test_a_bad_setting_is_one_line(args, variable):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYSERVE_")}
    if variable:
        key, _, value = variable.partition("=")
        env[key] = value
    command = [sys.executable, "-m", "service.cli", *args] if args else [sys.executable, "-m", "service"]
    done = subprocess.run(command, cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "TINYSERVE_PORT=" in done.stderr, done.stderr


def test_a_host_that_does_not_resolve_is_one_line_before_any_model_loads(uvicorn_calls, model_root, capsys):
    assert cli.main(["serve", "--models", str(model_root), "--host", "no-such-host.invalid"]) == 2
    assert uvicorn_calls == []
    error = capsys.readouterr().err
    assert error.startswith("tinyserve serve: error: TINYSERVE_HOST='no-such-host.invalid': ") and error.count("\n") == 1


def test_a_port_another_server_holds_is_one_line_before_any_model_loads(monkeypatch, model_root, capsys):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--models", str(model_root), "--host", "127.0.0.1", "--port", str(port)]) == 2
    assert calls == []
    error = capsys.readouterr().err
    assert error == f"tinyserve serve: error: cannot listen on 127.0.0.1:{port}: Address already in use\n", error


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_is_probed_as_it_is_bound_for_ipv6_only():
    # uvicorn's server binds "::" for IPv6 only: an IPv4 server on the same port is no conflict.
    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = taken.getsockname()[1]
        try:
            addresses = socket.getaddrinfo("::", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError:
            pytest.skip("no IPv6 address")
        assert python_m_service._unlistenable(addresses) is None
        assert python_m_service._unlistenable(socket.getaddrinfo("0.0.0.0", port, type=socket.SOCK_STREAM)) is not None


def test_a_missing_metrics_directory_is_one_line(model_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYSERVE_")}
    env.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "nowhere"), TINYSERVE_MODEL_ROOT=str(model_root))
    done = subprocess.run([sys.executable, "-m", "service", "--workers", "2"], cwd=helpers.REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert f"PROMETHEUS_MULTIPROC_DIR='{tmp_path / 'nowhere'}': not a writable directory" in done.stderr


def test_workers_without_a_writable_temporary_directory_is_one_line(uvicorn_calls, model_root, monkeypatch,
                                                                     capsys):
    # A read-only root filesystem with no /tmp mounted: the workers' metrics files have nowhere to go.
    def no_tmp(prefix):
        raise FileNotFoundError("No usable temporary directory found")

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(python_m_service.tempfile, "mkdtemp", no_tmp)
    assert cli.main(["serve", "--models", str(model_root), "--workers", "2"]) == 2
    assert uvicorn_calls == []
    error = capsys.readouterr().err
    assert error.startswith("tinyserve serve: error: TINYSERVE_WORKERS=2: ") and "mount one at /tmp" in error


# Where the train extra is missing: None in sys.modules fails `import X` as a missing package does.
NO_TRAIN_EXTRA = ("import sys; sys.modules.update(dict.fromkeys(['sklearn', 'tensorflow', 'keras', "
                  "'tf2onnx', 'onnx', 'pandas', 'matplotlib'])); ")


def test_train_without_the_train_extra_is_one_line_saying_how_to_install_it():
    done = run_cli("train", "--help", prelude=NO_TRAIN_EXTRA)
    assert done.returncode != 0
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert 'pip install "tinyserve[train]"' in done.stderr and "Traceback" not in done.stderr


def test_import_without_the_train_extra_works_or_says_how_to_install_it():
    # Whether importing a model needs the train extra is the import command's to say (issue 14).
    done = run_cli("import", "--help", prelude=NO_TRAIN_EXTRA)
    assert "Traceback" not in done.stderr
    assert done.returncode == 0 or (done.stderr.splitlines() == [done.stderr.strip()]
                                    and 'pip install "tinyserve[train]"' in done.stderr), done.stderr


@pytest.mark.parametrize("argv, forwarded", [
    (["train", "--dataset", "digits", "--epochs", "3"], ("train", ["--dataset", "digits", "--epochs", "3"])),
    (["import", "--help"], ("import", ["--help"])),
    (["import", "model.onnx", "--name", "mine"], ("import", ["model.onnx", "--name", "mine"])),
])
def test_train_and_import_forward_to_the_training_commands_under_their_own_names(monkeypatch, argv, forwarded):
    import training.importer as importer

    calls = []
    monkeypatch.setattr(training_cli, "main", lambda args, prog: calls.append(("train", args, prog)) or 7)
    monkeypatch.setattr(importer, "main", lambda args, prog: calls.append(("import", args, prog)) or 7)
    assert cli.main(argv) == 7
    assert calls == [(*forwarded, f"tinyserve {forwarded[0]}")]


def test_errors_and_help_name_the_command_as_typed():
    bad = run_cli("train", "--csv", "missing.csv", "--target", "y")
    assert bad.returncode != 0 and bad.stderr.startswith("tinyserve train: error: "), bad.stderr
    bad = run_cli("serve", "--bogus")
    assert bad.returncode == 2 and bad.stderr == "tinyserve serve: error: unrecognized arguments: --bogus\n"
    assert run_cli("serve", "--help").stdout.startswith("usage: tinyserve serve")
    assert run_cli("train", "--help").stdout.startswith("usage: tinyserve train")
    assert run_cli("import", "--help").stdout.startswith("usage: tinyserve import")


def test_help_and_version():
    top = run_cli("--help")
    assert top.returncode == 0 and all(name in top.stdout for name in ("serve", "train", "import", "bench"))
    serve = run_cli("serve", "--help")
    assert serve.returncode == 0 and all(f in serve.stdout for f in ("--models", "--port", "--host", "--workers"))
    train = run_cli("train", "--help")
    assert train.returncode == 0 and "--dataset" in train.stdout
    bench = run_cli("bench", "--help")
    assert bench.returncode == 0 and "usage: tinyserve bench" in bench.stdout
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("tinyserve ")


def test_no_command_is_one_line():
    done = run_cli()
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "tinyserve: error: the following arguments are required: COMMAND"]


def run_python_m_service(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYSERVE_")}
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=helpers.REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_python_m_service_takes_the_serve_flags_and_starts_no_server_for_help_or_a_bad_flag():
    # Before, it ignored its arguments: `--help` and `--port abc` both served on port 8000.
    helped = run_python_m_service("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: python -m service")
    assert all(f in helped.stdout for f in ("--models", "--port", "--host", "--workers")) and not helped.stderr
    bad = run_python_m_service("--port", "abc")
    assert bad.returncode == 2 and bad.stderr == "python -m service: error: argument --port: invalid int value: 'abc'\n"
    bad = run_python_m_service("--port", "70000")  # the flag is the variable: its check words the error
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "TINYSERVE_PORT=" in bad.stderr


def test_python_m_service_flags_are_the_settings(uvicorn_calls, model_root):
    assert cli.serve(["--models", str(model_root), "--port", "9124"], prog="python -m service") == 0
    [(app, options)] = uvicorn_calls
    assert (get_settings().model_root, options["port"]) == (model_root, 9124)


# Ctrl-C while the server's modules load: an import hook raises it where uvicorn is first imported.
INTERRUPT_AT_UVICORN = """
import runpy, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "uvicorn":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = ["service"]
runpy.run_module("service", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_python_m_service_loads_is_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYSERVE_")}
    done = subprocess.run([sys.executable, "-c", INTERRUPT_AT_UVICORN], cwd=helpers.REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "python -m service: interrupted\n"), done.stderr
