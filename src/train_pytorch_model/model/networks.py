"""The networks of the allowlist (families.py) as torchvision builds them, the designer's wrapper around them,
and their classifier heads."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torchvision
from torch import nn

from .families import family_of_architecture, patch_size


class DesignerNet(nn.Module):
    """The designer's wrapper: the torchvision network is the submodule 'model', so state-dict keys start
    with 'model.'. Models the designer trained from pretrained weights also have 'out_linear_model', a Linear
    stacked on the 1000 ImageNet logits; we keep it only to read such models, and never create it."""

    def __init__(self, network: nn.Module, stacked_head: nn.Linear | None = None) -> None:
        super().__init__()
        self.model = network
        if stacked_head is not None:
            self.out_linear_model = stacked_head

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Weights saved as plain tensors (a weights file, a checkpoint, the best epoch's copy) get the module
        versions the network's own code writes: some modules refuse a state without them (MNASNet), others
        read old layouts by them (BatchNorm)."""
        if getattr(state_dict, "_metadata", None) is None:
            versioned = OrderedDict(state_dict)
            versioned._metadata = self.state_dict()._metadata  # type: ignore[attr-defined]
            state_dict = versioned
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        head = getattr(self, "out_linear_model", None)
        return head(logits) if head is not None else logits


def build_network(
    architecture: str, num_classes: int = 1000, flags: Mapping[str, bool] | None = None, side: int | None = None
) -> nn.Module:
    """A randomly initialised torchvision network (never downloads). flags: the family's init parameters;
    side: the input side a Vision Transformer is built for (its position embeddings depend on it)."""
    options = builder_options(architecture, flags, side)
    return torchvision.models.get_model(architecture, weights=None, num_classes=num_classes, **options)


def builder_options(architecture: str, flags: Mapping[str, bool] | None, side: int | None = None) -> dict:
    family = family_of_architecture(architecture)
    options: dict = {name: bool(value) for name, value in (flags or {}).items()}
    if family.name in ("googlenet", "inception"):
        options.setdefault("init_weights", True)  # torchvision's own initialisation, without its warning
    if family.name == "vision_transformer" and side:
        options["image_size"] = side
    return options


def heads_of(network: nn.Module, architecture: str) -> list[tuple[str, nn.Module]]:
    """(path, layer) of each classifier layer the network has, the main one first (auxiliary classifiers that
    were switched off are absent)."""
    found = []
    for path in family_of_architecture(architecture).heads:
        try:
            layer = network.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            found.append((path, layer))
    if not found:
        raise TypeError(f"{type(network).__name__} ({architecture}) has no classifier layer where torchvision puts it")
    return found


def classifier_of(network: nn.Module, architecture: str) -> tuple[str, nn.Module]:
    """The main classifier layer: a Linear, or SqueezeNet's 1x1 convolution."""
    return heads_of(network, architecture)[0]


def outputs_of(layer: nn.Module) -> int:
    return int(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)


def replace_classifiers(network: nn.Module, architecture: str, num_classes: int) -> list[str]:
    """Fresh classifiers for num_classes in place of the ImageNet ones (the auxiliary ones too), never a layer
    stacked on the 1000 logits. Returns their paths."""
    replaced = []
    for path, old in heads_of(network, architecture):
        bias = old.bias is not None  # MaxViT's classifier has none
        if isinstance(old, nn.Linear):
            fresh: nn.Module = nn.Linear(old.in_features, num_classes, bias=bias)
        else:
            fresh = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, bias=bias)
        parent, _, name = path.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, name, fresh)
        replaced.append(path)
    if family_of_architecture(architecture).name == "squeezenet":
        network.num_classes = num_classes
    return replaced


def build_pretrained_network(architecture: str, flags: Mapping[str, bool] | None = None) -> nn.Module:
    """The network with its ImageNet weights (the weights' DEFAULT), through torchvision's weights API: read
    from the torch hub cache ($TORCH_HOME/hub/checkpoints) when the file is there, downloaded otherwise.
    torchvision also renames old keys and sets what the weights need (Inception's transform_input), which is
    why the builder and not a bare state-dict load is used."""
    weights = torchvision.models.get_model_weights(architecture).DEFAULT
    # torchvision unpickles the cached file without weights_only: read it weights-only first, so that a file
    # planted in the cache that holds anything but tensors is refused before it can run.
    torch.hub.load_state_dict_from_url(weights.url, progress=False, map_location="cpu", weights_only=True)
    options = {name: bool(value) for name, value in (flags or {}).items()}
    # torchvision builds pretrained Inception and GoogLeNet with their auxiliary classifiers (the weights hold
    # them) and refuses to be told otherwise: they are taken off afterwards when not wanted.
    aux_logits = options.pop("aux_logits", None)
    network = torchvision.models.get_model(architecture, weights=weights, progress=False, **options)
    if aux_logits is False and getattr(network, "aux_logits", False):
        network.aux_logits = False
        for name in ("AuxLogits", "aux1", "aux2"):
            if hasattr(network, name):
                setattr(network, name, None)
    return network


def pretrained_weights_name(architecture: str) -> str:
    """The name of the weights build_pretrained_network uses (IMAGENET1K_V2 ...)."""
    return torchvision.models.get_model_weights(architecture).DEFAULT.name


def recorded_options(network: nn.Module, architecture: str) -> dict[str, bool]:
    """The init parameters the pretrained weights set, as the built network has them (Inception's
    transform_input), so that the same network is built again from the folder."""
    family = family_of_architecture(architecture)
    return {name: bool(getattr(network, name)) for name in family.recorded if hasattr(network, name)}


def vit_side(state: Mapping[str, torch.Tensor], architecture: str, prefix: str = "model.") -> int | None:
    """The input side a Vision Transformer's weights were made for, from its position embeddings."""
    embedding = state.get(f"{prefix}encoder.pos_embedding")
    if family_of_architecture(architecture).name != "vision_transformer" or embedding is None:
        return None
    grid = round((embedding.shape[1] - 1) ** 0.5)
    return grid * patch_size(architecture)


def resize_position_embeddings(
    state: dict[str, torch.Tensor], architecture: str, side: int, prefix: str = "model."
) -> dict[str, torch.Tensor]:
    """A Vision Transformer's weights for another input side: its position embeddings interpolated (bicubic)
    to the new grid of patches, torchvision's own way."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    inner = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    resized = interpolate_embeddings(side, patch_size(architecture), inner, interpolation_mode="bicubic")
    return {**state, f"{prefix}encoder.pos_embedding": resized["encoder.pos_embedding"]}


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
