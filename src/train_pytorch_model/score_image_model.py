"""Score Image Model: class probabilities of a trained ModelDirectory for every image of a dataset, written as
the designer's DataFrameDirectory (designer-formats.md section 5).

    python -m train_pytorch_model.score_image_model --trained-model DIR --dataset DIR --scored-dataset DIR

The model is a ModelDirectory written by the designer's Train PyTorch Model or by this project's. It is read
through the same allowlist as training (nothing named in the folder is imported; the weights are loaded with
weights_only) and is never re-downloaded: the designer's Score rebuilt pretrained networks from ImageNet weights
at scoring time only to overwrite them. The dataset is anything Convert to Image Directory accepts (an
ImageDirectory, an ImageFolder tree, a flat folder of unlabelled images, COCO, or an archive of one of those).

Pre-processing: a model trained by this project carries 'preprocessing.json' (image size, mean, std), and images
are resized to its size, as in training. A designer-trained model has none: images are scored at their own size
with the spec's mean and std, as the designer does. The designer fails when the images differ in size; here
each size is scored in batches of its own. Unreadable images are skipped and named.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from .cli import run_cli
from .convert_to_image_directory import ImageTable, list_dataset
from .designer_files import check_output_folder, dump_json, dump_yaml, json_safe, publish
from .errors import InvalidDatasetError, InvalidModelDirectoryError
from .images import BadImageError, decode_image
from .model_directory import FIX_HINT, ModelSpec, load_weights, read_model_directory
from .models import DesignerNet, build_network, strip_parallel_prefixes
from .params import path_argument
from .scoring import PREPROCESSING_FILE, Preprocessing, predict_probabilities, probability_columns

log = logging.getLogger(__name__)

MODEL_SUBJECT = "Trained model"
DATA_SUBJECT = "Dataset"
SCORED_LABELS = "Scored Labels"
ASSIGNED_LABELS = "Multi Class Assigned Labels"
DATA_FILE = "_data.parquet"
VISUALIZATION_FILE = "_data.visualization"
SAMPLES_FILE = "_samples.json"
SCHEMA_FILE = "schema/_schema.json"
SAMPLE_COUNT = 3
PREVIEW_LIMIT = 100  # rows and columns shown in the designer's preview
CHUNK = 256  # images decoded at a time: bounds memory on large datasets
STATISTICS = ("Mean", "Median", "Min", "Max", "Standard Deviation", "Unique Values", "Missing Values")
TRAINED_HINT = "Connect the trained_model output of Train PyTorch Model."


@dataclass
class TrainedModel:
    network: nn.Module
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int] | None  # None: score every image at its own size (designer-trained models)


# ----- the model -----


def load_trained_model(path: str | Path) -> TrainedModel:
    spec = read_model_directory(path, subject=MODEL_SUBJECT)
    state = strip_parallel_prefixes(load_weights(spec, subject=MODEL_SUBJECT))
    network = _build(spec, state)
    outputs = _output_count(state)
    preprocessing = _read_preprocessing(spec)
    classes = preprocessing.classes if preprocessing else spec.classes
    if not classes:
        raise InvalidModelDirectoryError(
            f'ModelDirectory "{spec.root}" is invalid: it has no label map, so it is an untrained model.',
            TRAINED_HINT,
            subject=MODEL_SUBJECT,
        )
    if len(classes) > outputs:
        raise InvalidModelDirectoryError(
            f'ModelDirectory "{spec.root}" is invalid: its label map names {len(classes)} classes but the network '
            f"has {outputs} outputs.",
            TRAINED_HINT,
            subject=MODEL_SUBJECT,
        )
    # Outputs the label map does not name are reported by index, as the designer does.
    classes = [str(name) for name in classes] + [str(i) for i in range(len(classes), outputs)]
    if preprocessing:
        return TrainedModel(network, classes, preprocessing.mean, preprocessing.std, tuple(preprocessing.image_size))
    return TrainedModel(network, classes, spec.mean, spec.std, None)


def _output_count(state: dict[str, torch.Tensor]) -> int:
    for key in ("out_linear_model.weight", "model.fc.weight", "model.classifier.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return 0


def _build(spec: ModelSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    """The network the weights were saved from. A designer model trained from pretrained weights kept the
    1000-class ImageNet head and stacked a Linear(1000, C) on it ('out_linear_model')."""
    stacked = state.get("out_linear_model.weight")
    if stacked is not None and stacked.ndim == 2:
        inner, outputs = int(stacked.shape[1]), int(stacked.shape[0])
        model = DesignerNet(build_network(spec.architecture, inner, spec.flag), nn.Linear(inner, outputs))
    else:
        outputs = _output_count(state)
        if not outputs:
            raise _mismatch(spec, "it has no classifier weights (model.fc or model.classifier)")
        model = DesignerNet(build_network(spec.architecture, outputs, spec.flag))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise _mismatch(spec, str(exc).strip().splitlines()[0]) from exc
    return model.eval()


def _mismatch(spec: ModelSpec, reason: str) -> InvalidModelDirectoryError:
    return InvalidModelDirectoryError(
        f'ModelDirectory "{spec.root}" is invalid: its weights do not fit a {spec.architecture} ({reason}).',
        "The weights file must come from the architecture model_spec.yaml names. " + FIX_HINT,
        subject=MODEL_SUBJECT,
    )


def _read_preprocessing(spec: ModelSpec) -> Preprocessing | None:
    path = spec.root / PREPROCESSING_FILE
    if not path.is_file():
        return None
    try:
        return Preprocessing.load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidModelDirectoryError(
            f"ModelDirectory \"{spec.root}\" is invalid: '{PREPROCESSING_FILE}' cannot be read ({exc}).",
            "Train the model again, or remove the file to score with the model spec's settings.",
            subject=MODEL_SUBJECT,
        ) from exc


# ----- scoring -----


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray | str:
    try:
        return decode_image(path, size)
    except BadImageError as exc:
        return str(exc)
    except Exception as exc:  # a decoder bug on a corrupt file (struct.error, IndexError ...) is still a bad image
        return f"cannot be decoded ({type(exc).__name__}: {exc})"


def score(
    model: TrainedModel, sources: Sequence[Path], device: torch.device | None = None
) -> tuple[np.ndarray, list[str]]:
    """(probabilities, reasons): one row per source, NaN where the image could not be read ('' reason if read)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = model.network.to(device)
    probabilities = np.full((len(sources), len(model.classes)), np.nan)
    reasons = [""] * len(sources)
    workers = min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(sources), CHUNK):
            indices = range(start, min(start + CHUNK, len(sources)))
            decoded = pool.map(lambda i: _decode(sources[i], model.image_size), indices)
            by_size: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
            for index, result in zip(indices, decoded, strict=True):
                if isinstance(result, str):
                    reasons[index] = result
                else:
                    by_size[result.shape[:2]].append((index, result))
            for size, items in by_size.items():
                preprocessing = Preprocessing(size, model.mean, model.std, model.classes)
                # Large originals scored at their own size: keep a batch near 64 images of 224x224.
                batch = max(1, min(64, (64 * 224 * 224) // (size[0] * size[1])))
                rows = predict_probabilities(network, [a for _, a in items], preprocessing, batch)
                probabilities[[i for i, _ in items]] = rows[:, : len(model.classes)]
    return probabilities, reasons


# ----- the DataFrameDirectory (designer-formats.md section 5) -----


def passthrough_columns(table: ImageTable) -> list[str]:
    """The input's non-feature columns, sorted by name as the designer's Index.difference sorts them."""
    image = table.image_column
    return sorted(c["name"] for c in table.columns if c is not image and not c.get("isFeature", True))


def _column_values(values: list) -> pd.Series:
    """Lists and objects (COCO annotations) as JSON text: Parquet needs one type per column."""
    if any(isinstance(v, (list, dict)) for v in values):
        values = [v if v is None else json.dumps(v) for v in values]
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pd.Series(values, dtype="int64")
    if all(v is None or isinstance(v, str) for v in values):
        return pd.Series(values, dtype=object)  # object, not pandas' string dtype: the designer's Parquet type
    return pd.Series(values)


def scored_frame(table: ImageTable, probabilities: np.ndarray, classes: list[str], keep: list[bool]) -> pd.DataFrame:
    rows = [record for record, kept in zip(table.records, keep, strict=True) if kept]
    frame = pd.DataFrame(index=pd.RangeIndex(len(rows)))
    for name in passthrough_columns(table):
        frame[name] = _column_values([record.get(name) for record in rows])
    kept_probabilities = probabilities[np.asarray(keep, dtype=bool)]
    for index, name in enumerate(probability_columns(classes)):
        frame[name] = kept_probabilities[:, index].astype(np.float64)
    labels = [classes[i] for i in kept_probabilities.argmax(axis=1)] if len(rows) else []
    frame[SCORED_LABELS] = pd.Series(labels, dtype=object)
    return frame


def _column_type(series: pd.Series) -> tuple[str, str]:
    """(column type, element type) inferred from the pandas dtype, as the designer's schema writer does."""
    if pd.api.types.is_bool_dtype(series):
        return "Binary", "bool"
    if pd.api.types.is_integer_dtype(series):
        return "Numeric", "int64"
    if pd.api.types.is_float_dtype(series):
        return "Numeric", "float64"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "DateTime", "datetime64"
    if all(v is None or isinstance(v, str) for v in series):
        return "String", "str"
    return "Object", "object"


def dataframe_schema(frame: pd.DataFrame, label_column: str | None, score_columns: list[str]) -> dict:
    attributes = []
    for name in frame.columns:
        kind, element = _column_type(frame[name])
        attributes.append(
            {
                "name": name,
                "type": kind,
                # The designer marks every column but the label and scores as a feature (pass-through 'id' too).
                "isFeature": name != label_column and name not in score_columns,
                "elementType": {"typeName": element, "isNullable": False},
            }
        )
    scores = {name: name for name in score_columns if name != SCORED_LABELS}
    scores[ASSIGNED_LABELS] = SCORED_LABELS
    return {
        "columnAttributes": attributes,
        "featureChannels": [],
        "labelColumns": {"True Labels": label_column} if label_column else {},
        "scoreColumns": scores,
    }


def _table_json(records: list, features: list[dict], rows: int, columns: int) -> dict:
    return {"records": records, "features": features, "numberOfRows": rows, "numberOfColumns": columns, "name": None}


def visualization(frame: pd.DataFrame, schema: dict) -> dict:
    """The designer's preview: first 100 rows x 100 columns. Its statistics and layout blocks hold NaN and null
    placeholders (the UI fills them in, see the golden scored_dataset), so they are written the same way."""
    attributes = schema["columnAttributes"][:PREVIEW_LIMIT]
    labels = set(schema["labelColumns"].values())
    scores = set(schema["scoreColumns"].values())
    preview = frame.iloc[:PREVIEW_LIMIT, :PREVIEW_LIMIT]
    records = [json_safe(list(row)) for row in preview.itertuples(index=False, name=None)]
    features = []
    for index, attribute in enumerate(attributes):
        name = attribute["name"]
        role = "Label" if name in labels else "Score" if name in scores else "Feature"
        features.append(
            {
                "name": name,
                "index": index,
                "elementType": attribute["elementType"]["typeName"],
                "featureType": f"{attribute['type']} {role}",
            }
        )
    count = len(attributes)

    def placeholder_features(names: Sequence[str], element: str, kind: str) -> list[dict]:
        return [{"name": n, "index": i, "elementType": element, "featureType": kind} for i, n in enumerate(names)]

    statistics = [[{"isNan": True}] * len(STATISTICS) for _ in range(count)]
    layout = [[None, None] for _ in range(count)]
    return {
        "visualizationType": "default",
        "data": _table_json(records, features, len(frame), len(frame.columns)),
        "statistics": _table_json(
            statistics,
            placeholder_features(STATISTICS, "float64", "Numeric Feature"),
            count,
            len(STATISTICS),
        ),
        "layout": _table_json(
            layout, placeholder_features(("Histogram", "Boxplot"), "object", "Object Feature"), count, 2
        ),
    }


def write_dataframe_directory(frame: pd.DataFrame, schema: dict, destination: Path) -> None:
    """Write aside, then publish with '_meta.yaml' last."""
    staging = destination / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / Path(SCHEMA_FILE).parent).mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), staging / DATA_FILE)
    dump_json(visualization(frame, schema), staging / VISUALIZATION_FILE)
    samples = [
        json_safe(dict(zip(frame.columns, row, strict=True)))
        for row in frame.head(SAMPLE_COUNT).itertuples(index=False, name=None)
    ]
    dump_json(samples, staging / SAMPLES_FILE)
    dump_json(schema, staging / SCHEMA_FILE)
    meta = {
        "type": "DataFrameDirectory",
        "visualization": [{"type": "Visualization", "path": VISUALIZATION_FILE}],
        "extension": {},
        "format": "Parquet",
        "data": DATA_FILE,
        "samples": SAMPLES_FILE,
        "schema": SCHEMA_FILE,
    }
    dump_yaml(meta, staging / "_meta.yaml")
    publish(staging, destination)


