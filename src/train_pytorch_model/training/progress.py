"""Showing a running epoch: a tqdm bar in a terminal, plain periodic lines in a log file (Azure ML's
std_log.txt), with loss, accuracy, images per second and time left.

The running loss lives on the device; it is read (one host sync) only when a line is actually printed.
"""

from __future__ import annotations

import sys
import time

import torch

# How often a line is written when the output is not a terminal, and how often a terminal bar refreshes.
LOG_INTERVAL_SECONDS = 30.0
BAR_INTERVAL_SECONDS = 0.5


class EpochProgress:
    def __init__(self, epoch: int, epochs: int, steps: int, batch_size: int, tty: bool | None = None) -> None:
        self.epoch, self.epochs, self.steps, self.batch_size = epoch, epochs, steps, batch_size
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.start = time.perf_counter()
        self.last = self.start
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, file=sys.stdout)

    def __call__(self, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        now = time.perf_counter()
        interval = BAR_INTERVAL_SECONDS if self.tty else LOG_INTERVAL_SECONDS
        if now - self.last < interval and step != self.steps:
            return
        self.last = now
        elapsed = now - self.start
        rate = seen / elapsed if elapsed > 0 else 0.0
        left = (self.steps - step) * self.batch_size / rate if rate > 0 else 0.0
        loss, accuracy = loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", img_s=f"{rate:.0f}", refresh=True)
        elif step != self.steps:
            print(
                f"  epoch {self.epoch}/{self.epochs} batch {step}/{self.steps} ({step / self.steps:.0%}): "
                f"loss {loss:.4f}, accuracy {accuracy:.3f}, {rate:.0f} img/s, {left:.0f} s left in the epoch",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunProgress:
    """The progress of a whole run: one EpochProgress per epoch on the process that shows it, and the moment of
    the first training step (reported as the time to the first step)."""

    def __init__(self, show: bool, epochs: int, steps: int, batch_size: int) -> None:
        self.show, self.epochs, self.steps, self.batch_size = show, epochs, steps, batch_size
        self.first_step_at: float | None = None
        self._epoch: EpochProgress | None = None

    def start_epoch(self, epoch: int) -> None:
        self._epoch = EpochProgress(epoch, self.epochs, self.steps, self.batch_size) if self.show else None

    def on_step(self, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        if self._epoch is not None:
            self._epoch(step, loss_sum, correct, seen)

    def end_epoch(self) -> None:
        if self._epoch is not None:
            self._epoch.close()
            self._epoch = None
