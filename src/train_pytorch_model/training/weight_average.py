"""An exponential moving average (EMA) of the network's weights, updated after every optimizer step and
evaluated after every epoch beside the trained weights; early stopping and the output take whichever of the two
has the lower validation loss.

The decay ramps up as in timm's ModelEmaV2 warmup, min(decay, (1 + updates) / (10 + updates)), so that a
short run (the designer's 5 epochs of a small dataset are a few hundred steps) averages its recent weights
rather than staying near the untrained ones. BatchNorm's running statistics are averaged too (a model's
statistics must match its weights); integer buffers (batches seen) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    def __init__(self, network: nn.Module, decay: float) -> None:
        self.network = network  # the plain module, not a DDP wrapper
        self.decay = decay
        self.model = copy.deepcopy(network).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        weight = 1.0 - self.current_decay()
        averaged = list(self.model.parameters()) + [b for b in self.model.buffers() if b.is_floating_point()]
        current = list(self.network.parameters()) + [b for b in self.network.buffers() if b.is_floating_point()]
        torch._foreach_lerp_(averaged, [t.detach() for t in current], weight)
        for mine, theirs in zip(self.model.buffers(), self.network.buffers(), strict=True):
            if not mine.is_floating_point():
                mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
