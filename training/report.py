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
    ours = [card.metrics.per_label_f1[k] for k in labels]
    base = [(card.baseline.metrics.per_label_f1 or {}).get(k, 0.0) for k in labels]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(2 + 1.2 * len(labels), 3.6))
    ax.bar(x - 0.2, ours, 0.4, label="network")
    ax.bar(x + 0.2, base, 0.4, label="baseline")
    ax.set_xticks(x, labels)
    ax.set_ylim(min(0.5, min(ours + base) - 0.05), 1.0)
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


def _metric_rows(m: Metrics) -> dict[str, float]:
    return {k: v for k, v in m.model_dump(exclude={"per_label_f1"}).items() if v is not None}


def summary(card: ModelCard, figures: list[str]) -> str:
    """The Markdown summary page: metrics beside the baseline, thresholds, parity, figures."""
    ours, base = _metric_rows(card.metrics), _metric_rows(card.baseline.metrics)
    half = _metric_rows(card.metrics_at_half) if card.metrics_at_half else {}
    head = "| metric | network | " + ("network at 0.5 | " if half else "") + "baseline |"
    lines = [f"# {card.name} version {card.version}", "", card.description, "",
             f"Task: {card.task.value}. Trained with `{card.training.command}` "
             f"({card.training.epochs_run} epochs run). Splits: {card.splits.train} train, "
             f"{card.splits.validation} validation, {card.splits.test} test rows.", "",
             "## Test metrics", "", head,
             "|---|---|" + ("---|" if half else "") + "---|"]
    for key, value in ours.items():
        middle = f" {half[key]:.4f} |" if half else ""
        lines.append(f"| {key} | {value:.4f} |{middle} {base.get(key, float('nan')):.4f} |")
    lines += ["", f"Baseline: {card.baseline.name}."]
    if card.metrics.per_label_f1:
        lines += ["", "| label | F1 | baseline F1 |", "|---|---|---|"]
        base_f1 = card.baseline.metrics.per_label_f1 or {}
        lines += [f"| {k} | {v:.4f} | {base_f1.get(k, float('nan')):.4f} |"
                  for k, v in card.metrics.per_label_f1.items()]
    if card.thresholds:
        how = (f"chosen for {card.training.threshold_metric} on the validation split"
               if card.training.threshold_metric else "fixed")
        named = card.labels[1:] if card.task is Task.binary else card.labels
        lines += ["", f"Thresholds ({how}): " +
                  ", ".join(f"{k} {t:.2f}" for k, t in zip(named, card.thresholds)) + "."]
    lines += ["", f"ONNX parity: max |onnxruntime - Keras| = {card.parity.max_abs_diff:.2e} on "
              f"{card.parity.rows} test rows at batch sizes {card.parity.batch_sizes} "
              f"({'within' if card.parity.passed else 'OUTSIDE'} {card.parity.tolerance:.1e}).", ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
