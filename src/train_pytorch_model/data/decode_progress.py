"""Progress of the decode, the one phase before the first step: on a large dataset it takes minutes, and a
job that says nothing for minutes looks hung. A line every 30 s (terminal and Azure's log alike: the lines are
few), and the rate and time at the end."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("train_pytorch_model")

# Seconds between two progress lines.
INTERVAL = 30.0


class DecodeProgress:
    def __init__(self, subject: str, total: int, *, enabled: bool = True, share: str = "") -> None:
        self.subject, self.total, self.enabled, self.share = subject, total, enabled, share
        self.done = 0
        self.started = time.perf_counter()
        self.last_line = self.started

    def advance(self, images: int) -> None:
        self.done += images
        now = time.perf_counter()
        if self.enabled and now - self.last_line >= INTERVAL and self.done < self.total:
            self.last_line = now
            rate = self.done / (now - self.started)
            log.info(
                "%s: decoded %d of %d images%s, %.0f images/s, %.0f s left.",
                self.subject,
                self.done,
                self.total,
                self.share,
                rate,
                (self.total - self.done) / rate,
            )

    def finish(self) -> float:
        """The seconds the decode took; says so once when it took long enough to have shown progress."""
        seconds = time.perf_counter() - self.started
        if self.enabled and seconds >= INTERVAL:
            log.info("%s: decoded %d images%s in %.0f s.", self.subject, self.done, self.share, seconds)
        return seconds
