"""The full training state, saved after every epoch so that a preempted job resumes where it stopped.

It lives in a hidden subfolder of the output ('.checkpoint'), which ModelDirectory readers never look at, and
is written atomically (a temporary file, then a rename) so that a kill mid-write leaves the previous one.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"


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


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class FitState:
    """What the epoch loop carries from one epoch to the next, and what a resume restores."""

    history: list[dict] = field(default_factory=list)  # one row of metrics per epoch
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights, on the CPU
    next_epoch: int = 1
    resumed_from: int = 0  # the epoch the checkpoint held; 0 for a fresh run
    resumed_run_id: str | None = None  # the MLflow run of the interrupted job
    first_step_at: float | None = None  # perf_counter() of the first training step (not checkpointed)

    @property
    def last_epoch(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0


class Checkpoint:
    """The run's resumable state in the output's hidden folder: saved by the first process after every epoch,
    restored only when its fingerprint (the run record's) matches this run's."""

    def __init__(self, folder: Path, fingerprint: str, writer: bool) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.writer = writer  # every rank takes the same decisions; only the first one writes

    def save(self, epoch: int, stateful: Mapping[str, Stateful], state: FitState, mlflow_run_id: str | None) -> None:
        if not self.writer:
            return
        saved = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            **{name: item.state_dict() for name, item in stateful.items()},
            "rng": rng_state(),
            "history": state.history,
            "best_state": state.best_state,
            "mlflow_run_id": mlflow_run_id,
        }
        save_checkpoint(self.folder, saved)

    def restore(self, stateful: Mapping[str, Stateful]) -> FitState:
        """Load the saved state into the stateful objects; a fresh FitState when there is nothing to resume."""
        saved = load_checkpoint(self.folder)
        if saved is None:
            return FitState()
        if saved.get("fingerprint") != self.fingerprint:
            log.warning("Ignoring the checkpoint in %s: it belongs to other data or parameters.", self.folder)
            return FitState()
        for name, item in stateful.items():
            item.load_state_dict(saved[name])
        restore_rng_state(saved["rng"])
        log.info("Resuming from the checkpoint of epoch %d.", saved["epoch"])
        return FitState(
            history=saved["history"],
            best_state=saved["best_state"],
            next_epoch=saved["epoch"] + 1,
            resumed_from=saved["epoch"],
            resumed_run_id=saved.get("mlflow_run_id"),
        )

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
