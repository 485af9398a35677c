"""The trained model's folder: a designer ModelDirectory that is also an MLflow model, with the run's summary
and report beside it. Written aside, then published with '_meta.yaml' last, so that a crash never leaves a
folder that looks valid."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from ..formats.json_file import write_json
from ..formats.model_directory import ModelSpec, write_model_directory
from ..formats.preprocessing import PREPROCESSING_FILE, Preprocessing
from ..settings import CHECKPOINT_DIR
from .mlflow_model import save_mlflow_model
from .onnx_export import export_onnx
from .publish import staged
from .summary import SUMMARY_FILE


def write_model_output(
    destination: Path,
    model: nn.Module,
    spec: ModelSpec,
    preprocessing: Preprocessing,
    summary: dict,
    *,
    copied: Sequence[tuple[Path | None, str]] = (),
    report: Callable[[Path], None] | None = None,
) -> None:
    """copied: (file, name) pairs copied in as they are (the training set's designer schema and samples);
    report writes the report files into the staging folder (and may add to the summary before it is written).
    A full disk ends in InsufficientDiskSpaceError with nothing of the new output left behind."""
    with staged(destination, "the trained model", keep=(CHECKPOINT_DIR,)) as staging:
        _write_staged(staging, model, spec, preprocessing, summary, copied, report)


def _write_staged(
    staging: Path,
    model: nn.Module,
    spec: ModelSpec,
    preprocessing: Preprocessing,
    summary: dict,
    copied: Sequence[tuple[Path | None, str]],
    report: Callable[[Path], None] | None,
) -> None:
    model = model.cpu().eval()
    classes = preprocessing.classes
    init_params = {"model_name": spec.architecture, "pretrained": False, **spec.flags, "num_classes": len(classes)}
    # 'pretrained: false': the weights are in the file, so designer readers must not fetch ImageNet ones.
    write_model_directory(
        staging,
        model.state_dict(),
        spec.family,
        init_params,
        classes=classes,
        mean=preprocessing.mean,
        std=preprocessing.std,
    )
    for source, name in copied:
        if source is not None:
            shutil.copyfile(source, staging / name)
    preprocessing.save(staging / PREPROCESSING_FILE)
    if report is not None:
        report(staging)
    summary["onnx"] = export_onnx(model, preprocessing, staging)
    write_json(staging / SUMMARY_FILE, summary)
    save_mlflow_model(copy.deepcopy(model), preprocessing, staging)
