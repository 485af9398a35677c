"""One process of a node's shared decode, for tests/data/test_node_cache.py:

    python node_cache_worker.py RANK WORLD_SIZE INIT_FILE JOB.json OUT_DIR

JOB.json: records ([path, label]), class_to_idx, size, timeout, and optionally memory_budget, disk_folder and
die_rank (that process exits abruptly after decoding its first image, as a killed one would). Writes the
decoded images and labels, the skipped files, where the cache lived, and the proportional set size (Pss) of
the cache's mapping in this process, measured while the others still hold theirs.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch.distributed as dist

from train_pytorch_model.data import cache
from train_pytorch_model.data.images import Resize
from train_pytorch_model.data.node_cache import PREFIX, decode_on_node
from train_pytorch_model.formats.image_directory import ImageRecord
from train_pytorch_model.training.distributed import DistributedContext


def cache_pss_kib() -> int:
    """The Pss of this process's mappings of a node cache: the shared pages divided among their mappers."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and PREFIX in fields[5]
        elif inside and fields[0] == "Pss:":
            total += int(fields[1])
    return total


def die_after_one_image() -> None:
    decode = cache.decode_image

    def once(*args, **kwargs):
        result = decode(*args, **kwargs)
        os._exit(17)
        return result

    cache.decode_image = once


def main(rank: int, world_size: int, init_file: str, job_file: Path, out: Path) -> None:
    job = json.loads(job_file.read_text())
    timeout = timedelta(seconds=job["timeout"])
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timeout)  # fmt: skip
    node = DistributedContext(world_size, rank, rank, world_size)
    if job.get("die_rank") == rank:
        die_after_one_image()
    records = [ImageRecord(Path(path), label) for path, label in job["records"]]
    folder = Path(job["disk_folder"]) if job.get("disk_folder") else None
    decoded = decode_on_node(records, job["class_to_idx"], Resize(tuple(job["size"])), "Training dataset", node,
                             workers=1, memory_budget=job.get("memory_budget"), disk_folder=folder)  # fmt: skip
    touched = int(decoded.images.sum())  # every page of the mapping in this process
    node.gather_on_node(None)  # all processes hold every page
    pss = cache_pss_kib()
    node.gather_on_node(None)  # all measured before any lets go
    np.save(out / f"images{rank}.npy", decoded.images.numpy())
    report = {"labels": decoded.labels.tolist(), "skipped": decoded.skipped, "where": decoded.where,
              "pss_kib": pss, "touched": touched, "decode_seconds": decoded.decode_seconds}  # fmt: skip
    (out / f"report{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))
