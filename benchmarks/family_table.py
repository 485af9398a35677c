"""The README's table of network families: what the allowlist and torchvision's weights say of each family,
beside the CPU figures a throughput sweep measured.

    python benchmarks/throughput.py --model resnet18 --model densenet121 ... --config 32x16 \\
        --seconds-per-epoch 8 --epochs 3 --json sweep.json
    python benchmarks/family_table.py [sweep.json]

Parameters, sizes and preprocessing come from torchvision's weights metadata (no download); the step time and
the component's ratio come from the sweep, for the one network of each family it measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT / "src"))


def _span(values: list[float], unit: str = "") -> str:
    low, high = min(values), max(values)
    return f"{low:g}{unit}" if low == high else f"{low:g}-{high:g}{unit}"


def family_rows(sweep: list[dict]) -> list[str]:
    import torchvision

    from train_pytorch_model.model.families import FAMILIES, training_side

    measured = {result["config"]["model"]: result for result in sweep}
    rows = []
    for family in FAMILIES.values():
        weights = [torchvision.models.get_model_weights(a).DEFAULT for a in family.architectures]
        params = _span([round(w.meta["num_params"] / 1e6, 1) for w in weights], "M")
        native = _span([w.transforms().crop_size[0] for w in weights])
        recipes = sorted(
            {
                f"{w.transforms().resize_size[0]}->{w.transforms().crop_size[0]} "
                f"{str(w.transforms().interpolation.value)}"
                for w in weights
            }
        )
        recipe = recipes[0] if len(recipes) == 1 else f"{recipes[0]} ... ({len(recipes)} kinds)"
        statistics = {tuple(round(v, 3) for v in w.transforms().mean) for w in weights}
        if statistics != {(0.485, 0.456, 0.406)}:
            recipe += "; some with mean/std 0.5"
        minimum = training_side(family.architectures[0], 1, family.flags.get("aux_logits", True))
        sizes = f"{family.fixed_size} only" if family.fixed_size else f"{minimum} / {native}"
        if family.min_size_without_aux:
            sizes += f" ({family.min_size_without_aux} without aux_logits)"
        cpu = "not measured"
        for architecture in family.architectures:
            if architecture in measured:
                result = measured[architecture]
                config, analysis = result["config"], result["analysis"]
                speed = result["ceiling"]["train"]["images_per_second"]
                cpu = (
                    f"{architecture} at {config['trained_at']}px: {1000 * config['batch_size'] / speed:.0f} ms a "
                    f"step, ratio {analysis['median_ratio_epoch']:.2f}"
                )
        names = ", ".join(family.architectures)
        rows.append(f"| {family.class_name} | {names} | {params} | {sizes} | {recipe} | {cpu} |")
    return rows


def main(argv: list[str]) -> int:
    sweep = json.loads(Path(argv[0]).read_text(encoding="utf-8")) if argv else []
    print(
        "| family | architectures | parameters | min / native side | pretrained weights' preprocessing "
        "| CPU, batch 16 |"
    )
    print("|---|---|---|---|---|---|")
    for row in family_rows(sweep):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
