"""Decoding one image: every mode to RGB uint8, EXIF orientation, fixed 16-bit and float scaling, and truncated,
empty, piped or oversized files refused as bad images.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image, PngImagePlugin

from conftest import REPO_ROOT, exif_jpeg
from train_pytorch_model.data.images import BadImageError, Resize, decode_image, is_image_name, read_size


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _gradient(width: int = 16, height: int = 12) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))


def _palette_with_transparency(path: Path) -> Path:
    image = Image.fromarray(_gradient()).convert("P")
    image.info["transparency"] = 0
    return _save(image, path, transparency=0)


@pytest.mark.parametrize(
    ("name", "make", "mode"),
    [
        ("gray.png", lambda p: _save(Image.fromarray(_gradient()), p), "L"),
        ("palette.png", _palette_with_transparency, "P"),
        ("rgba.png", lambda p: _save(Image.new("RGBA", (16, 12), (255, 0, 0, 0)), p), "RGBA"),
        ("cmyk.jpg", lambda p: _save(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), p), "CMYK"),
        ("rgb.tif", lambda p: _save(Image.new("RGB", (16, 12), (1, 2, 3)), p), "RGB"),
        ("gray.tiff", lambda p: _save(Image.fromarray(_gradient()), p), "L"),
        ("rgb.jpeg", lambda p: _save(Image.new("RGB", (16, 12), (1, 2, 3)), p, quality=95), "RGB"),
        ("rgb.bmp", lambda p: _save(Image.new("RGB", (16, 12), (1, 2, 3)), p), "RGB"),
        ("rgb.webp", lambda p: _save(Image.new("RGB", (16, 12), (1, 2, 3)), p), "RGB"),
    ],
)
def test_decode_image_modes_give_rgb_uint8(tmp_path, name, make, mode):
    path = make(tmp_path / name)
    with Image.open(path) as image:
        assert image.mode == mode
    for size in [(5, 7), (32, 32)]:
        array = decode_image(path, size)
        assert array.shape == (*size, 3)
        assert array.dtype == np.uint8
    assert decode_image(path).shape == (12, 16, 3)
    assert decode_image(path.read_bytes(), (5, 7)).shape == (5, 7, 3)
    assert read_size(path) == (16, 12)


def test_decode_cmyk_jpeg_colours(tmp_path):
    path = _save(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), tmp_path / "red.jpg")
    pixel = decode_image(path, (4, 4))[2, 2]
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def test_decode_grayscale_replicates_channels(tmp_path):
    path = _save(Image.fromarray(_gradient()), tmp_path / "g.png")
    array = decode_image(path)
    assert np.array_equal(array[..., 0], _gradient())
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])


def test_decode_16_bit_gradient_is_not_clipped(tmp_path):
    values = np.tile(np.linspace(0, 65535, 64).astype("<u2"), (4, 1))
    path = _save(Image.frombytes("I;16", (64, 4), values.tobytes()), tmp_path / "g16.png")
    with Image.open(path) as image:
        assert image.mode == "I;16"
    array = decode_image(path)
    assert array.shape == (4, 64, 3) and array.dtype == np.uint8
    row_values = array[0, :, 0].astype(int)
    assert np.all(np.diff(row_values) >= 0)  # still a gradient
    above = row_values[values[0] > 255]
    assert len(np.unique(above)) > 30  # not all clipped to one value (white)
    assert row_values[0] == 0 and row_values[-1] == 255
    assert decode_image(path, (8, 8)).shape == (8, 8, 3)


def test_exif_orientation_is_applied(tmp_path):
    path = exif_jpeg(tmp_path / "rotated.jpg", 6)
    with Image.open(path) as image:
        assert image.size == (4, 2)
    array = decode_image(path)
    assert array.shape == (4, 2, 3)  # 2 wide, 4 high
    assert read_size(path) == (2, 4)
    # orientation 6: rotate 90 degrees clockwise, so the red left half ends on top
    assert array[0, :, 0].min() > 150 and array[0, :, 2].max() < 100
    assert array[-1, :, 2].min() > 150 and array[-1, :, 0].max() < 100
    assert decode_image(path, (8, 4)).shape == (8, 4, 3)


def test_exif_orientation_1_is_unchanged(tmp_path):
    path = exif_jpeg(tmp_path / "upright.jpg", 1)
    assert decode_image(path).shape == (2, 4, 3)
    assert read_size(path) == (4, 2)


def test_truncated_png_is_bad(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = _save(Image.fromarray(noise), tmp_path / "full.png")
    path = tmp_path / "truncated.png"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        decode_image(path, (8, 8))


def test_truncated_jpeg_is_bad(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = _save(Image.fromarray(noise), tmp_path / "full.jpg", quality=90)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        decode_image(path, (8, 8))


def test_zero_byte_and_text_files_are_bad(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is not a picture\n", encoding="utf-8")
    for path in (empty, text):
        with pytest.raises(BadImageError, match="not a readable image"):
            decode_image(path, (8, 8))
        with pytest.raises(BadImageError, match="not a readable image"):
            read_size(path)
    with pytest.raises(BadImageError, match="not a readable image"):
        decode_image(b"", (8, 8))


def test_missing_file_is_bad(tmp_path):
    with pytest.raises(BadImageError):
        decode_image(tmp_path / "gone.png")


@pytest.mark.parametrize("side", [100, 40])  # 10000 px: error; 1600 px: PIL only warns, still refused
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, side):
    path = _save(Image.new("RGB", (side, side)), tmp_path / "bomb.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_image(path, (8, 8))
    with pytest.raises(BadImageError, match="decompression bomb"):
        read_size(path)


def test_decompression_bomb_is_refused_in_every_thread(tmp_path, monkeypatch):
    # Between the limit and twice it PIL only warns; the refusal must not depend on warning filters, which are
    # process-wide and not thread-safe (images are decoded in a thread pool).
    path = _save(Image.new("RGB", (40, 40)), tmp_path / "bomb.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)

    def refused(_: int) -> bool:
        try:
            read_size(path)
        except BadImageError:
            return True
        return False

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(refused, range(400)))


def test_a_large_png_text_chunk_is_not_an_error(tmp_path):
    # Photo tools embed XMP metadata as compressed text chunks larger than PIL's 1 MB default.
    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", os.urandom(800_000).hex(), zip=True)
    path = tmp_path / "xmp.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, pnginfo=info)
    assert decode_image(path)[0, 0].tolist() == [10, 20, 30]


def test_a_named_pipe_is_skipped_not_read(tmp_path):
    pipe = tmp_path / "x.png"
    os.mkfifo(pipe)
    with pytest.raises(BadImageError, match="not a regular file"):
        read_size(pipe)
    with pytest.raises(BadImageError, match="not a regular file"):
        decode_image(pipe)


def test_image_below_the_pixel_limit_decodes(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (30, 30)), tmp_path / "small.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    assert decode_image(path).shape == (30, 30, 3)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sixteen_bit_values_decode_the_same_in_every_image():
    # One raw value must give one brightness whatever else the image holds: scaled from the full 16-bit range.
    decoded = []
    for other in (250, 300, 5000, 65535):
        array = np.full((4, 4), 25700, dtype=np.uint16)
        array[0, 0] = other
        decoded.append(decode_image(_png_bytes(array)))
    assert all(int(image[1, 1, 0]) == 100 for image in decoded)  # 25700 / 257
    assert int(decoded[-1][0, 0, 0]) == 255
    assert int(decode_image(_png_bytes(np.zeros((2, 2), dtype=np.uint16)))[0, 0, 0]) == 0


def test_float_images_decode_from_the_unit_range(tmp_path):
    constant = tmp_path / "half.tiff"
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F").save(constant)
    assert int(decode_image(constant)[0, 0, 0]) == 128
    spread = np.full((4, 4), 0.5, dtype=np.float32)
    spread[0, 0], spread[0, 1] = 1.0, 7.0  # out of range: clipped, and it changes nothing else
    path = tmp_path / "spread.tiff"
    Image.fromarray(spread, mode="F").save(path)
    decoded = decode_image(path)
    assert int(decoded[1, 1, 0]) == 128 and int(decoded[0, 0, 0]) == 255 and int(decoded[0, 1, 0]) == 255


# ----------------------------------------------------------------------------------------------------------------
# photos from phones: HEIC/HEIF (through pillow-heif) and AVIF (Pillow itself)


@pytest.mark.parametrize("suffix", [".heic", ".HEIF", ".avif"])
def test_phone_photo_formats_are_listed_and_decoded(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path, format="AVIF" if suffix == ".avif" else "HEIF")
    assert is_image_name(path.name)
    assert read_size(path) == (40, 30)
    array = decode_image(path, (16, 16))
    assert array.shape == (16, 16, 3)
    assert abs(int(array[8, 8, 0]) - 200) <= 6 and int(array[8, 8, 2]) <= 40  # lossy codecs


def test_a_heic_photo_named_jpg_is_read_by_its_content(tmp_path):
    path = tmp_path / "IMG_0001.jpg"
    Image.new("RGB", (20, 20), (10, 200, 10)).save(path, format="HEIF")
    assert decode_image(path).shape == (20, 20, 3)


UNSUPPORTED_PROBE = """
import sys
sys.path.insert(0, {src!r})
{disable}
from pathlib import Path
from train_pytorch_model.data.images import BadImageError, decode_image
try:
    decode_image(Path({path!r}))
