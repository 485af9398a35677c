"""Score Image Model through its own command line: the designer's golden scores within 1e-5, designer- and
project-trained models, unlabelled and unreadable images.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import (
    DESIGNER,
    GOLDEN_DIRECTORY,
    GOLDEN_SCORED,
    IMAGEFOLDER,
    assert_user_error,
    run_companion,
    tree_digest,
    write_png,
)
from train_pytorch_model import score_image_model as score_module
from train_pytorch_model.errors import InvalidDatasetError, InvalidModelDirectoryError
from train_pytorch_model.formats.model_directory import write_model_directory
from train_pytorch_model.model.families import FAMILIES
from train_pytorch_model.model.networks import DesignerNet, build_network
from train_pytorch_model.output.scoring import Preprocessing, predict_probabilities


def assert_close_json(actual: Any, expected: Any, tolerance: float = 1e-5) -> None:
    """Equal JSON values, floats within tolerance (the scores come from another torch build)."""
    if isinstance(expected, float):
        assert isinstance(actual, (float, int)) and abs(actual - expected) <= tolerance, (actual, expected)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected)
        for key in expected:
            assert_close_json(actual[key], expected[key], tolerance)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_close_json(a, e, tolerance)
    else:
        assert actual == expected and type(actual) is type(expected)


def test_score_reproduces_the_designer_scored_dataset(tmp_path: Path) -> None:
    out = tmp_path / "scored_dataset"
    inputs = {"trained_model": DESIGNER / "trained_model", "dataset": GOLDEN_DIRECTORY}
    result = run_companion("score_image_model", inputs, {"scored_dataset": out})
    assert result.returncode == 0, result.stderr
    assert sorted(tree_digest(out)) == sorted(tree_digest(GOLDEN_SCORED))
    assert (out / "_meta.yaml").read_bytes() == (GOLDEN_SCORED / "_meta.yaml").read_bytes()
    assert (out / "schema" / "_schema.json").read_bytes() == (GOLDEN_SCORED / "schema" / "_schema.json").read_bytes()
    actual = pd.read_parquet(out / "_data.parquet")
    golden = pd.read_parquet(GOLDEN_SCORED / "_data.parquet")
    assert list(actual.columns) == list(golden.columns)
    assert actual["id"].dtype == np.int64
    assert actual["category"].tolist() == golden["category"].tolist()
    assert actual["id"].tolist() == golden["id"].tolist()
    assert actual["Scored Labels"].tolist() == golden["Scored Labels"].tolist()
    probabilities = [c for c in golden.columns if c.startswith("Scored Probabilities_")]
    assert np.abs(actual[probabilities].to_numpy() - golden[probabilities].to_numpy()).max() < 1e-5
    for name in ("_samples.json", "_data.visualization"):
        assert_close_json(
            json.loads((out / name).read_text(encoding="utf-8")),
            json.loads((GOLDEN_SCORED / name).read_text(encoding="utf-8")),
        )


def test_score_the_raw_image_folder_like_its_image_directory(tmp_path: Path) -> None:
    """The designer's Score parses a folder as Convert does: the same columns and scores as the converted one."""
    frame = score_module.score_image_model(DESIGNER / "trained_model", IMAGEFOLDER, tmp_path / "out")
    golden = pd.read_parquet(GOLDEN_SCORED / "_data.parquet")
    assert list(frame.columns) == list(golden.columns)
    assert np.allclose(frame.iloc[:, 2:4].to_numpy(), golden.iloc[:, 2:4].to_numpy(), atol=1e-5)


def test_score_unlabelled_images(tmp_path: Path) -> None:
    source = tmp_path / "flat"
    source.mkdir()
    for path in sorted(IMAGEFOLDER.rglob("*.png")):
        shutil.copyfile(path, source / path.name)
    out = tmp_path / "out"
    frame = score_module.score_image_model(DESIGNER / "trained_model", source, out)
    assert list(frame.columns) == ["id", "Scored Probabilities_cat", "Scored Probabilities_dog", "Scored Labels"]
    schema = json.loads((out / "schema" / "_schema.json").read_text(encoding="utf-8"))
    assert schema["labelColumns"] == {}
    assert [c["isFeature"] for c in schema["columnAttributes"]] == [True, False, False, False]


def test_score_with_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_companion(
        "score_image_model", {"trained_model": GOLDEN_DIRECTORY, "dataset": GOLDEN_DIRECTORY}, {"scored_dataset": out}
    )
    assert_user_error(result, "InvalidModelDirectoryError", InvalidModelDirectoryError.exit_code)
    assert InvalidModelDirectoryError.exit_code == 4
    assert not (out / "_meta.yaml").exists()


