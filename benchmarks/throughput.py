"""How close the component's training loop comes to the model's own speed, measured in one run.

    python benchmarks/throughput.py [--model resnet18] [--image-size 32] [--batch-size 16] [--dataset DIR]
        [--images 1024] [--epochs 3] [--repeats 5] [--json OUT]

It measures, on the same machine and in one go:

(a) the ceiling: training steps per second of the bare model on random tensors already on the device (same
    network builder, optimizer, loss and mixed precision as the trainer), and the validation-forward ceiling
    (eval mode, inference_mode, at the trainer's validation batch of 2 x batch size);
(b) the component itself: ``training.job.run`` on a folder of real images (scikit-learn's digits written as PNGs at
    the chosen size, unless --dataset is given), in a child process so that its memory and start-up are its own;
    per-epoch times are those of the epochs after the first;
(c) the ratio of the time the ceiling predicts for an epoch to the time measured (1.0 = no overhead);
(d) peak resident memory and the time from the start to the first training step, broken down by phase.

Why a ratio and not images per second: absolute speed depends on the machine, the ratio says how much the
data pipeline, metric bookkeeping and logging cost on top of the arithmetic the model cannot avoid.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT / "src"))

CHILD_FLAG = "--component-child"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="an architecture of the allowlist (models.FAMILIES)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dataset", type=Path, default=None, help="folder with train/ and valid/ ImageFolders")
    parser.add_argument("--images", type=int, default=1024, help="training images written (a quarter more valid)")
    parser.add_argument("--epochs", type=int, default=3, help="component epochs; the first is not measured")
    parser.add_argument("--repeats", type=int, default=5, help="timed ceiling runs; the median is reported")
    parser.add_argument("--seconds-per-repeat", type=float, default=1.5, help="length of one timed ceiling run")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for both measurements (default: torch's own)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch (warm-up, allocator growth) is not measured")
    if args.repeats < 1 or args.batch_size < 2 or args.images < args.batch_size:
        parser.error("need --repeats >= 1, --batch-size >= 2 and --images >= --batch-size")
    return args


# ----------------------------------------------------------------------------------------------------- dataset


def write_digits_dataset(destination: Path, train_images: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Real images, resized to size x size: scikit-learn's bundled 8x8 digit scans as grayscale PNGs (the same
    source as the built-in sample and the tests), train_images for training and a quarter as many for
    validation. Beyond the 1,797 scans the list repeats (new file names), which costs the component the same."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    valid_images = max(1, train_images // 4)
    parts = {"train": range(train_images), "valid": range(train_images, train_images + valid_images)}
    for part, positions in parts.items():
        for position in positions:
            index = int(order[position % len(order)])
            label = str(int(digits.target[index]))
            pixels = np.clip(digits.images[index] * (255.0 / 16.0), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BILINEAR)
            folder = destination / part / label
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"d{position:05d}.png")
    return destination / "train", destination / "valid"


def count_images(folder: Path) -> int:
    from train_pytorch_model.data.images import is_image_name

    return sum(1 for path in folder.rglob("*") if path.is_file() and is_image_name(path.name))


def count_classes(folder: Path) -> int:
    return sum(1 for path in folder.iterdir() if path.is_dir())


# ----------------------------------------------------------------------------------------------------- ceiling


def measure_ceiling(args: argparse.Namespace, untrained_model: Path, num_classes: int) -> dict[str, Any]:
    """Images per second of the bare model: random, already normalised tensors on the device, so nothing but
    the network, the loss and the optimizer is timed. Built exactly as the trainer builds it (load_for_training,
    make_optimizer, Precision, channels_last on CUDA), so the ratio isolates what the component adds."""
    import torch
    import torch.nn.functional as F

    from train_pytorch_model.formats.model_directory import read_model_directory
    from train_pytorch_model.model.loading import load_for_training
    from train_pytorch_model.training.device import Precision
    from train_pytorch_model.training.optimizer import make_optimizer

    torch.manual_seed(0)
    # As training.device.pick_compute on one process (not called: it takes the distributed context).
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    channels_last = device.type == "cuda"
    if channels_last:
        torch.backends.cudnn.benchmark = True
    model = load_for_training(read_model_directory(untrained_model), num_classes).model
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = Precision(device)
    optimizer = make_optimizer(model, 0.001)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randn(size, 3, args.image_size, args.image_size, device=device)
        return images.contiguous(memory_format=memory_format), torch.randint(0, num_classes, (size,), device=device)

    train_images, train_targets = batch(args.batch_size)

    def train_step() -> None:
        with precision.autocast():
            logits = model(train_images)
        loss = F.cross_entropy(logits.float(), train_targets)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()

    valid_batch = 2 * args.batch_size  # the trainer validates at twice the training batch
    valid_images, _ = batch(valid_batch)

    def valid_step() -> None:
        with torch.inference_mode(), precision.autocast():
            model(valid_images)

    model.train()
    train = _time_steps(train_step, args.batch_size, args, device)
    model.eval()
    valid = _time_steps(valid_step, valid_batch, args, device)
    return {"device": str(device), "train": train, "valid": valid, "valid_batch_size": valid_batch}


def combine_ceilings(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The ceiling is measured before and after the component and the faster of the two kept: on a shared
    machine other work only ever slows a measurement down, so the faster one is the less disturbed estimate of
    what the model can do (the component's epochs are treated the same way). The drift between the two is
    reported so that a disturbed run shows."""
    combined = dict(before)
    for part in ("train", "valid"):
        rate_before = before[part]["images_per_second"]
        rate_after = after[part]["images_per_second"]
        combined[part] = {
            **before[part],
            "images_per_second": max(rate_before, rate_after),
            "before": rate_before,
            "after": rate_after,
            "min": min(before[part]["min"], after[part]["min"]),
            "max": max(before[part]["max"], after[part]["max"]),
            "drift": rate_after / rate_before - 1,
        }
    return combined


