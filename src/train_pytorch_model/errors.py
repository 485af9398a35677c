"""Errors a user can act on, named as in the designer's documentation.

Each error carries the input it concerns, what is wrong and how to fix it, and an exit code of its own,
so that a pipeline step fails with a message a user understands instead of a Python traceback.
"""

from __future__ import annotations

import re


class ComponentError(Exception):
    """Base of every error that is the user's to fix. Printed without a traceback."""

    exit_code = 2
    name = "ComponentError"

    def __init__(self, what: str, how_to_fix: str = "", *, subject: str = "") -> None:
        self.what = what
        self.how_to_fix = how_to_fix
        self.subject = subject
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [f"{self.subject}: {self.what}" if self.subject else self.what]
        if self.how_to_fix:
            parts.append(self.how_to_fix)
        return " ".join(part.rstrip() for part in parts)


class InvalidParameterError(ComponentError):
    """A parameter is out of range or malformed."""

    exit_code = 3
    name = "InvalidParameterError"


class InvalidModelDirectoryError(ComponentError):
    """The untrained (or trained) model folder cannot be used."""

    exit_code = 4
    name = "InvalidModelDirectoryError"


class NotLabeledDatasetError(ComponentError):
    """The dataset has images but no labels."""

    exit_code = 5
    name = "NotLabeledDatasetError"


class InvalidDatasetError(ComponentError):
    """The dataset cannot be read or cannot be used for classification training."""

    exit_code = 6
    name = "InvalidDatasetError"


class TrainingDivergedError(ComponentError):
    """The loss became NaN or infinite."""

    exit_code = 7
    name = "TrainingDivergedError"


class ModuleOutOfMemoryError(ComponentError):
    """The device ran out of memory."""

    exit_code = 8
    name = "ModuleOutOfMemoryError"


class DistributedSetupError(ComponentError):
    """The processes of a distributed job cannot form their group (missing variables, a process that never
    joins)."""

    exit_code = 9
    name = "DistributedSetupError"


class InsufficientDiskSpaceError(ComponentError):
    """A disk cannot hold what the job must write (the checkpoint, the model, the decoded cache, an archive's
    contents): refused before the work when the size is known, or reported when the disk fills up anyway."""

    exit_code = 10
    name = "InsufficientDiskSpaceError"


def first_line(exc: BaseException, if_empty: str | None = None) -> str:
    """An exception's message for one line of a report: its first line (a library's message may go on with a
    graph dump or a traceback), without terminal colours, at most 300 characters; for an empty message
    if_empty, or the exception's type."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if not text:
        return type(exc).__name__ if if_empty is None else if_empty
    return text.splitlines()[0][:300]
