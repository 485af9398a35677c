"""Reading a labelled image dataset: the designer's ImageDirectory, a torchvision ImageFolder tree, or a folder
holding one archive of either. The result is a flat list of (file, class name) records; nothing is decoded here.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.images import is_image_name
from ..errors import InvalidDatasetError, NotLabeledDatasetError
from .archives import JUNK_NAMES, dataset_root, extract_archive, inside, is_archive, safe_walk
from .class_names import class_name

log = logging.getLogger(__name__)

CLASSIFICATION = "COCO_classification"
MLTABLE_FILE = "MLTable"  # an MLTable folder (mltable_dataset.py)
CONVERT_HINT = (
    "Give a designer ImageDirectory (from Convert to Image Directory), a folder with one subfolder per class "
    "(an ImageFolder tree), a folder holding one .zip or .tar(.gz) of either, or an MLTable folder over JSON lines "
    "(image_url, label) as Data Labeling exports."
)


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: str
    # Where the dataset itself says the image is, when that is not a file under its folder: an MLTable's
    # image_url (a path elsewhere, or a URL copied into scratch). Logs and the resume listing name it.
    source: str | None = None

    def name_in(self, root: Path | None) -> str:
        """How logs and listings name the image: its source, else its path under root, else its path."""
        if self.source is not None:
            return self.source
        if root is not None:
            try:
                return self.path.relative_to(root).as_posix()
            except ValueError:
                pass
        return str(self.path)


@dataclass
class LabeledImages:
    """A labelled dataset as listed on disk: what to decode and which class each file is."""

    root: Path
    layout: str
    records: list[ImageRecord]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    schema_file: Path | None = None
    samples_file: Path | None = None

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for record in self.records:
            counts[record.label] = counts.get(record.label, 0) + 1
        return counts


def load_labeled_images(path: str | Path, subject: str, scratch: Path | None = None) -> LabeledImages:
    """List the labelled images under path. subject names the input in errors ('Training dataset').

    scratch is where an archive is extracted (a fresh temporary folder when None); the input is never written.
    """
    root = locate_dataset(path, subject, scratch)
    if (root / "_meta.yaml").is_file():
        return _load_image_directory(root, subject)
    if (root / MLTABLE_FILE).is_file():
        from .mltable_dataset import load_mltable_images  # mltable is imported only for an MLTable

        return load_mltable_images(root, subject, scratch)
    return _load_image_folder(root, subject)


def locate_dataset(path: str | Path, subject: str, scratch: Path | None = None) -> Path:
    """The folder that holds the dataset: path itself, or, when path is (or only holds) one archive, the dataset
    folder inside its extraction. Shared by every reader so that they all accept the same inputs.

    scratch is where an archive is extracted (a fresh temporary folder when None); the input is never written.
    """
    root = Path(path)
    if not root.exists():
        raise InvalidDatasetError(f"the folder '{root}' does not exist.", CONVERT_HINT, subject=subject)
    if root.is_file():
        if is_archive(root):
            return _extract(root, subject, scratch)
        raise InvalidDatasetError(f"'{root}' is a file, not a folder.", CONVERT_HINT, subject=subject)
    if (root / "_meta.yaml").is_file() or (root / MLTABLE_FILE).is_file():
        return root
    entries = [entry for entry in root.iterdir() if entry.name not in JUNK_NAMES and not entry.name.startswith(".")]
    if not entries:
        raise InvalidDatasetError(f"the folder '{root}' is empty.", CONVERT_HINT, subject=subject)
    archives = [entry for entry in entries if is_archive(entry)]
    # Loose non-image files or folders beside the archive (a README, a licence, logs/) do not make the folder an
    # ImageFolder; only images do.
    others = [entry for entry in entries if entry not in archives and _holds_images(entry)]
    if archives and not others:
        if len(archives) > 1:
            names = ", ".join(sorted(a.name for a in archives))
            raise InvalidDatasetError(
                f"the folder holds {len(archives)} archives ({names}) and it is unclear which is the dataset.",
                "Keep exactly one archive in the folder, or extract them into one ImageFolder tree.",
                subject=subject,
            )
        return _extract(archives[0], subject, scratch)
    for archive in archives:  # a backup beside the data, or the data beside a stray preview: say which is used
        log.warning(
            "%s: '%s' lies beside images in '%s' and is not extracted; the folder's images are used. Keep the "
            "archive alone in its folder to use it instead.",
            subject,
            archive.name,
            root,
        )
    return root


def _holds_images(entry: Path) -> bool:
    if entry.is_dir():
        return any(is_image_name(name) for _, names in safe_walk(entry) for name in names)
    return is_image_name(entry.name)


def _extract(archive: Path, subject: str, scratch: Path | None) -> Path:
    base = Path(tempfile.mkdtemp(prefix="dataset-", dir=scratch))
    extracted = extract_archive(archive, base / "extracted", subject)
    if not any(extracted.iterdir()):
        raise InvalidDatasetError(f"the archive '{archive.name}' is empty.", CONVERT_HINT, subject=subject)
    return locate_dataset(dataset_root(extracted), subject, scratch)


def _load_image_folder(root: Path, subject: str) -> LabeledImages:
    _refuse_coco(root, subject)
    folders = sorted(
        entry
        for entry in root.iterdir()
        if entry.is_dir() and entry.name not in JUNK_NAMES and not entry.name.startswith(".")
    )
    class_dirs = [folder for folder in folders if inside(root, folder)]
    root_images = sorted(p.name for p in root.iterdir() if p.is_file() and is_image_name(p.name))
    records: list[ImageRecord] = []
    classes: list[str] = []
    skipped: list[tuple[str, str]] = []
    for folder in folders:
        if folder not in class_dirs:
            skipped.append((folder.name + "/", "a class folder that is a link leading outside the input folder"))
            log.warning(
                "%s: the class folder '%s' is a link leading outside the input folder and is ignored; copy its "
                "images into the input instead.",
                subject,
                folder.name,
            )
    for name, spellings in _folders_by_class(class_dirs, subject).items():
        files = [f for d in spellings for folder, names in safe_walk(d) for f in (folder / n for n in names)]
        files = [f for f in files if is_image_name(f.name)]
        outside = [f for f in files if not inside(root, f)]
        skipped.extend((str(f.relative_to(root)), "a link leading outside the input folder") for f in outside)
        files = [f for f in files if inside(root, f)]
        if files:
            classes.append(name)
            records.extend(ImageRecord(f, name) for f in sorted(files, key=lambda p: p.as_posix()))
    if not records:
        if root_images or any(is_image_name(n) for _, names in safe_walk(root) for n in names):
            raise NotLabeledDatasetError(
                f"the images in '{root}' are not sorted into class folders, so they have no labels.",
                "Put each class's images in a subfolder named after the class (cat/1.png, dog/2.png), "
                "or run Convert to Image Directory on a labelled layout.",
                subject=subject,
            )
        raise InvalidDatasetError(f"no image files were found in '{root}'.", CONVERT_HINT, subject=subject)
    for name in root_images:
        skipped.append((name, "an image outside any class folder, so it has no label"))
        log.warning("%s: '%s' is outside any class folder and is ignored.", subject, name)
    return LabeledImages(root=root, layout="ImageFolder", records=records, classes=classes, skipped=skipped)


def _folders_by_class(class_dirs: list[Path], subject: str) -> dict[str, list[Path]]:
    """Class folders by class name (NFC), in the order of the names. Two folders whose names differ only in
    their Unicode form (one copied from a Mac archive) hold one class."""
    by_class: dict[str, list[Path]] = {}
    for folder in class_dirs:
        by_class.setdefault(class_name(folder.name), []).append(folder)
    for name, spellings in by_class.items():
        if len(spellings) > 1:
            log.warning(
                "%s: %d folders spell the class '%s' in different Unicode forms; their images form one class.",
                subject,
                len(spellings),
                name,
            )
    return dict(sorted(by_class.items()))


def _refuse_coco(root: Path, subject: str) -> None:
    """A COCO json at the top names detection or segmentation data, which a classifier cannot train on."""
    for candidate in sorted(root.glob("*.json")):
        try:
            with open(candidate, encoding="utf-8") as stream:
                content = json.load(stream)
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and "images" in content and "annotations" in content:
            raise InvalidDatasetError(
                f"'{candidate.name}' holds COCO annotations (detection, segmentation, keypoints or captions); "
                "Train PyTorch Model trains image classifiers only.",
                "Give one subfolder of images per class instead, without the COCO json.",
                subject=subject,
            )


def _read_meta(root: Path, subject: str) -> dict:
    try:
        meta = yaml.safe_load((root / "_meta.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidDatasetError(
            f"'_meta.yaml' in '{root}' cannot be read ({exc}).", CONVERT_HINT, subject=subject
        ) from exc
    if not isinstance(meta, dict) or not meta.get("type"):
        raise InvalidDatasetError(f"'_meta.yaml' in '{root}' has no 'type'.", CONVERT_HINT, subject=subject)
    if meta["type"] != "ImageDirectory":
        raise InvalidDatasetError(
            f"'{root}' is a {meta['type']}, not an ImageDirectory.",
            "Connect an image dataset to this input. " + CONVERT_HINT,
            subject=subject,
        )
    return meta


def _member(root: Path, relative: object, what: str, subject: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise InvalidDatasetError(
            f"'_meta.yaml' in '{root}' has no valid '{what}' entry.", CONVERT_HINT, subject=subject
        )
    path = root / relative
    if not inside(root, path):
        raise InvalidDatasetError(
            f"'{relative}' ({what}) points outside the dataset folder.", CONVERT_HINT, subject=subject
        )
    return path


@dataclass
class ImageList:
    """An ImageDirectory as written on disk: its column attributes and its images.lst records, in order and
    unchanged, so that readers other than training (scoring, conversion) keep every pass-through column."""

    root: Path
    columns: list[dict]
    image_column: dict
    records: list[dict]
    list_file: Path
    schema_file: Path
    samples_file: Path | None = None

    @property
    def image_ref(self) -> str:
        return str((self.image_column.get("properties") or {}).get("image_ref", "image_info"))

    @property
    def annotation_column(self) -> dict | None:
        """The first column whose properties name an annotation type: the designer's label column."""
        return next((c for c in self.columns if "annotation_type" in (c.get("properties") or {})), None)

    def relative_path(self, record: dict) -> str:
        """Where the record's image lies inside the folder ('base_file_name' overrides 'file_name')."""
        info = record[self.image_ref]
        return str(info.get("base_file_name") or info["file_name"])


