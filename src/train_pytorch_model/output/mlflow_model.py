"""The trained model as an MLflow model, saved beside the designer files of the ModelDirectory.

`mlflow.pytorch.load_model` gives the network; `mlflow.pyfunc.load_model` gives a model that takes images
(file paths, bytes or base64 strings, a DataFrame with an 'image' column) and returns the designer's scoring
columns: one probability per class and the predicted label. Its signature (an 'image' string column in; the
probabilities and the label out) and an input example (one base64 PNG) let `mlflow models serve` and a managed
online endpoint take every payload they know: dataframe_split, dataframe_records, inputs and instances.

save_model is used, never log_model (it fails on Azure ML with MLflow 3); the folder is logged as artifacts.
"""

from __future__ import annotations

import base64
import inspect
import io
import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema
from PIL import Image
from torch import nn

from ..formats.preprocessing import PREPROCESSING_FILE, Preprocessing
from .scoring import predict_probabilities, probability_columns

PACKAGE_DIR = Path(__file__).resolve().parents[1]
LOADER_MODULE = "train_pytorch_model.output.mlflow_model"
CODE_LEFT_OUT = ("local", "__pycache__", "*.pyc")


class _ChosenFormatNotice(logging.Filter):
    """MLflow warns on every save that the pickle format is unsafe to load from untrusted sources. The format
    is chosen on purpose (see save_mlflow_model) and the designer files beside it are loaded weights-only: the
    notice only tells a user something they cannot act on, in every run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


logging.getLogger("mlflow.pytorch").addFilter(_ChosenFormatNotice())


def save_mlflow_model(model: nn.Module, preprocessing: Preprocessing, destination: Path) -> None:
    """Write MLmodel, data/ and code/ into destination (which may already hold other files)."""
    with tempfile.TemporaryDirectory(dir=destination) as scratch:
        target = Path(scratch) / "mlflow"
        # The package as scoring needs it: no local-only tools, no bytecode caches.
        code = Path(scratch) / "code" / PACKAGE_DIR.name
        shutil.copytree(PACKAGE_DIR, code, ignore=shutil.ignore_patterns(*CODE_LEFT_OUT))
        options = {}
        if "serialization_format" in inspect.signature(mlflow.pytorch.save_model).parameters:
            # MLflow >= 3.5 defaults to 'pt2', which needs an input example to trace; the pickled module
            # (whose class comes with code/) loads on every MLflow version.
            options["serialization_format"] = "pickle"
        mlflow.pytorch.save_model(
            model.cpu().eval(),
            str(target),
            code_paths=[str(code)],
            pip_requirements=_requirements(),
            signature=_signature(preprocessing),
            input_example=pd.DataFrame({"image": [_example_image(preprocessing)]}),
            **options,
        )
        preprocessing.save(target / "data" / PREPROCESSING_FILE)
        # The pytorch flavor stays as written; the pyfunc flavor gets our image-aware loader instead.
        mlmodel = Model.load(str(target / "MLmodel"))
        mlmodel.flavors["python_function"]["loader_module"] = LOADER_MODULE
        mlmodel.save(str(target / "MLmodel"))
        for entry in target.iterdir():
            final = destination / entry.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            shutil.move(str(entry), final)


def _signature(preprocessing: Preprocessing) -> ModelSignature:
    outputs = [ColSpec("double", column) for column in probability_columns(preprocessing.classes)]
    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([*outputs, ColSpec("string", "Scored Labels")]),
    )


def _example_image(preprocessing: Preprocessing) -> str:
    """One image as a caller sends it: a PNG at the model's size, base64-encoded (mid-grey: the example shows
    the payload's form; the model's own images stay out of the folder)."""
    height, width = preprocessing.image_size
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in ("torch", "torchvision", "mlflow", "pillow", "pillow-heif", "numpy", "pandas", "pyyaml"):
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


class ImageClassifier:
    """The pyfunc model: images in, designer scoring columns out."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        self.model = model.eval()
        self.preprocessing = preprocessing

    def get_raw_model(self) -> ImageClassifier:
        """Past the signature's string column: scorer.get_raw_model().predict(pixels) takes H x W x 3 arrays."""
        return self

    def predict(self, model_input, params=None) -> pd.DataFrame:  # noqa: ARG002 - pyfunc signature
        images = _images_from(model_input)
        probabilities = predict_probabilities(self.model, images, self.preprocessing)
        classes = self.preprocessing.classes
        frame = pd.DataFrame(probabilities, columns=probability_columns(classes))
        frame["Scored Labels"] = [classes[i] for i in probabilities.argmax(axis=1)] if len(frame) else []
        return frame


def _images_from(model_input) -> list:
    """The images of any input pyfunc and the scoring server pass: a DataFrame (its 'image' column, or its
    first), a Series, a dict of columns, a list, a 1-D array of strings or bytes (the server's reading of
    {"instances": [...]} and {"inputs": [...]}), or one image."""
    if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "USO" and model_input.ndim == 1:
        return list(model_input)
    if isinstance(model_input, pd.DataFrame):
        column = "image" if "image" in model_input.columns else model_input.columns[0]
        return list(model_input[column])
    if isinstance(model_input, pd.Series):
        return list(model_input)
    if isinstance(model_input, dict):
        return list(model_input.get("image", []))
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    return [model_input]


def _load_pyfunc(data_path: str, model_config=None) -> ImageClassifier:  # noqa: ARG001
    """Called by mlflow.pyfunc.load_model with the flavor's data folder."""
    from mlflow.pytorch import _load_model

    data = Path(data_path)
    model = _load_model(str(data))
    return ImageClassifier(model, Preprocessing.load(data / PREPROCESSING_FILE))
