"""Batches cut from a process's sampler indices."""

from __future__ import annotations

import pytest
import torch

from train_pytorch_model.data.batches import Normalizer, batches_of, eval_batches, train_batches
from train_pytorch_model.data.cache import DecodedImages


@pytest.mark.parametrize(("count", "batch_size"), [(10, 4), (10, 5), (12, 4), (7, 7), (9, 3), (5, 1)])
def test_batches_of_cover_every_index_once_in_the_samplers_order(count, batch_size):
    order = torch.randperm(count, generator=torch.Generator().manual_seed(1)).tolist()
    batches = list(batches_of(order, batch_size, drop_partial=False))
    assert torch.cat(batches).tolist() == order
    assert all(len(b) == batch_size for b in batches[:-1]) and 0 < len(batches[-1]) <= batch_size


@pytest.mark.parametrize(
    ("count", "batch_size", "kept_sizes"),
    [
        (90, 16, [16] * 5 + [10]),  # 10 >= 8: a sixth of a small dataset's steps is worth keeping
        (87, 16, [16] * 5),  # 7 images of a batch of 16: too few for BatchNorm's statistics
        (12, 8, [8]),  # 4 < 8
        (90, 32, [32, 32, 26]),
        (79, 32, [32, 32]),  # 15 < half a batch
        (10, 4, [4, 4]),  # below 8, only whole batches
        (9, 3, [3, 3, 3]),
        (7, 7, [7]),
    ],
)
def test_a_trailing_batch_of_few_images_is_skipped_only_when_asked(count, batch_size, kept_sizes):
    """For BatchNorm networks: no step normalises over a handful of images; the skipped ones wait for the next
    epoch's shuffle."""
    order = list(range(count))
    kept = list(batches_of(order, batch_size, drop_partial=True))
    assert [len(b) for b in kept] == kept_sizes
    assert torch.cat(kept).tolist() == order[: sum(kept_sizes)]
    assert [len(b) for b in batches_of(order, batch_size, drop_partial=False)][-1] == count - (
        (count - 1) // batch_size
    ) * batch_size


@pytest.mark.parametrize("count", [2, 5, 15])
def test_fewer_images_than_a_batch_still_train(count):
    """A small dataset (or a process's small shard) with a large batch size: its one batch is all there is."""
    assert [b.tolist() for b in batches_of(list(range(count)), 16, drop_partial=True)] == [list(range(count))]


def test_a_lone_image_is_not_a_batch_for_batchnorm():
    assert list(batches_of([4], 16, drop_partial=True)) == []


def test_a_batch_of_one_is_a_batch_when_every_batch_is_one():
    assert [b.tolist() for b in batches_of([3, 5], 1, drop_partial=True)] == [[3], [5]]


def decoded(count: int) -> DecodedImages:
    images = torch.arange(count * 3 * 2 * 2, dtype=torch.int64).remainder(256).to(torch.uint8).view(count, 3, 2, 2)
    return DecodedImages(images=images, labels=torch.arange(count) % 3)


def test_normalization_is_x_over_255_minus_mean_over_std():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalize = Normalizer(mean, std, torch.device("cpu"), channels_last=False)
    images = decoded(4).images
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(normalize(images), expected, atol=1e-6)


def test_training_batches_follow_the_sampler_order():
    data = decoded(7)
    normalize = Normalizer((0.5,) * 3, (0.5,) * 3, torch.device("cpu"), channels_last=False)
    order = [6, 2, 4, 0, 1, 5, 3]
    batches = list(train_batches(data, order, 3, drop_partial=True, normalize=normalize))
    assert [labels.tolist() for _, labels in batches] == [[0, 2, 1], [0, 1, 2]]  # the trailing partial batch skipped
    assert torch.equal(batches[0][0], normalize(data.images[[6, 2, 4]]))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_validation_shards_cover_every_image_exactly_once(world_size):
    data = decoded(10)
    normalize = Normalizer((0.5,) * 3, (0.5,) * 3, torch.device("cpu"), channels_last=False)
    seen = []
    for rank in range(world_size):
        for images, labels in eval_batches(data, 4, normalize, rank, world_size):
            assert images.shape[0] == labels.shape[0] <= 4
            seen.extend(images[:, 0, 0, 0].tolist())
    assert sorted(seen) == sorted(normalize(data.images)[:, 0, 0, 0].tolist())
