"""The designer's model folders (designer-formats.md section 3): reading the golden designer-written folders,
writing folders the designer can read, the model allowlist, refusing unsafe or broken inputs without running
anything, and the init-model command line."""

from __future__ import annotations

import builtins
import csv
import importlib
import io
import os
import pickle
import random
import re
import shutil
import socket
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torch import nn

from train_pytorch_model import init_model
from train_pytorch_model.errors import InvalidModelDirectoryError, InvalidParameterError
from train_pytorch_model.formats.model_directory import (
    load_weights,
    read_model_directory,
    write_label_map,
    write_model_directory,
)
from train_pytorch_model.init_model import write_untrained_model
from train_pytorch_model.model.networks import (
    DENSENET_MODULE,
    FAMILIES,
    RESNET_MODULE,
    DesignerNet,
    build_network,
    classifier_of,
    family_of_architecture,
    load_matching,
    replace_classifier,
    strip_parallel_prefixes,
)

TIME_LINE = re.compile(r"^time_created: (.*)$", re.MULTILINE)
TIME_VALUE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000$")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"


# ---------------------------------------------------------------------------------------------------------
# helpers and shared fixtures


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


def without_time(text: str) -> str:
    return TIME_LINE.sub("time_created: <time>", text)


def time_created(text: str) -> str:
    match = TIME_LINE.search(text)
    assert match, "model_spec.yaml has no time_created line"
    return match.group(1)


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


def assert_invalid(folder: Path, *phrases: str) -> InvalidModelDirectoryError:
    with pytest.raises(InvalidModelDirectoryError) as info:
        read_model_directory(folder)
    message = str(info.value)
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    return info.value


# ---------------------------------------------------------------------------------------------------------
# reading the golden designer-written folders


def test_golden_untrained_model_reads(golden_untrained, golden_untrained_state):
    spec = read_model_directory(golden_untrained)
    assert spec.architecture == "resnet18"
    assert spec.family.name == "resnet"
    assert spec.family is FAMILIES["resnet"]
    assert spec.pretrained is False
    assert spec.flag is False
    assert spec.num_classes is None
    assert spec.classes is None
    assert spec.weights_file == golden_untrained / "model"
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)

    state = golden_untrained_state
    assert len(state) == 122
    assert all(key.startswith("model.") for key in state)
    assert tuple(state["model.fc.weight"].shape) == (1000, 512)
    net = DesignerNet(build_network("resnet18"))
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.model.conv1.weight, state["model.conv1.weight"])


def test_golden_trained_model_reads(golden_trained, golden_trained_state):
    spec = read_model_directory(golden_trained, subject="Trained model")
    assert spec.architecture == "resnet18"
    assert spec.family.name == "resnet"
    assert spec.pretrained is False
    assert spec.num_classes == 2
    assert spec.classes == ["cat", "dog"]
    assert spec.init_params == {
        "model_name": "resnet18",
        "pretrained": False,
        "zero_init_residual": False,
        "num_classes": 2,
    }

    state = golden_trained_state
    assert all(key.startswith("model.") for key in state)
    assert tuple(state["model.fc.weight"].shape) == (2, 512)
    net = DesignerNet(build_network("resnet18", num_classes=spec.num_classes))
    net.load_state_dict(state, strict=True)
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 2)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------------
# writing: the same format as the designer


