"""The benchmarks whose figures the README quotes: the data they make and that they run (small sizes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    """A benchmark script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def counts(folder: Path) -> dict[str, int]:
    return {entry.name: len(list(entry.iterdir())) for entry in sorted(folder.iterdir())}


def test_recipe_imbalanced_digits_thin_out_training_classes_and_keep_validation_balanced(tmp_path: Path) -> None:
    recipe = load("recipe")
    train, valid = recipe.write_dataset("imbalanced", tmp_path / "imbalanced", per_class=40)
    train_counts = [counts(train)[str(label)] for label in range(10)]
    assert train_counts[0] == 40 and train_counts[-1] == 4
    assert train_counts == sorted(train_counts, reverse=True) and len(set(train_counts)) == 10
    assert set(counts(valid).values()) == {17}  # 30% of 40 / 70%, every class alike
    balanced, _ = recipe.write_dataset("digits", tmp_path / "digits", per_class=40)
    assert set(counts(balanced).values()) == {40}
    alike_train, alike_valid = recipe.write_dataset("imbalanced_alike", tmp_path / "alike", per_class=40)
    assert counts(alike_train) == counts(train)
    valid_counts = [counts(alike_valid)[str(label)] for label in range(10)]
    assert valid_counts[0] == 17 and valid_counts[-1] == 2 and valid_counts == sorted(valid_counts, reverse=True)


def test_recipe_configs_measure_the_defaults_against_the_plain_loss_and_the_other_weighting() -> None:
    from train_pytorch_model.train import parse_args

    recipe = load("recipe")
    base = ["--untrained-model", "m", "--training-dataset", "t", "--trained-model", "o"]
    recipes = {name: parse_args([*base, *options]).recipe for name, options in recipe.CONFIGS.items()}
    assert recipes["defaults"].class_weighting == "inverse_sqrt"
    assert recipes["today"].class_weighting == "none"
    assert recipes["class_weighting_inverse"].class_weighting == "inverse"


@pytest.mark.parametrize("level", ["light", "strong"])
def test_augmentation_cost_prints_a_ratio_per_level(level: str, capsys: pytest.CaptureFixture) -> None:
    cost = load("augmentation_cost")
    code = cost.main(["--config", "resnet18:16x4", "--levels", level, "--repeats", "2", "--steps", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("resnet18")]
    assert len(rows) == 1 and rows[0][1] == level
    median = float(rows[0][2].rstrip("%")) / 100
    assert median > 0  # the augmenter did work
    assert code == (0 if median <= cost.BUDGET else 1)
