"""onnxruntime session wrapper: load once, read the signature once, run a float32 batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.card import ModelCard, TensorSpec

_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}


def session_options(threads: int) -> ort.SessionOptions:
    """One request at a time per session is the norm for these small networks: no thread pools."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return options


def _spec(arg: ort.NodeArg) -> TensorSpec:
    # Symbolic or unknown dimensions (the free batch axis) are -1, as on the card.
    shape = [d if isinstance(d, int) else -1 for d in (arg.shape or [])]
    return TensorSpec(name=arg.name, shape=shape, dtype=_DTYPES.get(arg.type, arg.type))


@dataclass(frozen=True)
class LoadedModel:
    """A validated model version ready to serve: its card, session and signature."""

    card: ModelCard
    session: ort.InferenceSession
    input: TensorSpec
    output: TensorSpec

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return self.card.version

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run a [rows, n_features] float32 batch; returns the card's output, [rows, n_outputs]."""
        return self.session.run([self.output.name], {self.input.name: batch})[0]

    def signature(self) -> dict:
        """Input and output as the session reports them."""
        return {"inputs": [self.input.model_dump()], "outputs": [self.output.model_dump()]}


def load(path: Path, card: ModelCard, threads: int) -> LoadedModel:
    """Open `path` and check its graph against the card; raises ValueError on any mismatch."""
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ValueError(f"expected exactly one graph input, found {len(inputs)}")
    by_name = {o.name: o for o in outputs}
    if card.output.name not in by_name:
        raise ValueError(f"card output {card.output.name!r} not among graph outputs {sorted(by_name)}")
    model = LoadedModel(card, session, _spec(inputs[0]), _spec(by_name[card.output.name]))
    _check_spec("input", model.input, card.input)
    _check_spec("output", model.output, card.output)
    if model.input.dtype != "float32":
        raise ValueError(f"graph input must be float32, it is {model.input.dtype}")
    return model


def _check_spec(role: str, graph: TensorSpec, card: TensorSpec) -> None:
    # A free graph dimension accepts the card's size; an unknown rank is left to the golden replay.
    same_shape = not graph.shape or (
        len(graph.shape) == len(card.shape) and all(g in (-1, c) for g, c in zip(graph.shape, card.shape))
    )
    if graph.name != card.name or graph.dtype != card.dtype or not same_shape:
        raise ValueError(f"graph {role} {graph.model_dump()} does not match card {role} {card.model_dump()}")
