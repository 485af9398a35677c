"""Train PyTorch Model end to end through component.yaml's own command line: the ModelDirectory it writes, its
MLflow run, the best epoch's weights, reproducibility, the designer's inputs, and its report.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import REPO_ROOT, write_digits_subset
from train_pytorch_model.formats.model_directory import load_weights, read_model_directory
from train_pytorch_model.local.command_line import run_component
from train_pytorch_model.train import parse_args
from train_pytorch_model.training.job import run

COMPONENT = REPO_ROOT / "component.yaml"


EPOCH_METRICS = (
    "train_loss",
    "valid_loss",
    "valid_accuracy",
    "valid_top5_accuracy",
    "learning_rate",
    "train_images_per_second",
)


def tracking_env(folder: Path, experiment: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": experiment}


def runs_of(env: dict[str, str]):
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(env["MLFLOW_EXPERIMENT_NAME"])
    assert experiment is not None, "the job created no MLflow experiment"
    return client, client.search_runs([experiment.experiment_id])


@pytest.fixture(scope="module")
def component_run(tmp_path_factory, digits, untrained_resnet18):
    """One real training job through component.yaml's command line."""
    train, valid = digits
    work = tmp_path_factory.mktemp("component_run")
    env = tracking_env(work, "component-run")
    output = work / "trained_model"
    result = run_component(
        COMPONENT,
        inputs={
            "untrained_model": untrained_resnet18,
            "training_dataset": train,
            "validation_dataset": valid,
            "epochs": 4,
            "batch_size": 16,
            "learning_rate": 0.01,
        },
        outputs={"trained_model": output},
        env=env,
        check=False,
        capture_output=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output, env, result, valid


def test_component_writes_a_model_directory(component_run):
    output, _, result, _ = component_run
    spec = read_model_directory(output, "Trained model")
    assert spec.architecture == "resnet18"
    assert spec.classes == ["0", "1", "7"]
    assert spec.num_classes == 3
    # Scoring never needs ImageNet weights: the trained weights are all in the file.
    assert spec.pretrained is False
    state = load_weights(spec, "Trained model")
    assert state["model.fc.weight"].shape == (3, 512)
    assert (output / "index_to_label.csv").read_text() == ",label\n0,0\n1,1\n2,7\n"
    assert (output / "preprocessing.json").is_file()
    assert not (output / ".staging").exists()
    assert not (output / ".checkpoint").exists()
    assert "validation accuracy" in result.stdout
    # The log says where the run computes before the first epoch (on a GPU: its name, bf16/fp16, channels_last).
    log = result.stdout + result.stderr
    assert re.search(r"Device: CPU \(\d+ threads\), float32", log), log[-2000:]
    assert log.index("Device: CPU") < log.index("Epoch 1/")
    assert "Traceback" not in result.stderr
    # MLflow's artifacts go beside the local store, never into the code folder the command runs in.
    assert not (REPO_ROOT / "src" / "mlruns").exists()
    # The MLflow model carries the package that scoring needs, without local-only tools or bytecode caches.
    shipped = {path.relative_to(output / "code").as_posix() for path in (output / "code").rglob("*")}
    assert "train_pytorch_model/output/mlflow_model.py" in shipped
    assert not [name for name in shipped if "/local" in name or "__pycache__" in name]


def test_mlflow_run_has_one_point_per_epoch(component_run):
    output, env, _, _ = component_run
    client, runs = runs_of(env)
    assert len(runs) == 1, "one job must be one MLflow run"
    run_info = runs[0]
    summary = json.loads((output / "training_summary.json").read_text())
    epochs_run = summary["last_epoch"]
    assert 1 <= epochs_run <= 4
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run_info.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(1, epochs_run + 1)), name
        assert all(math.isfinite(m.value) for m in history), name
    accuracies = [m.value for m in client.get_metric_history(run_info.info.run_id, "valid_accuracy")]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    params = run_info.data.params
    assert params["epochs"] == "4" and params["batch_size"] == "16" and params["learning_rate"] == "0.01"
    assert run_info.data.metrics["best_epoch"] == summary["best_epoch"]
    assert run_info.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run_info.info.run_id)}
    assert {"dataset_summary.json", "trained_model"} <= artifacts
    logged_model = {a.path for a in client.list_artifacts(run_info.info.run_id, "trained_model")}
    assert {"trained_model/MLmodel", "trained_model/model", "trained_model/_meta.yaml"} <= logged_model
    # The summary and MLflow agree on the losses.
    logged = {m.step: m.value for m in client.get_metric_history(run_info.info.run_id, "valid_loss")}
    for row in summary["history"]:
        assert logged[row["epoch"]] == pytest.approx(row["valid_loss"], rel=1e-9)


