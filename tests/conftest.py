"""Shared test fixtures: the designer's golden folders and small real image datasets made on the fly."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from train_pytorch_model.formats.model_directory import load_weights, read_model_directory
from train_pytorch_model.local.command_line import load_component_spec, render_command, run_component
from train_pytorch_model.model.families import RESNET_MODULE
from train_pytorch_model.output.run_record import Hyperparameters
from train_pytorch_model.settings import Recipe
from train_pytorch_model.training.optimizer import OPTIMIZERS, schedule_name

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
DESIGNER = SHARED / "fixtures" / "designer"


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under root, links not followed: relative path -> sha256 of its bytes, 'dir', or the link's
    target. Equal before and after a run means the run changed nothing in that folder."""
    result = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[relative] = "link:" + os.readlink(path)
            elif path.is_dir():
                result[relative] = "dir"
            else:
                result[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def write_digits_subset(destination: Path, classes=(0, 1, 7), per_class: int = 30, offset: int = 0) -> Path:
    """An ImageFolder of real 8x8 handwritten digits (scikit-learn's bundled scans), per_class PNGs a class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in classes:
        indices = np.flatnonzero(digits.target == label)[offset : offset + per_class]
        folder = destination / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for index in indices:
            pixels = np.clip(digits.images[index] * (255.0 / 16.0), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"d{index:04d}.png")
    return destination


@pytest.fixture(scope="session")
def designer_fixtures() -> Path:
    if not DESIGNER.is_dir():
        pytest.fail(f"the designer fixtures are missing at {DESIGNER}")
    return DESIGNER


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> tuple[Path, Path]:
    """(train, valid) ImageFolders: 3 digit classes, 30 training and 12 validation images each."""
    root = tmp_path_factory.mktemp("digits")
    train = write_digits_subset(root / "train", per_class=30, offset=0)
    valid = write_digits_subset(root / "valid", per_class=12, offset=30)
    return train, valid


@pytest.fixture(scope="session")
def untrained_resnet18(tmp_path_factory) -> Path:
    import torch

    from train_pytorch_model.init_model import write_untrained_model

    torch.manual_seed(0)  # the same starting weights in every test session
    folder = tmp_path_factory.mktemp("untrained") / "resnet18"
    write_untrained_model(folder, "resnet18", pretrained=False)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# small image files


def write_png(path: Path, size: tuple[int, int] = (8, 8), color=(200, 30, 30)) -> Path:
    """An RGB PNG of size (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def png_bytes(size: tuple[int, int] = (8, 8), color=(10, 200, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 2) -> Path:
    for index, name in enumerate(classes):
        for i in range(per_class):
            write_png(root / name / f"{name}{i}.png", color=(40 * index, 100, 20 * i))
    return root


# Data Labeling's export: JSON lines with the image column converted to streams, which mltable opens.
DATA_LABELING_MLTABLE = """\
paths:
  - file: ./{jsonl}
transformations:
  - read_json_lines:
      encoding: utf8
      invalid_lines: error
      include_path_column: false
  - convert_column_types:
      - columns: image_url
        column_type: stream_info
type: mltable
"""


def write_mltable(folder: Path, lines: list[dict], jsonl: str = "annotations.jsonl", definition: str | None = None):
    """An MLTable folder over JSON lines in AutoML's image-classification schema (Data Labeling's by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / jsonl, "w", encoding="utf-8") as stream:
        stream.writelines(json.dumps(line) + "\n" for line in lines)
    (folder / "MLTable").write_text((definition or DATA_LABELING_MLTABLE).format(jsonl=jsonl), encoding="utf-8")
    return folder


def labeling_lines(image_folder: Path, url=lambda path: path.as_posix()) -> list[dict]:
    """One Data Labeling line per image of an ImageFolder tree (its folder names as labels)."""
    lines = []
    for path in sorted(image_folder.rglob("*.png")):
        with Image.open(path) as image:
            width, height = image.size
        details = {"format": "png", "width": f"{width}px", "height": f"{height}px"}
        lines.append({"image_url": url(path), "image_details": details, "label": path.parent.name})
    return lines


def exif_jpeg(path: Path, orientation: int) -> Path:
    """A 4x2 JPEG, left half red and right half blue, with the given EXIF orientation."""
    image = Image.new("RGB", (4, 2), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 2, 2))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=100, subsampling=0)
    return path


def by_name(loaded) -> dict[str, str]:
    """A listing's labels by file name."""
    return {record.path.name: record.label for record in loaded.records}


# ----------------------------------------------------------------------------------------------------------------
# model folders: the designer's golden ones, and small hand-made ones


@pytest.fixture(scope="module")
def golden_untrained(designer_fixtures) -> Path:
    return designer_fixtures / "untrained_model"


@pytest.fixture(scope="module")
def golden_trained(designer_fixtures) -> Path:
    return designer_fixtures / "trained_model"


@pytest.fixture(scope="module")
def golden_untrained_state(golden_untrained) -> dict[str, torch.Tensor]:
    return load_weights(read_model_directory(golden_untrained))


@pytest.fixture(scope="module")
def golden_trained_state(golden_trained) -> dict[str, torch.Tensor]:
    return load_weights(read_model_directory(golden_trained, subject="Trained model"), subject="Trained model")


def small_model_folder(folder: Path, spec: dict | None = None, meta: dict | None = None, weights=None) -> Path:
    """A valid (designer-shaped) model folder with a tiny 'model' file; parts replaced as given."""
    folder.mkdir(parents=True, exist_ok=True)
    if meta is None:
        meta = {"type": "ModelDirectory", "extension": {}, "model": "model_spec.yaml"}
    if spec is None:
        spec = base_spec()
    (folder / "_meta.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    (folder / "model_spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    if weights is None:
        weights = {"model.fc.weight": torch.zeros(2, 2)}
    torch.save(weights, folder / "model")
    return folder


def base_spec(**init_params) -> dict:
    params = {"model_name": "resnet18", "pretrained": False, "zero_init_residual": False, **init_params}
    return {
        "flavor": {"name": "pytorch", "serialization_method": "state_dict"},
        "model_file": "model",
        "time_created": "2026-11-25T06:20:34.640419+0000",
        "flavor_extras": {"module": RESNET_MODULE, "class": "ResNet", "is_cuda": False, "init_params": params},
        "task_type": "MultiClassification",
    }


# ----------------------------------------------------------------------------------------------------------------
# the companion components, run through their own command lines

COMPONENTS = REPO_ROOT / "components"
IMAGEFOLDER = DESIGNER / "inputs" / "imagefolder"
GOLDEN_DIRECTORY = DESIGNER / "image_directory"
GOLDEN_SCORED = DESIGNER / "scored_dataset"


@pytest.fixture(scope="module")
def aml() -> Any:
    return pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is an optional extra: pip install .[azure]")


def component_yaml(stem: str) -> Path:
    return COMPONENTS / f"{stem}.yaml"


def run_companion(stem: str, inputs: dict[str, object], outputs: dict[str, Path]):
    return run_component(component_yaml(stem), inputs, outputs, check=False, capture_output=True)


def run_in_process(yaml_path: Path, inputs: dict[str, object], outputs: dict[str, Path]) -> int:
    """The YAML's own command line, rendered as Azure ML renders it, run in this interpreter: the module its
    ``python -m`` names gets the rendered arguments. For tests that run many networks, where a process per run
    would spend most of its time importing torch."""
    command = render_command(load_component_spec(yaml_path), inputs, outputs)
    python, flag, module, *arguments = shlex.split(command)
    assert (python, flag) == ("python", "-m"), command
    return importlib.import_module(module).main(arguments)


def assert_user_error(result, name: str, exit_code: int) -> None:
    """The component failed as a user error should: its exit code, one line on stderr naming the error, no
    traceback."""
    assert result.returncode == exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: "), result.stderr
    assert "Traceback" not in result.stderr


def assert_same_files(actual: Path, expected: Path) -> None:
    assert tree_digest(actual) == tree_digest(expected)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------------------------------------------
# the run record


def hyperparameters(**changes) -> Hyperparameters:
    """The designer's defaults and today's recipe, with the given fields changed."""
    values = {
        "epochs": 5,
        "batch_size": 16,
        "world_size": 1,
        "learning_rate": 0.001,
        "random_seed": 1,
        "patience": 3,
        "image_size": (32, 48),
        "image_fit": "stretch",
        "crop_ratio": 1.0,
        "optimizer": OPTIMIZERS["sgd"].name,
        "momentum": OPTIMIZERS["sgd"].momentum,
        "nesterov": OPTIMIZERS["sgd"].nesterov,
        "weight_decay": OPTIMIZERS["sgd"].weight_decay,
        "lr_schedule": schedule_name(0),
        "recipe": Recipe(),
        "validation_fraction": None,
    }
    return Hyperparameters(**{**values, **changes})


# ----------------------------------------------------------------------------------------------------------------
# a small real disk


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of a given size (tmpfs), to see what a full disk does; skipped where mounting one needs
    privileges this machine does not give (the injected full disk below runs everywhere)."""
    mounts: list[Path] = []

    def make(megabytes: int) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a small file system here ({mounted.stderr.strip()})")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_disk(folder: Path, leave_megabytes: int) -> Path:
    """Write a file that leaves about leave_megabytes free on folder's file system."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free - (leave_megabytes << 20)
    with open(filler, "wb") as stream:
        for _ in range(max(0, free) >> 20):
            stream.write(b"\0" * (1 << 20))
    return filler


# ----------------------------------------------------------------------------------------------------------------
# pretrained weights from a hub cache the tests write, with no network


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def cache_weights(torch_home: Path, architecture: str, seed: int = 1234) -> dict[str, torch.Tensor]:
    """A weights file for architecture's DEFAULT weights in torch_home's hub cache, where torchvision looks
    before downloading: random weights of the network the real file holds (seeded), returned as saved."""
    import torchvision

    weights = torchvision.models.get_model_weights(architecture).DEFAULT
    options = {"aux_logits": True, "init_weights": True} if architecture in ("googlenet", "inception_v3") else {}
    torch.manual_seed(seed)
    state = torchvision.models.get_model(architecture, weights=None, **options).state_dict()
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(state, checkpoints / os.path.basename(weights.url))
    return state


@pytest.fixture
def checkpoint_every_epoch(monkeypatch):
    """Every epoch's checkpoint written, as on a disk that keeps up with the epochs. Otherwise an epoch whose
    save finds the previous write still running is not saved, and which epochs a test finds on disk would
    depend on the machine's speed."""
    from train_pytorch_model.training import checkpoint

    real_save = checkpoint.Checkpoint.save

    def save_after_the_previous(self, *args, **kwargs):
        self.wait()
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpoint, "save", save_after_the_previous)
