"""Example predict bodies for the OpenAPI docs, one per task and two for bulk rows (top_k 0; columns),
for the default model repository."""

from __future__ import annotations

# scikit-learn's digits[0] (a "0") and digits[3] (a "3"): 8x8 images, pixel values 0..16.
DIGIT_0 = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0,
           0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0,
           0, 6, 13, 10, 0, 0, 0]
DIGIT_3 = [0, 0, 7, 15, 13, 1, 0, 0, 0, 8, 13, 6, 15, 4, 0, 0, 0, 2, 1, 13, 13, 0, 0, 0, 0, 0, 2, 15,
           11, 1, 0, 0, 0, 0, 0, 1, 12, 12, 1, 0, 0, 0, 0, 0, 1, 10, 8, 0, 0, 0, 8, 4, 5, 14, 9, 0, 0,
           0, 7, 13, 13, 9, 0, 0]
# scikit-learn's diabetes[0], unscaled, keyed by feature name.
PATIENT = {"age": 59.0, "sex": 2.0, "bmi": 32.1, "bp": 101.0, "s1": 157.0, "s2": 93.2, "s3": 38.0,
           "s4": 4.0, "s5": 4.8598, "s6": 87.0}

BODIES = {
    "binary": ("Binary: digits-binary", {"model": "digits-binary", "instances": [DIGIT_0]}),
    "multiclass": ("Multiclass: digits, top 3", {"model": "digits", "instances": [DIGIT_3], "top_k": 3}),
    "bulk": ("Multiclass, bulk: digits, each row's label and probability only (top_k 0)",
             {"model": "digits", "instances": [DIGIT_0, DIGIT_3], "top_k": 0}),
    "columns": ("Multiclass, bulk, as columns: digits, a list per field with an entry per row",
                {"model": "digits", "instances": [DIGIT_0, DIGIT_3], "top_k": 2, "format": "columns"}),
    "multilabel": ("Multilabel: digit-traits", {"model": "digit-traits", "instances": [DIGIT_3]}),
    "regression": ("Regression: diabetes, row keyed by feature name",
                   {"model": "diabetes", "instances": [PATIENT]}),
}


def openapi_examples(with_model: bool = True) -> dict:
    """OpenAPI `examples` for a predict body, without the `model` field when the URL names it."""
    return {key: {"summary": summary,
                  "value": body if with_model else {k: v for k, v in body.items() if k != "model"}}
            for key, (summary, body) in BODIES.items()}
