"""The designer's model folders (designer-formats.md section 3): reading an UntrainedModelDirectory or a
trained ModelDirectory, and writing both."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..errors import InvalidModelDirectoryError, first_line
from ..model.families import ALLOWED_CLASSES, DESIGNER_MEAN, DESIGNER_STD, FAMILIES, Family
from .archives import inside
from .class_names import class_name
from .designer_files import dump_yaml, now_timestamp

log = logging.getLogger(__name__)

MODEL_FILE = "model"
SPEC_FILE = "model_spec.yaml"
LABEL_FILE = "index_to_label.csv"
TASK_TYPE = "MultiClassification"
PRE_PROCESSOR_MODULE = "azureml.designer.core.model.model_spec.builtin_model_meta.pre_processor"
FIX_HINT = "Connect the output of a DenseNet, ResNet or Init Image Model component."
NEEDS_PYTORCH = "Train PyTorch Model needs a PyTorch model: a DenseNet, a ResNet or any Init Image Model network."
# init_params every family may have: the architecture, whether (and which) pretrained weights, the outputs.
COMMON_INIT_PARAMS = ("model_name", "pretrained", "weights", "num_classes")


@dataclass
class ModelSpec:
    """What a model folder says about its network."""

    root: Path
    family: Family
    architecture: str
    pretrained: bool
    flags: dict[str, bool]  # the family's init parameters (its choices, and those its pretrained weights set)
    weights_file: Path
    num_classes: int | None = None
    classes: list[str] | None = None
    mean: tuple[float, ...] = DESIGNER_MEAN
    std: tuple[float, ...] = DESIGNER_STD
    init_params: dict = field(default_factory=dict)
    weights_name: str | None = None  # which pretrained weights (torchvision's name, IMAGENET1K_V1 ...), if recorded


def _fail(subject: str, root: Path, reason: str, fix: str = FIX_HINT) -> InvalidModelDirectoryError:
    return InvalidModelDirectoryError(f'ModelDirectory "{root}" is invalid: {reason}', fix, subject=subject)


def _read_yaml(path: Path, subject: str, root: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _fail(subject, root, f"'{path.name}' cannot be read ({exc}).") from exc
    if not isinstance(data, dict):
        raise _fail(subject, root, f"'{path.name}' is not a YAML mapping.")
    return data


def read_model_directory(path: str | Path, subject: str = "Untrained model") -> ModelSpec:
    """Parse and check a model folder without importing or unpickling anything."""
    root = Path(path)
    spec = _read_spec(root, subject)
    family, init_params = _network_of(spec, subject, root)
    task = spec.get("task_type", TASK_TYPE)
    if task != TASK_TYPE:
        raise _fail(subject, root, f"its task type is '{task}'; only {TASK_TYPE} is trained.")
    weights_file = root / str(spec.get("model_file") or MODEL_FILE)
    if not inside(root, weights_file):
        raise _fail(subject, root, f"the weights file '{weights_file.name}' lies outside the folder (a link?).")
    if not weights_file.is_file():
        raise _fail(subject, root, f"the weights file '{weights_file.name}' is missing.")
    num_classes = init_params.get("num_classes")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise _fail(subject, root, f"num_classes is {num_classes!r}, not a positive integer.")
    mean, std = _normalization(spec, subject, root)
    return ModelSpec(
        root=root,
        family=family,
        architecture=init_params["model_name"],
        pretrained=_flag(init_params, "pretrained", subject, root),
        flags=_family_flags(init_params, family, subject, root),
        weights_file=weights_file,
        num_classes=num_classes,
        classes=_read_labels(root, spec, subject),
        mean=mean,
        std=std,
        init_params=dict(init_params),
        weights_name=_weights_name(init_params, subject, root),
    )


def _read_spec(root: Path, subject: str) -> dict:
    """The model spec that '_meta.yaml' points to, checked to describe a PyTorch state-dict model."""
    if not root.is_dir():
        raise _fail(subject, root, "the folder does not exist.")
    if not (root / "_meta.yaml").is_file():
        raise _fail(subject, root, "it has no '_meta.yaml', so it is not a model folder.")
    meta = _read_yaml(root / "_meta.yaml", subject, root)
    if meta.get("type") != "ModelDirectory":
        raise _fail(subject, root, f"its type is '{meta.get('type')}', not ModelDirectory.")
    spec_path = root / str(meta.get("model") or SPEC_FILE)
    if not inside(root, spec_path) or not spec_path.is_file():
        raise _fail(subject, root, f"the model spec '{spec_path.name}' is missing.")
    spec = _read_yaml(spec_path, subject, root)
    if "file_name" in spec and "model_file" not in spec:
        raise _fail(subject, root, "it holds a legacy pickled (non-PyTorch) model.", NEEDS_PYTORCH)
    flavor = spec.get("flavor") or {}
    if not isinstance(flavor, dict) or str(flavor.get("name", "")).lower() != "pytorch":
        shown = flavor.get("name") if isinstance(flavor, dict) else flavor
        raise _fail(subject, root, f"its flavor is {shown!r}, not pytorch.", NEEDS_PYTORCH)
    if flavor.get("serialization_method", "state_dict") != "state_dict":
        raise _fail(
            subject,
            root,
            f"its serialization method is '{flavor.get('serialization_method')}'; only "
            "state_dict models are read (pickled modules could run arbitrary code).",
        )
    return spec


def _network_of(spec: dict, subject: str, root: Path) -> tuple[Family, dict]:
    """The allowlisted family that the spec's module and class name, and its checked init parameters."""
    extras = spec.get("flavor_extras") or {}
    if not isinstance(extras, dict):
        raise _fail(subject, root, f"flavor_extras is {extras!r}, not a mapping.")
    key = (extras.get("module"), extras.get("class"))
    if not all(isinstance(part, str) for part in key) or key not in ALLOWED_CLASSES:
        allowed = ", ".join(f"{m}.{c}" for m, c in ALLOWED_CLASSES)
        raise _fail(
            subject,
            root,
            f"it names the network class {key[0]}.{key[1]}, which is not an allowed network. Allowed: {allowed}.",
        )
    family = FAMILIES[ALLOWED_CLASSES[key]]
    init_params = extras.get("init_params") or {}
    if not isinstance(init_params, dict):
        raise _fail(subject, root, "flavor_extras.init_params is not a mapping.")
    architecture = init_params.get("model_name")
    if architecture not in family.architectures:
        raise _fail(
            subject,
            root,
            f"'{architecture}' is not a supported {family.name}; choose one of {', '.join(family.architectures)}.",
        )
    unknown = set(init_params) - {*COMMON_INIT_PARAMS, *family.flags, *family.recorded}
    if unknown:
        raise _fail(subject, root, f"init_params has unknown keys: {', '.join(sorted(map(str, unknown)))}.")
    return family, init_params


