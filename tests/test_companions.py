"""The v2 companion components in components/: ResNet, DenseNet, Convert to Image Directory, Score Image Model.

Each YAML is loaded and validated offline by azure-ai-ml, each command is run through command_line.run_component
exactly as an Azure ML step would run it, and the outputs are compared with the designer's golden folders
(byte for byte for the ImageDirectory, within 1e-5 for the scored probabilities). Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from conftest import DESIGNER, REPO_ROOT, tree_digest
from train_pytorch_model import convert_to_image_directory as convert_module
from train_pytorch_model import score_image_model as score_module
from train_pytorch_model.errors import InvalidDatasetError, InvalidModelDirectoryError, NotLabeledDatasetError
from train_pytorch_model.formats.image_directory import load_labeled_images
from train_pytorch_model.formats.model_directory import read_model_directory, write_model_directory
from train_pytorch_model.local.command_line import load_component_spec, render_command, run_component
from train_pytorch_model.local.offline_credential import OfflineCredential, offline_ml_client
from train_pytorch_model.model.networks import FAMILIES, DesignerNet, build_network
from train_pytorch_model.output.scoring import Preprocessing, predict_probabilities

COMPONENTS = REPO_ROOT / "components"
# file stem: (name, display name)
IDENTITIES = {
    "resnet": ("resnet", "ResNet"),
    "densenet": ("densenet", "DenseNet"),
    "convert_to_image_directory": ("convert_to_image_directory", "Convert to Image Directory"),
    "score_image_model": ("score_image_model", "Score Image Model"),
}
IMAGEFOLDER = DESIGNER / "inputs" / "imagefolder"
GOLDEN_DIRECTORY = DESIGNER / "image_directory"
GOLDEN_SCORED = DESIGNER / "scored_dataset"
SCHEMA_URL = "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json"


# ----------------------------------------------------------------------------------------------------------------
# helpers


def component_yaml(stem: str) -> Path:
    return COMPONENTS / f"{stem}.yaml"


def assert_same_files(actual: Path, expected: Path) -> None:
    assert tree_digest(actual) == tree_digest(expected)


def write_png(path: Path, size: tuple[int, int] = (8, 8), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def run(stem: str, inputs: dict[str, object], outputs: dict[str, Path]):
    return run_component(component_yaml(stem), inputs, outputs, check=False, capture_output=True)


def assert_user_error(result, name: str, exit_code: int) -> None:
    assert result.returncode == exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: "), result.stderr
    assert "Traceback" not in result.stderr


def labelled_pairs(listing) -> list[tuple[str, bytes]]:
    return sorted((record.label, record.path.read_bytes()) for record in listing.records)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_close_json(actual: Any, expected: Any, tolerance: float = 1e-5) -> None:
    """Equal JSON values, floats within tolerance (the scores come from another torch build)."""
    if isinstance(expected, float):
        assert isinstance(actual, (float, int)) and abs(actual - expected) <= tolerance, (actual, expected)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected)
        for key in expected:
            assert_close_json(actual[key], expected[key], tolerance)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_close_json(a, e, tolerance)
    else:
        assert actual == expected and type(actual) is type(expected)


# ----------------------------------------------------------------------------------------------------------------
# the YAML files, as azure-ai-ml reads them


@pytest.fixture(scope="module")
def aml() -> Any:
    return pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is an optional extra: pip install .[azure]")


def test_components_folder_holds_exactly_the_four_companions() -> None:
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
    assert list(model_name.enum) == list(family.architectures)
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
    result = run(stem, inputs, {"untrained_model": out})
    assert result.returncode == 0, result.stderr
    spec = read_model_directory(out)
    assert spec.family.name == stem
    assert spec.architecture == inputs["model_name"]
    assert spec.pretrained is False
    assert spec.flag is inputs.get(flag, False)
    assert spec.classes is None  # untrained: no label map
    assert not (out / ".staging").exists()


# ----------------------------------------------------------------------------------------------------------------
# Convert to Image Directory


def test_convert_gives_the_designer_golden_folder_byte_for_byte(tmp_path: Path) -> None:
    before = tree_digest(IMAGEFOLDER)
    out = tmp_path / "output_dataset"
    result = run("convert_to_image_directory", {"input_dataset": IMAGEFOLDER}, {"output_dataset": out})
    assert result.returncode == 0, result.stderr
    assert_same_files(out, GOLDEN_DIRECTORY)
    assert tree_digest(IMAGEFOLDER) == before
    # The trainer's reader sees what the input folder holds: the same labels on the same bytes.
    assert labelled_pairs(load_labeled_images(out, "Converted")) == labelled_pairs(
        load_labeled_images(IMAGEFOLDER, "Input")
    )


def test_convert_a_zip_with_macos_junk_and_an_upper_case_suffix(tmp_path: Path) -> None:
    source = tmp_path / "input"
    source.mkdir()
    with zipfile.ZipFile(source / "PETS.ZIP", "w") as bundle:
        for path in sorted(IMAGEFOLDER.rglob("*.png")):
            bundle.write(path, f"pets/{path.relative_to(IMAGEFOLDER).as_posix()}")
            bundle.writestr(f"__MACOSX/pets/{path.parent.name}/._{path.name}", b"\x00\x05\x16\x07junk")
    (source / "README.txt").write_text("dataset notes", encoding="utf-8")
    before = tree_digest(source)
    out = tmp_path / "output_dataset"
    result = run("convert_to_image_directory", {"input_dataset": source}, {"output_dataset": out})
    assert result.returncode == 0, result.stderr
    assert_same_files(out, GOLDEN_DIRECTORY)
    assert tree_digest(source) == before


def test_convert_a_tgz(tmp_path: Path) -> None:
    source = tmp_path / "input"
    source.mkdir()
    with tarfile.open(source / "pets.TGZ", "w:gz") as bundle:
        bundle.add(IMAGEFOLDER, arcname="data")
    out = tmp_path / "out"
    convert_module.convert(source, out)
    assert_same_files(out, GOLDEN_DIRECTORY)


def test_convert_an_image_directory_rewrites_it_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert_module.convert(GOLDEN_DIRECTORY, out)
    assert_same_files(out, GOLDEN_DIRECTORY)


def test_macosx_folder_in_the_input_is_skipped_not_deleted(tmp_path: Path) -> None:
    source = tmp_path / "input"
    shutil.copytree(IMAGEFOLDER, source)
    write_png(source / "__MACOSX" / "cat" / "._cat1.png")
    (source / ".DS_Store").write_bytes(b"\x00")
    before = tree_digest(source)
    out = tmp_path / "out"
    convert_module.convert(source, out)
    assert tree_digest(source) == before
    assert_same_files(out, GOLDEN_DIRECTORY)


def test_unlabelled_folder_converts_as_flat_with_sorted_ids(tmp_path: Path) -> None:
    source = tmp_path / "flat"
    write_png(source / "b.png")
    write_png(source / "a.PNG", color=(1, 2, 3))
    Image.new("RGB", (5, 7), (1, 2, 3)).save(source / "c.jpg")
    (source / "notes.txt").write_text("not an image", encoding="utf-8")
    out = tmp_path / "out"
    result = run("convert_to_image_directory", {"input_dataset": source}, {"output_dataset": out})
    assert result.returncode == 0, result.stderr
    assert read_lines(out / "images.lst") == [
        {"image_info": {"file_name": "image/a.PNG"}, "id": 0},
        {"image_info": {"file_name": "image/b.png"}, "id": 1},
        {"image_info": {"file_name": "image/c.jpg"}, "id": 2},
    ]
    schema = json.loads((out / "_schema.json").read_text(encoding="utf-8"))
    golden = json.loads((GOLDEN_DIRECTORY / "_schema.json").read_text(encoding="utf-8"))
    assert schema == {"columnAttributes": golden["columnAttributes"][:2]}
    for name in ("a.PNG", "b.png", "c.jpg"):
        assert (out / "image" / name).read_bytes() == (source / name).read_bytes()
    assert [s["id"] for s in json.loads((out / "_samples.json").read_text(encoding="utf-8"))] == [0, 1, 2]
    with pytest.raises(NotLabeledDatasetError):
        load_labeled_images(out, "Training dataset")


def test_a_single_folder_of_images_is_unlabelled_with_subfolders_kept(tmp_path: Path) -> None:
    source = tmp_path / "input"
    write_png(source / "photos" / "x" / "2.png")
    write_png(source / "photos" / "1.png")
    out = tmp_path / "out"
    table = convert_module.convert(source, out)
    assert table.layout == "flat"
    assert [r["image_info"]["file_name"] for r in read_lines(out / "images.lst")] == [
        "image/photos/1.png",
        "image/photos/x/2.png",
    ]


def test_images_beside_class_folders_are_an_error_that_says_so(tmp_path: Path, capsys) -> None:
    source = tmp_path / "input"
    shutil.copytree(IMAGEFOLDER, source)
    write_png(source / "stray.png")
    code = convert_module.main(["--input-dataset", str(source), "--output-dataset", str(tmp_path / "out")])
    assert code == InvalidDatasetError.exit_code
    error = capsys.readouterr().err.strip()
    assert error.startswith("InvalidDatasetError: ") and "'stray.png'" in error and "top level" in error
    assert not (tmp_path / "out" / "_meta.yaml").exists()


def test_unreadable_images_are_skipped_and_named(tmp_path: Path, caplog) -> None:
    source = tmp_path / "input"
    shutil.copytree(IMAGEFOLDER, source)
    (source / "cat" / "cat0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    truncated = (source / "dog" / "dog1.png").read_bytes()
    (source / "dog" / "dog0.png").write_bytes(truncated[: len(truncated) // 2])
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        table = convert_module.convert(source, out)
    assert sorted(name for name, _ in table.skipped) == ["cat/cat0.png", "dog/dog0.png"]
    assert "cat/cat0.png" in caplog.text and "dog/dog0.png" in caplog.text
    # ids stay contiguous over the kept images and match the designer's naming.
    assert_same_files(out, GOLDEN_DIRECTORY)


def test_class_names_that_look_numeric_stay_strings(tmp_path: Path) -> None:
    source = tmp_path / "input"
    for label in ("10", "2", "007"):
        write_png(source / label / "a.png")
    out = tmp_path / "out"
    convert_module.convert(source, out)
    schema = json.loads((out / "_schema.json").read_text(encoding="utf-8"))
    assert schema["columnAttributes"][2]["properties"]["categories"] == [
        {"id": 0, "name": "007"},
        {"id": 1, "name": "10"},
        {"id": 2, "name": "2"},
    ]
    assert [r["category"] for r in read_lines(out / "images.lst")] == ["007", "10", "2"]
    assert load_labeled_images(out, "Converted").classes == ["007", "10", "2"]


def write_coco(root: Path, annotations: list[dict], categories: list[dict] | None, name: str = "labels.json") -> None:
    images = []
    for image_id, file_name in ((7, "a.png"), (3, "b.png"), (11, "c.png")):
        write_png(root / "images" / file_name, color=(image_id * 20, 0, 0))
        images.append({"id": image_id, "file_name": file_name, "width": 8, "height": 8, "license": 1})
    content: dict = {"info": {"year": 2024}, "images": images, "annotations": annotations}
    if categories is not None:
        content["categories"] = categories
    (root / name).write_text(json.dumps(content), encoding="utf-8")


CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "animal"}, {"id": 4, "name": "dog", "supercategory": "animal"}]


def test_coco_with_category_only_annotations_is_classification(tmp_path: Path) -> None:
    source = tmp_path / "coco"
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 4},
        {"id": 2, "image_id": 3, "category_id": 1},
        {"id": 3, "image_id": 999, "category_id": 1},  # names no image: dropped
    ]
    write_coco(source, annotations, CATEGORIES)
    out = tmp_path / "out"
    result = run("convert_to_image_directory", {"input_dataset": source}, {"output_dataset": out})
    assert result.returncode == 0, result.stderr
    schema = json.loads((out / "_schema.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in schema["columnAttributes"]] == ["image", "id", "category"]
    assert schema["columnAttributes"][2]["properties"] == {
        "annotation_type": "COCO_classification",
        "categories": CATEGORIES,
    }
    assert read_lines(out / "images.lst") == [
        {
            "image_info": {"id": 7, "file_name": "image/7.png", "width": 8, "height": 8, "license": 1},
            "category": "dog",
            "id": 7,
        },
        {
            "image_info": {"id": 3, "file_name": "image/3.png", "width": 8, "height": 8, "license": 1},
            "category": "cat",
            "id": 3,
        },
        {
            "image_info": {"id": 11, "file_name": "image/11.png", "width": 8, "height": 8, "license": 1},
            "category": None,
            "id": 11,
        },
    ]
    assert (out / "image" / "7.png").read_bytes() == (source / "images" / "a.png").read_bytes()
    listing = load_labeled_images(out, "Training dataset")
    assert [(r.path.name, r.label) for r in listing.records] == [("7.png", "dog"), ("3.png", "cat")]
    assert listing.classes == ["cat", "dog"]


def test_coco_detection_keeps_annotations_and_categories(tmp_path: Path) -> None:
    source = tmp_path / "coco"
    annotations = [
        {"id": 1, "image_id": 3, "category_id": 1, "bbox": [1.0, 1.0, 3.5, 2.0], "area": 7.0, "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 4, "segmentation": [[0, 0, 1, 1, 2, 0]], "iscrowd": 0},
    ]
    write_coco(source, annotations, CATEGORIES)
    out = tmp_path / "out"
    table = convert_module.convert(source, out)
    assert table.layout == "COCO"
    schema = json.loads((out / "_schema.json").read_text(encoding="utf-8"))
    column = schema["columnAttributes"][2]
    assert column["name"] == "object_detection_annotation"
    assert (column["type"], column["elementType"]["typeName"], column["isFeature"]) == ("Object", "object", False)
    assert column["properties"] == {"annotation_type": "COCO_object_detection", "categories": CATEGORIES}
    records = read_lines(out / "images.lst")
    assert [r["id"] for r in records] == [7, 3, 11]
    assert records[1]["object_detection_annotation"] == annotations
    assert records[0]["object_detection_annotation"] == []
    assert list(records[1]) == ["image_info", "object_detection_annotation", "id"]
    with pytest.raises(InvalidDatasetError, match="COCO_object_detection"):
        load_labeled_images(out, "Training dataset")


def test_several_coco_files_are_an_error(tmp_path: Path) -> None:
    source = tmp_path / "coco"
    write_coco(source, [{"id": 1, "image_id": 7, "category_id": 1}], CATEGORIES, "train.json")
    write_coco(source, [{"id": 1, "image_id": 3, "category_id": 4}], CATEGORIES, "val.json")
    with pytest.raises(InvalidDatasetError, match="2 COCO annotation files"):
        convert_module.convert(source, tmp_path / "out")


def test_missing_coco_image_is_skipped_and_named(tmp_path: Path) -> None:
    source = tmp_path / "coco"
    write_coco(source, [{"id": 1, "image_id": 7, "category_id": 1}], CATEGORIES)
    (source / "images" / "b.png").unlink()
    table = convert_module.convert(source, tmp_path / "out")
    assert [r["id"] for r in table.records] == [7, 11]
    assert table.skipped[0][0] == "b.png"


def test_convert_refuses_an_archive_escaping_its_folder(tmp_path: Path) -> None:
    source = tmp_path / "input"
    source.mkdir()
    with zipfile.ZipFile(source / "evil.zip", "w") as bundle:
        bundle.writestr("../outside.png", (IMAGEFOLDER / "cat" / "cat1.png").read_bytes())
    result = run("convert_to_image_directory", {"input_dataset": source}, {"output_dataset": tmp_path / "out"})
    assert_user_error(result, "InvalidDatasetError", InvalidDatasetError.exit_code)
    assert not (tmp_path / "outside.png").exists()


# ----------------------------------------------------------------------------------------------------------------
# Score Image Model


def test_score_reproduces_the_designer_scored_dataset(tmp_path: Path) -> None:
    out = tmp_path / "scored_dataset"
    inputs = {"trained_model": DESIGNER / "trained_model", "dataset": GOLDEN_DIRECTORY}
    result = run("score_image_model", inputs, {"scored_dataset": out})
    assert result.returncode == 0, result.stderr
    assert sorted(tree_digest(out)) == sorted(tree_digest(GOLDEN_SCORED))
    assert (out / "_meta.yaml").read_bytes() == (GOLDEN_SCORED / "_meta.yaml").read_bytes()
    assert (out / "schema" / "_schema.json").read_bytes() == (GOLDEN_SCORED / "schema" / "_schema.json").read_bytes()
    actual = pd.read_parquet(out / "_data.parquet")
    golden = pd.read_parquet(GOLDEN_SCORED / "_data.parquet")
    assert list(actual.columns) == list(golden.columns)
    assert actual["id"].dtype == np.int64
    assert actual["category"].tolist() == golden["category"].tolist()
    assert actual["id"].tolist() == golden["id"].tolist()
    assert actual["Scored Labels"].tolist() == golden["Scored Labels"].tolist()
    probabilities = [c for c in golden.columns if c.startswith("Scored Probabilities_")]
    assert np.abs(actual[probabilities].to_numpy() - golden[probabilities].to_numpy()).max() < 1e-5
    for name in ("_samples.json", "_data.visualization"):
        assert_close_json(
            json.loads((out / name).read_text(encoding="utf-8")),
            json.loads((GOLDEN_SCORED / name).read_text(encoding="utf-8")),
        )


def test_score_the_raw_image_folder_like_its_image_directory(tmp_path: Path) -> None:
    """The designer's Score parses a folder as Convert does: the same columns and scores as the converted one."""
    frame = score_module.score_image_model(DESIGNER / "trained_model", IMAGEFOLDER, tmp_path / "out")
    golden = pd.read_parquet(GOLDEN_SCORED / "_data.parquet")
    assert list(frame.columns) == list(golden.columns)
    assert np.allclose(frame.iloc[:, 2:4].to_numpy(), golden.iloc[:, 2:4].to_numpy(), atol=1e-5)