def test_untrained_model_matches_golden_format(untrained_resnet18, golden_untrained, golden_untrained_state):
    written, golden = untrained_resnet18, golden_untrained
    assert sorted(p.name for p in written.iterdir()) == ["_meta.yaml", "model", "model_spec.yaml"]
    assert (written / "_meta.yaml").read_bytes() == (golden / "_meta.yaml").read_bytes()

    text = (written / "model_spec.yaml").read_text(encoding="utf-8")
    golden_text = (golden / "model_spec.yaml").read_text(encoding="utf-8")
    assert without_time(text) == without_time(golden_text)
    assert list(yaml.safe_load(text)) == list(yaml.safe_load(golden_text))

    stamp = time_created(text)
    assert TIME_VALUE.match(stamp), stamp
    parsed = datetime.strptime(stamp, TIME_FORMAT)
    assert parsed.utcoffset().total_seconds() == 0
    assert abs((datetime.now(parsed.tzinfo) - parsed).total_seconds()) < 24 * 3600
    loaded = yaml.safe_load(text)["time_created"]
    assert isinstance(loaded, str) and loaded == stamp
    assert isinstance(yaml.safe_load(golden_text)["time_created"], str)

    state = torch.load(written / "model", map_location="cpu", weights_only=True)
    assert list(state) == list(golden_untrained_state)
    for key, value in golden_untrained_state.items():
        assert state[key].shape == value.shape, key
        assert state[key].dtype == value.dtype, key

    # and it reads back like the golden one
    spec = read_model_directory(written)
    assert (spec.architecture, spec.pretrained, spec.num_classes, spec.classes) == ("resnet18", False, None, None)
    DesignerNet(build_network("resnet18")).load_state_dict(load_weights(spec), strict=True)


def test_densenet_untrained_model(tmp_path):
    folder = tmp_path / "densenet"
    write_untrained_model(folder, "densenet121", pretrained=False, flag=True)
    spec_yaml = yaml.safe_load((folder / "model_spec.yaml").read_text(encoding="utf-8"))
    extras = spec_yaml["flavor_extras"]
    assert extras["module"] == DENSENET_MODULE
    assert extras["module"].endswith(".classification.densenet")
    assert extras["class"] == "DenseNet"
    assert list(extras["init_params"].items()) == [
        ("model_name", "densenet121"),
        ("pretrained", False),
        ("memory_efficient", True),
    ]
    assert "zero_init_residual" not in (folder / "model_spec.yaml").read_text(encoding="utf-8")

    spec = read_model_directory(folder)
    assert spec.family.name == "densenet"
    assert spec.architecture == "densenet121"
    assert spec.flag is True
    assert spec.pretrained is False
    state = load_weights(spec)
    assert all(key.startswith("model.") for key in state)
    assert tuple(state["model.classifier.weight"].shape) == (1000, 1024)
    DesignerNet(build_network("densenet121", flag=True)).load_state_dict(state, strict=True)


