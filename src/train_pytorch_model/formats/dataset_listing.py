"""Listing every image layout the components accept (an ImageFolder tree, a flat folder, COCO, an
ImageDirectory, or an archive of one of those) as one ImageTable, and writing that table as the designer's
ImageDirectory (designer-formats.md sections 1 and 2), byte-compatible with the designer module.

Convert to Image Directory lists and writes; Score Image Model lists the folders that are not ImageDirectories,
as the designer's own Score module does.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..data.images import BadImageError, decode_image, is_image_name
from ..disk_space import require_free_space
from ..errors import InvalidDatasetError
from ..output.publish import staged
from .archives import JUNK_NAMES, inside, safe_walk
from .class_names import class_name
from .designer_files import dump_json, dump_yaml, json_safe
from .image_directory import CLASSIFICATION, CONVERT_HINT, load_labeled_images, locate_dataset, read_image_list

log = logging.getLogger(__name__)

SUBJECT = "Input dataset"
IMAGE_REF = "image_info"
IMAGE_FOLDER = "image"
LIST_FILE = "images.lst"
SCHEMA_FILE = "_schema.json"
SAMPLES_FILE = "_samples.json"
SAMPLE_COUNT = 3
# COCO annotation keys that make an annotation more than a class label.
COCO_GEOMETRY_KEYS = ("caption", "keypoints", "file_name", "segmentation", "bbox")


@dataclass
class ImageTable:
    """A dataset listed as an ImageDirectory: the schema's column attributes, the images.lst records (with
    'file_name' as the output names it) and, for each record, the file its bytes are copied from."""

    layout: str
    columns: list[dict]
    records: list[dict]
    sources: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    root: Path | None = None  # the folder listed (inside the extraction of an archive)

    def source_name(self, index: int) -> str:
        """How a user finds record index's file in their input."""
        source = self.sources[index]
        return source.relative_to(self.root).as_posix() if self.root else str(source)

    @property
    def image_column(self) -> dict:
        return next(c for c in self.columns if _is_image_column(c))

    @property
    def image_ref(self) -> str:
        return str((self.image_column.get("properties") or {}).get("image_ref", IMAGE_REF))

    @property
    def annotation_column(self) -> dict | None:
        return next((c for c in self.columns if "annotation_type" in (c.get("properties") or {})), None)


# ----- schema columns (designer-formats.md section 2.3) -----


def image_column() -> dict:
    # 'image/png' whatever the real format: it is the designer's marker of an image column, not a MIME type.
    return {
        "name": "image",
        "type": "Bytes",
        "isFeature": True,
        "elementType": {"typeName": "bytes", "isNullable": False},
        "properties": {"mime_type": "image/png", "image_ref": IMAGE_REF},
    }


def id_column() -> dict:
    return {
        "name": "id",
        "type": "Numeric",
        "isFeature": False,
        "elementType": {"typeName": "int64", "isNullable": False},
    }


def category_column(categories: list) -> dict:
    return {
        "name": "category",
        "type": "String",
        "isFeature": False,
        "elementType": {"typeName": "str", "isNullable": False},
        "properties": {"annotation_type": CLASSIFICATION, "categories": categories},
    }


def coco_annotation_column(kind: str, categories: list | None) -> dict:
    properties: dict = {"annotation_type": f"COCO_{kind}"}
    if categories is not None:
        properties["categories"] = categories
    return {
        "name": f"{kind}_annotation",
        "type": "Object",
        "isFeature": False,
        "elementType": {"typeName": "object", "isNullable": False},
        "properties": properties,
    }


def _is_image_column(column: dict) -> bool:
    # Score Image Model's looser test (designer-formats.md 2.3): any 'image...' MIME type marks the image column.
    return str((column.get("properties") or {}).get("mime_type", "")).startswith("image")


# ----- listing -----


def list_dataset(path: str | Path, subject: str, scratch: Path | None = None, *, check: bool = True) -> ImageTable:
    """List any accepted input as an ImageDirectory table. check decodes every image and skips unreadable ones
    (conversion); without it only missing files are skipped (scoring decodes the images anyway)."""
    root = locate_dataset(path, subject, scratch)
    if (root / "_meta.yaml").is_file():
        table = _from_image_directory(root, subject)
    else:
        coco = _coco_files(root)
        if len(coco) > 1:
            names = ", ".join(candidate.name for candidate, _ in coco)
            raise InvalidDatasetError(
                f"'{root}' holds {len(coco)} COCO annotation files ({names}) and it is unclear which one to use.",
                "Keep exactly one COCO json beside the images (convert each split separately).",
                subject=subject,
            )
        table = _from_coco(root, *coco[0], subject) if coco else _from_folders(root, subject, check)
    table.root = root
    if check and table.layout in ("COCO", "ImageDirectory"):
        _drop_unreadable(table)
    if not table.records:
        raise InvalidDatasetError(
            f"no usable image was found in '{root}'{_first_skipped(table.skipped)}.", CONVERT_HINT, subject=subject
        )
    for name, reason in table.skipped:
        log.warning("%s: '%s' is skipped: %s.", subject, name, reason)
    return table