def test_saved_weights_are_those_of_the_best_epoch(component_run):
    output, _, _, valid = component_run
    summary = json.loads((output / "training_summary.json").read_text())
    best = min(summary["history"], key=lambda row: row["valid_loss"])
    assert summary["best_epoch"] == best["epoch"]
    # Re-score the validation images with the saved model: its loss is the best epoch's, not the last's.
    model = mlflow.pyfunc.load_model(str(output))
    files = sorted(valid.rglob("*.png"))
    frame = model.predict([str(f) for f in files])
    labels = ["0", "1", "7"]
    probabilities = frame[[f"Scored Probabilities_{c}" for c in labels]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    targets = np.array([labels.index(f.parent.name) for f in files])
    loss = float(-np.log(probabilities[np.arange(len(files)), targets]).mean())
    assert loss == pytest.approx(best["valid_loss"], rel=1e-3, abs=1e-4)
    accuracy = float((frame["Scored Labels"].to_numpy() == np.array([f.parent.name for f in files])).mean())
    assert accuracy == pytest.approx(summary["best_valid_accuracy"], abs=1e-9)
    assert accuracy >= 0.8


def test_pyfunc_takes_base64_strings_and_data_uris(component_run):
    output, _, _, valid = component_run
    model = mlflow.pyfunc.load_model(str(output))
    files = sorted(valid.rglob("*.png"))[:4]
    encoded = []
    for file in files:  # real photos encode to thousands of characters, far beyond a file name's limit
        buffer = io.BytesIO()
        Image.open(file).resize((96, 96)).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    assert min(len(text) for text in encoded) > 300
    by_text = model.predict(encoded)
    by_uri = model.predict(pd.DataFrame({"image": ["data:image/png;base64," + text for text in encoded]}))
    assert list(by_text["Scored Labels"]) == list(by_uri["Scored Labels"])
    np.testing.assert_allclose(by_text.filter(like="Scored Probabilities").sum(axis=1), 1.0, rtol=1e-6)


def test_the_metrics_a_sweep_names_are_the_ones_the_run_logged(component_run):
    """pipelines/sweep_pipeline.yaml's objective, and every metric its description offers, exactly as logged."""
    _, env, _, _ = component_run
    _, runs = runs_of(env)
    logged = set(runs[0].data.metrics)
    sweep = yaml.safe_load((REPO_ROOT / "pipelines" / "sweep_pipeline.yaml").read_text(encoding="utf-8"))
    assert sweep["jobs"]["sweep"]["objective"]["primary_metric"] in logged
    listed = sweep["description"].split("exactly as logged:")[1]
    offered = set(re.findall(r"\b(?:train|valid|best_valid)_[a-z0-9_]+", listed))
    assert len(offered) == 7 and offered <= logged, offered - logged


def test_checkpoint_is_neither_left_nor_uploaded(component_run):
    output, env, _, _ = component_run
    assert not (output / ".checkpoint").exists()
    client, runs = runs_of(env)
    uploaded = [item.path for item in client.list_artifacts(runs[0].info.run_id, "trained_model")]
    assert "trained_model/MLmodel" in uploaded and "trained_model/model" in uploaded
    assert not any(".checkpoint" in path for path in uploaded), uploaded
    # Epochs not checkpointed (the previous write still running) are named; epoch 1 always is checkpointed.
    skipped = json.loads((output / "training_summary.json").read_text())["epochs_not_checkpointed"]
    assert isinstance(skipped, list) and set(skipped) <= {2, 3, 4}


def test_onnx_model_scores_like_the_mlflow_model(component_run):
    """model.onnx and labels.json beside the MLflow model: onnxruntime's probabilities on the real validation
    images are the pyfunc model's, within 1e-4."""
    from output.test_onnx_export import onnx_probabilities

    from train_pytorch_model.formats.preprocessing import Preprocessing

    output, _, _, valid = component_run
    files = sorted(valid.rglob("*.png"))
    summary = json.loads((output / "training_summary.json").read_text())["onnx"]
    assert summary["exported"] is True and summary["file"] == "model.onnx" and summary["opset"] == 17
    classes = json.loads((output / "labels.json").read_text())
    assert classes == ["0", "1", "7"]
    preprocessing = Preprocessing.load(output / "preprocessing.json")
    got = onnx_probabilities(output / "model.onnx", files, preprocessing)
    expected = mlflow.pyfunc.load_model(str(output)).predict([str(f) for f in files])
    columns = [f"Scored Probabilities_{name}" for name in classes]
    assert np.abs(got - expected[columns].to_numpy()).max() <= 1e-4


def test_mltable_training_set_without_a_validation_set(tmp_path, untrained_resnet18):
    """A Data Labeling-style MLTable as the only dataset, through component.yaml's command line: a stratified,
    seeded fifth of each class is held out to validate on, and the summary and MLflow say so."""
    from conftest import labeling_lines, write_mltable

    images = write_digits_subset(tmp_path / "images", classes=(0, 1, 7), per_class=25)
    table = write_mltable(
        tmp_path / "table", labeling_lines(images, url=lambda p: "../" + p.relative_to(tmp_path).as_posix())
    )
    env = tracking_env(tmp_path, "mltable")
    output = tmp_path / "trained_model"
    inputs = {"untrained_model": untrained_resnet18, "training_dataset": table, "epochs": 2, "learning_rate": 0.01}
    result = run_component(COMPONENT, inputs=inputs, outputs={"trained_model": output}, env=env, check=False,
                           capture_output=True)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "held out to validate on" in result.stdout + result.stderr
    data = json.loads((output / "dataset_summary.json").read_text())
    assert data["training"]["layout"] == data["validation"]["layout"] == "MLTable"
    assert data["training"]["images_per_class"] == {"0": 20, "1": 20, "7": 20}
    assert data["validation"]["images_per_class"] == {"0": 5, "1": 5, "7": 5}
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["hyperparameters"]["validation_fraction"] == 0.2
    _, runs = runs_of(env)
    assert runs[0].data.params["validation_fraction"] == "0.2"
    assert runs[0].data.params["valid_images"] == "15"
    # A class too small to split is refused before any training, saying what to do.
    few = write_mltable(tmp_path / "few", labeling_lines(images)[:26])  # class '1' has one image
    refused = run_component(COMPONENT, inputs={**inputs, "training_dataset": few},
                            outputs={"trained_model": tmp_path / "out2"}, env=env, check=False,
                            capture_output=True)  # fmt: skip
    assert refused.returncode == 6 and "InvalidDatasetError" in refused.stderr and "'1' (1)" in refused.stderr


def test_mlflow_pytorch_flavor_loads(component_run):
    output, _, _, _ = component_run
    network = mlflow.pytorch.load_model(str(output))
    logits = network(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 3)


def test_same_seed_gives_same_run(tmp_path, digits, untrained_resnet18, monkeypatch):
    train, valid = digits
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "seeds")

    def train_once(name: str, seed: int):
        settings = parse_args(
            [
                "--untrained-model", str(untrained_resnet18),
                "--training-dataset", str(train),
                "--validation-dataset", str(valid),
                "--trained-model", str(tmp_path / name),
                "--epochs", "2", "--batch-size", "8", "--random-seed", str(seed),
            ]
        )  # fmt: skip
        outcome = run(settings)
        return outcome.history, torch.load(tmp_path / name / "model", weights_only=True)

    history_a, weights_a = train_once("a", 7)
    history_b, weights_b = train_once("b", 7)
    history_c, _ = train_once("c", 8)
    strip = [
        {k: v for k, v in row.items() if k not in ("train_images_per_second", "epoch_seconds")} for row in history_a
    ]
    assert strip == [
        {k: v for k, v in row.items() if k not in ("train_images_per_second", "epoch_seconds")} for row in history_b
    ]
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert history_c[0]["train_loss"] != history_a[0]["train_loss"]


