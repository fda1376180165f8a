"""Service test helpers: tiny ONNX models with valid cards, an in-process client, a real server.

Each model is `logits = x @ weights + bias` (MatMul + Add), optionally followed by one unary op
(`post`, e.g. "Sqrt" to produce NaN on purpose), so every expected answer is a line of numpy. No TensorFlow involved. Later protocol tests (V2, TF Serving) reuse `write_model`,
`standard_repository`, `serve` and `running_server`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import onnx
from fastapi import FastAPI
from onnx import TensorProto, helper, numpy_helper

from service.card import CARD_FILE, MODEL_FILE, Golden, ModelCard, read_card, sha256_file, write_card

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "tests" / "data" / "service"

OPSET = 17
IR_VERSION = 8  # what onnxruntime 1.x reads everywhere


@dataclass(frozen=True)
class Spec:
    """A tiny linear model: enough to write its graph, its card and its expected answers."""

    name: str
    task: str
    weights: list[list[float]]
    bias: list[float]
    labels: list[str]
    version: int = 1
    feature_names: list[str] | None = None
    thresholds: list[float] | None = None
    golden_inputs: list[list[float]] | None = None
    input_name: str = "x"
    output_name: str = "logits"
    post: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.weights)

    @property
    def n_outputs(self) -> int:
        return len(self.bias)

    def logits(self, rows) -> np.ndarray:
        """What onnxruntime should answer for these rows, computed in float32 like the graph."""
        x = np.asarray(rows, np.float32)
        y = x @ np.asarray(self.weights, np.float32) + np.asarray(self.bias, np.float32)
        with np.errstate(invalid="ignore"):
            return getattr(np, self.post.lower())(y) if self.post else y


def ref_sigmoid(x) -> np.ndarray:
    """Plain logistic function in float64, written here so no expected answer comes from `service`."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):  # exp(1000) is inf: 1 / (1 + inf) is the right 0
        return 1.0 / (1.0 + np.exp(-x))


