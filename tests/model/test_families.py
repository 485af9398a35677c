"""Every image classifier torchvision builds, through the allowlist: the list kept in step with torchvision's,
each network built from its folder's facts (its class, its classifier layers, BatchNorm or not), one training
step at its smallest size, written as a model folder and read back by the loader that scoring uses, and the
Vision Transformer's position embeddings moved to another size."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from train_pytorch_model.formats.model_directory import read_model_directory, write_model_directory
from train_pytorch_model.model.families import (
    ARCHITECTURES,
    FAMILIES,
    TORCHVISION_MODULE,
    family_of_architecture,
    has_batchnorm,
    training_side,
)
from train_pytorch_model.model.loading import load_network
from train_pytorch_model.model.networks import (
    DesignerNet,
    build_network,
    heads_of,
    outputs_of,
    replace_classifiers,
    resize_position_embeddings,
    vit_side,
)
from train_pytorch_model.training.loss import TrainingLoss

# Networks too large to train a step of in the suite's time (about 100 million parameters and more): built on
# the meta device and checked, not stepped.
HEAVY = {
    "convnext_large", "regnet_y_32gf", "regnet_y_128gf", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16",
    "vgg16_bn", "vgg19", "vgg19_bn", "vit_h_14", "vit_l_16", "vit_l_32", "efficientnet_v2_l", "wide_resnet101_2",
}  # fmt: skip


def test_the_allowlist_is_exactly_what_torchvision_lists():
    """A newer torchvision that adds or drops a classifier fails here, instead of changing the choices silently."""
    listed = torchvision.models.list_models(module=torchvision.models)
    assert sorted(ARCHITECTURES) == sorted(listed)
    assert len(ARCHITECTURES) == len(set(ARCHITECTURES))


def test_every_family_names_a_torchvision_class_and_its_default():
    for family in FAMILIES.values():
        assert family.default in family.architectures
        assert isinstance(getattr(torchvision.models, family.class_name), type)
        if family.module == TORCHVISION_MODULE:
            assert family.name not in ("resnet", "densenet")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_network_builds_steps_and_reloads_as_the_allowlist_says(architecture, tmp_path):
    family = family_of_architecture(architecture)
    side = training_side(architecture, 32, family.flags.get("aux_logits", True))
    # The heavy ones are built without memory or initialisation, their structure is what is checked (RegNet
    # computes its widths with tensors, which need a real device).
    meta = architecture in HEAVY and not architecture.startswith("regnet")
    with torch.device("meta") if meta else contextlib.nullcontext():
        network = build_network(architecture, num_classes=3, flags=family.flags, side=side)
    assert type(network).__name__ == family.class_name
    heads = heads_of(network, architecture)
    assert heads[0][0] == family.heads[0] and all(outputs_of(layer) == 3 for _, layer in heads)
    norms = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())
    assert norms == has_batchnorm(architecture)
    if architecture in HEAVY:
        return
    network.train()
    images, targets = torch.randn(2, 3, side, side), torch.tensor([0, 2])
    loss, logits = TrainingLoss(family.aux_weight)(network(images), targets)
    loss.backward()
    assert logits.shape == (2, 3) and torch.isfinite(loss)
    assert all(p.grad is not None for _, layer in heads for p in layer.parameters())
    assert_reloads_alike(DesignerNet(network), architecture, side, tmp_path)


def assert_reloads_alike(trained: nn.Module, architecture: str, side: int, folder: Path) -> None:
    """The stepped network (BatchNorm statistics moved) written as a model folder and rebuilt from it by the
    loader Score Image Model and the pyfunc model use: the same outputs."""
    family = family_of_architecture(architecture)
    init_params = {"model_name": architecture, "pretrained": False, **family.flags}
    write_model_directory(folder, trained.state_dict(), family, init_params)
    loaded = load_network(read_model_directory(folder, "Trained model"), "Trained model", "").model
    images = torch.randn(2, 3, side, side)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.eval()(images), trained.eval()(images), atol=1e-5, rtol=0)
    shutil.rmtree(folder)  # up to 0.5 GB a network, 64 networks: not kept among pytest's last runs


@pytest.mark.parametrize("architecture", ["googlenet", "inception_v3", "squeezenet1_1", "maxvit_t"])
def test_fresh_classifiers_replace_every_imagenet_one(architecture):
    """Auxiliary classifiers too (Inception, GoogLeNet), SqueezeNet's 1x1 convolution, MaxViT's bias-less
    Linear: each gets the new number of classes and keeps its kind."""
    options = {"aux_logits": True} if architecture in ("googlenet", "inception_v3") else {}
    network = build_network(architecture, flags=options)
    before = {path: layer for path, layer in heads_of(network, architecture)}
    replaced = replace_classifiers(network, architecture, 5)
    assert replaced == list(before)
    for path, layer in heads_of(network, architecture):
        assert outputs_of(layer) == 5 and type(layer) is type(before[path])
        assert (layer.bias is None) == (before[path].bias is None)


def test_sizes_follow_each_network():
    assert training_side("resnet18", 20) == 32  # the smallest side any image gets
    assert training_side("alexnet", 32) == 64
    assert training_side("inception_v3", 100) == 299 and training_side("inception_v3", 100, aux_logits=False) == 100
    assert training_side("maxvit_t", 64) == training_side("maxvit_t", 500) == 224
    assert training_side("vit_b_16", 40) == 48 and training_side("vit_b_32", 40) == 64  # multiples of the patch


def test_a_vision_transformer_moves_to_another_size_with_its_position_embeddings():
    torch.manual_seed(0)
    native = DesignerNet(build_network("vit_b_32", num_classes=4))  # built for 224: a 7x7 grid and its class token
    state = native.state_dict()
    assert vit_side(state, "vit_b_32") == 224
    small = resize_position_embeddings(state, "vit_b_32", 64)
    assert small["model.encoder.pos_embedding"].shape == (1, 2 * 2 + 1, 768)
    # The class token's embedding stays; the grid's are resampled, not cut.
    assert torch.equal(small["model.encoder.pos_embedding"][:, 0], state["model.encoder.pos_embedding"][:, 0])
    resized = DesignerNet(build_network("vit_b_32", num_classes=4, side=64))
    resized.load_state_dict(small, strict=True)
    assert vit_side(resized.state_dict(), "vit_b_32") == 64
    assert resized.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)
