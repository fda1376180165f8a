"""The model card: the one schema that training writes and the service reads.

A model repository is `<root>/<name>/<version>/` holding `model.onnx` and `card.json`; the
folders decide the name and version a model serves as, and the card's own `name` and `version`
are provenance (what it was trained or imported as). Cards come from two writers: training
(`python -m training`), which fills every field, and the import command (`python -m training
import`), which records only facts it can know: the fields about training (`training`, `splits`,
`metrics`, `baseline`, and `parity` for an ONNX file) are then absent. This module imports only
pydantic so the service can read cards without TensorFlow.
"""

from __future__ import annotations

import hashlib
import math
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
SCHEMA_VERSION = 1
# Names end up in URLs and on disk: keep them to a safe alphabet.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
# The version folders the server serves: 1 to VERSION_MAX without a leading zero (the pattern is
# exactly those spellings); writers refuse other versions, whose folders would never serve.
VERSION_MAX, VERSION_PATTERN = 999_999_999, r"^[1-9][0-9]{0,8}$"
VERSION_RE = re.compile(VERSION_PATTERN)
# How a multilabel answer joins the labels of a row into one string (the V2 `labels` output).
LABEL_SEPARATOR = ","


class Task(str, Enum):
    binary = "binary"
    multiclass = "multiclass"
    multilabel = "multilabel"
    regression = "regression"


class OutputKind(str, Enum):
    """What the served graph output holds, so the service never applies a second sigmoid/softmax."""

    logits = "logits"  # classifiers: the service applies sigmoid (binary, multilabel) or softmax
    probabilities = "probabilities"  # classifiers: already probabilities, answered as they are
    values = "values"  # regression: target values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One graph input or output: name, shape (-1 for the free batch dimension), dtype."""

    name: str
    shape: list[int]
    dtype: str = "float32"

    @property
    def integer(self) -> bool:
        """Whether it holds integers (int32, int64): such an input takes only whole numbers."""
        return self.dtype.startswith("int")


class TrainingInfo(_Strict):
    """How the network was trained, enough to train it again."""

    command: str
    dataset: str
    seed: int
    hidden: list[int]
    l2: float
    epochs: int
    epochs_run: int
    learning_rate: float
    batch_size: int
    output_activation: str = "linear"
    # Metric the thresholds were chosen for on the validation split; None: fixed at 0.5.
    threshold_metric: str | None = None


class Splits(_Strict):
    """Row counts of the deterministic train/validation/test split."""

    train: int
    validation: int
    test: int


class Metrics(_Strict):
    """Test-split metrics; which fields are set depends on the task."""

    accuracy: float | None = None
    macro_f1: float | None = None
    per_label_f1: dict[str, float] | None = None
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None


class Baseline(_Strict):
    """A simple model fitted on the same split, for comparison."""

    name: str
    metrics: Metrics


class ThresholdCheck(_Strict):
    """One binary / per-label threshold: tuned on the validation split, and whether it is served.

    The card's `threshold_rule` says how `wins`, `losses` and `trials` were counted."""

    label: str
    tuned: float  # the threshold the whole validation split chose
    served: float  # `tuned`, or 0.5 when the check did not support it
    wins: int  # held-out checks where the tuned threshold beat 0.5
    losses: int  # held-out checks where it did worse (the rest were ties)
    trials: int
    mean_gain: float  # mean held-out change of the tuning metric, tuned minus 0.5
    reason: str


class Parity(_Strict):
    """onnxruntime against Keras on the test rows, at two batch sizes."""

    rows: int
    batch_sizes: list[int]
    max_abs_diff: float
    tolerance: float
    passed: bool


class Source(_Strict):
    """Where an imported model came from: the file given to the import command, as it was."""

    file: str  # its name, without the folder it was in
    format: str  # "keras" or "onnx"
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    output: str  # the model output that serves (Keras output name or ONNX graph output)
    output_kind_from: str  # how output_kind was decided: the last activation, a node, or the option
    samples: str  # where the golden (and parity) rows came from
    command: str  # the import command, as run


