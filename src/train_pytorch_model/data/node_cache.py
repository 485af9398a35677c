"""One decoded cache per node, built by all the node's processes together.

Under DDP each process used to decode the whole dataset into a cache of its own: eight processes on an
8-GPU node put it in memory eight times (or wrote it to the scratch disk eight times) and decoded it eight
times over on the same cores. Here the node's processes share one file: the first one decides once, for all,
where it lives (shared memory when it fits half of the node's available memory and /dev/shm; the scratch disk
otherwise, where the page cache still holds it once for every process) and creates it; each process decodes
every n-th image into its own rows; they exchange what they skipped; the first one moves the kept rows
together; then every process maps the whole array read-only, and the file's name is removed at once, so that
the kernel frees it when the last process ends, however it ends. A process killed during the decode leaves
the file behind: the next job's first process removes every cache whose creator is gone (caches are never
reused, only removed).

The node's processes are found by torchrun's layout, which Azure ML's PyTorch distribution uses too: the
ranks of a node are consecutive, from rank - local_rank.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..disk_space import free_bytes
from ..errors import ComponentError
from ..formats.image_directory import ImageRecord
from .cache import (
    MAX_BAD_FRACTION,
    DecodedImages,
    compact,
    create_reserved_file,
    decode_dataset,
    decode_rows,
    finish_decoded,
    memory_budget_bytes,
)
from .decode_progress import DecodeProgress
from .images import Resize

log = logging.getLogger(__name__)

SHARED_MEMORY = Path("/dev/shm")
PREFIX = "train-pytorch-model-cache-"


class NodeProcesses(Protocol):
    """The processes of this node: this one's place among them, and a way to exchange small values."""

    local_rank: int
    local_world_size: int

    def gather_on_node(self, value: Any) -> list[Any]: ...


def decode_on_node(
    records: Sequence[ImageRecord],
    class_to_idx: dict[str, int],
    resize: Resize,
    subject: str,
    node: NodeProcesses,
    *,
    workers: int,
    memory_budget: int | None = None,
    disk_folder: Path | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    root: Path | None = None,
) -> DecodedImages:
    """decode_dataset for the node's processes together; every one of them gets the same DecodedImages."""
    if not records:  # nothing to share: the same error for every process
        return decode_dataset(records, class_to_idx, resize, subject, workers=workers, root=root)
    shape = (len(records), 3, *resize.size)
    created = _create_on_first(node, shape, memory_budget, disk_folder, subject)
    path, where = _agree(node, created)
    rows = range(node.local_rank, len(records), node.local_world_size)
    share = f" (this process's share of {len(records)}, decoded by {node.local_world_size} processes)"
    progress = DecodeProgress(subject, len(rows), enabled=node.local_rank == 0, share=share)
    writable = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    mine = decode_rows(writable, records, rows, resize, workers, progress)
    skipped = {row: why for part in node.gather_on_node(mine) for row, why in part.items()}
    kept = compact(writable, sorted(skipped)) if node.local_rank == 0 else len(records) - len(skipped)
    writable.flush()
    del writable
    node.gather_on_node(None)  # every row in its final place before anybody reads
    images = _map_read_only(path, (kept, *shape[1:]))
    node.gather_on_node(None)  # everybody has it mapped: its name can go
    if node.local_rank == 0:
        path.unlink(missing_ok=True)
    decoded = finish_decoded(images, records, class_to_idx, skipped, subject, max_bad_fraction, root)
    decoded.where = where
    seconds = max(node.gather_on_node(progress.finish()))  # the node's decode ends with its slowest process
    decoded.decode_seconds = seconds
    return decoded


def _create_on_first(
    node: NodeProcesses, shape: tuple[int, ...], memory_budget: int | None, disk_folder: Path | None, subject: str
) -> tuple[str, str] | tuple[str, str, str, str] | None:
    """On the node's first process: the cache file, created at its full size. ("path", where) or, when it
    cannot be made, the error's (class name, what, how to fix, subject), for every process to raise alike."""
    if node.local_rank != 0:
        return None
    nbytes = int(np.prod(shape))
    budget = memory_budget_bytes() if memory_budget is None else memory_budget
    in_memory = nbytes <= budget and SHARED_MEMORY.is_dir() and nbytes <= free_bytes(SHARED_MEMORY)
    disk = Path(disk_folder or tempfile.gettempdir())
    folder = SHARED_MEMORY if in_memory else disk
    remove_stale_caches([SHARED_MEMORY, disk])
    where = "shared memory" if in_memory else "disk, shared"
    log.info("%s: one cache of %.2f GB for the node's %d processes, in %s.", subject, nbytes / 1e9,
             node.local_world_size, "shared memory" if in_memory else f"'{folder}' (memory-mapped)")  # fmt: skip
    path = folder / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}.u8"
    try:
        create_reserved_file(path, nbytes, "the decoded images' cache shared by the node's processes")
    except ComponentError as error:
        return type(error).__name__, error.what, error.how_to_fix, error.subject
    return str(path), where


def _agree(node: NodeProcesses, created: Any) -> tuple[Path, str]:
    """Every process of the node learns the first one's file, or raises the first one's error."""
    first = node.gather_on_node(created)[0]
    if len(first) == 4:
        from .. import errors

        name, what, how_to_fix, subject = first
        raise getattr(errors, name)(what, how_to_fix, subject=subject)
    return Path(first[0]), first[1]


def _map_read_only(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    if shape[0] == 0:
        return np.empty(shape, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def remove_stale_caches(folders: Sequence[Path]) -> list[Path]:
    """Remove the caches whose creating process is gone (killed during a decode); returns them."""
    removed = []
    for folder in dict.fromkeys(folders):
        with contextlib.suppress(OSError):
            for path in folder.glob(f"{PREFIX}*.u8"):
                if not _alive(path.name[len(PREFIX) :].split("-", 1)[0]):
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed.append(path)
    if removed:
        log.info("Removed %d cache file(s) left by killed jobs.", len(removed))
    return removed


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except ValueError:
        return True  # not ours to judge
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
