"""The decode phase under DDP: one node cache decoded by N local processes together, against one process alone
and against N processes that each decode everything into a cache of their own (what every process did before
the node cache), side by side in one run, repeated.

    python benchmarks/decode.py [--images 1500] [--processes 2] [--size 224] [--repeats 3]

The images are photographs: crops of scikit-learn's two bundled sample photos (427x640 JPEGs), saved as JPEG
at 320x240 to 480x360, decoded and resized to --size as training does. Each way gets the cores the machine has:
one process all of them as threads, N processes each its share (as the component sets them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT / "src"))


def write_photos(folder: Path, count: int, seed: int = 0) -> list:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from train_pytorch_model.formats.image_directory import ImageRecord

    photos, rng, records = load_sample_images().images, np.random.default_rng(seed), []
    for index in range(count):
        photo = photos[index % len(photos)]
        width, height = int(rng.integers(320, 481)), int(rng.integers(240, 361))
        top, left = int(rng.integers(0, photo.shape[0] - height)), int(rng.integers(0, photo.shape[1] - width))
        label = str(index % 2)
        path = folder / label / f"p{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top : top + height, left : left + width]).save(path, quality=90)
        records.append(ImageRecord(path, label))
    return records


def _process(rank: int, processes: int, init_file: str, records: list, size: int, shared: bool, out: str) -> None:
    """One of N local processes: its share of the node cache, or (shared=False) a whole cache of its own."""
    import torch
    import torch.distributed as dist

    from train_pytorch_model.data.cache import decode_dataset, process_cores
    from train_pytorch_model.data.images import Resize
    from train_pytorch_model.data.node_cache import decode_on_node
    from train_pytorch_model.training.distributed import DistributedContext

    torch.set_num_threads(process_cores(processes))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=processes,
                            timeout=timedelta(seconds=600))  # fmt: skip
    node = DistributedContext(processes, rank, rank, processes)
    node.barrier()
    started = time.perf_counter()
    workers, classes, resize = process_cores(processes), {"0": 0, "1": 1}, Resize((size, size))
    if shared:
        decode_on_node(records, classes, resize, "Benchmark", node, workers=workers)
    else:
        decode_dataset(records, classes, resize, "Benchmark", workers=workers)
    elapsed = node.gather_on_node(time.perf_counter() - started)
    if rank == 0:
        Path(out).write_text(str(max(elapsed)))
    dist.destroy_process_group()


def timed_processes(records: list, processes: int, size: int, shared: bool, work: Path) -> float:
    import torch.multiprocessing as mp

    init_file, out = work / f"rendezvous-{time.monotonic_ns()}", work / "seconds"
    mp.spawn(_process, args=(processes, str(init_file), records, size, shared, str(out)), nprocs=processes)
    return float(out.read_text())


def timed_alone(records: list, size: int) -> float:
    from train_pytorch_model.data.cache import decode_dataset, process_cores
    from train_pytorch_model.data.images import Resize

    started = time.perf_counter()
    decode_dataset(records, {"0": 0, "1": 1}, Resize((size, size)), "Benchmark", workers=process_cores())
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--processes", type=int, default=2, help="local processes (torchrun's --nproc_per_node)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="decode-benchmark-") as temporary:
        work = Path(temporary)
        records = write_photos(work / "photos", args.images)
        print(f"{args.images} JPEG photos (320x240 to 480x360) decoded to {args.size}x{args.size}; "
              f"{args.processes} local processes", flush=True)  # fmt: skip
        rows = []
        for repeat in range(1, args.repeats + 1):
            alone = timed_alone(records, args.size)
            each_own = timed_processes(records, args.processes, args.size, False, work)
            shared = timed_processes(records, args.processes, args.size, True, work)
            rows.append((alone, each_own, shared))
            print(f"  repeat {repeat}: one process {alone:.2f} s ({args.images / alone:.0f} img/s), "
                  f"{args.processes} each decoding all {each_own:.2f} s, {args.processes} sharing one cache "
                  f"{shared:.2f} s ({args.images / shared:.0f} img/s)", flush=True)  # fmt: skip
    over_own = [own / shared for _, own, shared in rows]
    over_alone = [alone / shared for alone, _, shared in rows]
    print(f"speed-up of {args.processes} processes sharing one cache over {args.processes} decoding a cache each: "
          f"median {statistics.median(over_own):.2f} (range {min(over_own):.2f}-{max(over_own):.2f})")  # fmt: skip
    low, high = min(over_alone), max(over_alone)
    print(f"speed-up of {args.processes} processes sharing one cache over one process alone: "
          f"median {statistics.median(over_alone):.2f} (range {low:.2f}-{high:.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
