"""Batches cut from a process's sampler indices."""

from __future__ import annotations

import pytest
import torch

from train_pytorch_model.data.batches import Normalizer, batches_of, eval_batches, train_batches
from train_pytorch_model.data.cache import DecodedImages


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
    batches = list(train_batches(data, order, 3, drop_single=True, normalize=normalize))
    assert [labels.tolist() for _, labels in batches] == [[0, 2, 1], [0, 1, 2]]  # the trailing single dropped
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
