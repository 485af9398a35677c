"""The decode-once cache: from listed image files to one uint8 N x 3 x H x W array.

Every image is decoded and resized exactly once, into one array (in memory, or memory-mapped on disk when it
would not fit the memory budget). Epochs then only index that array (batches.py): no per-image Python work and
no per-image decode.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..disk_space import disk_full_reported, require_free_space
from ..errors import InvalidDatasetError
from ..formats.image_directory import ImageRecord
from ..settings import MAX_BAD_FRACTION
from .decode_progress import DecodeProgress
from .images import BadImageError, Resize, decode_image

log = logging.getLogger(__name__)


@dataclass
class DecodedImages:
    images: torch.Tensor  # uint8, N x 3 x H x W
    labels: torch.Tensor  # int64, N
    skipped: list[tuple[str, str]] = field(default_factory=list)
    decode_seconds: float = 0.0  # the wall time of the decode (a node's processes together: the slowest's)
    where: str = "memory"  # memory, disk (memory-mapped), or a node's shared memory or disk

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def memory_mapped(self) -> bool:
        return self.where != "memory"


def process_cores(local_processes: int = 1) -> int:
    """This process's share of the cores it may run on (its CPU affinity, which container limits set, not the
    machine's count), among the node's processes: for its torch threads and its decoding threads."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable // max(1, local_processes))


