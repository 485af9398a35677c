"""The ResNet/DenseNet entry (train_pytorch_model.init_model) as a command line."""

from __future__ import annotations

import shutil

import pytest

from train_pytorch_model import init_model
from train_pytorch_model.errors import InvalidParameterError
from train_pytorch_model.formats.model_directory import (
    read_model_directory,
)
from train_pytorch_model.init_model import write_untrained_model


def test_init_model_main_writes_folder(tmp_path):
    folder = tmp_path / "out"
    code = init_model.main(["--model-name", "resnet18", "--pretrained", "false", "--untrained-model", str(folder)])
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["_meta.yaml", "model", "model_spec.yaml"]
    spec = read_model_directory(folder)
    assert (spec.architecture, spec.pretrained, spec.flags) == ("resnet18", False, {"zero_init_residual": False})


def test_init_model_main_rewrites_an_earlier_output(tmp_path):
    folder = tmp_path / "out"
    args = ["--model-name", "resnet18", "--pretrained", "false"]
    assert init_model.main([*args, "--untrained-model", str(folder)]) == 0
    (folder / "stale.txt").write_text("old")  # left by an earlier writer: the folder is still an earlier output
    args += ["--zero-init-residual", "true"]
    assert init_model.main([*args, "--untrained-model", str(folder)]) == 0
    assert not (folder / "stale.txt").exists()
    assert not (folder / ".staging").exists()
    assert read_model_directory(folder).flags == {"zero_init_residual": True}


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
        write_untrained_model(tmp_path / "x", "resnet9000", pretrained=False)
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
