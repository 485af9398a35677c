"""Decoding one image file into the RGB array the model sees, the same way for training and scoring."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Suffixes read as images (lower-cased). The designer refuses .gif; PIL reads its first frame, so we take it.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

# A decompression bomb is refused rather than decoded: 16k x 16k pixels is far beyond any training image.
MAX_IMAGE_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class BadImageError(Exception):
    """An image file that cannot be decoded; the caller decides whether to skip it."""


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _open(source: Path | bytes) -> Image.Image:
    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; treat the warning as the refusal it should be.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImageError(f"refused as a decompression bomb ({exc})") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise BadImageError(f"not a readable image ({exc})") from exc
    return image


def read_header(path: Path) -> tuple[int, int, str]:
    """(width, height, PIL mode) from the header alone, honouring EXIF rotation."""
    image = _open(path)
    with image:
        width, height = image.size
        mode = image.mode
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not hide a readable image
            orientation = 1
    return (height, width, mode) if orientation in (5, 6, 7, 8) else (width, height, mode)


def read_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header alone, honouring EXIF rotation."""
    width, height, _ = read_header(path)
    return width, height


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: grayscale, palette (with transparency), RGBA, CMYK and 16-bit alike."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # convert("RGB") clips 16-bit values at 255; scale the real range down instead.
        array = np.asarray(image, dtype=np.float64)
        # The bit depth is not recorded: 12-bit scans (medical, microscopy) sit in 16-bit containers.
        peak = float(array.max()) if array.size else 0.0
        top = 255.0 if peak <= 255 else 4095.0 if peak <= 4095 else 65535.0 if peak <= 65535 else peak
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(source: Path | bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode, rotate per EXIF, convert to RGB and resize to size=(height, width): a HxWx3 uint8 array."""
    image = _open(source)
    try:
        with image:
            image.load()
            image = ImageOps.exif_transpose(image)
            image = to_rgb(image)
            if size is not None and (image.height, image.width) != tuple(size):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(image, dtype=np.uint8).copy()
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"refused as a decompression bomb ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImageError(f"corrupt or truncated image ({exc})") from exc
