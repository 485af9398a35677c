"""Batches out of the decoded cache: a gather of the sampler's indices (one tensor operation, no per-image
Python), copied to the device and normalized there in one fused multiply-add."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .cache import DecodedImages


def batches_of(indices: Sequence[int], batch_size: int, drop_single: bool) -> Iterator[torch.Tensor]:
    """Consecutive batches of a process's sampler indices. A trailing batch of one is dropped when
    drop_single (in training, where BatchNorm cannot normalise a single image); with several processes every
    one has as many indices (DistributedSampler pads), so all of them drop it alike."""
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        if drop_single and len(batch) < 2:
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

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.pin:
            images = images.pin_memory()
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.shift, images.float(), self.scale)


def train_batches(
    data: DecodedImages, indices: Sequence[int], batch_size: int, drop_single: bool, normalize: Normalizer
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An epoch's training batches in the sampler's order, normalized on the device. index_select, not advanced
    indexing: the same gather 6-7x faster (it alone would take half the host's time at 224x224)."""
    for index in batches_of(indices, batch_size, drop_single):
        yield normalize(data.images.index_select(0, index)), data.labels[index]


def eval_batches(
    data: DecodedImages, batch_size: int, normalize: Normalizer, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Validation batches in dataset order; with several processes each takes every world_size-th image (their
    sums are reduced)."""
    shard = torch.arange(len(data))[rank::world_size]
    for start in range(0, len(shard), batch_size):
        index = shard[start : start + batch_size]
        yield normalize(data.images.index_select(0, index)), data.labels[index]
