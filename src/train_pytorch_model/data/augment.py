"""Augmentation of training batches on the device, from the decoded cache: no decoding again, no per-image
Python. Every image of a batch gets its own random draw, and the whole batch is transformed by a few tensor
operations:

- geometry in one resampling: a random resized crop (area scale and aspect ranges), a horizontal flip and, in
  the strong policy, a rotation, shear or translation, all folded into one affine matrix per image and applied
  with `grid_sample` (bilinear, borders repeated);
- colour as per-image factors: brightness, contrast and saturation jitter, and, in the strong policy, one of
  solarize, posterize or autocontrast for some images.

The strong policy follows TrivialAugment's idea (one operation per image, its strength drawn uniformly) on top
of a wider crop range. Draws come from a generator seeded by the run's seed, the process's rank and the epoch,
made on the CPU and then moved, so that a CPU run repeats bit for bit and a resumed run, which restarts at an
epoch's beginning, draws what the uninterrupted one drew. Validation is never augmented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Policy:
    scale: tuple[float, float]  # the crop's share of the image's area
    ratio: tuple[float, float]  # the crop's aspect (width / height), drawn log-uniformly
    jitter: float  # brightness, contrast and saturation factors drawn from 1 +- jitter
    strong: bool  # one TrivialAugment-like operation per image


# By the level's name (settings.AUGMENTATIONS, which adds "none").
POLICIES = {
    # Crops of at least a third of the area: small images keep their textures (8% crops of a 32x32 image are
    # 9x9 pixels blown up), which short schedules cannot afford to lose.
    "light": Policy(scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), jitter=0.2, strong=False),
    "strong": Policy(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), jitter=0.4, strong=True),
}
MAX_ROTATION = math.radians(30)
MAX_SHEAR = 0.3
MAX_TRANSLATION = 0.3  # of the image's half-size, in grid_sample's [-1, 1] coordinates


def epoch_generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """The draws of one process's epoch: another seed, rank or epoch draws other augmentations."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 10_007 + epoch) % 2**63)


class BatchAugmenter:
    """Augments float batches (N x 3 x H x W, values 0-1) on their device with a named policy."""

    def __init__(self, level: str) -> None:
        self.policy = POLICIES[level]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count = images.shape[0]
        theta = self._geometry(count, generator).to(images.device)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return self._colour(images, generator).clamp_(0.0, 1.0)

    def _geometry(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """One 2x3 affine matrix per image, mapping output coordinates to input ones in [-1, 1]."""
        policy = self.policy
        area = _uniform(count, *policy.scale, generator)
        aspect = torch.exp(_uniform(count, math.log(policy.ratio[0]), math.log(policy.ratio[1]), generator))
        width = torch.sqrt(area * aspect).clamp(max=1.0)  # shares of the image's width and height
        height = torch.sqrt(area / aspect).clamp(max=1.0)
        centre_x = _uniform(count, -1.0, 1.0, generator) * (1 - width)
        centre_y = _uniform(count, -1.0, 1.0, generator) * (1 - height)
        flip = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
        theta = torch.zeros(count, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = width * flip, height
        theta[:, 0, 2], theta[:, 1, 2] = centre_x, centre_y
        if policy.strong:
            theta = _strong_geometry(theta, generator)
        return theta

    def _colour(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count, device, jitter = images.shape[0], images.device, self.policy.jitter

        def factors() -> torch.Tensor:
            return _uniform(count, 1 - jitter, 1 + jitter, generator).to(device).view(count, 1, 1, 1)

        brightness, contrast, saturation = factors(), factors(), factors()
        images = images * brightness
        grey = _grey(images)
        images = (images - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(dim=(2, 3), keepdim=True)
        images = (images - _grey(images)) * saturation + _grey(images)
        if self.policy.strong:
            images = _strong_colour(images.clamp(0.0, 1.0), generator)
        return images


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _grey(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _strong_geometry(theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A third of the images each get a rotation, a shear or a translation (and the rest nothing of these),
    of a strength drawn uniformly up to the maximum, composed after the crop."""
    count = theta.shape[0]
    choice = torch.randint(0, 4, (count,), generator=generator)  # 0 none, 1 rotate, 2 shear, 3 translate
    strength = _uniform(count, -1.0, 1.0, generator)
    extra = torch.eye(3).repeat(count, 1, 1)
    angle = strength * MAX_ROTATION
    rotate = choice == 1
    extra[rotate, 0, 0], extra[rotate, 0, 1] = torch.cos(angle[rotate]), -torch.sin(angle[rotate])
    extra[rotate, 1, 0], extra[rotate, 1, 1] = torch.sin(angle[rotate]), torch.cos(angle[rotate])
    shear = choice == 2
    extra[shear, 0, 1] = strength[shear] * MAX_SHEAR
    translate = choice == 3
    extra[translate, 0, 2] = strength[translate] * MAX_TRANSLATION
    return theta @ extra


def _strong_colour(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A quarter of the images each get solarize, posterize or autocontrast, at a drawn strength."""
    count, device = images.shape[0], images.device
    choice = torch.randint(0, 4, (count,), generator=generator).to(device).view(count, 1, 1, 1)
    threshold = _uniform(count, 0.5, 1.0, generator).to(device).view(count, 1, 1, 1)
    levels = (2 ** torch.randint(2, 6, (count,), generator=generator)).to(device).view(count, 1, 1, 1)
    solarized = torch.where(images >= threshold, 1.0 - images, images)
    posterized = torch.floor(images * levels) / levels
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    stretched = (images - low) / (high - low).clamp(min=1e-3)
    images = torch.where(choice == 1, solarized, images)
    images = torch.where(choice == 2, posterized, images)
    return torch.where(choice == 3, stretched, images)
