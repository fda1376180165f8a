"""onnxruntime session wrapper: load once, read the signature once, run a batch.

What graphs serve (`signature`, used by the service at load time and by the import command):
one numeric input of shape [batch, n_features] with a free batch dimension and a fixed feature
count, and one chosen float output [batch, n_outputs]. Every protocol decodes features to
float32; a float64 input takes them as they are (float32 -> float64 is exact), an int32 or int64
input only whole numbers within +-2^24 (`LoadedModel.feed`), the integers float32 holds exactly.

A table model (a card with `columns`) may have two inputs, float32 `features` and string
`categories`, as its card declares them (`card.ModelCard`). Its decoded batch is still one
array with a row per request row: a numpy structured array with one field per graph input
(`service.codecs.columns`), so batching, slicing and counting rows work on it as on a matrix,
and `LoadedModel.run` hands each field to its graph input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.batching import Batcher
from service.card import ModelCard, TensorSpec
from service.errors import BadRequest

SERVING_FILE = "serving.json"  # per-model serving options, next to the version folders
SERVING_KEYS = frozenset({"batch_max_size", "batch_max_delay_ms"})
_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
           "tensor(int32)": "int32", "tensor(string)": "string"}
INPUT_DTYPES = ("float32", "float64", "int32", "int64")
OUTPUT_DTYPES = ("float32", "float64")
EXACT = 2**24  # every integer up to this magnitude is exact in float32


def session_options(threads: int) -> ort.SessionOptions:
    """One request at a time per session is the norm for these small networks: no thread pools."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    # Spinning threads burn a core waiting for the next run; on shared cores that core is the
    # event loop's. With one thread there is no pool to spin; with more, this keeps them asleep.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _spec(arg: ort.NodeArg) -> TensorSpec:
    # Symbolic or unknown dimensions (the free batch axis) are -1, as on the card.
    shape = [d if isinstance(d, int) else -1 for d in (arg.shape or [])]
    return TensorSpec(name=arg.name, shape=shape, dtype=_DTYPES.get(arg.type, arg.type))


def signature(session: ort.InferenceSession, output: str,
              declared: list[TensorSpec] | None = None) -> tuple[TensorSpec, TensorSpec]:
    """The (first) input and the chosen output of a graph that serves; ValueError saying why one
    does not. `declared`: the inputs a table model's card declares, when it has `columns`."""
    return graph_inputs(session, declared)[0], _output(session, output)


def graph_inputs(session: ort.InferenceSession, declared: list[TensorSpec] | None = None) -> tuple[TensorSpec, ...]:
    """The graph's inputs: exactly one numeric [batch, n_features], or as many as `declared`
    ([batch, width] each; their names and types are checked against the card by `load`)."""
    inputs = session.get_inputs()
    if len(inputs) != (1 if declared is None else len(declared)):
        want = ("a served graph has exactly one, [batch, n_features]" if declared is None
                else f"the card's columns need {[d.name for d in declared]}")
        raise ValueError(f"the graph has {len(inputs)} inputs {[i.name for i in inputs]}; {want}")
    specs = tuple(_input(arg) for arg in inputs)
    spec, arg = specs[0], inputs[0]
    if declared is None and spec.dtype not in INPUT_DTYPES:
        kind = "strings" if "string" in arg.type else f"{arg.type} values"
        raise ValueError(f"graph input {arg.name!r} takes {kind}; features are served as float32, "
                         f"cast exactly to an input of {', '.join(INPUT_DTYPES)} only")
    return specs


def _input(arg: ort.NodeArg) -> TensorSpec:
    if not arg.shape or len(arg.shape) != 2:  # onnxruntime reports an unknown rank as []
        rank = "no fixed rank" if not arg.shape else f"shape {arg.shape}"
        raise ValueError(f"graph input {arg.name!r} has {rank}; a served input is [batch, n_features]")
    if isinstance(arg.shape[0], int) or not isinstance(arg.shape[1], int):
        raise ValueError(f"graph input {arg.name!r} has shape {arg.shape}; a served input is "
                         "[batch, n_features] with a free batch dimension and a fixed feature count")
    return _spec(arg)


def _output(session: ort.InferenceSession, output: str) -> TensorSpec:
    outputs = {o.name: o for o in session.get_outputs()}
    if output not in outputs:
        raise ValueError(f"no graph output {output!r}; the graph's outputs are {sorted(outputs)}")
    out = _spec(outputs[output])
    if out.dtype not in OUTPUT_DTYPES or (out.shape and len(out.shape) != 2):
        raise ValueError(f"graph output {output!r} is {outputs[output].type} of shape {outputs[output].shape}; "
                         "a served output is float32 or float64 [batch, n_outputs]")
    return out


