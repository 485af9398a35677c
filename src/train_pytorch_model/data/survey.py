"""Sizes and modes of the training images, read from their headers, and the one size they are all resized to."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..formats.image_directory import ImageRecord
from ..settings import DEFAULT_MAX_SIZE
from .images import BadImageError, read_header

# Images probed for their size when choosing the training size.
SIZE_SAMPLE = 2000


@dataclass
class ImageSurvey:
    """Sizes and modes read from the headers of (a sample of) the images: cheap, nothing is decoded."""

    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    modes: Counter = field(default_factory=Counter)
    sampled: int = 0


def survey_images(records: Sequence[ImageRecord], seed: int = 0) -> ImageSurvey:
    sample = list(records)
    if len(sample) > SIZE_SAMPLE:
        sample = random.Random(seed).sample(sample, SIZE_SAMPLE)
    survey = ImageSurvey(sampled=len(sample))
    for record in sample:
        try:
            width, height, mode = read_header(record.path)
        except (BadImageError, OSError):
            continue
        survey.sizes[(width, height)] += 1
        survey.modes[mode] += 1
    return survey


def choose_image_size(
    records: Sequence[ImageRecord],
    min_size: int,
    max_size: int = DEFAULT_MAX_SIZE,
    seed: int = 0,
    survey: ImageSurvey | None = None,
) -> tuple[int, int]:
    """One (height, width) for all images: the median training size, scaled down to fit max_size and up to
    reach min_size, aspect ratio kept. Small images are not blown up further than the network needs. Each side
    stays within [min_size, max_size] even when the aspect ratio cannot be kept (1 x 500 strips)."""
    survey = survey if survey is not None else survey_images(records, seed)
    widths = [w for (w, _), count in survey.sizes.items() for _ in range(count)]
    heights = [h for (_, h), count in survey.sizes.items() for _ in range(count)]
    if not heights:
        return (min_size, min_size)
    height, width = float(statistics.median(heights)), float(statistics.median(widths))
    scale = min(1.0, max_size / max(height, width))
    scale = max(scale, min_size / min(height, width))
    top = max(max_size, min_size)
    return (min(top, max(min_size, round(height * scale))), min(top, max(min_size, round(width * scale))))