def test_score_with_an_untrained_model(tmp_path: Path, capsys) -> None:
    code = score_module.main(
        [
            "--trained-model",
            str(DESIGNER / "untrained_model"),
            "--dataset",
            str(GOLDEN_DIRECTORY),
            "--scored-dataset",
            str(tmp_path / "out"),
        ]
    )
    assert code == 4
    assert "untrained model" in capsys.readouterr().err


def test_score_with_a_broken_weights_file(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DESIGNER / "trained_model", model)
    (model / "model").write_bytes(b"not a torch file")
    with pytest.raises(InvalidModelDirectoryError):
        score_module.load_trained_model(model)


def _forward(model: nn.Module, image: Path, mean, std, size=None) -> np.ndarray:
    preprocessing = Preprocessing(size or Image.open(image).size[::-1], mean, std, ["?"])
    return predict_probabilities(model, [image], preprocessing)[0]


def test_designer_model_with_a_stacked_head_and_mixed_image_sizes(tmp_path: Path) -> None:
    """Designer models trained from pretrained weights keep the 1000-class head plus out_linear_model; images of
    different sizes (which the designer refused) are each scored at their own size."""
    torch.manual_seed(0)
    network = DesignerNet(build_network("resnet18", num_classes=1000), nn.Linear(1000, 3))
    folder = tmp_path / "model"
    init_params = {"model_name": "resnet18", "pretrained": True, "zero_init_residual": False, "num_classes": 3}
    write_model_directory(
        folder, network.state_dict(), FAMILIES["resnet"], init_params, classes=["a", "b", "c"], mean=(0.4,) * 3
    )
    data = tmp_path / "data"
    write_png(data / "x" / "small.png", (33, 40), (10, 200, 30))
    write_png(data / "y" / "large.png", (64, 48), (200, 20, 90))
    frame = score_module.score_image_model(folder, data, tmp_path / "out")
    network.eval()
    for row, name in zip(range(2), ("x/small.png", "y/large.png"), strict=True):
        expected = _forward(network, data / name, (0.4,) * 3, (0.5,) * 3)
        assert np.allclose(frame.iloc[row, 2:5].to_numpy(dtype=float), expected, atol=1e-6)


def test_project_model_uses_its_preprocessing_and_numeric_class_names_stay_strings(tmp_path: Path) -> None:
    torch.manual_seed(1)
    network = DesignerNet(build_network("resnet18", num_classes=2))
    folder = tmp_path / "model"
    init_params = {"model_name": "resnet18", "pretrained": False, "zero_init_residual": False, "num_classes": 2}
    write_model_directory(folder, network.state_dict(), FAMILIES["resnet"], init_params, classes=["0", "10"])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    Preprocessing((40, 40), mean, std, ["0", "10"]).save(folder / "preprocessing.json")
    data = tmp_path / "data"
    write_png(data / "a.png", (33, 47))
    write_png(data / "b.png", (90, 20), (0, 0, 255))
    frame = score_module.score_image_model(folder, data, tmp_path / "out")
    assert list(frame.columns) == ["id", "Scored Probabilities_0", "Scored Probabilities_10", "Scored Labels"]
    assert all(isinstance(label, str) for label in frame["Scored Labels"])
    network.eval()
    for row, name in enumerate(("a.png", "b.png")):
        expected = _forward(network, data / name, mean, std, (40, 40))
        assert np.allclose(frame.iloc[row, 1:3].to_numpy(dtype=float), expected, atol=1e-6)
    schema = json.loads((tmp_path / "out" / "schema" / "_schema.json").read_text(encoding="utf-8"))
    assert schema["columnAttributes"][-1]["elementType"]["typeName"] == "str"


def test_unreadable_images_are_not_scored_but_named(tmp_path: Path, caplog) -> None:
    data = tmp_path / "data"
    shutil.copytree(IMAGEFOLDER, data)
    (data / "dog" / "dog2.png").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING):
        frame = score_module.score_image_model(DESIGNER / "trained_model", data, tmp_path / "out")
    assert len(frame) == 5 and 4 not in frame["id"].tolist()
    assert "'dog/dog2.png' is not scored" in caplog.text


def test_scoring_data_that_holds_no_image(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("nothing", encoding="utf-8")
    with pytest.raises(InvalidDatasetError):
        score_module.score_image_model(DESIGNER / "trained_model", data, tmp_path / "out")
