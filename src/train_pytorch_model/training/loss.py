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
    def __init__(self, aux_weight: float = 0.0) -> None:
        self.aux_weight = aux_weight

    def __call__(self, outputs: torch.Tensor | Sequence, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to step on, the main classifier's logits)."""
        logits, auxiliary = main_and_auxiliary(outputs)
        loss = F.cross_entropy(logits.float(), targets)
        for aux in auxiliary:
            loss = loss + self.aux_weight * F.cross_entropy(aux.float(), targets)
        return loss, logits