class Golden(_Strict):
    """An input row and the Keras output for it; replayed by the service at load time.

    Without `columns` the row is numbers, one per input feature. With `columns` it is one value
    per column in card order, as a client sends it: a number (numeric), a string (categorical)
    or null (missing, filled by the graph)."""

    input: list[float | str | None]
    output: list[float]


# The graph inputs of a model with `columns`, in this order; each exists only with columns of its kind.
FEATURES, CATEGORIES = "features", "categories"
_KIND_INPUT = {"numeric": (FEATURES, "float32"), "categorical": (CATEGORIES, "string")}


class Column(_Strict):
    """One raw feature as clients send it.

    The graph fills a missing value with `fill` (numeric: the training median; categorical: the
    most frequent training category) and one-hot encodes a categorical column over `categories`
    in this order; a value not among them encodes as all zeros."""

    name: str
    kind: Literal["numeric", "categorical"]
    fill: float | str
    categories: list[str] | None = None  # categorical only: training categories, encoding order
    missing_in_training: Annotated[int, Field(ge=0)] = 0  # training-split values that were missing (and filled)
    # Categorical only: texts that mean missing as "" does (training's --na-values), filled alike.
    missing_texts: list[str] = Field([], exclude_if=lambda v: not v)

    @model_validator(mode="after")
    def _fits_kind(self) -> Column:
        if self.kind == "numeric":
            if type(self.fill) is not float or not math.isfinite(self.fill) or self.categories is not None \
                    or self.missing_texts:
                raise ValueError(f"numeric column {self.name!r} needs a finite number as fill, and no categories "
                                 "or missing texts")
            return self
        cats = self.categories
        if not cats or len(set(cats)) != len(cats) or "" in cats:
            raise ValueError(f"categorical column {self.name!r} needs non-empty, unique categories, none of "
                             f"them \"\" (which means missing), got {cats}")
        if self.fill not in cats:
            raise ValueError(f"categorical column {self.name!r}: fill {self.fill!r} is not one of its categories")
        if set(self.missing_texts) & {"", *cats}:
            raise ValueError(f"categorical column {self.name!r}: a missing text cannot be \"\" or a category, "
                             f"got {self.missing_texts}")
        return self


def _absent(value: object) -> bool:
    # The table-model fields are left out of other models' cards, which stay as they were written.
    return value is None


