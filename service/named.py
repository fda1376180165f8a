"""The named outputs: what the Open Inference (V2) and TF Serving protocols offer of a model.

The raw network output under the card's name (e.g. "logits" or "values"), and for classifiers
"probabilities" (FP32, the probabilities the /predict answers use) and "labels" (one string per
row: the predicted label for binary and multiclass, the labels at or over their thresholds joined
by "," for multilabel, "" where that decision is null: see `service.tasks`). Regression models
offer only the raw output. The probabilities and decisions are `service.tasks`' own (`tasks.decided`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from service import tasks
from service.card import LABEL_SEPARATOR, ModelCard, Task
from service.errors import BadRequest

PROBABILITIES = "probabilities"
LABELS = "labels"


@dataclass(frozen=True)
class OutputInfo:
    """One output a model offers: name, element type ("float32" or "string") and row width."""

    name: str
    dtype: str
    width: int


def offered(card: ModelCard) -> list[OutputInfo]:
    """Every output a model offers, raw first; a derived name never shadows the raw output."""
    return list(_offered(card.task, card.output.name, card.n_outputs))


@lru_cache(maxsize=64)
def _offered(task: Task, raw_name: str, width: int) -> tuple[OutputInfo, ...]:
    raw = OutputInfo(raw_name, "float32", width)
    if task is Task.regression:
        return (raw,)
    derived = (OutputInfo(PROBABILITIES, "float32", width), OutputInfo(LABELS, "string", 1))
    return (raw, *(o for o in derived if o.name != raw_name))


def outputs(card: ModelCard, raw: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The named outputs asked for (all when `names` is None), in that order; unknown names are 400."""
    known = [o.name for o in _offered(card.task, card.output.name, card.n_outputs)]
    if names is None:
        names = known
    else:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise BadRequest(f"unknown output(s) {unknown}; the model offers {known}")
    out, derived, raw_name = {}, None, card.output.name
    for name in names:
        if name == raw_name:  # FP32 on the wire, as `_offered` says, whatever the graph's float type
            out[name] = raw if raw.dtype == np.float32 else raw.astype(np.float32)
            continue
        if derived is None:
            probs, found = tasks.decided(card, raw)
            derived = probs.astype(np.float32), _label_column(found)
        out[name] = derived[0] if name == PROBABILITIES else derived[1]
    return out


def _label_column(found: list) -> np.ndarray:
    """[rows, 1] strings from the decisions: lists are joined by ",", None becomes ""."""
    if (found and type(found[0]) is list) or None in found:
        found = ["" if f is None else LABEL_SEPARATOR.join(f) if type(f) is list else f for f in found]
    return np.array(found, dtype=object).reshape(-1, 1)
