"""The run report: confusion matrix and per-class metrics computed by hand on small cases, the files written
(CSV, JSON, PNG images a viewer opens), and the dataset summary as the log prints it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from train_pytorch_model.output.report import (
    CONFUSION_CSV,
    CONFUSION_PNG,
    LEARNING_CURVES,
    PER_CLASS,
    confusion_matrix,
    format_dataset_summary,
    per_class_metrics,
    write_report,
)

CLASSES = ["cat", "dog", "bird"]
# 6 images: cats 2/3 right, dogs 1/2 right, the only bird taken for a dog.
TARGETS = np.array([0, 0, 0, 1, 1, 2])
PREDICTIONS = np.array([0, 0, 1, 1, 0, 1])


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    assert confusion_matrix(TARGETS, PREDICTIONS, 3).tolist() == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]


def test_per_class_metrics_match_the_hand_computed_values():
    metrics = per_class_metrics(confusion_matrix(TARGETS, PREDICTIONS, 3), CLASSES)
    cat, dog, bird = (metrics["classes"][name] for name in CLASSES)
    assert cat == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3),
                   "support": 3}  # fmt: skip
    assert dog["precision"] == pytest.approx(1 / 3) and dog["recall"] == pytest.approx(1 / 2)
    assert dog["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert bird == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # never predicted: no division by 0
    assert metrics["accuracy"] == pytest.approx(3 / 6)
    assert metrics["macro_avg"]["recall"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_a_class_absent_from_validation_does_not_drag_the_macro_average_down():
    metrics = per_class_metrics(confusion_matrix(np.array([0, 1]), np.array([0, 1]), 3), CLASSES)
    assert metrics["classes"]["bird"]["support"] == 0
    assert metrics["macro_avg"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def history(epochs: int) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "valid_loss": 1.2 / e,
            "train_accuracy": 0.5 + e / 20,
            "valid_accuracy": 0.4 + e / 20,
        }  # fmt: skip
        for e in range(1, epochs + 1)
    ]


def test_write_report_writes_the_four_files(tmp_path):
    metrics = write_report(tmp_path, history(3), 2, TARGETS, PREDICTIONS, CLASSES)
    assert json.loads((tmp_path / PER_CLASS).read_text(encoding="utf-8")) == metrics
    with open(tmp_path / CONFUSION_CSV, encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows == [["true \\ predicted", *CLASSES], ["cat", "2", "1", "0"], ["dog", "1", "1", "0"],
                    ["bird", "0", "1", "0"]]  # fmt: skip
    for name in (CONFUSION_PNG, LEARNING_CURVES):
        with Image.open(tmp_path / name) as image:
            image.verify()
            assert image.format == "PNG" and image.width > 300 and image.height > 300


def test_without_epochs_there_are_no_learning_curves(tmp_path):
    write_report(tmp_path, [], 0, TARGETS, PREDICTIONS, CLASSES)
    assert not (tmp_path / LEARNING_CURVES).exists() and (tmp_path / CONFUSION_PNG).is_file()


def test_many_long_class_names_still_plot(tmp_path):
    classes = [f"a rather long class name number {i}" for i in range(40)]
    targets = np.arange(40)
    write_report(tmp_path, history(1), 1, targets, targets, classes)
    with Image.open(tmp_path / CONFUSION_PNG) as image:
        assert image.width <= 3000  # the figure's size is capped


def summary_part(images: int, per_class: dict, skipped: int = 0) -> dict:
    return {
        "images": images,
        "layout": "ImageFolder",
        "images_per_class": per_class,
        "sizes": {"8x8": images},
        "modes": {"L": images},
        "skipped": [{"file": f"bad{i}.png", "reason": "cannot be decoded"} for i in range(skipped)],
    }


def test_the_dataset_summary_prints_classes_side_by_side_and_lists_skipped_files():
    summary = {
        "classes": ["0", "seven"],
        "training": summary_part(5, {"0": 3, "seven": 2}, skipped=23),
        "validation": summary_part(2, {"0": 1, "seven": 1}),
    }
    lines = format_dataset_summary(summary).splitlines()
    assert lines[0] == "Dataset: 2 classes; training 5 images (ImageFolder), validation 2 images (ImageFolder)"
    assert lines[1:4] == ["  class   training  validation", "  0              3           1",
                          "  seven          2           1"]  # fmt: skip
    assert "  training image sizes (WxH, most common): 8x8 x5; modes: L x5" in lines
    assert sum(line.startswith("  skipped (training): ") for line in lines) == 20
    assert lines[-2].endswith("... and 3 more skipped training files (see dataset_summary.json)")
