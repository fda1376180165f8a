"""A report a person can look at, written next to the card: PNG figures and a summary page."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from service.card import Metrics, ModelCard, Task  # noqa: E402

REPORT_DIR = "report"
SUMMARY = "report.md"


def write_report(folder: Path, card: ModelCard, history: dict[str, list[float]],
                 y_test: np.ndarray, predicted: np.ndarray) -> list[str]:
    """Write the figures and report.md under folder/report; returns the file names written."""
    out = folder / REPORT_DIR
    out.mkdir(exist_ok=True)
    figures = {"learning_curves.png": _learning_curves(history, card.task)}
    if card.task in (Task.binary, Task.multiclass):
        figures["confusion_matrix.png"] = _confusion(y_test, predicted, card.labels)
    elif card.task is Task.multilabel:
        figures["per_label_f1.png"] = _per_label_f1(card)
    else:
        figures["predicted_vs_actual.png"] = _predicted_vs_actual(y_test, predicted, card.labels)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
    (out / SUMMARY).write_text(summary(card, list(figures)))
    return [*figures, SUMMARY]


def _learning_curves(history: dict[str, list[float]], task: Task):
    metric = next((k for k in history if not k.startswith("val_") and k != "loss"), None)
    panels = ["loss"] + ([metric] if metric else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, key in zip(axes[0], panels):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label="training")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Learning curves ({task.value})")
    return fig


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]):
    matrix = confusion_matrix(y_true.ravel(), y_pred.ravel(), labels=range(len(labels)))
    size = 2.5 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45 if max(map(len, labels)) > 3 else 0)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    threshold = matrix.max() / 2
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > threshold else "black", fontsize=9)
    ax.set_title("Confusion matrix (test split)")
    return fig


def _per_label_f1(card: ModelCard):
    labels = card.labels
    bars = [("network", card.metrics), ("linear baseline", card.baseline.metrics)]
    if card.trees_baseline:
        bars.append(("trees baseline", card.trees_baseline.metrics))
    heights = [[(m.per_label_f1 or {}).get(k, 0.0) for k in labels] for _, m in bars]
    x, width = np.arange(len(labels)), 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(2 + 1.2 * len(labels), 3.6))
    for i, ((name, _), h) in enumerate(zip(bars, heights)):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, h, width, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(min(0.5, min(min(h) for h in heights) - 0.05), 1.0)
    ax.set_ylabel("F1 (test split)")
    ax.legend(loc="lower right")
    ax.set_title("F1 per label")
    return fig


def _predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]):
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 4), squeeze=False)
    for j, (ax, name) in enumerate(zip(axes[0], labels)):
        t, p = y_true[:, j], y_pred[:, j]
        ax.scatter(t, p, s=12, alpha=0.7)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(f"actual {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title("Predicted vs actual (test split)")
    return fig


MIN_TEST_ROWS = 30
MIN_VALIDATION_ROWS = 50


def headline(card: ModelCard) -> tuple[str, list[float | None]]:
    """The one metric a summary line shows for this task: the network at the thresholds served and
    at 0.5 (None without thresholds), the linear baseline, the trees baseline (None on old cards)."""
    key = {Task.multilabel: "macro_f1", Task.regression: "r2"}.get(card.task, "accuracy")
    values = [card.metrics, card.metrics_at_half, card.baseline.metrics,
              card.trees_baseline and card.trees_baseline.metrics]
    return key, [getattr(m, key) if m else None for m in values]


def quality_warnings(card: ModelCard) -> list[str]:
    """Warnings for a network that does worse on the test split than the linear baseline, and for
    splits too small to trust: the test metrics, or what the validation rows chose."""
    found = []
    key, (network, _, linear, _) = headline(card)
    if network is not None and linear is not None and network < linear:
        found.append(f"the network's test {key} {network:.4f} is below the linear baseline's {linear:.4f}: "
                     "more epochs, other --hidden sizes or another --l2 may do better; this version is "
                     "published all the same, and a server of its model root serves it as the newest")
    if card.splits.test < MIN_TEST_ROWS:
        found.append(f"the test split has only {card.splits.test} rows (under {MIN_TEST_ROWS}): "
                     f"one row moves accuracy by {1 / card.splits.test:.3f}, so the test metrics "
                     "and the comparison with the baselines are rough")
    if card.splits.validation < MIN_VALIDATION_ROWS:
        found.append(f"the validation split has only {card.splits.validation} rows (under "
                     f"{MIN_VALIDATION_ROWS}): early stopping and any tuned thresholds rest on "
                     "few rows")
    return found


def threshold_notes(card: ModelCard) -> list[str]:
    """One line per tuned threshold that is not served, with the reason."""
    return [f"{c.label}: tuned {c.tuned:.2f} on the validation split, 0.5 served: {c.reason}"
            for c in card.threshold_checks or [] if c.served != c.tuned]


def _metric_rows(m: Metrics | None) -> dict[str, float]:
    if m is None:
        return {}
    return {k: v for k, v in m.model_dump(exclude={"per_label_f1"}).items() if v is not None}


def _columns(card: ModelCard) -> list[tuple[str, Metrics]]:
    """The metric columns: the network as served, at 0.5 when thresholds were tuned, baselines."""
    if not card.metrics_at_half:
        cols = [("network", card.metrics)]
    else:
        cols = [("network at served thresholds", card.metrics), ("network at 0.5", card.metrics_at_half)]
    cols.append(("linear baseline", card.baseline.metrics))
    if card.trees_baseline:
        cols.append(("trees baseline", card.trees_baseline.metrics))
    return cols


def _table(first: str, rows: dict[str, list[float | None]], heads: list[str]) -> list[str]:
    lines = [f"| {first} | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for key, values in rows.items():
        cells = ["-" if v is None else f"{v:.4f}" for v in values]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def _metric_tables(card: ModelCard) -> list[str]:
    cols = _columns(card)
    heads = [h for h, _ in cols]
    rows = {k: [_metric_rows(m).get(k) for _, m in cols] for k in _metric_rows(card.metrics)}
    lines = ["## Test metrics", "", *_table("metric", rows, heads), ""]
    lines += [f"Baselines, fitted on the same training split: {card.baseline.name}"
              + (f"; {card.trees_baseline.name}" if card.trees_baseline else "") + "."]
    if card.metrics.per_label_f1:
        per_label = {k: [(m.per_label_f1 or {}).get(k) for _, m in cols]
                     for k in card.metrics.per_label_f1}
        lines += ["", *_table("label (F1)", per_label, heads)]
    return lines


def _threshold_lines(card: ModelCard) -> list[str]:
    named = card.labels[1:] if card.task is Task.binary else card.labels
    served = ", ".join(f"{k}: {t:.2f}" for k, t in zip(named, card.thresholds))
    if not card.training.threshold_metric:
        return ["", f"Thresholds (fixed): {served}."]
    lines = ["", "## Thresholds", "", f"Served: {served}.", ""]
    if not card.threshold_checks:  # cards written before the check
        return lines + [f"Chosen for {card.training.threshold_metric} on the validation split."]
    lines += [card.threshold_rule, "", "| label | tuned | served | why |", "|---|---|---|---|"]
    lines += [f"| {c.label} | {c.tuned:.2f} | {c.served:.2f} | {c.reason} |"
              for c in card.threshold_checks]
    return lines


def summary(card: ModelCard, figures: list[str]) -> str:
    """The Markdown summary page: warnings, metrics beside the baselines, thresholds, parity."""
    lines = [f"# {card.name} version {card.version}", "", card.description, "",
             f"Task: {card.task.value}. Trained with `{card.training.command}` "
             f"({card.training.epochs_run} epochs run). Splits: {card.splits.train} train, "
             f"{card.splits.validation} validation, {card.splits.test} test rows.", ""]
    warnings = quality_warnings(card)
    lines += [f"**Warning:** {w}." for w in warnings]
    lines += [""] if warnings else []
    lines += _metric_tables(card)
    if card.thresholds:
        lines += _threshold_lines(card)
    rows = "test rows and probe rows (every value missing; every category unseen)" \
        if card.columns else "test rows"
    lines += ["", f"ONNX parity: max |onnxruntime - Keras| = {card.parity.max_abs_diff:.2e} on "
              f"{card.parity.rows} {rows} at batch sizes {card.parity.batch_sizes} "
              f"({'within' if card.parity.passed else 'OUTSIDE'} {card.parity.tolerance:.1e}).", ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
