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
import logging
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .cli import run_cli
from .data.images import BadImageError, Resize, decode_image
from .errors import InvalidDatasetError
from .formats.dataframe_directory import SCORED_LABELS, dataframe_schema, scored_frame, write_dataframe_directory
from .formats.dataset_listing import list_dataset
from .formats.preprocessing import Preprocessing
from .model.loading import TrainedModel, load_trained_model
from .output.publish import check_output_folder
from .output.scoring import predict_probabilities, probability_columns
from .settings import path_argument

log = logging.getLogger(__name__)

DATA_SUBJECT = "Dataset"
CHUNK = 256  # images decoded at a time: bounds memory on large datasets


def _decode(path: Path, resizing: Resize) -> np.ndarray | str:
    try:
        return decode_image(path, resizing)
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
            decoded = pool.map(lambda i: _decode(sources[i], model.resizing), indices)
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
