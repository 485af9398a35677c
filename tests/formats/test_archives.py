"""Datasets given as an archive (zip, tar and its compressions): safe extraction away from the input, wrappers
and junk entries, and every escaping, linking or damaged archive refused.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import by_name, make_image_folder, png_bytes, tree_digest, write_png
from train_pytorch_model.data.images import decode_image
from train_pytorch_model.errors import InsufficientDiskSpaceError, InvalidDatasetError
from train_pytorch_model.formats import archives
from train_pytorch_model.formats.image_directory import load_labeled_images

SUBJECT = "Training dataset"


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


def test_archive_larger_than_the_free_disk_is_refused_before_extraction(tmp_path, monkeypatch):
    from collections import namedtuple

    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "big.bin").write_bytes(b"\0" * 100_000)
    bundle = tmp_path / "data.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(source / "a" / "big.bin", "a/big.bin")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    destination = tmp_path / "out"
    with pytest.raises(InsufficientDiskSpaceError) as raised:
        archives.extract_archive(bundle, destination, "Training dataset")
    assert raised.value.exit_code == 10
    assert raised.value.message.startswith("Training dataset: the archive 'data.zip' unpacked needs about 111.1 kB")
    assert "only 1.0 kB are free there" in raised.value.message
    assert not destination.exists() or not any(destination.rglob("*.bin"))
