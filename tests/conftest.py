"""Shared test fixtures: the designer's golden folders and small real image datasets made on the fly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
DESIGNER = SHARED / "fixtures" / "designer"


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under root, links not followed: relative path -> sha256 of its bytes, 'dir', or the link's
    target. Equal before and after a run means the run changed nothing in that folder."""
    result = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[relative] = "link:" + os.readlink(path)
            elif path.is_dir():
                result[relative] = "dir"
            else:
                result[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def write_digits_subset(destination: Path, classes=(0, 1, 7), per_class: int = 30, offset: int = 0) -> Path:
    """An ImageFolder of real 8x8 handwritten digits (scikit-learn's bundled scans), per_class PNGs a class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in classes:
        indices = np.flatnonzero(digits.target == label)[offset : offset + per_class]
        folder = destination / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for index in indices:
            pixels = np.clip(digits.images[index] * (255.0 / 16.0), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"d{index:04d}.png")
    return destination


@pytest.fixture(scope="session")
def designer_fixtures() -> Path:
    if not DESIGNER.is_dir():
        pytest.fail(f"the designer fixtures are missing at {DESIGNER}")
    return DESIGNER


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> tuple[Path, Path]:
    """(train, valid) ImageFolders: 3 digit classes, 30 training and 12 validation images each."""
    root = tmp_path_factory.mktemp("digits")
    train = write_digits_subset(root / "train", per_class=30, offset=0)
    valid = write_digits_subset(root / "valid", per_class=12, offset=30)
    return train, valid


@pytest.fixture(scope="session")
def untrained_resnet18(tmp_path_factory) -> Path:
    import torch

    from train_pytorch_model.init_model import write_untrained_model

    torch.manual_seed(0)  # the same starting weights in every test session
    folder = tmp_path_factory.mktemp("untrained") / "resnet18"
    write_untrained_model(folder, "resnet18", pretrained=False, flag=False)
    return folder
