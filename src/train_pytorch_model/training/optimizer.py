"""The optimizer and the learning-rate schedule: the recipe's numbers, in one place."""

from __future__ import annotations

import torch
from torch import nn

MOMENTUM = 0.9
NESTEROV = True
WEIGHT_DECAY = 1e-4
OPTIMIZER_NAME = "SGD"
SCHEDULE_NAME = "cosine, per step"


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum; no weight decay on biases and BatchNorm, which it only hurts."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM, nesterov=NESTEROV)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay from the initial rate, stepped after every batch (smoother than per epoch on short runs)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
