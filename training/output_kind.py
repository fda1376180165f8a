"""What a model's output holds (logits or probabilities) as the model says it, for the import command.

A Keras model says it with its last layer's activation, an ONNX graph with the node that makes the
output; --output-kind says it where they do not, and may correct a linear end found to hold
logits, never a softmax or sigmoid found at the end (its probabilities would get a second one). Outputs taken to hold probabilities are checked on the
sample rows, and a graph that would mix the rows of a batch is found. No TensorFlow at import: an
ONNX import never loads it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from service.card import OutputKind

# float32 probabilities may stray past 0 and 1, and their row sums past 1, by rounding only.
PROBABILITY_SLACK, ROW_SUM_SLACK = 1e-6, 1e-3


class Found(NamedTuple):
    """What the model says its output holds (None: it does not say), how it says it, and whether
    its rows sum to 1 by construction (a softmax: one class per row, never multilabel)."""

    kind: OutputKind | None
    how: str
    one_class: bool = False


# Keras layers that pass values through unchanged when serving (a dropout's work is in training).
KERAS_PASS_THROUGH = ("Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise", "ActivityRegularization",
                      "Identity", "Flatten", "Reshape")


def keras_kind(model) -> Found:
    """Probabilities when the output layer ends in softmax or sigmoid, logits when it is linear,
    looking past layers that pass values through (a Dropout after the softmax); unknown when no
    layer's one output is the model's (a keras.ops call or arithmetic makes it, or a layer called
    twice, whose `output` is its first call's)."""
    import keras

    layer = next((layer for layer in model.layers if layer.output is model.outputs[0]), None)
    passing = tuple(getattr(keras.layers, name) for name in KERAS_PASS_THROUGH if hasattr(keras.layers, name))
    inbound = _keras_inbound(model) if isinstance(layer, passing) else {}
    while isinstance(layer, passing) and layer.name in inbound:
        layer = model.get_layer(inbound[layer.name])
    if layer is None:
        return Found(None, "the model's output is not the output of one Keras layer")
    activation = getattr(layer, "activation", None)
    act = "softmax" if isinstance(layer, keras.layers.Softmax) else \
        keras.activations.serialize(activation) if activation is not None else None
    act = act if isinstance(act, str) else None
    found = {"softmax": OutputKind.probabilities, "sigmoid": OutputKind.probabilities,
             "linear": OutputKind.logits}.get(act)
    last = "last Keras layer" if layer.output is model.outputs[0] else "Keras layer (before layers that pass it through)"
    return Found(found, f"the {last} {layer.name!r} has activation {act!r}", act == "softmax")


def _keras_inbound(model) -> dict[str, str]:
    """Each layer called once on one tensor -> the layer making that tensor: in a Sequential model
    the layer before it, in a functional one as its config (its public description) says; none for
    a model without one."""
    import keras

    if isinstance(model, keras.Sequential):
        return {after.name: before.name for before, after in zip(model.layers, model.layers[1:])}
    try:
        layers = model.get_config()["layers"]
    except Exception:  # a subclassed model describes no graph
        return {}
    found = {}
    for layer in layers:
        nodes = layer.get("inbound_nodes") or []
        args = nodes[0].get("args", []) if len(nodes) == 1 and isinstance(nodes[0], dict) else []
        if len(args) == 1 and isinstance(args[0], dict):
            history = args[0].get("config", {}).get("keras_history")
            if history:
                found[layer["name"]] = history[0]
    return found


# Nodes that pass values through unchanged; elementwise ones that combine values with constants
# or with each other; and those whose output is a linear score (logits).
PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Clip", "Max", "Min"}
LINEAR = {"Gemm", "MatMul", "Einsum", "Conv"}
ML_CLASSIFIERS = {"LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier"}


def onnx_kind(graph, output: str) -> Found:
    """What the node making `output` says it holds: Softmax or Sigmoid (or an ONNX-ML classifier's
    scores after its softmax or logistic, or rows scaled to sum to 1) are probabilities; MatMul or
    Gemm, with elementwise arithmetic after them (a bias Add), logits. Arithmetic after a softmax
    or sigmoid (an epsilon added, a temperature) may or may not leave probabilities: unknown."""
    producers = {out: node for node in graph.node for out in node.output}
    name, node = _past(output, producers, PASS_THROUGH)
    if node is None:
        return Found(None, f"output {output!r} is not made by a node")
    attrs = _strings(node)
    detail = f" (post_transform {attrs['post_transform']})" if "post_transform" in attrs else ""
    how = f"output {output!r} comes from {_a(node.op_type)} node{detail}"
    if _probabilities(node, name):
        one_class = node.op_type in ("Softmax", "Normalizer") or attrs.get("post_transform", "").startswith("SOFTMAX")
        return Found(OutputKind.probabilities, how, one_class)
    if node.op_type in LINEAR:
        return Found(OutputKind.logits, how)
    if node.op_type not in ELEMENTWISE:
        return Found(None, how)
    sources = _sources(node, producers)
    after = next((n for n, out in sources if _probabilities(n, out)), None)
    if after is not None:
        return Found(None, f"{how} applied to {_a(after.op_type)} node's output, which may no longer hold "
                           "probabilities")
    if sources and all(n.op_type in LINEAR for n, _ in sources):
        return Found(OutputKind.logits, f"{how} applied to {_a(sources[0][0].op_type)} node's output")
    return Found(None, how)


def _past(name: str, producers: dict, ops: set[str]) -> tuple[str, object]:
    """The value `name` is made from once nodes of `ops` are walked back through, and its node."""
    node = producers.get(name)
    while node is not None and node.op_type in ops:
        name, node = node.input[0], producers.get(node.input[0])
    return name, node


def _sources(node, producers: dict) -> list[tuple[object, str]]:
    """The nodes (with the value each makes) that an elementwise node's inputs come from, past
    pass-through and other elementwise nodes; constants and initializers are not sources."""
    found, todo, seen = [], list(node.input), set()
    while todo:
        name, source = _past(todo.pop(), producers, PASS_THROUGH)
        if source is None or name in seen or source.op_type == "Constant":
            continue
        seen.add(name)
        if source.op_type in ELEMENTWISE:
            todo.extend(source.input)
        else:
            found.append((source, name))
    return found


def _probabilities(node, name: str) -> bool:
    attrs = _strings(node)
    return node.op_type in ("Softmax", "Sigmoid") or (
        node.op_type == "Normalizer" and attrs.get("norm") == "L1") or (
        node.op_type in ML_CLASSIFIERS and name == node.output[-1]
        and attrs.get("post_transform") in ("SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"))


def _a(op_type: str) -> str:
    return f"an {op_type}" if op_type[:1] in "AEIOU" else f"a {op_type}"


def _strings(node) -> dict[str, str]:
    return {a.name: a.s.decode() for a in node.attribute if a.s}


def probabilities_already(out: np.ndarray, rows: str) -> str | None:
    """Why a multiclass output said or found to hold logits holds probabilities instead (every
    row `rows` names in [0, 1] and summing to 1), or None."""
    out = out.astype(np.float64)
    if len(out) and not_probabilities(out, True, rows) is None and np.isfinite(out).all():
        return (f"every row {rows} lies in [0, 1] and sums to 1: those are probabilities already, and "
                "served as logits they would get a second softmax (every answer flattened); say "
                "--output-kind probabilities")
    return None


def not_probabilities(out: np.ndarray, multiclass: bool, rows: str) -> str | None:
    """How the first of the output's rows (`rows` names them) that cannot be probabilities fails,
    or None; rows that are not finite are another check's."""
    out = out.astype(np.float64)
    finite = np.isfinite(out).all(axis=1)
    outside = finite & ((out < -PROBABILITY_SLACK) | (out > 1 + PROBABILITY_SLACK)).any(axis=1)
    if outside.any():
        i = int(np.argmax(outside))
        value = next(v for v in out[i] if not -PROBABILITY_SLACK <= v <= 1 + PROBABILITY_SLACK)
        return (f"row {i} {rows} holds {value:.3g} (probabilities lie in [0, 1]); if they are logits say "
                "--output-kind logits")
    sums = out.sum(axis=1)
    off = finite & (np.abs(sums - 1) > ROW_SUM_SLACK)
    if multiclass and off.any():
        i = int(np.argmax(off))
        return (f"rows do not sum to 1 (row {i} {rows} sums to {sums[i]:.4g}): a multiclass model's "
                "probabilities come from a softmax; per-label sigmoids are --task multilabel")
    return None
