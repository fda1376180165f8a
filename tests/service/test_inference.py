"""The named outputs (`named.outputs`): raw, probabilities and labels, per task, without HTTP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service import named, runtime, tasks
from service.card import read_card
from service.errors import BadRequest
from tests.service import helpers


def card(spec):
    return helpers.make_card(spec, "0" * 64)


@pytest.mark.parametrize("spec, names", [
    (helpers.BINARY, ["logits", "probabilities", "labels"]),
    (helpers.MULTICLASS_V1, ["logits", "probabilities", "labels"]),
    (helpers.MULTILABEL, ["logits", "probabilities", "labels"]),
    (helpers.REGRESSION, ["logits"]),
    (helpers.HALF_PLUS_TWO, ["values"]),
])
def test_offered_outputs(spec, names):
    assert [o.name for o in named.offered(card(spec))] == names


def test_derived_name_never_shadows_the_raw_output():
    spec = helpers.Spec("p", "binary", [[1.0]], [0.0], ["n", "y"], thresholds=[0.5], output_name="probabilities")
    assert [o.name for o in named.offered(card(spec))] == ["probabilities", "labels"]


def test_multiclass_outputs():
    raw = np.array([[0.0, 2.0, 1.0], [1000.0, 0.0, -1000.0], [np.nan, 0.0, 0.0]], np.float32)
    out = named.outputs(card(helpers.MULTICLASS_V1), raw)
    assert list(out) == ["logits", "probabilities", "labels"]
    assert out["logits"] is raw
    assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (3, 3)
    np.testing.assert_allclose(out["probabilities"][:2], tasks.softmax(raw[:2].astype(np.float64)), rtol=1e-6)
    assert out["labels"].shape == (3, 1) and out["labels"][:, 0].tolist() == ["dog", "cat", ""]


def test_binary_labels_follow_the_threshold():
    out = named.outputs(card(helpers.BINARY), np.array([[0.0], [-0.1]], np.float32), ["labels", "probabilities"])
    assert list(out) == ["labels", "probabilities"]
    assert out["labels"][:, 0].tolist() == ["yes", "no"]
    assert out["probabilities"][:, 0].tolist() == pytest.approx([0.5, 1 / (1 + math.exp(0.1))])


def test_multilabel_labels_are_joined_with_commas():
    raw = np.array([[1.0, 1.0, 0.0], [-9.0, -9.0, -9.0], [9.0, 9.0, 9.0]], np.float32)
    out = named.outputs(card(helpers.MULTILABEL), raw, ["labels"])
    assert out["labels"][:, 0].tolist() == ["even,prime", "", "even,prime,closed_loop"]


def test_unknown_output_is_400():
    with pytest.raises(BadRequest, match=r"unknown output\(s\) \['probabilities'\]; the model offers \['logits'\]"):
        named.outputs(card(helpers.REGRESSION), np.zeros((1, 1), np.float32), ["probabilities"])


def test_run_answers_as_the_session_does(tmp_path):
    folder = helpers.write_model(tmp_path, helpers.MULTICLASS_V1)
    model = runtime.load(folder / "model.onnx", read_card(folder / "card.json"), 1)
    x = np.random.default_rng(0).normal(size=(5, model.card.n_features)).astype(np.float32)
    expected = model.session.run([model.output.name], {model.input.name: x})[0]
    np.testing.assert_array_equal(model.run(x), expected)


@pytest.mark.parametrize("spec", [helpers.BINARY, helpers.MULTICLASS_V1, helpers.MULTILABEL])
@pytest.mark.parametrize("n_rows", [1, 2, 3])
def test_few_rows_outputs_equal_their_rows_in_a_large_batch(spec, n_rows):
    # One path for every size: a few rows get the very FP32 probabilities and labels they get among many.
    c = card(spec)
    rng = np.random.default_rng(n_rows)
    specials = [0.0, -0.0, 1000.0, -1000.0, np.inf, -np.inf, np.nan, 1e-30]
    for trial in range(50):
        few = rng.normal(scale=rng.choice([0.1, 3.0, 30.0]), size=(n_rows, c.n_outputs)).astype(np.float32)
        if trial % 3 == 0:  # ties and non-finite values
            few.flat[rng.integers(few.size)] = rng.choice(specials)
            few.flat[rng.integers(few.size)] = few.flat[0]
        many = np.vstack([rng.normal(size=(100, c.n_outputs)).astype(np.float32), few])
        alone, among = named.outputs(c, few), named.outputs(c, many)
        assert list(alone) == list(among)
        np.testing.assert_array_equal(alone["probabilities"], among["probabilities"][100:])
        assert alone["probabilities"].dtype == np.float32
        assert alone["labels"].tolist() == among["labels"][100:].tolist(), few