except BadImageError as error:
    print(error)
"""


@pytest.mark.parametrize(
    ("suffix", "disable", "phrases"),
    [
        (".heic", "sys.modules['pillow_heif'] = None", ("HEIC photo", "pip install pillow-heif", "heif-convert")),
        (
            ".avif",
            "import PIL.features, PIL.Image; PIL.features.check = lambda name: name != 'avif'; "
            "PIL.Image.init(); PIL.Image.ID[:] = [i for i in PIL.Image.ID if i != 'AVIF']",
            ("AVIF image", "avifdec"),
        ),
    ],
)
def test_a_phone_format_that_cannot_be_read_says_why_and_how_to_convert(tmp_path, suffix, disable, phrases):
    """Where the reader is missing (no pillow-heif, a Pillow without AVIF), the file is a bad image whose reason
    says what it is and how to convert it: never a silent 'no images'."""
    path = tmp_path / f"photo{suffix}"
    Image.new("RGB", (8, 8)).save(path, format="AVIF" if suffix == ".avif" else "HEIF")
    code = UNSUPPORTED_PROBE.format(src=str(REPO_ROOT / "src"), disable=disable, path=str(path))
    reason = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert all(phrase in reason for phrase in phrases), reason


def framed(path: Path, size: tuple[int, int], frame: int) -> Path:
    """A green picture in a red frame `frame` pixels wide."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 255, 0), (frame, frame, size[0] - frame, size[1] - frame))
    image.save(path)
    return path


