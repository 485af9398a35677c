"""Reading datasets from disk: ImageDirectory, ImageFolder, archives, image decoding and the decoded tensors.

Every test works on small real image files written with PIL into tmp_path (or on the designer's golden folders).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image, PngImagePlugin

from conftest import tree_digest
from train_pytorch_model.data.batches import batches_of
from train_pytorch_model.data.cache import MAX_BAD_FRACTION, decode_dataset
from train_pytorch_model.data.images import BadImageError, decode_image, read_size
from train_pytorch_model.data.survey import choose_image_size
from train_pytorch_model.errors import InvalidDatasetError, NotLabeledDatasetError
from train_pytorch_model.formats import archives
from train_pytorch_model.formats.image_directory import ImageRecord, load_labeled_images

SUBJECT = "Training dataset"


# ----------------------------------------------------------------------------------------------------------------
# helpers


def write_png(path: Path, size: tuple[int, int] = (8, 8), color=(200, 30, 30)) -> Path:
    """An RGB PNG of size (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def png_bytes(size: tuple[int, int] = (8, 8), color=(10, 200, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 2) -> Path:
    for index, name in enumerate(classes):
        for i in range(per_class):
            write_png(root / name / f"{name}{i}.png", color=(40 * index, 100, 20 * i))
    return root


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


def by_name(loaded) -> dict[str, str]:
    return {record.path.name: record.label for record in loaded.records}


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
# archives


def _add_tree_to_zip(bundle: zipfile.ZipFile, tree: Path, prefix: str) -> None:
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            bundle.write(path, prefix + path.relative_to(tree).as_posix())


def make_archive(tree: Path, archive: Path, wrapper: str | None) -> Path:
    """Pack tree (an ImageFolder) into archive, the format chosen by its suffix, optionally under wrapper/."""
    prefix = f"{wrapper}/" if wrapper else ""
    archive.parent.mkdir(parents=True, exist_ok=True)
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            _add_tree_to_zip(bundle, tree, prefix)
    else:
        with tarfile.open(archive, "w:gz") as bundle:
            for path in sorted(tree.rglob("*")):
                if path.is_file():
                    bundle.add(path, prefix + path.relative_to(tree).as_posix())
    return archive


@pytest.mark.parametrize("wrapper", [None, "my_dataset"])
@pytest.mark.parametrize("archive_name", ["data.zip", "data.tar.gz", "data.tgz", "DATA.ZIP"])
def test_folder_with_one_archive_loads_and_stays_unchanged(tmp_path, archive_name, wrapper):
    tree = make_image_folder(tmp_path / "tree", classes=("cat", "dog", "emu"))
    write_png(tree / "cat" / "sub" / "deep.png")
    make_archive(tree, tmp_path / "input" / archive_name, wrapper)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = tree_digest(tmp_path / "input")
    siblings = sorted(p.name for p in tmp_path.iterdir())

    loaded = load_labeled_images(tmp_path / "input", SUBJECT, scratch)

    assert loaded.layout == "ImageFolder"
    assert loaded.classes == ["cat", "dog", "emu"]
    assert loaded.class_counts() == {"cat": 3, "dog": 2, "emu": 2}
    assert all(r.path.is_relative_to(scratch) for r in loaded.records)
    assert decode_image(loaded.records[0].path).shape == (8, 8, 3)
    assert tree_digest(tmp_path / "input") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings


def test_archive_beside_junk_and_loose_files_loads(tmp_path):
    tree = make_image_folder(tmp_path / "tree")
    make_archive(tree, tmp_path / "input" / "data.zip", None)
    (tmp_path / "input" / "__MACOSX").mkdir()
    (tmp_path / "input" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "input" / "README.md").write_text("my cats and dogs", encoding="utf-8")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = tree_digest(tmp_path / "input")
    loaded = load_labeled_images(tmp_path / "input", SUBJECT, scratch)
    assert loaded.classes == ["cat", "dog"]
    assert loaded.class_counts() == {"cat": 2, "dog": 2}
    assert tree_digest(tmp_path / "input") == before


def test_archive_beside_class_folders_is_not_extracted(tmp_path):
    root = make_image_folder(tmp_path / "input")
    make_archive(make_image_folder(tmp_path / "tree", classes=("emu",)), root / "backup.zip", None)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    loaded = load_labeled_images(root, SUBJECT, scratch)
    assert loaded.classes == ["cat", "dog"]
    assert list(scratch.iterdir()) == []


def test_archive_with_non_ascii_names_loads(tmp_path):
    (tmp_path / "input").mkdir()
    with zipfile.ZipFile(tmp_path / "input" / "données.zip", "w") as bundle:
        bundle.writestr("chat_été/photo_ñ.png", png_bytes())
        bundle.writestr("狗/图片.png", png_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    loaded = load_labeled_images(tmp_path / "input", SUBJECT, scratch)
    assert loaded.classes == ["chat_été", "狗"]
    assert by_name(loaded) == {"photo_ñ.png": "chat_été", "图片.png": "狗"}


def test_archive_without_scratch_extracts_away_from_input(tmp_path):
    tree = make_image_folder(tmp_path / "tree")
    make_archive(tree, tmp_path / "input" / "data.zip", "wrap")
    before = tree_digest(tmp_path / "input")
    loaded = load_labeled_images(tmp_path / "input", SUBJECT)
    try:
        assert loaded.classes == ["cat", "dog"]
        assert not any(r.path.is_relative_to(tmp_path) for r in loaded.records)
        assert tree_digest(tmp_path / "input") == before
    finally:
        shutil.rmtree(loaded.root.parents[1] if loaded.root.name == "wrap" else loaded.root.parent)


def test_archive_file_given_directly_loads(tmp_path):
    tree = make_image_folder(tmp_path / "tree")
    archive = make_archive(tree, tmp_path / "data.tar.gz", None)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    loaded = load_labeled_images(archive, SUBJECT, scratch)
    assert loaded.classes == ["cat", "dog"]


def test_archive_of_an_image_directory_loads(tmp_path, designer_fixtures):
    shutil.copytree(designer_fixtures / "image_directory", tmp_path / "tree" / "image_directory")
    make_archive(tmp_path / "tree", tmp_path / "input" / "dir.zip", None)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    loaded = load_labeled_images(tmp_path / "input", SUBJECT, scratch)
    assert loaded.layout == "ImageDirectory"
    assert loaded.class_counts() == {"cat": 3, "dog": 3}


def test_two_archives_are_refused(tmp_path):
    tree = make_image_folder(tmp_path / "tree")
    make_archive(tree, tmp_path / "input" / "a.zip", None)
    make_archive(tree, tmp_path / "input" / "b.tar.gz", None)
    with pytest.raises(InvalidDatasetError, match="holds 2 archives"):
        load_labeled_images(tmp_path / "input", SUBJECT, tmp_path)


def test_archive_that_is_not_an_archive_is_refused(tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "data.zip").write_bytes(b"this is not a zip file at all")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(InvalidDatasetError, match="is not a readable zip or tar archive"):
        load_labeled_images(tmp_path / "input", SUBJECT, scratch)


def test_empty_archive_is_refused(tmp_path):
    (tmp_path / "input").mkdir()
    with zipfile.ZipFile(tmp_path / "input" / "data.zip", "w"):
        pass
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(InvalidDatasetError, match="is empty"):
        load_labeled_images(tmp_path / "input", SUBJECT, scratch)


def _files_outside(tmp_path: Path, scratch: Path) -> set[str]:
    return {
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*")
        if not p.is_relative_to(scratch) and not p.is_relative_to(tmp_path / "input")
    }


@pytest.mark.parametrize("evil", ["../evil.png", "/tmp/evil_abs_entry.png", "cat/../../evil.png", "..\\evil.png"])
def test_zip_with_escaping_entry_is_refused(tmp_path, evil):
    scratch = tmp_path / "work" / "scratch"
    scratch.mkdir(parents=True)
    (tmp_path / "input").mkdir()
    with zipfile.ZipFile(tmp_path / "input" / "data.zip", "w") as bundle:
        bundle.writestr("cat/a.png", png_bytes())
        bundle.writestr(zipfile.ZipInfo(evil), png_bytes())
    assert evil in zipfile.ZipFile(tmp_path / "input" / "data.zip").namelist()
    before = _files_outside(tmp_path, scratch)
    with pytest.raises(InvalidDatasetError, match="outside the extraction folder"):
        load_labeled_images(tmp_path / "input", SUBJECT, scratch)
    assert _files_outside(tmp_path, scratch) == before
    assert not Path("/tmp/evil_abs_entry.png").exists()
    assert not list(scratch.rglob("*.png"))


def test_zip_with_symlink_entry_is_refused(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "input").mkdir()
    with zipfile.ZipFile(tmp_path / "input" / "data.zip", "w") as bundle:
        bundle.writestr("cat/a.png", png_bytes())
        link = zipfile.ZipInfo("cat/b.png")
        link.external_attr = (0o120777 << 16) | 0
        bundle.writestr(link, "/etc/passwd")
    with pytest.raises(InvalidDatasetError, match="links are refused"):
        load_labeled_images(tmp_path / "input", SUBJECT, scratch)
    assert not [p for p in scratch.rglob("*") if p.is_symlink()]


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_with_link_entry_is_refused(tmp_path, kind):
    scratch = tmp_path / "work" / "scratch"
    scratch.mkdir(parents=True)
    (tmp_path / "input").mkdir()
    data = png_bytes()
    with tarfile.open(tmp_path / "input" / "data.tar.gz", "w:gz") as bundle:
        info = tarfile.TarInfo("cat/a.png")
        info.size = len(data)
        bundle.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cat/escape")
        link.type = kind
        link.linkname = str(tmp_path / "input") if kind == tarfile.SYMTYPE else "cat/a.png"
        bundle.addfile(link)
        # a file written through the link, if the link were created
        through = tarfile.TarInfo("cat/escape/planted.png")
        through.size = len(data)
        bundle.addfile(through, io.BytesIO(data))
    before = _files_outside(tmp_path, scratch)
    input_before = tree_digest(tmp_path / "input")
    with pytest.raises(InvalidDatasetError, match="link or special file"):
        load_labeled_images(tmp_path / "input", SUBJECT, scratch)
    assert _files_outside(tmp_path, scratch) == before
    assert tree_digest(tmp_path / "input") == input_before
    assert not [p for p in scratch.rglob("*") if p.is_symlink()]


def test_tar_with_escaping_entry_is_refused(tmp_path):
    scratch = tmp_path / "work" / "scratch"
    scratch.mkdir(parents=True)
    (tmp_path / "input").mkdir()
    data = png_bytes()
    with tarfile.open(tmp_path / "input" / "data.tar", "w") as bundle:
        info = tarfile.TarInfo("../../evil.png")
        info.size = len(data)
        bundle.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidDatasetError, match="outside the extraction folder"):
        load_labeled_images(tmp_path / "input", SUBJECT, scratch)
    assert not (tmp_path / "evil.png").exists()
    assert not (tmp_path / "work" / "evil.png").exists()


def test_archive_junk_entries_are_dropped(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "input").mkdir()
    with zipfile.ZipFile(tmp_path / "input" / "data.zip", "w") as bundle:
        bundle.writestr("wrap/cat/a.png", png_bytes())
        bundle.writestr("wrap/dog/b.png", png_bytes())
        bundle.writestr("__MACOSX/wrap/cat/._a.png", b"junk")
        bundle.writestr("wrap/.DS_Store", b"junk")
    loaded = load_labeled_images(tmp_path / "input", SUBJECT, scratch)
    assert loaded.classes == ["cat", "dog"]
    assert loaded.root.name == "wrap"


@pytest.mark.parametrize("beside", ["._wrap", "README.md", ".hidden_folder/"])
def test_archive_wrapper_is_descended_beside_hidden_and_loose_files(tmp_path, beside):
    # A macOS tar puts an AppleDouble '._wrap' beside 'wrap/'; zips often carry a README at the top.
    (tmp_path / "input").mkdir()
    with tarfile.open(tmp_path / "input" / "data.tar", "w") as bundle:
        for name in ("wrap/cat/a.png", "wrap/dog/b.png", beside + ("x" if beside.endswith("/") else "")):
            data = png_bytes() if name.endswith(".png") else b"not data"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    loaded = load_labeled_images(tmp_path / "input", SUBJECT, tmp_path)
    assert loaded.classes == ["cat", "dog"]
    assert loaded.root.name == "wrap"


def test_backslash_in_a_tar_name_is_part_of_the_name(tmp_path):
    # In a tar (unlike a zip written on Windows) '\' is an ordinary character: 'x\y' is a class of its own.
    (tmp_path / "input").mkdir()
    with tarfile.open(tmp_path / "input" / "data.tar", "w") as bundle:
        for index, name in enumerate(["x/a.png", "x\\y/b.png", "x\\y/c.png", "z/d.png"]):
            data = png_bytes(color=(index, 0, 0))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    loaded = load_labeled_images(tmp_path / "input", SUBJECT, tmp_path)
    assert loaded.class_counts() == {"x": 1, "x\\y": 2, "z": 1}


def test_archive_beside_a_folder_without_images_is_the_dataset(tmp_path):
    make_archive(make_image_folder(tmp_path / "tree"), tmp_path / "input" / "data.zip", None)
    (tmp_path / "input" / "logs").mkdir()
    (tmp_path / "input" / "logs" / "run.txt").write_text("upload log", encoding="utf-8")
    loaded = load_labeled_images(tmp_path / "input", SUBJECT, tmp_path)
    assert loaded.classes == ["cat", "dog"]


def test_tar_damaged_in_the_middle_is_refused_not_cut_short(tmp_path):
    # tarfile takes a damaged header for the end of the archive; the entries after it must not vanish silently.
    (tmp_path / "input").mkdir()
    archive = tmp_path / "input" / "data.tar"
    with tarfile.open(archive, "w") as bundle:
        for name in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png", "emu/e.png"):
            data = png_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    data = bytearray(archive.read_bytes())
    third = data.find(b"dog/c.png")
    data[third : third + 100] = b"\xff" * 100  # the third entry's header
    archive.write_bytes(bytes(data))
    with pytest.raises(InvalidDatasetError, match="damaged"):
        load_labeled_images(tmp_path / "input", SUBJECT, tmp_path)


def test_is_archive_suffixes(tmp_path):
    for name in ["a.zip", "b.ZIP", "c.tar.gz", "d.tgz", "e.tar", "f.TAR.BZ2"]:
        (tmp_path / name).write_bytes(b"x")
        assert archives.is_archive(tmp_path / name), name
    for name in ["g.png", "h.json", "zip"]:
        (tmp_path / name).write_bytes(b"x")
        assert not archives.is_archive(tmp_path / name), name
    assert not archives.is_archive(tmp_path / "missing.zip")


# ----------------------------------------------------------------------------------------------------------------
# decode_image / read_size


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _gradient(width: int = 16, height: int = 12) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))


