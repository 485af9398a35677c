"""What augmentation costs a training step: the batch augmenter (data/augment.py) against the trainer's own
step (training.epoch.training_step: forward, loss, backward, optimizer step, mixed precision where the device
has it), side by side on the same batch, the same device, in one run.

    python benchmarks/augmentation_cost.py [--config resnet18:32x16 ...] [--repeats 7] [--steps 10]

Default configurations: resnet18 at 32x32 and 64x64, batch 16 (the small images the designer is used with),
and, where a GPU is present, resnet50 at 224x224, batch 256. For each level (light, strong) and repeat, a block
of augmentations and a block of steps are timed back to back, in alternating order, and their ratio taken: a
shared machine's speed drifts from minute to minute, a ratio of neighbouring blocks does not. Printed: the
median ratio and its range over the repeats, and whether it stays within the budget (5% of a step).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT / "src"))

BUDGET = 0.05  # of a training step
CPU_CONFIGS = ["resnet18:32x16", "resnet18:64x16"]
GPU_CONFIGS = ["resnet50:224x256"]
CLASSES = 10


def parse_config(text: str) -> tuple[str, int, int]:
    """'resnet18:32x16' -> (architecture, image side, batch size)."""
    architecture, _, shape = text.partition(":")
    side, _, batch = shape.partition("x")
    return architecture, int(side), int(batch)


def timed(work: Callable[[], object], count: int, device) -> float:
    """Seconds per call of work, the device's queue drained before and after."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(count):
        work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / count


def measure(config: str, level: str, repeats: int, steps: int, device) -> list[float]:
    """Augmentation time over step time, once per repeat."""
    import torch
    import torchvision

    from train_pytorch_model.data.augment import BatchAugmenter, epoch_generator
    from train_pytorch_model.training.device import Precision
    from train_pytorch_model.training.epoch import training_step
    from train_pytorch_model.training.loss import TrainingLoss
    from train_pytorch_model.training.optimizer import make_optimizer

    architecture, side, batch = parse_config(config)
    torch.manual_seed(0)
    model = torchvision.models.get_model(architecture, num_classes=CLASSES).to(device).train()
    optimizer = make_optimizer(model, 0.001)
    precision, loss_fn = Precision(device), TrainingLoss()
    images = torch.rand(batch, 3, side, side, device=device)
    targets = torch.randint(0, CLASSES, (batch,), device=device)
    augmenter, generator = BatchAugmenter(level), epoch_generator(1, 0, 1)

    def augment() -> object:
        return augmenter(images, generator)

    def step() -> object:
        return training_step(model, images, targets, optimizer, precision, loss_fn)

    timed(step, 2, device)  # warm-up: first calls pay for allocation and kernel selection
    timed(augment, 2, device)
    ratios = []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            augment_seconds, step_seconds = timed(augment, steps, device), timed(step, steps, device)
        else:
            step_seconds, augment_seconds = timed(step, steps, device), timed(augment, steps, device)
        ratios.append(augment_seconds / step_seconds)
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", dest="configs", help="architecture:SIDExBATCH; repeatable")
    parser.add_argument("--levels", nargs="+", default=["light", "strong"], choices=["light", "strong"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="calls in each timed block")
    args = parser.parse_args(argv)

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configs = args.configs or CPU_CONFIGS + (GPU_CONFIGS if device.type == "cuda" else [])
    print(f"device: {device}, threads: {torch.get_num_threads()}, {args.repeats} repeats of {args.steps} calls")
    print(f"  {'config':20} {'level':7} {'median':>8} {'range':>17}  within {BUDGET:.0%}")
    within = True
    for config in configs:
        for level in args.levels:
            ratios = measure(config, level, args.repeats, args.steps, device)
            median = statistics.median(ratios)
            within &= median <= BUDGET
            print(f"  {config:20} {level:7} {median:8.2%} {min(ratios):7.2%}-{max(ratios):7.2%}  "
                  f"{'yes' if median <= BUDGET else 'NO'}")  # fmt: skip
            sys.stdout.flush()
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