def test_score_unlabelled_images(tmp_path: Path) -> None:
    source = tmp_path / "flat"
    source.mkdir()
    for path in sorted(IMAGEFOLDER.rglob("*.png")):
        shutil.copyfile(path, source / path.name)
    out = tmp_path / "out"
    frame = score_module.score_image_model(DESIGNER / "trained_model", source, out)
    assert list(frame.columns) == ["id", "Scored Probabilities_cat", "Scored Probabilities_dog", "Scored Labels"]
    schema = json.loads((out / "schema" / "_schema.json").read_text(encoding="utf-8"))
    assert schema["labelColumns"] == {}
    assert [c["isFeature"] for c in schema["columnAttributes"]] == [True, False, False, False]


def test_score_with_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(
        "score_image_model", {"trained_model": GOLDEN_DIRECTORY, "dataset": GOLDEN_DIRECTORY}, {"scored_dataset": out}
    )
    assert_user_error(result, "InvalidModelDirectoryError", InvalidModelDirectoryError.exit_code)
    assert InvalidModelDirectoryError.exit_code == 4
    assert not (out / "_meta.yaml").exists()


def test_score_with_an_untrained_model(tmp_path: Path, capsys) -> None:
    code = score_module.main(
        [
            "--trained-model",
            str(DESIGNER / "untrained_model"),
            "--dataset",
            str(GOLDEN_DIRECTORY),
            "--scored-dataset",
            str(tmp_path / "out"),
        ]
    )
    assert code == 4
    assert "untrained model" in capsys.readouterr().err