class ModelCard(_Strict):
    """Everything the service needs to serve a model and a person needs to trust it.

    Most models have one float input, `input` ([-1, n_features]); `inputs` is then absent. A table
    model (one trained on a table with text or missing values) has `columns`, the raw features
    clients send, and its graph takes `features` (float32, its numeric columns, NaN = missing)
    and/or `categories` (string, its categorical columns, "" = missing), in that order. Its card
    lists them in `inputs` (it may always do so, and must when there is more than one or the one
    input is not `features`); `input` is always the first graph input, so it is
    `categories` for a table of text columns only. A writer may leave `input` out when it gives
    `inputs`, and `feature_names` out when it gives `columns`: they are filled in from them.
    """

    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION  # a card format this code knows
    # What the model was trained or imported as; the folders it sits in decide how it serves.
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    version: Annotated[int, Field(ge=1)] | None = None
    task: Task
    description: str = ""
    # The graph's first input; with `inputs` it may be left out and is then `inputs[0]`.
    input: TensorSpec
    # Every graph input, in graph order; only for a model with `columns` (see `_check_columns`).
    inputs: list[TensorSpec] | None = Field(None, exclude_if=_absent)
    output: TensorSpec
    # Cards written before this field existed hold logits (values for regression): the default.
    output_kind: OutputKind | None = None
    feature_names: list[str] | None = None
    # The raw features clients send, in order (a table model): the numeric ones are the columns of
    # the `features` input, the categorical ones those of `categories`; `feature_names` are their names.
    columns: list[Column] | None = Field(None, exclude_if=_absent)
    # Class names in output order (multiclass), [negative, positive] (binary),
    # label names in output order (multilabel), target names (regression).
    labels: list[str]
    # Binary: one threshold on the positive probability; multilabel: one per label.
    thresholds: list[float] | None = None
    source: Source | None = None  # imported models
    training: TrainingInfo | None = None  # trained models, as are the fields down to baseline
    library_versions: dict[str, str] | None = None
    splits: Splits | None = None
    metrics: Metrics | None = None
    # Test metrics had every threshold stayed at 0.5, to show what tuning changed.
    metrics_at_half: Metrics | None = None
    baseline: Baseline | None = None  # logistic or linear regression
    # Added later, so absent from older cards: gradient-boosted trees on the same split.
    trees_baseline: Baseline | None = None
    # How tuned thresholds were checked before serving, and the result for each; absent for
    # thresholds fixed at 0.5 and in cards written before the check existed.
    threshold_rule: str | None = None
    threshold_checks: list[ThresholdCheck] | None = None
    parity: Parity | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    golden: list[Golden] = []
    created_at: str | None = None

    @property
    def n_features(self) -> int:
        """How many features a client sends per row: the columns, or the one input's width."""
        return len(self.columns) if self.columns is not None else self.input.shape[-1]

    @property
    def graph_inputs(self) -> list[TensorSpec]:
        """Every graph input, in graph order."""
        return self.inputs if self.inputs is not None else [self.input]

    @property
    def n_outputs(self) -> int:
        return self.output.shape[-1]

    @model_validator(mode="before")
    @classmethod
    def _default_output_kind(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("output_kind") is None:
            regression = data.get("task") in (Task.regression, Task.regression.value)
            data = {**data, "output_kind": OutputKind.values if regression else OutputKind.logits}
        if isinstance(data, dict) and data.get("input") is None and data.get("inputs"):
            data = {**data, "input": data["inputs"][0]}
        if isinstance(data, dict) and data.get("feature_names") is None and data.get("columns"):
            data = {**data, "feature_names": [_name(c) for c in data["columns"]]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        n_in, n_out = self.n_features, self.n_outputs
        if self.columns is not None or self.inputs is not None:
            self._check_columns()
        if len(self.input.shape) != 2 or self.input.shape[-1] < 1:
            raise ValueError(f"input shape must be [-1, n_features], got {self.input.shape}")
        if len(self.output.shape) != 2 or n_out < 1:
            raise ValueError(f"output shape must be [-1, n_outputs], got {self.output.shape}")
        if self.feature_names is not None and len(self.feature_names) != n_in:
            raise ValueError(f"{len(self.feature_names)} feature names for {n_in} input features")
        if self.feature_names is not None and len(set(self.feature_names)) != n_in:
            raise ValueError("feature names must be unique")
        self._check_labels()
        if (self.task is Task.regression) != (self.output_kind is OutputKind.values):
            raise ValueError(f"output_kind {self.output_kind.value!r} does not fit a {self.task.value} model: "
                             "regression outputs are 'values', classifiers' 'logits' or 'probabilities'")
        if self.task is Task.binary and n_out != 1:
            raise ValueError(f"binary model must have one output unit, card says {n_out}")
        if self.task is Task.multiclass and n_out < 2:
            raise ValueError("multiclass model needs at least two outputs")
        self._check_thresholds()
        if self.threshold_checks is not None and \
                [c.served for c in self.threshold_checks] != self.thresholds:
            raise ValueError("threshold_checks must give the served thresholds, in order: "
                             f"{[c.served for c in self.threshold_checks]} != {self.thresholds}")
        for i, g in enumerate(self.golden):
            if len(g.input) != n_in or len(g.output) != n_out:
                raise ValueError(f"golden example {i} does not match the signature")
            kinds = [c.kind for c in self.columns] if self.columns is not None else ["number"] * n_in
            if not all(_fits(v, kind) for v, kind in zip(g.input, kinds)):
                raise ValueError(f"golden example {i}: each value must be a number (numeric column), a string "
                                 f"(categorical column) or null (a column, missing), got {g.input}")
        return self

    def _check_labels(self) -> None:
        """One label per output (binary: [negative, positive]), each once, as answers are keyed by
        label; a multilabel answer joins labels with LABEL_SEPARATOR, which none may then hold."""
        expected = 2 if self.task is Task.binary else self.n_outputs
        if len(self.labels) != expected:
            raise ValueError(f"{self.task.value} model with {self.n_outputs} outputs needs "
                             f"{expected} labels, card has {len(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"a {self.task.value} model's labels must be unique, got [{listed(self.labels, repr)}]")
        if self.task is Task.multilabel and any(LABEL_SEPARATOR in label for label in self.labels):
            raise ValueError(f"a multilabel model's labels cannot contain {LABEL_SEPARATOR!r}, which joins "
                             f"a row's labels in one answer, got [{listed(self.labels, repr)}]")

    def _check_thresholds(self) -> None:
        """Binary: one threshold; multilabel: one per label; other tasks none."""
        expected = {Task.binary: 1, Task.multilabel: self.n_outputs}.get(self.task)
        if expected is None and self.thresholds is not None:
            raise ValueError(f"thresholds apply to binary and multilabel models, not {self.task.value}")
        if expected is not None and (self.thresholds is None or len(self.thresholds) != expected):
            raise ValueError(f"{self.task.value} card needs {expected} threshold(s)")
        if not all(0.0 < t < 1.0 for t in self.thresholds or []):
            raise ValueError(f"thresholds must lie strictly between 0 and 1: {self.thresholds}")

    def _check_columns(self) -> None:
        """A table model's graph inputs are `features` float32 [-1, numeric columns] and then
        `categories` string [-1, categorical columns], each only when it has columns; `input` is
        the first of them. Any other set of inputs is not a table model's and is refused."""
        if self.columns is None:
            raise ValueError("'inputs' is only for a model with 'columns'")
        names = [c.name for c in self.columns]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"column names must be unique and there must be at least one, got {names}")
        if self.feature_names is not None and self.feature_names != names:
            raise ValueError(f"feature_names {self.feature_names} must be the column names {names}")
        expected = [TensorSpec(name=name, shape=[-1, width], dtype=dtype)
                    for kind, (name, dtype) in _KIND_INPUT.items()
                    if (width := sum(c.kind == kind for c in self.columns))]
        if self.graph_inputs != expected:
            raise ValueError(f"columns {names} need the graph inputs {[s.model_dump() for s in expected]}, card "
                             f"says {[s.model_dump() for s in self.graph_inputs]}")
        if self.input != expected[0]:
            raise ValueError(f"input {self.input.model_dump()} must be the first graph input {expected[0].model_dump()}")

    def public(self) -> dict:
        """The card as JSON-ready data, without the golden examples."""
        return self.model_dump(mode="json", exclude={"golden"})


def _name(column: object) -> object:
    return column.name if isinstance(column, Column) else column.get("name") if isinstance(column, dict) else None


def _fits(value: object, kind: str) -> bool:
    """Whether a golden value is what a client may send for a column of this kind."""
    if kind == "number":
        return type(value) is float
    return value is None or type(value) is (float if kind == "numeric" else str)


def listed(items: list, show=str, limit: int = 10) -> str:
    """Items for a one-line message, separated by commas: the first `limit`, then how many more."""
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(map(show, items[:limit])) + more


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(path: Path) -> ModelCard:
    """Parse and validate a card.json; raises pydantic.ValidationError or OSError."""
    return ModelCard.model_validate_json(Path(path).read_bytes())


def write_card(card: ModelCard, path: Path) -> None:
    Path(path).write_text(card.model_dump_json(indent=2) + "\n")
