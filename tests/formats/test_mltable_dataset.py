"""Datasets given as an MLTable over JSON lines (Data Labeling's export, AutoML's input), read with the real
mltable library: local paths in every spelling, remote URLs opened as mltable streams (a real HTTP server on
127.0.0.1), the table's own transformations, and bad lines under the dataset error policy."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from conftest import labeling_lines, tree_digest, write_digits_subset, write_mltable
from train_pytorch_model.data.cache import decode_dataset
from train_pytorch_model.data.images import Resize
from train_pytorch_model.errors import InvalidDatasetError, NotLabeledDatasetError
from train_pytorch_model.formats.image_directory import load_labeled_images
from train_pytorch_model.output.run_record import listing

pytest.importorskip("mltable")

SUBJECT = "Training dataset"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Real digit scans, 12 per class, as an ImageFolder the tables point into."""
    return write_digits_subset(tmp_path_factory.mktemp("mltable") / "images", classes=(0, 1, 7), per_class=12)


def _labels(loaded) -> dict[str, str]:
    return {record.path.name: record.label for record in loaded.records}


def test_a_data_labeling_export_lists_every_image_with_its_label(tmp_path, images):
    """Relative paths (from the MLTable's folder, also '../'), absolute paths and file:// URLs, in a column
    that the MLTable converts to streams (where mltable itself resolves only the URLs)."""
    images = shutil.copytree(images, tmp_path / "images")
    spellings = [
        lambda p: "../images/" + p.relative_to(images).as_posix(),
        lambda p: str(p),
        lambda p: p.as_uri(),
    ]
    lines = labeling_lines(images)
    for index, line in enumerate(lines):
        line["image_url"] = spellings[index % 3](images / line["image_url"].split("/images/")[-1])
    table = write_mltable(tmp_path / "table", lines)
    before = tree_digest(tmp_path)
    loaded = load_labeled_images(table, SUBJECT)
    assert loaded.layout == "MLTable"
    assert loaded.classes == ["0", "1", "7"]
    assert _labels(loaded) == {p.name: p.parent.name for p in images.rglob("*.png")}
    assert all(record.path.is_file() for record in loaded.records)
    assert not loaded.skipped
    # The listing (and so the resume fingerprint) names each image as the table does.
    assert [name for name, _, _ in listing(loaded)] == [line["image_url"] for line in lines]
    assert tree_digest(tmp_path) == before  # the input is only read


def test_a_table_without_stream_conversion_and_with_numeric_labels(tmp_path, images):
    definition = "paths:\n  - file: ./{jsonl}\ntransformations:\n  - read_json_lines:\n      encoding: utf8\n"
    lines = [{"image_url": str(p), "label": int(p.parent.name)} for p in sorted(images.rglob("*.png"))]
    loaded = load_labeled_images(write_mltable(tmp_path / "table", lines, definition=definition), SUBJECT)
    assert loaded.classes == ["0", "1", "7"]  # 1, not 1.0: mltable reads the numbers as floats
    assert len(loaded.records) == len(lines)


def test_the_tables_own_transformations_hold(tmp_path, images):
    lines = labeling_lines(images)
    definition = (
        "paths:\n  - file: ./{jsonl}\ntransformations:\n  - read_json_lines:\n      encoding: utf8\n"
        "  - skip: 2\n  - take: 20\n"
    )
    loaded = load_labeled_images(write_mltable(tmp_path / "table", lines, definition=definition), SUBJECT)
    assert [record.source for record in loaded.records] == [line["image_url"] for line in lines[2:22]]


def test_bad_lines_are_named_and_counted(tmp_path, images, caplog):
    lines = labeling_lines(images)  # 36 lines
    lines[0]["image_url"] = str(images / "0" / "missing.png")
    del lines[5]["label"]
    lines[20]["label"] = ["1", "7"]
    loaded = load_labeled_images(write_mltable(tmp_path / "table", lines), SUBJECT)
    assert len(loaded.records) == 33
    reasons = {where.split(" (")[0]: why for where, why in loaded.skipped}
    assert reasons["line 1"] == "the image file does not exist"
    assert reasons["line 6"].startswith("no label")
    # A list in a column mltable typed as text from its first lines comes out empty: named as possibly so.
    assert "another type" in reasons["line 21"]
    assert "line 1" in caplog.text and "missing.png" in caplog.text


def test_more_bad_lines_than_the_policy_allows_are_refused(tmp_path, images):
    lines = labeling_lines(images)
    for line in lines[:4]:  # 4 of 36: over 10%
        line["image_url"] = line["image_url"] + ".gone"
    with pytest.raises(InvalidDatasetError, match=r"4 of the 36 lines .* more than 10%.*does not exist"):
        load_labeled_images(write_mltable(tmp_path / "table", lines), SUBJECT)


def test_a_multi_label_table_is_refused_saying_so(tmp_path, images):
    lines = [{"image_url": str(p), "label": [p.parent.name, "x"]} for p in sorted(images.rglob("*.png"))]
    with pytest.raises(InvalidDatasetError, match="multi-label"):
        load_labeled_images(write_mltable(tmp_path / "table", lines), SUBJECT)


def test_missing_columns_and_broken_tables(tmp_path, images):
    unlabeled = [{"image_url": str(p)} for p in sorted(images.rglob("*.png"))]
    with pytest.raises(NotLabeledDatasetError, match="no 'label' column"):
        load_labeled_images(write_mltable(tmp_path / "unlabeled", unlabeled), SUBJECT)
    no_images = [{"file": str(p), "label": "a"} for p in sorted(images.rglob("*.png"))]
    with pytest.raises(InvalidDatasetError, match="no 'image_url' column"):
        load_labeled_images(write_mltable(tmp_path / "other", no_images), SUBJECT)
    broken = write_mltable(tmp_path / "broken", unlabeled)
    (broken / "MLTable").write_text("paths: [\n", encoding="utf-8")
    with pytest.raises(InvalidDatasetError, match="MLTable file cannot be read"):
        load_labeled_images(broken, SUBJECT)
    (broken / "MLTable").write_text(
        "paths:\n  - file: ./nowhere.jsonl\ntransformations:\n  - read_json_lines:\n      encoding: utf8\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidDatasetError, match="mltable cannot read"):
        load_labeled_images(broken, SUBJECT)


@pytest.fixture
def http_images(images):
    """The images served over HTTP on 127.0.0.1, as a blob store serves them to mltable's streams."""
    handler = functools.partial(_QuietHandler, directory=str(images))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_remote_images_are_copied_once_through_mltable_streams(tmp_path, images, http_images):
    lines = labeling_lines(images, url=lambda p: f"{http_images}/{p.relative_to(images).as_posix()}")
    lines[3]["image_url"] = f"{http_images}/0/not-there.png"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    loaded = load_labeled_images(write_mltable(tmp_path / "table", lines), SUBJECT, scratch)
    assert len(loaded.records) == len(lines) - 1
    assert [where for where, _ in loaded.skipped] == [f"line 4 ({lines[3]['image_url']})"]
    assert all(scratch in record.path.parents for record in loaded.records)
    assert [r.source for r in loaded.records] == [line["image_url"] for i, line in enumerate(lines) if i != 3]
    # The copies are the served files, byte for byte, and decode as the originals do.
    originals = {line["image_url"]: images / line["image_url"].split("/", 3)[-1] for line in lines}
    for record in loaded.records:
        assert record.path.read_bytes() == originals[record.source].read_bytes()
    decoded = decode_dataset(loaded.records, {"0": 0, "1": 1, "7": 2}, Resize((8, 8)), SUBJECT, workers=1)
    assert len(decoded) == len(loaded.records)
