"""The one inference path every protocol shares, after its own decoding.

    route -> Repository.get (404/503) -> protocol codec: wire format -> float32 matrix (400)
      -> service.api.deps.run: the model, through its `batcher` when batching is on, then the
         answer made of its output rows: tasks.postprocess (native rows of dicts) or
         inference.outputs (named tensors), once per batch -> protocol codec: encode

`LoadedModel.run` is the one call into a model: for requests `deps.run` makes it, or the
batcher for many requests at once (and the repository, replaying golden examples at load).

The named outputs are what the Open Inference (V2) and TF Serving protocols offer: the raw
network output under the card's name (e.g. "logits" or "values"), and for classifiers
"probabilities" (FP32, softmax for multiclass, sigmoid for binary and multilabel) and "labels"
(one string per row: the predicted label for binary and multiclass, the labels at or over their
thresholds joined by "," for multilabel, "" where the outputs are not finite). Regression
models offer only the raw output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service import tasks
from service.batching import Batcher
from service.card import ModelCard, Task
from service.errors import BadRequest
from service.runtime import LoadedModel

PROBABILITIES = "probabilities"
LABELS = "labels"
LABEL_SEPARATOR = ","


@dataclass(frozen=True)
class OutputInfo:
    """One output a model offers: name, element type ("float32" or "string") and row width."""

    name: str
    dtype: str
    width: int


def batcher(model: LoadedModel, max_size: int = 0, max_delay_ms: float = 0.0) -> Batcher | None:
    """The model's adaptive batcher (made on first use), or None when batching is off for it.

    `max_size` and `max_delay_ms` are the settings' defaults; the model's serving.json overrides
    them. Off (the caller runs the model directly, on the event loop: it takes microseconds) when
    the size is 0 or 1.
    """
    found = model.state.get("batcher")
    if found is not None:
        return found
    max_size = model.serving.get("batch_max_size", max_size)
    if max_size <= 1:
        return None
    delay = model.serving.get("batch_max_delay_ms", max_delay_ms) / 1000
    found = model.state["batcher"] = Batcher(model.run, max_size, delay)
    return found


def offered(card: ModelCard) -> list[OutputInfo]:
    """Every output a model offers, raw first; a derived name never shadows the raw output."""
    raw = OutputInfo(card.output.name, "float32", card.n_outputs)
    if card.task is Task.regression:
        return [raw]
    derived = [OutputInfo(PROBABILITIES, "float32", card.n_outputs), OutputInfo(LABELS, "string", 1)]
    return [raw, *(o for o in derived if o.name != raw.name)]


# Per card (by identity): the names `offered` gives, made once rather than on every request.
_KNOWN: dict[int, tuple[ModelCard, list[str]]] = {}


def _known(card: ModelCard) -> list[str]:
    entry = _KNOWN.get(id(card))
    if entry is None or entry[0] is not card:
        if len(_KNOWN) > 256:  # cards of unloaded versions
            _KNOWN.clear()
        entry = _KNOWN[id(card)] = (card, [o.name for o in offered(card)])
    return entry[1]


def outputs(card: ModelCard, raw: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The named outputs asked for (all when `names` is None), in that order; unknown names are 400."""
    known = _known(card)
    if names is None:
        names = known
    else:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise BadRequest(f"unknown output(s) {unknown}; model {card.name!r} offers {known}")
    out, derived, raw_name = {}, None, card.output.name
    for name in names:
        if name == raw_name:
            out[name] = raw
            continue
        if derived is None:
            derived = _derived(card, raw)
        out[name] = derived[0] if name == PROBABILITIES else derived[1]
    return out


def _derived(card: ModelCard, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FP32 probabilities [rows, n_outputs] and the label column [rows, 1] of a classifier's output."""
    if raw.size <= tasks.FEW_VALUES:  # plain Python for a few rows: the same values, fewer numpy calls
        probs, found = tasks.few_outputs(card, raw.astype(np.float64, copy=False).tolist())
        return np.array(probs, dtype=np.float32).reshape(raw.shape), label_column(found)
    x, finite = raw.astype(np.float64), None
    if card.task is Task.multiclass:  # one finiteness check for the softmax and the labels
        finite = np.isfinite(x).all(axis=1)
        probs = tasks.softmax(x, bool(finite.all()))
    else:
        probs = tasks.probabilities(card, x)
    return probs.astype(np.float32), label_column(tasks.predicted(card, raw, probs, finite))


def label_column(found: list) -> np.ndarray:
    """[rows, 1] strings from `tasks.predicted`: lists are joined by ",", None becomes ""."""
    texts = ["" if f is None else LABEL_SEPARATOR.join(f) if type(f) is list else f for f in found]
    return np.array(texts, dtype=object).reshape(-1, 1)
