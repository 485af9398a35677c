"""The run record: every fact that defines a training run, written once and read by all that report it.

The resume fingerprint, the MLflow parameters and training_summary.json's hyperparameters are all views of
this one record, so that they can never disagree (nor a new setting be recorded in one and forgotten in another).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..formats.image_directory import LabeledImages
from ..settings import Recipe


@dataclass(frozen=True)
class Hyperparameters:
    """What the training loop did with the data: the designer's five parameters and the recipe around them."""

    epochs: int
    batch_size: int  # per process
    world_size: int
    learning_rate: float  # as given; the optimizer starts at effective_learning_rate
    random_seed: int
    patience: int
    image_size: tuple[int, int]  # (height, width)
    image_fit: str  # how images are brought to that size: stretch or center_crop (preprocessing.json's fit)
    crop_ratio: float  # center_crop's: resized to cover the size times this
    optimizer: str
    momentum: float | None  # SGD's; None for AdamW
    nesterov: bool | None
    weight_decay: float
    lr_schedule: str
    recipe: Recipe  # the recipe's options as given (its optimizer is the one named above)
    validation_fraction: float | None  # the training set's share held out; None when a validation set is given

    @property
    def global_batch_size(self) -> int:
        """The images of one optimizer step, over every process and accumulated batch."""
        return self.batch_size * self.world_size * self.recipe.gradient_accumulation

    @property
    def effective_learning_rate(self) -> float:
        """Scaled linearly with the number of processes (see training/distributed.py for the rule)."""
        return self.learning_rate * self.world_size

    def as_dict(self) -> dict:
        """Flat: the recipe's options beside the others (MLflow's params are flat)."""
        values = asdict(self)
        recipe = values.pop("recipe")
        recipe.pop("optimizer")  # named by 'optimizer' already
        values.update(recipe)
        values["image_size"] = list(self.image_size)
        values["global_batch_size"] = self.global_batch_size
        values["effective_learning_rate"] = self.effective_learning_rate
        return values


@dataclass(frozen=True)
class RunRecord:
    hyperparameters: Hyperparameters
    architecture: str
    pretrained: bool
    untrained_weights_sha256: str
    classes: tuple[str, ...]
    # (relative path, label, size in bytes) of every listed file: sizes as well as names, so that a dataset
    # replaced under the same file names does not resume an old run.
    train_listing: tuple[tuple[str, str, int], ...]
    valid_listing: tuple[tuple[str, str, int], ...]
    train_images: int  # decoded (readable) images
    valid_images: int
    device: str

    def fingerprint(self) -> str:
        """A digest of everything that must match for a checkpoint to be resumed. Not the device: a preempted
        job may come back on another node; not the decoded counts, which follow from the listing."""
        facts = asdict(self)
        for name in ("device", "train_images", "valid_images"):
            facts.pop(name)
        facts["hyperparameters"] = self.hyperparameters.as_dict()
        text = json.dumps(facts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def mlflow_params(self) -> dict:
        """Flat parameters for MLflow (the listings are in dataset_summary.json instead: too long for params)."""
        params = self.hyperparameters.as_dict()
        height, width = params.pop("image_size")
        return {
            **params,
            "image_height": height,
            "image_width": width,
            "architecture": self.architecture,
            "pretrained": self.pretrained,
            "num_classes": len(self.classes),
            "train_images": self.train_images,
            "valid_images": self.valid_images,
            "device": self.device,
        }


def listing(dataset: LabeledImages) -> tuple[tuple[str, str, int], ...]:
    return tuple((r.name_in(dataset.root), r.label, _size(r.path)) for r in dataset.records)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (weights files reach hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
