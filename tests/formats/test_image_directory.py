"""Listing labelled images: the designer's ImageDirectory (golden and edge cases) and plain ImageFolder trees.

Every test works on small real image files written with PIL into tmp_path (or on the designer's golden folders).
"""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest

from conftest import by_name, make_image_folder, png_bytes, tree_digest, write_png
from train_pytorch_model.data.images import decode_image
from train_pytorch_model.errors import InvalidDatasetError, NotLabeledDatasetError
from train_pytorch_model.formats.image_directory import load_labeled_images

SUBJECT = "Training dataset"


def write_image_directory(
    root: Path,
    rows: list[dict],
    *,
    categories=({"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}),
    annotation_type: str | None = "COCO_classification",
    meta: dict | None = None,
    images: dict[str, bytes] | None = None,
) -> Path:
    """A designer ImageDirectory: _meta.yaml, _schema.json, images.lst and the image files named in images."""
    root.mkdir(parents=True, exist_ok=True)
    meta = meta or {"type": "ImageDirectory", "image_list": "images.lst", "schema": "_schema.json"}
    (root / "_meta.yaml").write_text("".join(f"{key}: {value}\n" for key, value in meta.items()), encoding="utf-8")
    columns = [
        {
            "name": "image",
            "type": "Bytes",
            "isFeature": True,
            "elementType": {"typeName": "bytes", "isNullable": False},
            "properties": {"mime_type": "image/png", "image_ref": "image_info"},
        },
        {"name": "id", "type": "Numeric", "isFeature": False, "elementType": {"typeName": "int64"}},
    ]
    if annotation_type is not None:
        properties = {"annotation_type": annotation_type}
        if categories is not None:
            properties["categories"] = list(categories)
        columns.append(
            {
                "name": "category",
                "type": "String",
                "isFeature": False,
                "elementType": {"typeName": "str", "isNullable": False},
                "properties": properties,
            }
        )
    (root / "_schema.json").write_text(json.dumps({"columnAttributes": columns}, indent=2), encoding="utf-8")
    (root / "images.lst").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    for relative, data in (images or {}).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


def row(file_name: str, category, index: int, **extra) -> dict:
    return {"image_info": {"file_name": file_name, **extra}, "category": category, "id": index}


# ----------------------------------------------------------------------------------------------------------------
# ImageDirectory: the golden designer output


def test_golden_image_directory_loads(designer_fixtures):
    root = designer_fixtures / "image_directory"
    before = tree_digest(root)
    loaded = load_labeled_images(root, SUBJECT)
    assert loaded.layout == "ImageDirectory"
    assert len(loaded.records) == 6
    assert loaded.classes == ["cat", "dog"]
    assert loaded.schema_file == root / "_schema.json"
    assert loaded.samples_file == root / "_samples.json"
    assert loaded.skipped == []
    assert by_name(loaded) == {
        "0_0.png": "cat",
        "0_1.png": "cat",
        "0_2.png": "cat",
        "1_3.png": "dog",
        "1_4.png": "dog",
        "1_5.png": "dog",
    }
    assert all(record.path.is_file() and record.path.parent == root / "image" for record in loaded.records)
    assert loaded.class_counts() == {"cat": 3, "dog": 3}
    assert tree_digest(root) == before


def test_golden_imagefolder_input_gives_same_classes(designer_fixtures):
    loaded = load_labeled_images(designer_fixtures / "inputs" / "imagefolder", SUBJECT)
    golden = load_labeled_images(designer_fixtures / "image_directory", SUBJECT)
    assert loaded.layout == "ImageFolder"
    assert loaded.classes == golden.classes == ["cat", "dog"]
    assert loaded.class_counts() == golden.class_counts() == {"cat": 3, "dog": 3}
    assert [r.path.name for r in loaded.records] == [f"cat{i}.png" for i in (1, 2, 3)] + [
        f"dog{i}.png" for i in (1, 2, 3)
    ]
    # Convert to Image Directory copies the bytes unchanged, in the same order.
    assert [r.path.read_bytes() for r in loaded.records] == [r.path.read_bytes() for r in golden.records]


# ----------------------------------------------------------------------------------------------------------------
# ImageDirectory: edge cases


def test_image_directory_non_contiguous_ids_have_no_others_filler(tmp_path):
    data = png_bytes()
    root = write_image_directory(
        tmp_path / "dir",
        [row("image/a.png", "cat", 0), row("image/b.png", "dog", 1), row("image/c.png", "emu", 2)],
        categories=[{"id": 0, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 5, "name": "emu"}],
        images={"image/a.png": data, "image/b.png": data, "image/c.png": data},
    )
    loaded = load_labeled_images(root, SUBJECT)
    assert loaded.classes == ["cat", "dog", "emu"]
    assert "Others" not in loaded.classes
    assert by_name(loaded) == {"a.png": "cat", "b.png": "dog", "c.png": "emu"}


def test_image_directory_integer_category_ids_map_to_names(tmp_path):
    data = png_bytes()
    root = write_image_directory(
        tmp_path / "dir",
        [row("image/a.png", 0, 0), row("image/b.png", 2, 1)],
        categories=[{"id": 0, "name": "cat"}, {"id": 2, "name": "dog"}],
        images={"image/a.png": data, "image/b.png": data},
    )
    assert by_name(load_labeled_images(root, SUBJECT)) == {"a.png": "cat", "b.png": "dog"}


def test_image_directory_skips_unlabelled_records(tmp_path):
    data = png_bytes()
    root = write_image_directory(
        tmp_path / "dir",
        [
            row("image/a.png", "cat", 0),
            row("image/b.png", "", 1),
            row("image/c.png", None, 2),
            row("image/d.png", "dog", 3),
            {"image_info": {"file_name": "image/e.png"}, "id": 4},
        ],
        images={f"image/{n}.png": data for n in "abcde"},
    )
    loaded = load_labeled_images(root, SUBJECT)
    assert by_name(loaded) == {"a.png": "cat", "d.png": "dog"}
    assert sorted(name for name, _ in loaded.skipped) == ["image/b.png", "image/c.png", "image/e.png"]
    assert all("no label" in why for _, why in loaded.skipped)


def test_image_directory_base_file_name_overrides_file_name(tmp_path):
    data = png_bytes()
    root = write_image_directory(
        tmp_path / "dir",
        [row("image/0_0.png", "cat", 0, base_file_name="originals/cat/x.png"), row("image/1_1.png", "dog", 1)],
        images={"originals/cat/x.png": data, "image/1_1.png": data},
    )
    loaded = load_labeled_images(root, SUBJECT)
    assert [r.path for r in loaded.records] == [root / "originals/cat/x.png", root / "image/1_1.png"]


@pytest.mark.parametrize("outside", ["../x", "ABSOLUTE"])
@pytest.mark.parametrize("key", ["image_list", "schema"])
def test_image_directory_meta_path_outside_is_refused(tmp_path, key, outside):
    (tmp_path / "x").write_text("{}", encoding="utf-8")
    meta = {"type": "ImageDirectory", "image_list": "images.lst", "schema": "_schema.json"}
    meta[key] = str(tmp_path / "x") if outside == "ABSOLUTE" else outside
    root = write_image_directory(
        tmp_path / "dir", [row("image/a.png", "cat", 0)], meta=meta, images={"image/a.png": png_bytes()}
    )
    with pytest.raises(InvalidDatasetError, match="points outside the dataset folder") as info:
        load_labeled_images(root, SUBJECT)
    assert key in str(info.value)


def test_image_directory_file_name_outside_is_skipped(tmp_path):
    secret = write_png(tmp_path / "secret.png")
    data = png_bytes()
    root = write_image_directory(
        tmp_path / "dir",
        [
            row("../secret.png", "cat", 0),
            row(str(secret), "cat", 1),
            row("image/ok.png", "cat", 2, base_file_name="../secret.png"),
            row("image/a.png", "cat", 3),
            row("image/b.png", "dog", 4),
        ],
        images={"image/a.png": data, "image/b.png": data, "image/ok.png": data},
    )
    loaded = load_labeled_images(root, SUBJECT)
    assert [r.path.name for r in loaded.records] == ["a.png", "b.png"]
    assert all(Path(os.path.realpath(r.path)).is_relative_to(os.path.realpath(root)) for r in loaded.records)
    assert [name for name, _ in loaded.skipped] == ["../secret.png", str(secret), "../secret.png"]
    assert all("outside the input folder" in why for _, why in loaded.skipped)


def test_image_directory_symlinked_file_outside_is_skipped(tmp_path):
    secret = write_png(tmp_path / "secret.png")
    root = write_image_directory(
        tmp_path / "dir",
        [row("image/link.png", "cat", 0), row("image/a.png", "dog", 1)],
        images={"image/a.png": png_bytes()},
    )
    (root / "image" / "link.png").symlink_to(secret)
    loaded = load_labeled_images(root, SUBJECT)
    assert [r.path.name for r in loaded.records] == ["a.png"]
    assert loaded.skipped[0][0] == "image/link.png"


def test_image_directory_without_label_column_is_not_labeled(tmp_path):
    root = write_image_directory(
        tmp_path / "flat",
        [{"image_info": {"file_name": "image/a.png"}, "id": 0}],
        annotation_type=None,
        images={"image/a.png": png_bytes()},
    )
    with pytest.raises(NotLabeledDatasetError, match="no label column"):
        load_labeled_images(root, SUBJECT)


def test_image_directory_object_detection_is_refused(tmp_path):
    root = write_image_directory(
        tmp_path / "coco",
        [{"image_info": {"file_name": "image/7.png", "id": 7}, "object_detection_annotation": [], "id": 7}],
        annotation_type="COCO_object_detection",
        images={"image/7.png": png_bytes()},
    )
    with pytest.raises(InvalidDatasetError, match="COCO_object_detection") as info:
        load_labeled_images(root, SUBJECT)
    assert "classifiers" in str(info.value)


def test_model_directory_given_as_dataset_is_refused(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / "_meta.yaml").write_text("type: ModelDirectory\nmodel:\n  flavor: pytorch\n", encoding="utf-8")
    with pytest.raises(InvalidDatasetError, match="is a ModelDirectory, not an ImageDirectory"):
        load_labeled_images(root, SUBJECT)


def test_image_directory_meta_without_type_is_refused(tmp_path):
    root = tmp_path / "dir"
    root.mkdir()
    (root / "_meta.yaml").write_text("image_list: images.lst\n", encoding="utf-8")
    with pytest.raises(InvalidDatasetError, match="has no 'type'"):
        load_labeled_images(root, SUBJECT)


def test_image_directory_listing_nothing_labelled_is_refused(tmp_path):
    root = write_image_directory(tmp_path / "dir", [row("image/a.png", None, 0)], images={"image/a.png": png_bytes()})
    with pytest.raises(InvalidDatasetError, match="lists no labelled image"):
        load_labeled_images(root, SUBJECT)


# ----------------------------------------------------------------------------------------------------------------
# ImageFolder


def test_image_folder_classes_and_deep_files_sorted(tmp_path):
    root = tmp_path / "data"
    write_png(root / "dog" / "b.png")
    write_png(root / "dog" / "a.png")
    write_png(root / "cat" / "z" / "deep" / "c.png")
    write_png(root / "cat" / "y.png")
    write_png(root / "cat" / "b.PNG")
    (root / "cat" / "notes.txt").write_text("not an image", encoding="utf-8")
    (root / "empty").mkdir()
    loaded = load_labeled_images(root, SUBJECT)
    assert loaded.layout == "ImageFolder"
    assert loaded.classes == ["cat", "dog"]
    assert [(r.path.relative_to(root).as_posix(), r.label) for r in loaded.records] == [
        ("cat/b.PNG", "cat"),
        ("cat/y.png", "cat"),
        ("cat/z/deep/c.png", "cat"),
        ("dog/a.png", "dog"),
        ("dog/b.png", "dog"),
    ]
    assert loaded.skipped == []


def test_image_folder_classes_sorted_by_code_point(tmp_path):
    root = tmp_path / "data"
    for name in ["b", "B", "a", "10", "9", "_x"]:
        write_png(root / name / "i.png")
    assert load_labeled_images(root, SUBJECT).classes == ["10", "9", "B", "_x", "a", "b"]


def test_image_folder_root_images_are_listed_as_skipped(tmp_path):
    root = make_image_folder(tmp_path / "data")
    write_png(root / "stray.png")
    write_png(root / "other.jpg")
    loaded = load_labeled_images(root, SUBJECT)
    assert loaded.classes == ["cat", "dog"]
    assert len(loaded.records) == 4
    assert sorted(name for name, _ in loaded.skipped) == ["other.jpg", "stray.png"]
    assert all("outside any class folder" in why for _, why in loaded.skipped)


def test_image_folder_with_only_root_images_is_not_labeled(tmp_path):
    root = tmp_path / "flat"
    write_png(root / "a.png")
    write_png(root / "b.png")
    with pytest.raises(NotLabeledDatasetError, match="not sorted into class folders"):
        load_labeled_images(root, SUBJECT)


def test_empty_folder_is_invalid(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidDatasetError, match="is empty"):
        load_labeled_images(tmp_path / "empty", SUBJECT)


def test_folder_without_images_is_invalid(tmp_path):
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "readme.txt").write_text("hello", encoding="utf-8")
    (root / "labels.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(InvalidDatasetError, match="no image files were found"):
        load_labeled_images(root, SUBJECT)


def test_missing_folder_is_invalid(tmp_path):
    with pytest.raises(InvalidDatasetError, match="does not exist") as info:
        load_labeled_images(tmp_path / "nowhere", SUBJECT)
    assert info.value.message.startswith(SUBJECT)


def test_plain_file_is_invalid(tmp_path):
    path = write_png(tmp_path / "one.png")
    with pytest.raises(InvalidDatasetError, match="is a file, not a folder"):
        load_labeled_images(path, SUBJECT)


def test_coco_json_at_root_is_refused(tmp_path):
    root = make_image_folder(tmp_path / "data")
    coco = {"images": [{"id": 1, "file_name": "cat/cat0.png"}], "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]}
    (root / "instances.json").write_text(json.dumps(coco), encoding="utf-8")
    with pytest.raises(InvalidDatasetError, match="holds COCO annotations"):
        load_labeled_images(root, SUBJECT)


def test_unrelated_json_at_root_is_ignored(tmp_path):
    root = make_image_folder(tmp_path / "data")
    (root / "info.json").write_text(json.dumps({"source": "camera"}), encoding="utf-8")
    assert load_labeled_images(root, SUBJECT).classes == ["cat", "dog"]


def test_non_ascii_class_and_file_names(tmp_path):
    root = tmp_path / "données"
    write_png(root / "chat_été" / "photo_ñ.png")
    write_png(root / "狗" / "图片.jpg")
    loaded = load_labeled_images(root, SUBJECT)
    assert loaded.classes == ["chat_été", "狗"]
    assert by_name(loaded) == {"photo_ñ.png": "chat_été", "图片.jpg": "狗"}
    assert all(decode_image(r.path, (4, 4)).shape == (4, 4, 3) for r in loaded.records)


def test_symlinks_leading_outside_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    write_png(outside / "secret.png")
    write_png(outside / "more" / "secret2.png")
    root = make_image_folder(tmp_path / "data")
    (root / "cat" / "link.png").symlink_to(outside / "secret.png")
    (root / "cat" / "linked_dir").symlink_to(outside / "more", target_is_directory=True)
    (root / "bird").symlink_to(outside, target_is_directory=True)  # a class folder that is a link out
    loaded = load_labeled_images(root, SUBJECT)
    assert loaded.classes == ["cat", "dog"]
    real_root = os.path.realpath(root)
    assert all(os.path.realpath(r.path).startswith(real_root + os.sep) for r in loaded.records)
    assert "secret" not in " ".join(r.path.name for r in loaded.records)
    assert len(loaded.records) == 4
    assert ("cat/link.png", "a link leading outside the input folder") in loaded.skipped
    # The class folder that leads out is named, not silently dropped.
    assert ("bird/", "a class folder that is a link leading outside the input folder") in loaded.skipped


def test_symlinks_inside_the_folder_are_followed(tmp_path):
    root = make_image_folder(tmp_path / "data")
    (root / "dog" / "alias.png").symlink_to(root / "cat" / "cat0.png")
    loaded = load_labeled_images(root, SUBJECT)
    assert by_name(loaded)["alias.png"] == "dog"


def test_macosx_and_dot_folders_are_ignored(tmp_path):
    root = make_image_folder(tmp_path / "data")
    write_png(root / "__MACOSX" / "cat" / "._cat0.png")
    write_png(root / ".thumbnails" / "x.png")
    write_png(root / "cat" / ".cache" / "y.png")
    write_png(root / "cat" / "._cat0.png")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    before = tree_digest(root)
    loaded = load_labeled_images(root, SUBJECT)
    assert loaded.classes == ["cat", "dog"]
    assert sorted(by_name(loaded)) == ["cat0.png", "cat1.png", "dog0.png", "dog1.png"]
    assert tree_digest(root) == before  # __MACOSX is not deleted from the user's folder


def test_one_class_folder_keeps_its_single_class(tmp_path):
    root = make_image_folder(tmp_path / "data", classes=("cat",))
    loaded = load_labeled_images(root, SUBJECT)
    assert loaded.classes == ["cat"]


# ----------------------------------------------------------------------------------------------------------------
# class names in one Unicode form

CAFE_NFC = unicodedata.normalize("NFC", "brique café")
CAFE_NFD = unicodedata.normalize("NFD", "brique café")


def test_class_folder_names_are_read_in_nfc(tmp_path):
    assert CAFE_NFC != CAFE_NFD
    root = tmp_path / "data"
    write_png(root / CAFE_NFD / "1.png")
    write_png(root / "pain" / "2.png")
    listed = load_labeled_images(root, SUBJECT)
    assert listed.classes == [CAFE_NFC, "pain"]
    assert {record.label for record in listed.records} == {CAFE_NFC, "pain"}


def test_folders_spelling_one_class_two_ways_are_one_class(tmp_path, caplog):
    root = tmp_path / "data"
    write_png(root / CAFE_NFD / "mac.png")
    write_png(root / CAFE_NFC / "windows.png")
    write_png(root / "pain" / "p.png")
    listed = load_labeled_images(root, SUBJECT)
    assert listed.classes == [CAFE_NFC, "pain"]
    assert sorted(r.path.name for r in listed.records if r.label == CAFE_NFC) == ["mac.png", "windows.png"]
    assert "different Unicode forms" in caplog.text


def test_image_directory_labels_and_categories_are_read_in_nfc(tmp_path):
    root = write_image_directory(
        tmp_path / "dir",
        [row("a.png", CAFE_NFD, 0), row("b.png", 1, 1)],
        categories=[{"id": 0, "name": CAFE_NFD}, {"id": 1, "name": "pain"}],
        images={"a.png": png_bytes(), "b.png": png_bytes()},
    )
    listed = load_labeled_images(root, SUBJECT)
    assert listed.classes == [CAFE_NFC, "pain"]
    assert by_name(listed) == {"a.png": CAFE_NFC, "b.png": "pain"}
