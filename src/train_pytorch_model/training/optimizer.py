"""The optimizer and the learning-rate schedule: the recipe's numbers, in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..settings import Recipe


@dataclass(frozen=True)
class OptimizerChoice:
    name: str  # as recorded
    momentum: float | None
    nesterov: bool | None
    weight_decay: float  # on weights; never on biases and normalisation layers


# The designer's optimizer, with Nesterov momentum and a light weight decay; and AdamW with the decay that
# fine-tuning recipes give it (timm, torchvision's reference for transformers: 0.05).
OPTIMIZERS = {
    "sgd": OptimizerChoice("SGD", momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adamw": OptimizerChoice("AdamW", momentum=None, nesterov=None, weight_decay=0.05),
}
# A warmup starts at this fraction of the learning rate and rises linearly to it.
WARMUP_START = 0.1


def make_optimizer(model: nn.Module, lr: float, recipe: Recipe | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer (today's by default); no weight decay on biases and BatchNorm, which it only
    hurts."""
    recipe = recipe or Recipe()
    choice = OPTIMIZERS[recipe.optimizer]
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": choice.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=choice.momentum, nesterov=choice.nesterov)


def warmup_steps(recipe: Recipe, steps_per_epoch: int, total_steps: int) -> int:
    """The warmup's length in optimizer steps: at least one when asked for, never the whole run."""
    if recipe.warmup_epochs <= 0:
        return 0
    return min(max(1, math.ceil(recipe.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: int = 0
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay from the initial rate, stepped after every batch (smoother than per epoch on short runs);
    after a linear warmup from WARMUP_START of the rate when one is asked for."""
    if warmup <= 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    rise = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps - warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [rise, decay], milestones=[warmup])


def schedule_name(warmup: int) -> str:
    if warmup <= 0:
        return "cosine, per step"
    return f"linear warmup from {WARMUP_START}x over {warmup} steps, then cosine, per step"
