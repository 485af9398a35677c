"""The first phase: read and check the inputs, build the network, choose the size and statistics, decode.

Every check that needs no decoding comes first (classes, batch size, the weights), so that a mistake is
reported before minutes of decoding.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ..data.cache import DecodedImages, decode_dataset, process_cores
from ..data.node_cache import decode_on_node
from ..data.survey import survey_images
from ..data.validation_split import split_off_validation
from ..errors import InvalidDatasetError, InvalidParameterError
from ..formats.image_directory import LabeledImages, load_labeled_images
from ..formats.model_directory import ModelSpec
from ..formats.preprocessing import Preprocessing
from ..model.loading import LoadedNetwork, load_for_training
from ..output.summary import dataset_summary
from ..settings import Settings
from .distributed import DistributedContext
from .image_input import choose_preprocessing

log = logging.getLogger("train_pytorch_model")

TRAIN_SUBJECT = "Training dataset"
VALID_SUBJECT = "Validation dataset"


@dataclass
class PreparedData:
    """The checked inputs, the network to train, and both datasets decoded at the training size."""

    spec: ModelSpec
    train_set: LabeledImages
    valid_set: LabeledImages
    classes: list[str]
    network: LoadedNetwork
    preprocessing: Preprocessing  # the size, mean and std every image gets, in training and in scoring
    train_data: DecodedImages
    valid_data: DecodedImages
    dataset_summary: dict  # images per class, sizes and modes seen, skipped files (dataset_summary.json)

    def decode_metrics(self) -> dict[str, float]:
        """The decode of both datasets, the phase before the first step: in the summary and in MLflow."""
        seconds = self.train_data.decode_seconds + self.valid_data.decode_seconds
        images = len(self.train_set.records) + len(self.valid_set.records)
        return {"decode_seconds": round(seconds, 3), "decode_images_per_second": round(images / max(seconds, 1e-9), 1)}


def prepare(settings: Settings, spec: ModelSpec, scratch: Path, context: DistributedContext) -> PreparedData:
    train_set, valid_set = _load_datasets(settings, scratch)
    classes = check_classes(train_set, valid_set)
    _check_batch_size(settings.batch_size, len(train_set.records), world_size=1)
    train_survey = survey_images(train_set.records, settings.random_seed)
    valid_survey = survey_images(valid_set.records, settings.random_seed)
    preprocessing = choose_preprocessing(settings, spec, train_set.records, train_survey, classes)
    height, width = preprocessing.image_size
    network = load_for_training(spec, len(classes), side=height)
    log.info(
        "Training %s on %d images of %d classes at %dx%d; validating on %d images.",
        spec.architecture,
        len(train_set.records),
        len(classes),
        width,
        height,
        len(valid_set.records),
    )
    class_to_idx = {name: index for index, name in enumerate(classes)}
    decoded = [
        _decode(listed, subject, class_to_idx, preprocessing, settings, scratch, context)
        for listed, subject in ((train_set, TRAIN_SUBJECT), (valid_set, VALID_SUBJECT))
    ]
    _check_batch_size(settings.batch_size, len(decoded[0]), context.world_size, readable=True)
    return PreparedData(
        spec=spec,
        train_set=train_set,
        valid_set=valid_set,
        classes=classes,
        network=network,
        preprocessing=preprocessing,
        train_data=decoded[0],
        valid_data=decoded[1],
        dataset_summary=dataset_summary(
            (train_set, decoded[0], train_survey), (valid_set, decoded[1], valid_survey), classes
        ),
    )


def _load_datasets(settings: Settings, scratch: Path) -> tuple[LabeledImages, LabeledImages]:
    """Both datasets as listed; without a validation dataset, a stratified share of the training set."""
    train_set = load_labeled_images(settings.training_dataset, TRAIN_SUBJECT, scratch)
    if settings.validation_dataset is not None:
        return train_set, load_labeled_images(settings.validation_dataset, VALID_SUBJECT, scratch)
    train_set, valid_set = split_off_validation(
        train_set, settings.validation_fraction, settings.random_seed, TRAIN_SUBJECT
    )
    log.info(
        "No validation dataset: %d of the training images (%.0f%% of each class, seed %d) are held out to validate on.",
        len(valid_set.records),
        100 * settings.validation_fraction,
        settings.random_seed,
    )
    return train_set, valid_set


def _decode(
    listed: LabeledImages,
    subject: str,
    class_to_idx: dict[str, int],
    preprocessing: Preprocessing,
    settings: Settings,
    scratch: Path,
    context: DistributedContext,
) -> DecodedImages:
    """Alone, a cache of its own; with other processes on the node, one cache that they decode together."""
    local_processes = context.local_world_size if context.enabled else 1
    workers = settings.num_workers or process_cores(local_processes)
    if local_processes > 1:
        return decode_on_node(listed.records, class_to_idx, preprocessing.resizing(), subject, context,
                              workers=workers, root=listed.root)  # fmt: skip
    return decode_dataset(listed.records, class_to_idx, preprocessing.resizing(), subject, workers=workers,
                          scratch=scratch, root=listed.root)  # fmt: skip


def check_classes(train: LabeledImages, valid: LabeledImages) -> list[str]:
    """Training classes, in the training set's order; validation labels are matched to them by name."""
    present = [name for name, count in train.class_counts().items() if count > 0]
    if len(present) < 2:
        raise InvalidDatasetError(
            f"it has images of {len(present)} class{'es' if len(present) != 1 else ''} "
            f"({', '.join(map(repr, present))}); a classifier needs at least two.",
            "Add a subfolder of images for each class to tell apart.",
            subject=TRAIN_SUBJECT,
        )
    classes = train.classes
    unknown = sorted({r.label for r in valid.records} - set(classes))
    if unknown:
        raise InvalidDatasetError(
            f"it has classes that the training dataset does not have: {', '.join(map(repr, unknown[:10]))}. "
            "Categories of the validation dataset must be among those of the training dataset.",
            "Make sure training and validation datasets have the same categories.",
            subject=VALID_SUBJECT,
        )
    return classes


def _check_batch_size(batch_size: int, images: int, world_size: int, readable: bool = False) -> None:
    """A batch must fit in what each process trains on per epoch: first checked against the listed images,
    then against the readable ones, shared among the processes."""
    share = math.ceil(images / world_size)
    if batch_size <= share:
        return
    what = "readable training images" if readable else "labelled training images"
    where = "" if world_size == 1 else f" ({world_size} processes share them: {share} each)"
    raise InvalidParameterError(
        f"{batch_size} is larger than the {images} {what}{where}.",
        f"Set batch_size to at most {share}.",
        subject="Parameter batch_size",
    )
