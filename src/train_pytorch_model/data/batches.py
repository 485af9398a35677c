"""Batches out of the decoded cache: a gather of the sampler's indices (one tensor operation, no per-image
Python), copied to the device and normalized there in one fused multiply-add."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from .cache import DecodedImages

# Below this many images a batch's own statistics, which BatchNorm normalises by, are too noisy to rely on: at
# 1x1 features (any network's last layers at 32x32) a channel's mean and variance come from that many values.
SMALL_BATCH = 8


def batches_of(indices: Sequence[int], batch_size: int, drop_partial: bool) -> Iterator[torch.Tensor]:
    """Consecutive batches of a process's sampler indices. With drop_partial a trailing batch of few images is
    skipped: a network with BatchNorm normalises by the batch's own statistics, and over a handful of images
    they are so noisy that one such step can send the gradients off by a million-fold (RegNet at 32x32 on a
    trailing batch of 4). A trailing batch is kept when it holds at least half a batch and at least
    SMALL_BATCH images (or the whole batch, when smaller): skipping ten images of every 90 at batch 16 would cost
    a small dataset a sixth of its steps for nothing. The sampler reshuffles every epoch, so no image is left
    out for good. A process with fewer images than one batch trains on them all (but never on one alone, which
    BatchNorm refuses). With several processes every one has as many indices (DistributedSampler pads), so all
    of them skip alike."""
    enough = max(-(-batch_size // 2), min(batch_size, SMALL_BATCH))
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        partial = len(batch) < batch_size
        if drop_partial and partial and len(batch) < (2 if start == 0 else enough):
            continue
        yield torch.as_tensor(batch, dtype=torch.long)


class Normalizer:
    """uint8 batches to normalised float tensors on the device, in one fused multiply-add."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device, channels_last: bool):
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.device = device
        self.channels_last = channels_last
        self.pin = device.type == "cuda"

    def __call__(self, images: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """augment, when given, transforms the batch on the device as floats in 0-1, before normalising."""
        if self.pin:
            images = images.pin_memory()
        images = images.to(self.device, non_blocking=True)
        if augment is not None:
            images = augment(images.float().div_(255.0)).mul_(255.0)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.shift, images.float(), self.scale)


def train_batches(
    data: DecodedImages,
    indices: Sequence[int],
    batch_size: int,
    drop_partial: bool,
    normalize: Normalizer,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An epoch's training batches in the sampler's order, augmented (when asked) and normalized on the device.
    index_select, not advanced indexing: the same gather 6-7x faster (it alone would take half the host's time
    at 224x224)."""
    for index in batches_of(indices, batch_size, drop_partial):
        yield normalize(data.images.index_select(0, index), augment), data.labels[index]


def eval_batches(
    data: DecodedImages, batch_size: int, normalize: Normalizer, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Validation batches in dataset order; with several processes each takes every world_size-th image (their
    sums are reduced)."""
    shard = torch.arange(len(data))[rank::world_size]
    for start in range(0, len(shard), batch_size):
        index = shard[start : start + batch_size]
        yield normalize(data.images.index_select(0, index)), data.labels[index]
