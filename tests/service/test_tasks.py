"""Postprocessing as pure functions: stable activations, every task, ties, thresholds, top_k,
non-finite outputs, and the one path against a plain per-row reference at every batch size."""

from __future__ import annotations

import math
import warnings

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import named, tasks
from service.batching import take
from service.card import Task
from tests.service import helpers

ROW_COUNTS = [1, 2, 3, 17, 256]
SPECIAL = [np.nan, np.inf, -np.inf, 1000.0, -1000.0, 0.0, -0.0, 1.0]


def card(spec):
    return helpers.make_card(spec, "0" * 64)


def answers(card, x, top_k=tasks.DEFAULT_TOP_K) -> list:
    """The /predict answers as parsed JSON (postprocess writes each row's JSON text)."""
    return [orjson.loads(row) for row in tasks.postprocess(card, x, top_k).rows()]


def test_sigmoid_is_stable_and_exact_at_the_extremes():
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0, -np.inf, np.inf])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = tasks.sigmoid(x)
    assert p.tolist() == pytest.approx([0.0, 1 / (1 + math.exp(30)), 0.5, 1 / (1 + math.exp(-30)), 1.0, 0.0, 1.0])
    assert p[[0, 4, 5, 6]].tolist() == [0.0, 1.0, 0.0, 1.0]  # exact, not approximately


