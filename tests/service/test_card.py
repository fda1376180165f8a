"""The model card schema: what it accepts, what it refuses, and its round trip."""

import pytest
from pydantic import ValidationError

from service.card import ModelCard, read_card, write_card
from service.card import OutputKind
from tests.service.helpers import REPO_ROOT, Spec, make_card

SHA = "0" * 64
BINARY = Spec("bin", "binary", [[1.0], [2.0]], [0.0], ["no", "yes"], thresholds=[0.5])
MULTILABEL = Spec("ml", "multilabel", [[1.0, 0.0, 1.0]], [0.0, 0.0, 0.0], ["a", "b", "c"],
                  thresholds=[0.5, 0.4, 0.6])


def _data(spec: Spec, **changes) -> dict:
    return make_card(spec, SHA).model_dump(mode="json") | changes


def test_round_trip(tmp_path):
    card = make_card(MULTILABEL, SHA)
    write_card(card, tmp_path / "card.json")
    assert read_card(tmp_path / "card.json") == card
    assert "golden" not in card.public() and card.public()["thresholds"] == [0.5, 0.4, 0.6]


@pytest.mark.parametrize("changes,message", [
    ({"thresholds": None}, "needs 1 threshold"),
    ({"thresholds": [0.5, 0.5]}, "needs 1 threshold"),
    ({"thresholds": [1.0]}, "strictly between 0 and 1"),
    ({"labels": ["only-one"]}, "needs 2 labels"),
    ({"output": {"name": "logits", "shape": [-1, 2]}}, "one output unit"),
    ({"input": {"name": "x", "shape": [2]}}, "input shape must be"),
    ({"feature_names": ["a"]}, "1 feature names for 2 input features"),
    ({"feature_names": ["a", "a"]}, "unique"),
    ({"name": "../etc"}, "pattern"),
    ({"version": 0}, "greater than or equal to 1"),
    ({"sha256": "xyz"}, "pattern"),
    ({"task": "ranking"}, "binary"),
    ({"golden": [{"input": [1.0], "output": [0.0]}]}, "golden example 0"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
    ({"output_kind": "values"}, "output_kind 'values' does not fit a binary model"),
    ({"output_kind": "scores"}, "'logits', 'probabilities' or 'values'"),
])
def test_invalid_cards_are_refused_with_a_reason(changes, message):
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(_data(BINARY, **changes))


def test_multilabel_labels_are_unique_other_tasks_may_repeat_one():
    with pytest.raises(ValidationError, match=r"a multilabel model's labels must be unique, got \['a', 'b', 'a'\]"):
        ModelCard.model_validate(_data(MULTILABEL, labels=["a", "b", "a"]))
    assert ModelCard.model_validate(_data(BINARY, labels=["x", "x"])).labels == ["x", "x"]  # as before


def test_multilabel_needs_one_threshold_per_label():
    with pytest.raises(ValidationError, match="needs 3 threshold"):
        ModelCard.model_validate(_data(MULTILABEL, thresholds=[0.5]))


def test_cards_written_before_output_kind_hold_logits_or_values():
    cards = sorted((REPO_ROOT / "models").glob("*/*/card.json"))
    assert len(cards) == 4 and not any("output_kind" in c.read_text() for c in cards)
    kinds = {c.parent.parent.name: read_card(c).output_kind for c in cards}
    assert kinds == {"digits": OutputKind.logits, "digits-binary": OutputKind.logits,
                     "digit-traits": OutputKind.logits, "diabetes": OutputKind.values}


def test_an_imported_card_needs_no_training_fields():
    data = _data(BINARY, output_kind="probabilities")
    for key in ("name", "version", "training", "library_versions", "splits", "metrics", "baseline", "parity",
                "golden", "created_at"):
        data.pop(key)
    card = ModelCard.model_validate(data)
    assert card.output_kind is OutputKind.probabilities and card.training is None and card.golden == []


def _check(label: str, tuned: float, served: float) -> dict:
    return {"label": label, "tuned": tuned, "served": served, "wins": 40, "losses": 5,
            "trials": 50, "mean_gain": 0.01, "reason": "test"}


def test_threshold_checks_and_the_trees_baseline_are_optional_and_round_trip(tmp_path):
    data = _data(MULTILABEL, threshold_rule="the rule",
                 threshold_checks=[_check("a", 0.5, 0.5), _check("b", 0.4, 0.4),
                                   _check("c", 0.7, 0.6)],
                 trees_baseline={"name": "trees", "metrics": {"macro_f1": 0.9}})
    card = ModelCard.model_validate(data)
    write_card(card, tmp_path / "card.json")
    assert read_card(tmp_path / "card.json") == card
    assert card.threshold_checks[1].served == card.thresholds[1]


def test_threshold_checks_must_give_the_served_thresholds():
    data = _data(MULTILABEL, threshold_checks=[_check("a", 0.5, 0.5), _check("b", 0.3, 0.5),
                                               _check("c", 0.6, 0.6)])
    with pytest.raises(ValidationError, match="threshold_checks must give the served thresholds"):
        ModelCard.model_validate(data)


def test_cards_written_before_the_trees_baseline_and_the_threshold_check_still_load():
    for path in sorted((REPO_ROOT / "models").glob("*/*/card.json")):
        assert "trees_baseline" not in path.read_text()
        card = read_card(path)
        assert card.trees_baseline is None and card.threshold_checks is None
        assert card.baseline is not None
