"""The networks of the allowlist (families.py) as torchvision builds them, the designer's wrapper around them,
and their classifier heads."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchvision
from torch import nn

from .families import family_of_architecture


class DesignerNet(nn.Module):
    """The designer's wrapper: the torchvision network is the submodule 'model', so state-dict keys start
    with 'model.'. Models the designer trained from pretrained weights also have 'out_linear_model', a Linear
    stacked on the 1000 ImageNet logits; we keep it only to read such models, and never create it."""

    def __init__(self, network: nn.Module, stacked_head: nn.Linear | None = None) -> None:
        super().__init__()
        self.model = network
        if stacked_head is not None:
            self.out_linear_model = stacked_head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        head = getattr(self, "out_linear_model", None)
        return head(logits) if head is not None else logits


def build_network(architecture: str, num_classes: int = 1000, flag: bool = False) -> nn.Module:
    """A randomly initialised torchvision network (never downloads)."""
    family = family_of_architecture(architecture)
    return torchvision.models.get_model(architecture, weights=None, num_classes=num_classes, **{family.flag: flag})


def classifier_of(network: nn.Module) -> tuple[str, nn.Linear]:
    for name in ("fc", "classifier"):
        layer = getattr(network, name, None)
        if isinstance(layer, nn.Linear):
            return name, layer
    raise TypeError(f"{type(network).__name__} has no Linear classifier named fc or classifier")


def replace_classifier(network: nn.Module, num_classes: int) -> None:
    """A fresh classifier for num_classes, in place of the ImageNet one (not a Linear stacked on its logits)."""
    name, old = classifier_of(network)
    setattr(network, name, nn.Linear(old.in_features, num_classes))


def build_pretrained_network(architecture: str, flag: bool = False) -> nn.Module:
    """The network with its ImageNet-1k weights, through torchvision's weights API: read from the torch hub
    cache ($TORCH_HOME/hub/checkpoints) when the file is there, downloaded otherwise. torchvision also renames
    the old DenseNet keys, which is why the builder and not a bare state-dict load is used."""
    family = family_of_architecture(architecture)
    weights = torchvision.models.get_model_weights(architecture).DEFAULT
    # torchvision unpickles the cached file without weights_only: read it weights-only first, so that a file
    # planted in the cache that holds anything but tensors is refused before it can run.
    torch.hub.load_state_dict_from_url(weights.url, progress=False, map_location="cpu", weights_only=True)
    return torchvision.models.get_model(architecture, weights=weights, progress=False, **{family.flag: flag})


def strip_parallel_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as a plain DesignerNet has them: drop DataParallel/DDP 'module.' segments (designer core 0.0.60
    saved DataParallel models with is_parallel: true)."""
    cleaned = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        parts = [p for i, p in enumerate(parts) if not (p == "module" and i < 2)]
        cleaned[".".join(parts)] = value
    return cleaned


def load_matching(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor whose name and shape fit. Returns (loaded keys, model keys left as initialised)."""
    own = model.state_dict()
    fitting = {k: v for k, v in state_dict.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    model.load_state_dict(fitting, strict=False)
    return sorted(fitting), sorted(set(own) - set(fitting))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
