"""One training epoch and one validation pass.

Metrics are summed on the device and read once per epoch, so that no step waits for the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .device import Precision
from .loss import TrainingLoss
from .micro_batches import MicroBatching, accumulated_step


@dataclass
class TrainStats:
    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EvalStats:
    loss: float
    accuracy: float
    top5_accuracy: float
    images: int
    seconds: float
    predictions: torch.Tensor | None = None  # (N,) predicted class ids, in dataset order
    targets: torch.Tensor | None = None


def training_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    loss_fn: TrainingLoss,
    before_step: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch; returns the loss and the main classifier's logits. The throughput
    benchmark times this very function as the model's own speed. before_step may drop gradients (freezing)."""
    with precision.autocast():
        outputs = model(images)
    loss, logits = loss_fn(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(loss).backward()
    if before_step is not None:
        before_step()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return loss, logits


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    precision: Precision,
    device: torch.device,
    on_step: Callable[[int, torch.Tensor, torch.Tensor, int], None] | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    loss_fn: TrainingLoss | None = None,
    micro: MicroBatching | None = None,
    after_step: Callable[[], None] | None = None,
    before_step: Callable[[], None] | None = None,
) -> TrainStats:
    """One pass over the batches. reduce sums the epoch's totals over processes (distributed training); micro
    says how many batches make a step and into how many pieces each goes through the network."""
    loss_fn = loss_fn or TrainingLoss()
    micro = micro or MicroBatching()
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for step, group in enumerate(micro.groups(batches), start=1):
        group = [(images, targets.to(device, non_blocking=True)) for images, targets in group]
        loss, logits = _step(model, group, optimizer, precision, loss_fn, micro, before_step)
        targets = group[0][1] if len(group) == 1 else torch.cat([t for _, t in group])
        if after_step is not None:
            after_step()
        if scheduler is not None:
            scheduler.step()
        count = targets.shape[0]
        loss_sum += loss.detach().double() * count
        correct += (logits.detach().argmax(1) == targets).sum()
        seen += count
        if on_step is not None:
            on_step(step, loss_sum, correct, seen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
    if reduce is not None:
        totals = reduce(totals)
    loss_total, correct_total, seen_total = totals.tolist()
    return TrainStats(
        loss=loss_total / max(seen_total, 1),
        accuracy=correct_total / max(seen_total, 1),
        images=int(seen_total),
        seconds=seconds,
    )


def _step(model, group, optimizer, precision, loss_fn, micro: MicroBatching, before_step=None):
    """The step over a group of batches: the plain step when it is one whole batch; accumulated otherwise, and
    cut into smaller pieces for as long as the device runs out of memory."""
    while True:
        try:
            if micro.plain:
                return training_step(model, *group[0], optimizer, precision, loss_fn, before_step)
            return accumulated_step(model, micro.micro_batches(group), optimizer, precision, loss_fn, before_step)
        except torch.OutOfMemoryError as error:
            optimizer.zero_grad(set_to_none=True)
            micro.back_off(group, error)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    precision: Precision,
    device: torch.device,
    num_classes: int,
    keep_predictions: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EvalStats:
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct1 = torch.zeros((), dtype=torch.int64, device=device)
    correct5 = torch.zeros((), dtype=torch.int64, device=device)
    predictions, all_targets = [], []
    seen = 0
    k = min(5, num_classes)
    start = time.perf_counter()
    for images, targets in batches:
        targets = targets.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
        top = logits.topk(k, dim=1).indices
        hits = top == targets.unsqueeze(1)
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        seen += targets.shape[0]
        if keep_predictions:
            predictions.append(top[:, 0])
            all_targets.append(targets)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    totals = torch.stack(
        [loss_sum, correct1.double(), correct5.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)]
    )
    if reduce is not None:
        totals = reduce(totals)
    loss_total, correct1_total, correct5_total, seen_total = totals.tolist()
    return EvalStats(
        loss=loss_total / max(seen_total, 1),
        accuracy=correct1_total / max(seen_total, 1),
        top5_accuracy=correct5_total / max(seen_total, 1),
        images=int(seen_total),
        seconds=seconds,
        predictions=torch.cat(predictions).cpu() if predictions else None,
        targets=torch.cat(all_targets).cpu() if all_targets else None,
    )
