"""ONNX export with a fixed signature, the parity proof against Keras, and the model card."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf

from service.card import MODEL_FILE, Column, Golden, Parity, Task, TensorSpec
from training.columns import encode, n_probes, raw_rows, take, with_probes

INPUT_NAME = "features"
OUTPUT_NAMES = {Task.regression: "values"}  # classifiers: "logits"
OPSET = 18  # 17 and 18 convert; 19-21 fail with tf2onnx 1.17
PARITY_TARGET = 1e-5  # the aim, on raw outputs
PARITY_LIMIT = 1e-4  # beyond this the export fails
PARITY_BATCHES = (1, 64)


class ExportError(RuntimeError):
    """The exported graph is unusable or disagrees with Keras."""


def output_name(task: Task) -> str:
    return OUTPUT_NAMES.get(task, "logits")


def export_onnx(model: keras.Model, task: Task, path: Path,
                output: str | None = None) -> tuple[TensorSpec, TensorSpec]:
    """Write model.onnx with one float32 input [-1, n] named `features` and a stable output name
    (`output`, else the task's: "logits" or "values")."""
    output = output or output_name(task)
    n_features = model.input_shape[-1]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / MODEL_FILE
        signature = [tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME)]
        model.export(str(raw), format="onnx", opset_version=OPSET, input_signature=signature,
                     verbose=False)
        graph = onnx.load(str(raw))
    if len(graph.graph.input) != 1:
        names = [i.name for i in graph.graph.input]
        raise ExportError(f"exported graph must have exactly one input, it has {names}: an adapted "
                          "keras.layers.Normalization exports its statistics as extra graph inputs; bake them "
                          "into the model (e.g. a Rescaling layer) or normalise outside it")
    if len(graph.graph.output) != 1:
        raise ExportError(f"expected one graph output, got {len(graph.graph.output)}")
    _rename(graph.graph.node, graph.graph.input[0], INPUT_NAME)
    _rename(graph.graph.node, graph.graph.output[0], output)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    n_out = model.output_shape[-1]
    return (TensorSpec(name=INPUT_NAME, shape=[-1, n_features]),
            TensorSpec(name=output, shape=[-1, n_out]))


def _rename(nodes, value: onnx.ValueInfoProto, new: str) -> None:
    """Give a graph input or output a stable name, rewiring the nodes that use it."""
    old, value.name = value.name, new
    for node in nodes:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def check_parity(model: keras.Model, path: Path, x: np.ndarray,
                 columns: list[Column] | None = None, raw: dict[str, np.ndarray] | None = None) -> Parity:
    """Compare onnxruntime with Keras on x at two batch sizes; fail loudly past the limit.

    With `columns`, onnxruntime gets the `raw` rows (text, NaN, "") and Keras the same rows
    encoded as in training (x, already encoded, is not needed), plus the probe rows (every value missing, every category unseen): so
    the graph's own fill and encoding are part of what is proven."""
    if columns:
        raw = with_probes(columns, raw)
        x = encode(columns, raw)
    else:
        raw = {INPUT_NAME: x}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, largest = 0.0, 1.0
    for batch in PARITY_BATCHES:
        expected = model.predict(x, batch_size=batch, verbose=0)
        got = np.concatenate([session.run(None, take(raw, slice(i, i + batch)))[0]
                              for i in range(0, len(x), batch)])
        if got.shape != expected.shape:
            raise ExportError(f"onnxruntime output shape {got.shape} != Keras {expected.shape}")
        # NaN or inf proves nothing (and max() would drop a NaN): any such output fails parity.
        bad = ~(np.isfinite(got) & np.isfinite(expected)).all(axis=-1)
        if bad.any():
            raise ExportError(f"ONNX parity failed: the outputs are not finite (NaN or inf) on {int(bad.sum())} "
                              f"of {len(x)} rows")
        worst = max(worst, float(np.max(np.abs(got - expected))))
        largest = max(largest, float(np.max(np.abs(expected))))
    # float32 carries about 7 digits: an output near 150 (regression in target units) cannot
    # agree closer than ~1e-5, so both bounds scale with the outputs' magnitude past 1.
    target, limit = PARITY_TARGET * largest, PARITY_LIMIT * largest
    if not worst <= limit:
        raise ExportError(f"ONNX parity failed: max |onnxruntime - keras| = {worst:.3g} "
                          f"> {limit:.3g} on {len(x)} rows")
    return Parity(rows=len(x), batch_sizes=list(PARITY_BATCHES), max_abs_diff=worst,
                  tolerance=target, passed=worst <= target)


def golden_examples(model: keras.Model, x: np.ndarray, n: int = 5, columns: list[Column] | None = None,
                    raw: dict[str, np.ndarray] | None = None) -> list[Golden]:
    """A few test rows with the Keras outputs, for the service to replay at load time.

    With `columns`, the rows are raw (null for missing) and the last of the n are the probe rows
    (every value missing; every category unseen), so the replay proves the fill and encoding."""
    if not columns:
        rows = x[:n]
        return [Golden(input=r.tolist(), output=o.tolist())
                for r, o in zip(rows, model.predict(rows, verbose=0))]
    raw = with_probes(columns, take(raw, slice(0, max(n - n_probes(columns), 1))))
    out = model.predict(encode(columns, raw), verbose=0)
    return [Golden(input=r, output=o.tolist()) for r, o in zip(raw_rows(columns, raw), out)]
