"""The recipe's options around the designer's five parameters: each changes what it should (checked against
hand computations), bad values are refused, every option is recorded, and a run with all of them on resumes
bit for bit."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train_pytorch_model.errors import InvalidParameterError
from train_pytorch_model.settings import Recipe
from train_pytorch_model.train import parse_args
from train_pytorch_model.training.loss import TrainingLoss, class_weights
from train_pytorch_model.training.optimizer import (
    WARMUP_START,
    make_optimizer,
    make_scheduler,
    schedule_name,
    warmup_steps,
)

ALL_ON = ["--optimizer", "adamw", "--label-smoothing", "0.1", "--warmup-epochs", "0.5",
          "--class-weighting", "inverse", "--augmentation", "strong", "--gradient-accumulation", "2",
          "--ema-decay", "0.9", "--freeze-epochs", "1", "--crop-ratio", "1.2"]  # fmt: skip


def test_class_weights_follow_the_inverse_frequency():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # 6 images, 3 classes: counts 3, 1, 2
    inverse = class_weights(labels, 3, "inverse")
    assert torch.allclose(inverse, torch.tensor([6 / 9, 6 / 3, 6 / 6]))
    assert torch.allclose(class_weights(labels, 3, "inverse_sqrt"), inverse.sqrt())
    assert class_weights(labels, 3, "none") is None
    assert torch.equal(class_weights(torch.tensor([0, 1, 0, 1]), 2, "inverse"), torch.ones(2))  # balanced


def test_the_weighted_smoothed_loss_is_the_hand_computed_one():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 3), torch.tensor([0, 2, 1, 0, 0])
    weights, smoothing = torch.tensor([0.5, 2.0, 1.0]), 0.2
    loss, _ = TrainingLoss(label_smoothing=smoothing, class_weights=weights)(logits, targets)
    log_p = F.log_softmax(logits, dim=1)
    # PyTorch's definition: each image's smoothed target is (1 - e) one-hot + e / C, every class term weighted
    # by its class's weight, the sum divided by the weights of the images' own classes.
    target = (1 - smoothing) * F.one_hot(targets, 3) + smoothing / 3
    per_image = -(target * weights * log_p).sum(dim=1)
    expected = per_image.sum() / weights[targets].sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    plain, _ = TrainingLoss()(logits, targets)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, targets).item())


def test_warmup_rises_linearly_then_the_cosine_decays_to_zero():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = make_scheduler(optimizer, total_steps=20, warmup=4)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    rise = [0.1 * (WARMUP_START + (1 - WARMUP_START) * step / 4) for step in range(4)]
    assert rates[:4] == pytest.approx(rise)
    assert rates[4] == pytest.approx(0.1)
    assert rates[4 + 8] == pytest.approx(0.05)  # half way through the 16 steps of the cosine
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert warmup_steps(Recipe(warmup_epochs=0.5), steps_per_epoch=7, total_steps=35) == 4
    assert warmup_steps(Recipe(), steps_per_epoch=7, total_steps=35) == 0
    assert schedule_name(4).startswith("linear warmup")


def test_adamw_decays_weights_but_not_biases():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = make_optimizer(model, 0.001, Recipe(optimizer="adamw"))
    assert isinstance(optimizer, torch.optim.AdamW)
    decays = {tuple(p.shape): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decays == {(4, 3, 3, 3): 0.05, (4,): 0.0}
    assert isinstance(make_optimizer(model, 0.001), torch.optim.SGD)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--optimizer", "adam"),
        ("--label-smoothing", "0.7"),
        ("--label-smoothing", "nan"),
        ("--warmup-epochs", "-1"),
        ("--class-weighting", "balanced"),
        ("--augmentation", "heavy"),
        ("--gradient-accumulation", "0"),
        ("--ema-decay", "1"),
        ("--crop-ratio", "0.9"),
        ("--crop-ratio", "2.5"),
        ("--crop-ratio", "wide"),
    ],  # fmt: skip
)
def test_bad_recipe_values_are_refused(tmp_path, flag, value):
    arguments = ["--untrained-model", "m", "--training-dataset", "t", "--trained-model", str(tmp_path)]
    with pytest.raises(InvalidParameterError, match=flag.strip("-").replace("-", "_")):
        parse_args([*arguments, flag, value])


def test_every_option_on_is_recorded_and_resumes_bit_for_bit(tmp_path, digits, untrained_resnet18, monkeypatch):
    from training.test_resume import run_interrupted_in_epoch_two

    from train_pytorch_model.train import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    train, valid = digits

    def arguments(output):
        return ["--untrained-model", str(untrained_resnet18), "--training-dataset", str(train),
                "--validation-dataset", str(valid), "--trained-model", str(output), "--epochs", "2",
                "--batch-size", "8", "--learning-rate", "0.003", *ALL_ON]  # fmt: skip

    assert main(arguments(tmp_path / "reference")) == 0
    run_interrupted_in_epoch_two(monkeypatch, arguments(tmp_path / "resumed"))
    assert main(arguments(tmp_path / "resumed")) == 0
    summaries = [json.loads((tmp_path / f / "training_summary.json").read_text()) for f in ("reference", "resumed")]
    assert summaries[1]["resumed_from_epoch"] == 1
    # The best epoch is the first, its averaged weights chosen: the resumed run must take them from the
    # checkpoint, where they are not the network's own (a resume once restored the network's there).
    assert (summaries[0]["best_epoch"], summaries[0]["best_weights"]) == (1, "ema")
    expected = torch.load(tmp_path / "reference" / "model", weights_only=True)
    actual = torch.load(tmp_path / "resumed" / "model", weights_only=True)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    recorded = summaries[0]["hyperparameters"]
    assert (recorded["optimizer"], recorded["weight_decay"], recorded["momentum"]) == ("AdamW", 0.05, None)
    assert (recorded["label_smoothing"], recorded["warmup_epochs"]) == (0.1, 0.5)
    assert recorded["augmentation"] == "strong" and recorded["ema_decay"] == 0.9
    assert recorded["gradient_accumulation"] == 2 and recorded["global_batch_size"] == 16
    assert recorded["freeze_epochs"] == 1
    # The crop is the preprocessing of all three: the cache, validation, and scoring (preprocessing.json), which
    # the scored loss below checks against validation's.
    assert (recorded["image_fit"], recorded["crop_ratio"]) == ("center_crop", 1.2)
    preprocessing = json.loads((tmp_path / "reference" / "preprocessing.json").read_text())
    assert (preprocessing["fit"], preprocessing["crop_ratio"]) == ("center_crop", 1.2)
    # Both weights were validated every epoch; the summary says which were written.
    assert all({"valid_loss_ema", "valid_loss_trained", "ema_chosen"} <= set(row) for row in summaries[0]["history"])
    best = next(row for row in summaries[0]["history"] if row["epoch"] == summaries[0]["best_epoch"])
    assert summaries[0]["best_weights"] == ("ema" if best["ema_chosen"] else "trained")
    assert best["valid_loss"] == min(best["valid_loss_ema"], best["valid_loss_trained"])
    assert recorded["class_weighting"] == "inverse" and recorded["lr_schedule"].startswith("linear warmup")
    # valid_loss (and so early stopping) is the plain cross-entropy of the best model, whatever the training loss.
    files = sorted(valid.rglob("*.png"))
    scored = mlflow.pyfunc.load_model(str(tmp_path / "reference")).predict([str(f) for f in files])
    truth = [f"Scored Probabilities_{f.parent.name}" for f in files]
    plain = -np.mean([math.log(scored.loc[i, column]) for i, column in enumerate(truth)])
    assert plain == pytest.approx(summaries[0]["best_valid_loss"], rel=1e-3)


def test_the_moving_average_is_the_hand_computed_one():
    from train_pytorch_model.training.weight_average import WeightAverage

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(network, decay=0.5)
    start = [p.detach().clone() for p in network.parameters()]
    expected = [p.clone() for p in start]
    for update in range(1, 4):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(1.0)
        network(torch.randn(4, 2))  # moves BatchNorm's running statistics (training mode)
        average.update()
        decay = min(0.5, (1 + update) / (10 + update))
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, network.parameters(), strict=True)]
    for mine, hand in zip(average.model.parameters(), expected, strict=True):
        assert torch.allclose(mine, hand)
    assert average.model[1].num_batches_tracked == network[1].num_batches_tracked == 3
    restored = WeightAverage(network, decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 3 and torch.equal(restored.model[0].weight, average.model[0].weight)


def test_classifier_only_epochs_leave_the_rest_of_the_network_as_it_was(tmp_path, digits, untrained_resnet18,
                                                                       monkeypatch):  # fmt: skip
    from train_pytorch_model.formats.model_directory import load_weights, read_model_directory
    from train_pytorch_model.train import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    train, valid = digits
    output = tmp_path / "out"
    arguments = ["--untrained-model", str(untrained_resnet18), "--training-dataset", str(train),
                 "--validation-dataset", str(valid), "--trained-model", str(output), "--epochs", "1",
                 "--batch-size", "8", "--learning-rate", "0.01", "--freeze-epochs", "1"]  # fmt: skip
    assert main(arguments) == 0
    before = load_weights(read_model_directory(untrained_resnet18))
    after = load_weights(read_model_directory(output))
    body = [k for k in before if not k.startswith("model.fc.") and "running_" not in k and "num_batches" not in k]
    assert body and all(torch.equal(before[k], after[k]) for k in body)
    assert after["model.fc.weight"].shape == (3, 512)  # the fresh classifier, which did train
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["hyperparameters"]["freeze_epochs"] == 1


def test_every_choice_the_entry_accepts_has_its_implementation():
    """settings.py names the choices (torch-free, checked before torch loads); the tables that implement them
    live beside the code: one must not gain a name the other lacks."""
    from train_pytorch_model import settings
    from train_pytorch_model.data.augment import POLICIES
    from train_pytorch_model.training.loss import WEIGHTING_POWER
    from train_pytorch_model.training.optimizer import OPTIMIZERS

    assert set(settings.OPTIMIZERS) == set(OPTIMIZERS)
    assert set(settings.AUGMENTATIONS) == {"none", *POLICIES}
    assert set(settings.CLASS_WEIGHTINGS) == {"none", *WEIGHTING_POWER}


def test_the_default_class_weighting_changes_nothing_on_balanced_classes_and_weighs_imbalanced_ones(
    tmp_path, digits, untrained_resnet18, monkeypatch
):
    """inverse_sqrt is the default because balanced classes all weigh 1 (the same run as plain cross-entropy,
    bit for bit) while imbalanced ones train differently."""
    import shutil

    from train_pytorch_model.train import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    train, valid = digits
    imbalanced = tmp_path / "imbalanced"
    shutil.copytree(train, imbalanced)
    for extra in sorted((imbalanced / "7").iterdir())[10:]:  # 30, 30 and 10 images
        extra.unlink()

    def model_bytes(dataset, name, *options):
        output = tmp_path / name
        arguments = ["--untrained-model", str(untrained_resnet18), "--training-dataset", str(dataset),
                     "--validation-dataset", str(valid), "--trained-model", str(output), "--epochs", "1",
                     "--batch-size", "8", *options]  # fmt: skip
        assert main(arguments) == 0
        summary = json.loads((output / "training_summary.json").read_text())
        assert summary["hyperparameters"]["class_weighting"] == (options[1] if options else "inverse_sqrt")
        return (output / "model").read_bytes()

    assert model_bytes(train, "balanced-default") == model_bytes(train, "balanced-plain", "--class-weighting", "none")
    assert model_bytes(imbalanced, "imbalanced-default") != model_bytes(
        imbalanced, "imbalanced-plain", "--class-weighting", "none"
    )
