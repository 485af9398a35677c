"""The built-in sample: scikit-learn's handwritten digits (1,797 real 8x8 scans, shipped inside the
scikit-learn package, so nothing is downloaded), written as PNG files in class folders, split into a
training and a validation ImageFolder tree.

    python -m train_pytorch_model.local.sample_data OUTPUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

VALIDATION_SHARE = 0.2


def write_digits(destination: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write destination/train/<digit>/*.png and destination/valid/<digit>/*.png; returns both folders."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    cut = int(len(order) * (1 - VALIDATION_SHARE))
    folders = (destination / "train", destination / "valid")
    for part, indices in zip(folders, (order[:cut], order[cut:]), strict=True):
        for index in indices:
            label = str(int(digits.target[index]))
            pixels = np.clip(digits.images[index] * (255.0 / 16.0), 0, 255).astype(np.uint8)
            (part / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(part / label / f"digit_{index:04d}.png")
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("destination")
    args = parser.parse_args(argv)
    train, valid = write_digits(Path(args.destination))
    print(f"training images: {train}\nvalidation images: {valid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