def ref_softmax(x) -> np.ndarray:
    """Plain row-wise softmax in float64 (row max subtracted), independent of `service.tasks`."""
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def onnx_model(spec: Spec) -> bytes:
    """Serialized MatMul + Add graph with a free batch dimension."""
    w = numpy_helper.from_array(np.asarray(spec.weights, np.float32), "W")
    b = numpy_helper.from_array(np.asarray(spec.bias, np.float32), "B")
    nodes = [helper.make_node("MatMul", [spec.input_name, "W"], ["xw"]),
             helper.make_node("Add", ["xw", "B"], ["linear" if spec.post else spec.output_name])]
    if spec.post:
        nodes.append(helper.make_node(spec.post, ["linear"], [spec.output_name]))
    graph = helper.make_graph(
        nodes,
        spec.name,
        [helper.make_tensor_value_info(spec.input_name, TensorProto.FLOAT, ["batch", spec.n_features])],
        [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, ["batch", spec.n_outputs])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_card(spec: Spec, sha256: str) -> ModelCard:
    """A valid card for the spec, golden outputs computed with numpy."""
    rng = np.random.default_rng(0)
    inputs = spec.golden_inputs or rng.uniform(-2, 2, (3, spec.n_features)).round(3).tolist()
    outputs = spec.logits(inputs).tolist()
    return ModelCard(
        name=spec.name, version=spec.version, task=spec.task,
        description=f"tiny {spec.task} test model",
        input={"name": spec.input_name, "shape": [-1, spec.n_features]},
        output={"name": spec.output_name, "shape": [-1, spec.n_outputs]},
        feature_names=spec.feature_names, labels=spec.labels, thresholds=spec.thresholds,
        training={"command": "tests", "dataset": "none", "seed": 0, "hidden": [], "l2": 0.0,
                  "epochs": 0, "epochs_run": 0, "learning_rate": 0.0, "batch_size": 1},
        library_versions={"onnx": onnx.__version__},
        splits={"train": 0, "validation": 0, "test": 0},
        metrics={}, baseline={"name": "none", "metrics": {}},
        parity={"rows": 0, "batch_sizes": [1], "max_abs_diff": 0.0, "tolerance": 1e-4, "passed": True},
        sha256=sha256,
        golden=[Golden(input=i, output=o) for i, o in zip(inputs, outputs)],
        created_at="2025-01-01T00:00:00Z",
        **spec.extra,
    )


def write_model(root: Path, spec: Spec) -> Path:
    """Write `<root>/<name>/<version>/{model.onnx,card.json}`; returns the version folder."""
    folder = Path(root) / spec.name / str(spec.version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(onnx_model(spec))
    write_card(make_card(spec, sha256_file(folder / MODEL_FILE)), folder / CARD_FILE)
    return folder


def edit_card(folder: Path, **changes) -> None:
    """Rewrite a written card with some fields changed (no re-validation: tests break cards on purpose)."""
    card = read_card(folder / CARD_FILE)
    write_card(card.model_copy(update=changes), folder / CARD_FILE)


def reseal(folder: Path) -> None:
    """Make the card's sha256 match whatever model.onnx now holds."""
    edit_card(folder, sha256=sha256_file(folder / MODEL_FILE))


BINARY = Spec("tiny-binary", "binary", [[1.0], [2.0], [-1.0]], [0.0], ["no", "yes"],
              feature_names=["a", "b", "c"], thresholds=[0.5])
MULTICLASS_V1 = Spec("tiny-multiclass", "multiclass",
                     [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], [0.0, 0.0, 0.0], ["cat", "dog", "emu"])
MULTICLASS_V2 = Spec("tiny-multiclass", "multiclass",
                     [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], [0.0, 0.0, 1.0], ["cat", "dog", "emu"],
                     version=2)
MULTILABEL = Spec("tiny-multilabel", "multilabel", [[1, 0, 1], [0, 1, -1]], [0.0, 0.0, 0.0],
                  ["even", "prime", "closed_loop"], thresholds=[0.5, 0.5, 0.9])
REGRESSION = Spec("tiny-regression", "regression", [[2.0], [3.0]], [1.0], ["y"], feature_names=["x1", "x2"])
REGRESSION2 = Spec("tiny-regression2", "regression", [[1, 0], [0, 1]], [0.0, 0.5], ["y1", "y2"])
# Non-finite outputs on demand, via sqrt(x0 + 3e38 * x1): [4, 0] -> 2, [-1, 0] -> NaN, [0, 2] -> inf.
_ODD = dict(bias=[0.0], post="Sqrt", golden_inputs=[[0, 0], [4, 0]])
NONFINITE_BINARY = Spec("nonfinite-binary", "binary", [[1.0], [3e38]], labels=["no", "yes"],
                        thresholds=[0.5], **_ODD)
NONFINITE_REGRESSION = Spec("nonfinite-regression", "regression", [[1.0], [3e38]], labels=["y"], **_ODD)
NONFINITE_MULTICLASS = Spec("nonfinite-multiclass", "multiclass", [[1.0, 0.0], [3e38, 0.0]],
                            labels=["a", "b"], **{**_ODD, "bias": [0.0, 0.0]})
NONFINITE_MULTILABEL = Spec("nonfinite-multilabel", "multilabel", [[1.0, 0.0], [3e38, 0.0]],
                            labels=["a", "b"], thresholds=[0.5, 0.5], **{**_ODD, "bias": [0.0, 0.0]})

# Named like the exported models (input "features", regression output "values"), for the protocol tests;
# HALF_PLUS_TWO is TF Serving's example model, y = 0.5 x + 2.
FEATURES = Spec("tiny-features", "multiclass", [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0.0, 0.0, 0.0],
                ["setosa", "versicolor", "virginica"], input_name="features")
HALF_PLUS_TWO = Spec("half-plus-two", "regression", [[0.5]], [2.0], ["y"], output_name="values")

STANDARD = [BINARY, MULTICLASS_V1, MULTICLASS_V2, MULTILABEL, REGRESSION, REGRESSION2,
            NONFINITE_BINARY, NONFINITE_REGRESSION, NONFINITE_MULTICLASS, NONFINITE_MULTILABEL,
            FEATURES, HALF_PLUS_TWO]


def as_columns(task: str, predictions: list[dict], labels: list[str]) -> dict:
    """The documented `"format": "columns"` form of rows' predictions: every object inside out,
    `warnings` (a list per row) when any row has some."""
    def column(key):
        return [p[key] for p in predictions]
    if task == "regression":
        out = {"value": column("value")}
    elif task == "binary":
        out = {"label": column("label"), "probability": column("probability")}
    elif task == "multilabel":
        out = {"labels": column("labels"), "probabilities": {a: [p["probabilities"][a] for p in predictions]
                                                             for a in labels}}
    else:
        out = {"label": column("label"), "probability": column("probability"),
               "top_k": {"label": [[e["label"] for e in p["top_k"]] for p in predictions],
                         "probability": [[e["probability"] for e in p["top_k"]] for p in predictions]}}
    if any("warnings" in p for p in predictions):
        out["warnings"] = [p.get("warnings", []) for p in predictions]
    return out


def standard_repository(root: Path) -> Path:
    """A model root holding every STANDARD model, all valid."""
    for spec in STANDARD:
        write_model(root, spec)
    return root


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client with the app's lifespan running (ASGITransport alone skips it)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tinyserve.test") as client:
            yield client


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(env: dict[str, str], log_path: Path, probe: str = "/health/ready",
                   timeout: float = 60.0, procs: list | None = None,
                   command: list[str] | None = None, cwd: Path = REPO_ROOT) -> Iterator[str]:
    """Run `python -m service` (or `command`) as users do, wait until `probe` answers 200, yield its
    URL, stop it by PID.

    `procs`, when given, receives the `subprocess.Popen` (for tests that signal or measure it)."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TINYSERVE_")}
    env = {**clean, **env, "TINYSERVE_HOST": "127.0.0.1", "TINYSERVE_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command or [sys.executable, "-m", "service"], cwd=cwd, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    if procs is not None:
        procs.append(proc)
    try:
        _wait_for(url + probe, proc, log_path, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no 200 from {url} after {timeout}s:\n{log_path.read_text()}")


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus exposition text, or None when it is absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


async def raw_request(app: FastAPI, method: str, raw_path: bytes, body: bytes = b"",
                      headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, dict, bytes]:
    """Call the ASGI app with a path exactly as given (clients normalise `..` and `%2f` away)."""
    from urllib.parse import unquote_to_bytes

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": unquote_to_bytes(raw_path).decode("latin-1"), "raw_path": raw_path,
             "query_string": b"", "root_path": "", "headers": [(b"host", b"t"), *headers],
             "client": ("127.0.0.1", 1), "server": ("t", 80), "state": {}}
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return chunks.pop() if chunks else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers_out = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], headers_out, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
