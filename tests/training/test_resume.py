"""Resuming a preempted job from its checkpoint: the same result as an uninterrupted run, never another run's
state, and a usable MLflow run whatever the store holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT
from train_pytorch_model.local.command_line import load_component_spec, render_command
from train_pytorch_model.settings import CHECKPOINT_DIR
from train_pytorch_model.training.checkpoint import CHECKPOINT_FILE

COMPONENT = REPO_ROOT / "component.yaml"


EPOCHS = 4


def command_for(untrained: Path, train: Path, valid: Path, output: Path) -> str:
    spec = load_component_spec(COMPONENT)
    inputs = {
        "untrained_model": str(untrained),
        "training_dataset": str(train),
        "validation_dataset": str(valid),
        "epochs": EPOCHS,
        "batch_size": 8,
        "learning_rate": 0.01,
        "patience": 10,
    }
    command = render_command(spec, inputs, {"trained_model": str(output)})
    assert command.startswith("python ")
    return sys.executable + command[len("python") :]


def start(command: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=REPO_ROOT / "src",
        env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_killed_job_resumes_to_the_uninterrupted_result(tmp_path, digits, untrained_resnet18):
    train, valid = digits
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": "resume"}

    reference = tmp_path / "reference"
    done = start(command_for(untrained_resnet18, train, valid, reference), env)
    output, _ = done.communicate(timeout=600)
    assert done.returncode == 0, output[-3000:]

    resumed = tmp_path / "resumed"
    checkpoint = resumed / CHECKPOINT_DIR / CHECKPOINT_FILE
    victim = start(command_for(untrained_resnet18, train, valid, resumed), env)
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the job ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    killed_at = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= killed_at < EPOCHS
    assert not (resumed / "_meta.yaml").exists(), "a killed job must not leave a valid-looking output"

    again = start(command_for(untrained_resnet18, train, valid, resumed), env)
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log[-3000:]
    assert f"Resuming from the checkpoint of epoch {killed_at}" in log

    expected = torch.load(reference / "model", weights_only=True)
    actual = torch.load(resumed / "model", weights_only=True)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)

    timings = ("train_images_per_second", "epoch_seconds")
    summaries = [json.loads((folder / "training_summary.json").read_text()) for folder in (reference, resumed)]
    histories = [[{k: v for k, v in row.items() if k not in timings} for row in s["history"]] for s in summaries]
    assert histories[0] == histories[1]
    assert summaries[1]["resumed_from_epoch"] == killed_at

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("resume")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2, "the killed and resumed job is one run, the reference another"
    resumed_run = next(r for r in runs if r.info.run_id == summaries[1]["mlflow_run_id"])
    assert resumed_run.info.status == "FINISHED"
    for name in ("valid_loss", "train_loss", "valid_accuracy"):
        steps = sorted(m.step for m in client.get_metric_history(resumed_run.info.run_id, name))
        assert steps == list(range(1, EPOCHS + 1)), name
    values = {m.step: m.value for m in client.get_metric_history(resumed_run.info.run_id, "valid_loss")}
    assert [values[row["epoch"]] for row in summaries[0]["history"]] == [
        row["valid_loss"] for row in summaries[0]["history"]
    ]


def run_interrupted_in_epoch_two(monkeypatch, arguments: list[str]) -> None:
    """Run the trainer in this process and stop it as the second epoch starts (after epoch 1's checkpoint), as a
    preemption would; the trainer is left as it was."""
    from train_pytorch_model.train import main
    from train_pytorch_model.training import fit as trainer

    real = trainer.train_one_epoch
    calls: list[int] = []

    def interrupted_in_epoch_two(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "train_one_epoch", interrupted_in_epoch_two)
        with contextlib.suppress(KeyboardInterrupt):
            main(arguments)


def test_checkpoint_of_other_images_under_the_same_names_is_not_resumed(
    tmp_path, digits, untrained_resnet18, monkeypatch
):
    """An interrupted job, re-run on the same output with a training folder whose files have the same names but
    other content, starts afresh instead of resuming a model trained on the old images."""
    from conftest import write_digits_subset
    from train_pytorch_model.train import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    train, valid = digits
    output = tmp_path / "out"
    arguments = ["--untrained-model", str(untrained_resnet18), "--validation-dataset", str(valid),
                 "--trained-model", str(output), "--epochs", "2", "--batch-size", "8"]  # fmt: skip
    run_interrupted_in_epoch_two(monkeypatch, ["--training-dataset", str(train), *arguments])
    assert (output / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file()

    other = tmp_path / "other"  # the same file names, other scans in them
    shutil.copytree(train, other)
    fresh = write_digits_subset(tmp_path / "fresh", per_class=30, offset=60)
    for label in ("0", "1", "7"):
        for target, source in zip(sorted((other / label).iterdir()), sorted((fresh / label).iterdir()), strict=True):
            target.write_bytes(source.read_bytes())
    assert main(["--training-dataset", str(other), *arguments]) == 0
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["resumed_from_epoch"] == 0 and summary["last_epoch"] == 2


def test_resume_into_another_store_starts_a_complete_new_run(tmp_path, digits, untrained_resnet18, monkeypatch):
    """An interrupted job resumed where its MLflow run does not exist (another store, or a new Azure run) logs
    into a new run with its parameters, its dataset summary and every epoch, instead of failing."""
    from train_pytorch_model.train import main

    train, valid = digits
    output = tmp_path / "out"
    arguments = ["--untrained-model", str(untrained_resnet18), "--training-dataset", str(train),
                 "--validation-dataset", str(valid), "--trained-model", str(output),
                 "--epochs", "2", "--batch-size", "8"]  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'first.db'}")
    run_interrupted_in_epoch_two(monkeypatch, arguments)

    second = f"sqlite:///{tmp_path / 'second.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", second)
    assert main(arguments) == 0
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["mlflow_problem"] is None
    client = MlflowClient(second)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.params["epochs"] == "2" and run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "valid_loss")) == [1, 2]
    assert "dataset_summary.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_an_unusable_mlflow_run_does_not_stop_training(tmp_path, digits, untrained_resnet18, monkeypatch):
    from train_pytorch_model.train import main

    train, valid = digits
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_RUN_ID", "0123456789abcdef0123456789abcdef")  # not in this store
    output = tmp_path / "out"
    code = main(["--untrained-model", str(untrained_resnet18), "--training-dataset", str(train),
                 "--validation-dataset", str(valid), "--trained-model", str(output), "--epochs", "1"])  # fmt: skip
    assert code == 0
    summary = json.loads((output / "training_summary.json").read_text())
    assert "starting the run failed" in summary["mlflow_problem"] and summary["mlflow_run_id"] is None
    assert (output / "_meta.yaml").is_file()
