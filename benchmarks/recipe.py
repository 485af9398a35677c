"""The recipe, measured: today's recipe, each of its options alone, side by side on identical inputs, over
several seeds, at the designer's 5 epochs and at AutoML's 15, on small real datasets made from images shipped
inside packages (nothing is downloaded).

    python benchmarks/recipe.py [--seeds 8] [--first-seed 1] [--schedules 5 15] [--datasets digits ...]
                                [--configs today label_smoothing ...] [--per-class 60] [--workdir DIR]
                                [--results runs.jsonl]
    python benchmarks/recipe.py --tables-from runs.jsonl [more.jsonl ...]

A long measurement can be cut into parts (other seeds, datasets or schedules, in other processes or on other
machines), each appending a line a run to its --results file; --tables-from prints the tables of them all.

Datasets (written once into the work folder, the same for every run):
- digits: scikit-learn's handwritten 8x8 scans, 10 classes;
- photos: 32x32 patches of three photographs (scikit-learn's two sample photos and matplotlib's portrait),
  one class each; training patches from each photo's left 70%, validation from the right 30% (held out);
- mixed: the same photographs cut into patches of mixed sizes (20 to 96 pixels a side, aspect 1:2 to 2:1),
  so that the trainer's size choice and resizing are part of what is measured;
- imbalanced: the digits with ten times fewer training images of the last class than of the first (a
  geometric series between), validated on balanced classes: what class weighting is for;
- imbalanced_alike: the same, validated on classes in the same proportions as the training set.

Each run is the component's own entry (train_pytorch_model.train.main) on an untrained resnet18, with the
designer's defaults (batch 16, learning rate 0.001, patience 3) and only the config's options changed. It
prints, per dataset and schedule, each config's best validation accuracy (mean and range over the seeds) and
its time, and the difference from today's recipe.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT / "src"))

# Each config: the command-line options it gives the component. "designer" is the original module's recipe,
# rebuilt faithfully in designer_recipe.py; "today" is the recipe before the recipe options (plain cross-entropy);
# "defaults" is what a user gets with the designer's five parameters alone. Each option alone is added to the
# defaults. On balanced data the defaults' class weights are all 1: "today" and "defaults" are the same run.
CONFIGS: dict[str, list[str]] = {
    "designer": [],
    "today": ["--class-weighting", "none"],
    "defaults": [],
    "label_smoothing": ["--label-smoothing", "0.1"],
    "warmup": ["--warmup-epochs", "1"],
    "adamw": ["--optimizer", "adamw"],
    "augment_light": ["--augmentation", "light"],
    "augment_strong": ["--augmentation", "strong"],
    "ema": ["--ema-decay", "0.99"],
    "class_weighting_inverse": ["--class-weighting", "inverse"],
}
DATASETS = ("digits", "photos", "mixed", "imbalanced", "imbalanced_alike")
VALID_SHARE = 0.3
# imbalanced: the digits' last class keeps this share of the first's training images, the classes between a
# geometric series (40, 31, 24, ... 4 at 40 a class); validation stays balanced, so accuracy weighs every class
# alike, as a user with rare but important classes would. imbalanced_alike: validation thinned out the same way,
# so accuracy weighs classes by how common they are, as a user whose images come in those proportions would.
IMBALANCE = 0.1


def write_dataset(name: str, folder: Path, per_class: int) -> tuple[Path, Path]:
    """folder/train and folder/valid ImageFolders; the same content for a given name and size."""
    if name in ("digits", "imbalanced", "imbalanced_alike"):
        return _digits(folder, per_class, 1.0 if name == "digits" else IMBALANCE, name == "imbalanced_alike")
    return _photo_patches(folder, per_class, mixed=name == "mixed")


def _digits(folder: Path, per_class: int, imbalance: float, valid_alike: bool = False) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    valid_per_class = max(1, int(per_class * VALID_SHARE / (1 - VALID_SHARE)))
    share = [imbalance ** (label / 9) for label in range(10)]
    train_per_class = [max(2, round(per_class * s)) for s in share]
    valid_counts = [max(2, round(valid_per_class * s)) if valid_alike else valid_per_class for s in share]
    taken: dict[tuple[str, int], int] = {}
    for index in order:
        label = int(digits.target[index])
        part = "train" if taken.get(("train", label), 0) < train_per_class[label] else "valid"
        if part == "valid" and taken.get(("valid", label), 0) >= valid_counts[label]:
            continue
        taken[(part, label)] = taken.get((part, label), 0) + 1
        pixels = np.clip(digits.images[index] * (255.0 / 16.0), 0, 255).astype(np.uint8)
        (folder / part / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(folder / part / str(label) / f"d{index:04d}.png")
    return folder / "train", folder / "valid"


def _photographs() -> dict[str, object]:
    import matplotlib.cbook
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as stream:
        portrait = np.asarray(Image.open(stream).convert("RGB"))
    return {"china": china, "flower": flower, "portrait": portrait}


def _photo_patches(folder: Path, per_class: int, mixed: bool) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    valid_count = max(1, int(per_class * VALID_SHARE / (1 - VALID_SHARE)))
    for label, photo in _photographs().items():
        height, width = photo.shape[:2]
        cut = int(width * (1 - VALID_SHARE))
        for part, count, (low, high) in (("train", per_class, (0, cut)), ("valid", valid_count, (cut, width))):
            (folder / part / label).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                side = int(rng.integers(20, 97)) if mixed else 32
                aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) if mixed else 1.0
                w = min(max(8, int(side * aspect**0.5)), high - low)
                h = min(max(8, int(side / aspect**0.5)), height)
                left, top = int(rng.integers(low, high - w + 1)), int(rng.integers(0, height - h + 1))
                patch = Image.fromarray(photo[top : top + h, left : left + w])
                patch.save(folder / part / label / f"{label}_{index:04d}.png")
    return folder / "train", folder / "valid"


def train_once(untrained: Path, train: Path, valid: Path, work: Path, epochs: int, seed: int, options: list[str]):
    """(best validation accuracy, seconds) of one run of the component's entry, its output thrown away."""
    from train_pytorch_model.train import main

    output = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
    # A store of the run's own, thrown away with it: the output is logged as artifacts, 90 MB a run of resnet18.
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{output / 'mlflow.db'}"
    arguments = ["--untrained-model", str(untrained), "--training-dataset", str(train),
                 "--validation-dataset", str(valid), "--trained-model", str(output / "model"),
                 "--epochs", str(epochs), "--random-seed", str(seed), *options]  # fmt: skip
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(arguments)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"run failed ({code}): {' '.join(arguments)}")
    summary = json.loads((output / "model" / "training_summary.json").read_text())
    shutil.rmtree(output)
    return summary["best_valid_accuracy"], seconds