def read_image_list(root: Path, subject: str) -> ImageList:
    """Read an ImageDirectory's meta, schema and image list (designer-formats.md section 2), decoding nothing."""
    meta = _read_meta(root, subject)
    schema_file = _member(root, meta.get("schema", "_schema.json"), "schema", subject)
    list_file = _member(root, meta.get("image_list", "images.lst"), "image_list", subject)
    samples = meta.get("samples")
    samples_file = root / samples if isinstance(samples, str) and inside(root, root / samples) else None
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
        columns = schema["columnAttributes"]
        if not isinstance(columns, list) or not all(isinstance(c, dict) for c in columns):
            raise TypeError("columnAttributes is not a list of column objects")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidDatasetError(
            f"the schema '{schema_file.name}' cannot be read ({exc}).", CONVERT_HINT, subject=subject
        ) from exc
    image_column = next((c for c in columns if _is_image_column(c)), None)
    if image_column is None:
        raise InvalidDatasetError(
            f"the schema '{schema_file.name}' has no image column.", CONVERT_HINT, subject=subject
        )
    listing = ImageList(
        root=root,
        columns=columns,
        image_column=image_column,
        records=[],
        list_file=list_file,
        schema_file=schema_file,
        samples_file=samples_file if samples_file and samples_file.is_file() else None,
    )
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidDatasetError(f"'{list_file.name}' cannot be read ({exc}).", CONVERT_HINT, subject=subject) from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            listing.relative_path(record)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidDatasetError(
                f"line {number} of '{list_file.name}' is not a valid record ({exc}).",
                CONVERT_HINT,
                subject=subject,
            ) from exc
        listing.records.append(record)
    return listing


