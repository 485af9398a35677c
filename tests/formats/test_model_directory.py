"""The designer's model folders (designer-formats.md section 3): reading the golden designer-written folders,
writing folders the designer can read, and refusing unsafe or broken folders and weights without running anything.
"""

from __future__ import annotations

import builtins
import csv
import importlib
import io
import pickle
import random
import re
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from conftest import base_spec, small_model_folder
from train_pytorch_model.errors import InvalidModelDirectoryError
from train_pytorch_model.formats.model_directory import (
    load_weights,
    read_model_directory,
    write_label_map,
    write_model_directory,
)
from train_pytorch_model.init_model import write_untrained_model
from train_pytorch_model.model.families import DENSENET_MODULE, FAMILIES
from train_pytorch_model.model.networks import (
    DesignerNet,
    build_network,
)

TIME_LINE = re.compile(r"^time_created: (.*)$", re.MULTILINE)


TIME_VALUE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000$")


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"


def without_time(text: str) -> str:
    return TIME_LINE.sub("time_created: <time>", text)


def time_created(text: str) -> str:
    match = TIME_LINE.search(text)
    assert match, "model_spec.yaml has no time_created line"
    return match.group(1)


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
    assert spec.flags == {"zero_init_residual": False}
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
    write_untrained_model(folder, "densenet121", pretrained=False, flags={"memory_efficient": True})
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
    assert spec.flags == {"memory_efficient": True}
    assert spec.pretrained is False
    state = load_weights(spec)
    assert all(key.startswith("model.") for key in state)
    assert tuple(state["model.classifier.weight"].shape) == (1000, 1024)
    DesignerNet(build_network("densenet121", flags={"memory_efficient": True})).load_state_dict(state, strict=True)


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
