"""Reading a labelled dataset given as an MLTable over JSON lines, as Azure ML's Data Labeling exports it and
AutoML for images reads it: one line per image, `image_url` (where the image is) and `label` (its class), with
optional `image_details` (ignored: every image is read for its size anyway).

The table is read with the `mltable` library itself, so that what its transformations say (filters, skips,
other column types) holds. Where the images are is resolved in one way for every table:

- a local path (relative to the MLTable's folder, absolute, or a file:// URL) is read where it lies;
- any other URL (azureml://, https://, wasbs://, ...) is opened by mltable as a stream (on Azure ML with the
  job's identity) and copied once into the job's scratch folder.

mltable itself turns only URLs into streams: a plain path in a column the MLTable converts to `stream_info`
comes out empty. So the table is read with that one conversion left out (its image column as text), and the
remote rows are converted by mltable afterwards.

A line that names no label, several labels (a multi-label task) or an image that is not there is skipped,
named and counted; more than the dataset error policy's fraction of such lines is an error.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import yaml

from ..errors import InvalidDatasetError, NotLabeledDatasetError, first_line
from ..settings import MAX_BAD_FRACTION
from .class_names import class_name
from .image_directory import MLTABLE_FILE, ImageRecord, LabeledImages

log = logging.getLogger(__name__)

IMAGE_COLUMN = "image_url"
LABEL_COLUMN = "label"
DOWNLOAD_THREADS = 16  # remote reads wait on the network, not on the cores
SCHEMA_HINT = (
    "Give an MLTable over JSON lines in AutoML's image-classification schema: one line per image, "
    '{"image_url": "<path or azureml:// URL>", "label": "<class>"} (as Data Labeling exports it).'
)


def load_mltable_images(root: Path, subject: str, scratch: Path | None = None) -> LabeledImages:
    """The labelled images an MLTable folder lists. Remote images are copied under scratch."""
    frame = _read_table(root, subject)
    records: list[ImageRecord] = []
    skipped: list[tuple[str, str]] = []
    remote: list[tuple[int, str, str]] = []  # (line, url, label)
    for line, (url, label) in enumerate(zip(frame[IMAGE_COLUMN], frame[LABEL_COLUMN], strict=True), start=1):
        name, problem = _label_of(label)
        where = url if isinstance(url, str) and url.strip() else None
        if problem is None and where is None:
            problem = f"no {IMAGE_COLUMN}"
        if problem is not None:
            skipped.append((f"line {line}" + (f" ({where})" if where else ""), problem))
            continue
        if _is_remote(where):
            remote.append((line, where, name))
            continue
        path = _local_path(where, root)
        if path.is_file():
            records.append(ImageRecord(path, name, source=where))
        else:
            skipped.append((f"line {line} ({where})", "the image file does not exist"))
    if remote:
        fetched, failed = _fetch_remote(remote, subject, scratch)
        records.extend(fetched)
        skipped.extend(failed)
    _check_lines(len(frame), records, skipped, subject)
    for where, why in skipped:
        log.warning("%s: skipping %s: %s", subject, where, why)
    classes = sorted({record.label for record in records})
    return LabeledImages(root=root, layout="MLTable", records=records, classes=classes, skipped=skipped)


def _label_of(value: object) -> tuple[str, str | None]:
    """The class name of a line's label, or why the line has none usable."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return "", "a list of labels (multi-label); this component trains one class per image"
    if isinstance(value, dict):
        return "", "a label that is an object, not a class name"
    if value is None or pd.isna(value):
        # mltable reads one type per column, from its first lines: a label of another type comes out empty too
        return "", "no label (or a label of another type than the column's first lines)"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a numeric label column is read as floats
    name = class_name(value).strip()
    return (name, None) if name else ("", "an empty label")


def _is_remote(where: str) -> bool:
    scheme = urlparse(where).scheme.lower()
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive (C:\...), a local path


def _local_path(where: str, root: Path) -> Path:
    if where.lower().startswith("file:"):
        parsed = urlparse(where)
        where = unquote((parsed.netloc + parsed.path) if parsed.netloc in ("", ".", "..") else parsed.path)
    path = Path(where)
    return path if path.is_absolute() else root / path


def _check_lines(total: int, records: list[ImageRecord], skipped: list, subject: str) -> None:
    if not records:
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise InvalidDatasetError(
            f"its MLTable lists no usable labelled image among {total} lines{first}.", SCHEMA_HINT, subject=subject
        )
    if len(skipped) > MAX_BAD_FRACTION * total:
        examples = "; ".join(f"{where}: {why}" for where, why in skipped[:3])
        raise InvalidDatasetError(
            f"{len(skipped)} of the {total} lines of its MLTable cannot be used, more than "
            f"{MAX_BAD_FRACTION:.0%} (for example {examples}).",
            "Fix or remove those lines (the log names each of them). " + SCHEMA_HINT,
            subject=subject,
        )


def _mltable(subject: str):
    # Its loggers report every read at INFO, with payloads: noise in a job's log.
    logging.getLogger("azureml").setLevel(logging.WARNING)
    try:
        import mltable
    except ImportError as exc:
        raise InvalidDatasetError(
            f"it is an MLTable, and reading one needs the 'mltable' package, which cannot be imported ({exc}).",
            "Install it in the job's environment (pip install mltable; conda.yaml pins it).",
            subject=subject,
        ) from exc
    return mltable


