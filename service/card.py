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


class Column(_Strict):
    """One raw feature as clients send it."""

    name: str
    kind: Literal["numeric", "categorical"]
    fill: float | str  # numeric: training median; categorical: most frequent training category
    categories: list[str] | None = None  # categorical only: training categories, encoding order
    missing_in_training: int = 0  # how many training-split values were missing (and filled)


class Golden(_Strict):
    """An input row and the Keras output for it; replayed by the service at load time.

    With `columns` on the card: one raw value per column (strings for categories, null missing)."""

    input: list[float | str | None]
    output: list[float]


class ModelCard(_Strict):
    """Everything the service needs to serve a model and a person needs to trust it."""

    schema_version: int = SCHEMA_VERSION
    # What the model was trained or imported as; the folders it sits in decide how it serves.
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    version: Annotated[int, Field(ge=1)] | None = None
    task: Task
    description: str = ""
    # The float32 `features` input; absent only when `inputs` is set and no column is numeric.
    input: TensorSpec | None = None
    output: TensorSpec
    # Raw features (numeric ones feed `features`, categorical ones `categories`, each in this
    # order); set, `feature_names` lists every column and `inputs` every graph input in order.
    columns: list[Column] | None = None
    inputs: list[TensorSpec] | None = None
    # Cards written before this field existed hold logits (values for regression): the default.
    output_kind: OutputKind | None = None
    feature_names: list[str] | None = None
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
        return self.input.shape[-1] if self.input is not None else 0

    @property
    def n_outputs(self) -> int:
        return self.output.shape[-1]

    @model_validator(mode="before")
    @classmethod
    def _default_output_kind(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("output_kind") is None:
            regression = data.get("task") in (Task.regression, Task.regression.value)
            data = {**data, "output_kind": OutputKind.values if regression else OutputKind.logits}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        n_in, n_out = self.n_features, self.n_outputs
        if self.input is None and not self.columns:
            raise ValueError("a card needs an input")
        if self.input is not None and (len(self.input.shape) != 2 or n_in < 1):
            raise ValueError(f"input shape must be [-1, n_features], got {self.input.shape}")
        if self.columns:
            self._check_columns()
            n_in = len(self.columns)  # feature names and golden rows count raw columns
        if len(self.output.shape) != 2 or n_out < 1:
            raise ValueError(f"output shape must be [-1, n_outputs], got {self.output.shape}")
        if self.feature_names is not None and len(self.feature_names) != n_in:
            raise ValueError(f"{len(self.feature_names)} feature names for {n_in} input features")
        if self.feature_names is not None and len(set(self.feature_names)) != n_in:
            raise ValueError("feature names must be unique")
        expected_labels = 2 if self.task is Task.binary else n_out
        if len(self.labels) != expected_labels:
            raise ValueError(f"{self.task.value} model with {n_out} outputs needs "
                             f"{expected_labels} labels, card has {len(self.labels)}")
        if (self.task is Task.regression) != (self.output_kind is OutputKind.values):
            raise ValueError(f"output_kind {self.output_kind.value!r} does not fit a {self.task.value} model: "
                             "regression outputs are 'values', classifiers' 'logits' or 'probabilities'")
        if self.task is Task.binary and n_out != 1:
            raise ValueError(f"binary model must have one output unit, card says {n_out}")
        if self.task is Task.multiclass and n_out < 2:
            raise ValueError("multiclass model needs at least two outputs")
        expected_thresholds = {Task.binary: 1, Task.multilabel: n_out}.get(self.task)
        if expected_thresholds is not None:
            if self.thresholds is None or len(self.thresholds) != expected_thresholds:
                raise ValueError(f"{self.task.value} card needs {expected_thresholds} threshold(s)")
            if not all(0.0 < t < 1.0 for t in self.thresholds):
                raise ValueError(f"thresholds must lie strictly between 0 and 1: {self.thresholds}")
        if self.threshold_checks is not None and \
                [c.served for c in self.threshold_checks] != self.thresholds:
            raise ValueError("threshold_checks must give the served thresholds, in order: "
                             f"{[c.served for c in self.threshold_checks]} != {self.thresholds}")
        for i, g in enumerate(self.golden):
            if len(g.input) != n_in or len(g.output) != n_out:
                raise ValueError(f"golden example {i} does not match the signature")
        return self

    def _check_columns(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        numeric = sum(c.kind == "numeric" for c in self.columns)
        if numeric != self.n_features:
            raise ValueError(f"{numeric} numeric columns for an input of {self.n_features} features")
        if self.inputs is None:
            raise ValueError("a card with columns lists its graph inputs in `inputs`")
        for c in self.columns:
            if (c.kind == "categorical") != (c.categories is not None):
                raise ValueError(f"column {c.name!r}: categories go with categorical columns only")

    def public(self) -> dict:
        """The card as JSON-ready data, without the golden examples."""
        return self.model_dump(mode="json", exclude={"golden"})


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
