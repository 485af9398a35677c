"""What a finished run leaves to judge it by: the dataset summary, learning curves, the confusion matrix and
per-class precision, recall and F1, written into the output folder and logged to MLflow."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..formats.json_file import write_json

LEARNING_CURVES = "learning_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_CSV = "confusion_matrix.csv"
PER_CLASS = "per_class_metrics.json"
REPORT_FILES = (LEARNING_CURVES, CONFUSION_PNG, CONFUSION_CSV, PER_CLASS)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (targets.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray, classes: list[str]) -> dict:
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, actual, strict=True)
    }
    present = actual > 0
    return {
        "classes": per_class,
        "macro_avg": {
            "precision": float(precision[present].mean()) if present.any() else 0.0,
            "recall": float(recall[present].mean()) if present.any() else 0.0,
            "f1": float(f1[present].mean()) if present.any() else 0.0,
        },
        "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
    }


def write_confusion_csv(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, matrix.tolist(), strict=True):
            writer.writerow([name, *row])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a compute node
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: list[dict], best_epoch: int, path: Path) -> None:
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    loss_axis.plot(epochs, [row["train_loss"] for row in history], "o-", label="training")
    loss_axis.plot(epochs, [row["valid_loss"] for row in history], "o-", label="validation")
    accuracy_axis.plot(epochs, [row["train_accuracy"] for row in history], "o-", label="training")
    accuracy_axis.plot(epochs, [row["valid_accuracy"] for row in history], "o-", label="validation (top-1)")
    for axis, title in ((loss_axis, "Loss"), (accuracy_axis, "Accuracy")):
        if best_epoch:
            axis.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_xticks(epochs)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    plt = _pyplot()
    size = min(4 + 0.45 * len(classes), 30)
    figure, axis = plt.subplots(figsize=(size, size * 0.85), dpi=100)
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    labels = [name if len(name) <= 18 else name[:17] + "…" for name in classes]
    axis.set_xticks(range(len(classes)), labels, rotation=60 if len(classes) > 6 else 0, ha="right")
    axis.set_yticks(range(len(classes)), labels)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title("Confusion matrix (validation, best epoch)")
    if len(classes) <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(
                column,
                row,
                str(value),
                ha="center",
                va="center",
                color="white" if value > threshold else "black",
                fontsize=8,
            )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(
    folder: Path, history: list[dict], best_epoch: int, targets: np.ndarray, predictions: np.ndarray, classes: list[str]
) -> dict:
    """Write the report files into folder; returns the per-class metrics."""
    matrix = confusion_matrix(targets, predictions, len(classes))
    metrics = per_class_metrics(matrix, classes)
    write_json(folder / PER_CLASS, metrics)
    write_confusion_csv(matrix, classes, folder / CONFUSION_CSV)
    plot_confusion_matrix(matrix, classes, folder / CONFUSION_PNG)
    if history:
        plot_learning_curves(history, best_epoch, folder / LEARNING_CURVES)
    return metrics


def format_dataset_summary(summary: dict) -> str:
    """The dataset summary as a few aligned lines for the log."""
    train, valid = summary["training"], summary["validation"]
    width = max([len("class")] + [len(c) for c in summary["classes"]])
    lines = [
        f"Dataset: {len(summary['classes'])} classes; training {train['images']} images ({train['layout']}), "
        f"validation {valid['images']} images ({valid['layout']})",
        f"  {'class':<{width}}  {'training':>9}  {'validation':>10}",
    ]
    for name in summary["classes"]:
        lines.append(f"  {name:<{width}}  {train['images_per_class'][name]:>9}  {valid['images_per_class'][name]:>10}")
    for part, title in ((train, "training"), (valid, "validation")):
        if part.get("sizes"):
            sizes = ", ".join(f"{size} x{count}" for size, count in list(part["sizes"].items())[:5])
            modes = ", ".join(f"{mode} x{count}" for mode, count in part.get("modes", {}).items())
            lines.append(f"  {title} image sizes (WxH, most common): {sizes}; modes: {modes}")
        for item in part["skipped"][:20]:
            lines.append(f"  skipped ({title}): {item['file']}: {item['reason']}")
        if len(part["skipped"]) > 20:
            lines.append(f"  ... and {len(part['skipped']) - 20} more skipped {title} files (see dataset_summary.json)")
    return "\n".join(lines)
