"""Honest quality: two baselines on the network's split, warnings for small splits, and a
summary that shows the network at the thresholds served beside 0.5."""

import numpy as np
import pytest

from service.card import CARD_FILE, Splits, Task, read_card
from tests.service.helpers import REPO_ROOT
from training.baselines import linear_baseline, trees_baseline
from training.datasets import Split
from training.report import quality_warnings, summary


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    n = len(x)
    a, b = int(n * 0.6), int(n * 0.8)
    return Split(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


def _table(task: Task, rows: int = 300):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    if task is Task.binary:
        return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64), ["no", "yes"]  # an interaction
    if task is Task.multiclass:
        return x, np.digitize(x[:, 0], [-0.5, 0.5]).astype(np.int64), ["lo", "mid", "hi"]
    if task is Task.multilabel:
        return x, (x[:, :2] > 0).astype(np.float32), ["a", "b"]
    return x, (x[:, :1] ** 2 + 0.1 * x[:, 1:2]).astype(np.float32), ["y"]


@pytest.mark.parametrize("task", list(Task))
def test_both_baselines_fit_every_task_on_the_same_split(task):
    x, y, labels = _table(task)
    s = _split(x, y)
    linear = linear_baseline(task, s, labels, seed=7)
    trees = trees_baseline(task, s, labels, seed=7)
    assert "gradient-boosted trees" in trees.name and "HistGradientBoosting" in trees.name
    key = {Task.multilabel: "macro_f1", Task.regression: "r2"}.get(task, "accuracy")
    assert getattr(trees.metrics, key) is not None
    if task in (Task.binary, Task.regression):  # a shape a linear model cannot draw
        assert getattr(trees.metrics, key) > getattr(linear.metrics, key) + 0.2
    if task is Task.multilabel:
        assert set(trees.metrics.per_label_f1) == {"a", "b"}


def test_the_trees_baseline_splits_category_columns_as_categories():
    # Category codes whose order means nothing: classes 0 and 3 against 1 and 2.
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, 400)
    x = np.column_stack([codes, rng.normal(size=400)]).astype(np.float32)
    y = np.isin(codes, [0, 3]).astype(np.int64)
    trees = trees_baseline(Task.binary, _split(x, y), ["no", "yes"], seed=7,
                           categorical=[True, False])
    assert trees.metrics.accuracy == 1.0


@pytest.mark.parametrize("test,validation,expected", [
    (30, 50, []), (29, 50, ["test split has only 29 rows"]),
    (30, 49, ["validation split has only 49 rows"]),
    (12, 12, ["test split has only 12 rows", "validation split has only 12 rows"]),
])
def test_small_splits_are_warned_about(test, validation, expected):
    card = read_card(REPO_ROOT / "models/digits/1" / CARD_FILE)
    card = card.model_copy(update={"splits": Splits(train=100, validation=validation, test=test)})
    found = quality_warnings(card)
    assert len(found) == len(expected)
    assert all(e in f for e, f in zip(expected, found))


def test_a_network_below_the_linear_baseline_is_warned_about():
    card = read_card(REPO_ROOT / "models/digits/1" / CARD_FILE)
    worse = card.model_copy(update={"metrics": card.metrics.model_copy(update={"accuracy": 0.6472})})
    found = quality_warnings(worse)
    assert len(found) == 1 and found[0].startswith(
        f"the network's test accuracy 0.6472 is below the linear baseline's {card.baseline.metrics.accuracy:.4f}: ")
    assert "**Warning:** the network's test accuracy 0.6472" in summary(worse, [])


def test_the_summary_of_a_card_written_before_the_trees_baseline():
    card = read_card(REPO_ROOT / "models/digit-traits/1" / CARD_FILE)
    text = summary(card, [])
    assert "| metric | network at served thresholds | network at 0.5 | linear baseline |" in text
    assert "trees baseline" not in text and "**Warning:**" not in text
    assert "Chosen for f1 on the validation split." in text


def write_wine_labels(path):
    """The issue's case: a multi-label table from scikit-learn's wine set (178 rows, so 36
    validation rows), each label hidden from the features it is defined by."""
    import pandas as pd
    from sklearn.datasets import load_wine
    wine = load_wine(as_frame=True).frame
    table = wine.drop(columns=["alcohol", "color_intensity", "target"])
    table = pd.concat([table, pd.DataFrame({
        "strong": (wine["alcohol"] > wine["alcohol"].median()).astype(int),
        "dark": (wine["color_intensity"] > wine["color_intensity"].median()).astype(int),
        "cultivar_1": (wine["target"] == 0).astype(int)})], axis=1)
    table.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_a_small_wine_table_serves_half_and_says_why(tmp_path, capsys):
    from training.__main__ import main
    csv = write_wine_labels(tmp_path / "wine.csv")
    assert main(["--csv", str(csv), "--targets", "strong,dark,cultivar_1",
                 "--out", str(tmp_path / "models"), "--quiet"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("model"))
    assert head.split() == ["model", "version", "task", "metric", "network", "at", "0.5",
                            "linear", "trees", "parity", "onnx", "size"]
    assert "warning: wine: the validation split has only 36 rows (under 50)" in out
    folder = tmp_path / "models" / "wine" / "1"
    card = read_card(folder / CARD_FILE)
    assert card.splits.validation == 36 and card.trees_baseline is not None
    # Thresholds tuned on 36 rows do not survive the held-out check; the card says why.
    assert card.thresholds == [0.5, 0.5, 0.5] and card.metrics == card.metrics_at_half
    assert "0.5 kept" in card.threshold_checks[0].reason and "2-fold" in card.threshold_rule
    assert any(c.tuned != 0.5 for c in card.threshold_checks)
    for check in card.threshold_checks:
        if check.tuned != 0.5:
            assert f"wine: threshold {check.label}: tuned {check.tuned:.2f}" in out
    report = (folder / "report" / "report.md").read_text()
    assert "**Warning:** the validation split has only 36 rows" in report
    assert "| label | tuned | served | why |" in report
    assert "trees baseline" in report and "network at 0.5" in report