def test_softmax_subtracts_the_row_max():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = tasks.softmax(np.array([[1000.0, 0.0], [-1000.0, 0.0], [0.0, math.log(3)]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    assert p[:2].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_softmax_of_non_finite_rows_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = tasks.softmax(np.array([[-np.inf, -np.inf, 0.0], [np.nan, 0.0, 0.0], [np.nan, np.inf, 0.0],
                                    [-np.inf, 0.0, -np.inf], [np.inf, 0.0, 0.0], [np.inf, np.inf, -np.inf],
                                    [-np.inf, -np.inf, -np.inf]]))
    assert np.isnan(p[1:3]).all() and np.isnan(p[6]).all()
    assert p[0].tolist() == [0.0, 0.0, 1.0] and p[3].tolist() == [0.0, 1.0, 0.0]
    # The limits: +inf logits share the probability (a row once answered null, where binary said 1.0).
    assert p[4].tolist() == [1.0, 0.0, 0.0] and p[5].tolist() == [0.5, 0.5, 0.0]


def test_binary_threshold_and_labels():
    logits = np.array([[0.0], [-0.1], [1000.0], [-1000.0]])
    preds = answers(card(helpers.BINARY), logits)
    assert preds == [
        {"label": "yes", "probability": 0.5},  # at the threshold counts as positive
        {"label": "no", "probability": pytest.approx(1 / (1 + math.exp(0.1)))},
        {"label": "yes", "probability": 1.0},
        {"label": "no", "probability": 0.0},
    ]


def test_binary_uses_the_cards_threshold():
    spec = helpers.Spec("b", "binary", [[1.0]], [0.0], ["n", "y"], thresholds=[0.8])
    preds = answers(card(spec), np.array([[1.0], [2.0]]))  # sigmoid: 0.73, 0.88
    assert [p["label"] for p in preds] == ["n", "y"]


def test_multiclass_top_k_is_ranked_and_bounded():
    c = card(helpers.MULTICLASS_V1)
    preds = answers(c, np.array([[0.0, 2.0, 1.0], [1000.0, 0.0, -1000.0]]), top_k=5)
    e = np.exp([0.0, 2.0, 1.0]) / np.exp([0.0, 2.0, 1.0]).sum()
    assert [t["label"] for t in preds[0]["top_k"]] == ["dog", "emu", "cat"]
    assert [t["probability"] for t in preds[0]["top_k"]] == pytest.approx([e[1], e[2], e[0]])
    assert preds[1] == {"label": "cat", "probability": 1.0, "top_k": [
        {"label": "cat", "probability": 1.0}, {"label": "dog", "probability": 0.0},
        {"label": "emu", "probability": 0.0}]}
    assert len(answers(c, np.zeros((1, 3)), top_k=1)[0]["top_k"]) == 1
    # top_k 0: the same label and probability, no classes listed.
    assert answers(c, np.array([[0.0, 2.0, 1.0], [1000.0, 0.0, -1000.0]]), top_k=0) == [
        {"label": "dog", "probability": preds[0]["probability"], "top_k": []},
        {"label": "cat", "probability": 1.0, "top_k": []}]


def test_multiclass_ties_keep_output_order():
    c = card(helpers.MULTICLASS_V1)
    preds = answers(c, np.array([[1.0, 3.0, 3.0], [0.0, -0.0, 0.0], [-1000.0, -5000.0, -5000.0]]), top_k=3)
    assert [[t["label"] for t in p["top_k"]] for p in preds] == [["dog", "emu", "cat"], ["cat", "dog", "emu"],
                                                              ["cat", "dog", "emu"]]
    assert [p["label"] for p in preds] == ["dog", "cat", "cat"]
    # Probabilities that underflow to 0 are still ranked by their logits: -5000 after -1000.
    assert preds[2]["top_k"][1:] == [{"label": "dog", "probability": 0.0}, {"label": "emu", "probability": 0.0}]


def test_multilabel_uses_one_threshold_per_label():
    preds = answers(card(helpers.MULTILABEL), np.array([[1000.0, -1000.0, 1.0], [0.0, 0.0, 3.0]]))
    assert preds[0]["labels"] == ["even"]  # sigmoid(1) = 0.73 is under closed_loop's 0.9
    assert preds[1]["labels"] == ["even", "prime", "closed_loop"]  # 0.5 is at the threshold: in
    assert preds[0]["probabilities"] == pytest.approx({"even": 1.0, "prime": 0.0, "closed_loop": 1 / (1 + math.exp(-1))})


def test_regression_scalar_and_vector_values():
    assert answers(card(helpers.REGRESSION), np.array([[1.5], [-2.0]])) == [{"value": 1.5}, {"value": -2.0}]
    assert answers(card(helpers.REGRESSION2), np.array([[1.0, 2.0]])) == [{"value": [1.0, 2.0]}]


@pytest.mark.parametrize("spec, expected", [
    (helpers.NONFINITE_BINARY, [{"label": None, "probability": None}, {"label": "yes", "probability": 1.0},
                                {"label": "no", "probability": 0.0}]),
    (helpers.NONFINITE_MULTICLASS, [{"label": None, "probability": None, "top_k": []}] + [
        {"label": win, "probability": 1.0, "top_k": [{"label": win, "probability": 1.0},
                                                     {"label": lose, "probability": 0.0}]}
        for win, lose in (("a", "b"), ("b", "a"))]),
    (helpers.NONFINITE_MULTILABEL, [{"labels": None, "probabilities": {"a": None, "b": 0.5}},
                                    {"labels": ["a", "b"], "probabilities": {"a": 1.0, "b": 0.5}},
                                    {"labels": ["b"], "probabilities": {"a": 0.0, "b": 0.5}}]),
    (helpers.NONFINITE_REGRESSION, [{"value": None}] * 3),
])
def test_non_finite_outputs_become_null(spec, expected):
    outputs = np.array([[np.nan], [np.inf], [-np.inf]])
    if spec.n_outputs == 2:
        outputs = np.hstack([outputs, np.zeros((3, 1))])
    assert answers(card(spec), outputs) == expected


def test_only_the_non_finite_rows_are_null():
    c = card(helpers.MULTICLASS_V1)
    preds = answers(c, np.array([[0.0, 1.0, 2.0], [0.0, np.nan, 2.0], [5.0, 0.0, 0.0]]))
    assert [p["label"] for p in preds] == ["emu", None, "cat"]
    assert preds[1] == {"label": None, "probability": None, "top_k": []}


def test_a_plus_inf_logit_takes_the_whole_probability():
    c = card(helpers.MULTICLASS_V1)
    x = np.array([[0.0, np.inf, 2.0], [np.inf, 0.0, np.inf]])
    preds = answers(c, x)
    assert preds[0] == {"label": "dog", "probability": 1.0, "top_k": [
        {"label": "dog", "probability": 1.0}, {"label": "emu", "probability": 0.0}, {"label": "cat", "probability": 0.0}]}
    assert preds[1]["label"] == "cat" and preds[1]["probability"] == 0.5  # a tie: the first, as with finite ties
    probs, found = tasks.decided(c, x)  # what V2 and TF Serving answer
    assert found == ["dog", "cat"] and probs.tolist() == [[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]


def test_a_minus_inf_logit_is_a_class_of_probability_zero():
    # A masked class: the softmax is defined without it, on every protocol alike.
    c = card(helpers.MULTICLASS_V1)
    x = np.array([[0.0, -np.inf, math.log(3)], [-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 0.0]])
    preds = answers(c, x)
    assert preds[0]["label"] == "emu" and preds[0]["probability"] == pytest.approx(0.75)
    assert [(t["label"], pytest.approx(t["probability"])) for t in preds[0]["top_k"]] == \
        [("emu", 0.75), ("cat", 0.25), ("dog", 0.0)]
    assert preds[1:] == [{"label": None, "probability": None, "top_k": []}] * 2  # no softmax
    probs, found = tasks.decided(c, x)  # what V2 and TF Serving answer
    assert found == ["emu", None, None]
    np.testing.assert_allclose(probs[0], [0.25, 0.0, 0.75])
    assert np.isnan(probs[1:]).all()


def test_vector_regression_nulls_only_the_bad_target():
    assert answers(card(helpers.REGRESSION2), np.array([[np.nan, 2.0]])) == [{"value": [None, 2.0]}]


def test_every_task_has_one_table_entry():
    assert {s.task for s in helpers.STANDARD} == {t.value for t in Task}
    assert set(tasks.POST) == set(Task)


# The one path against a plain reference: random batches of every size, with ties, +-inf, NaN, +-1000.

def reference(card, outputs: np.ndarray, top_k: int) -> list[dict]:
    """The documented semantics, one row at a time in numpy."""
    x = np.asarray(outputs, dtype=np.float64)
    if card.task is Task.regression:
        values = [[float(v) if np.isfinite(v) else None for v in row] for row in x]
        return [{"value": v[0] if x.shape[1] == 1 else v} for v in values]
    if card.task is Task.multiclass:
        preds = []
        for logits in x:
            with np.errstate(invalid="ignore"):
                e = np.exp(logits - logits.max())  # -inf: 0; NaN, inf - inf: NaN
            if logits.max() == np.inf:  # the limit: the +inf logits share the probability
                e = (logits == np.inf).astype(np.float64)
            p = e / e.sum()
            if np.isnan(p).any():
                preds.append({"label": None, "probability": None, "top_k": []})
                continue
            order = sorted(range(len(logits)), key=lambda i: -logits[i])  # sorted() is stable
            top = [{"label": card.labels[i], "probability": float(p[i])} for i in order[:top_k]]
            preds.append({"label": card.labels[order[0]], "probability": float(p[order[0]]), "top_k": top})
        return preds
    e = np.exp(-np.abs(x))
    probs = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if card.task is Task.binary:
        negative, positive = card.labels
        return [{"label": None, "probability": None} if np.isnan(p) else
                {"label": positive if p >= card.thresholds[0] else negative, "probability": float(p)}
                for p in probs[:, 0]]
    preds = []
    for p in probs:
        if np.isnan(p).any():
            preds.append({"labels": None, "probabilities": {a: None if np.isnan(q) else float(q)
                                                            for a, q in zip(card.labels, p)}})
        else:
            preds.append({"labels": [a for a, q, t in zip(card.labels, p, card.thresholds) if q >= t],
                          "probabilities": {a: float(q) for a, q in zip(card.labels, p)}})
    return preds


def transposed(card, rows: list[dict]) -> dict:
    return helpers.as_columns(card.task.value, rows, card.labels)


def columns_text(card, x: np.ndarray, top_k: int) -> bytes:
    """The columns answer as the predict codec writes it."""
    return orjson.dumps(tasks.postprocess(card, x, top_k, columns=True), option=orjson.OPT_SERIALIZE_NUMPY)


def spec(task: str, n: int) -> helpers.Spec:
    # Every other label holds what JSON escapes, and % signs: each label's text is written as it is.
    labels = [f"c{i}" if i % 2 == 0 else f'c{i} %s%% "q\\" é' for i in range(2 if task == "binary" else n)]
    thresholds = {"binary": [0.5], "multilabel": [0.2 + 0.6 * i / n for i in range(n)]}.get(task)
    return helpers.Spec(f"diff-{task}-{n}", task, [[1.0] * n], [0.0] * n, labels, thresholds=thresholds)


CARDS = {(task, n): helpers.make_card(spec(task, n), "0" * 64)
         for task, sizes in [("binary", [1]), ("multiclass", [2, 3, 10, 20, 40]), ("multilabel", [1, 3, 10]),
                             ("regression", [1, 3])] for n in sizes}


def outputs(rng: np.random.Generator, rows: int, n: int, dtype) -> np.ndarray:
    """Realistic logits with ties, +-inf, NaN and +-1000 sprinkled in."""
    x = rng.normal(0, rng.choice([0.5, 3.0, 30.0]), (rows, n))
    odd = rng.random((rows, n)) < 0.15
    x[odd] = rng.choice(SPECIAL, odd.sum())
    ties = rng.random(rows) < 0.2
    if n > 1:
        x[ties, -1] = x[ties, 0]
    if rng.random() < 0.2:
        x = np.round(x)  # many ties
    return x.astype(dtype)


def check(card, x: np.ndarray, top_k: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # non-finite outputs are answered, never warned about
        answer = tasks.postprocess(card, x, top_k)
    want = reference(card, x, top_k)
    assert b"[" + answer.json() + b"]" == orjson.dumps(want)  # byte for byte what orjson writes
    texts = answer.rows()
    got = [orjson.loads(text) for text in texts]
    assert got == want and len(answer) == len(x)
    if card.task is not Task.regression:  # V2 and TF Serving decide as /predict answers
        found = tasks.decided(card, x)[1]
        assert found == [row.get("label", row.get("labels")) for row in want]
    assert _types(got) == _types(want)
    for i in range(len(x)):  # one row alone answers what it answers inside the batch
        assert tasks.postprocess(card, x[i:i + 1], top_k).rows() == [texts[i]]
    n = len(x)  # requests' slices of a batch (the batcher's `take`), several of one answer
    for a, b in [(0, n // 2), (n // 2, n), (0, n), (n // 3, n // 3 + 1), (n - 1, n), (n, n), (1, 1)]:
        assert take(answer, a, b) == tasks.postprocess(card, x[a:b], top_k).rows(), (a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cols = tasks.postprocess(card, x, top_k, columns=True)
    assert orjson.dumps(cols, option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(transposed(card, want))
    for a, b in [(0, len(x) // 2), (len(x) // 2, len(x))]:  # a request's slice of a batch (the batcher's `take`)
        assert orjson.dumps(take(cols, a, b), option=orjson.OPT_SERIALIZE_NUMPY) == columns_text(card, x[a:b], top_k)


def _types(obj):
    if isinstance(obj, dict):
        return {k: _types(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_types(v) for v in obj]
    return type(obj)


@pytest.mark.parametrize("key", sorted(CARDS), ids=lambda k: f"{k[0]}-{k[1]}")
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_postprocess_equals_the_reference(key, rows, dtype):
    rng = np.random.default_rng([rows, key[1], len(key[0]), np.dtype(dtype).itemsize])
    for trial in range(20 if rows < 100 else 3):
        x = outputs(rng, rows, key[1], dtype)
        for top_k in ([0, 1, 2, 3, key[1], key[1] + 5] if key[0] == "multiclass" else [3]):
            check(CARDS[key], x, top_k)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(CARDS)), data=st.data())
def test_postprocess_equals_the_reference_hypothesis(key, data):
    n = key[1]
    rows = data.draw(st.sampled_from(ROW_COUNTS[:4]))
    values = st.one_of(st.floats(width=32), st.sampled_from(SPECIAL), st.floats(-5, 5, width=32))
    x = np.array(data.draw(st.lists(st.lists(values, min_size=n, max_size=n), min_size=rows, max_size=rows)),
                 dtype=np.float32)
    check(CARDS[key], x, data.draw(st.integers(0, n + 2)))


def test_float32_outputs_give_the_float64_answers():
    rng = np.random.default_rng(3)
    for key, c in CARDS.items():
        x = outputs(rng, 40, key[1], np.float32)
        assert tasks.postprocess(c, x).text == tasks.postprocess(c, x.astype(np.float64)).text


def test_outputs_in_any_memory_order_give_the_same_answers():
    rng = np.random.default_rng(4)
    for key, c in CARDS.items():
        x = outputs(rng, 40, key[1], np.float64)
        for top_k in (0, 3):
            assert tasks.postprocess(c, np.asfortranarray(x), top_k).text == tasks.postprocess(c, x, top_k).text
            assert columns_text(c, np.asfortranarray(x), top_k) == columns_text(c, x, top_k)


def test_integer_outputs_are_taken_as_floats():
    assert answers(CARDS["regression", 1], np.array([[2]])) == [{"value": 2.0}]
    assert type(answers(CARDS["regression", 3], np.array([[2, 3, 4]]))[0]["value"][0]) is float


def test_no_rows():
    for card in CARDS.values():
        assert answers(card, np.zeros((0, card.output.shape[1]), np.float32)) == []
        for top_k in (0, 3):
            assert orjson.loads(columns_text(card, np.zeros((0, card.output.shape[1]), np.float32), top_k)) == \
                transposed(card, [])


@pytest.mark.parametrize("key", [k for k in sorted(CARDS) if k[0] != "regression"], ids=lambda k: f"{k[0]}-{k[1]}")
def test_named_outputs_decide_as_the_answers_do(key):
    """`outputs` and `postprocess` share the decision: the same labels, and the same probabilities in FP32."""
    c = CARDS[key]
    rng = np.random.default_rng(key[1])
    for rows in ROW_COUNTS:
        x = outputs(rng, rows, key[1], np.float32)
        out = named.outputs(c, x)
        preds = answers(c, x, key[1])
        want = [p["label"] if "label" in p else p["labels"] for p in preds]
        assert out["labels"][:, 0].tolist() == ["" if w is None else ",".join(w) if isinstance(w, list) else w
                                                for w in want]
        assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == x.shape
        for p, row in zip(preds, out["probabilities"].tolist()):
            if key[0] == "multilabel" and p["labels"] is not None:
                assert list(p["probabilities"].values()) == pytest.approx(row, rel=1e-6, abs=1e-30)
            elif key[0] != "multilabel" and p["probability"] is not None:
                best = row[0] if key[0] == "binary" else row[c.labels.index(p["label"])]
                assert p["probability"] == pytest.approx(best, rel=1e-6, abs=1e-30)


@pytest.mark.parametrize("spec, x, expected", [
    (helpers.BINARY, [[1.0000001], [-1e-8]], [{"label": "yes", "probability": 1.0}, {"label": "no", "probability": 0.0}]),
    (helpers.MULTICLASS_V1, [[1.0000001192092896, 0.0, 0.0]], [{"label": "cat", "probability": 1.0, "top_k": [
        {"label": "cat", "probability": 1.0}, {"label": "dog", "probability": 0.0}, {"label": "emu", "probability": 0.0}]}]),
])
def test_probabilities_a_graph_gives_are_answered_at_most_1(spec, x, expected):
    # A random forest's float32 probabilities summed to 1.0000001: served as they were.
    from service.card import OutputKind

    given = card(spec).model_copy(update={"output_kind": OutputKind.probabilities})
    assert answers(given, np.array(x, np.float32)) == expected
    probs, _ = tasks.decided(given, np.array(x, np.float32))  # what V2 and TF Serving answer
    assert probs.max() <= 1.0 and probs.min() >= 0.0
