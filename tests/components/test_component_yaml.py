"""component.yaml and its environment, as azure-ai-ml loads and validates them offline, and its rendered command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT
from train_pytorch_model.local.command_line import load_component_spec, render_command
from train_pytorch_model.local.offline_credential import OfflineCredential, offline_ml_client

ROOT = REPO_ROOT


aml = pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is an optional extra: pip install .[azure]")


COMPONENT_YAML = ROOT / "component.yaml"


ENVIRONMENT_YAML = ROOT / "environment" / "environment.yaml"


CONDA_YAML = ROOT / "conda.yaml"


DATA_INPUTS = ("untrained_model", "training_dataset", "validation_dataset")


# name: (type, default, min, optional)
PARAMETERS: dict[str, tuple[str, Any, Any, bool]] = {
    "epochs": ("integer", 5, 1, False),
    "batch_size": ("integer", 16, 1, False),
    "learning_rate": ("number", 0.001, 5e-324, False),
    "random_seed": ("integer", 1, None, False),
    "patience": ("integer", 3, 1, False),
    "image_size": ("integer", None, 16, True),
    "crop_ratio": ("number", None, 1.0, True),
    "num_workers": ("integer", None, 0, True),
    "validation_fraction": ("number", 0.2, 0.01, False),
    "optimizer": ("string", "sgd", None, False),
    "label_smoothing": ("number", 0.0, 0.0, False),
    "warmup_epochs": ("number", 0.0, 0.0, False),
    "augmentation": ("string", "none", None, False),
    "gradient_accumulation": ("integer", 1, 1, False),
    "ema_decay": ("number", 0.0, 0.0, False),
    "freeze_epochs": ("integer", 0, 0, False),
    "class_weighting": ("string", "inverse_sqrt", None, False),
}
# The designer's validation input, optional here: without it a share of the training set is held out.
OPTIONAL_DATA_INPUTS = ("validation_dataset",)


@pytest.fixture(scope="module")
def component() -> Any:
    return aml.load_component(source=COMPONENT_YAML)


@pytest.fixture(scope="module")
def environment() -> Any:
    return aml.load_environment(source=ENVIRONMENT_YAML)


def test_identity(component: Any) -> None:
    assert component.type == "command"
    assert component.name == "train_pytorch_model"
    assert component.display_name == "Train PyTorch Model"
    assert component.version == "0.1.0"
    assert component.is_deterministic is True
    for error in (
        "InvalidModelDirectoryError",
        "NotLabeledDatasetError",
        "InvalidDatasetError",
        "InvalidParameterError",
    ):
        assert error in component.description


def test_inputs_are_exactly_the_designer_ones_plus_the_extras(component: Any) -> None:
    assert list(component.inputs) == [*DATA_INPUTS, *PARAMETERS]


@pytest.mark.parametrize("name", DATA_INPUTS)
def test_data_inputs(component: Any, name: str) -> None:
    port = component.inputs[name]
    assert port.type == "uri_folder"
    # azure-ai-ml leaves `optional` as None, not False, when the YAML does not set it.
    assert bool(port.optional) is (name in OPTIONAL_DATA_INPUTS)
    assert port.description


def test_data_input_descriptions_name_designer_types(component: Any) -> None:
    assert "UntrainedModelDirectory" in component.inputs["untrained_model"].description
    for name in ("training_dataset", "validation_dataset"):
        description = component.inputs[name].description
        assert "ImageDirectory" in description
        assert "ImageFolder" in description
        assert "zip/tar" in description


@pytest.mark.parametrize("name", PARAMETERS)
def test_parameters(component: Any, name: str) -> None:
    kind, default, minimum, optional = PARAMETERS[name]
    port = component.inputs[name]
    assert port.type == kind
    assert port.default == default
    assert port.min == minimum
    assert bool(port.optional) is optional
    assert port.description


def test_learning_rate_minimum_is_the_smallest_positive_double(component: Any) -> None:
    minimum = component.inputs["learning_rate"].min
    assert isinstance(minimum, float)
    assert minimum > 0
    assert minimum / 2 == 0


def test_output(component: Any) -> None:
    assert list(component.outputs) == ["trained_model"]
    assert component.outputs["trained_model"].type == "uri_folder"
    assert "ModelDirectory" in component.outputs["trained_model"].description


def test_command(component: Any) -> None:
    expected = (
        "python -m train_pytorch_model.train"
        " --untrained-model ${{inputs.untrained_model}}"
        " --training-dataset ${{inputs.training_dataset}}"
        " $[[--validation-dataset ${{inputs.validation_dataset}}]]"
        " --epochs ${{inputs.epochs}}"
        " --batch-size ${{inputs.batch_size}}"
        " --learning-rate ${{inputs.learning_rate}}"
        " --random-seed ${{inputs.random_seed}}"
        " --patience ${{inputs.patience}}"
        " $[[--image-size ${{inputs.image_size}}]]"
        " $[[--crop-ratio ${{inputs.crop_ratio}}]]"
        " $[[--num-workers ${{inputs.num_workers}}]]"
        " --validation-fraction ${{inputs.validation_fraction}}"
        " --optimizer ${{inputs.optimizer}}"
        " --label-smoothing ${{inputs.label_smoothing}}"
        " --warmup-epochs ${{inputs.warmup_epochs}}"
        " --augmentation ${{inputs.augmentation}}"
        " --gradient-accumulation ${{inputs.gradient_accumulation}}"
        " --ema-decay ${{inputs.ema_decay}}"
        " --freeze-epochs ${{inputs.freeze_epochs}}"
        " --class-weighting ${{inputs.class_weighting}}"
        " --trained-model ${{outputs.trained_model}}"
    )
    assert " ".join(component.command.split()) == expected


def test_code_distribution_resources(component: Any) -> None:
    assert Path(component.code) == Path("src")
    assert (ROOT / "src" / "train_pytorch_model" / "__init__.py").is_file()
    assert component.distribution.type == "pytorch"
    assert component.resources["instance_count"] == 1


def test_validates_offline() -> None:
    """MLClient.components.validate runs the SDK's local validation; no token, no network."""
    credential = OfflineCredential()
    client = offline_ml_client(credential)
    result = client.components.validate(aml.load_component(source=COMPONENT_YAML))
    assert result.passed, result.error_messages
    assert credential.calls == 0

    broken = aml.load_component(source=COMPONENT_YAML)
    broken.command = broken.command.replace("inputs.epochs", "inputs.epoch")
    result = client.components.validate(broken)
    assert not result.passed
    assert "inputs.epoch" in str(result.error_messages)


