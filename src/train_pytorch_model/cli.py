"""What every command-line entry shares: logging set-up and turning user errors into a clear message and exit
code instead of a traceback (set TRAIN_PYTORCH_MODEL_DEBUG=1 to see the traceback too)."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable

from .errors import ComponentError

DEBUG_VARIABLE = "TRAIN_PYTORCH_MODEL_DEBUG"


def setup_logging() -> None:
    # Under torchrun every process runs this; the first one tells the story, the others only warn.
    first = os.environ.get("RANK", "0") in ("", "0")
    logging.basicConfig(
        level=logging.INFO if first else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "azure", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(body: Callable[[], None]) -> int:
    setup_logging()
    try:
        body()
    except ComponentError as error:
        sys.stdout.flush()
        if os.environ.get(DEBUG_VARIABLE):
            traceback.print_exc()
        print(f"{error.name}: {error.message}", file=sys.stderr)
        return error.exit_code
    return 0
