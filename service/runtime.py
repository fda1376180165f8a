"""onnxruntime session wrapper: load once, read the signature once, run a float32 batch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.batching import Batcher
from service.card import ModelCard, TensorSpec

SERVING_FILE = "serving.json"  # per-model serving options, next to the version folders
SERVING_KEYS = frozenset({"batch_max_size", "batch_max_delay_ms"})
_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}


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


@dataclass(frozen=True)
class LoadedModel:
    """A validated model version ready to serve: its card, session, signature and batcher."""

    card: ModelCard
    session: ort.InferenceSession
    input: TensorSpec
    output: TensorSpec
    serving: dict = field(default_factory=dict)  # the model's serving.json, checked
    batching: tuple[int, float] = (0, 0.0)  # the settings' batch_max_size and delay (ms), before serving.json
    batcher: Batcher | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        size = self.serving.get("batch_max_size", self.batching[0])
        if size > 1:  # 0 or 1: requests run one by one, straight away
            delay = self.serving.get("batch_max_delay_ms", self.batching[1]) / 1000
            object.__setattr__(self, "batcher", Batcher(self.run, size, delay))

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


def load(path: Path, card: ModelCard, threads: int, batching: tuple[int, float] = (0, 0.0)) -> LoadedModel:
    """Open `path` and check its graph against the card; raises ValueError on any mismatch."""
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ValueError(f"expected exactly one graph input, found {len(inputs)}")
    by_name = {o.name: o for o in outputs}
    if card.output.name not in by_name:
        raise ValueError(f"card output {card.output.name!r} not among graph outputs {sorted(by_name)}")
    model = LoadedModel(card, session, _spec(inputs[0]), _spec(by_name[card.output.name]),
                        serving_options(path.parent.parent / SERVING_FILE), batching)
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


def serving_options(path: Path) -> dict:
    """A model's `serving.json` ({} when absent): batch_max_size (int >= 0), batch_max_delay_ms (>= 0)."""
    if not path.is_file():
        return {}
    try:
        options = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{SERVING_FILE} is not valid JSON: {exc}") from None
    if type(options) is not dict or options.keys() - SERVING_KEYS:
        raise ValueError(f"{SERVING_FILE} must be an object with only {sorted(SERVING_KEYS)}, got {options!r}")
    size, delay = options.get("batch_max_size", 0), options.get("batch_max_delay_ms", 0)
    if type(size) is not int or size < 0 or type(delay) not in (int, float) or delay < 0:
        raise ValueError(f"{SERVING_FILE}: batch_max_size must be an integer >= 0 and batch_max_delay_ms "
                         f"a number >= 0, got {options!r}")
    return options
