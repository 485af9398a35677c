"""Turning images into class probabilities with a trained model: shared by the MLflow pyfunc model and the
scoring entry, so that scoring sees exactly the preprocessing that training used."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.images import Resize, decode_image, to_rgb
from ..formats.preprocessing import Preprocessing


def image_to_array(item: object, resize: Resize | tuple[int, int]) -> np.ndarray:
    """One image, given as a path, raw bytes, a base64 string, a PIL image or an HxWx3 array, to HxWx3 uint8,
    resized as training resized it."""
    from PIL import Image

    resize = Resize.of(resize)
    if isinstance(item, Image.Image):
        return np.asarray(resize.apply(to_rgb(item)), dtype=np.uint8)
    if isinstance(item, np.ndarray):
        array = item if item.ndim == 3 else np.repeat(item[..., None], 3, axis=2)
        return image_to_array(Image.fromarray(array.astype(np.uint8)), resize)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_image(bytes(item), resize)
    if isinstance(item, (str, Path)):
        text = str(item)
        if _is_file(text):
            return decode_image(Path(text), resize)
        if text.startswith("data:") and "," in text:  # a data URI: data:image/png;base64,....
            text = text.split(",", 1)[1]
        try:
            return decode_image(base64.b64decode("".join(text.split()), validate=True), resize)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"'{text[:60]}' is neither an existing file nor base64 image bytes") from exc
    raise TypeError(f"cannot read an image from a {type(item).__name__}")


def _is_file(text: str) -> bool:
    """Whether text names an existing file; a long base64 string is not a path (and makes stat fail)."""
    if len(text) > 4096 or "\0" in text:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module, images: Iterable[object], preprocessing: Preprocessing, batch_size: int = 64
) -> np.ndarray:
    """Softmax probabilities (N x classes) for the images, batched, on the model's device."""
    device = next(model.parameters()).device
    resize = preprocessing.resizing()
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1)
    model.eval()
    outputs: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        tensor = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        tensor = ((tensor - mean) / std).to(device)
        outputs.append(torch.softmax(model(tensor).float(), dim=1).cpu().numpy().astype(np.float64))
        batch.clear()

    for item in images:
        batch.append(image_to_array(item, resize))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not outputs:
        return np.zeros((0, len(preprocessing.classes)))
    return np.concatenate(outputs)


def probability_columns(classes: Sequence[str]) -> list[str]:
    return [f"Scored Probabilities_{name}" for name in classes]
