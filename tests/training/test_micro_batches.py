"""Steps over several micro-batches: gradient accumulation gives the step one large batch gives, and an
out-of-memory error halves the forward pass, keeps the images of a step, and gives up only at one image."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from train_pytorch_model.training.device import Precision
from train_pytorch_model.training.epoch import train_one_epoch
from train_pytorch_model.training.micro_batches import MicroBatching

CPU = torch.device("cpu")


class Limited(nn.Module):
    """A small BatchNorm-free network that runs out of memory above `limit` images a forward pass, as a GPU
    does (the same error type), and counts the images of each pass."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))
        self.limit = limit
        self.passes: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and images.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (test limit {self.limit})")
        self.passes.append(images.shape[0])
        return self.body(images)


def batches(count: int = 3, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, 4, 4, generator=generator), torch.randint(0, 3, (size,), generator=generator))
            for _ in range(count)]  # fmt: skip


def train(model: nn.Module, data, micro: MicroBatching | None = None) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    train_one_epoch(model, data, optimizer, None, Precision(CPU), CPU, micro=micro)
    return optimizer


def steps_taken(optimizer: torch.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


def test_accumulating_two_batches_is_one_step_over_both():
    data = batches(4, 8)
    merged = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(data[::2], data[1::2], strict=True)]
    one_batch, accumulated = Limited(), Limited()
    reference = train(one_batch, merged)
    optimizer = train(accumulated, data, MicroBatching(accumulation=2))
    assert steps_taken(reference) == steps_taken(optimizer) == 2
    for a, b in zip(one_batch.parameters(), accumulated.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_out_of_memory_halves_the_pass_and_keeps_the_step(caplog):
    whole, limited = Limited(), Limited(limit=4)
    micro = MicroBatching()
    reference = train(whole, batches())
    optimizer = train(limited, batches(), micro)
    assert micro.pieces == 4 and set(limited.passes) == {4}
    assert steps_taken(optimizer) == steps_taken(reference) == 3  # a step per batch of 16, as without the limit
    for a, b in zip(whole.parameters(), limited.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert caplog.text.count("Out of memory") == 2  # 16 -> 8, 8 -> 4; then never again


def test_out_of_memory_at_one_image_is_raised():
    with pytest.raises(torch.OutOfMemoryError):
        train(Limited(limit=0), batches(1, 4), MicroBatching())
