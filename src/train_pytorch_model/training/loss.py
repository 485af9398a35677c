"""The training loss: cross-entropy on the network's classifier, plus, for the networks that have them
(Inception v3, GoogLeNet), their auxiliary classifiers' at the weight their family trains them with.

Validation and early stopping always use the plain cross-entropy of the main classifier: in evaluation mode the
networks return that one output only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def main_and_auxiliary(outputs: torch.Tensor | Sequence) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """torchvision's Inception and GoogLeNet return (logits, aux ...) named tuples in training mode; an
    auxiliary classifier that was switched off is None."""
    if isinstance(outputs, torch.Tensor):
        return outputs, []
    main, *auxiliary = outputs
    return main, [aux for aux in auxiliary if aux is not None]


class TrainingLoss:
    """Cross-entropy, optionally with label smoothing and class weights (the recipe's), on every classifier."""

    def __init__(
        self, aux_weight: float = 0.0, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None
    ) -> None:
        self.aux_weight = aux_weight
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights

    def __call__(self, outputs: torch.Tensor | Sequence, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to step on, the main classifier's logits)."""
        logits, auxiliary = main_and_auxiliary(outputs)
        loss = self._cross_entropy(logits, targets)
        for aux in auxiliary:
            loss = loss + self.aux_weight * self._cross_entropy(aux, targets)
        return loss, logits

    def _cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, weight=self.class_weights, label_smoothing=self.label_smoothing)


# The exponent of each class's inverse frequency: AutoML's weighted_loss 1 (square root) and 2 (plain).
WEIGHTING_POWER = {"inverse_sqrt": 0.5, "inverse": 1.0}


def class_weights(labels: torch.Tensor, num_classes: int, weighting: str) -> torch.Tensor | None:
    """Per-class weights (N / (C x n_c)) ** power, so that a balanced dataset gets 1 for every class; None for
    'none'. A class without training images (none here: such classes are refused earlier) would get 0."""
    if weighting == "none":
        return None
    counts = torch.bincount(labels.cpu(), minlength=num_classes).double()
    frequency_ratio = torch.where(counts > 0, labels.numel() / (num_classes * counts), torch.zeros_like(counts))
    return frequency_ratio.pow(WEIGHTING_POWER[weighting]).float()
