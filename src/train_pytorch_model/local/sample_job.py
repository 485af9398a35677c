"""The quick start's main job: Train PyTorch Model on the built-in sample, run exactly as Azure ML runs it.

    python -m train_pytorch_model.local.sample_job [--workdir runs/sample] [--model-name resnet18]

1. writes the sample (scikit-learn's handwritten digits as PNG files, a training and a validation folder);
2. writes an untrained model with this project's ResNet/DenseNet entry (no pretrained weights: no network);
3. renders component.yaml's command with the component's default parameters and runs it;
4. prints the validation accuracy and where the model and the MLflow run went.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/sample", help="where data, model and MLflow store go")
    parser.add_argument("--model-name", default="resnet18")
    parser.add_argument("--component", default=str(REPO_ROOT / "component.yaml"))
    args = parser.parse_args(argv)

    from ..init_model import write_untrained_model
    from .command_line import run_component
    from .sample_data import write_digits

    workdir = Path(args.workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    train, valid = write_digits(workdir / "data")
    untrained = workdir / "untrained_model"
    import torch

    torch.manual_seed(0)  # the same starting weights every time, so that the quick start's figure repeats
    write_untrained_model(untrained, args.model_name, pretrained=False)
    trained = workdir / "trained_model"
    env = {
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}"),
        "MLFLOW_EXPERIMENT_NAME": os.environ.get("MLFLOW_EXPERIMENT_NAME", "train_pytorch_model_sample"),
    }
    print(
        f"Sample: {sum(1 for _ in train.rglob('*.png'))} training and {sum(1 for _ in valid.rglob('*.png'))} "
        f"validation images of 10 digits in {workdir / 'data'}",
        flush=True,
    )
    result = run_component(
        args.component,
        inputs={"untrained_model": untrained, "training_dataset": train, "validation_dataset": valid},
        outputs={"trained_model": trained},
        env=env,
        check=False,
    )
    if result.returncode != 0:
        print(f"The component failed with exit code {result.returncode}.", file=sys.stderr)
        return result.returncode
    summary = json.loads((trained / "training_summary.json").read_text(encoding="utf-8"))
    print()
    print(
        f"Validation accuracy: {summary['best_valid_accuracy']:.4f} (best epoch {summary['best_epoch']} "
        f"of {summary['last_epoch']})"
    )
    print(f"Trained model (ModelDirectory + MLflow model): {trained}")
    print(f"MLflow run: {summary['mlflow_run_id']} in {env['MLFLOW_TRACKING_URI']}")
    print(f"  browse it with: mlflow ui --backend-store-uri {env['MLFLOW_TRACKING_URI']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
