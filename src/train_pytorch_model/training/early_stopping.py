"""When training stops: early stopping on the validation loss, and divergence (a loss that is no longer a
number), decided in one place from each epoch's losses."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs in a row without a new lowest validation loss, or at once when a loss is NaN
    or infinite (the run diverged: the best epoch so far is what remains).

    Compared with the best loss so far, not with the previous epoch, so a slow drift upward after a good
    epoch counts against the run."""

    patience: int
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    diverged_epoch: int | None = None  # never checkpointed: a diverged run ends there

    def update(self, epoch: int, loss: float, train_loss: float = 0.0) -> bool:
        """Record an epoch's validation (and training) loss; True when it is the new best."""
        if not (math.isfinite(loss) and math.isfinite(train_loss)):
            self.diverged_epoch = epoch
            return False
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None

    @property
    def should_stop(self) -> bool:
        return self.diverged or self.bad_epochs >= self.patience

    @property
    def stop_reason(self) -> str:
        if self.diverged:
            return f"loss diverged at epoch {self.diverged_epoch}"
        if self.bad_epochs >= self.patience:
            return f"early stop: no lower validation loss for {self.patience} epochs after epoch {self.best_epoch}"
        return "completed all epochs"

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss, self.best_epoch, self.bad_epochs = (
            state["best_loss"],
            state["best_epoch"],
            state["bad_epochs"],
        )
