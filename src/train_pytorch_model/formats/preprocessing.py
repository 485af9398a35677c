"""preprocessing.json: what a model trained by this project expects of an image, so that scoring (Score Image
Model, the MLflow pyfunc model) prepares images exactly as training did."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .class_names import class_name
from .json_file import write_json

PREPROCESSING_FILE = "preprocessing.json"


@dataclass
class Preprocessing:
    """What a trained model expects: images resized to (height, width), RGB, then (x/255 - mean) / std."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: list[str]
    resize: str = "bilinear"
    color_mode: str = "RGB"

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
        )
