"""Augmentation on the device: per image, reproducible from the seed, different each epoch and rank, and
exact where it should be (a full-size crop is the image or its mirror)."""

from __future__ import annotations

import torch

from train_pytorch_model.data.augment import BatchAugmenter, Policy, epoch_generator


def images(count: int = 6, size: int = 12) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_the_same_seed_and_epoch_draw_the_same_batch_and_others_do_not():
    augment, batch = BatchAugmenter("strong"), images()
    first = augment(batch, epoch_generator(1, 0, 1))
    assert torch.equal(first, augment(batch, epoch_generator(1, 0, 1)))
    for other in (epoch_generator(1, 0, 2), epoch_generator(1, 1, 1), epoch_generator(2, 0, 1)):
        assert not torch.equal(first, augment(batch, other))
    assert first.shape == batch.shape and first.min() >= 0 and first.max() <= 1


def test_each_image_gets_its_own_draw():
    batch = images(1).repeat(8, 1, 1, 1)  # one image eight times
    out = BatchAugmenter("light")(batch, epoch_generator(1, 0, 1))
    assert len({out[i].sum().item() for i in range(8)}) == 8


def test_a_full_size_crop_is_the_image_or_its_mirror():
    augment = BatchAugmenter("light")
    augment.policy = Policy(scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0, strong=False)
    batch = images(16)
    out = augment(batch, epoch_generator(5, 0, 1))
    mirrored = 0
    for image, result in zip(batch, out, strict=True):
        if torch.allclose(result, image, atol=1e-5):
            continue
        assert torch.allclose(result, image.flip(-1), atol=1e-5)
        mirrored += 1
    assert 0 < mirrored < 16


def test_a_quarter_crop_magnifies_a_quarter_of_the_image():
    """A crop of a quarter of the area, square, resampled to the full size: each output pixel comes from a
    square half the image's side, so a one-colour half of the image fills at least half of the output."""
    augment = BatchAugmenter("light")
    augment.policy = Policy(scale=(0.25, 0.25), ratio=(1.0, 1.0), jitter=0.0, strong=False)
    batch = torch.zeros(8, 3, 16, 16)
    batch[:, :, :, 8:] = 1.0  # right half white
    out = augment(batch, epoch_generator(1, 0, 1))
    for result in out:
        row = result[0, 8]
        # Along a row the crop spans 8 input pixels across 16 output ones: a step from black to white,
        # stretched, is somewhere in it or not at all; no value lies outside 0-1 and the row is monotone.
        assert torch.all(row[1:] - row[:-1] >= -1e-6) or torch.all(row[1:] - row[:-1] <= 1e-6)