def test_designer_untrained_model_trains_on_designer_image_directory(tmp_path, designer_fixtures, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = designer_fixtures / "image_directory"
    output = tmp_path / "trained"
    settings = parse_args(
        [
            "--untrained-model", str(designer_fixtures / "untrained_model"),
            "--training-dataset", str(data),
            "--validation-dataset", str(data),
            "--trained-model", str(output),
            "--epochs", "2", "--batch-size", "2",
        ]
    )  # fmt: skip
    summary = run(settings).summary
    assert summary["classes"] == ["cat", "dog"]
    spec = read_model_directory(output, "Trained model")
    assert spec.classes == ["cat", "dog"]
    # The training ImageDirectory's schema and samples travel with the model, byte for byte, as in the designer.
    assert (output / "_schema.json").read_bytes() == (data / "_schema.json").read_bytes()
    assert (output / "_samples.json").read_bytes() == (data / "_samples.json").read_bytes()
    # The untrained folder's own weights were used: every tensor but the new head was loaded from it.
    assert summary["model"]["head_reinitialised"] is True
    assert (
        summary["model"]["tensors_loaded"]
        == len(load_weights(read_model_directory(designer_fixtures / "untrained_model"))) - 2
    )


def test_validation_labels_are_mapped_by_name(tmp_path, untrained_resnet18, monkeypatch):
    """A validation set holding a subset of the classes keeps the training ids (designer bug 7.5)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    train = write_digits_subset(tmp_path / "train", classes=(0, 1, 7), per_class=20)
    valid = write_digits_subset(tmp_path / "valid", classes=(0, 7), per_class=10, offset=40)
    settings = parse_args(
        [
            "--untrained-model", str(untrained_resnet18),
            "--training-dataset", str(train),
            "--validation-dataset", str(valid),
            "--trained-model", str(tmp_path / "out"),
            "--epochs", "3", "--batch-size", "8", "--learning-rate", "0.01",
        ]
    )  # fmt: skip
    summary = run(settings).summary
    model = mlflow.pyfunc.load_model(str(tmp_path / "out"))
    files = sorted(valid.rglob("*.png"))
    frame = model.predict([str(f) for f in files])
    truth = np.array([f.parent.name for f in files])
    accuracy = float((frame["Scored Labels"].to_numpy() == truth).mean())
    assert accuracy == pytest.approx(summary["best_valid_accuracy"], abs=1e-9)


@pytest.mark.parametrize(
    ("overrides", "code", "phrase"),
    [
        ({"epochs": 0}, 3, "epochs"),
        ({"batch_size": 0}, 3, "batch_size"),
        ({"batch_size": 10_000}, 3, "larger than"),
        ({"batch_size": 1}, 3, "BatchNorm"),
        ({"learning_rate": 0}, 3, "learning_rate"),
        ({"learning_rate": "nan"}, 3, "learning_rate"),
        ({"patience": 0}, 3, "patience"),
        ({"random_seed": "1.5"}, 3, "random_seed"),
        ({"validation_fraction": 0.95}, 3, "validation_fraction"),
    ],
)
def test_bad_parameters_fail_clearly(tmp_path, digits, untrained_resnet18, overrides, code, phrase):
    train, valid = digits
    inputs = {"untrained_model": untrained_resnet18, "training_dataset": train, "validation_dataset": valid}
    inputs.update(overrides)
    result = run_component(
        COMPONENT,
        inputs=inputs,
        outputs={"trained_model": tmp_path / "out"},
        env=tracking_env(tmp_path, "bad-params"),
        check=False,
        capture_output=True,
    )
    assert result.returncode == code, result.stderr
    assert "InvalidParameterError" in result.stderr and phrase in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "_meta.yaml").exists()


def test_unlabeled_and_mismatched_datasets_fail_clearly(tmp_path, digits, untrained_resnet18):
    train, valid = digits
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in sorted(train.rglob("*.png"))[:5]:
        shutil.copy(image, flat / image.name)
    other = write_digits_subset(tmp_path / "other", classes=(0, 3), per_class=5)
    cases = [
        ({"training_dataset": flat, "validation_dataset": valid}, 5, "NotLabeledDatasetError"),
        ({"training_dataset": train, "validation_dataset": other}, 6, "InvalidDatasetError"),
        ({"training_dataset": tmp_path / "missing", "validation_dataset": valid}, 6, "InvalidDatasetError"),
    ]
    for index, (inputs, code, name) in enumerate(cases):
        result = run_component(
            COMPONENT,
            inputs={"untrained_model": untrained_resnet18, **inputs},
            outputs={"trained_model": tmp_path / f"out{index}"},
            env=tracking_env(tmp_path, "bad-data"),
            check=False,
            capture_output=True,
        )
        assert result.returncode == code, (name, result.stderr)
        assert name in result.stderr and "Traceback" not in result.stderr


def test_run_leaves_a_report(component_run):
    """Learning curves, confusion matrix and per-class metrics, in the output and in MLflow, agreeing with
    the logged metrics."""
    from PIL import Image

    output, env, result, valid = component_run
    for name in ("learning_curves.png", "confusion_matrix.png"):
        with Image.open(output / name) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300, name
    matrix = [row for row in csv.reader((output / "confusion_matrix.csv").open())]
    assert matrix[0][1:] == ["0", "1", "7"] and [row[0] for row in matrix[1:]] == ["0", "1", "7"]
    counts = [[int(v) for v in row[1:]] for row in matrix[1:]]
    assert sum(map(sum, counts)) == len(list(valid.rglob("*.png")))
    summary = json.loads((output / "training_summary.json").read_text())
    per_class = json.loads((output / "per_class_metrics.json").read_text())
    diagonal = sum(counts[i][i] for i in range(3))
    assert per_class["accuracy"] == pytest.approx(diagonal / sum(map(sum, counts)))
    assert per_class["accuracy"] == pytest.approx(summary["best_valid_accuracy"])
    assert set(per_class["classes"]) == {"0", "1", "7"}
    for values in per_class["classes"].values():
        assert 0.0 <= values["precision"] <= 1.0 and 0.0 <= values["f1"] <= 1.0
    for key in ("best_epoch", "stopped_early", "seconds", "images_per_second", "device", "hyperparameters", "versions"):
        assert key in summary, key
    client, runs = runs_of(env)
    run_id = runs[0].info.run_id
    assert runs[0].data.metrics["best_valid_accuracy"] == pytest.approx(summary["best_valid_accuracy"])
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "valid_accuracy")}
    assert logged[summary["best_epoch"]] == pytest.approx(summary["best_valid_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {
        "learning_curves.png",
        "confusion_matrix.png",
        "per_class_metrics.json",
        "training_summary.json",
    } <= artifacts
    # The dataset summary was printed before training.
    assert "images per class" in result.stdout.lower() or "training" in result.stdout
    assert "  class" in result.stdout and "modes:" in result.stdout