def test_score_with_a_broken_weights_file(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DESIGNER / "trained_model", model)
    (model / "model").write_bytes(b"not a torch file")
    with pytest.raises(InvalidModelDirectoryError):
        score_module.load_trained_model(model)


def _forward(model: nn.Module, image: Path, mean, std, size=None) -> np.ndarray:
    preprocessing = Preprocessing(size or Image.open(image).size[::-1], mean, std, ["?"])
    return predict_probabilities(model, [image], preprocessing)[0]


def test_designer_model_with_a_stacked_head_and_mixed_image_sizes(tmp_path: Path) -> None:
    """Designer models trained from pretrained weights keep the 1000-class head plus out_linear_model; images of
    different sizes (which the designer refused) are each scored at their own size."""
    torch.manual_seed(0)
    network = DesignerNet(build_network("resnet18", num_classes=1000), nn.Linear(1000, 3))
    folder = tmp_path / "model"
    init_params = {"model_name": "resnet18", "pretrained": True, "zero_init_residual": False, "num_classes": 3}
    write_model_directory(
        folder, network.state_dict(), FAMILIES["resnet"], init_params, classes=["a", "b", "c"], mean=(0.4,) * 3
    )
    data = tmp_path / "data"
    write_png(data / "x" / "small.png", (33, 40), (10, 200, 30))
    write_png(data / "y" / "large.png", (64, 48), (200, 20, 90))
    frame = score_module.score_image_model(folder, data, tmp_path / "out")
    network.eval()
    for row, name in zip(range(2), ("x/small.png", "y/large.png"), strict=True):
        expected = _forward(network, data / name, (0.4,) * 3, (0.5,) * 3)
        assert np.allclose(frame.iloc[row, 2:5].to_numpy(dtype=float), expected, atol=1e-6)