def test_trained_model_directory_matches_golden_format(tmp_path, golden_trained, golden_trained_state):
    folder = tmp_path / "trained"
    init_params = {"model_name": "resnet18", "pretrained": False, "zero_init_residual": False, "num_classes": 2}
    write_model_directory(
        folder,
        golden_trained_state,
        FAMILIES["resnet"],
        init_params,
        classes=["cat", "dog"],
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    assert (folder / "_meta.yaml").read_bytes() == (golden_trained / "_meta.yaml").read_bytes()
    assert (folder / "index_to_label.csv").read_bytes() == (golden_trained / "index_to_label.csv").read_bytes()

    text = (folder / "model_spec.yaml").read_text(encoding="utf-8")
    golden_text = (golden_trained / "model_spec.yaml").read_text(encoding="utf-8")
    written_spec, golden_spec = yaml.safe_load(text), yaml.safe_load(golden_text)
    assert list(written_spec) == list(golden_spec)
    assert list(written_spec["flavor_extras"]["init_params"]) == list(golden_spec["flavor_extras"]["init_params"])
    assert without_time(text) == without_time(golden_text)
    assert TIME_VALUE.match(time_created(text))

    spec = read_model_directory(folder, subject="Trained model")
    assert spec.classes == ["cat", "dog"]
    assert spec.num_classes == 2
    state = load_weights(spec)
    assert list(state) == list(golden_trained_state)
    assert all(torch.equal(state[k], v) for k, v in golden_trained_state.items())


def test_trained_model_directory_records_mean_and_std(tmp_path):
    folder = tmp_path / "trained"
    net = DesignerNet(build_network("resnet18", num_classes=3))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    init_params = {"model_name": "resnet18", "pretrained": True, "zero_init_residual": False, "num_classes": 3}
    write_model_directory(
        folder, net.state_dict(), FAMILIES["resnet"], init_params, classes=["a", "b", "c"], mean=mean, std=std
    )
    params = yaml.safe_load((folder / "model_spec.yaml").read_text())["inputs"][0]["pre_processor"]["init_params"]
    assert params == {"mean": list(mean), "std": list(std)}
    spec = read_model_directory(folder)
    assert spec.mean == mean and spec.std == std
    assert spec.pretrained is True
    assert spec.classes == ["a", "b", "c"]


def test_label_map_matches_golden_and_quotes(tmp_path, golden_trained):
    path = tmp_path / "index_to_label.csv"
    write_label_map(["cat", "dog"], path)
    assert path.read_bytes() == (golden_trained / "index_to_label.csv").read_bytes()
    assert path.read_bytes() == b",label\n0,cat\n1,dog\n"

    classes = ["cat, tabby", 'say "hi"', "dog"]
    write_label_map(classes, path)
    raw = path.read_text(encoding="utf-8")
    assert '"cat, tabby"' in raw
    rows = list(csv.reader(io.StringIO(raw)))
    assert rows == [["", "label"], ["0", "cat, tabby"], ["1", 'say "hi"'], ["2", "dog"]]


def test_label_map_with_comma_reads_back_from_folder(tmp_path):
    folder = tmp_path / "trained"
    classes = ["cat, tabby", "dog"]
    init_params = {"model_name": "resnet18", "pretrained": False, "zero_init_residual": False, "num_classes": 2}
    state = DesignerNet(build_network("resnet18", num_classes=2)).state_dict()
    write_model_directory(folder, state, FAMILIES["resnet"], init_params, classes=classes, mean=None, std=None)
    spec = read_model_directory(folder)
    assert spec.classes == classes
    # a null mean/std in the writer gives the designer's 0.5 defaults
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------------------
# pretrained weights: torchvision's weights API, from the hub cache, with no network


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_pretrained_weights_come_from_the_hub_cache(tmp_path, monkeypatch, no_network):
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    torch.manual_seed(1234)
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        reference.conv1.weight.fill_(0.123)
        reference.fc.bias.fill_(-0.5)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / os.path.basename(url))

    folder = tmp_path / "pretrained"
    write_untrained_model(folder, "resnet18", pretrained=True, flag=False)

    spec_yaml = yaml.safe_load((folder / "model_spec.yaml").read_text(encoding="utf-8"))
    assert spec_yaml["flavor_extras"]["init_params"]["pretrained"] is True
    assert "pretrained: true" in (folder / "model_spec.yaml").read_text(encoding="utf-8")

    written = torch.load(folder / "model", map_location="cpu", weights_only=True)
    expected = reference.state_dict()
    assert sorted(written) == sorted(f"model.{k}" for k in expected)
    for key, value in expected.items():
        assert torch.equal(written[f"model.{key}"], value), key
    assert torch.all(written["model.conv1.weight"] == 0.123)
    assert "out_linear_model.weight" not in written

    spec = read_model_directory(folder)
    assert spec.pretrained is True
    assert spec.num_classes is None


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/train_pytorch_model_hub_pwned"),))


def test_a_pickle_planted_in_the_weights_cache_is_refused_not_run(tmp_path, monkeypatch, no_network):
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    torch.save({"conv1.weight": _Planted()}, checkpoints / os.path.basename(url))
    folder = tmp_path / "pretrained"
    with pytest.raises(InvalidModelDirectoryError, match="could not be loaded"):
        write_untrained_model(folder, "resnet18", pretrained=True, flag=False)
    assert not Path("/tmp/train_pytorch_model_hub_pwned").exists()
    assert not (folder / "_meta.yaml").exists()


