"""The decode-once cache: from listed image files to one uint8 N x 3 x H x W array.

Every image is decoded and resized exactly once, into one array (in memory, or memory-mapped on disk when it
would not fit the memory budget). Epochs then only index that array (batches.py): no per-image Python work and
no per-image decode.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..disk_space import disk_full_reported, require_free_space
from ..errors import InvalidDatasetError
from ..formats.image_directory import ImageRecord
from .images import BadImageError, Resize, decode_image

log = logging.getLogger(__name__)

# Share of unreadable files tolerated before a dataset is refused as a whole.
MAX_BAD_FRACTION = 0.1


@dataclass
class DecodedImages:
    images: torch.Tensor  # uint8, N x 3 x H x W
    labels: torch.Tensor  # int64, N
    skipped: list[tuple[str, str]] = field(default_factory=list)
    memory_mapped: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


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
    alone: stretched to it); unreadable files are skipped and named."""
    resize = resize if isinstance(resize, Resize) else Resize(tuple(resize))
    count = len(records)
    height, width = resize.size
    nbytes = count * 3 * height * width
    budget = memory_budget_bytes() if memory_budget is None else memory_budget
    memory_mapped = nbytes > budget
    if memory_mapped:
        array = _disk_backed_array((count, 3, height, width), scratch)
        log.info(
            "%s: %.1f GB of decoded images exceed the memory budget; memory-mapping them.",
            subject,
            nbytes / 1e9,
        )
    else:
        array = np.empty((count, 3, height, width), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    skipped: list[tuple[str, str]] = []

    def decode(record: ImageRecord) -> np.ndarray | str:
        try:
            return decode_image(record.path, resize)
        except BadImageError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"

    kept = 0
    chunk = 512
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for start in range(0, count, chunk):
            batch = records[start : start + chunk]
            for record, result in zip(batch, pool.map(decode, batch), strict=True):
                if isinstance(result, str):
                    name = _display_name(record.path, root)
                    skipped.append((name, result))
                    log.warning("%s: skipping '%s': %s", subject, name, result)
                    continue
                array[kept] = result.transpose(2, 0, 1)
                labels[kept] = class_to_idx[record.label]
                kept += 1

    _check_bad_share(records, skipped, kept, subject, max_bad_fraction, class_to_idx, labels[:kept])
    images = torch.from_numpy(array[:kept] if memory_mapped else np.ascontiguousarray(array[:kept]))
    return DecodedImages(
        images=images,
        labels=torch.from_numpy(labels[:kept].copy()),
        skipped=skipped,
        memory_mapped=memory_mapped,
    )


def _disk_backed_array(shape: tuple[int, ...], scratch: Path | None) -> np.ndarray:
    """A uint8 array on the scratch disk, its blocks reserved up front: a memory-mapped file whose disk fills up
    kills the process (SIGBUS) at the first page that cannot be stored, while a reservation that cannot be made
    is an error the job can report."""
    folder = Path(scratch) if scratch is not None else Path(tempfile.gettempdir())
    nbytes = int(np.prod(shape))
    what = "the decoded images' cache (larger than the memory budget, so kept on disk)"
    require_free_space(folder, nbytes, what)
    descriptor, name = tempfile.mkstemp(prefix="decoded-", suffix=".u8", dir=folder)
    try:
        with disk_full_reported(folder, what, needed=nbytes):
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(descriptor, 0, nbytes)
            else:
                os.ftruncate(descriptor, nbytes)
        return np.memmap(name, dtype=np.uint8, mode="r+", shape=shape)
    finally:
        os.close(descriptor)
        os.unlink(name)  # the mapping stays valid; the file disappears with the process


def _display_name(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


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
