"""model.onnx beside the MLflow model: onnxruntime gives PyTorch's probabilities on real images at any batch
size, labels.json names the outputs' classes, and a network that cannot be exported leaves the job's output
without ONNX files and with the reason in the summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from conftest import write_digits_subset
from train_pytorch_model.formats.preprocessing import Preprocessing
from train_pytorch_model.output.onnx_export import INPUT_NAME, LABELS_FILE, ONNX_FILE, export_onnx
from train_pytorch_model.output.scoring import image_to_array, predict_probabilities

onnxruntime = pytest.importorskip("onnxruntime")


def onnx_probabilities(model_file: Path, files: list[Path], preprocessing: Preprocessing) -> np.ndarray:
    """What a user of model.onnx does: resize as preprocessing.json says, scale to 0-1, normalise, NCHW."""
    pixels = np.stack([image_to_array(f, preprocessing.resizing()) for f in files]).astype(np.float32) / 255.0
    mean, std = np.array(preprocessing.mean, np.float32), np.array(preprocessing.std, np.float32)
    batch = ((pixels - mean) / std).transpose(0, 3, 1, 2)
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {INPUT_NAME: np.ascontiguousarray(batch)})[0]


def test_onnxruntime_matches_pytorch_on_real_images(tmp_path):
    images = sorted(write_digits_subset(tmp_path / "digits", classes=(0, 1, 7), per_class=3).rglob("*.png"))
    torch.manual_seed(0)
    network = torchvision.models.resnet18(num_classes=3).eval()
    preprocessing = Preprocessing((40, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), ["0", "1", "7"])
    summary = export_onnx(network, preprocessing, tmp_path)
    assert summary["exported"] is True and summary["exporter"] == "torchscript" and summary["opset"] == 17
    assert summary["bytes"] == (tmp_path / ONNX_FILE).stat().st_size > 40e6  # resnet18's weights are inside
    assert summary["onnxruntime_max_difference"] <= 1e-4 and summary["seconds"] > 0
    assert summary["input"]["shape"] == ["batch", 3, 40, 32]
    assert json.loads((tmp_path / LABELS_FILE).read_text()) == ["0", "1", "7"]
    expected = predict_probabilities(network, images, preprocessing)
    for batch in (images, images[:1]):  # 9 images, then 1: the batch axis is free
        got = onnx_probabilities(tmp_path / ONNX_FILE, batch, preprocessing)
        assert np.abs(got - expected[: len(batch)]).max() <= 1e-4


class Unexportable(torch.nn.Module):
    """Eigenvalues: an operator neither ONNX exporter has."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.linalg.eigvals(image[:, :, :3, :3]).real.mean(dim=2))


def test_a_failed_export_leaves_no_onnx_files_and_says_why(tmp_path, caplog):
    summary = export_onnx(Unexportable(), Preprocessing((8, 8), (0.5,) * 3, (0.5,) * 3, ["a", "b"]), tmp_path)
    assert summary["exported"] is False
    assert summary["problem"] and "\x1b" not in summary["problem"]
    assert not (tmp_path / ONNX_FILE).exists() and not (tmp_path / LABELS_FILE).exists()
    assert "ONNX export failed" in caplog.text and "rest of the model is written" in caplog.text