def _palette_with_transparency(path: Path) -> Path:
    image = Image.fromarray(_gradient()).convert("P")
    image.info["transparency"] = 0
    return _save(image, path, transparency=0)


@pytest.mark.parametrize(
    ("name", "make", "mode"),
    [
        ("gray.png", lambda p: _save(Image.fromarray(_gradient()), p), "L"),
        ("palette.png", _palette_with_transparency, "P"),
        ("rgba.png", lambda p: _save(Image.new("RGBA", (16, 12), (255, 0, 0, 0)), p), "RGBA"),
        ("cmyk.jpg", lambda p: _save(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), p), "CMYK"),
        ("rgb.tif", lambda p: _save(Image.new("RGB", (16, 12), (1, 2, 3)), p), "RGB"),
        ("gray.tiff", lambda p: _save(Image.fromarray(_gradient()), p), "L"),
        ("rgb.jpeg", lambda p: _save(Image.new("RGB", (16, 12), (1, 2, 3)), p, quality=95), "RGB"),
        ("rgb.bmp", lambda p: _save(Image.new("RGB", (16, 12), (1, 2, 3)), p), "RGB"),
        ("rgb.webp", lambda p: _save(Image.new("RGB", (16, 12), (1, 2, 3)), p), "RGB"),
    ],
)
def test_decode_image_modes_give_rgb_uint8(tmp_path, name, make, mode):
    path = make(tmp_path / name)
    with Image.open(path) as image:
        assert image.mode == mode
    for size in [(5, 7), (32, 32)]:
        array = decode_image(path, size)
        assert array.shape == (*size, 3)
        assert array.dtype == np.uint8
    assert decode_image(path).shape == (12, 16, 3)
    assert decode_image(path.read_bytes(), (5, 7)).shape == (5, 7, 3)
    assert read_size(path) == (16, 12)


