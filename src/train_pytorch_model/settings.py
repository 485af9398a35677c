"""The component's settings: what a run is asked to do, the parameters' defaults and bounds, and their checks.

Torch-free on purpose: the command line checks every value in a moment, before torch and MLflow are imported.
The Azure ML client does not enforce a component's min/max, so the checks here do.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidParameterError

# The designer's lower bound of the learning rate: the smallest positive double (C#'s double.Epsilon).
DOUBLE_EPSILON = 5e-324
# The largest side chosen from the data when image_size is not given.
DEFAULT_MAX_SIZE = 224
# The hidden folder of the output that holds the resumable training state.
CHECKPOINT_DIR = ".checkpoint"

# The designer's five parameters: name -> (default, minimum). component.yaml declares the same values.
DESIGNER_PARAMETERS: dict[str, tuple[str, int | None]] = {
    "epochs": ("5", 1),
    "batch_size": ("16", 1),
    "learning_rate": ("0.001", None),
    "random_seed": ("1", None),
    "patience": ("3", 1),
}
MIN_IMAGE_SIZE = 16
# AutoML for images' default share of the training data held out when no validation dataset is given.
DEFAULT_VALIDATION_FRACTION = 0.2
# A held-out share must leave most images to train on and give validation more than a token few.
VALIDATION_FRACTION_RANGE = (0.01, 0.9)
# The dataset error policy: unusable entries (undecodable files, MLTable lines without a label or an image) are
# skipped and named, up to this share of a dataset; past it the dataset is refused.
MAX_BAD_FRACTION = 0.1
MIN_WORKERS = 0
# crop_ratio: images are resized to cover the training size times this, then their centre is cut out. 1 keeps
# the whole of a square image; torchvision's pretrained weights use 1.14 (256/224); past 2 a crop keeps a
# quarter of the area or less, which loses the object more often than it removes background.
CROP_RATIO_RANGE = (1.0, 2.0)


# The recipe's choices around the designer's five parameters (issue: fine-tuning recipe), each an optional input of
# component.yaml. Their defaults were chosen by benchmarks/recipe.py (README: The recipe, measured): the plain
# recipe, and class weighting by the inverse square root, which weighs every class 1 on balanced data (the same
# run, bit for bit) and was more accurate on every imbalanced dataset and schedule measured.
OPTIMIZERS = ("sgd", "adamw")
AUGMENTATIONS = ("none", "light", "strong")  # data/augment.py's levels
CLASS_WEIGHTINGS = ("none", "inverse_sqrt", "inverse")  # AutoML's weighted_loss 0, 1, 2
MAX_LABEL_SMOOTHING = 0.5
MAX_EMA_DECAY = 0.99999  # 1 would never move from the untrained weights


@dataclass(frozen=True)
class Recipe:
    """How the network is trained, beyond the designer's parameters."""

    optimizer: str = "sgd"  # SGD with Nesterov momentum (the designer's); adamw with its own weight decay
    label_smoothing: float = 0.0  # of the training loss only; validation's loss stays plain cross-entropy
    warmup_epochs: float = 0.0  # linear warmup of the learning rate before the cosine decay
    class_weighting: str = "inverse_sqrt"  # weights of the training loss by class frequency
    augmentation: str = "none"  # batched on the device: light (crop, flip, colour) or strong (and more)
    gradient_accumulation: int = 1  # batches a step: a step over batch_size x this many images
    ema_decay: float = 0.0  # an exponential moving average of the weights, per step; 0: none
    freeze_epochs: int = 0  # the first epochs train the classifier only


@dataclass(frozen=True)
class Settings:
    """Everything a training run is given: its folders and its checked parameters."""

    untrained_model: Path
    training_dataset: Path
    validation_dataset: Path | None  # None: validation_fraction of the training set is held out instead
    trained_model: Path
    epochs: int
    batch_size: int
    learning_rate: float
    random_seed: int
    patience: int
    image_size: int | None = None
    crop_ratio: float | None = None  # None: as the weights say (see training/image_input.py)
    num_workers: int | None = None
    max_image_size: int = DEFAULT_MAX_SIZE
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    recipe: Recipe = Recipe()

    @property
    def inputs(self) -> dict[str, Path]:
        """The input folders by their component names (which the output must never overlap)."""
        given = {
            "untrained_model": self.untrained_model,
            "training_dataset": self.training_dataset,
            "validation_dataset": self.validation_dataset,
        }
        return {name: path for name, path in given.items() if path is not None}


def _text(value: object) -> str:
    return str(value).strip()


def parse_int(name: str, value: object, minimum: int | None = None) -> int:
    text = _text(value)
    try:
        number = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            as_float = math.nan
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise InvalidParameterError(
                f"'{text}' is not an integer.", f"Give {name} as a whole number.", subject=f"Parameter {name}"
            ) from None
        number = int(as_float)
    if minimum is not None and number < minimum:
        raise InvalidParameterError(
            f"{number} is out of range: it must be at least {minimum}.",
            f"Set {name} to {minimum} or more.",
            subject=f"Parameter {name}",
        )
    return number


def _unset(value: object) -> bool:
    """An optional input left unset: absent, or empty text."""
    return value is None or _text(value) == ""


def parse_optional_int(name: str, value: object, minimum: int | None = None) -> int | None:
    """An optional integer: an unset optional input means None."""
    return None if _unset(value) else parse_int(name, value, minimum)