def _first_skipped(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    shown = "; ".join(f"'{name}': {reason}" for name, reason in skipped[:3])
    return f" ({len(skipped)} skipped, e.g. {shown})"


def _visible(entry: Path) -> bool:
    return entry.name not in JUNK_NAMES and not entry.name.startswith(".")


def _from_image_directory(root: Path, subject: str) -> ImageTable:
    """An ImageDirectory is re-listed as it is: same columns, records and ids; 'base_file_name' resolved."""
    listing = read_image_list(root, subject)
    columns, label_key = _classification_in_class_names(listing.columns)
    table = ImageTable(layout="ImageDirectory", columns=columns, records=[], sources=[])
    ref = listing.image_ref
    for record in listing.records:
        if label_key is not None and isinstance(record.get(label_key), str):
            record = {**record, label_key: class_name(record[label_key])}
        relative = listing.relative_path(record)
        info = dict(record[ref])
        info.pop("base_file_name", None)
        name = str(info["file_name"])
        source = root / relative
        if not inside(root, source) or not _is_relative_inside(name):
            table.skipped.append((relative, "a path leading outside the dataset folder"))
            continue
        if not source.is_file():
            table.skipped.append((relative, "the file is missing"))
            continue
        table.records.append({**record, ref: info})
        table.sources.append(source)
    return table


def _classification_in_class_names(columns: list[dict]) -> tuple[list[dict], str | None]:
    """The columns with a classification label column's category names in the one Unicode form class names are
    compared in, and that column's name (None when there is no such column)."""
    for position, column in enumerate(columns):
        properties = column.get("properties") or {}
        if properties.get("annotation_type") != CLASSIFICATION:
            continue
        if isinstance(properties.get("categories"), list):
            categories = _with_class_names(properties["categories"])
            column = {**column, "properties": {**properties, "categories": categories}}
        return [*columns[:position], column, *columns[position + 1 :]], column.get("name")
    return columns, None


def _is_relative_inside(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _from_folders(root: Path, subject: str, check: bool) -> ImageTable:
    """ImageFolder when two or more first-level folders hold images, flat otherwise; never both silently."""
    top_images = sorted(p.name for p in root.iterdir() if p.is_file() and _visible(p) and is_image_name(p.name))
    class_dirs = sorted(
        p.name for p in root.iterdir() if p.is_dir() and _visible(p) and inside(root, p) and _holds_images(p)
    )
    if top_images and class_dirs:
        shown = ", ".join(f"'{name}'" for name in top_images[:5]) + (", ..." if len(top_images) > 5 else "")
        raise InvalidDatasetError(
            f"'{root}' has {len(top_images)} image(s) at its top level ({shown}) beside the class folders "
            f"{', '.join(class_dirs[:5])}; it is unclear whether they are unlabelled images or belong to a class.",
            "Move every top-level image into its class folder (labelled data), or move the class folders' images "
            "up and remove the folders (unlabelled data).",
            subject=subject,
        )
    if len(class_dirs) >= 2:
        return _from_image_folder(root, subject, check)
    if class_dirs:
        log.warning(
            "%s: '%s' holds a single folder, '%s'; its images are converted as unlabelled images (a classifier "
            "needs two or more class folders).",
            subject,
            root,
            class_dirs[0],
        )
    return _from_flat(root, check)


def _holds_images(folder: Path) -> bool:
    return any(is_image_name(name) for _, names in safe_walk(folder) for name in names)


def _from_image_folder(root: Path, subject: str, check: bool) -> ImageTable:
    """Classes are the first-level folders, read by the trainer's own reader so that both agree on the data."""
    labeled = load_labeled_images(root, subject)
    records = sorted(labeled.records, key=lambda r: r.path.relative_to(root).as_posix())
    skipped = list(labeled.skipped)
    if check:
        reasons = _check_images([r.path for r in records])
        skipped += [(r.path.relative_to(root).as_posix(), why) for r, why in zip(records, reasons, strict=True) if why]
        records = [r for r, why in zip(records, reasons, strict=True) if not why]
    kept = {r.label for r in records}
    classes = [name for name in labeled.classes if name in kept]
    index = {name: i for i, name in enumerate(classes)}
    table = ImageTable(
        layout="ImageFolder",
        columns=[image_column(), id_column(), category_column([{"id": i, "name": n} for i, n in enumerate(classes)])],
        records=[],
        sources=[],
        skipped=skipped,
    )
    for i, record in enumerate(records):
        name = f"{IMAGE_FOLDER}/{index[record.label]}_{i}{record.path.suffix}"
        table.records.append({IMAGE_REF: {"file_name": name}, "category": record.label, "id": i})
        table.sources.append(record.path)
    return table


def _from_flat(root: Path, check: bool) -> ImageTable:
    """Unlabelled images at any depth, in sorted path order (the designer used file-system order)."""
    paths = [folder / name for folder, names in safe_walk(root) for name in names if is_image_name(name)]
    paths = sorted((p for p in paths if inside(root, p)), key=lambda p: p.relative_to(root).as_posix())
    skipped: list[tuple[str, str]] = []
    if check:
        reasons = _check_images(paths)
        skipped = [(p.relative_to(root).as_posix(), why) for p, why in zip(paths, reasons, strict=True) if why]
        paths = [p for p, why in zip(paths, reasons, strict=True) if not why]
    table = ImageTable(layout="flat", columns=[image_column(), id_column()], records=[], sources=[], skipped=skipped)
    for i, path in enumerate(paths):
        table.records.append({IMAGE_REF: {"file_name": f"{IMAGE_FOLDER}/{path.relative_to(root).as_posix()}"}, "id": i})
        table.sources.append(path)
    return table


def _coco_files(root: Path) -> list[tuple[Path, dict]]:
    """Top-level json files holding a COCO mapping ('images' and 'annotations'); other json is not data."""
    found = []
    for candidate in sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".json"):
        try:
            content = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(content, dict) and "images" in content and "annotations" in content:
            found.append((candidate, content))
    return found


def _annotation_kind(annotation: dict) -> str:
    """The designer's rule, applied to one annotation; a bare category is a classification label."""
    if "caption" in annotation:
        return "image_caption"
    if "keypoints" in annotation:
        return "keypoint_detection"
    if "file_name" in annotation:
        return "semantic_segmentation"
    if "segmentation" in annotation or "bbox" in annotation:
        return "object_detection"
    return "classification" if isinstance(annotation.get("category_id"), (int, str)) else "unknown"


def _from_coco(root: Path, json_file: Path, content: dict, subject: str) -> ImageTable:
    images, annotations = content["images"], content["annotations"]
    if not isinstance(images, list) or not images or not all(isinstance(i, dict) for i in images):
        raise InvalidDatasetError(f"'{json_file.name}' lists no images.", CONVERT_HINT, subject=subject)
    if not isinstance(annotations, list) or not annotations or not all(isinstance(a, dict) for a in annotations):
        raise InvalidDatasetError(f"'{json_file.name}' lists no annotations.", CONVERT_HINT, subject=subject)
    categories = content.get("categories") if isinstance(content.get("categories"), list) else None

    kinds = {_annotation_kind(a) for a in annotations}
    if kinds == {"classification"}:
        kind = "classification"
    else:
        kinds.discard("classification")  # a bare label among boxes is still a detection file
        kind = kinds.pop() if len(kinds) == 1 else "unknown"
        if kind == "unknown":
            log.warning("%s: '%s' mixes annotation types; they are kept as COCO_unknown.", subject, json_file.name)

    by_image: dict[int, list[dict]] = {}
    for image in images:
        image_id = image.get("id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise InvalidDatasetError(
                f"an image in '{json_file.name}' has the id {image_id!r}; COCO image ids must be integers.",
                "Give every entry of 'images' a unique integer 'id'.",
                subject=subject,
            )
        if image_id in by_image:
            raise InvalidDatasetError(
                f"the image id {image_id} appears twice in '{json_file.name}'.",
                "Give every entry of 'images' a unique integer 'id'.",
                subject=subject,
            )
        by_image[image_id] = []
    orphans = 0
    for annotation in annotations:
        target = by_image.get(annotation.get("image_id"))
        if target is None:
            orphans += 1
        else:
            target.append(annotation)
    if orphans:
        log.warning("%s: %d annotation(s) in '%s' name no listed image and are dropped.", subject, orphans, json_file)

    id_to_name: dict = {}
    if kind == "classification":
        named = _category_names(categories, annotations)
        id_to_name = dict(named)
        listed = _with_class_names(categories) if categories is not None else [{"id": k, "name": v} for k, v in named]
        column = category_column(listed)
    else:
        column = coco_annotation_column(kind, categories)
    table = ImageTable(layout="COCO", columns=[image_column(), id_column(), column], records=[], sources=[])
    finder = _FileFinder(root)
    for image in images:
        image_id = image["id"]
        relative = image.get("file_name")
        source = finder.find(relative) if isinstance(relative, str) and relative else None
        if source is None:
            table.skipped.append((str(relative), f"image {image_id} is listed in '{json_file.name}' but not found"))
            continue
        info = dict(image)
        info["file_name"] = f"{IMAGE_FOLDER}/{image_id}{Path(relative).suffix}"
        if kind == "classification":
            labels = {a["category_id"] for a in by_image[image_id]}
            if len(labels) > 1:
                table.skipped.append((relative, f"several categories ({sorted(labels, key=str)}) for one image"))
                continue
            label = labels.pop() if labels else None
            if label is not None and label not in id_to_name:
                table.skipped.append((relative, f"category id {label!r} is not among the file's categories"))
                continue
            record = {IMAGE_REF: info, "category": None if label is None else id_to_name[label], "id": image_id}
        else:
            record = {IMAGE_REF: info, column["name"]: by_image[image_id], "id": image_id}
        table.records.append(record)
        table.sources.append(source)
    return table


def _category_names(categories: list | None, annotations: list[dict]) -> list[tuple[object, str]]:
    if categories is None:  # no list: the ids are all there is
        ids = sorted({a["category_id"] for a in annotations}, key=str)
        return [(cid, str(cid)) for cid in ids]
    return [(c.get("id"), class_name(c["name"])) for c in categories if isinstance(c, dict) and "name" in c]


def _with_class_names(categories: list) -> list:
    """Categories as given, their names in the one Unicode form class names are compared in."""
    return [{**c, "name": class_name(c["name"])} if isinstance(c, dict) and "name" in c else c for c in categories]


class _FileFinder:
    """Where a COCO 'file_name' lies: relative to the json's folder, or else the one file of that name below
    it ('images/', 'train2017/' ...)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, relative: str) -> Path | None:
        candidate = self.root / relative
        if _is_relative_inside(relative) and inside(self.root, candidate) and candidate.is_file():
            return candidate
        if self._by_name is None:
            self._by_name = {}
            for folder, names in safe_walk(self.root):
                for name in names:
                    self._by_name.setdefault(name, []).append(folder / name)
        matches = [p for p in self._by_name.get(Path(relative).name, []) if inside(self.root, p)]
        return matches[0] if len(matches) == 1 else None


# ----- checking -----


def _check_one(path: Path) -> str:
    """'' when the image decodes fully, else why not (a header can be fine while the body is truncated)."""
    try:
        decode_image(path)
    except BadImageError as exc:
        return str(exc)
    except Exception as exc:  # a decoder bug on a corrupt file (struct.error, IndexError ...) is still a bad image
        return f"cannot be decoded ({type(exc).__name__}: {exc})"
    return ""


def _check_images(paths: Sequence[Path]) -> list[str]:
    # PIL releases the GIL while decoding, so threads check a large folder several times faster.
    workers = min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_check_one, paths))


def _drop_unreadable(table: ImageTable) -> None:
    reasons = _check_images(table.sources)
    kept = [(r, s) for r, s, why in zip(table.records, table.sources, reasons, strict=True) if not why]
    table.skipped += [(table.source_name(i), why) for i, why in enumerate(reasons) if why]
    table.records = [r for r, _ in kept]
    table.sources = [s for _, s in kept]


# ----- writing (designer-formats.md sections 1 and 2) -----


def samples(table: ImageTable, count: int = SAMPLE_COUNT) -> list[dict]:
    """The first records with the image bytes in base64, keys in schema column order."""
    image = table.image_column
    rows = []
    for record, source in list(zip(table.records, table.sources, strict=True))[:count]:
        row = {}
        for column in table.columns:
            name = column["name"]
            if column is image:
                row[name] = base64.b64encode(source.read_bytes()).decode("ascii")
            else:
                row[name] = json_safe(record.get(name))
        rows.append(row)
    return rows


def write_image_directory(table: ImageTable, destination: Path) -> None:
    """Copy every image byte for byte and write the listing, aside, then publish it with '_meta.yaml' last."""
    images_bytes = sum(source.stat().st_size for source in table.sources)
    require_free_space(destination, images_bytes, "the image directory's copies of the images")
    with staged(destination, "the image directory") as staging:
        _write_staged(table, staging)


def _write_staged(table: ImageTable, staging: Path) -> None:
    ref = table.image_ref
    lines = []
    for record, source in zip(table.records, table.sources, strict=True):
        target = staging / record[ref]["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        lines.append(json.dumps(record) + "\n")
    (staging / LIST_FILE).write_text("".join(lines), encoding="utf-8")
    dump_json({"columnAttributes": table.columns}, staging / SCHEMA_FILE)
    dump_json(samples(table), staging / SAMPLES_FILE)
    meta = {
        "type": "ImageDirectory",
        "extension": {},
        "image_list": LIST_FILE,
        "samples": SAMPLES_FILE,
        "schema": SCHEMA_FILE,
    }
    dump_yaml(meta, staging / "_meta.yaml")
