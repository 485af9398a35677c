"""Helpers of scripts/check_environment.sh; see that script for what the check is and why.

    python scripts/check_environment.py pins conda.yaml REQUIREMENTS   # any Python with PyYAML: the pins out
    python scripts/check_environment.py versions                       # in the built venv
    python scripts/check_environment.py run WORKDIR [--require-onnx]   # in the built venv: the components run

Only the standard library and PyYAML at module level, so that `pins` runs before the venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORTED = ("torch", "torchvision", "mlflow", "azureml-mlflow", "mltable", "onnx", "onnxruntime", "pandas", "numpy")
EPOCHS = 2
ONNX_TOLERANCE = 1e-4  # the trainer's own tolerance for its export (output/onnx_export.py)


class CheckFailed(Exception):
    pass


def pins(conda_yaml: Path, requirements: Path) -> int:
    """Write conda.yaml's pip list to REQUIREMENTS and print its python's major.minor. Only exact pins pass:
    a range would make the checked environment a different one from the image Azure ML builds."""
    import yaml

    spec = yaml.safe_load(conda_yaml.read_text(encoding="utf-8"))
    python, pip_list = None, None
    for entry in spec.get("dependencies", []):
        if isinstance(entry, dict) and "pip" in entry:
            pip_list = entry["pip"]
        elif isinstance(entry, str) and (match := re.fullmatch(r"python\s*=?=\s*(\d+\.\d+)(\.[\d*]+)?", entry)):
            python = match.group(1)
    if not python or not pip_list:
        raise CheckFailed(f"{conda_yaml} has no 'python=X.Y' dependency or no pip list")
    loose = [p for p in pip_list if not re.fullmatch(r"[A-Za-z0-9._\-\[\],]+==[A-Za-z0-9.+!\-]+", str(p).strip())]
    if loose:
        raise CheckFailed(f"{conda_yaml}: not exact 'name==version' pins: {', '.join(map(str, loose))}")
    requirements.write_text("".join(f"{p}\n" for p in pip_list), encoding="utf-8")
    print(python)
    return 0


def versions() -> int:
    from importlib.metadata import PackageNotFoundError, version

    for name in REPORTED:
        try:
            print(f"  {name:15} {version(name)}")
        except PackageNotFoundError:
            print(f"  {name:15} (not installed)")
    import torch

    print(f"  {'cuda':15} built for {torch.version.cuda}, available here: {torch.cuda.is_available()}")
    return 0


def component(yaml_path: str, *bindings: str) -> None:
    """Run one component through its YAML command line, as Azure ML renders it (local/command_line.py)."""
    command = [sys.executable, "-m", "train_pytorch_model.local.command_line", str(REPO / yaml_path)]
    for binding in bindings:
        command += ["--output" if binding.startswith("out:") else "--input", binding.removeprefix("out:")]
    print(f"\n=== {yaml_path}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise CheckFailed(f"the {yaml_path} command failed (its log is above)")


def run(workdir: Path, require_onnx: bool) -> int:
    import pandas as pd

    data, untrained, trained, scored = (workdir / n for n in ("data", "untrained", "trained", "scored"))
    # The trainer logs to MLflow: a store in the work folder, not ./mlruns in src/ (the command's cwd).
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "check_environment")

    # The project's sample: scikit-learn's digits as PNGs. scikit-learn is not pinned in conda.yaml; mlflow
    # (the full package) requires it, so it is in the pinned environment anyway.
    print("\n=== sample data", flush=True)
    subprocess.run([sys.executable, "-m", "train_pytorch_model.local.sample_data", str(data)], check=True)
    validation = data / "valid"
    if (REPO / "src/train_pytorch_model/formats/mltable_dataset.py").exists():
        # The validation set as an MLTable over JSON lines (as Data Labeling exports it), so that the pinned
        # mltable / azureml-dataprep read one too; scoring still reads the ImageFolder tree.
        validation = write_mltable(data / "valid", data / "valid-mltable")
    component("components/init_image_model.yaml", "model_name=resnet18", "pretrained=false",
              f"out:untrained_model={untrained}")  # fmt: skip
    component("component.yaml", f"untrained_model={untrained}", f"training_dataset={data / 'train'}",
              f"validation_dataset={validation}", f"epochs={EPOCHS}", f"out:trained_model={trained}")  # fmt: skip
    component("components/score_image_model.yaml", f"trained_model={trained}", f"dataset={data / 'valid'}",
              f"out:scored_dataset={scored}")  # fmt: skip

    summary = json.loads((trained / "training_summary.json").read_text(encoding="utf-8"))
    layout = json.loads((trained / "dataset_summary.json").read_text(encoding="utf-8"))["validation"]["layout"]
    if validation.name == "valid-mltable" and layout != "MLTable":
        raise CheckFailed(f"the validation MLTable was read as {layout}, not as an MLTable")
    results = [
        f"training: {summary['last_epoch']} epochs, best validation accuracy {summary['best_valid_accuracy']:.4f} "
        f"(epoch {summary['best_epoch']}, validation set read as {layout}) on {summary.get('device', '?')}"
    ]
    frame = pd.read_parquet(scored / "_data.parquet")
    valid_images = sorted((data / "valid").rglob("*.png"))
    if len(frame) != len(valid_images) or "Scored Labels" not in frame:
        raise CheckFailed(f"scoring wrote {len(frame)} rows for {len(valid_images)} images, columns {list(frame)}")
    accuracy = (frame["Scored Labels"].astype(str) == frame["category"].astype(str)).mean()
    results.append(f"scoring: {len(frame)} images, accuracy {accuracy:.4f}")

    results += compare_models(trained, valid_images[:16], require_onnx)
    print("\n=== results\n" + "\n".join(f"  {line}" for line in results))
    return 0


def write_mltable(images: Path, folder: Path) -> Path:
    """An MLTable folder over JSON lines (image_url relative to the folder, label) listing the images' tree."""
    folder.mkdir()
    lines = [{"image_url": f"../{images.name}/{p.relative_to(images).as_posix()}", "label": p.parent.name}
             for p in sorted(images.rglob("*.png"))]  # fmt: skip
    (folder / "images.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    (folder / "MLTable").write_text(
        "paths:\n  - file: ./images.jsonl\ntransformations:\n  - read_json_lines:\n      encoding: utf8\n"
        "      invalid_lines: error\n  - convert_column_types:\n      - columns: image_url\n"
        "        column_type: stream_info\n",
        encoding="utf-8",
    )
    return folder


