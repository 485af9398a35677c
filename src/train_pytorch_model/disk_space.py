"""Disk space: refusing early what cannot fit, and a disk that fills up anyway reported as one clear error.

A full disk shows itself in several ways: OSError with ENOSPC (EDQUOT under a quota) from ordinary writes, and a
RuntimeError from torch.save's zip writer ('unexpected pos ...', 'file write failed'). Every writer of the
components goes through disk_full_reported, so that all of them end in InsufficientDiskSpaceError, naming the
folder, what was being written, how much it needed and how much is free. Where the size is known before the
work starts (the checkpoint and the model, the decoded cache, an archive's contents), it is checked first.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InsufficientDiskSpaceError

FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What torch.save's writer says when the file system refuses a write (it does not pass the errno on).
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "No space left")
SUBJECT = "Disk space"


def free_bytes(folder: Path) -> int:
    """Free bytes on the file system of folder, or of its nearest existing parent when it does not exist yet."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def size_text(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"


def require_free_space(folder: Path, needed: int, what: str, fix: str = "", subject: str = SUBJECT) -> None:
    """Refuse, before any of it is written, what needs more than the free space of folder's disk."""
    free = free_bytes(folder)
    if needed > free:
        raise InsufficientDiskSpaceError(
            f"{what} needs about {size_text(needed)} in '{folder}', but only {size_text(free)} are free there.",
            fix or _how_to_fix(),
            subject=subject,
        )


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in FULL_DISK_ERRNOS
    return isinstance(error, RuntimeError) and any(text in str(error) for text in TORCH_WRITE_FAILURES)


@contextmanager
def disk_full_reported(folder: Path, what: str, needed: int | None = None, fix: str = "") -> Iterator[None]:
    """Turn a full disk met while writing what into folder into InsufficientDiskSpaceError; any other error
    passes through unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):
            raise
        need = f"it needed about {size_text(needed)}; " if needed else ""
        raise InsufficientDiskSpaceError(
            f"the disk filled up while writing {what} in '{folder}' ({need}{size_text(free_bytes(folder))} are "
            "free now).",
            fix or _how_to_fix(),
            subject=SUBJECT,
        ) from error


def _how_to_fix() -> str:
    return (
        "Free space on that disk, or run on a compute (or write to a datastore) with more space; on Azure ML a "
        "larger VM size has a larger local disk."
    )
