"""Postprocessing as pure functions: stable activations, every task, non-finite outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service import tasks
from service.card import Task
from tests.service import helpers


def card(spec):
    return helpers.make_card(spec, "0" * 64)


def test_sigmoid_is_stable_and_exact_at_the_extremes():
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0, -np.inf, np.inf])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = tasks.sigmoid(x)
    assert p.tolist() == pytest.approx([0.0, 1 / (1 + math.exp(30)), 0.5, 1 / (1 + math.exp(-30)), 1.0, 0.0, 1.0])


def test_softmax_subtracts_the_row_max():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = tasks.softmax(np.array([[1000.0, 0.0], [-1000.0, 0.0], [0.0, math.log(3)]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])


def test_binary_threshold_and_labels():
    logits = np.array([[0.0], [-0.1], [1000.0], [-1000.0]])
    preds = tasks.postprocess(card(helpers.BINARY), logits)
    assert preds == [
        {"label": "yes", "probability": 0.5},  # at the threshold counts as positive
        {"label": "no", "probability": pytest.approx(1 / (1 + math.exp(0.1)))},
        {"label": "yes", "probability": 1.0},
        {"label": "no", "probability": 0.0},
    ]


def test_multiclass_top_k_is_ranked_and_bounded():
    c = card(helpers.MULTICLASS_V1)
    preds = tasks.postprocess(c, np.array([[0.0, 2.0, 1.0], [1000.0, 0.0, -1000.0]]), top_k=5)
    e = np.exp([0.0, 2.0, 1.0]) / np.exp([0.0, 2.0, 1.0]).sum()
    assert [t["label"] for t in preds[0]["top_k"]] == ["dog", "emu", "cat"]
    assert [t["probability"] for t in preds[0]["top_k"]] == pytest.approx([e[1], e[2], e[0]])
    assert preds[1] == {"label": "cat", "probability": 1.0, "top_k": [
        {"label": "cat", "probability": 1.0}, {"label": "dog", "probability": 0.0},
        {"label": "emu", "probability": 0.0}]}
    assert len(tasks.postprocess(c, np.zeros((1, 3)), top_k=1)[0]["top_k"]) == 1


def test_multilabel_uses_one_threshold_per_label():
    preds = tasks.postprocess(card(helpers.MULTILABEL), np.array([[1000.0, -1000.0, 1.0], [0.0, 0.0, 3.0]]))
    assert preds[0]["labels"] == ["even"]  # sigmoid(1) = 0.73 is under closed_loop's 0.9
    assert preds[1]["labels"] == ["even", "prime", "closed_loop"]
    assert preds[0]["probabilities"] == pytest.approx({"even": 1.0, "prime": 0.0, "closed_loop": 1 / (1 + math.exp(-1))})


def test_regression_scalar_and_vector_values():
    assert tasks.postprocess(card(helpers.REGRESSION), np.array([[1.5], [-2.0]])) == [{"value": 1.5}, {"value": -2.0}]
    assert tasks.postprocess(card(helpers.REGRESSION2), np.array([[1.0, 2.0]])) == [{"value": [1.0, 2.0]}]


@pytest.mark.parametrize("spec, expected", [
    (helpers.NONFINITE_BINARY, [{"label": None, "probability": None}, {"label": "yes", "probability": 1.0},
                                {"label": "no", "probability": 0.0}]),
    (helpers.NONFINITE_MULTICLASS, [{"label": None, "probability": None, "top_k": []}] * 3),
    (helpers.NONFINITE_MULTILABEL, [{"labels": None, "probabilities": {"a": None, "b": 0.5}},
                                    {"labels": ["a", "b"], "probabilities": {"a": 1.0, "b": 0.5}},
                                    {"labels": ["b"], "probabilities": {"a": 0.0, "b": 0.5}}]),
    (helpers.NONFINITE_REGRESSION, [{"value": None}] * 3),
])
def test_non_finite_outputs_become_null(spec, expected):
    outputs = np.array([[np.nan], [np.inf], [-np.inf]])
    if spec.n_outputs == 2:
        outputs = np.hstack([outputs, np.zeros((3, 1))])
    assert tasks.postprocess(card(spec), outputs) == expected


def test_vector_regression_nulls_only_the_bad_target():
    assert tasks.postprocess(card(helpers.REGRESSION2), np.array([[np.nan, 2.0]])) == [{"value": [None, 2.0]}]


def test_every_task_is_handled():
    assert {s.task for s in helpers.STANDARD} == {t.value for t in Task}
