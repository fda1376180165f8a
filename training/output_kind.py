"""What a model's output holds (logits or probabilities) as the model says it, for the import command.

A Keras model says it with its last layer's activation, an ONNX graph with the node that makes the
output; --output-kind overrides either. No TensorFlow at import: an ONNX import never loads it.
"""

from __future__ import annotations

from service.card import OutputKind


def keras_kind(model) -> tuple[OutputKind | None, str]:
    """Probabilities when the output layer ends in softmax or sigmoid, logits when it is linear."""
    import keras

    layer = next(layer for layer in model.layers if layer.output is model.outputs[0])
    activation = getattr(layer, "activation", None)
    act = "softmax" if isinstance(layer, keras.layers.Softmax) else \
        keras.activations.serialize(activation) if activation is not None else None
    act = act if isinstance(act, str) else None
    found = {"softmax": OutputKind.probabilities, "sigmoid": OutputKind.probabilities,
             "linear": OutputKind.logits}.get(act)
    return found, f"the last Keras layer {layer.name!r} has activation {act!r}"


# Nodes that pass values through unchanged, and those whose output is a linear score (logits).
PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}
LINEAR = {"Gemm", "MatMul", "Add"}
ML_CLASSIFIERS = {"LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier"}


def onnx_kind(graph, output: str) -> tuple[OutputKind | None, str]:
    """What the node making `output` says it holds: Softmax or Sigmoid (or an ONNX-ML classifier's
    scores after its softmax or logistic, or rows scaled to sum to 1) are probabilities."""
    producers = {out: node for node in graph.node for out in node.output}
    name, node = output, producers.get(output)
    while node is not None and node.op_type in PASS_THROUGH:
        name, node = node.input[0], producers.get(node.input[0])
    if node is None:
        return None, f"output {output!r} is not made by a node"
    attrs = {a.name: a.s.decode() for a in node.attribute if a.s}
    probabilities = node.op_type in ("Softmax", "Sigmoid") or (
        node.op_type == "Normalizer" and attrs.get("norm") == "L1") or (
        node.op_type in ML_CLASSIFIERS and name == node.output[-1]
        and attrs.get("post_transform") in ("SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"))
    found = OutputKind.probabilities if probabilities else OutputKind.logits if node.op_type in LINEAR else None
    detail = f" (post_transform {attrs['post_transform']})" if "post_transform" in attrs else ""
    return found, f"output {output!r} comes from a {node.op_type} node{detail}"