def run_config(config: str, untrained: Path, train: Path, valid: Path, work: Path, epochs: int, seed: int):
    """(accuracy of the model the run writes, or None where the recipe cannot train on the data; seconds)."""
    if config != "designer":
        return train_once(untrained, train, valid, work, epochs, seed, CONFIGS[config])
    from designer_recipe import train_designer

    started = time.perf_counter()
    classes = sum(1 for entry in train.iterdir() if entry.is_dir())
    accuracy = train_designer(train, valid, classes, epochs, seed)
    return accuracy, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--schedules", type=int, nargs="+", default=[5, 15])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--per-class", type=int, default=60, help="training images per class")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=None, help="append a JSON line a run to this file")
    parser.add_argument("--tables-from", type=Path, nargs="+", default=None, help="print the tables of these")
    args = parser.parse_args(argv)
    if args.tables_from:
        print_tables(read_results(args.tables_from))
        return 0

    import torch

    from train_pytorch_model.init_model import write_untrained_model

    logging.disable(logging.WARNING)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="recipe-"))
    torch.manual_seed(0)
    untrained = work / "untrained"
    if not untrained.exists():
        write_untrained_model(untrained, "resnet18", pretrained=False)
    results: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    for dataset in args.datasets:
        train, valid = write_dataset(dataset, work / dataset, args.per_class)
        for epochs in args.schedules:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for config in args.configs:  # side by side: every config of a seed before the next seed
                    outcome = run_config(config, untrained, train, valid, work, epochs, seed)
                    results.setdefault((dataset, epochs, config), []).append(outcome)
                    if args.results is not None:
                        line = {"dataset": dataset, "epochs": epochs, "config": config, "seed": seed,
                                "accuracy": outcome[0], "seconds": outcome[1]}  # fmt: skip
                        with args.results.open("a", encoding="utf-8") as stream:
                            stream.write(json.dumps(line) + "\n")
            _print_table(dataset, epochs, args.configs, results)
    return 0


def read_results(files: list[Path]) -> dict[tuple[str, int, str], list[tuple[float | None, float]]]:
    results: dict[tuple[str, int, str], list[tuple[float | None, float]]] = {}
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            run = json.loads(line)
            results.setdefault((run["dataset"], run["epochs"], run["config"]), []).append(
                (run["accuracy"], run["seconds"])
            )
    return results


def print_tables(results: dict[tuple[str, int, str], list[tuple[float | None, float]]]) -> None:
    """A table a dataset and schedule, configs in CONFIGS' order."""
    for dataset in dict.fromkeys(d for d, _, _ in results):
        for epochs in sorted({e for d, e, _ in results if d == dataset}):
            measured = [c for d, e, c in results if (d, e) == (dataset, epochs)]
            configs = sorted(
                dict.fromkeys(measured), key=lambda c: list(CONFIGS).index(c) if c in CONFIGS else len(CONFIGS)
            )
            _print_table(dataset, epochs, configs, results)


def _print_table(dataset: str, epochs: int, configs: list[str], results: dict) -> None:
    print(f"\n{dataset}, {epochs} epochs ({len(results[(dataset, epochs, configs[0])])} seeds)")
    print(f"  {'config':24} {'accuracy':>8} {'range':>13} {'vs today':>8} {'seconds':>8}")
    today = statistics.mean(a for a, _ in results.get((dataset, epochs, "today"), [(float("nan"), 0)]))
    for config in configs:
        runs = results[(dataset, epochs, config)]
        accuracies = [a for a, _ in runs if a is not None]
        if not accuracies:
            print(f"  {config:24} cannot train on this data (images of different sizes)")
            continue
        mean = statistics.mean(accuracies)
        print(f"  {config:24} {mean:8.4f} {min(accuracies):6.4f}-{max(accuracies):6.4f} {mean - today:+8.4f}"
              f" {statistics.mean(s for _, s in runs):8.1f}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
