"""The full training state, saved after every epoch so that a preempted job resumes where it stopped.

It lives in a hidden subfolder of the output ('.checkpoint'), which ModelDirectory readers never look at, and
is written atomically (a temporary file, then a rename) so that a kill mid-write leaves the previous one.

The state is copied on the training thread (a memory copy: the next step changes the weights in place) and
written by a background thread while the next epoch trains; a save waits for the one before it, so that the
files land in order and there is never more than one write in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..disk_space import disk_full_reported
from ..errors import ComponentError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
RESUME_FIX = (
    "The last complete checkpoint is kept: free space on that disk and run the same job again, and it resumes "
    "from there."
)


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
    try:
        torch.save(state, partial)
        with open(partial, "rb") as stream:
            os.fsync(stream.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)  # the space it took; the last complete checkpoint stays as it was
        raise
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
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self.skipped: list[int] = []  # epochs not saved because a write was still running

    def save(
        self,
        epoch: int,
        stateful: Mapping[str, Stateful],
        state: FitState,
        mlflow_run_id: str | None,
        best_is_current: bool = False,
    ) -> bool:
        """Copy the state now; write it in the background (wait() or remove() make sure it is on disk).
        best_is_current: this epoch is the best so far, so its best weights are the model's: stored once.

        While the previous epoch's write is still running (a large model whose epochs are shorter than its
        checkpoint's write), this epoch is not saved: waiting would stall training every epoch, and a resume
        then starts from the checkpoint being written, one epoch earlier. Returns whether it was saved."""
        if not self.writer:
            return False
        if self._pending is not None and not self._pending.done():
            self.skipped.append(epoch)
            log.debug("Epoch %d not checkpointed: the checkpoint of an earlier epoch is still being written.", epoch)
            return False
        self.wait()
        snapshot = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            **{name: _copied(item.state_dict()) for name, item in stateful.items()},
            "rng": rng_state(),
            "history": [dict(row) for row in state.history],
            # Replaced, never changed in place, by a new best epoch: no copy needed.
            "best_state": None if best_is_current else state.best_state,
            "best_is_model": best_is_current,
            "mlflow_run_id": mlflow_run_id,
        }
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="checkpoint", initializer=_yield_to_training
            )
        self._pending = self._executor.submit(save_checkpoint, self.folder, snapshot)
        return True

    def wait(self) -> None:
        """Until the last save is on disk; its error, if the write failed, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with disk_full_reported(self.folder, "the checkpoint", fix=RESUME_FIX):
                pending.result()

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
            best_state=saved["model"] if saved.get("best_is_model") else saved["best_state"],
            next_epoch=saved["epoch"] + 1,
            resumed_from=saved["epoch"],
            resumed_run_id=saved.get("mlflow_run_id"),
        )

    def remove(self) -> None:
        """The run is over and its output written: no write may land after this, and the folder goes. A write
        still in flight that fails no longer matters (the checkpoint was obsolete): it does not fail the job."""
        try:
            self.close()
        except (OSError, RuntimeError, ComponentError) as error:
            log.debug("The last checkpoint's write failed after the output was written (%s); it is removed.", error)
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        """Let the write in flight finish (a kill mid-write would leave the one before it) and stop the writer.
        Called on every way out of a run; an error of the write is raised unless another one is on its way."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


def _yield_to_training() -> None:
    """The writer thread runs at the lowest priority. Training keeps every core busy (torch's threads wait for
    each other at every parallel region), so a writer on an equal footing slows the whole step, not one core's
    share of it; at the lowest priority it writes in the gaps instead. Linux sets a priority per thread."""
    import threading

    # Not Linux, or not allowed: the write only competes more.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _copied(value: Any) -> Any:
    """A copy of a state dict that the next training step cannot change: tensors copied to the CPU (the step
    updates weights and momentum in place), containers rebuilt, plain values kept."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_copied(item) for item in value)
    return value
