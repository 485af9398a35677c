"""Steps over more images than one forward pass holds: gradient accumulation (the recipe's), and the
out-of-memory back-off that halves the micro-batch and doubles the accumulation, so that a step still sees the
same global batch at the same learning rate.

A step over several micro-batches weighs each one's loss by its share of the step's images, so that the
gradient is that of the mean over them all, as one large batch gives (BatchNorm's statistics excepted: they are
each micro-batch's own). Under DDP the gradients are all-reduced once per step, at the last micro-batch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from .device import Precision
from .loss import TrainingLoss

log = logging.getLogger("train_pytorch_model")

Batch = tuple[torch.Tensor, torch.Tensor]


class MicroBatching:
    """How each step's images go through the network: `accumulation` batches a step, each cut into `pieces`."""

    def __init__(self, accumulation: int = 1) -> None:
        self.accumulation = accumulation
        self.pieces = 1  # doubled by each out-of-memory back-off

    @property
    def plain(self) -> bool:
        """One batch, whole: the step as it always was."""
        return self.accumulation == 1 and self.pieces == 1

    def groups(self, batches: Iterable[Batch]) -> Iterator[list[Batch]]:
        """The batches of each step (the last step of an epoch may have fewer)."""
        group: list[Batch] = []
        for batch in batches:
            group.append(batch)
            if len(group) == self.accumulation:
                yield group
                group = []
        if group:
            yield group

    def micro_batches(self, group: list[Batch]) -> list[Batch]:
        pieces = []
        for images, targets in group:
            parts = zip(images.tensor_split(self.pieces), targets.tensor_split(self.pieces), strict=True)
            pieces.extend((x, y) for x, y in parts if y.shape[0] > 0)
        return pieces

    def back_off(self, group: list[Batch], error: torch.OutOfMemoryError) -> None:
        """Cut each batch into twice as many pieces, or raise the error when a piece is one image already."""
        smallest = min(images.shape[0] for images, _ in group) // self.pieces
        if smallest <= 1:
            raise error
        self.pieces *= 2
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning(
            "Out of memory at %d images a forward pass: going on with %d, each batch in %d passes whose "
            "gradients are accumulated (the same images a step, the same learning rate).",
            smallest,
            -(-smallest // 2),
            self.pieces,
        )


def accumulated_step(
    model: nn.Module,
    micro_batches: list[Batch],
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    loss_fn: TrainingLoss,
    before_step: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over the micro-batches; returns the step's mean loss and all their logits."""
    optimizer.zero_grad(set_to_none=True)
    total = sum(targets.shape[0] for _, targets in micro_batches)
    loss_sum = torch.zeros((), device=micro_batches[0][1].device)
    every_logits = []
    for index, (images, targets) in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        # DDP all-reduces at every backward; once, at the last micro-batch, is enough.
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with precision.autocast():
                outputs = model(images)
            loss, logits = loss_fn(outputs, targets)
            precision.scaler.scale(loss * (targets.shape[0] / total)).backward()
        loss_sum = loss_sum + loss.detach().float() * targets.shape[0]
        every_logits.append(logits.detach())
    if before_step is not None:
        before_step()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return loss_sum / total, torch.cat(every_logits)