def _family_flags(init_params: dict, family: Family, subject: str, root: Path) -> dict[str, bool]:
    """Every flag of the family (its default when the folder does not say), and the recorded parameters the
    folder has."""
    flags = {name: _flag(init_params, name, subject, root, default) for name, default in family.flags.items()}
    flags.update({name: _flag(init_params, name, subject, root) for name in family.recorded if name in init_params})
    return flags


def _weights_name(init_params: dict, subject: str, root: Path) -> str | None:
    name = init_params.get("weights")
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise _fail(subject, root, f"init_params.weights is {name!r}, not the name of torchvision weights.")
    return name


def _flag(init_params: dict, name: str, subject: str, root: Path, default: bool = False) -> bool:
    """A yes/no parameter: YAML booleans (and 0/1) only; the string 'false' is not silently true."""
    value = init_params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise _fail(subject, root, f"init_params.{name} is {value!r}, not true or false.")


def _normalization(spec: dict, subject: str, root: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std recorded in the spec's inputs (the designer's default when absent)."""
    inputs = spec.get("inputs") or []
    if not isinstance(inputs, list):
        raise _fail(subject, root, f"'inputs' is {inputs!r}, not a list.")
    for item in inputs:
        try:
            params = ((item or {}).get("pre_processor") or {}).get("init_params") or {}
            mean, std = params.get("mean") or DESIGNER_MEAN, params.get("std") or DESIGNER_STD
            mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        except (AttributeError, TypeError, ValueError) as exc:
            raise _fail(subject, root, f"the input normalization in the spec cannot be read ({exc}).") from exc
        if len(mean) != 3 or len(std) != 3 or not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
            raise _fail(subject, root, f"the input normalization (mean {mean}, std {std}) is not 3 finite values.")
        return mean, std
    return DESIGNER_MEAN, DESIGNER_STD


def _read_labels(root: Path, spec: dict, subject: str) -> list[str] | None:
    name = spec.get("label_map_file")
    if not name:
        return None
    path = root / str(name)
    if not inside(root, path) or not path.is_file():
        raise _fail(subject, root, f"the label map '{name}' is missing.")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _fail(subject, root, f"the label map '{name}' cannot be read ({exc}).") from exc
    labels = {}
    for row in rows[1:]:
        if len(row) >= 2 and row[0].strip().lstrip("-").isdigit():
            labels[int(row[0])] = class_name(row[1])
    size = max(labels) + 1 if labels else 0
    return [labels.get(i, str(i)) for i in range(size)]


def load_weights(spec: ModelSpec, subject: str = "Untrained model") -> dict[str, torch.Tensor]:
    """The state dict, loaded with weights_only so that a pickle of arbitrary objects is refused, not run."""
    try:
        state = torch.load(spec.weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler runs nothing: any failure means a broken or unsafe file
        raise _fail(
            subject,
            spec.root,
            f"the weights file '{spec.weights_file.name}' cannot be loaded as a tensor state dict ({first_line(exc)}).",
            "It may be truncated, or hold pickled objects other than tensors, which are refused. " + FIX_HINT,
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _fail(
            subject,
            spec.root,
            f"the weights file '{spec.weights_file.name}' is not a state dict of named tensors.",
        )
    return dict(state)


def spec_dict(family: Family, init_params: dict, *, trained: bool, mean=None, std=None) -> dict:
    spec = {
        "flavor": {"name": "pytorch", "serialization_method": "state_dict"},
        "model_file": MODEL_FILE,
        "time_created": now_timestamp(),
        "flavor_extras": {
            "module": family.module,
            "class": family.class_name,
            "is_cuda": False,
            "init_params": init_params,
        },
        "task_type": TASK_TYPE,
    }
    if trained:
        mean = DESIGNER_MEAN if mean is None else mean
        std = DESIGNER_STD if std is None else std
        spec["label_map_file"] = LABEL_FILE
        spec["inputs"] = [
            {
                "name": "image",
                "pre_processor": {
                    "module": PRE_PROCESSOR_MODULE,
                    "class": "ImageNormalizer",
                    "init_params": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
                },
            }
        ]
    return spec


def write_label_map(classes: list[str], path: Path) -> None:
    """pandas-style ',label' CSV: the designer reads it with read_csv(index_col=0)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", "label"])
    for index, name in enumerate(classes):
        writer.writerow([index, name])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def write_model_directory(
    folder: Path,
    state_dict: Mapping[str, torch.Tensor],
    family: Family,
    init_params: dict,
    *,
    classes: list[str] | None = None,
    mean=None,
    std=None,
) -> None:
    """Write a model folder into folder (which should be a staging folder; '_meta.yaml' is written last)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, folder / MODEL_FILE)
    trained = classes is not None
    dump_yaml(spec_dict(family, init_params, trained=trained, mean=mean, std=std), folder / SPEC_FILE)
    if trained:
        write_label_map(classes, folder / LABEL_FILE)
    meta = {"type": "ModelDirectory", "extension": {}, "model": SPEC_FILE}
    if trained:
        meta.update({"registerModel": True, "modelOutputPath": "trained_model_outputs"})
    dump_yaml(meta, folder / "_meta.yaml")
