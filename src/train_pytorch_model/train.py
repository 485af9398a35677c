"""Train PyTorch Model: the component's entry point.

    python -m train_pytorch_model.train --untrained-model DIR --training-dataset DIR [--validation-dataset DIR] \
        --trained-model DIR [--epochs 5 --batch-size 16 --learning-rate 0.001 --random-seed 1 --patience 3]

Parameters are checked before torch and MLflow are even imported, so a mistake is reported in a moment.
"""

from __future__ import annotations

import argparse
import sys

from .cli import run_cli
from .settings import (
    DEFAULT_MAX_SIZE,
    DEFAULT_VALIDATION_FRACTION,
    DESIGNER_PARAMETERS,
    Settings,
    add_recipe_arguments,
    path_argument,
    settings_from_arguments,
)


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="train_pytorch_model.train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--untrained-model",
        required=True,
        type=path_argument,
        help="UntrainedModelDirectory (DenseNet, ResNet or Init Image Model)",
    )
    parser.add_argument(
        "--training-dataset", required=True, type=path_argument, help="labelled ImageDirectory, ImageFolder or MLTable"
    )
    parser.add_argument(
        "--validation-dataset",
        type=path_argument,
        help="labelled ImageDirectory, ImageFolder tree or MLTable; default: a share of the training set",
    )
    parser.add_argument("--trained-model", required=True, type=path_argument, help="output ModelDirectory")
    for name, (default, _) in DESIGNER_PARAMETERS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", default=default)
    parser.add_argument("--image-size", default=None, help="side length; default: from the training images")
    parser.add_argument(
        "--crop-ratio", default=None, help="resize to cover the size times this, cut out the centre; default: plain"
    )
    parser.add_argument("--max-image-size", default=str(DEFAULT_MAX_SIZE), help="cap on the side chosen from the data")
    parser.add_argument("--num-workers", default=None, help="decoding threads; default: the cores available")
    parser.add_argument(
        "--validation-fraction",
        default=str(DEFAULT_VALIDATION_FRACTION),
        help="share of the training set held out for validation when no validation dataset is given",
    )
    add_recipe_arguments(parser)
    return settings_from_arguments(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        settings = parse_args(argv)
        from .training.job import run

        outcome = run(settings)
        if outcome.summary is None:
            return  # the first process reports for all
        print(
            f"Best epoch {outcome.best_epoch} of {outcome.last_epoch}: validation accuracy "
            f"{outcome.summary['best_valid_accuracy']:.4f}, loss {outcome.summary['best_valid_loss']:.4f}."
        )
        print(f"Trained model: {settings.trained_model}")
        print(f"MLflow run {outcome.summary['mlflow_run_id']} in {outcome.summary['mlflow_tracking_uri']}")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