def parse_learning_rate(value: object) -> float:
    text = _text(value)
    try:
        number = float(text)
    except ValueError:
        raise InvalidParameterError(
            f"'{text}' is not a number.",
            "Give the learning rate as a positive number such as 0.001.",
            subject="Parameter learning_rate",
        ) from None
    if not math.isfinite(number) or number < DOUBLE_EPSILON:
        raise InvalidParameterError(
            f"{text} is out of range: the learning rate must be a finite number of at least {DOUBLE_EPSILON} "
            "(double.Epsilon).",
            "Use a positive value; 0.001 to 0.1 suits SGD on most image datasets.",
            subject="Parameter learning_rate",
        )
    return number


def parse_bool(name: str, value: object) -> bool:
    text = _text(value).lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off", ""):
        return False
    raise InvalidParameterError(
        f"'{value}' is not a boolean.", f"Set {name} to true or false.", subject=f"Parameter {name}"
    )


def parse_validation_fraction(value: object) -> float:
    low, high = VALIDATION_FRACTION_RANGE
    return parse_bounded_float(
        "validation_fraction", value, low, high, "0.2 holds out a fifth; or connect a validation dataset."
    )


def parse_crop_ratio(value: object) -> float | None:
    """An optional ratio: an unset optional input means None."""
    if _unset(value):
        return None
    low, high = CROP_RATIO_RANGE
    return parse_bounded_float("crop_ratio", value, low, high, "1.14 is what ImageNet models are validated with.")


def parse_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    text = _text(value).lower()
    if text not in choices:
        raise InvalidParameterError(
            f"'{_text(value)}' is not one of {', '.join(choices)}.",
            f"Set {name} to one of {', '.join(choices)}.",
            subject=f"Parameter {name}",
        )
    return text


def parse_bounded_float(name: str, value: object, low: float, high: float, hint: str) -> float:
    text = _text(value)
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not low <= number <= high:  # NaN fails both
        raise InvalidParameterError(
            f"'{text}' is out of range: {name} must be a number from {low} to {high}.",
            f"Set {name} between {low} and {high}; {hint}",
            subject=f"Parameter {name}",
        )
    return number


def recipe_from_arguments(args: argparse.Namespace) -> Recipe:
    return Recipe(
        optimizer=parse_choice("optimizer", args.optimizer, OPTIMIZERS),
        label_smoothing=parse_bounded_float(
            "label_smoothing", args.label_smoothing, 0.0, MAX_LABEL_SMOOTHING, "0.1 is the usual value."
        ),
        warmup_epochs=parse_bounded_float(
            "warmup_epochs", args.warmup_epochs, 0.0, math.inf, "it may be a fraction, such as 0.5."
        ),
        class_weighting=parse_choice("class_weighting", args.class_weighting, CLASS_WEIGHTINGS),
        augmentation=parse_choice("augmentation", args.augmentation, AUGMENTATIONS),
        gradient_accumulation=parse_int("gradient_accumulation", args.gradient_accumulation, 1),
        freeze_epochs=parse_int("freeze_epochs", args.freeze_epochs, 0),
        ema_decay=parse_bounded_float("ema_decay", args.ema_decay, 0.0, MAX_EMA_DECAY, "0.999 is usual; 0 is off."),
    )


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Recipe()
    parser.add_argument("--optimizer", default=defaults.optimizer, help=" or ".join(OPTIMIZERS))
    parser.add_argument("--label-smoothing", default=str(defaults.label_smoothing), help="0 to 0.5")
    parser.add_argument("--warmup-epochs", default=str(defaults.warmup_epochs), help="linear warmup, in epochs")
    parser.add_argument("--class-weighting", default=defaults.class_weighting, help=", ".join(CLASS_WEIGHTINGS))
    parser.add_argument("--augmentation", default=defaults.augmentation, help=", ".join(AUGMENTATIONS))
    parser.add_argument("--gradient-accumulation", default=str(defaults.gradient_accumulation), help="batches a step")
    parser.add_argument("--ema-decay", default=str(defaults.ema_decay), help="weights' moving average; 0: off")
    parser.add_argument("--freeze-epochs", default=str(defaults.freeze_epochs), help="epochs of the head alone")


def path_argument(text: str) -> Path:
    """A folder given on the command line. Empty text (an unset variable in a script) would silently mean the
    current folder, so it is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset variable?); give a folder")
    return Path(text)


def settings_from_arguments(args: argparse.Namespace) -> Settings:
    """Settings from parsed command-line text, every value checked against its bounds."""
    minimum = {name: bound for name, (_, bound) in DESIGNER_PARAMETERS.items()}
    return Settings(
        untrained_model=Path(args.untrained_model),
        training_dataset=Path(args.training_dataset),
        validation_dataset=Path(args.validation_dataset) if args.validation_dataset is not None else None,
        trained_model=Path(args.trained_model),
        epochs=parse_int("epochs", args.epochs, minimum["epochs"]),
        batch_size=parse_int("batch_size", args.batch_size, minimum["batch_size"]),
        learning_rate=parse_learning_rate(args.learning_rate),
        random_seed=parse_int("random_seed", args.random_seed),
        patience=parse_int("patience", args.patience, minimum["patience"]),
        image_size=parse_optional_int("image_size", args.image_size, MIN_IMAGE_SIZE),
        crop_ratio=parse_crop_ratio(args.crop_ratio),
        num_workers=parse_optional_int("num_workers", args.num_workers, MIN_WORKERS),
        max_image_size=parse_int("max_image_size", args.max_image_size, MIN_IMAGE_SIZE),
        validation_fraction=parse_validation_fraction(args.validation_fraction),
        recipe=recipe_from_arguments(args),
    )
