"""The trained network as ONNX beside the MLflow model, as AutoML for images exports it: `model.onnx` and
`labels.json` (the class names in the order of the outputs), for runtimes without PyTorch (onnxruntime,
ONNX-based serving, edge devices).

The graph takes what the network takes: `image`, float32, N x 3 x H x W (any N), RGB scaled to 0-1 and
normalised with preprocessing.json's mean and std at its image size; it returns `logits` and their softmax,
`probabilities`. The TorchScript exporter writes one self-contained file (weights inside) in a second or two;
the dynamo exporter, tried when it fails, needs onnxscript.

Exporting is a convenience, never a condition of the job: whatever goes wrong is reported in the log and in
the summary, and the rest of the output is written as always.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import first_line
from ..formats.json_file import write_json
from ..formats.preprocessing import Preprocessing

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
LABELS_FILE = "labels.json"
# Opset 17 runs on every onnxruntime since 1.13 (2022) and has every operator torchvision's classifiers need;
# the dynamo exporter starts at 18.
OPSET = {"torchscript": 17, "dynamo": 18}
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")
# How far onnxruntime's probabilities may be from PyTorch's on the check batch before the export is distrusted.
TOLERANCE = 1e-4


class _WithProbabilities(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(image)
        return logits, torch.softmax(logits, dim=1)


def export_onnx(network: nn.Module, preprocessing: Preprocessing, folder: Path) -> dict:
    """Write model.onnx and labels.json into folder; return what the summary records. Never raises: a failed
    export leaves neither file and says why."""
    started = time.perf_counter()
    target = folder / ONNX_FILE
    height, width = preprocessing.image_size
    # Two images, not one: an exporter may fold a batch of one into the graph's shapes.
    example = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    wrapped = _WithProbabilities(network).cpu().eval()
    try:
        exporter = _export(wrapped, example, target)
        difference = _onnxruntime_difference(wrapped, example, target)
        if difference is not None and difference > TOLERANCE:
            raise ValueError(f"onnxruntime's probabilities differ from PyTorch's by {difference:.2e}")
        write_json(folder / LABELS_FILE, list(preprocessing.classes))
    except Exception as exc:  # any exporter or runtime failure: the job goes on without ONNX
        target.unlink(missing_ok=True)
        (folder / LABELS_FILE).unlink(missing_ok=True)
        problem = f"{type(exc).__name__}: {first_line(exc, if_empty='')}"
        log.warning("The ONNX export failed (%s); the rest of the model is written as usual.", problem)
        return {"exported": False, "problem": problem, "seconds": round(time.perf_counter() - started, 3)}
    summary = {
        "exported": True,
        "file": ONNX_FILE,
        "labels": LABELS_FILE,
        "opset": OPSET[exporter],
        "exporter": exporter,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, height, width], "dtype": "float32"},
        "outputs": list(OUTPUT_NAMES),
        "bytes": target.stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if difference is not None:
        summary["onnxruntime_max_difference"] = difference
    log.info("ONNX model written (%s, opset %d, %.1f MB).", exporter, OPSET[exporter], summary["bytes"] / 1e6)
    return summary


def _export(wrapped: nn.Module, example: torch.Tensor, target: Path) -> str:
    """The exporter that wrote the file: TorchScript's, else dynamo's."""
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    common = {"input_names": [INPUT_NAME], "output_names": list(OUTPUT_NAMES)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer notes
        try:
            torch.onnx.export(wrapped, (example,), str(target), dynamo=False, dynamic_axes=axes,
                              opset_version=OPSET["torchscript"], **common)  # fmt: skip
            return "torchscript"
        except Exception as first:
            target.unlink(missing_ok=True)
            log.info(
                "The TorchScript ONNX exporter failed (%s); trying the dynamo exporter.", first_line(first, if_empty="")
            )
            batch = torch.export.Dim("batch")
            torch.onnx.export(wrapped, (example,), str(target), dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: batch},), opset_version=OPSET["dynamo"], **common)  # fmt: skip
            return "dynamo"


def _onnxruntime_difference(wrapped: nn.Module, example: torch.Tensor, target: Path) -> float | None:
    """The largest difference between onnxruntime's and PyTorch's probabilities on the example batch, at a
    batch size other than the export's (the batch axis must be free); None where onnxruntime is missing."""
    try:
        import onnxruntime
    except ImportError:
        return None
    batch = torch.cat([example, example.flip(0), example[:1]])
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch.numpy()})
    with torch.no_grad():
        expected = wrapped(batch)[1].numpy()
    return float(abs(probabilities - expected).max())
