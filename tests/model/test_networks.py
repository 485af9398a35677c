"""The allowlisted networks: building them, their heads, the designer's wrapper and key prefixes, and pretrained
weights read weights-only from the hub cache with no network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torch import nn

from conftest import base_spec, small_model_folder
from train_pytorch_model.errors import InvalidModelDirectoryError
from train_pytorch_model.formats.model_directory import (
    load_weights,
    read_model_directory,
)
from train_pytorch_model.init_model import write_untrained_model
from train_pytorch_model.model.families import FAMILIES, RESNET_MODULE, family_of_architecture
from train_pytorch_model.model.networks import (
    DesignerNet,
    build_network,
    classifier_of,
    load_matching,
    replace_classifiers,
    strip_parallel_prefixes,
)

# ---------------------------------------------------------------------------------------------------------
# pretrained weights: torchvision's weights API, from the hub cache, with no network


def test_pretrained_weights_come_from_the_hub_cache(tmp_path, monkeypatch, no_network):
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    torch.manual_seed(1234)
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        reference.conv1.weight.fill_(0.123)
        reference.fc.bias.fill_(-0.5)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / os.path.basename(url))

    folder = tmp_path / "pretrained"
    write_untrained_model(folder, "resnet18", pretrained=True)

    spec_yaml = yaml.safe_load((folder / "model_spec.yaml").read_text(encoding="utf-8"))
    assert spec_yaml["flavor_extras"]["init_params"]["pretrained"] is True
    assert "pretrained: true" in (folder / "model_spec.yaml").read_text(encoding="utf-8")

    written = torch.load(folder / "model", map_location="cpu", weights_only=True)
    expected = reference.state_dict()
    assert sorted(written) == sorted(f"model.{k}" for k in expected)
    for key, value in expected.items():
        assert torch.equal(written[f"model.{key}"], value), key
    assert torch.all(written["model.conv1.weight"] == 0.123)
    assert "out_linear_model.weight" not in written

    spec = read_model_directory(folder)
    assert spec.pretrained is True
    assert spec.num_classes is None


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/train_pytorch_model_hub_pwned"),))


def test_a_pickle_planted_in_the_weights_cache_is_refused_not_run(tmp_path, monkeypatch, no_network):
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    torch.save({"conv1.weight": _Planted()}, checkpoints / os.path.basename(url))
    folder = tmp_path / "pretrained"
    with pytest.raises(InvalidModelDirectoryError, match="could not be loaded"):
        write_untrained_model(folder, "resnet18", pretrained=True)
    assert not Path("/tmp/train_pytorch_model_hub_pwned").exists()
    assert not (folder / "_meta.yaml").exists()


def test_pretrained_without_cache_or_network_fails_clearly(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    folder = tmp_path / "pretrained"
    with pytest.raises(InvalidModelDirectoryError) as info:
        write_untrained_model(folder, "resnet18", pretrained=True)
    assert "TORCH_HOME" in str(info.value)
    assert "resnet18" in str(info.value)
    assert not (folder / "_meta.yaml").exists()


# ---------------------------------------------------------------------------------------------------------
# designer core 0.0.60: is_parallel and DataParallel key prefixes


@pytest.mark.parametrize("prefix", ["module.model.", "model.module."])
def test_parallel_prefixes_are_stripped(tmp_path, prefix, golden_untrained_state):
    parallel = {prefix + key[len("model.") :]: value for key, value in golden_untrained_state.items()}
    spec = base_spec()
    spec["flavor_extras"] = {
        "module": RESNET_MODULE,
        "class": "ResNet",
        "is_parallel": True,
        "is_cuda": False,
        "init_params": spec["flavor_extras"]["init_params"],
    }
    folder = small_model_folder(tmp_path / "m", spec=spec, weights=parallel)
    model_spec = read_model_directory(folder)
    state = load_weights(model_spec)
    assert all(key.startswith(prefix) for key in state)

    net = DesignerNet(build_network("resnet18"))
    with pytest.raises(RuntimeError):
        net.load_state_dict(state, strict=True)
    cleaned = strip_parallel_prefixes(state)
    assert sorted(cleaned) == sorted(golden_untrained_state)
    net.load_state_dict(cleaned, strict=True)
    assert torch.equal(net.model.fc.weight, golden_untrained_state["model.fc.weight"])


def test_strip_parallel_prefixes_leaves_plain_keys_alone(golden_untrained_state):
    cleaned = strip_parallel_prefixes(golden_untrained_state)
    assert list(cleaned) == list(golden_untrained_state)
    assert strip_parallel_prefixes({"out_linear_model.weight": torch.zeros(1)}) == {
        "out_linear_model.weight": torch.zeros(1)
    }
    # a 'module' deeper in the name is part of the network, not a wrapper
    deep = {"model.layer1.module.weight": torch.zeros(1)}
    assert list(strip_parallel_prefixes(deep)) == ["model.layer1.module.weight"]


# ---------------------------------------------------------------------------------------------------------
# building networks, their heads and the designer's wrapper


def test_family_of_architecture():
    assert family_of_architecture("resnet18").name == "resnet"
    assert family_of_architecture("wide_resnet50_2").name == "resnet"
    assert family_of_architecture("densenet201").name == "densenet"
    with pytest.raises(KeyError, match="resnet9000"):
        family_of_architecture("resnet9000")
    assert FAMILIES["resnet"].default == "resnext101_32x8d"
    assert FAMILIES["densenet"].default == "densenet201"
    assert FAMILIES["resnet"].default in FAMILIES["resnet"].architectures


def test_build_network_heads_and_flags():
    net = build_network("resnet18", num_classes=5, flags={"zero_init_residual": True})
    assert classifier_of(net, "resnet18")[0] == "fc"
    assert net.fc.out_features == 5
    # zero_init_residual zeroes the last BatchNorm weight in each block
    assert torch.count_nonzero(net.layer1[0].bn2.weight) == 0
    dense = build_network("densenet121", num_classes=3, flags={"memory_efficient": True})
    name, layer = classifier_of(dense, "densenet121")
    assert name == "classifier" and layer.out_features == 3
    assert dense.features.denseblock1.denselayer1.memory_efficient is True
    with pytest.raises(TypeError):
        classifier_of(nn.Sequential(nn.Linear(2, 2)), "resnet18")


def test_replace_classifier_and_load_matching(golden_trained_state):
    net = DesignerNet(build_network("resnet18"))
    assert replace_classifiers(net.model, "resnet18", 2) == ["fc"]
    assert net.model.fc.in_features == 512 and net.model.fc.out_features == 2
    net.load_state_dict(golden_trained_state, strict=True)

    fresh = DesignerNet(build_network("resnet18", num_classes=7))
    loaded, left = load_matching(fresh, golden_trained_state)
    assert left == ["model.fc.bias", "model.fc.weight"]
    assert "model.conv1.weight" in loaded and "model.fc.weight" not in loaded
    assert torch.equal(fresh.model.conv1.weight, golden_trained_state["model.conv1.weight"])


def test_designer_net_stacked_head():
    torch.manual_seed(0)
    network = build_network("resnet18")
    head = nn.Linear(1000, 4)
    net = DesignerNet(network, head).eval()
    assert "out_linear_model.weight" in net.state_dict()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(images), head(network(images)))
        assert DesignerNet(network).eval()(images).shape == (1, 1000)