def _time_steps(step: Callable[[], None], batch_size: int, args: argparse.Namespace, device) -> dict[str, Any]:
    """Median images/s of --repeats runs. The warm-up also sizes each run to about --seconds-per-repeat, so that
    a slow configuration is not timed for minutes and a fast one is not timed over a handful of steps."""
    import torch

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # first call: allocations, cudnn autotuning; not part of the calibration
    synchronize()
    start = time.perf_counter()
    for _ in range(max(1, args.warmup_steps)):
        step()
    synchronize()
    per_step = (time.perf_counter() - start) / max(1, args.warmup_steps)
    steps = max(3, round(args.seconds_per_repeat / max(per_step, 1e-6)))
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return {
        "images_per_second": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "steps_per_repeat": steps,
        "batch_size": batch_size,
    }


# --------------------------------------------------------------------------------------------------- component


def run_component(
    args: argparse.Namespace, untrained_model: Path, train: Path, valid: Path, work: Path
) -> dict[str, Any]:
    """training.job.run in a child process: its peak memory and start-up (interpreter, imports) are then its own and
    not mixed with the ceiling's, as on Azure ML where the component is a process of its own."""
    request = {
        "argv": [
            "--untrained-model",
            str(untrained_model),
            "--training-dataset",
            str(train),
            "--validation-dataset",
            str(valid),
            "--trained-model",
            str(work / "trained_model"),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--image-size",
            str(args.image_size),
            # Patience = epochs: early stopping can never cut the run short (epoch 1 is always a new best).
            "--patience",
            str(args.epochs),
        ],
        "result": str(work / "component_result.json"),
        "threads": args.threads,
    }
    (work / "component_request.json").write_text(json.dumps(request), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")]))
    # time.monotonic is CLOCK_MONOTONIC on Linux, one clock for all processes: the child subtracts this.
    launched = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            CHILD_FLAG,
            str(work / "component_request.json"),
            repr(launched),
        ],
        check=True,
        env=env,
        cwd=work,
    )
    result = json.loads((work / "component_result.json").read_text(encoding="utf-8"))
    result["child_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return result


def _child_main(request_file: str, launched: float) -> int:
    """The child: time the imports and each phase of training.job.run by wrapping the functions it calls (the
    trainer's code is not changed; a function renamed since is simply not timed)."""
    entered = time.monotonic()
    request = json.loads(Path(request_file).read_text(encoding="utf-8"))
    import torch

    from train_pytorch_model.tracking import Tracker
    from train_pytorch_model.train import parse_args as parse_component_args
    from train_pytorch_model.training import checkpoint, finish, fit, job, prepare

    imported = time.monotonic()
    phases: dict[str, float] = defaultdict(float)
    calls: dict[str, list[dict[str, float]]] = defaultdict(list)

    def wrap(owner: Any, name: str, label: str, keep: Callable[[Any], dict[str, float]] | None = None) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        def timed(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                result = original(*a, **k)
            finally:
                phases[label] += time.perf_counter() - start
            if keep is not None:
                calls[label].append(keep(result))
            return result

        setattr(owner, name, timed)

    def stats(result: Any) -> dict[str, float]:
        return {"images": float(result.images), "seconds": float(result.seconds)}

    wrap(job, "read_model_directory", "read model folder")
    wrap(prepare, "load_labeled_images", "list datasets")
    wrap(prepare, "load_for_training", "build model")
    wrap(prepare, "decode_dataset", "decode images")
    wrap(Tracker, "start", "mlflow start")
    wrap(Tracker, "log_params", "mlflow params+dataset summary")
    wrap(Tracker, "log_dict", "mlflow params+dataset summary")
    wrap(fit, "train_one_epoch", "train epochs", stats)
    first_epoch_entered: list[float] = []
    timed_epoch = fit.train_one_epoch

    def mark_first_epoch(*a: Any, **k: Any) -> Any:
        if not first_epoch_entered:
            first_epoch_entered.append(time.monotonic())
        return timed_epoch(*a, **k)

    fit.train_one_epoch = mark_first_epoch
    wrap(fit, "evaluate", "validation passes", stats)
    wrap(checkpoint, "save_checkpoint", "checkpoint per epoch")
    wrap(Tracker, "log_metrics", "mlflow metrics")
    wrap(finish, "write_model_output", "write output folder")
    wrap(Tracker, "log_artifacts", "mlflow artifacts")

    if request.get("threads"):
        torch.set_num_threads(request["threads"])
    settings = parse_component_args(request["argv"])
    started = time.monotonic()
    summary = job.run(settings).summary or {}
    finished = time.monotonic()
    first_step = summary.get("seconds_to_first_step")
    result = {
        "summary": {k: summary[k] for k in ("history", "seconds", "seconds_to_first_step", "device") if k in summary},
        "phases": dict(phases),
        "train_epochs": calls.get("train epochs", []),
        "evaluations": calls.get("validation passes", []),
        "launch_to_imports_done": imported - launched,
        "interpreter_start": entered - launched,
        "launch_to_first_step": (started - launched + first_step) if first_step is not None else None,
        "run_to_first_epoch": (first_epoch_entered[0] - started) if first_epoch_entered else None,
        "run_seconds": finished - started,
        "torch_threads": torch.get_num_threads(),
        "self_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    Path(request["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


# ------------------------------------------------------------------------------------------------------ report


def analyse(args: argparse.Namespace, ceiling: dict, component: dict, train_count: int, valid_count: int) -> dict:
    """Ratios over the epochs after the first, from the fastest of them (as for the ceiling: disturbances only
    slow things down); medians are kept beside. Image counts come from the trainer's own epoch statistics when
    the wrappers caught them (a trailing batch of one is dropped in training), else from the folders."""
    history = component["summary"]["history"][1:]
    epochs = component["train_epochs"][1:]
    evaluations = component["evaluations"][1 : len(history) + 1]  # the last evaluation is the final one
    train_images = epochs[0]["images"] if epochs else train_count
    valid_images = evaluations[0]["images"] if evaluations else valid_count
    train_ceiling = ceiling["train"]["images_per_second"]
    valid_ceiling = ceiling["valid"]["images_per_second"]
    predicted = train_images / train_ceiling + valid_images / valid_ceiling
    epoch_seconds = min(row["epoch_seconds"] for row in history)
    train_rate = max(row["train_images_per_second"] for row in history)
    result: dict[str, Any] = {
        "train_images_per_epoch": train_images,
        "valid_images_per_epoch": valid_images,
        "ceiling_train_images_per_second": train_ceiling,
        "ceiling_valid_images_per_second": valid_ceiling,
        "predicted_epoch_seconds": predicted,
        "measured_epoch_seconds": epoch_seconds,
        "measured_train_images_per_second": train_rate,
        "median_epoch_seconds": statistics.median(row["epoch_seconds"] for row in history),
        "median_train_images_per_second": statistics.median(row["train_images_per_second"] for row in history),
        "ratio_epoch": predicted / epoch_seconds,
        "ratio_train": train_rate / train_ceiling,
    }
    if evaluations:
        valid_rate = max(e["images"] / e["seconds"] for e in evaluations if e["seconds"] > 0)
        result["measured_valid_images_per_second"] = valid_rate
        result["ratio_valid"] = valid_rate / valid_ceiling
    # Per-epoch work that epoch_seconds does not include (checkpoint, metric logging): the cost of one epoch
    # as a job sees it on top of the measured epoch.
    phases = component["phases"]
    epochs_run = len(component["summary"]["history"])
    result["outside_epoch_seconds_per_epoch"] = {
        label: phases[label] / epochs_run for label in ("checkpoint per epoch", "mlflow metrics") if label in phases
    }
    return result


def print_report(args: argparse.Namespace, config: dict, ceiling: dict, component: dict, analysis: dict) -> None:
    mb = 1 / 2**20
    print()
    print(
        f"{args.model} {args.image_size}x{args.image_size} batch {args.batch_size} on {ceiling['device']} "
        f"({config['torch_threads']} threads, torch {config['torch']}); "
        f"{analysis['train_images_per_epoch']:.0f} train / {analysis['valid_images_per_epoch']:.0f} valid images, "
        f"epochs 2-{args.epochs} measured; load average {config['load_before']:.2f} -> {config['load_after']:.2f}"
    )
    rows = [
        ("ceiling train", ceiling["train"]),
        (f"ceiling valid (batch {ceiling['valid_batch_size']})", ceiling["valid"]),
    ]
    print(f"  {'':34} {'img/s':>9} {'min':>9} {'max':>9} {'before':>9} {'after':>9}")
    for name, row in rows:
        print(
            f"  {name:34} {row['images_per_second']:9.1f} {row['min']:9.1f} {row['max']:9.1f} "
            f"{row['before']:9.1f} {row['after']:9.1f}"
        )
    drift = max(abs(ceiling["train"]["drift"]), abs(ceiling["valid"]["drift"]))
    if drift > 0.15:
        print(f"  WARNING: the ceiling moved by {drift:.0%} during the run (machine load changed); repeat it.")
    print(f"  {'component train':34} {analysis['measured_train_images_per_second']:9.1f}")
    if "measured_valid_images_per_second" in analysis:
        print(f"  {'component valid':34} {analysis['measured_valid_images_per_second']:9.1f}")
    print(
        f"  epoch (train + valid): predicted {analysis['predicted_epoch_seconds']:.2f} s, "
        f"measured {analysis['measured_epoch_seconds']:.2f} s (median {analysis['median_epoch_seconds']:.2f} s)"
    )
    ratios = f"  ratio epoch {analysis['ratio_epoch']:.3f}   train {analysis['ratio_train']:.3f}"
    if "ratio_valid" in analysis:
        ratios += f"   valid {analysis['ratio_valid']:.3f}"
    print(ratios + "   (1.0 = no overhead over the bare model)")
    outside = ", ".join(f"{k} {v:.2f} s" for k, v in analysis["outside_epoch_seconds_per_epoch"].items())
    if outside:
        print(f"  per epoch, outside epoch_seconds: {outside}")
    summary = component["summary"]
    first = summary.get("seconds_to_first_step")
    if first is not None:
        before = ("read model folder", "list datasets", "build model", "decode images", "mlflow start")
        parts = ", ".join(f"{k} {component['phases'][k]:.2f}" for k in before if k in component["phases"])
        parts += f", mlflow params+dataset summary {component['phases'].get('mlflow params+dataset summary', 0):.2f}"
        print(
            f"  first training step done {first:.2f} s into run(), {component['launch_to_first_step']:.2f} s after "
            f"process launch; interpreter + imports {component['launch_to_imports_done']:.2f} s, then in run(): "
            f"{parts}; epoch loop entered at {component['run_to_first_epoch'] or 0:.2f} s"
        )
    print(
        f"  peak RSS: benchmark process {config['parent_max_rss_bytes'] * mb:.0f} MiB (ceiling), "
        f"component process {component['child_max_rss_bytes'] * mb:.0f} MiB; "
        f"decoded cache {config['decoded_cache_bytes'] * mb:.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        # On a shared machine one thread per process degrades gracefully; several threads stall at every
        # parallel region's barrier when one of them is descheduled.
        torch.set_num_threads(args.threads)

    from train_pytorch_model.init_model import write_untrained_model

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="throughput-") as temporary:
        work = args.keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        work = work.resolve()
        if args.dataset is not None:
            train, valid = args.dataset / "train", args.dataset / "valid"
        else:
            started = time.perf_counter()
            train, valid = write_digits_dataset(work / "data", args.images, args.image_size)
            print(f"wrote {args.images} + {args.images // 4} digit PNGs in {time.perf_counter() - started:.1f} s")
        train_count, valid_count = count_images(train), count_images(valid)
        untrained = work / "untrained_model"
        write_untrained_model(untrained, args.model, pretrained=False, flag=False)

        classes = count_classes(train)
        before = measure_ceiling(args, untrained, classes)
        print(
            f"ceiling: train {before['train']['images_per_second']:.1f} img/s, "
            f"valid {before['valid']['images_per_second']:.1f} img/s; running the component..."
        )
        parent_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        component = run_component(args, untrained, train, valid, work)
        print("component done; measuring the ceiling again...")
        ceiling = combine_ceilings(before, measure_ceiling(args, untrained, classes))

    config = {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "parent_max_rss_bytes": parent_rss,
        "decoded_cache_bytes": (train_count + valid_count) * 3 * args.image_size**2,
    }
    analysis = analyse(args, ceiling, component, train_count, valid_count)
    print_report(args, config, ceiling, component, analysis)
    if args.json is not None:
        payload = {"config": config, "ceiling": ceiling, "component": component, "analysis": analysis}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == CHILD_FLAG:
        sys.exit(_child_main(sys.argv[2], float(sys.argv[3])))
    sys.exit(main())