def memory_budget_bytes(fraction: float = 0.5) -> int:
    """A fraction of the memory still available (cgroup limits are not exceeded by MemAvailable here)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * fraction)
    except OSError:
        pass
    return 2 << 30


def decode_dataset(
    records: Sequence[ImageRecord],
    class_to_idx: dict[str, int],
    resize: Resize | tuple[int, int],
    subject: str,
    *,
    workers: int | None = None,
    memory_budget: int | None = None,
    scratch: Path | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    root: Path | None = None,
) -> DecodedImages:
    """Decode every record once into a uint8 N x 3 x H x W tensor, resized as resize says (a (height, width)
    alone: stretched to it); unreadable files are skipped and named. One process alone; node_cache.py builds
    one cache for all the processes of a node."""
    resize = Resize.of(resize)
    shape = (len(records), 3, *resize.size)
    nbytes = int(np.prod(shape))
    budget = memory_budget_bytes() if memory_budget is None else memory_budget
    memory_mapped = nbytes > budget
    if memory_mapped:
        log.info("%s: %.1f GB of decoded images exceed the memory budget; memory-mapping them.", subject, nbytes / 1e9)
        array = _disk_backed_array(shape, scratch)
    else:
        array = np.empty(shape, dtype=np.uint8)
    progress = DecodeProgress(subject, len(records))
    skipped = decode_rows(array, records, range(len(records)), resize, workers or process_cores(), progress)
    kept = compact(array, sorted(skipped))
    decoded = finish_decoded(array[:kept], records, class_to_idx, skipped, subject, max_bad_fraction, root)
    decoded.where = "disk" if memory_mapped else "memory"
    decoded.decode_seconds = progress.finish()
    return decoded


def decode_rows(
    array: np.ndarray,
    records: Sequence[ImageRecord],
    rows: Sequence[int],
    resize: Resize,
    workers: int,
    progress: DecodeProgress,
) -> dict[int, str]:
    """Decode records[row] into array[row] for each of rows, in a thread pool (decoding releases the GIL).
    Returns why each unreadable row was skipped; its place in the array is left as it was."""

    def decode(row: int) -> str | None:
        try:
            array[row] = decode_image(records[row].path, resize).transpose(2, 0, 1)
        except BadImageError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        return None

    skipped: dict[int, str] = {}
    chunk = 512
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(rows), chunk):
            batch = rows[start : start + chunk]
            for row, problem in zip(batch, pool.map(decode, batch), strict=True):
                if problem is not None:
                    skipped[row] = problem
            progress.advance(len(batch))
    return skipped


def compact(array: np.ndarray, skipped_rows: Sequence[int]) -> int:
    """Move the decoded rows down over the skipped ones, in order, in place; returns how many rows are kept.
    One slice copy per run of kept rows, so that a few bad files in a large dataset cost a few copies."""
    kept = 0
    for start, end in _runs_between(skipped_rows, len(array)):
        if start != kept:
            array[kept : kept + end - start] = array[start:end]  # overlapping: numpy buffers it
        kept += end - start
    return kept


def _runs_between(skipped_rows: Sequence[int], count: int) -> list[tuple[int, int]]:
    runs, start = [], 0
    for row in [*skipped_rows, count]:
        if row > start:
            runs.append((start, row))
        start = row + 1
    return runs


def finish_decoded(
    images: np.ndarray,
    records: Sequence[ImageRecord],
    class_to_idx: dict[str, int],
    skipped: dict[int, str],
    subject: str,
    max_bad_fraction: float,
    root: Path | None,
) -> DecodedImages:
    """The kept rows as tensors with their labels, once every unreadable file is named and counted."""
    named = [(records[row].name_in(root), why) for row, why in sorted(skipped.items())]
    for name, why in named:
        log.warning("%s: skipping '%s': %s", subject, name, why)
    labels = np.array([class_to_idx[r.label] for i, r in enumerate(records) if i not in skipped], dtype=np.int64)
    _check_bad_share(records, named, len(labels), subject, max_bad_fraction, class_to_idx, labels)
    tensor = _as_tensor(images if isinstance(images, np.memmap) else np.ascontiguousarray(images))
    return DecodedImages(images=tensor, labels=torch.from_numpy(labels), skipped=named)


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over the array, also over a read-only mapping (a node's shared cache): training only gathers
    rows out of it (index_select copies), never writes, so torch's warning about those does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _disk_backed_array(shape: tuple[int, ...], scratch: Path | None) -> np.ndarray:
    """A uint8 array on the scratch disk, its blocks reserved (see create_reserved_file)."""
    folder = Path(scratch) if scratch is not None else Path(tempfile.gettempdir())
    what = "the decoded images' cache (larger than the memory budget, so kept on disk)"
    path = create_reserved_file(folder / f"decoded-{uuid.uuid4().hex[:12]}.u8", int(np.prod(shape)), what)
    try:
        return np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    finally:
        path.unlink()  # the mapping stays valid; the file disappears with the process


def create_reserved_file(path: Path, nbytes: int, what: str) -> Path:
    """A new file of nbytes with its blocks reserved up front: a memory-mapped file whose disk (or /dev/shm)
    fills up kills the process (SIGBUS) at the first page that cannot be stored, while a reservation that
    cannot be made is an error the job can report. Nothing is left behind when it cannot be made."""
    require_free_space(path.parent, nbytes, what)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with disk_full_reported(path.parent, what, needed=nbytes):
            if hasattr(os, "posix_fallocate") and nbytes:
                os.posix_fallocate(descriptor, 0, nbytes)
            else:
                os.ftruncate(descriptor, nbytes)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(descriptor)
    return path


def _check_bad_share(records, skipped, kept, subject, max_bad_fraction, class_to_idx, labels) -> None:
    if not records:
        raise InvalidDatasetError("it lists no image file.", "Give a dataset with at least one image.", subject=subject)
    if kept == 0:
        raise InvalidDatasetError(
            f"none of its {len(records)} image files could be decoded (first: {skipped[0][0]}: {skipped[0][1]}).",
            "Check that the files are real images (JPEG, PNG, BMP, TIFF, WebP) and were uploaded completely.",
            subject=subject,
        )
    if len(skipped) > max_bad_fraction * len(records):
        examples = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
        raise InvalidDatasetError(
            f"{len(skipped)} of its {len(records)} image files cannot be decoded, more than "
            f"{max_bad_fraction:.0%} (for example {examples}).",
            "Remove or replace the broken files; the log lists each of them.",
            subject=subject,
        )
    present_before = {class_to_idx[r.label] for r in records}
    present_after = set(np.unique(labels).tolist())
    emptied = sorted(present_before - present_after)
    if emptied:
        names = {v: k for k, v in class_to_idx.items()}
        raise InvalidDatasetError(
            f"every image of the class(es) {', '.join(repr(names[i]) for i in emptied)} is unreadable, "
            "so the class would have no example.",
            "Replace the broken files of that class.",
            subject=subject,
        )
