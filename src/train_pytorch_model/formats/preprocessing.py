"""preprocessing.json: what a model trained by this project expects of an image, so that scoring (Score Image
Model, the MLflow pyfunc model) prepares images exactly as training did."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..data.images import Resize
from .class_names import class_name
from .json_file import write_json

PREPROCESSING_FILE = "preprocessing.json"


@dataclass
class Preprocessing:
    """What a trained model expects: images resized to (height, width) as `fit` says, RGB, then
    (x/255 - mean) / std."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: list[str]
    resize: str = "bilinear"  # the interpolation
    color_mode: str = "RGB"
    fit: str = "stretch"  # or "center_crop", the way pretrained weights were trained (see data.images.Resize)
    crop_ratio: float = 1.0  # center_crop: resized to cover image_size x crop_ratio, then cropped

    def resizing(self) -> Resize:
        return Resize(tuple(self.image_size), self.resize, self.fit, self.crop_ratio)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> Preprocessing:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            image_size=tuple(data["image_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            classes=[class_name(name) for name in data["classes"]],
            resize=data.get("resize", "bilinear"),
            color_mode=data.get("color_mode", "RGB"),
            fit=data.get("fit", "stretch"),
            crop_ratio=float(data.get("crop_ratio", 1.0)),
        )
