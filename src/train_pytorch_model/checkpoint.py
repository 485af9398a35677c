"""The full training state, saved after every epoch so that a preempted job resumes where it stopped.

It lives in a hidden subfolder of the output ('.checkpoint'), which ModelDirectory readers never look at, and
is written atomically (a temporary file, then a rename) so that a kill mid-write leaves the previous one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINT_DIR = ".checkpoint"
CHECKPOINT_FILE = "state.pt"


def fingerprint(settings: dict[str, Any]) -> str:
    """A digest of everything that must match for a checkpoint to be resumed (parameters, data listing)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (weights files reach hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain Python values, so that the checkpoint loads weights-only."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
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
        # Weights-only: the output folder may have been written by someone else, and nothing in it may run.
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or unsafe checkpoint must not stop the job: start afresh
        log.warning("The checkpoint %s cannot be read safely (%s); training starts afresh.", target, exc)
        return None
    return state if isinstance(state, dict) else None
