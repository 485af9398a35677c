"""The run record: one set of facts behind the resume fingerprint, the MLflow parameters and
training_summary.json, so that the three can never disagree."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import hyperparameters
from train_pytorch_model.output.run_record import Hyperparameters, RunRecord
from train_pytorch_model.output.summary import Outcome, Tracking, training_summary
from train_pytorch_model.settings import Recipe
from train_pytorch_model.training.optimizer import schedule_name


def record(**changes) -> RunRecord:
    hyper_fields = {f.name for f in dataclasses.fields(Hyperparameters)}
    base = RunRecord(
        hyperparameters=hyperparameters(),
        architecture="resnet18",
        pretrained=False,
        untrained_weights_sha256="ab" * 32,
        classes=("cat", "dog"),
        train_listing=(("cat/1.png", "cat", 100), ("dog/1.png", "dog", 120)),
        valid_listing=(("cat/2.png", "cat", 90),),
        train_images=2,
        valid_images=1,
        device="cpu",
    )
    hyper = {k: v for k, v in changes.items() if k in hyper_fields}
    rest = {k: v for k, v in changes.items() if k not in hyper}
    return dataclasses.replace(base, hyperparameters=hyperparameters(**hyper), **rest)


def test_the_fingerprint_ignores_where_the_run_computes_and_what_follows_from_the_listing():
    """A preempted job may come back on another node; decoded counts follow from the listing."""
    assert record().fingerprint() == record(device="cuda:0", train_images=1, valid_images=0).fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"learning_rate": 0.01},
        {"batch_size": 8},
        {"world_size": 2},
        {"image_size": (32, 32)},
        {"image_fit": "center_crop", "crop_ratio": 1.14},
        {"crop_ratio": 1.5},
        {"lr_schedule": "step"},
        {"validation_fraction": 0.2},
        {"recipe": Recipe(label_smoothing=0.1)},
        {"recipe": Recipe(augmentation="light")},
        {"recipe": Recipe(ema_decay=0.99)},
        {"recipe": Recipe(freeze_epochs=1)},
        {"recipe": Recipe(gradient_accumulation=2)},
        {"untrained_weights_sha256": "cd" * 32},
        {"pretrained": True},
        {"train_listing": (("cat/1.png", "cat", 101), ("dog/1.png", "dog", 120))},  # same names, other bytes
        {"valid_listing": (("cat/2.png", "dog", 90),)},
    ],
)
def test_the_fingerprint_changes_with_every_fact_that_defines_the_run(change):
    assert record(**change).fingerprint() != record().fingerprint()


def test_mlflow_params_and_the_summary_report_the_same_hyperparameters():
    run = record(world_size=2)
    params = run.mlflow_params()
    outcome = Outcome(1, 1, "completed all epochs", 0, 0.5, 0.9, 1.0, [{"epoch": 1, "train_images_per_second": 10.0}])
    summary = training_summary(outcome, run, {}, Tracking(None, None, None), seconds=1.0, seconds_to_first_step=None)
    recorded = summary["hyperparameters"]
    for name, value in recorded.items():
        if name == "image_size":
            assert [params["image_height"], params["image_width"]] == value == [32, 48]
        else:
            assert params[name] == value, name
    assert params["lr_schedule"] == schedule_name(0) == "cosine, per step"
    # The recipe's options are flat params of their own, the optimizer named once.
    assert {name: params[name] for name in ("augmentation", "label_smoothing", "ema_decay")} == {
        "augmentation": "none", "label_smoothing": 0.0, "ema_decay": 0.0}  # fmt: skip
    assert params["optimizer"] == "SGD" and "recipe" not in params
    assert params["global_batch_size"] == 32 and params["effective_learning_rate"] == pytest.approx(0.002)
    assert (params["architecture"], params["num_classes"], params["device"]) == ("resnet18", 2, "cpu")
