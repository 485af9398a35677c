"""The validation share cut from the training set when no validation dataset is given: stratified, seeded,
every class on both sides, refused when a class cannot be split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from train_pytorch_model.data.validation_split import split_off_validation
from train_pytorch_model.errors import InvalidDatasetError
from train_pytorch_model.formats.image_directory import ImageRecord, LabeledImages

SUBJECT = "Training dataset"


def dataset(counts: dict[str, int]) -> LabeledImages:
    records = [ImageRecord(Path(f"/data/{name}/{i:03d}.png"), name) for name, n in counts.items() for i in range(n)]
    return LabeledImages(root=Path("/data"), layout="ImageFolder", records=records, classes=list(counts))


def test_each_class_gives_its_share_and_keeps_the_rest():
    data = dataset({"a": 50, "b": 10, "c": 3, "d": 2})
    train, valid = split_off_validation(data, 0.2, seed=1, subject=SUBJECT)
    assert Counter(r.label for r in valid.records) == {"a": 10, "b": 2, "c": 1, "d": 1}
    assert Counter(r.label for r in train.records) == {"a": 40, "b": 8, "c": 2, "d": 1}
    assert set(train.records) | set(valid.records) == set(data.records)
    assert not set(train.records) & set(valid.records)
    # Each side keeps the dataset's order; both keep its classes and root.
    for side in (train, valid):
        assert side.records == [r for r in data.records if r in set(side.records)]
        assert side.classes == data.classes and side.root == data.root


def test_the_seed_decides_the_split():
    data = dataset({"a": 40, "b": 40})
    first = split_off_validation(data, 0.25, seed=7, subject=SUBJECT)[1].records
    assert split_off_validation(data, 0.25, seed=7, subject=SUBJECT)[1].records == first
    assert split_off_validation(data, 0.25, seed=8, subject=SUBJECT)[1].records != first
    assert split_off_validation(data, 0.25, seed=-3, subject=SUBJECT)[1].records  # any integer is a seed


def test_a_class_of_one_image_cannot_be_split():
    with pytest.raises(InvalidDatasetError, match=r"'lonely' \(1\).*at least 2 images.*connect a validation"):
        split_off_validation(dataset({"a": 10, "lonely": 1}), 0.2, seed=1, subject=SUBJECT)
