"""Converting a model made elsewhere into the ONNX file a version serves, and saying what its
output holds: a Keras file is exported (TensorFlow, loaded only here), an ONNX graph copied as it is.

What the output holds is found from the model (`training.output_kind`), said with `--output-kind`,
or, when neither tells, asked for. A Keras model's export names its output by it, so it is decided
there; an ONNX graph's is decided after the graph's signature is checked (one input, one float
output [batch, n]), so that a graph that cannot serve is told so rather than asked a question.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import NamedTuple

from service.card import OutputKind, Task
from training.output_kind import keras_kind, onnx_kind
from training.quiet import quiet_stderr


class ImportFailed(Exception):
    """A problem the user can fix; printed as one line."""


class Converted(NamedTuple):
    """A model as an ONNX file, with what the import learnt about its output."""

    output: str  # the graph output that serves
    chosen: str  # the model's own name for it (the Keras output's, or the same)
    kind: OutputKind | None  # what that output holds, when the model says
    kind_from: str  # how `kind` was found
    one_class: bool  # the output sums to 1 on every row (a softmax)
    keras: object | None  # the Keras model, for the parity proof


def from_keras(path: Path, output: str | None, task: Task, kind: str | None, target: Path) -> Converted:
    with quiet_stderr():
        return _convert_keras(path, output, task, kind, target)


def _convert_keras(path: Path, output: str | None, task: Task, kind: str | None, target: Path) -> Converted:
    import keras

    from training.export import export_onnx

    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ImportFailed(f"{path.name} is not a Keras file: a .keras file is a zip archive")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a file it cannot read
        raise ImportFailed(f"cannot load {path.name} as a Keras model: {line(e)}")
    outputs = list(getattr(model, "output_names", None) or [t.name for t in model.outputs])
    chosen = _choose(output, outputs, "the Keras model")
    model = keras.Model(model.inputs, model.outputs[outputs.index(chosen)])
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 2 or model.inputs[0].shape[1] is None:
        shapes = [tuple(i.shape) for i in model.inputs]
        raise ImportFailed(f"the Keras model takes inputs of shapes {shapes}; a served model has one "
                           "input [batch, n_features]")
    found, how, one_class = keras_kind(model)
    name = decide_kind(task, kind, found, how, one_class).value
    try:
        export_onnx(model, task, target, name)
    except Exception as e:  # the converter's errors are its own types
        raise ImportFailed(f"cannot export {path.name} to ONNX: {line(e)}")
    return Converted(name, chosen, found, how, one_class, model)


def from_onnx(path: Path, output: str | None, task: Task, kind: str | None, target: Path) -> Converted:
    import onnx

    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:  # protobuf's DecodeError and friends
        raise ImportFailed(f"{path.name} is not an ONNX model: {line(e)}")
    chosen = _choose(output, [o.name for o in graph.output], "the graph")
    found, how, one_class = onnx_kind(graph, chosen)
    shutil.copyfile(path, target)  # what it holds is decided once its signature is known to serve
    return Converted(chosen, chosen, found, how, one_class, None)


def _choose(output: str | None, names: list[str], what: str) -> str:
    if output is None and len(names) == 1:
        return names[0]
    if output is None:
        raise ImportFailed(f"{what} has outputs {names}; choose the one to serve with --output")
    if output not in names:
        raise ImportFailed(f"{what} has no output {output!r}; its outputs are {names}")
    return output


def decide_kind(task: Task, option: str | None, found: OutputKind | None, how: str, one_class: bool) -> OutputKind:
    """What the served output holds: values for regression, else the option, else what was found."""
    if one_class and task is Task.multilabel:  # a softmax: most rows would reach no label's threshold
        raise ImportFailed(f"{how}, whose outputs sum to 1 on every row (one class per row): import it with "
                           "--task multiclass; a multilabel model ends in a sigmoid per label")
    if task is Task.regression:
        if option is not None:
            raise ImportFailed("--output-kind is for classifiers; a regression output holds values")
        return OutputKind.values
    if option is not None:
        # A softmax or sigmoid found at the end is certain, and its probabilities taken as logits
        # would get a second one: every answer wrong. A linear end is a guess the option may correct
        # (the probabilities it then says are checked on the sample rows).
        if found is OutputKind.probabilities and option == OutputKind.logits.value:
            raise ImportFailed(f"--output-kind logits contradicts the model: {how}, so it outputs probabilities; "
                               "leave --output-kind out")
        return OutputKind(option)
    if found is None:
        raise ImportFailed(f"cannot tell whether the output holds logits or probabilities ({how}); "
                           "say which with --output-kind")
    return found


def line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
