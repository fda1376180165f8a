"""The JSON shapes of the predict and error responses, for the OpenAPI docs and for tests.

The request path does not validate bodies with these models (that would cost a pydantic object
per number); `service.codecs` check the raw JSON instead. Tests re-validate responses against them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.card import VERSION_MAX, VERSION_PATTERN, Task
from service.errors import ErrorResponse  # noqa: F401 - the one error body, named here for this protocol's routes


# Versions are the folders the server serves (`service.card.VERSION_RE`); JSON integers beyond 64
# bits (unsigned) are refused by the parser (`service.codecs.json`).
JSON_INT_MAX = 2**64 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    """Body of the predict routes; `model` and `version` only where the URL does not name them."""

    model: str | None = Field(None, description="Model name; optional with a default or a single model.")
    version: Annotated[int, Field(ge=1, le=VERSION_MAX)] | Annotated[str, Field(pattern=VERSION_PATTERN)] | None = \
        Field(None, description="Model version; the newest ready one if left out.")
    instances: list[list[float | str | None] | dict[str, float | str | None]] = Field(
        min_length=1, description="Rows: lists of numbers, or objects keyed by feature name. Each row "
        "must hold exactly the model's features (its card's `feature_names`, or as many numbers), "
        "each a finite float32; anything else is answered 400 naming the row and feature. A table "
        "model (a card with `columns`) takes strings for its categorical columns and null (or, in an "
        "object, an absent key) for a missing value, which its graph fills.")
    top_k: int | None = Field(None, ge=0, le=JSON_INT_MAX,
                              description="Multiclass: how many classes to list in each prediction's "
                              "`top_k`, best first (default 3). 0 lists none: each prediction is its "
                              "label and probability with an empty `top_k`, the least a bulk client "
                              "can ask to be written.")
    format: Literal["rows", "columns"] | None = Field(
        None, description='How the predictions are laid out: "rows" (the default), a list with one '
        'prediction per row; or "columns", one object whose every field is a list with an entry per '
        "row (entry i is that field of row i's prediction; objects inside a prediction turn inside "
        'out too: `"top_k": {"label": [[...]], "probability": [[...]]}`, `"probabilities": '
        '{label: [...]}`), for bulk clients and data frames. The values are the same.')


class LabelProbability(_Strict):
    label: str | None
    probability: float | None


class _Warned(_Strict):
    # Only a table model's rows with something to say have it: other answers are as they were.
    warnings: list[str] | None = Field(None, exclude_if=lambda v: v is None, description="Table models: features "
                                       "filled because they were missing, and categories not seen in training "
                                       "(encoded as all zeros); absent when there are none.")


class BinaryPrediction(LabelProbability, _Warned):
    """Positive-class probability; the label is labels[1] at or over the threshold."""


class MulticlassPrediction(LabelProbability, _Warned):
    """Best class and the top_k classes by softmax probability."""

    top_k: list[LabelProbability]


class MultilabelPrediction(_Warned):
    """Labels at or over their thresholds, and every label's sigmoid probability."""

    labels: list[str] | None
    probabilities: dict[str, float | None]


class RegressionPrediction(_Warned):
    """The predicted value, or a list of values for several targets."""

    value: float | None | list[float | None]


PREDICTIONS = {
    Task.binary: BinaryPrediction,
    Task.multiclass: MulticlassPrediction,
    Task.multilabel: MultilabelPrediction,
    Task.regression: RegressionPrediction,
}


# The same predictions as columns (`"format": "columns"`): every field a list, an entry per row.

class _WarnedColumns(_Strict):
    warnings: list[list[str]] | None = Field(None, exclude_if=lambda v: v is None, description="Table models: "
                                             "each row's warnings (empty where it has none); absent when no "
                                             "row has any.")


class LabelProbabilityColumns(_Strict):
    label: list[str | None]
    probability: list[float | None]


class BinaryColumns(LabelProbabilityColumns, _WarnedColumns):
    """Each row's label and positive-class probability."""


class TopKColumns(_Strict):
    label: list[list[str]]
    probability: list[list[float]]


class MulticlassColumns(LabelProbabilityColumns, _WarnedColumns):
    """Each row's best class and probability, and its top_k classes (none for a null label)."""

    top_k: TopKColumns


class MultilabelColumns(_WarnedColumns):
    """Each row's labels at or over their thresholds, and each label's probability per row."""

    labels: list[list[str] | None]
    probabilities: dict[str, list[float | None]]


class RegressionColumns(_WarnedColumns):
    """Each row's value, or list of values for several targets."""

    value: list[float | None] | list[list[float | None]]


COLUMNS = {
    Task.binary: BinaryColumns,
    Task.multiclass: MulticlassColumns,
    Task.multilabel: MultilabelColumns,
    Task.regression: RegressionColumns,
}


class PredictResponse(_Strict):
    """One prediction per request row, in request order; or their columns (`"format": "columns"`)."""

    model: str
    version: int
    task: Task
    predictions: (list[MulticlassPrediction | BinaryPrediction | MultilabelPrediction | RegressionPrediction]
                  | MulticlassColumns | BinaryColumns | MultilabelColumns | RegressionColumns)
