"""Loading the network of a model folder, for training (an untrained model) and for scoring (a trained one).

One function reads both: the network the weights were saved from is rebuilt through the allowlist, and its
weights are checked tensor by tensor, so that weights of another architecture are refused with a clear
message, never half-loaded. Training then fits a fresh classifier for its classes where the saved one does not
fit; scoring uses the network as saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.images import Resize
from ..errors import InvalidModelDirectoryError
from ..formats.model_directory import FIX_HINT, ModelSpec, load_weights, read_model_directory
from ..formats.preprocessing import PREPROCESSING_FILE, Preprocessing
from .families import family_of_architecture
from .networks import (
    DesignerNet,
    build_network,
    classifier_of,
    heads_of,
    outputs_of,
    replace_classifiers,
    resize_position_embeddings,
    strip_parallel_prefixes,
    vit_side,
)

STACKED_HEAD = "out_linear_model"  # the designer's Linear stacked on the 1000 ImageNet logits
IMAGENET_CLASSES = 1000


@dataclass
class LoadedNetwork:
    model: DesignerNet
    loaded_keys: list[str]  # the state-dict keys whose tensors came from the weights file
    head_reinitialised: bool = False  # a fresh classifier replaced the saved one (training only)

    def summary(self) -> dict:
        return {"tensors_loaded": len(self.loaded_keys), "head_reinitialised": self.head_reinitialised}


def saved_outputs(state: dict[str, torch.Tensor], architecture: str) -> int | None:
    """The number of outputs of the saved network (its stacked head's, if it has one), from the weights alone."""
    paths = (STACKED_HEAD, *(f"model.{head}" for head in family_of_architecture(architecture).heads[:1]))
    for path in paths:
        weight = state.get(f"{path}.weight")
        if weight is not None and weight.ndim in (2, 4):  # a Linear, or SqueezeNet's 1x1 convolution
            return int(weight.shape[0])
    return None


def load_network(
    spec: ModelSpec, subject: str, fix: str, *, head_optional: bool = False, side: int | None = None
) -> LoadedNetwork:
    """The folder's network with every saved tensor in place. A designer model trained from pretrained weights
    kept the 1000-class ImageNet head and stacked a Linear(1000, C) on it ('out_linear_model'): it is rebuilt
    as saved. head_optional accepts weights without a classifier (training replaces it anyway). side: the input
    side to build a Vision Transformer for (its position embeddings are interpolated when the weights were made
    for another); by default the weights' own."""
    state = strip_parallel_prefixes(load_weights(spec, subject=subject))
    saved_side = vit_side(state, spec.architecture)
    if side and saved_side and side != saved_side:
        state = resize_position_embeddings(state, spec.architecture, side)
    side = side or saved_side
    stacked = state.get(f"{STACKED_HEAD}.weight")
    if stacked is not None and stacked.ndim == 2:
        inner, outputs = int(stacked.shape[1]), int(stacked.shape[0])
        network = build_network(spec.architecture, inner, spec.flags, side)
        model = DesignerNet(network, nn.Linear(inner, outputs))
    else:
        outputs = saved_outputs(state, spec.architecture) or spec.num_classes
        if outputs is None and not head_optional:
            raise _mismatch(spec, subject, fix, "it has no classifier weights")
        model = DesignerNet(build_network(spec.architecture, outputs or IMAGENET_CLASSES, spec.flags, side))
    _check_fit(model, state, spec, subject, fix, head_optional)
    model.load_state_dict(state, strict=False)
    return LoadedNetwork(model, loaded_keys=sorted(state))


def _check_fit(model: nn.Module, state: dict, spec: ModelSpec, subject: str, fix: str, head_optional: bool) -> None:
    """Refuse weights that do not fit the network tensor for tensor. Tensors the network has no place for mean a
    deeper or wider relative (resnet34 weights in a resnet18): its first blocks would fit by name and shape, and
    the rest would be dropped without a word."""
    own = model.state_dict()
    heads = tuple(f"model.{path}." for path, _ in heads_of(model.model, spec.architecture))
    missing = sorted(
        key
        for key, tensor in own.items()
        if (key not in state or tuple(state[key].shape) != tuple(tensor.shape))
        and not (head_optional and key.startswith(heads) and key not in state)
    )
    unexpected = sorted(set(state) - set(own))
    if missing:
        raise _mismatch(
            spec, subject, fix, f"{len(missing)} of {len(own)} tensors missing or of another shape, e.g. {missing[0]}"
        )
    if unexpected:
        raise _mismatch(
            spec,
            subject,
            fix,
            f"{len(unexpected)} tensors that a {spec.architecture} does not have, e.g. {unexpected[0]}",
        )


def _mismatch(spec: ModelSpec, subject: str, fix: str, reason: str) -> InvalidModelDirectoryError:
    return InvalidModelDirectoryError(
        f'ModelDirectory "{spec.root}" is invalid: its weights do not fit a {spec.architecture} ({reason}).',
        fix,
        subject=subject,
    )


UNTRAINED_FIX = (
    "The weights file must come from the same architecture as model_spec.yaml names; re-create the untrained "
    "model with the DenseNet, ResNet or Init Image Model component."
)
TRAINED_FIX = "The weights file must come from the architecture model_spec.yaml names. " + FIX_HINT


def load_for_training(
    spec: ModelSpec, num_classes: int, subject: str = "Untrained model", side: int | None = None
) -> LoadedNetwork:
    """The untrained folder's network and weights, with fresh classifiers for num_classes where the saved ones
    have another size. A designer model's stacked head is dropped: training goes on from the network below it."""
    loaded = load_network(spec, subject, UNTRAINED_FIX, head_optional=True, side=side)
    model = loaded.model
    dropped = [f"{STACKED_HEAD}."]
    if hasattr(model, STACKED_HEAD):
        delattr(model, STACKED_HEAD)
    _, head = classifier_of(model.model, spec.architecture)
    reinitialised = outputs_of(head) != num_classes
    if reinitialised:
        dropped += [f"model.{path}." for path in replace_classifiers(model.model, spec.architecture, num_classes)]
    kept = [key for key in loaded.loaded_keys if not key.startswith(tuple(dropped))]
    return LoadedNetwork(model, loaded_keys=kept, head_reinitialised=reinitialised)


TRAINED_SUBJECT = "Trained model"
TRAINED_HINT = "Connect the trained_model output of Train PyTorch Model."


@dataclass
class TrainedModel:
    """A trained model ready to score: the network, its class names and the preprocessing it expects."""

    network: nn.Module
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resizing: Resize  # how images are resized; to no size (each at its own) for designer-trained models

    @property
    def image_size(self) -> tuple[int, int] | None:
        return self.resizing.size


def load_trained_model(path: str | Path) -> TrainedModel:
    spec = read_model_directory(path, subject=TRAINED_SUBJECT)
    network = load_network(spec, TRAINED_SUBJECT, TRAINED_FIX).model.eval()
    outputs = saved_outputs(network.state_dict(), spec.architecture) or 0
    preprocessing = read_preprocessing(spec, TRAINED_SUBJECT)
    classes = preprocessing.classes if preprocessing else spec.classes
    if not classes:
        raise InvalidModelDirectoryError(
            f'ModelDirectory "{spec.root}" is invalid: it has no label map, so it is an untrained model.',
            TRAINED_HINT,
            subject=TRAINED_SUBJECT,
        )
    if len(classes) > outputs:
        raise InvalidModelDirectoryError(
            f'ModelDirectory "{spec.root}" is invalid: its label map names {len(classes)} classes but the network '
            f"has {outputs} outputs.",
            TRAINED_HINT,
            subject=TRAINED_SUBJECT,
        )
    # Outputs the label map does not name are reported by index, as the designer does.
    classes = [str(name) for name in classes] + [str(i) for i in range(len(classes), outputs)]
    if preprocessing:
        return TrainedModel(network, classes, preprocessing.mean, preprocessing.std, preprocessing.resizing())
    return TrainedModel(network, classes, spec.mean, spec.std, Resize(None))


def read_preprocessing(spec: ModelSpec, subject: str) -> Preprocessing | None:
    """The preprocessing a model folder recorded (a model trained by this project), or None."""
    path = spec.root / PREPROCESSING_FILE
    if not path.is_file():
        return None
    try:
        return Preprocessing.load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidModelDirectoryError(
            f"ModelDirectory \"{spec.root}\" is invalid: '{PREPROCESSING_FILE}' cannot be read ({exc}).",
            "Train the model again, or remove the file to score with the model spec's settings.",
            subject=subject,
        ) from exc
