"""The model card schema: what it accepts, what it refuses, and its round trip."""

import re

import pytest
from pydantic import ValidationError

from service.card import ModelCard, OutputKind, read_card, write_card
from tests.service.helpers import REPO_ROOT, Spec, make_card

SHA = "0" * 64
BINARY = Spec("bin", "binary", [[1.0], [2.0]], [0.0], ["no", "yes"], thresholds=[0.5])
MULTILABEL = Spec("ml", "multilabel", [[1.0, 0.0, 1.0]], [0.0, 0.0, 0.0], ["a", "b", "c"],
                  thresholds=[0.5, 0.4, 0.6])
MULTICLASS = Spec("mc", "multiclass", [[1.0, 0.0, 1.0]], [0.0, 0.0, 0.0], ["a", "b", "c"])
REGRESSION = Spec("reg", "regression", [[1.0, 2.0]], [0.0, 0.0], ["y1", "y2"])


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


@pytest.mark.parametrize("spec,labels", [(MULTICLASS, ["a", "a", "c"]), (BINARY, ["same", "same"]),
                                         (MULTILABEL, ["a", "b", "a"]), (REGRESSION, ["y", "y"])])
def test_labels_are_unique_for_every_task(spec, labels):
    # Answers name a class by its label and key probabilities and values by it: a repeat is ambiguous.
    with pytest.raises(ValidationError, match=re.escape(f"a {spec.task} model's labels must be unique, got {labels}")):
        ModelCard.model_validate(_data(spec, labels=labels))


def test_a_long_label_list_is_cut_in_the_message():
    labels = [f"class-{i}" for i in range(400)]
    data = _data(MULTICLASS, labels=labels + ["class-0"], output={"name": "logits", "shape": [-1, 401]}, golden=[])
    with pytest.raises(ValidationError) as info:
        ModelCard.model_validate(data)
    message = info.value.errors()[0]["msg"]
    assert message.endswith("got ['class-0', 'class-1', 'class-2', 'class-3', 'class-4', 'class-5', 'class-6', "
                            "'class-7', 'class-8', 'class-9', ... (391 more)]") and len(message) < 300, message


def test_multilabel_labels_cannot_hold_the_separator_of_the_v2_labels_output():
    with pytest.raises(ValidationError, match="a multilabel model's labels cannot contain ','"):
        ModelCard.model_validate(_data(MULTILABEL, labels=["a", "b,c", "d"]))
    assert ModelCard.model_validate(_data(MULTICLASS, labels=["a", "b,c", "d"])).labels[1] == "b,c"  # one label a row


@pytest.mark.parametrize("spec", [MULTICLASS, REGRESSION])
def test_thresholds_are_only_for_binary_and_multilabel(spec):
    with pytest.raises(ValidationError, match=f"thresholds apply to binary and multilabel models, not {spec.task}"):
        ModelCard.model_validate(_data(spec, thresholds=[0.5] * spec.n_outputs))


@pytest.mark.parametrize("version", [99, 2, 0])
def test_a_schema_version_this_code_does_not_know_is_refused(version):
    with pytest.raises(ValidationError, match="schema_version"):
        ModelCard.model_validate(_data(BINARY, schema_version=version))
    assert ModelCard.model_validate(_data(BINARY, schema_version=1)).schema_version == 1


def test_the_version_pattern_is_exactly_1_to_the_largest_version():
    from service.card import VERSION_MAX, VERSION_RE  # shared by the server's scan and the writers

    assert VERSION_RE.fullmatch(str(VERSION_MAX)) and VERSION_RE.fullmatch("1")
    assert not any(VERSION_RE.fullmatch(v) for v in (str(VERSION_MAX + 1), "0", "01", "-1", "+1", " 1"))


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
