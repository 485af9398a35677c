"""Checking the component's parameters: the Azure ML client does not enforce min/max, so we do."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .errors import InvalidParameterError

DOUBLE_EPSILON = 5e-324


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


def path_argument(text: str) -> Path:
    """A folder given on the command line. Empty text (an unset variable in a script) would silently mean the
    current folder, so it is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset variable?); give a folder")
    return Path(text)
