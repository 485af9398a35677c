"""The full training state, saved after every epoch so that a preempted job resumes where it stopped.

It lives in a hidden subfolder of the output ('.checkpoint'), which ModelDirectory readers never look at, and
is written atomically (a temporary file, then a rename) so that a kill mid-write leaves the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = ".checkpoint"
CHECKPOINT_FILE = "state.pt"


def fingerprint(settings: dict[str, Any]) -> str:
    """A digest of everything that must match for a checkpoint to be resumed (parameters, data listing)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / CHECKPOINT_FILE
    partial = folder / f"{CHECKPOINT_FILE}.partial"
    torch.save(state, partial)
    with open(partial, "rb") as stream:
        os.fsync(stream.fileno())
    os.replace(partial, target)


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none or it is unreadable (then training starts afresh)."""
    target = folder / CHECKPOINT_FILE
    if not target.is_file():
        return None
    try:
        # Written by this job into its own output; it holds NumPy and Python RNG states beside tensors.
        return torch.load(target, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged checkpoint must not stop the job: start afresh
        return None
