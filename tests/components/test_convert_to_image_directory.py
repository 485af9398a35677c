"""Convert to Image Directory through its own command line: the designer's golden ImageDirectory byte for byte,
archives, flat folders, COCO, and every bad input named.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import (
    GOLDEN_DIRECTORY,
    IMAGEFOLDER,
    assert_same_files,
    assert_user_error,
    read_lines,
    run_companion,
    tree_digest,
    write_png,
)
from train_pytorch_model import convert_to_image_directory as convert_module
from train_pytorch_model import score_image_model as score_module
from train_pytorch_model.errors import InvalidDatasetError, NotLabeledDatasetError
from train_pytorch_model.formats.image_directory import load_labeled_images


def labelled_pairs(listing) -> list[tuple[str, bytes]]:
    return sorted((record.label, record.path.read_bytes()) for record in listing.records)


def test_convert_gives_the_designer_golden_folder_byte_for_byte(tmp_path: Path) -> None:
    before = tree_digest(IMAGEFOLDER)
    out = tmp_path / "output_dataset"
    result = run_companion("convert_to_image_directory", {"input_dataset": IMAGEFOLDER}, {"output_dataset": out})
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
    result = run_companion("convert_to_image_directory", {"input_dataset": source}, {"output_dataset": out})
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
    result = run_companion("convert_to_image_directory", {"input_dataset": source}, {"output_dataset": out})
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
    result = run_companion("convert_to_image_directory", {"input_dataset": source}, {"output_dataset": out})
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
    result = run_companion(
        "convert_to_image_directory", {"input_dataset": source}, {"output_dataset": tmp_path / "out"}
    )
    assert_user_error(result, "InvalidDatasetError", InvalidDatasetError.exit_code)
    assert not (tmp_path / "outside.png").exists()


def test_samples_json_escapes_nan_like_the_designer(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [float("nan"), float("inf")], "Scored Labels": pd.Series(["a", "b"], dtype=object)})
    schema = score_module.dataframe_schema(frame, None, ["Scored Labels"])
    score_module.write_dataframe_directory(frame, schema, tmp_path / "out")
    samples = json.loads((tmp_path / "out" / "_samples.json").read_text(encoding="utf-8"))
    assert samples == [{"x": {"isNan": True}, "Scored Labels": "a"}, {"x": "inf", "Scored Labels": "b"}]
    assert yaml.safe_load((tmp_path / "out" / "_meta.yaml").read_text(encoding="utf-8"))["type"] == "DataFrameDirectory"
    assert io.BytesIO((tmp_path / "out" / "_data.parquet").read_bytes()).read(4) == b"PAR1"