def test_environment_yaml(environment: Any) -> None:
    assert environment.name == "train-pytorch-model-gpu"
    assert environment.version == "1"
    assert environment.image.startswith("mcr.microsoft.com/azureml/")
    assert "cuda12" in environment.image
    assert environment.conda_file == yaml.safe_load(CONDA_YAML.read_text(encoding="utf-8"))


def test_component_and_environment_yaml_agree(component: Any, environment: Any) -> None:
    assert component.environment.image == environment.image
    assert component.environment.conda_file == environment.conda_file


def _pip_pins() -> dict[str, str]:
    conda = yaml.safe_load(CONDA_YAML.read_text(encoding="utf-8"))
    pip = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    pins = {}
    for requirement in pip:
        name, _, version = requirement.partition("==")
        assert version, f"{requirement} is not pinned"
        pins[name.lower()] = version
    return pins


def test_conda_pins_the_packages_the_code_needs() -> None:
    conda = yaml.safe_load(CONDA_YAML.read_text(encoding="utf-8"))
    assert "python=3.11" in conda["dependencies"]
    assert "pip" in conda["dependencies"]
    pins = _pip_pins()
    for package in (
        "torch",
        "torchvision",
        "mlflow",
        "azureml-mlflow",
        "pyyaml",
        "pillow",
        "pillow-heif",
        "numpy",
        "pandas",
    ):
        assert package in pins


def test_conda_pins_satisfy_pyproject() -> None:
    """The image must install versions the project declares it supports."""
    tomllib = pytest.importorskip("tomllib")
    requirements = pytest.importorskip("packaging.requirements")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = _pip_pins()
    for dependency in project["dependencies"]:
        requirement = requirements.Requirement(dependency)
        pinned = pins.get(requirement.name.lower())
        if pinned is not None:
            assert requirement.specifier.contains(pinned), f"conda.yaml pins {requirement.name}=={pinned}"


def test_rendered_command_with_defaults() -> None:
    command = render_command(
        load_component_spec(COMPONENT_YAML),
        {"untrained_model": "/mnt/model", "training_dataset": "/mnt/train", "validation_dataset": "/mnt/val"},
        {"trained_model": "/mnt/out"},
    )
    assert command == (
        "python -m train_pytorch_model.train --untrained-model /mnt/model --training-dataset /mnt/train"
        " --validation-dataset /mnt/val --epochs 5 --batch-size 16 --learning-rate 0.001 --random-seed 1"
        " --patience 3 --validation-fraction 0.2 --optimizer sgd --label-smoothing 0.0 --warmup-epochs 0.0"
        " --augmentation none --gradient-accumulation 1 --ema-decay 0.0"
        " --freeze-epochs 0 --class-weighting inverse_sqrt --trained-model /mnt/out"
    )
