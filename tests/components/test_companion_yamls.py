"""The companion components' YAMLs (ResNet, DenseNet, Convert to Image Directory, Score Image Model) as
azure-ai-ml reads them, and the ResNet/DenseNet components run through their own command lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import COMPONENTS, REPO_ROOT, component_yaml, run_companion
from train_pytorch_model.formats.model_directory import read_model_directory
from train_pytorch_model.local.command_line import load_component_spec, render_command
from train_pytorch_model.local.offline_credential import OfflineCredential, offline_ml_client
from train_pytorch_model.model.families import DESIGNER_ARCHITECTURES, FAMILIES

# file stem: (name, display name)
IDENTITIES = {
    "resnet": ("resnet", "ResNet"),
    "densenet": ("densenet", "DenseNet"),
    "convert_to_image_directory": ("convert_to_image_directory", "Convert to Image Directory"),
    "score_image_model": ("score_image_model", "Score Image Model"),
    "init_image_model": ("init_image_model", "Init Image Model"),
}


SCHEMA_URL = "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json"


def test_components_folder_holds_exactly_the_companions() -> None:
    assert sorted(p.stem for p in COMPONENTS.glob("*.yaml")) == sorted(IDENTITIES)


@pytest.mark.parametrize("stem", IDENTITIES)
def test_identity_code_and_environment(aml: Any, stem: str) -> None:
    raw = yaml.safe_load(component_yaml(stem).read_text(encoding="utf-8"))
    assert raw["$schema"] == SCHEMA_URL
    component = aml.load_component(source=component_yaml(stem))
    root = aml.load_component(source=REPO_ROOT / "component.yaml")
    name, display_name = IDENTITIES[stem]
    assert component.type == "command"
    assert (component.name, component.display_name) == (name, display_name)
    assert component.version == "0.1.0"
    assert component.is_deterministic is True
    assert len(component.description) > 200 and "**" in component.description
    assert (COMPONENTS / component.code).resolve() == (REPO_ROOT / "src").resolve()
    assert component.environment.image == root.environment.image
    assert component.environment.conda_file == root.environment.conda_file
    for port in [*component.inputs.values(), *component.outputs.values()]:
        assert port.description


def test_all_validate_offline(aml: Any) -> None:
    credential = OfflineCredential()
    client = offline_ml_client(credential)
    for stem in IDENTITIES:
        result = client.components.validate(aml.load_component(source=component_yaml(stem)))
        assert result.passed, (stem, result.error_messages)
    assert credential.calls == 0


@pytest.mark.parametrize(("stem", "flag"), [("resnet", "zero_init_residual"), ("densenet", "memory_efficient")])
def test_model_component_interface(aml: Any, stem: str, flag: str) -> None:
    component = aml.load_component(source=component_yaml(stem))
    family = FAMILIES[stem]
    assert family.flag == flag
    assert list(component.inputs) == ["model_name", "pretrained", flag]
    model_name = component.inputs["model_name"]
    assert model_name.type == "string"
    assert list(model_name.enum) == list(DESIGNER_ARCHITECTURES[stem])
    assert model_name.default == family.default
    assert (component.inputs["pretrained"].type, component.inputs["pretrained"].default) == ("boolean", True)
    assert (component.inputs[flag].type, component.inputs[flag].default) == ("boolean", False)
    assert list(component.outputs) == ["untrained_model"]
    assert component.outputs["untrained_model"].type == "uri_folder"
    option = "--" + flag.replace("_", "-")
    assert " ".join(component.command.split()) == (
        "python -m train_pytorch_model.init_model --model-name ${{inputs.model_name}}"
        f" --pretrained ${{{{inputs.pretrained}}}} {option} ${{{{inputs.{flag}}}}}"
        " --untrained-model ${{outputs.untrained_model}}"
    )


@pytest.mark.parametrize(
    ("stem", "inputs", "outputs"),
    [
        ("convert_to_image_directory", ["input_dataset"], ["output_dataset"]),
        ("score_image_model", ["trained_model", "dataset"], ["scored_dataset"]),
    ],
)
def test_data_component_interface(aml: Any, stem: str, inputs: list[str], outputs: list[str]) -> None:
    component = aml.load_component(source=component_yaml(stem))
    assert list(component.inputs) == inputs
    assert list(component.outputs) == outputs
    for port in [*component.inputs.values(), *component.outputs.values()]:
        assert port.type == "uri_folder"
    assert not any(port.optional for port in component.inputs.values())


def test_booleans_render_as_azure_ml_renders_them() -> None:
    """azure-ai-ml sends a bound bool as str(value), 'True'/'False'; init_model's parse_bool reads either case."""
    command = render_command(
        load_component_spec(component_yaml("densenet")), {"pretrained": False}, {"untrained_model": "/mnt/out"}
    )
    assert command == (
        "python -m train_pytorch_model.init_model --model-name densenet201 --pretrained False"
        " --memory-efficient False --untrained-model /mnt/out"
    )


# ----------------------------------------------------------------------------------------------------------------
# ResNet / DenseNet


@pytest.mark.parametrize(
    ("stem", "inputs", "flag"),
    [
        ("resnet", {"model_name": "resnet18", "pretrained": False}, "zero_init_residual"),
        ("densenet", {"model_name": "densenet121", "pretrained": False, "memory_efficient": True}, "memory_efficient"),
    ],
)
def test_model_components_write_an_untrained_model(tmp_path: Path, stem: str, inputs: dict, flag: str) -> None:
    out = tmp_path / "untrained_model"
    result = run_companion(stem, inputs, {"untrained_model": out})
    assert result.returncode == 0, result.stderr
    spec = read_model_directory(out)
    assert spec.family.name == stem
    assert spec.architecture == inputs["model_name"]
    assert spec.pretrained is False
    assert spec.flags == {flag: inputs.get(flag, False)}
    assert spec.classes is None  # untrained: no label map
    assert not (out / ".staging").exists()
