"""The decode-once cache (every image decoded once, bad ones skipped and named, too many refused) and the one size
all images are resized to.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import exif_jpeg, fill_disk, write_png
from train_pytorch_model.data import decode_progress
from train_pytorch_model.data.cache import MAX_BAD_FRACTION, compact, decode_dataset
from train_pytorch_model.data.decode_progress import DecodeProgress
from train_pytorch_model.data.images import decode_image
from train_pytorch_model.data.survey import choose_image_size
from train_pytorch_model.errors import InsufficientDiskSpaceError, InvalidDatasetError
from train_pytorch_model.formats.image_directory import ImageRecord

SUBJECT = "Training dataset"

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
    good = ImageRecord(exif_jpeg(tmp_path / "r.jpg", 6), "cat")  # 2 wide, 4 high once rotated
    bad = corrupt(ImageRecord(write_png(tmp_path / "bad.png"), "cat"))
    bad.path.write_text("nope", encoding="utf-8")
    assert choose_image_size([good, bad], min_size=16, max_size=224) == (32, 16)
    assert choose_image_size([bad], min_size=16, max_size=224) == (16, 16)


def test_a_cache_too_large_for_the_scratch_disk_is_refused_before_decoding(tmp_path, small_disk):
    """A memory-mapped cache on a disk that fills up would kill the process at the first page it cannot store;
    its size is known, so it is refused up front."""
    records = make_records(tmp_path / "data", {"cat": 20, "dog": 20}, size=(64, 64))
    scratch = small_disk(2)
    fill_disk(scratch, leave_megabytes=0)
    with pytest.raises(InsufficientDiskSpaceError, match="the decoded images' cache"):
        decode_dataset(records, {"cat": 0, "dog": 1}, (64, 64), SUBJECT, memory_budget=0, scratch=scratch)
    assert [p.name for p in scratch.iterdir()] == ["filler.bin"]


def test_a_memory_mapped_cache_reserves_its_disk_blocks(tmp_path):
    records = make_records(tmp_path / "data", {"cat": 3, "dog": 3}, size=(16, 16))
    decoded = decode_dataset(records, {"cat": 0, "dog": 1}, (16, 16), SUBJECT, memory_budget=0, scratch=tmp_path)
    assert decoded.memory_mapped and decoded.images.shape == (6, 3, 16, 16)
    assert not list(tmp_path.glob("decoded-*"))  # unlinked at once: it goes with the process, whatever the end


# ----------------------------------------------------------------------------------------------------------------
# moving the kept rows together, and the decode's progress


@pytest.mark.parametrize("skipped", [[], [0], [4], [1, 2], [0, 2, 4], [0, 1, 2, 3, 4]])
def test_compact_moves_the_kept_rows_down_in_order(skipped):
    array = np.arange(5 * 2, dtype=np.uint8).reshape(5, 2)
    expected = np.delete(array.copy(), skipped, axis=0)
    kept = compact(array, skipped)
    assert kept == 5 - len(skipped)
    assert np.array_equal(array[:kept], expected)


def test_a_long_decode_says_how_far_it_is(monkeypatch, caplog):
    monkeypatch.setattr(decode_progress, "INTERVAL", 0.0)
    progress = DecodeProgress(SUBJECT, 10, share=" (this process's share)")
    with caplog.at_level(logging.INFO, logger="train_pytorch_model"):
        progress.advance(4)
        seconds = progress.finish()
    assert "decoded 4 of 10 images (this process's share)" in caplog.text and "s left" in caplog.text
    assert "decoded 4 images (this process's share) in" in caplog.text and seconds >= 0


def test_a_quiet_process_says_nothing(monkeypatch, caplog):
    monkeypatch.setattr(decode_progress, "INTERVAL", 0.0)
    with caplog.at_level(logging.INFO, logger="train_pytorch_model"):
        DecodeProgress(SUBJECT, 10, enabled=False).advance(4)
    assert caplog.text == ""