def score_image_model(trained_model: str | Path, dataset: str | Path, scored_dataset: str | Path) -> pd.DataFrame:
    inputs = {"trained_model": Path(trained_model), "dataset": Path(dataset)}
    check_output_folder(Path(scored_dataset), inputs, subject="Output scored_dataset", kind="DataFrameDirectory")
    model = load_trained_model(trained_model)
    with tempfile.TemporaryDirectory(prefix="score-image-model-") as scratch:
        table = list_dataset(dataset, DATA_SUBJECT, Path(scratch), check=False)
        probabilities, reasons = score(model, table.sources)
    unreadable = [(table.source_name(i), why) for i, why in enumerate(reasons) if why]
    for name, why in unreadable:
        log.warning("%s: '%s' is not scored: %s.", DATA_SUBJECT, name, why)
    keep = [not why for why in reasons]
    if not any(keep):
        shown = "; ".join(f"'{n}': {w}" for n, w in unreadable[:3])
        raise InvalidDatasetError(
            f"none of its {len(table.records)} images could be read (e.g. {shown}).",
            "Check that the files are images (PNG, JPEG, BMP, TIFF, WebP ...) and not truncated.",
            subject=DATA_SUBJECT,
        )
    frame = scored_frame(table, probabilities, model.classes, keep)
    label_column = table.annotation_column
    label_name = label_column["name"] if label_column and label_column["name"] in frame.columns else None
    if label_name is None:
        log.warning("%s: it has no label column, so the scored dataset cannot be evaluated.", DATA_SUBJECT)
    schema = dataframe_schema(frame, label_name, [*probability_columns(model.classes), SCORED_LABELS])
    write_dataframe_directory(frame, schema, Path(scored_dataset))
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train_pytorch_model.score_image_model", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--trained-model", required=True, type=path_argument, help="ModelDirectory from Train PyTorch Model"
    )
    parser.add_argument(
        "--dataset", required=True, type=path_argument, help="ImageDirectory, ImageFolder, flat, COCO or archive folder"
    )
    parser.add_argument(
        "--scored-dataset", required=True, type=path_argument, help="output folder (DataFrameDirectory)"
    )

    def body() -> None:
        args = parser.parse_args(argv)
        frame = score_image_model(args.trained_model, args.dataset, args.scored_dataset)
        print(f"{len(frame)} images scored; written to {args.scored_dataset}")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