def compare_models(trained: Path, images: list[Path], require_onnx: bool) -> list[str]:
    """The MLflow model under PyTorch against its pyfunc flavour (the deployment's) and model.onnx under
    onnxruntime, on a batch of validation images."""
    import mlflow.pyfunc
    import mlflow.pytorch
    import numpy as np
    import pandas as pd
    import torch
    from PIL import Image

    prep = json.loads((trained / "preprocessing.json").read_text(encoding="utf-8"))
    height, width = prep["image_size"]
    mean, std = np.array(prep["mean"], np.float32), np.array(prep["std"], np.float32)
    rgb = [Image.open(p).convert("RGB").resize((width, height), Image.Resampling.BILINEAR) for p in images]
    pixels = [np.asarray(image, np.float32) / 255 for image in rgb]
    batch = ((np.stack(pixels) - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)

    network = mlflow.pytorch.load_model(str(trained), map_location="cpu").eval()
    with torch.no_grad():
        expected = torch.softmax(network(torch.from_numpy(batch)), dim=1).numpy()
    labels = [prep["classes"][i] for i in expected.argmax(1)]
    served = mlflow.pyfunc.load_model(str(trained)).predict(pd.DataFrame({"image": [str(p) for p in images]}))
    agree = int((served["Scored Labels"].astype(str) == pd.Series(labels)).sum())
    if agree < len(images) - 1:  # the pyfunc resizes with PIL itself: allow one borderline image
        raise CheckFailed(f"the pyfunc model agrees with PyTorch on only {agree}/{len(images)} images")
    results = [f"mlflow pyfunc: same label as PyTorch on {agree}/{len(images)} images"]

    if not (trained / "model.onnx").exists():
        if require_onnx:
            raise CheckFailed(f"no model.onnx in the output ({trained})")
        return [*results, "WARNING: no model.onnx in the output (REQUIRE_ONNX=1 makes this a failure)"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(trained / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = {o.name: v for o, v in zip(session.get_outputs(), session.run(None, {"image": batch}), strict=True)}
    got = outputs["probabilities"]
    difference = float(np.abs(got - expected).max())
    labels = json.loads((trained / "labels.json").read_text(encoding="utf-8"))
    if difference > ONNX_TOLERANCE or len(labels) != got.shape[1]:
        raise CheckFailed(f"model.onnx differs from the PyTorch model by {difference:.2e} (or labels.json has "
                          f"{len(labels)} classes for {got.shape[1]} outputs)")  # fmt: skip
    agree = int((got.argmax(1) == expected.argmax(1)).sum())
    return [*results, f"onnx: onnxruntime vs PyTorch on {len(batch)} images: max difference {difference:.2e}, "
                      f"same label on {agree}/{len(batch)}"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    pins_parser = commands.add_parser("pins")
    pins_parser.add_argument("conda_yaml", type=Path)
    pins_parser.add_argument("requirements", type=Path)
    commands.add_parser("versions")
    run_parser = commands.add_parser("run")
    run_parser.add_argument("workdir", type=Path)
    run_parser.add_argument("--require-onnx", action="store_true")
    args = parser.parse_args()
    try:
        if args.command == "pins":
            return pins(args.conda_yaml, args.requirements)
        if args.command == "versions":
            return versions()
        return run(args.workdir.resolve(), args.require_onnx)
    except (CheckFailed, subprocess.CalledProcessError) as error:
        print(f"\ncheck_environment: FAILED: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # a pinned library that behaves otherwise: its traceback says where
        import traceback

        traceback.print_exc()
        print(f"\ncheck_environment: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