def test_decode_cmyk_jpeg_colours(tmp_path):
    path = _save(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), tmp_path / "red.jpg")
    pixel = decode_image(path, (4, 4))[2, 2]
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def test_decode_grayscale_replicates_channels(tmp_path):
    path = _save(Image.fromarray(_gradient()), tmp_path / "g.png")
    array = decode_image(path)
    assert np.array_equal(array[..., 0], _gradient())
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])


def test_decode_16_bit_gradient_is_not_clipped(tmp_path):
    values = np.tile(np.linspace(0, 65535, 64).astype("<u2"), (4, 1))
    path = _save(Image.frombytes("I;16", (64, 4), values.tobytes()), tmp_path / "g16.png")
    with Image.open(path) as image:
        assert image.mode == "I;16"
    array = decode_image(path)
    assert array.shape == (4, 64, 3) and array.dtype == np.uint8
    row_values = array[0, :, 0].astype(int)
    assert np.all(np.diff(row_values) >= 0)  # still a gradient
    above = row_values[values[0] > 255]
    assert len(np.unique(above)) > 30  # not all clipped to one value (white)
    assert row_values[0] == 0 and row_values[-1] == 255
    assert decode_image(path, (8, 8)).shape == (8, 8, 3)


def _exif_jpeg(path: Path, orientation: int) -> Path:
    image = Image.new("RGB", (4, 2), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 2, 2))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=100, subsampling=0)
    return path