def test_a_centre_crop_cuts_the_frame_away_and_a_stretch_keeps_it(tmp_path):
    """crop_ratio 1.25 on a 40x40 picture at 32x32: resized to 40x40 (32 x 1.25), its centre 32x32 cut out,
    which leaves out a 4-pixel frame; a stretch keeps every pixel, frame included."""
    path = framed(tmp_path / "framed.png", (40, 40), frame=4)
    cropped = decode_image(path, Resize((32, 32), fit="center_crop", crop_ratio=1.25))
    stretched = decode_image(path, Resize((32, 32)))
    assert cropped.shape == stretched.shape == (32, 32, 3)
    assert (cropped[..., 1] == 255).all() and (cropped[..., 0] == 0).all()
    assert (stretched[0, :, 0] == 255).all() and (stretched[16, 16] == (0, 255, 0)).all()


def test_a_centre_crop_keeps_the_aspect_and_cuts_the_longer_side(tmp_path):
    """A 80x40 picture at 32x32, ratio 1: resized to 64x32 (aspect kept, covering), 16 columns cut each side."""
    image = Image.new("RGB", (80, 40), (255, 0, 0))
    image.paste((0, 255, 0), (20, 0, 60, 40))  # the middle half, which is what a centre crop keeps
    image.save(tmp_path / "wide.png")
    cropped = decode_image(tmp_path / "wide.png", Resize((32, 32), fit="center_crop", crop_ratio=1.0))
    assert (cropped[:, 1:-1, 1] == 255).all() and (cropped[:, 1:-1, 0] == 0).all()