@dataclass(frozen=True)
class LoadedModel:
    """A validated model version ready to serve: its card, session, signature and batcher.

    `name` and `version` are the folders it was loaded from, whatever its card says."""

    card: ModelCard
    session: ort.InferenceSession
    input: TensorSpec
    output: TensorSpec
    serving: dict = field(default_factory=dict)  # the model's serving.json, checked
    batching: tuple[int, float] = (0, 0.0)  # the settings' batch_max_size and delay (ms), before serving.json
    name: str = ""
    version: int = 0
    inputs: tuple[TensorSpec, ...] = ()  # every graph input; () stands for (input,)
    batcher: Batcher | None = field(init=False, default=None, compare=False, repr=False)
    # A table model's graph input names, the fields of its decoded batches; None: one input, a matrix.
    fields: tuple[str, ...] | None = field(init=False, default=None, compare=False, repr=False)
    # Run a [rows, n_features] batch, or a table model's batch of fields (from `feed`); returns the
    # card's output, [rows, n_outputs]. A function of the session alone: the batcher holds it, and a
    # batcher holding the model would make a cycle that only the collector frees (and the collector
    # never sees what was loaded before `gc.freeze`, see service.main).
    run: Callable[[np.ndarray], np.ndarray] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.inputs:
            object.__setattr__(self, "inputs", (self.input,))
        if getattr(self.card, "columns", None) is not None:  # tests build models without a card
            object.__setattr__(self, "fields", tuple(i.name for i in self.inputs))
        object.__setattr__(self, "run", _runner(self.session, self.input.name, self.output.name, self.fields))
        size = self.serving.get("batch_max_size", self.batching[0])
        if size > 1:  # 0 or 1: requests run one by one, straight away
            delay = self.serving.get("batch_max_delay_ms", self.batching[1]) / 1000
            object.__setattr__(self, "batcher", Batcher(self.run, size, delay))

    def feed(self, x: np.ndarray) -> np.ndarray:
        """Decoded features (float32; float64 as sent for an integer input) as the graph's input
        type, exactly; 400 when they cannot be. A table model's batch already holds its inputs' own types."""
        dtype = self.input.dtype
        if dtype == "float32" or self.fields is not None:
            return x
        if self.input.integer:
            bad = np.argwhere((x != np.round(x)) | (np.abs(x) > EXACT))
            if bad.size:
                i, j = bad[0].tolist()
                raise BadRequest(f"row {i}, feature {j} is {float(x[i, j])!r}; model input {self.input.name!r} is "
                                 f"{dtype}: send whole numbers within +-2^24")
        return x.astype(dtype)

    def signature(self) -> dict:
        """Inputs and output as the session reports them."""
        return {"inputs": [i.model_dump() for i in self.inputs], "outputs": [self.output.model_dump()]}


def _runner(session: ort.InferenceSession, input_name: str, output_name: str,
            fields: tuple[str, ...] | None) -> Callable[[np.ndarray], np.ndarray]:
    """`LoadedModel.run` for this session and signature."""
    names = [output_name]
    options = ort.RunOptions()  # given to every run: without options, onnxruntime makes default ones per call

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(names, {input_name: batch}, options)[0]

    def run_fields(batch: np.ndarray) -> np.ndarray:
        # A field of a structured array is a strided view; onnxruntime takes contiguous arrays.
        return session.run(names, {n: np.ascontiguousarray(batch[n]) for n in fields}, options)[0]
    return run if fields is None else run_fields


def load(path: Path, card: ModelCard, threads: int, batching: tuple[int, float] = (0, 0.0),
         name: str = "", version: int = 0) -> LoadedModel:
    """Open `path` as `name`/`version` and check its graph against the card; ValueError on any mismatch."""
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    declared = card.graph_inputs if card.columns is not None else None
    inputs, graph_output = graph_inputs(session, declared), _output(session, card.output.name)
    for graph_input, card_input in zip(inputs, card.graph_inputs):
        _check_spec("input", graph_input, card_input)
    _check_spec("output", graph_output, card.output)
    return LoadedModel(card, session, inputs[0], graph_output,
                       serving_options(path.parent.parent / SERVING_FILE), batching, name, version, inputs)


def _check_spec(role: str, graph: TensorSpec, card: TensorSpec) -> None:
    # A free graph dimension accepts the card's size; an unknown rank is left to the golden replay.
    same_shape = not graph.shape or (
        len(graph.shape) == len(card.shape) and all(g in (-1, c) for g, c in zip(graph.shape, card.shape))
    )
    if graph.name != card.name or graph.dtype != card.dtype or not same_shape:
        raise ValueError(f"graph {role} {graph.model_dump()} does not match card {role} {card.model_dump()}")


def serving_options(path: Path) -> dict:
    """A model's `serving.json` ({} when absent): batch_max_size (int >= 0), batch_max_delay_ms (finite, >= 0)."""
    if not path.is_file():
        return {}
    try:
        options = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{SERVING_FILE} is not valid JSON: {exc}") from None
    if type(options) is not dict or options.keys() - SERVING_KEYS:
        raise ValueError(f"{SERVING_FILE} must be an object with only {sorted(SERVING_KEYS)}, got {options!r}")
    size, delay = options.get("batch_max_size", 0), options.get("batch_max_delay_ms", 0)
    if type(size) is not int or size < 0 or type(delay) not in (int, float) or not 0 <= delay < math.inf:
        raise ValueError(f"{SERVING_FILE}: batch_max_size must be an integer >= 0 and batch_max_delay_ms "
                         f"a finite number >= 0, got {options!r}")
    return options