def test_project_model_uses_its_preprocessing_and_numeric_class_names_stay_strings(tmp_path: Path) -> None:
    torch.manual_seed(1)
    network = DesignerNet(build_network("resnet18", num_classes=2))
    folder = tmp_path / "model"
    init_params = {"model_name": "resnet18", "pretrained": False, "zero_init_residual": False, "num_classes": 2}
    write_model_directory(folder, network.state_dict(), FAMILIES["resnet"], init_params, classes=["0", "10"])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    Preprocessing((40, 40), mean, std, ["0", "10"]).save(folder / "preprocessing.json")
    data = tmp_path / "data"
    write_png(data / "a.png", (33, 47))
    write_png(data / "b.png", (90, 20), (0, 0, 255))
    frame = score_module.score_image_model(folder, data, tmp_path / "out")
    assert list(frame.columns) == ["id", "Scored Probabilities_0", "Scored Probabilities_10", "Scored Labels"]
    assert all(isinstance(label, str) for label in frame["Scored Labels"])
    network.eval()
    for row, name in enumerate(("a.png", "b.png")):
        expected = _forward(network, data / name, mean, std, (40, 40))
        assert np.allclose(frame.iloc[row, 1:3].to_numpy(dtype=float), expected, atol=1e-6)
    schema = json.loads((tmp_path / "out" / "schema" / "_schema.json").read_text(encoding="utf-8"))
    assert schema["columnAttributes"][-1]["elementType"]["typeName"] == "str"


