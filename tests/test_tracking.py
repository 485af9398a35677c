"""MLflow tracking as Azure ML sets it up (or, with nothing set, a local sqlite store beside the working folder),
read back from a real store; and tracking as best effort: a store that cannot be reached is reported once and
never stops the job."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from train_pytorch_model.tracking import DEFAULT_EXPERIMENT, Tracker

TRACKING_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One sqlite store for the module (creating one takes seconds); each test makes runs of its own."""
    return tmp_path_factory.mktemp("tracking")


@pytest.fixture
def in_store(store, monkeypatch) -> MlflowClient:
    """Run in the store's folder with none of Azure ML's variables set: the tracker's default store is there."""
    for name in TRACKING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # As in a fresh job process: no experiment chosen by an earlier test (MLflow keeps it module-wide).
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.chdir(store)
    yield MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_without_settings_a_run_goes_into_a_sqlite_store_in_the_working_folder(in_store, store, tmp_path):
    tracker = Tracker()
    tracker.start(run_name="unit")
    assert tracker.tracking_uri == f"sqlite:///{store.resolve() / 'mlflow.db'}"
    tracker.log_params({"epochs": 5, "note": "x" * 7000})
    tracker.log_metrics({"valid_loss": 0.5, "valid_accuracy": 0.8}, step=1)
    tracker.log_dict({"classes": ["a", "b"]}, "dataset_summary.json")
    (tmp_path / "report.csv").write_text("a,b\n", encoding="utf-8")
    tracker.log_artifact(tmp_path / "report.csv")
    tracker.log_artifact(tmp_path / "missing.csv")  # an absent file is skipped, not an error
    tracker.end("FINISHED")

    run = in_store.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "unit"
    assert in_store.get_experiment(run.info.experiment_id).name == DEFAULT_EXPERIMENT
    assert run.data.params["epochs"] == "5"
    assert len(run.data.params["note"]) == 6000 and run.data.params["note"].endswith("...")  # MLflow's limit
    assert run.data.metrics == {"valid_loss": 0.5, "valid_accuracy": 0.8}
    assert sorted(a.path for a in in_store.list_artifacts(tracker.run_id)) == ["dataset_summary.json", "report.csv"]
    # Artifacts beside the database, never in the code folder the component runs in.
    assert run.info.artifact_uri.startswith((store / "mlartifacts").resolve().as_uri())
    assert tracker.problem is None


def test_logs_into_the_run_azure_ml_created(in_store, monkeypatch):
    experiment = in_store.create_experiment("azure-made")
    created = in_store.create_run(experiment)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "azure-made")  # Azure ML sets both
    monkeypatch.setenv("MLFLOW_RUN_ID", created.info.run_id)
    tracker = Tracker()
    tracker.start(run_name="ignored")
    tracker.log_metrics({"valid_loss": 0.25}, step=2)
    tracker.end("FINISHED")
    assert tracker.run_id == created.info.run_id
    assert [m.step for m in in_store.get_metric_history(created.info.run_id, "valid_loss")] == [2]
    assert len(in_store.search_runs([experiment])) == 1


def test_a_resume_into_a_store_without_the_run_starts_a_new_one(in_store, caplog):
    tracker = Tracker()
    with caplog.at_level(logging.WARNING):
        tracker.start(run_name="resumed", resume_run_id="0" * 32)
    tracker.end()
    assert tracker.run_id and tracker.run_id != "0" * 32
    assert in_store.get_run(tracker.run_id).info.status == "FINISHED"
    assert "starting a new run" in caplog.text and tracker.problem is None


def test_after_a_resume_each_epoch_has_exactly_one_point(in_store):
    tracker = Tracker()
    tracker.start(run_name="interrupted")
    tracker.log_metrics({"valid_loss": 0.9, "train_loss": 1.0}, step=1)  # the epoch logged before the kill
    history = [{"epoch": epoch, "valid_loss": 1.0 / epoch, "train_loss": 1.0} for epoch in (1, 2, 3)]
    tracker.log_missing_epochs(history)
    tracker.log_epoch({"valid_loss": 0.3, "train_loss": 1.0}, 3)  # trained again after the checkpoint: kept once
    tracker.log_epoch({"valid_loss": 0.25, "train_loss": 1.0}, 4)
    tracker.end()
    points = in_store.get_metric_history(tracker.run_id, "valid_loss")
    assert sorted((m.step, m.value) for m in points) == [(1, 0.9), (2, 0.5), (3, pytest.approx(1 / 3)), (4, 0.25)]


def test_a_failed_job_ends_its_run_failed(in_store):
    tracker = Tracker()
    tracker.start(run_name="failing")
    tracker.set_tags({"error": "InvalidDatasetError"})
    tracker.end("FAILED")
    run = in_store.get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "InvalidDatasetError"


def test_an_unreachable_server_is_reported_once_and_training_goes_on(monkeypatch, caplog, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tracker = Tracker()
    with caplog.at_level(logging.WARNING):
        tracker.start(run_name="offline")
        tracker.log_params({"epochs": 5})
        tracker.log_metrics({"valid_loss": 0.5}, step=1)
        tracker.end("FINISHED")
    assert not tracker.enabled and tracker.problem.startswith("starting the run failed")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Training goes on" in r.getMessage()]
    assert len(warnings) == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_a_disabled_tracker_touches_nothing(monkeypatch, tmp_path):
    """Processes other than the first carry a disabled tracker: no store, no run, no call."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(enabled=False)
    tracker.start(run_name="rank 1")
    tracker.log_params({"a": 1})
    tracker.log_metrics({"valid_loss": 1.0}, step=1)
    tracker.log_missing_epochs([{"epoch": 1, "valid_loss": 1.0}])
    tracker.end()
    assert tracker.run_id is None and tracker.problem is None
    assert list(tmp_path.iterdir()) == []
