"""How close every epoch of the component comes to the model's own speed, measured as a user runs it.

    python benchmarks/throughput.py [--model resnet18] [--config 32x16 --config 64x16 --config 32x64]
        [--dataset DIR] [--images 2000] [--epochs 5] [--repeats 5] [--threads N] [--json OUT]

For each configuration (image size x batch size), in one go on the same machine:

(a) the ceiling: training steps per second of the bare model on random tensors already on the device (same
    network builder, optimizer, loss, mixed precision and host-memory settings as the trainer), and the
    validation-forward ceiling (eval mode, inference_mode, at the trainer's validation batch of 2 x batch
    size); timed before the component, after it, and while the component is stopped, at the end of each of its
    epochs and every few seconds within one;
(b) the component: ``training.job.run`` on real images (scikit-learn's digits written as PNGs at the chosen
    size, unless --dataset is given), in a child process with torch's default threads, as a user gets it;
(c) every epoch after the first against the ceiling timed just before and just after it (a shared machine's
    speed drifts from minute to minute: a paired comparison is fair, a run-wide one is not): its training rate
    (ratio train), and its whole wall time, from the start of one epoch to the start of the next (training,
    validation, the best-weights copy, the checkpoint and the MLflow logging: what an epoch costs a job), against
    the time the ceiling predicts for its images (ratio epoch); the median and the worst epoch of each, and a
    flag when epochs differ by more than 15%;
(d) the per-epoch work outside the steps, the time to the first step and to a trained model by phase, and
    peak resident memory.

Why ratios and not images per second: absolute speed depends on the machine (and on a shared one, on the
minute), the ratio says how much the data pipeline, the bookkeeping and the logging cost on top of the
arithmetic the model cannot avoid.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
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
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        default=None,
        help="an architecture of the allowlist (model/families.py); repeat for a sweep (default: resnet18)",
    )
    parser.add_argument(
        "--seconds-per-epoch",
        type=float,
        default=None,
        help="size each run's dataset to about this much training per epoch at its ceiling (at most --images)",
    )
    parser.add_argument(
        "--config",
        action="append",
        type=_config,
        default=None,
        metavar="SIZExBATCH",
        help="image size x batch size; repeat for several (default: --image-size x --batch-size)",
    )
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dataset", type=Path, default=None, help="folder with train/ and valid/ ImageFolders")
    parser.add_argument("--images", type=int, default=2000, help="training images written (a quarter more valid)")
    parser.add_argument("--epochs", type=int, default=5, help="component epochs; the first is not measured")
    parser.add_argument("--repeats", type=int, default=5, help="timed ceiling runs; the median is reported")
    parser.add_argument("--seconds-per-repeat", type=float, default=1.5, help="length of one timed ceiling run")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both measurements (default: torch's own, as a user gets)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)
    args.configs = args.config or [(args.image_size, args.batch_size)]
    args.models = args.models or ["resnet18"]
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch (warm-up, allocator growth) is not measured")
    if args.repeats < 1 or any(batch < 2 or args.images < batch for _, batch in args.configs):
        parser.error("need --repeats >= 1, batch sizes >= 2 and --images >= every batch size")
    return args


def _config(text: str) -> tuple[int, int]:
    try:
        size, batch = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SIZExBATCH, e.g. 32x16") from None
    return size, batch


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


class CeilingProbe:
    """The bare model: random, already normalised tensors on the device, so that nothing but the network, the
    loss and the optimizer is timed. Built exactly as the trainer builds it (load_for_training, make_optimizer,
    Precision, channels_last on CUDA, the host-memory settings), so that the ratio isolates what the component
    adds. Built once, then timed before the component, between its epochs and after it."""

    def __init__(self, args: argparse.Namespace, size: int, batch_size: int, untrained_model: Path, classes: int):
        import torch

        from train_pytorch_model.formats.model_directory import read_model_directory
        from train_pytorch_model.host_memory import keep_freed_memory
        from train_pytorch_model.model.loading import load_for_training
        from train_pytorch_model.training.device import Precision
        from train_pytorch_model.training.epoch import training_step
        from train_pytorch_model.training.image_input import network_size
        from train_pytorch_model.training.loss import TrainingLoss
        from train_pytorch_model.training.optimizer import make_optimizer

        keep_freed_memory()
        torch.manual_seed(0)
        # As training.device.pick_compute on one process (not called: it takes the distributed context).
        cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        if cuda:
            torch.backends.cudnn.benchmark = True
        memory_format = torch.channels_last if cuda else torch.contiguous_format
        spec = read_model_directory(untrained_model)
        size = network_size(spec, (size, size))[0]  # what the component trains at (a network's minimum, ...)
        loss_fn = TrainingLoss(spec.family.aux_weight)
        model = load_for_training(spec, classes, side=size).model.to(self.device)
        model = model.to(memory_format=memory_format)
        precision = Precision(self.device)
        optimizer = make_optimizer(model, 0.001)
        self.args, self.model = args, model
        self.batch_size, self.valid_batch_size = batch_size, 2 * batch_size  # the trainer validates at 2x
        self.side = size

        def batch(count: int) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.randn(count, 3, size, size, device=self.device).contiguous(memory_format=memory_format)
            return images, torch.randint(0, classes, (count,), device=self.device)

        train_images, train_targets = batch(batch_size)
        valid_images, _ = batch(self.valid_batch_size)

        def train_step() -> None:
            training_step(model, train_images, train_targets, optimizer, precision, loss_fn)

        def valid_step() -> None:
            with torch.inference_mode(), precision.autocast():
                model(valid_images)

        self.steps = {"train": train_step, "valid": valid_step}
        self.steps_per_window: dict[str, int] = {}

    def measure(self, windows: int, parts: tuple[str, ...] = ("train", "valid")) -> dict[str, list[float]]:
        """Images per second in `windows` timed windows of each part (train, valid)."""
        rates = {}
        for part in parts:
            step = self.steps[part]
            self.model.train(part == "train")
            batch_size = self.batch_size if part == "train" else self.valid_batch_size
            if part not in self.steps_per_window:
                self.steps_per_window[part] = self._calibrate(step)
            steps = self.steps_per_window[part]
            rates[part] = []
            for _ in range(windows):
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                self._synchronize()
                rates[part].append(steps * batch_size / (time.perf_counter() - start))
        return rates

    def _calibrate(self, step: Callable[[], None]) -> int:
        """Steps per window of about --seconds-per-repeat, from a warm-up (so that a slow configuration is not
        timed for minutes and a fast one not over a handful of steps)."""
        step()  # first call: allocations, cudnn autotuning; not part of the calibration
        self._synchronize()
        start = time.perf_counter()
        for _ in range(max(1, self.args.warmup_steps)):
            step()
        self._synchronize()
        per_step = (time.perf_counter() - start) / max(1, self.args.warmup_steps)
        return max(3, round(self.args.seconds_per_repeat / max(per_step, 1e-6)))

    def _synchronize(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def summarise_ceiling(before: dict, between: list[dict], after: dict, probe: CeilingProbe) -> dict:
    """All windows of a run: their median is the run's ceiling; the drift from before to after shows whether
    the machine's load changed while the benchmark ran."""
    result: dict[str, Any] = {"device": str(probe.device), "valid_batch_size": probe.valid_batch_size}
    for part in ("train", "valid"):
        windows = before[part] + [w for pause in between for w in pause.get(part, [])] + after[part]
        first, last = statistics.median(before[part]), statistics.median(after[part])
        result[part] = {
            "images_per_second": statistics.median(windows),
            "min": min(windows),
            "max": max(windows),
            "before": first,
            "after": last,
            "drift": last / first - 1,
        }
    return result


