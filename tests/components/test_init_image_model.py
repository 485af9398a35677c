"""Init Image Model: every torchvision image classifier as an UntrainedModelDirectory, through the component's
own command line; pretrained weights from a hub cache the tests write (no network), with their own
preprocessing carried into training and scoring; and one network of each family trained, written, and scored
alike by mlflow.pytorch, the pyfunc model and Score Image Model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import (
    REPO_ROOT,
    assert_user_error,
    cache_weights,
    component_yaml,
    run_companion,
    run_in_process,
    write_digits_subset,
)
from train_pytorch_model.formats.dataframe_directory import DATA_FILE
from train_pytorch_model.formats.model_directory import read_model_directory
from train_pytorch_model.formats.preprocessing import Preprocessing
from train_pytorch_model.init_model import write_untrained_model
from train_pytorch_model.local.command_line import load_component_spec, render_command
from train_pytorch_model.model.families import ARCHITECTURES, FAMILIES, TORCHVISION_MODULE
from train_pytorch_model.output.scoring import image_to_array, probability_columns
from train_pytorch_model.train import main as train_main

STEM = "init_image_model"
# The smallest network of each family. VGG's smallest has 133 million parameters: its family is built and
# stepped in tests/model/test_families.py instead. The Vision Transformer goes end to end from pretrained
# weights below.
REPRESENTATIVES = [
    "resnet18", "densenet121", "alexnet", "convnext_tiny", "efficientnet_b0", "googlenet", "inception_v3",
    "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "shufflenet_v2_x0_5",
    "squeezenet1_1", "swin_t",
]  # fmt: skip


def test_the_yaml_offers_every_architecture_and_each_familys_flags(aml: Any):
    component = aml.load_component(source=component_yaml(STEM))
    flags = ["zero_init_residual", "memory_efficient", "aux_logits"]
    assert list(component.inputs) == ["model_name", "pretrained", *flags]
    assert list(component.inputs["model_name"].enum) == list(ARCHITECTURES)
    assert all(component.inputs[flag].optional for flag in flags)
    assert {flag for family in FAMILIES.values() for flag in family.flags} == set(flags)
    spec = load_component_spec(component_yaml(STEM))
    assert render_command(spec, {"model_name": "googlenet", "aux_logits": True}, {"untrained_model": "/o"}) == (
        "python -m train_pytorch_model.init_model --model-name googlenet --pretrained True --aux-logits True "
        "--untrained-model /o"
    )


def test_a_new_family_is_written_under_torchvisions_names(tmp_path):
    out = tmp_path / "untrained"
    result = run_companion(STEM, {"model_name": "mobilenet_v3_small", "pretrained": False}, {"untrained_model": out})
    assert result.returncode == 0, result.stderr
    spec = read_model_directory(out)
    assert (spec.family.name, spec.architecture, spec.pretrained, spec.flags) == (
        "mobilenet_v3", "mobilenet_v3_small", False, {},
    )  # fmt: skip
    extras = yaml.safe_load((out / "model_spec.yaml").read_text(encoding="utf-8"))["flavor_extras"]
    assert (extras["module"], extras["class"]) == (TORCHVISION_MODULE, "MobileNetV3")


def test_a_flag_of_another_family_is_refused(tmp_path):
    result = run_companion(
        STEM,
        {"model_name": "efficientnet_b0", "pretrained": False, "zero_init_residual": True},
        {"untrained_model": tmp_path / "out"},
    )
    assert_user_error(result, "InvalidParameterError", 3)
    assert "zero_init_residual is for ResNet, not EfficientNet" in result.stderr
    assert not (tmp_path / "out" / "_meta.yaml").exists()


# ----------------------------------------------------------------------------------------------------------------
# pretrained weights, read from a cache with no network, and their preprocessing


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    """Two digit classes: 6 training and 2 validation images each (a batch of 8 is one full step)."""
    root = tmp_path_factory.mktemp("two_digits")
    train = write_digits_subset(root / "train", classes=(0, 1), per_class=6)
    return train, write_digits_subset(root / "valid", classes=(0, 1), per_class=2, offset=30)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow store for the module (creating one takes seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")
        yield


def train(untrained: Path, images: tuple[Path, Path], output: Path, *extra: str) -> None:
    arguments = ["--untrained-model", str(untrained), "--training-dataset", str(images[0])]
    arguments += ["--validation-dataset", str(images[1]), "--trained-model", str(output)]
    assert train_main([*arguments, "--epochs", "1", "--batch-size", "8", *extra]) == 0


def test_pretrained_weights_bring_their_own_preprocessing_to_training_and_scoring(
    tmp_path, monkeypatch, no_network, images, tracking
):
    """EfficientNet-B0's weights were trained on bicubic resizes to 256, centre-cropped to 224: the trained
    model records that recipe at its own size, and Score Image Model prepares images the same way."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = cache_weights(tmp_path / "torch_home", "efficientnet_b0")
    untrained = tmp_path / "untrained"
    write_untrained_model(untrained, "efficientnet_b0", pretrained=True)
    spec = read_model_directory(untrained)
    assert spec.pretrained and spec.weights_name == "IMAGENET1K_V1"
    saved = torch.load(untrained / "model", weights_only=True)
    assert all(torch.equal(saved[f"model.{key}"], value) for key, value in cached.items())

    output = tmp_path / "trained"
    train(untrained, images, output)
    recorded = Preprocessing.load(output / "preprocessing.json")
    assert (recorded.resize, recorded.fit, recorded.crop_ratio) == ("bicubic", "center_crop", 256 / 224)
    assert recorded.mean == (0.485, 0.456, 0.406) and recorded.std == (0.229, 0.224, 0.225)
    assert read_model_directory(output, "Trained model").init_params["pretrained"] is False
    assert_scored_alike(output, images[1], tmp_path / "scored")


