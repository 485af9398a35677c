"""A validation set cut from the training set, when the job is given none (as AutoML for images does).

Stratified: each class gives the same share of its images (rounded, at least one), so that every class is
on both sides and the validation loss weighs the classes as training does. Seeded by the run's random seed:
the same seed cuts the same split, and so a resumed run sees the same data.
"""

from __future__ import annotations

import random
from dataclasses import replace

from ..errors import InvalidDatasetError
from ..formats.image_directory import ImageRecord, LabeledImages


def split_off_validation(
    dataset: LabeledImages, fraction: float, seed: int, subject: str
) -> tuple[LabeledImages, LabeledImages]:
    """(training, validation): per class, round(fraction x its images) go to validation, at least one, and at
    least one stays for training. A class of one image cannot be on both sides, so it is refused."""
    by_class: dict[str, list[ImageRecord]] = {name: [] for name in dataset.classes}
    for record in dataset.records:
        by_class.setdefault(record.label, []).append(record)
    too_few = {name: len(records) for name, records in by_class.items() if 0 < len(records) < 2}
    if too_few:
        listed = ", ".join(f"'{name}' ({count})" for name, count in list(too_few.items())[:10])
        raise InvalidDatasetError(
            f"no validation dataset was given, and {len(too_few)} class(es) have too few images to split off a "
            f"validation share: {listed}. Each class needs at least 2 images, one on each side.",
            "Add images to those classes, or connect a validation dataset.",
            subject=subject,
        )
    generator = random.Random(seed)
    kept: list[ImageRecord] = []
    held_out: list[ImageRecord] = []
    for records in by_class.values():
        positions = list(range(len(records)))
        generator.shuffle(positions)
        count = min(max(round(fraction * len(records)), 1), len(records) - 1) if records else 0
        # Each side keeps the dataset's own order (the decode and the listing then read like the input).
        held_out.extend(records[i] for i in sorted(positions[:count]))
        kept.extend(records[i] for i in sorted(positions[count:]))
    return replace(dataset, records=kept), replace(dataset, records=held_out, skipped=[])
