"""One decoded cache per node: two real processes (gloo) decode one shared cache together. It holds the same
bytes as one process's cache, the node's memory holds it once (the processes' proportional set sizes add up
to one cache, not two), and a process killed during the decode leaves nothing a later job would trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_digits_subset
from train_pytorch_model.data.cache import decode_dataset
from train_pytorch_model.data.images import Resize
from train_pytorch_model.data.node_cache import PREFIX, remove_stale_caches
from train_pytorch_model.formats.image_directory import ImageRecord

WORKER = Path(__file__).with_name("node_cache_worker.py")
SIZE = (96, 96)  # 40 images: 1.1 MB, hundreds of pages


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[ImageRecord]:
    root = write_digits_subset(tmp_path_factory.mktemp("digits"), classes=(0, 1), per_class=20)
    listed = [ImageRecord(path, path.parent.name) for path in sorted(root.rglob("*.png"))]
    listed[5].path.write_bytes(b"\x89PNG\r\n\x1a\n broken")  # skipped: the kept rows move down over it
    return listed


def run_node(records: list[ImageRecord], work: Path, processes: int = 2, **job) -> list[subprocess.CompletedProcess]:
    work.mkdir(parents=True, exist_ok=True)
    job_file = work / "job.json"
    job_file.write_text(json.dumps({"records": [[str(r.path), r.label] for r in records],
                                    "class_to_idx": {"0": 0, "1": 1}, "size": SIZE, "timeout": 30, **job}))  # fmt: skip
    init_file = work / "rendezvous"
    init_file.unlink(missing_ok=True)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    launched = [
        subprocess.Popen([sys.executable, str(WORKER), str(rank), str(processes), str(init_file), str(job_file),
                          str(work)], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(processes)
    ]  # fmt: skip
    finished = []
    for process in launched:
        output, _ = process.communicate(timeout=300)
        finished.append(subprocess.CompletedProcess(process.args, process.returncode, output))
    return finished


def single_process(records: list[ImageRecord]):
    return decode_dataset(records, {"0": 0, "1": 1}, Resize(SIZE), "Training dataset", workers=1)


def test_two_processes_build_one_cache_with_one_process_bytes_held_once(records, tmp_path):
    for result in run_node(records, tmp_path):
        assert result.returncode == 0, result.stdout[-3000:]
    alone = single_process(records)
    reports = [json.loads((tmp_path / f"report{rank}.json").read_text()) for rank in (0, 1)]
    for rank, report in enumerate(reports):
        assert np.array_equal(np.load(tmp_path / f"images{rank}.npy"), alone.images.numpy())
        assert report["labels"] == alone.labels.tolist()
        assert [tuple(item) for item in report["skipped"]] == alone.skipped and len(alone.skipped) == 1
    nbytes = alone.images.numel()
    held = sum(report["pss_kib"] for report in reports) * 1024
    # Two caches of their own would add up to 2 x nbytes; one shared cache, to nbytes (its pages split evenly).
    assert 0.9 * nbytes <= held <= 1.1 * nbytes + 2 * 4096, (held, nbytes)
    assert all(report["pss_kib"] * 1024 <= 0.6 * nbytes + 4096 for report in reports)
    assert {report["where"] for report in reports} <= {"shared memory", "disk, shared"}
    assert not list(Path("/dev/shm").glob(f"{PREFIX}{os.getpid()}*"))


def test_a_cache_left_by_a_killed_process_is_removed_not_trusted(records, tmp_path):
    disk = tmp_path / "scratch"
    disk.mkdir()
    # The second process dies after its first image; the first one gives up waiting for it.
    results = run_node(records, tmp_path / "killed", memory_budget=0, disk_folder=str(disk), die_rank=1, timeout=5)
    assert [result.returncode != 0 for result in results] == [True, True]
    left = list(disk.glob(f"{PREFIX}*.u8"))
    assert len(left) == 1, "the creator was killed before it could remove the cache's name"
    # The next job on this node removes it (its creator is gone), decodes afresh, and leaves nothing.
    for result in run_node(records, tmp_path / "again", memory_budget=0, disk_folder=str(disk)):
        assert result.returncode == 0, result.stdout[-3000:]
    assert not list(disk.iterdir())
    assert np.array_equal(np.load(tmp_path / "again" / "images1.npy"), single_process(records).images.numpy())
    report = json.loads((tmp_path / "again" / "report0.json").read_text())
    assert report["where"] == "disk, shared"


def test_only_caches_of_dead_processes_are_removed(tmp_path):
    mine = tmp_path / f"{PREFIX}{os.getpid()}-live.u8"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f"{PREFIX}{int(dead.stdout)}-gone.u8"
    other = tmp_path / "unrelated.u8"
    for path in (mine, gone, other):
        path.write_bytes(b"x")
    assert remove_stale_caches([tmp_path]) == [gone]
    assert mine.exists() and other.exists() and not gone.exists()