# --------------------------------------------------------------------------------------------------- component


def run_component(
    args: argparse.Namespace, size: int, batch_size: int, paths: dict[str, Path], probe: CeilingProbe
) -> tuple[dict[str, Any], list[dict]]:
    """training.job.run in a child process (its peak memory and start-up are then its own, as on Azure ML where
    the component is a process of its own), stopped after each epoch while this process times the ceiling: each
    epoch is then compared with the ceiling measured just before and just after it, on the same machine at the
    same minute. The pause is not counted in the epoch's time, and the stopped child (its checkpoint writer
    included) takes no CPU from the ceiling."""
    work = paths["work"]
    argv = [
        *("--untrained-model", str(paths["untrained"]), "--training-dataset", str(paths["train"])),
        *("--validation-dataset", str(paths["valid"]), "--trained-model", str(work / "trained_model")),
        *("--epochs", str(args.epochs), "--batch-size", str(batch_size), "--image-size", str(size)),
        # Patience = epochs: early stopping can never cut the run short (epoch 1 is always a new best).
        *("--patience", str(args.epochs)),
    ]
    to_parent, from_child = os.pipe()[::-1]  # (write end for the child, read end for us)
    from_parent, to_child = os.pipe()
    request = {
        "argv": argv,
        "result": str(work / "component_result.json"),
        "threads": args.threads,
        "pipe": [to_parent, from_parent],
    }
    (work / "component_request.json").write_text(json.dumps(request), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")]))
    # time.monotonic is CLOCK_MONOTONIC on Linux, one clock for all processes: the child subtracts this.
    launched = time.monotonic()
    command = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, str(work / "component_request.json")]
    child = subprocess.Popen([*command, repr(launched)], env=env, cwd=work, pass_fds=(to_parent, from_parent))
    os.close(to_parent)
    os.close(from_parent)
    between = []
    with os.fdopen(from_child, "r") as messages, os.fdopen(to_child, "w") as replies:
        for message in messages:  # a line per pause; EOF when the child exits
            parts = ("train", "valid") if message.strip() == "epoch" else ("train",)
            child.send_signal(signal.SIGSTOP)
            between.append(probe.measure(windows=1, parts=parts))
            child.send_signal(signal.SIGCONT)
            replies.write("go\n")
            replies.flush()
    if child.wait() != 0:
        raise subprocess.CalledProcessError(child.returncode, command)
    result = json.loads((work / "component_result.json").read_text(encoding="utf-8"))
    result["launch_to_exit"] = time.monotonic() - launched
    result["child_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return result, between


SEGMENT_SECONDS = 3.0


class Pauses:
    """In the child: stop at the end of every epoch, and every SEGMENT_SECONDS of training within one, until
    the parent has timed the ceiling. Each pause and each training step is recorded, so that the analysis can
    take the pauses out and compare every stretch of training with the ceiling timed on both sides of it."""

    def __init__(self, pipe: list[int]) -> None:
        self.to_parent, self.from_parent = os.fdopen(pipe[0], "w"), os.fdopen(pipe[1], "r")
        self.epoch = 0
        self.last = time.monotonic()
        self.pauses: list[dict] = []  # {"epoch", "kind", "seen", "start", "end"}
        self.steps: list[tuple[int, float, int]] = []  # (epoch, time, images seen in the epoch so far)

    def pause(self, kind: str, seen: int) -> None:
        import torch

        if torch.cuda.is_available():  # the queued steps belong to the stretch before the pause
            torch.cuda.synchronize()
        start = time.monotonic()
        self.to_parent.write(kind + "\n")
        self.to_parent.flush()
        self.from_parent.readline()
        self.last = time.monotonic()
        self.pauses.append({"epoch": self.epoch, "kind": kind, "seen": seen, "start": start, "end": self.last})

    def install(self, fit_module: Any, progress_module: Any) -> None:
        run_epoch, on_step = fit_module.run_epoch, progress_module.RunProgress.on_step
        pauses = self

        def paused_run_epoch(epoch: int, *a: Any, **k: Any) -> Any:
            pauses.epoch, pauses.last = epoch, time.monotonic()
            metrics = run_epoch(epoch, *a, **k)
            pauses.pause("epoch", -1)
            return metrics

        def paused_on_step(self: Any, step: int, loss_sum: Any, correct: Any, seen: int) -> None:
            on_step(self, step, loss_sum, correct, seen)
            now = time.monotonic()
            pauses.steps.append((pauses.epoch, now, seen))
            if step < self.steps and now - pauses.last >= SEGMENT_SECONDS:
                pauses.pause("segment", seen)

        fit_module.run_epoch = paused_run_epoch
        progress_module.RunProgress.on_step = paused_on_step


class PhaseTimer:
    """Times the trainer's functions by wrapping them where they are looked up (the trainer's code is not
    changed; a function renamed since is simply not timed)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, list[dict[str, float]]] = defaultdict(list)

    def wrap(self, owner: Any, name: str, label: str, keep: Callable[[Any, float, float], dict] | None = None) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        def timed(*a: Any, **k: Any) -> Any:
            start = time.monotonic()
            try:
                result = original(*a, **k)
            finally:
                self.seconds[label] += time.monotonic() - start
            if keep is not None:
                self.calls[label].append(keep(result, start, time.monotonic()))
            return result

        setattr(owner, name, timed)


def _child_main(request_file: str, launched: float) -> int:
    """The child: time the imports, each phase of training.job.run and every epoch's start and end."""
    entered = time.monotonic()
    request = json.loads(Path(request_file).read_text(encoding="utf-8"))
    import torch

    from train_pytorch_model.tracking import Tracker
    from train_pytorch_model.train import parse_args as parse_component_args
    from train_pytorch_model.training import checkpoint, fit, job, prepare, progress

    imported = time.monotonic()
    timer = PhaseTimer()

    def images(result: Any, start: float, end: float) -> dict[str, float]:
        return {"images": float(result.images), "seconds": float(result.seconds), "start": start, "end": end}

    def span(_result: Any, start: float, end: float) -> dict[str, float]:
        return {"start": start, "end": end}

    pauses = Pauses(request["pipe"])
    pauses.install(fit, progress)
    timer.wrap(job, "read_model_directory", "read model folder")
    timer.wrap(prepare, "load_labeled_images", "list datasets")
    timer.wrap(prepare, "load_for_training", "build model")
    timer.wrap(prepare, "decode_dataset", "decode images")
    timer.wrap(Tracker, "start", "mlflow start")
    timer.wrap(Tracker, "log_params", "mlflow params+dataset summary")
    timer.wrap(Tracker, "log_dict", "mlflow params+dataset summary")
    timer.wrap(fit, "run_epoch", "epochs", span)
    timer.wrap(fit, "train_one_epoch", "train passes", images)
    timer.wrap(fit, "evaluate", "validation passes", images)
    timer.wrap(fit, "weights_copy", "best-weights copy")
    timer.wrap(checkpoint.Checkpoint, "save", "checkpoint on the training thread")
    timer.wrap(checkpoint.Checkpoint, "wait", "of which waiting for a write")
    timer.wrap(checkpoint, "save_checkpoint", "checkpoint write (background, low priority)")
    timer.wrap(Tracker, "log_epoch", "mlflow epoch metrics")
    timer.wrap(job, "fit", "fit", span)
    timer.wrap(job, "finish", "finish: evaluation, output folder, report, artifacts")

    if request.get("threads"):
        torch.set_num_threads(request["threads"])
    settings = parse_component_args(request["argv"])
    started = time.monotonic()
    summary = job.run(settings).summary or {}
    finished = time.monotonic()
    first_step = summary.get("seconds_to_first_step")
    result = {
        "summary": {k: summary[k] for k in ("history", "seconds", "seconds_to_first_step", "device") if k in summary},
        "phases": dict(timer.seconds),
        "epochs": timer.calls["epochs"],
        "pauses": pauses.pauses,
        "steps": pauses.steps,
        "fit": timer.calls["fit"][0],
        "train_passes": timer.calls["train passes"],
        "validation_passes": timer.calls["validation passes"],
        "launch_to_imports_done": imported - launched,
        "interpreter_start": entered - launched,
        "launch_to_run": started - launched,
        "launch_to_first_step": (started - launched + first_step) if first_step is not None else None,
        "run_seconds": finished - started,
        "torch_threads": torch.get_num_threads(),
        "self_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    Path(request["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


# ------------------------------------------------------------------------------------------------------ report

SPREAD_LIMIT = 0.15
PER_EPOCH_WORK = (
    "best-weights copy",
    "checkpoint on the training thread",
    "of which waiting for a write",
    "checkpoint write (background, low priority)",
    "mlflow epoch metrics",
)


def analyse(component: dict, between: list[dict]) -> dict:
    """Every epoch after the first against the ceiling timed next to it. Its training pass is cut at the pauses
    into stretches of about SEGMENT_SECONDS; each stretch's images are predicted at the ceiling timed just before
    and just after it (ratio train: predicted over measured training time); the whole epoch, from its start to
    the next epoch's (the last one's to the end of the loop), pauses taken out, is compared with that training
    prediction plus its validation images at the validation ceiling (ratio epoch). Image counts are the
    trainer's own (a trailing batch of one is dropped in training)."""
    history, pauses = component["summary"]["history"], component["pauses"]
    starts = [epoch["start"] for epoch in component["epochs"]] + [component["fit"]["end"]]
    epoch_end = {p["epoch"]: index for index, p in enumerate(pauses) if p["kind"] == "epoch"}
    rows = []
    for index in range(1, len(history)):
        epoch, previous = history[index]["epoch"], history[index - 1]["epoch"]
        train_pass = component["train_passes"][index]
        predicted_train, train_seconds = _train_stretches(train_pass, pauses, between, epoch_end[previous], epoch)
        end_pause = epoch_end[epoch]
        valid_ceiling = statistics.mean(between[epoch_end[previous]]["valid"] + between[end_pause]["valid"])
        predicted = predicted_train + component["validation_passes"][index]["images"] / valid_ceiling
        paused = sum(p["end"] - p["start"] for p in pauses if p["epoch"] == epoch)
        wall = starts[index + 1] - starts[index] - paused
        rows.append(
            {
                "epoch": epoch,
                "train_images_per_second": train_pass["images"] / train_seconds,
                "ceiling_train_images_per_second": train_pass["images"] / predicted_train,
                "ratio_train": predicted_train / train_seconds,
                "wall_seconds": wall,
                "predicted_seconds": predicted,
                "ratio_epoch": predicted / wall,
            }
        )
    rates = [row["train_images_per_second"] for row in rows]
    epochs_run = len(history)
    return {
        "epochs": rows,
        "median_ratio_train": statistics.median(row["ratio_train"] for row in rows),
        "worst_ratio_train": min(row["ratio_train"] for row in rows),
        "median_ratio_epoch": statistics.median(row["ratio_epoch"] for row in rows),
        "worst_ratio_epoch": min(row["ratio_epoch"] for row in rows),
        "epoch_spread": (max(rates) - min(rates)) / statistics.median(rates),
        "train_images_per_epoch": component["train_passes"][-1]["images"],
        "valid_images_per_epoch": component["validation_passes"][-1]["images"],
        "per_epoch_work_seconds": {
            label: component["phases"][label] / epochs_run for label in PER_EPOCH_WORK if label in component["phases"]
        },
    }


def _train_stretches(
    train_pass: dict, pauses: list[dict], between: list[dict], before: int, epoch: int
) -> tuple[float, float]:
    """(predicted, measured) seconds of an epoch's training pass, stretch by stretch between its pauses; before
    is the index of the pause that ended the previous epoch."""
    predicted = measured = 0.0
    start, seen, ceiling_before = train_pass["start"], 0, between[before]["train"]
    inside = [(index, p) for index, p in enumerate(pauses) if p["epoch"] == epoch]
    for index, pause in inside:
        if pause["kind"] == "segment":
            end, images = pause["start"], pause["seen"] - seen
        else:  # the end of the epoch: the last stretch ran to the end of the training pass
            end, images = train_pass["end"], train_pass["images"] - seen
        rate = statistics.mean(ceiling_before + between[index]["train"])
        predicted += images / rate
        measured += end - start
        start, seen, ceiling_before = pause["end"], pause["seen"], between[index]["train"]
    return predicted, measured


def print_report(args: argparse.Namespace, config: dict, ceiling: dict, component: dict, analysis: dict) -> None:
    size, batch_size = config["trained_at"], config["batch_size"]
    print()
    print(
        f"{config['model']} {size}x{size} batch {batch_size} on {ceiling['device']} "
        f"({config['torch_threads']} threads, "
        f"torch {config['torch']}); {analysis['train_images_per_epoch']:.0f} train / "
        f"{analysis['valid_images_per_epoch']:.0f} valid images, {args.epochs} epochs; load average "
        f"{config['load_before']:.2f} -> {config['load_after']:.2f}"
    )
    for part, name in (("train", "train"), ("valid", f"valid (batch {ceiling['valid_batch_size']})")):
        row = ceiling[part]
        print(
            f"  ceiling {name:18} {row['images_per_second']:8.1f} img/s (windows {row['min']:.1f}-{row['max']:.1f};"
            f" before {row['before']:.1f}, after {row['after']:.1f})"
        )
    drift = max(abs(ceiling["train"]["drift"]), abs(ceiling["valid"]["drift"]))
    if drift > SPREAD_LIMIT:
        print(f"  note: the machine's speed moved by {drift:.0%} during the run; each epoch is compared with the")
        print("  ceiling timed next to it, which is why the ratios below stay fair.")
    header = ("epoch", "train img/s", "ceiling", "ratio train", "wall s", "predicted s", "ratio epoch")
    widths = (7, 12, 9, 12, 8, 12, 12)
    print("  " + " ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)))
    for row in analysis["epochs"]:
        print(
            f"  {row['epoch']:7d} {row['train_images_per_second']:12.1f} {row['ceiling_train_images_per_second']:9.1f}"
            f" {row['ratio_train']:12.3f} {row['wall_seconds']:8.2f} {row['predicted_seconds']:12.2f}"
            f" {row['ratio_epoch']:12.3f}"
        )
    print(
        f"  epochs 2-{args.epochs}: ratio train median {analysis['median_ratio_train']:.3f} worst "
        f"{analysis['worst_ratio_train']:.3f}; ratio epoch median {analysis['median_ratio_epoch']:.3f} worst "
        f"{analysis['worst_ratio_epoch']:.3f} (1.0 = no overhead over the bare model)"
    )
    if analysis["epoch_spread"] > SPREAD_LIMIT:
        print(f"  WARNING: the epochs' training rates differ by {analysis['epoch_spread']:.0%} (over 15%).")
    work = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in analysis["per_epoch_work_seconds"].items())
    print(f"  per epoch outside the steps: {work}")
    _print_timeline(component)
    mb = 1 / 2**20
    print(
        f"  peak RSS: benchmark process {config['parent_max_rss_bytes'] * mb:.0f} MiB (ceiling), "
        f"component process {component['child_max_rss_bytes'] * mb:.0f} MiB; "
        f"decoded cache {config['decoded_cache_bytes'] * mb:.1f} MiB"
    )


def _print_timeline(component: dict) -> None:
    """Where the seconds of a whole job go, from the process's launch to its exit."""
    phases = component["phases"]
    before = ("read model folder", "list datasets", "build model", "decode images", "mlflow start")
    parts = ", ".join(f"{k} {phases[k]:.2f}" for k in before if k in phases)
    parts += f", mlflow params+dataset summary {phases.get('mlflow params+dataset summary', 0):.2f}"
    first = component.get("launch_to_first_step")
    if first is not None:
        print(
            f"  first step {first:.2f} s after launch: interpreter + imports {component['launch_to_imports_done']:.2f}"
            f" s, then in run(): {parts}"
        )
    fit_seconds = component["fit"]["end"] - component["fit"]["start"]
    finish_label = "finish: evaluation, output folder, report, artifacts"
    print(
        f"  trained model {component['launch_to_exit']:.2f} s after launch: before run() "
        f"{component['launch_to_run']:.2f} s, epoch loop {fit_seconds:.2f} s, {finish_label} "
        f"{phases.get(finish_label, 0):.2f} s"
    )


def run_config(args: argparse.Namespace, model: str, size: int, batch_size: int, work: Path) -> dict:
    import torch

    from train_pytorch_model.init_model import write_untrained_model

    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    untrained = work / "untrained_model"
    torch.manual_seed(0)
    write_untrained_model(untrained, model, pretrained=False)
    probe = CeilingProbe(args, size, batch_size, untrained, classes=10)  # the digits' ten classes
    before = probe.measure(args.repeats)
    images = _images_for(args, statistics.median(before["train"]), batch_size)
    print(f"ceiling: train {statistics.median(before['train']):.1f} img/s at {probe.side}x{probe.side}")
    if args.dataset is not None:
        train, valid = args.dataset / "train", args.dataset / "valid"
    else:
        started = time.perf_counter()
        train, valid = write_digits_dataset(work / "data", images, size)
        print(f"wrote {images} + {images // 4} digit PNGs in {time.perf_counter() - started:.1f} s")
    paths = {"work": work, "untrained": untrained, "train": train, "valid": valid}
    parent_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    component, between = run_component(args, size, batch_size, paths, probe)
    print("component done; measuring the ceiling again...")
    ceiling = summarise_ceiling(before, between, probe.measure(args.repeats), probe)
    config = {
        "model": model,
        "image_size": size,
        "trained_at": probe.side,
        "batch_size": batch_size,
        "epochs": args.epochs,
        "torch": torch.__version__,
        "torch_threads": component["torch_threads"],
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "parent_max_rss_bytes": parent_rss,
        "decoded_cache_bytes": (count_images(train) + count_images(valid)) * 3 * probe.side**2,
    }
    analysis = analyse(component, between)
    print_report(args, config, ceiling, component, analysis)
    return {"config": config, "ceiling": ceiling, "between": between, "component": component, "analysis": analysis}


def _images_for(args: argparse.Namespace, ceiling: float, batch_size: int) -> int:
    """--images, or with --seconds-per-epoch as many as the ceiling trains in that time (whole batches, at
    least four), so that a sweep over networks of very different speeds takes about as long for each."""
    if args.seconds_per_epoch is None:
        return args.images
    wanted = round(ceiling * args.seconds_per_epoch / batch_size) * batch_size
    return max(4 * batch_size, min(args.images, wanted))


def print_table(args: argparse.Namespace, results: list[dict]) -> None:
    print()
    print(f"{args.epochs} epochs, epochs 2-{args.epochs} against the ceiling measured next to them:")
    print(
        f"  {'model':>20} {'size, batch':>12} {'trained at':>10} {'images':>7} {'ceiling img/s':>14} "
        f"{'train ratio med/worst':>22} {'epoch ratio med/worst':>22} {'spread':>7}"
    )
    for result in results:
        config, analysis = result["config"], result["analysis"]
        print(
            f"  {config['model']:>20} {config['image_size']:>5}x{config['image_size']:<3}{config['batch_size']:>4} "
            f"{config['trained_at']:>10} {analysis['train_images_per_epoch']:>7.0f} "
            f"{result['ceiling']['train']['images_per_second']:14.1f} "
            f"{analysis['median_ratio_train']:>13.3f} / {analysis['worst_ratio_train']:.3f} "
            f"{analysis['median_ratio_epoch']:>13.3f} / {analysis['worst_ratio_epoch']:.3f} "
            f"{analysis['epoch_spread']:>6.0%}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as temporary:
        root = (args.keep or Path(temporary)).resolve()
        for model in args.models:
            for size, batch_size in args.configs:
                work = root / f"{model}_{size}x{batch_size}"
                results.append(run_config(args, model, size, batch_size, work))
                if args.json is not None:  # after each, so that a long sweep keeps what it measured
                    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if len(results) > 1:
        print_table(args, results)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == CHILD_FLAG:
        sys.exit(_child_main(sys.argv[2], float(sys.argv[3])))
    sys.exit(main())
