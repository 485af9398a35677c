"""Training only the classifier for the first epochs (the recipe's freeze_epochs): the fresh head learns to
read the pretrained features before their gradients are let through, so that the head's first, large and
random gradients do not wreck those features.

The body's gradients are computed and then dropped before each optimizer step (set to None, which every
optimizer skips: no update, no weight decay, no momentum). Their parameters keep requires_grad, so that DDP
(whose reducer is built for a fixed set of gradients) works unchanged. BatchNorm's running statistics of the body
keep following the new data, as they do under requires_grad=False in training mode.
"""

from __future__ import annotations

import logging

from torch import nn

from ..model.networks import heads_of

log = logging.getLogger("train_pytorch_model")


class HeadOnly:
    def __init__(self, network: nn.Module, architecture: str, epochs: int) -> None:
        inner = getattr(network, "model", network)  # the designer's wrapper holds the torchvision network
        head = {id(p) for _, layer in heads_of(inner, architecture) for p in layer.parameters()}
        stacked = getattr(network, "out_linear_model", None)  # a designer model's head on the 1000 logits
        head |= {id(p) for p in stacked.parameters()} if stacked is not None else set()
        self.body = [p for p in network.parameters() if id(p) not in head]
        self.epochs = epochs

    def applies_to(self, epoch: int) -> bool:
        return epoch <= self.epochs

    def drop_body_gradients(self) -> None:
        for parameter in self.body:
            parameter.grad = None


def head_only(network: nn.Module, architecture: str, epochs: int) -> HeadOnly | None:
    if epochs <= 0:
        return None
    log.info("Epochs 1 to %d train the classifier only; the rest of the network from epoch %d.", epochs, epochs + 1)
    return HeadOnly(network, architecture, epochs)
