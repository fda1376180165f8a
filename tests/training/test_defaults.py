"""The committed default models: quality bars, and retraining reproduces them (no drift)."""

import shlex

import pytest

from service.card import CARD_FILE, MODEL_FILE, read_card, sha256_file
from tests.service.helpers import REPO_ROOT
from training.__main__ import main
from training.datasets import BUILTIN

MODELS = REPO_ROOT / "models"
# Bars a little below what was measured (see README); diabetes is held to its own baseline.
BARS = {"digits": ("accuracy", 0.97), "digits-binary": ("accuracy", 0.995),
        "digit-traits": ("macro_f1", 0.95)}
# Retraining on another machine may differ by float rounding in the last epochs.
TOLERANCE = {"accuracy": 0.01, "macro_f1": 0.01, "r2": 0.03, "mae": 2.0, "rmse": 2.0}
# Tuned thresholds come from a grid search (steps of 0.01) over validation F1; oneDNN rounds the
# last bits differently on another CPU, which moves that optimum by a step or two (0.51 -> 0.52
# seen on one machine), while a real change to training moves it much further.
THRESHOLD_TOLERANCE = 0.05


def committed():
    cards = {}
    for name in sorted(BUILTIN):
        versions = sorted((MODELS / name).iterdir(), key=lambda p: int(p.name))
        cards[name] = read_card(versions[-1] / CARD_FILE)
    return cards


def test_every_builtin_model_is_committed_with_a_matching_hash():
    for name, card in committed().items():
        folder = MODELS / name / str(card.version)
        assert card.name == name and card.training.dataset == name
        assert card.sha256 == sha256_file(folder / MODEL_FILE)
        assert card.parity.passed, f"{name}: parity {card.parity.max_abs_diff}"
        assert len(card.golden) >= 3


@pytest.mark.parametrize("name", sorted(BARS))
def test_quality_bars(name):
    key, bar = BARS[name]
    card = committed()[name]
    assert getattr(card.metrics, key) >= bar


def test_diabetes_is_no_worse_than_linear_regression():
    card = committed()["diabetes"]
    assert card.metrics.r2 >= card.baseline.metrics.r2
    assert card.baseline.name.startswith("linear regression")


def test_digit_traits_reports_per_label_f1():
    card = committed()["digit-traits"]
    assert set(card.metrics.per_label_f1) == set(card.labels)


@pytest.mark.slow
def test_retraining_reproduces_the_committed_models(tmp_path):
    """Run each card's own training command into a temporary folder and compare."""
    cards = committed()
    for name, card in cards.items():
        argv = shlex.split(card.training.command)[3:]  # drop "python -m training"
        assert main([*argv, "--out", str(tmp_path)]) == 0
        fresh = read_card(tmp_path / name / "1" / CARD_FILE)
        for field in ("task", "input", "output", "feature_names", "labels", "splits"):
            assert getattr(fresh, field) == getattr(card, field), f"{name}: {field} drifted"
        if card.thresholds is None:
            assert fresh.thresholds is None, f"{name}: thresholds appeared"
        else:
            fresh_thresholds = _comparable_thresholds(card, fresh)
            assert fresh_thresholds == pytest.approx(card.thresholds, abs=THRESHOLD_TOLERANCE), \
                f"{name}: thresholds drifted {card.thresholds} -> {fresh_thresholds}"
        assert fresh.training.model_dump(exclude={"epochs_run"}) == \
            card.training.model_dump(exclude={"epochs_run"})
        for key, tol in TOLERANCE.items():
            old, new = getattr(card.metrics, key), getattr(fresh.metrics, key)
            if old is not None:
                assert new == pytest.approx(old, abs=tol), f"{name}: {key} {old} -> {new}"
        assert fresh.parity.passed


def _comparable_thresholds(card, fresh) -> list[float]:
    """The fresh thresholds to hold against a committed card's.

    A card written before tuned thresholds were checked on held-out validation halves holds what
    tuning chose, so it is compared with what tuning chooses now; the check may serve 0.5
    instead, which only retraining the committed model would record."""
    if card.threshold_checks is None and fresh.threshold_checks is not None:
        return [c.tuned for c in fresh.threshold_checks]
    return fresh.thresholds
