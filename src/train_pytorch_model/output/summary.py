"""What a run says about itself: dataset_summary.json (the data as it was read) and training_summary.json (the
best and last epochs, why training stopped, every epoch's metrics, timings, the run record, versions)."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

from .. import __version__
from ..data.cache import DecodedImages
from ..data.survey import ImageSurvey
from ..formats.image_directory import LabeledImages
from .run_record import RunRecord

SUMMARY_FILE = "training_summary.json"
DATASET_SUMMARY_FILE = "dataset_summary.json"


def dataset_summary(
    train: tuple[LabeledImages, DecodedImages, ImageSurvey],
    valid: tuple[LabeledImages, DecodedImages, ImageSurvey],
    classes: list[str],
) -> dict:
    """Images per class, sizes and modes seen, and every skipped file with its reason."""

    def part(listing: LabeledImages, decoded: DecodedImages, survey: ImageSurvey) -> dict:
        counts = dict.fromkeys(classes, 0)
        for label in decoded.labels.tolist():
            counts[classes[label]] += 1
        return {
            "root": str(listing.root),
            "layout": listing.layout,
            "images": len(decoded),
            "images_per_class": counts,
            "sizes": {f"{w}x{h}": n for (w, h), n in survey.sizes.most_common(20)},
            "modes": dict(survey.modes.most_common()),
            "headers_sampled": survey.sampled,
            "skipped": [{"file": f, "reason": r} for f, r in listing.skipped + decoded.skipped],
            "cache": decoded.where,  # memory, disk, or one for the node's processes: shared memory or disk
            "decode_seconds": round(decoded.decode_seconds, 3),
        }

    return {"classes": classes, "training": part(*train), "validation": part(*valid)}


@dataclass
class Outcome:
    """How the epochs went, as the summary reports it."""

    best_epoch: int
    last_epoch: int
    stop_reason: str
    resumed_from_epoch: int
    best_valid_loss: float
    best_valid_accuracy: float
    best_valid_top5_accuracy: float
    history: list[dict]


@dataclass
class Tracking:
    """Where the run was tracked, and what went wrong with it if anything."""

    run_id: str | None
    tracking_uri: str | None
    problem: str | None


def training_summary(
    outcome: Outcome,
    record: RunRecord,
    model_info: dict,
    tracking: Tracking,
    seconds: float,
    seconds_to_first_step: float | None,
) -> dict:
    """training_summary.json's content (the report adds 'per_class' when it is written)."""
    history = outcome.history
    rates = [row["train_images_per_second"] for row in history]
    return {
        "best_epoch": outcome.best_epoch,
        "last_epoch": outcome.last_epoch,
        "stopped_early": outcome.last_epoch < record.hyperparameters.epochs,
        "stop_reason": outcome.stop_reason,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "best_valid_loss": outcome.best_valid_loss,
        "best_valid_accuracy": outcome.best_valid_accuracy,
        "best_valid_top5_accuracy": outcome.best_valid_top5_accuracy,
        "history": history,
        "seconds": seconds,
        "seconds_to_first_step": seconds_to_first_step,
        "device": record.device,
        "hyperparameters": record.hyperparameters.as_dict(),
        "model": {"architecture": record.architecture, "pretrained": record.pretrained, **model_info},
        "classes": list(record.classes),
        "mlflow_run_id": tracking.run_id,
        "mlflow_tracking_uri": tracking.tracking_uri,
        "mlflow_problem": tracking.problem,
        "versions": {
            "train_pytorch_model": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "images_per_second": sum(rates) / len(rates) if rates else 0.0,
    }


def diverged_summary(best_epoch: int, stop_reason: str, history: list[dict], classes: list[str]) -> dict:
    """The summary beside the model kept when the loss diverged: which epoch it is and what happened after."""
    return {"best_epoch": best_epoch, "stop_reason": stop_reason, "history": history, "classes": classes}
