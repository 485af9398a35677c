"""Decoding one image file into the RGB array the model sees, the same way for training and scoring."""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageFile, ImageOps, PngImagePlugin, features

# Suffixes read as images (lower-cased). The designer refuses .gif; PIL reads its first frame, so we take it.
# Phones save HEIC/HEIF (iPhone's default) and AVIF: HEIC is read through the pillow-heif plugin, AVIF by
# Pillow itself (11.2 and later, built with libavif); where either cannot be read, each file is listed as
# skipped with the reason and how to convert it, never silently ignored.
PHONE_FORMATS = {".heic": "HEIC", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif", *PHONE_FORMATS}
)
try:  # registered at import, so that a HEIC photo is read whatever its file is called
    from pillow_heif import register_heif_opener
except ImportError:  # a dependency of the project; without it each HEIC file is skipped with the reason
    HEIF_READER = False
else:
    register_heif_opener()
    HEIF_READER = True

# A decompression bomb is refused rather than decoded: 16k x 16k pixels is far beyond any training image.
# _open checks the header's size itself (warnings.catch_warnings is not thread-safe, and images are opened in a
# thread pool); PIL's own limit stays as a second line of defence, and its warning, which only repeats the
# check, is silenced.
MAX_IMAGE_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Photo tools embed XMP and ICC metadata in PNG text chunks larger than PIL's 1 MB default; the designer raises
# the limit the same way, so such files are images, not errors.
PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, 100 * ImageFile.SAFEBLOCK)
PngImagePlugin.MAX_TEXT_MEMORY = max(PngImagePlugin.MAX_TEXT_MEMORY, 100 * ImageFile.SAFEBLOCK)


class BadImageError(Exception):
    """An image file that cannot be decoded; the caller decides whether to skip it."""


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _open(source: Path | bytes) -> Image.Image:
    if not isinstance(source, bytes):
        # A named pipe or a device called x.png would block the reader forever: only regular files are opened.
        try:
            if not stat.S_ISREG(os.stat(source).st_mode):
                raise BadImageError("not a regular file (a pipe, socket or device)")
        except OSError as exc:
            raise BadImageError(f"cannot be read ({exc.strerror or exc})") from exc
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"refused as a decompression bomb ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        unsupported = None if isinstance(source, bytes) else _unsupported_format(Path(source))
        raise BadImageError(unsupported or f"not a readable image ({exc})") from exc
    width, height = image.size
    limit = min(MAX_IMAGE_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS)  # a lower limit set in PIL holds
    if width * height > limit:
        image.close()
        raise BadImageError(
            f"refused as a decompression bomb ({width}x{height} = {width * height} pixels, more than the "
            f"{limit} allowed)"
        )
    return image


def _unsupported_format(path: Path) -> str | None:
    """Why a phone photo cannot be read here and how to convert it; None when its format is supported (the file
    is then damaged, and says so)."""
    kind = PHONE_FORMATS.get(path.suffix.lower())
    if kind in ("HEIC", "HEIF") and not HEIF_READER:
        return (
            f"a {kind} photo, which needs the pillow-heif package (pip install pillow-heif); or convert it to "
            "JPEG (heif-convert photo.heic photo.jpg, or export from Photos as 'Most Compatible')"
        )
    if kind == "AVIF" and not features.check("avif"):
        return (
            f"an AVIF image, which this Pillow {PIL.__version__} cannot read (Pillow 11.2 or later built with "
            "libavif can); or convert it to PNG or JPEG (avifdec image.avif image.png)"
        )
    return None


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
    """Any PIL mode to 8-bit RGB: grayscale, palette (with transparency), RGBA, CMYK and 16-bit alike.

    High-bit-depth pixels are scaled from a fixed range, never from the image's own content, so that one value
    gives one brightness in every image of a dataset: 16-bit (and 32-bit integer) from 0-65535, as torchvision
    converts them; floating point from 0.0-1.0. Values outside the range are clipped.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # convert("RGB") would clip 16-bit values at 255 instead of scaling them.
        array = np.asarray(image, dtype=np.float64)
        gray = np.clip(array / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        gray = np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass(frozen=True)
class Resize:
    """How an image is brought to the size a network takes.

    'stretch' resizes it to (height, width) whatever its aspect (this project's way for networks trained from
    scratch: every pixel is kept). 'center_crop' is how torchvision's pretrained weights saw ImageNet: the image
    is resized, aspect kept, until it covers (height, width) x crop_ratio, then its centre is cut out."""

    size: tuple[int, int] | None  # (height, width); None keeps every image's own size
    interpolation: str = "bilinear"
    fit: str = "stretch"
    crop_ratio: float = 1.0

    @classmethod
    def of(cls, resize: Resize | tuple[int, int] | None) -> Resize:
        """A Resize as given, or a (height, width) to stretch to (None: every image at its own size)."""
        return resize if isinstance(resize, Resize) else cls(tuple(resize) if resize is not None else None)

    def apply(self, image: Image.Image) -> Image.Image:
        if self.size is None:
            return image
        height, width = self.size
        method = INTERPOLATIONS[self.interpolation]
        if self.fit == "stretch" or (image.height, image.width) == (height, width) and self.crop_ratio == 1.0:
            if (image.height, image.width) == (height, width):
                return image
            return image.resize((width, height), method, reducing_gap=3.0)
        scale = max(height * self.crop_ratio / image.height, width * self.crop_ratio / image.width)
        covering = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image.resize(covering, method, reducing_gap=3.0)
        left, top = (covering[0] - width) // 2, (covering[1] - height) // 2
        return image.crop((left, top, left + width, top + height))


INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def decode_image(source: Path | bytes, resize: Resize | tuple[int, int] | None = None) -> np.ndarray:
    """Decode, rotate per EXIF, convert to RGB and resize (a Resize, or a (height, width) to stretch to): a
    HxWx3 uint8 array."""
    resize = Resize.of(resize)
    image = _open(source)
    try:
        with image:
            image.load()
            image = ImageOps.exif_transpose(image)
            image = resize.apply(to_rgb(image))
            return np.asarray(image, dtype=np.uint8).copy()
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"refused as a decompression bomb ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImageError(f"corrupt or truncated image ({exc})") from exc
