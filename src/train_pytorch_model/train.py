"""Train PyTorch Model: the component's entry point.

    python -m train_pytorch_model.train --untrained-model DIR --training-dataset DIR --validation-dataset DIR \
        --trained-model DIR [--epochs 5 --batch-size 16 --learning-rate 0.001 --random-seed 1 --patience 3]

Parameters are checked before torch and MLflow are even imported, so a mistake is reported in a moment.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from .cli import run_cli
from .params import parse_int, parse_learning_rate, path_argument

# Kept equal to data.DEFAULT_MAX_SIZE; defined here so that argument parsing imports no torch.
DEFAULT_MAX_SIZE = 224


@dataclass
class Settings:
    untrained_model: Path
    training_dataset: Path
    validation_dataset: Path
    trained_model: Path
    epochs: int
    batch_size: int
    learning_rate: float
    random_seed: int
    patience: int
    image_size: int | None
    num_workers: int | None
    max_image_size: int


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="train_pytorch_model.train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--untrained-model", required=True, type=path_argument, help="UntrainedModelDirectory (DenseNet or ResNet)"
    )
    parser.add_argument(
        "--training-dataset", required=True, type=path_argument, help="labelled ImageDirectory or ImageFolder tree"
    )
    parser.add_argument(
        "--validation-dataset", required=True, type=path_argument, help="labelled ImageDirectory or ImageFolder tree"
    )
    parser.add_argument("--trained-model", required=True, type=path_argument, help="output ModelDirectory")
    parser.add_argument("--epochs", default="5")
    parser.add_argument("--batch-size", default="16")
    parser.add_argument("--learning-rate", default="0.001")
    parser.add_argument("--random-seed", default="1")
    parser.add_argument("--patience", default="3")
    parser.add_argument("--image-size", default=None, help="side length; default: from the training images")
    parser.add_argument("--max-image-size", default=str(DEFAULT_MAX_SIZE), help="cap on the side chosen from the data")
    parser.add_argument("--num-workers", default=None, help="decoding threads; default: the cores available")
    args = parser.parse_args(argv)
    return Settings(
        untrained_model=Path(args.untrained_model),
        training_dataset=Path(args.training_dataset),
        validation_dataset=Path(args.validation_dataset),
        trained_model=Path(args.trained_model),
        epochs=parse_int("epochs", args.epochs, 1),
        batch_size=parse_int("batch_size", args.batch_size, 1),
        learning_rate=parse_learning_rate(args.learning_rate),
        random_seed=parse_int("random_seed", args.random_seed),
        patience=parse_int("patience", args.patience, 1),
        image_size=parse_int("image_size", args.image_size, 16) if args.image_size not in (None, "") else None,
        num_workers=parse_int("num_workers", args.num_workers, 0) if args.num_workers not in (None, "") else None,
        max_image_size=parse_int("max_image_size", args.max_image_size, 16),
    )


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        settings = parse_args(argv)
        from .trainer import run

        summary = run(settings)
        if summary.get("rank", 0) != 0:
            return  # the first process reports for all
        print(
            f"Best epoch {summary['best_epoch']} of {summary['last_epoch']}: validation accuracy "
            f"{summary['best_valid_accuracy']:.4f}, loss {summary['best_valid_loss']:.4f}."
        )
        print(f"Trained model: {settings.trained_model}")
        print(f"MLflow run {summary['mlflow_run_id']} in {summary['mlflow_tracking_uri']}")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