def _read_table(root: Path, subject: str):
    """The table as mltable reads it, with its image column as text (see the module's docstring)."""
    mltable = _mltable(subject)
    definition = _definition_without_image_streams(root, subject)
    with tempfile.TemporaryDirectory(prefix="mltable-") as folder:
        (Path(folder) / MLTABLE_FILE).write_text(yaml.safe_dump(definition), encoding="utf-8")
        try:
            frame = mltable.load(folder).to_pandas_dataframe()
        except Exception as exc:  # mltable raises its own types, from Rust; the message says what is wrong
            raise InvalidDatasetError(
                f"mltable cannot read its MLTable: {first_line(exc)}", SCHEMA_HINT, subject=subject
            ) from exc
    if IMAGE_COLUMN not in frame.columns:
        raise InvalidDatasetError(
            f"its MLTable has no '{IMAGE_COLUMN}' column (columns: {', '.join(map(str, frame.columns))}).",
            SCHEMA_HINT,
            subject=subject,
        )
    if LABEL_COLUMN not in frame.columns:
        raise NotLabeledDatasetError(
            f"its MLTable has no '{LABEL_COLUMN}' column, so its images have no labels.",
            "Export the labelled dataset from Data Labeling, or add a 'label' to each line. " + SCHEMA_HINT,
            subject=subject,
        )
    return frame


def _definition_without_image_streams(root: Path, subject: str) -> dict:
    """The MLTable's definition with its paths made absolute and no stream conversion of the image column."""
    try:
        definition = yaml.safe_load((root / MLTABLE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidDatasetError(f"its MLTable file cannot be read ({exc}).", SCHEMA_HINT, subject=subject) from exc
    if not isinstance(definition, dict) or not isinstance(definition.get("paths"), list):
        raise InvalidDatasetError("its MLTable file lists no 'paths'.", SCHEMA_HINT, subject=subject)
    definition["paths"] = [_absolute_path_entry(entry, root) for entry in definition["paths"]]
    steps = []
    for step in definition.get("transformations") or []:
        if isinstance(step, dict) and "convert_column_types" in step:
            kept = [c for c in step["convert_column_types"] or [] if not _converts_image_column(c)]
            if not kept:
                continue
            step = {**step, "convert_column_types": kept}
        steps.append(step)
    definition["transformations"] = steps
    return definition


def _converts_image_column(conversion: object) -> bool:
    if not isinstance(conversion, dict):
        return False
    columns = conversion.get("columns")
    return columns == IMAGE_COLUMN or (isinstance(columns, list) and IMAGE_COLUMN in columns)


def _absolute_path_entry(entry: object, root: Path) -> object:
    """A path entry ({file|folder|pattern: ...}) relative to the MLTable's folder, made absolute."""
    if not isinstance(entry, dict):
        return entry
    absolute = {}
    for kind, value in entry.items():
        if isinstance(value, str) and kind in ("file", "folder", "pattern") and not _is_remote(value):
            value = str(_local_path(value, root.resolve()))
        absolute[kind] = value
    return absolute


def _fetch_remote(
    remote: list[tuple[int, str, str]], subject: str, scratch: Path | None
) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    """Copy the remote images into scratch, opened as mltable streams (the job's identity on Azure ML)."""
    streams = _streams_of(_mltable(subject), [url for _, url, _ in remote], subject)
    folder = Path(tempfile.mkdtemp(prefix="mltable-images-", dir=scratch))
    log.info("%s: copying %d remote images into %s.", subject, len(remote), folder)

    def fetch(index: int) -> tuple[ImageRecord | None, tuple[str, str] | None]:
        line, url, label = remote[index]
        target = folder / f"{index:07d}-{_safe_name(url)}"
        stream = streams[index]
        if stream is None:
            return None, (f"line {line} ({url})", "mltable cannot open this URL")
        try:
            with stream.open() as source, open(target, "wb") as copy:
                shutil.copyfileobj(source, copy, length=1 << 20)
        except Exception as exc:  # a stream's errors come from Rust, each of its own kind
            target.unlink(missing_ok=True)
            return None, (f"line {line} ({url})", f"cannot be read: {first_line(exc)}")
        return ImageRecord(target, label, source=url), None

    with ThreadPoolExecutor(max_workers=min(DOWNLOAD_THREADS, len(remote))) as pool:
        results = list(pool.map(fetch, range(len(remote))))
    return [r for r, _ in results if r is not None], [f for _, f in results if f is not None]


def _streams_of(mltable, urls: list[str], subject: str) -> list:
    """mltable's streams for the URLs, in their order (None where it cannot make one)."""
    with tempfile.TemporaryDirectory(prefix="mltable-urls-") as folder:
        listing = Path(folder) / "urls.jsonl"
        listing.write_text("".join(json.dumps({IMAGE_COLUMN: url}) + "\n" for url in urls), encoding="utf-8")
        try:
            table = mltable.from_json_lines_files([{"file": str(listing)}])
            return list(table.convert_column_types({IMAGE_COLUMN: mltable.DataType.to_stream()})
                        .to_pandas_dataframe()[IMAGE_COLUMN])  # fmt: skip
        except Exception as exc:
            raise InvalidDatasetError(
                f"mltable cannot open its images' URLs: {first_line(exc)}", SCHEMA_HINT, subject=subject
            ) from exc


def _safe_name(url: str) -> str:
    """The URL's file name, kept for the log and for the reader's guess by suffix."""
    name = PurePosixPath(unquote(urlparse(url).path)).name or "image"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[-80:]