def test_pretrained_without_cache_or_network_fails_clearly(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    folder = tmp_path / "pretrained"
    with pytest.raises(InvalidModelDirectoryError) as info:
        write_untrained_model(folder, "resnet18", pretrained=True, flag=False)
    assert "TORCH_HOME" in str(info.value)
    assert "resnet18" in str(info.value)
    assert not (folder / "_meta.yaml").exists()


# ---------------------------------------------------------------------------------------------------------
# read_model_directory: every refusal is an InvalidModelDirectoryError with its reason


def test_missing_folder(tmp_path):
    err = assert_invalid(tmp_path / "nowhere", "does not exist")
    assert err.exit_code == 4
    assert err.name == "InvalidModelDirectoryError"


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_invalid(tmp_path / "file", "does not exist")


def test_missing_meta(tmp_path, golden_untrained):
    folder = tmp_path / "m"
    small_model_folder(folder)
    (folder / "_meta.yaml").unlink()
    assert_invalid(folder, "_meta.yaml")


def test_meta_of_an_image_directory(tmp_path):
    folder = small_model_folder(tmp_path / "m", meta={"type": "ImageDirectory", "extension": {}})
    assert_invalid(folder, "ImageDirectory", "not ModelDirectory")


def test_meta_is_not_yaml_mapping(tmp_path):
    folder = small_model_folder(tmp_path / "m")
    (folder / "_meta.yaml").write_text("- just\n- a list\n")
    assert_invalid(folder, "not a YAML mapping")
    (folder / "_meta.yaml").write_text("type: [unclosed\n")
    assert_invalid(folder, "cannot be read")


def test_missing_model_spec(tmp_path):
    folder = small_model_folder(tmp_path / "m")
    (folder / "model_spec.yaml").unlink()
    assert_invalid(folder, "model_spec.yaml", "missing")


def test_spec_path_escaping_the_folder(tmp_path):
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(yaml.safe_dump(base_spec()))
    folder = small_model_folder(
        tmp_path / "m", meta={"type": "ModelDirectory", "extension": {}, "model": "../elsewhere.yaml"}
    )
    assert_invalid(folder, "missing")


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """A module on sys.path that would leave a marker file if it were ever imported."""
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    marker = tmp_path / "imported.marker"
    name = "tpm_marker_module_never_import"
    (code_dir / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass ResNet:\n    pass\nclass Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(code_dir))
    sys.modules.pop(name, None)
    yield name, marker
    sys.modules.pop(name, None)


def test_custom_flavor_is_refused_without_import(tmp_path, marker_module):
    name, marker = marker_module
    spec = base_spec()
    spec["flavor"] = {"name": "custom", "module": name, "class": "Evil"}
    folder = small_model_folder(tmp_path / "m", spec=spec)
    assert_invalid(folder, "custom", "not pytorch")
    assert not marker.exists()
    assert name not in sys.modules


def test_class_outside_allowlist_is_refused_without_import(tmp_path, marker_module):
    name, marker = marker_module
    spec = base_spec()
    spec["flavor_extras"]["module"] = "os"
    spec["flavor_extras"]["class"] = "system"
    assert_invalid(small_model_folder(tmp_path / "os", spec=spec), "os.system", "not an allowed network")

    spec = base_spec()
    spec["flavor_extras"]["module"] = name
    spec["flavor_extras"]["class"] = "ResNet"
    assert_invalid(small_model_folder(tmp_path / "marker", spec=spec), "not an allowed network")
    assert not marker.exists()
    assert name not in sys.modules
    # the check is meaningful: importing the module does leave the marker
    importlib.import_module(name)
    assert marker.exists()


def test_pickle_serialization_method_is_refused(tmp_path):
    spec = base_spec()
    spec["flavor"]["serialization_method"] = "pickle"
    assert_invalid(small_model_folder(tmp_path / "m", spec=spec), "serialization method", "pickle")


def test_legacy_pickled_model_is_refused(tmp_path):
    spec = {"file_name": "data.ilearner"}
    assert_invalid(small_model_folder(tmp_path / "m", spec=spec), "legacy pickled")


def test_unknown_model_name(tmp_path):
    folder = small_model_folder(tmp_path / "m", spec=base_spec(model_name="resnet9000"))
    assert_invalid(folder, "'resnet9000' is not a supported resnet")


def test_densenet_name_under_resnet_class(tmp_path):
    folder = small_model_folder(tmp_path / "m", spec=base_spec(model_name="densenet121"))
    assert_invalid(folder, "'densenet121' is not a supported resnet")


def test_unknown_init_params(tmp_path):
    folder = small_model_folder(tmp_path / "m", spec=base_spec(dropout=0.5))
    assert_invalid(folder, "unknown keys", "dropout")


def test_regression_task_type(tmp_path):
    spec = base_spec()
    spec["task_type"] = "Regression"
    assert_invalid(small_model_folder(tmp_path / "m", spec=spec), "Regression", "MultiClassification")


def test_missing_weights_file(tmp_path):
    folder = small_model_folder(tmp_path / "m")
    (folder / "model").unlink()
    assert_invalid(folder, "weights file 'model' is missing")


def test_bad_num_classes(tmp_path):
    folder = small_model_folder(tmp_path / "m", spec=base_spec(num_classes=0))
    assert_invalid(folder, "num_classes")
    folder = small_model_folder(tmp_path / "n", spec=base_spec(num_classes="two"))
    assert_invalid(folder, "num_classes")


def test_missing_label_map(tmp_path):
    spec = base_spec(num_classes=2)
    spec["label_map_file"] = "index_to_label.csv"
    assert_invalid(small_model_folder(tmp_path / "m", spec=spec), "label map", "missing")


# ---------------------------------------------------------------------------------------------------------
# load_weights: broken or hostile weights files are refused, nothing in them runs


def spec_with_weights(tmp_path: Path, payload: bytes | None = None, obj=None):
    folder = small_model_folder(tmp_path / "m")
    if payload is not None:
        (folder / "model").write_bytes(payload)
    if obj is not None:
        torch.save(obj, folder / "model")
    return read_model_directory(folder)


def assert_weights_refused(spec) -> str:
    with pytest.raises(InvalidModelDirectoryError) as info:
        load_weights(spec)
    message = str(info.value)
    assert "weights file 'model'" in message
    return message


def test_truncated_weights(tmp_path, golden_untrained):
    data = (golden_untrained / "model").read_bytes()
    message = assert_weights_refused(spec_with_weights(tmp_path, payload=data[: len(data) // 2]))
    assert "cannot be loaded" in message


def test_zero_byte_weights(tmp_path):
    assert_weights_refused(spec_with_weights(tmp_path, payload=b""))


def test_garbage_weights(tmp_path):
    assert_weights_refused(spec_with_weights(tmp_path, payload=b"this is not a torch file\n" * 10))


class LeavesMarker:
    """Unpickling this would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


class Arbitrary:
    pass


def test_torch_save_of_reducing_object_never_runs(tmp_path):
    marker = tmp_path / "unpickled.marker"
    spec = spec_with_weights(tmp_path, obj={"model.fc.weight": torch.zeros(1), "x": LeavesMarker(str(marker))})
    assert_weights_refused(spec)
    assert not marker.exists()


def test_raw_pickle_of_reducing_object_never_runs(tmp_path):
    marker = tmp_path / "unpickled.marker"
    payload = pickle.dumps({"x": LeavesMarker(str(marker))}, protocol=2)
    assert_weights_refused(spec_with_weights(tmp_path, payload=payload))
    assert not marker.exists()


def test_torch_save_of_arbitrary_class_is_refused(tmp_path):
    assert_weights_refused(spec_with_weights(tmp_path, obj={"x": Arbitrary()}))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupted_weights_only_ever_give_invalid_model_directory(tmp_path):
    """Bit flips, cuts and random bytes: either a state dict of tensors or InvalidModelDirectoryError, never a raw
    IndexError, KeyError, struct.error or AssertionError from the unpickler."""
    spec = spec_with_weights(tmp_path, obj={"model.a": torch.zeros(3), "model.b": torch.ones(2, 2)})
    zip_bytes = spec.weights_file.read_bytes()
    legacy = io.BytesIO()
    torch.save({"model.a": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    rng = random.Random(0)
    payloads = []
    for _ in range(60):
        for base in (zip_bytes, legacy.getvalue()):
            flipped = bytearray(base)
            for _ in range(rng.randint(1, 5)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            payloads.append(bytes(flipped))
            payloads.append(base[: rng.randrange(len(base))])
        payloads.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))))
    refused = 0
    for payload in payloads:
        spec.weights_file.write_bytes(payload)
        try:
            state = load_weights(spec)
        except InvalidModelDirectoryError:
            refused += 1
            continue
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    assert refused > len(payloads) // 2


def test_non_tensor_state_dict_is_refused(tmp_path):
    message = assert_weights_refused(spec_with_weights(tmp_path, obj={"model.fc.weight": [1, 2, 3]}))
    assert "state dict of named tensors" in message
    assert_weights_refused(spec_with_weights(tmp_path, obj=[torch.zeros(1)]))


# ---------------------------------------------------------------------------------------------------------
# designer core 0.0.60: is_parallel and DataParallel key prefixes


@pytest.mark.parametrize("prefix", ["module.model.", "model.module."])
def test_parallel_prefixes_are_stripped(tmp_path, prefix, golden_untrained_state):
    parallel = {prefix + key[len("model.") :]: value for key, value in golden_untrained_state.items()}
    spec = base_spec()
    spec["flavor_extras"] = {
        "module": RESNET_MODULE,
        "class": "ResNet",
        "is_parallel": True,
        "is_cuda": False,
        "init_params": spec["flavor_extras"]["init_params"],
    }
    folder = small_model_folder(tmp_path / "m", spec=spec, weights=parallel)
    model_spec = read_model_directory(folder)
    state = load_weights(model_spec)
    assert all(key.startswith(prefix) for key in state)

    net = DesignerNet(build_network("resnet18"))
    with pytest.raises(RuntimeError):
        net.load_state_dict(state, strict=True)
    cleaned = strip_parallel_prefixes(state)
    assert sorted(cleaned) == sorted(golden_untrained_state)
    net.load_state_dict(cleaned, strict=True)
    assert torch.equal(net.model.fc.weight, golden_untrained_state["model.fc.weight"])


def test_strip_parallel_prefixes_leaves_plain_keys_alone(golden_untrained_state):
    cleaned = strip_parallel_prefixes(golden_untrained_state)
    assert list(cleaned) == list(golden_untrained_state)
    assert strip_parallel_prefixes({"out_linear_model.weight": torch.zeros(1)}) == {
        "out_linear_model.weight": torch.zeros(1)
    }
    # a 'module' deeper in the name is part of the network, not a wrapper
    deep = {"model.layer1.module.weight": torch.zeros(1)}
    assert list(strip_parallel_prefixes(deep)) == ["model.layer1.module.weight"]


# ---------------------------------------------------------------------------------------------------------
# models


def test_family_of_architecture():
    assert family_of_architecture("resnet18").name == "resnet"
    assert family_of_architecture("wide_resnet50_2").name == "resnet"
    assert family_of_architecture("densenet201").name == "densenet"
    with pytest.raises(KeyError, match="resnet9000"):
        family_of_architecture("resnet9000")
    assert FAMILIES["resnet"].default == "resnext101_32x8d"
    assert FAMILIES["densenet"].default == "densenet201"
    assert FAMILIES["resnet"].default in FAMILIES["resnet"].architectures


def test_build_network_heads_and_flags():
    net = build_network("resnet18", num_classes=5, flag=True)
    assert classifier_of(net)[0] == "fc"
    assert net.fc.out_features == 5
    # zero_init_residual zeroes the last BatchNorm weight in each block
    assert torch.count_nonzero(net.layer1[0].bn2.weight) == 0
    dense = build_network("densenet121", num_classes=3, flag=True)
    name, layer = classifier_of(dense)
    assert name == "classifier" and layer.out_features == 3
    assert dense.features.denseblock1.denselayer1.memory_efficient is True
    with pytest.raises(TypeError):
        classifier_of(nn.Sequential(nn.Linear(2, 2)))


def test_replace_classifier_and_load_matching(golden_trained_state):
    net = DesignerNet(build_network("resnet18"))
    replace_classifier(net.model, 2)
    assert net.model.fc.in_features == 512 and net.model.fc.out_features == 2
    net.load_state_dict(golden_trained_state, strict=True)

    fresh = DesignerNet(build_network("resnet18", num_classes=7))
    loaded, left = load_matching(fresh, golden_trained_state)
    assert left == ["model.fc.bias", "model.fc.weight"]
    assert "model.conv1.weight" in loaded and "model.fc.weight" not in loaded
    assert torch.equal(fresh.model.conv1.weight, golden_trained_state["model.conv1.weight"])


def test_designer_net_stacked_head():
    torch.manual_seed(0)
    network = build_network("resnet18")
    head = nn.Linear(1000, 4)
    net = DesignerNet(network, head).eval()
    assert "out_linear_model.weight" in net.state_dict()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(images), head(network(images)))
        assert DesignerNet(network).eval()(images).shape == (1, 1000)


# ---------------------------------------------------------------------------------------------------------
# init_model command line


def test_init_model_main_writes_folder(tmp_path):
    folder = tmp_path / "out"
    code = init_model.main(["--model-name", "resnet18", "--pretrained", "false", "--untrained-model", str(folder)])
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["_meta.yaml", "model", "model_spec.yaml"]
    spec = read_model_directory(folder)
    assert (spec.architecture, spec.pretrained, spec.flag) == ("resnet18", False, False)


def test_init_model_main_rewrites_an_earlier_output(tmp_path):
    folder = tmp_path / "out"
    args = ["--model-name", "resnet18", "--pretrained", "false"]
    assert init_model.main([*args, "--untrained-model", str(folder)]) == 0
    (folder / "stale.txt").write_text("old")  # left by an earlier writer: the folder is still an earlier output
    args += ["--zero-init-residual", "true"]
    assert init_model.main([*args, "--untrained-model", str(folder)]) == 0
    assert not (folder / "stale.txt").exists()
    assert not (folder / ".staging").exists()
    assert read_model_directory(folder).flag is True


def test_init_model_main_unknown_name(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TRAIN_PYTORCH_MODEL_DEBUG", raising=False)
    folder = tmp_path / "out"
    code = init_model.main(["--model-name", "resnet9000", "--pretrained", "false", "--untrained-model", str(folder)])
    assert code == 3 == InvalidParameterError.exit_code
    err = capsys.readouterr().err
    assert "InvalidParameterError" in err
    assert "resnet9000" in err
    assert "Traceback" not in err
    assert not (folder / "_meta.yaml").exists()


def test_init_model_main_bad_boolean(tmp_path, capsys):
    folder = tmp_path / "out"
    code = init_model.main(["--model-name", "resnet18", "--pretrained", "maybe", "--untrained-model", str(folder)])
    assert code == 3
    err = capsys.readouterr().err
    assert "InvalidParameterError" in err and "Traceback" not in err


def test_write_untrained_model_unknown_name_raises(tmp_path):
    with pytest.raises(InvalidParameterError, match="resnet9000"):
        write_untrained_model(tmp_path / "x", "resnet9000", pretrained=False, flag=False)
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