def test_unreadable_images_are_not_scored_but_named(tmp_path: Path, caplog) -> None:
    data = tmp_path / "data"
    shutil.copytree(IMAGEFOLDER, data)
    (data / "dog" / "dog2.png").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING):
        frame = score_module.score_image_model(DESIGNER / "trained_model", data, tmp_path / "out")
    assert len(frame) == 5 and 4 not in frame["id"].tolist()
    assert "'dog/dog2.png' is not scored" in caplog.text


def test_scoring_data_that_holds_no_image(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("nothing", encoding="utf-8")
    with pytest.raises(InvalidDatasetError):
        score_module.score_image_model(DESIGNER / "trained_model", data, tmp_path / "out")


def test_samples_json_escapes_nan_like_the_designer(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [float("nan"), float("inf")], "Scored Labels": pd.Series(["a", "b"], dtype=object)})
    schema = score_module.dataframe_schema(frame, None, ["Scored Labels"])
    score_module.write_dataframe_directory(frame, schema, tmp_path / "out")
    samples = json.loads((tmp_path / "out" / "_samples.json").read_text(encoding="utf-8"))
    assert samples == [{"x": {"isNan": True}, "Scored Labels": "a"}, {"x": "inf", "Scored Labels": "b"}]
    assert yaml.safe_load((tmp_path / "out" / "_meta.yaml").read_text(encoding="utf-8"))["type"] == "DataFrameDirectory"
    assert io.BytesIO((tmp_path / "out" / "_data.parquet").read_bytes()).read(4) == b"PAR1"