def test_exif_orientation_is_applied(tmp_path):
    path = _exif_jpeg(tmp_path / "rotated.jpg", 6)
    with Image.open(path) as image:
        assert image.size == (4, 2)
    array = decode_image(path)
    assert array.shape == (4, 2, 3)  # 2 wide, 4 high
    assert read_size(path) == (2, 4)
    # orientation 6: rotate 90 degrees clockwise, so the red left half ends on top
    assert array[0, :, 0].min() > 150 and array[0, :, 2].max() < 100
    assert array[-1, :, 2].min() > 150 and array[-1, :, 0].max() < 100
    assert decode_image(path, (8, 4)).shape == (8, 4, 3)


def test_exif_orientation_1_is_unchanged(tmp_path):
    path = _exif_jpeg(tmp_path / "upright.jpg", 1)
    assert decode_image(path).shape == (2, 4, 3)
    assert read_size(path) == (4, 2)


def test_truncated_png_is_bad(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = _save(Image.fromarray(noise), tmp_path / "full.png")
    path = tmp_path / "truncated.png"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        decode_image(path, (8, 8))


def test_truncated_jpeg_is_bad(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = _save(Image.fromarray(noise), tmp_path / "full.jpg", quality=90)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        decode_image(path, (8, 8))


def test_zero_byte_and_text_files_are_bad(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is not a picture\n", encoding="utf-8")
    for path in (empty, text):
        with pytest.raises(BadImageError, match="not a readable image"):
            decode_image(path, (8, 8))
        with pytest.raises(BadImageError, match="not a readable image"):
            read_size(path)
    with pytest.raises(BadImageError, match="not a readable image"):
        decode_image(b"", (8, 8))


def test_missing_file_is_bad(tmp_path):
    with pytest.raises(BadImageError):
        decode_image(tmp_path / "gone.png")


@pytest.mark.parametrize("side", [100, 40])  # 10000 px: error; 1600 px: PIL only warns, still refused
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, side):
    path = _save(Image.new("RGB", (side, side)), tmp_path / "bomb.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_image(path, (8, 8))
    with pytest.raises(BadImageError, match="decompression bomb"):
        read_size(path)


def test_decompression_bomb_is_refused_in_every_thread(tmp_path, monkeypatch):
    # Between the limit and twice it PIL only warns; the refusal must not depend on warning filters, which are
    # process-wide and not thread-safe (images are decoded in a thread pool).
    path = _save(Image.new("RGB", (40, 40)), tmp_path / "bomb.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)

    def refused(_: int) -> bool:
        try:
            read_size(path)
        except BadImageError:
            return True
        return False

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(refused, range(400)))


def test_a_large_png_text_chunk_is_not_an_error(tmp_path):
    # Photo tools embed XMP metadata as compressed text chunks larger than PIL's 1 MB default.
    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", os.urandom(800_000).hex(), zip=True)
    path = tmp_path / "xmp.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, pnginfo=info)
    assert decode_image(path)[0, 0].tolist() == [10, 20, 30]


def test_a_named_pipe_is_skipped_not_read(tmp_path):
    pipe = tmp_path / "x.png"
    os.mkfifo(pipe)
    with pytest.raises(BadImageError, match="not a regular file"):
        read_size(pipe)
    with pytest.raises(BadImageError, match="not a regular file"):
        decode_image(pipe)


def test_image_below_the_pixel_limit_decodes(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (30, 30)), tmp_path / "small.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    assert decode_image(path).shape == (30, 30, 3)


# ----------------------------------------------------------------------------------------------------------------
# decode_dataset


def make_records(root: Path, counts: dict[str, int], size=(8, 8)) -> list[ImageRecord]:
    records = []
    for index, (label, count) in enumerate(counts.items()):
        for i in range(count):
            color = (30 * index + i, 255 - 10 * i, 40 * index)
            records.append(ImageRecord(write_png(root / label / f"{i:03d}.png", size, color), label))
    return records


def corrupt(record: ImageRecord) -> ImageRecord:
    record.path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return record


def test_decode_dataset_labels_follow_class_to_idx(tmp_path):
    records = make_records(tmp_path, {"cat": 3, "dog": 2})
    class_to_idx = {"dog": 0, "cat": 1}
    decoded = decode_dataset(records, class_to_idx, (8, 8), SUBJECT, workers=2, root=tmp_path)
    assert decoded.images.dtype == torch.uint8
    assert tuple(decoded.images.shape) == (5, 3, 8, 8)
    assert decoded.labels.dtype == torch.int64
    assert decoded.labels.tolist() == [1, 1, 1, 0, 0]
    assert decoded.skipped == []
    assert not decoded.memory_mapped
    # channels first, same pixels as decode_image
    expected = torch.from_numpy(decode_image(records[3].path, (8, 8)).transpose(2, 0, 1).copy())
    assert torch.equal(decoded.images[3], expected)


def test_decode_dataset_resizes_to_the_requested_size(tmp_path):
    records = make_records(tmp_path, {"cat": 2, "dog": 2}, size=(20, 10))
    decoded = decode_dataset(records, {"cat": 0, "dog": 1}, (6, 12), SUBJECT, workers=1)
    assert tuple(decoded.images.shape) == (4, 3, 6, 12)


def test_decode_dataset_memory_mapped_matches_in_memory(tmp_path):
    records = make_records(tmp_path / "data", {"cat": 4, "dog": 3})
    corrupt(records[5])
    class_to_idx = {"cat": 0, "dog": 1}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    kwargs = {"workers": 3, "root": tmp_path / "data", "max_bad_fraction": 0.5}
    in_memory = decode_dataset(records, class_to_idx, (10, 6), SUBJECT, **kwargs)
    mapped = decode_dataset(records, class_to_idx, (10, 6), SUBJECT, memory_budget=1, scratch=scratch, **kwargs)
    assert mapped.memory_mapped and not in_memory.memory_mapped
    assert torch.equal(mapped.images, in_memory.images)
    assert torch.equal(mapped.labels, in_memory.labels)
    assert mapped.skipped == in_memory.skipped == [("dog/001.png", mapped.skipped[0][1])]
    assert list(scratch.iterdir()) == []  # the mapped file is unlinked at once


def test_decode_dataset_skips_and_names_few_bad_files(tmp_path):
    records = make_records(tmp_path, {"cat": 10, "dog": 11})
    corrupt(records[4])
    assert 1 / len(records) < MAX_BAD_FRACTION
    decoded = decode_dataset(records, {"cat": 0, "dog": 1}, (8, 8), SUBJECT, workers=2, root=tmp_path)
    assert len(decoded) == 20
    assert decoded.labels.tolist() == [0] * 9 + [1] * 11
    assert [name for name, _ in decoded.skipped] == ["cat/004.png"]
    assert decoded.skipped[0][1]  # a reason is given


def test_decode_dataset_names_missing_files(tmp_path):
    records = make_records(tmp_path, {"cat": 10, "dog": 10})
    records.append(ImageRecord(tmp_path / "dog" / "vanished.png", "dog"))
    decoded = decode_dataset(records, {"cat": 0, "dog": 1}, (8, 8), SUBJECT, workers=2, root=tmp_path)
    assert len(decoded) == 20
    assert [name for name, _ in decoded.skipped] == ["dog/vanished.png"]


def test_decode_dataset_refuses_too_many_bad_files(tmp_path):
    records = make_records(tmp_path, {"cat": 5, "dog": 5})
    for index in (0, 6, 7):
        corrupt(records[index])
    with pytest.raises(InvalidDatasetError, match="3 of its 10 image files cannot be decoded, more than 10%") as info:
        decode_dataset(records, {"cat": 0, "dog": 1}, (8, 8), SUBJECT, workers=2, root=tmp_path)
    assert "cat/000.png" in str(info.value)
    assert info.value.message.startswith(SUBJECT)


def test_decode_dataset_refuses_a_class_left_empty(tmp_path):
    records = make_records(tmp_path, {"cat": 20, "dog": 1})
    corrupt(records[-1])
    with pytest.raises(InvalidDatasetError, match="every image of the class\\(es\\) 'dog' is unreadable"):
        decode_dataset(records, {"cat": 0, "dog": 1}, (8, 8), SUBJECT, workers=2, root=tmp_path)


def test_decode_dataset_refuses_all_bad(tmp_path):
    records = [corrupt(r) for r in make_records(tmp_path, {"cat": 2, "dog": 2})]
    with pytest.raises(InvalidDatasetError, match="none of its 4 image files could be decoded"):
        decode_dataset(records, {"cat": 0, "dog": 1}, (8, 8), SUBJECT, workers=2, root=tmp_path)


def test_decode_dataset_refuses_an_empty_list():
    with pytest.raises(InvalidDatasetError, match="lists no image file"):
        decode_dataset([], {"cat": 0}, (8, 8), SUBJECT, workers=1)


# ----------------------------------------------------------------------------------------------------------------
# choose_image_size


def test_choose_image_size_scales_small_images_up_to_min_size(tmp_path):
    records = make_records(tmp_path, {"cat": 3}, size=(8, 8))
    assert choose_image_size(records, min_size=32, max_size=224) == (32, 32)


def test_choose_image_size_scales_large_images_down_keeping_aspect(tmp_path):
    records = make_records(tmp_path, {"cat": 3}, size=(1000, 500))  # 1000 wide, 500 high
    assert choose_image_size(records, min_size=32, max_size=224) == (112, 224)


def test_choose_image_size_keeps_a_size_in_range(tmp_path):
    records = make_records(tmp_path, {"cat": 3}, size=(100, 60))
    assert choose_image_size(records, min_size=32, max_size=224) == (60, 100)


@pytest.mark.parametrize(("size", "expected"), [((1, 500), (224, 32)), ((5000, 2), (32, 224)), ((40, 4000), (224, 32))])
def test_choose_image_size_bounds_both_sides_of_extreme_strips(tmp_path, size, expected):
    # A 1 x 500 strip cannot keep its aspect ratio within [32, 224]: each side is bounded instead.
    records = make_records(tmp_path, {"cat": 3}, size=size)
    assert choose_image_size(records, min_size=32, max_size=224) == expected


def test_choose_image_size_takes_the_median(tmp_path):
    records = [
        ImageRecord(write_png(tmp_path / f"{i}.png", size), "cat")
        for i, size in enumerate([(40, 40), (64, 48), (300, 300), (64, 48), (50, 44)])
    ]
    assert choose_image_size(records, min_size=32, max_size=224) == (48, 64)


def test_choose_image_size_ignores_unreadable_and_honours_exif(tmp_path):
    good = ImageRecord(_exif_jpeg(tmp_path / "r.jpg", 6), "cat")  # 2 wide, 4 high once rotated
    bad = corrupt(ImageRecord(write_png(tmp_path / "bad.png"), "cat"))
    bad.path.write_text("nope", encoding="utf-8")
    assert choose_image_size([good, bad], min_size=16, max_size=224) == (32, 16)
    assert choose_image_size([bad], min_size=16, max_size=224) == (16, 16)


# ----------------------------------------------------------------------------------------------------------------
# batches_of: a process's sampler indices cut into batches


@pytest.mark.parametrize(("count", "batch_size"), [(10, 4), (10, 5), (12, 4), (7, 7), (9, 3)])
def test_batches_of_cover_every_index_once(count, batch_size):
    order = torch.randperm(count, generator=torch.Generator().manual_seed(1)).tolist()
    batches = list(batches_of(order, batch_size, drop_single=True))
    assert torch.cat(batches).tolist() == order[: sum(len(b) for b in batches)]
    assert sorted(torch.cat(batches).tolist()) == sorted(order)[: sum(len(b) for b in batches)]
    assert all(1 < len(b) <= batch_size for b in batches)
    assert count - sum(len(b) for b in batches) <= 1


def test_batches_of_drop_a_trailing_single_only_when_asked():
    kept = list(batches_of(list(range(11)), 5, drop_single=True))
    assert [len(b) for b in kept] == [5, 5]
    everything = list(batches_of(list(range(11)), 5, drop_single=False))
    assert [len(b) for b in everything] == [5, 5, 1]
    assert torch.cat(everything).tolist() == list(range(11))
    assert [b.tolist() for b in batches_of([3], 1, drop_single=False)] == [[3]]


def test_archive_larger_than_the_free_disk_is_refused_before_extraction(tmp_path, monkeypatch):
    from collections import namedtuple

    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "big.bin").write_bytes(b"\0" * 100_000)
    bundle = tmp_path / "data.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(source / "a" / "big.bin", "a/big.bin")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    destination = tmp_path / "out"
    with pytest.raises(InvalidDatasetError, match="only 0.0 GB of disk"):
        archives.extract_archive(bundle, destination, "Training dataset")
    assert not destination.exists() or not any(destination.rglob("*.bin"))


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sixteen_bit_values_decode_the_same_in_every_image():
    # One raw value must give one brightness whatever else the image holds: scaled from the full 16-bit range.
    decoded = []
    for other in (250, 300, 5000, 65535):
        array = np.full((4, 4), 25700, dtype=np.uint16)
        array[0, 0] = other
        decoded.append(decode_image(_png_bytes(array)))
    assert all(int(image[1, 1, 0]) == 100 for image in decoded)  # 25700 / 257
    assert int(decoded[-1][0, 0, 0]) == 255
    assert int(decode_image(_png_bytes(np.zeros((2, 2), dtype=np.uint16)))[0, 0, 0]) == 0


def test_float_images_decode_from_the_unit_range(tmp_path):
    constant = tmp_path / "half.tiff"
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F").save(constant)
    assert int(decode_image(constant)[0, 0, 0]) == 128
    spread = np.full((4, 4), 0.5, dtype=np.float32)
    spread[0, 0], spread[0, 1] = 1.0, 7.0  # out of range: clipped, and it changes nothing else
    path = tmp_path / "spread.tiff"
    Image.fromarray(spread, mode="F").save(path)
    decoded = decode_image(path)
    assert int(decoded[1, 1, 0]) == 128 and int(decoded[0, 0, 0]) == 255 and int(decoded[0, 1, 0]) == 255
