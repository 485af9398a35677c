"""What every image becomes before the network sees it: its size, how it is resized, and its normalization.

The size comes from the data (the median training image, within bounds) or from image_size, and then from the
network: raised to its minimum, its one size for a network that takes no other (MaxViT), square and a
multiple of its patch for a Vision Transformer. The rest comes from the weights the training starts from:

- a trained output (trained further) keeps the preprocessing it recorded;
- pretrained weights get their own recipe, as torchvision's weights.transforms() describes it: mean, std,
  interpolation, and the resize-then-centre-crop they were trained with;
- other weights get the model folder's normalization and a plain resize (the designer's 0.5 statistics).

crop_ratio, when given, replaces the resize of all three: a centre crop at that ratio. Training, validation and
scoring share it (one decoded cache, one preprocessing.json), so that the network is never validated or scored
on framings it was not trained on; augmentation crops further from what the cache holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..data.survey import ImageSurvey, choose_image_size
from ..formats.image_directory import ImageRecord
from ..formats.model_directory import ModelSpec
from ..formats.preprocessing import Preprocessing
from ..model.families import IMAGENET_MEAN, IMAGENET_STD, family_of_architecture, patch_size, training_side
from ..model.loading import read_preprocessing
from ..settings import Settings


def choose_preprocessing(
    settings: Settings, spec: ModelSpec, records: Sequence[ImageRecord], survey: ImageSurvey, classes: list[str]
) -> Preprocessing:
    chosen = _from_weights(settings, spec, records, survey, classes)
    if settings.crop_ratio is None:
        return chosen
    return replace(chosen, fit="center_crop", crop_ratio=settings.crop_ratio)


def _from_weights(
    settings: Settings, spec: ModelSpec, records: Sequence[ImageRecord], survey: ImageSurvey, classes: list[str]
) -> Preprocessing:
    size = network_size(spec, _asked_size(settings, spec, records, survey))
    recorded = read_preprocessing(spec, "Untrained model")
    if recorded is not None:
        return Preprocessing(size, recorded.mean, recorded.std, classes, recorded.resize, "RGB", recorded.fit,
                             recorded.crop_ratio)  # fmt: skip
    if spec.pretrained:
        mean, std, interpolation, crop_ratio = pretrained_recipe(spec.architecture, spec.weights_name)
        return Preprocessing(size, mean, std, classes, interpolation, "RGB", "center_crop", crop_ratio)
    return Preprocessing(size, tuple(spec.mean), tuple(spec.std), classes)


def _asked_size(
    settings: Settings, spec: ModelSpec, records: Sequence[ImageRecord], survey: ImageSurvey
) -> tuple[int, int]:
    if settings.image_size is not None:
        return (settings.image_size, settings.image_size)
    minimum = training_side(spec.architecture, 1, spec.flags.get("aux_logits", True))
    return choose_image_size(records, minimum, settings.max_image_size, settings.random_seed, survey=survey)


def network_size(spec: ModelSpec, size: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) the network trains at for an asked size."""
    family = family_of_architecture(spec.architecture)
    aux_logits = spec.flags.get("aux_logits", True)
    if family.fixed_size is not None or patch_size(spec.architecture) > 1:  # one side for both
        side = training_side(spec.architecture, max(size), aux_logits)
        return (side, side)
    return (
        training_side(spec.architecture, size[0], aux_logits),
        training_side(spec.architecture, size[1], aux_logits),
    )


def pretrained_recipe(architecture: str, weights_name: str | None) -> tuple[tuple, tuple, str, float]:
    """(mean, std, interpolation, crop ratio) of torchvision's pretrained weights: the named ones, or the
    DEFAULT (what the designer's ResNet and DenseNet folders hold). Plain ImageNet statistics if torchvision
    does not know the weights."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(architecture)
        weights = enum[weights_name] if weights_name else enum.DEFAULT
        transforms = weights.transforms()
    except (KeyError, ValueError, AttributeError):
        return IMAGENET_MEAN, IMAGENET_STD, "bilinear", 1.0
    interpolation = str(transforms.interpolation.value).lower()
    ratio = float(transforms.resize_size[0]) / float(transforms.crop_size[0])
    return tuple(transforms.mean), tuple(transforms.std), interpolation, ratio