def _load_image_directory(root: Path, subject: str) -> LabeledImages:
    listing = read_image_list(root, subject)
    label_column = listing.annotation_column
    if label_column is None:
        raise NotLabeledDatasetError(
            f'there is no label column in "{root}".',
            "Prepare a labelled image dataset for training: Convert to Image Directory on a folder with one "
            "subfolder per class.",
            subject=subject,
        )
    properties = label_column["properties"]
    if properties["annotation_type"] != CLASSIFICATION:
        raise InvalidDatasetError(
            f"its labels are {properties['annotation_type']} annotations; Train PyTorch Model trains image "
            "classifiers and needs COCO_classification labels.",
            "Convert a folder with one subfolder per class instead.",
            subject=subject,
        )
    id_to_name: dict[int, str] = {}
    unnumbered: list[str] = []
    for category in properties.get("categories") or []:
        if not isinstance(category, dict) or "name" not in category:
            continue
        name, key = class_name(category["name"]), category.get("id")
        if key is None:
            unnumbered.append(name)
        elif isinstance(key, int) and not isinstance(key, bool):
            id_to_name[key] = name
        else:
            raise InvalidDatasetError(
                f"the category '{name}' in '{listing.schema_file.name}' has the id {key!r}; category ids must be "
                "integers.",
                "Convert the images again with Convert to Image Directory, or fix the ids in the schema.",
                subject=subject,
            )
    declared = [id_to_name[key] for key in sorted(id_to_name)] + unnumbered

    records, skipped = _labeled_records(listing, label_column["name"], id_to_name)
    if not records:
        raise InvalidDatasetError(f"'{listing.list_file.name}' lists no labelled image.", CONVERT_HINT, subject=subject)
    classes = list(dict.fromkeys(declared + sorted({r.label for r in records})))
    return LabeledImages(
        root=root,
        layout="ImageDirectory",
        records=records,
        classes=classes,
        skipped=skipped,
        schema_file=listing.schema_file,
        samples_file=listing.samples_file,
    )


def _is_image_column(column: dict) -> bool:
    element = (column.get("elementType") or {}).get("typeName")
    mime = str((column.get("properties") or {}).get("mime_type", ""))
    return (element == "bytes" or column.get("type") == "Bytes") and mime.startswith("image")


def _labeled_records(
    listing: ImageList, label_key: str, id_to_name: dict
) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    records: list[ImageRecord] = []
    skipped: list[tuple[str, str]] = []
    for record in listing.records:
        relative = listing.relative_path(record)
        label = record.get(label_key)
        if isinstance(label, int) and not isinstance(label, bool) and label in id_to_name:
            label = id_to_name[label]
        if label is None or (isinstance(label, str) and not label.strip()) or isinstance(label, (list, dict)):
            skipped.append((relative, "no label"))
            continue
        path = listing.root / relative
        if not inside(listing.root, path):
            skipped.append((relative, "a path leading outside the input folder"))
            continue
        records.append(ImageRecord(path, class_name(label)))
    return records, skipped