def test_weights_that_set_the_networks_options_record_them(tmp_path, monkeypatch, no_network):
    """torchvision builds pretrained GoogLeNet with transform_input on and its auxiliary classifiers off; the
    folder says so, so that training and scoring build the same network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache_weights(tmp_path / "torch_home", "googlenet")
    write_untrained_model(tmp_path / "untrained", "googlenet", pretrained=True)
    spec = read_model_directory(tmp_path / "untrained")
    assert spec.flags == {"aux_logits": False, "transform_input": True}
    assert not any(key.startswith("model.aux") for key in torch.load(tmp_path / "untrained" / "model"))


def test_a_pretrained_vision_transformer_trains_at_another_size(tmp_path, monkeypatch, no_network, images, tracking):
    """Its 224x224 position embeddings are interpolated to the training size (32: a 1x1 grid of 32-pixel
    patches), and the trained model is rebuilt at that size to score."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache_weights(tmp_path / "torch_home", "vit_b_32")
    write_untrained_model(tmp_path / "untrained", "vit_b_32", pretrained=True)
    output = tmp_path / "trained"
    train(tmp_path / "untrained", images, output)
    assert Preprocessing.load(output / "preprocessing.json").image_size == (32, 32)
    embedding = torch.load(output / "model", weights_only=True)["model.encoder.pos_embedding"]
    assert embedding.shape == (1, 2, 768)
    assert_scored_alike(output, images[1], tmp_path / "scored")


# ----------------------------------------------------------------------------------------------------------------
# every family, end to end


def assert_scored_alike(output: Path, valid: Path, scored: Path) -> None:
    """mlflow.pytorch's network, the pyfunc model and Score Image Model (through its YAML's command line) give
    the same probabilities."""
    paths = sorted(str(p) for p in valid.rglob("*.png"))
    preprocessing = Preprocessing.load(output / "preprocessing.json")
    network = mlflow.pytorch.load_model(str(output)).eval()
    arrays = np.stack([image_to_array(path, preprocessing.resizing()) for path in paths])
    tensor = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (preprocessing.mean, preprocessing.std))
    with torch.inference_mode():
        direct = torch.softmax(network((tensor - mean) / std), dim=1).numpy()
    columns = probability_columns(preprocessing.classes)
    pyfunc = mlflow.pyfunc.load_model(str(output)).predict(paths)[columns].to_numpy()
    assert (
        run_in_process(
            component_yaml("score_image_model"), {"trained_model": output, "dataset": valid}, {"scored_dataset": scored}
        )
        == 0
    )
    table = pd.read_parquet(scored / DATA_FILE)  # in the listing's order: sorted paths, as here
    assert list(table["category"]) == [Path(path).parent.name for path in paths]
    from_score = table[columns].to_numpy()
    np.testing.assert_allclose(pyfunc, direct, atol=1e-5)
    np.testing.assert_allclose(from_score, direct, atol=1e-5)


@pytest.mark.parametrize("architecture", REPRESENTATIVES)
def test_each_family_trains_writes_and_scores_alike(tmp_path, architecture, images, tracking):
    """Init Image Model, Train PyTorch Model and Score Image Model through their YAMLs' own command lines."""
    torch.manual_seed(0)
    untrained, output, scored = tmp_path / "untrained", tmp_path / "trained", tmp_path / "scored"
    init = {"model_name": architecture, "pretrained": False}
    assert run_in_process(component_yaml(STEM), init, {"untrained_model": untrained}) == 0
    datasets = {"untrained_model": untrained, "training_dataset": images[0], "validation_dataset": images[1]}
    hyperparameters = {"epochs": 1, "batch_size": 8}
    assert run_in_process(REPO_ROOT / "component.yaml", datasets | hyperparameters, {"trained_model": output}) == 0
    spec = read_model_directory(output, "Trained model")
    assert (spec.architecture, spec.classes, spec.num_classes) == (architecture, ["0", "1"], 2)
    assert os.path.getsize(output / "model") > 0
    assert_scored_alike(output, images[1], scored)
