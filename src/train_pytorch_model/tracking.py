"""MLflow tracking, as Azure ML sets it up or, with nothing set, into a local sqlite store.

Azure ML starts the run itself and passes MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME and MLFLOW_RUN_ID; the
job then logs into that run. One job is one MLflow run, also when it resumes after a preemption.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import mlflow

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "train_pytorch_model"


def default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


class Tracker:
    """A thin wrapper that logs to one MLflow run; a disabled tracker (other ranks) does nothing."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self._owns_run = False

    def start(self, run_name: str, resume_run_id: str | None = None) -> None:
        if not self.enabled:
            return
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        run_id = os.environ.get("MLFLOW_RUN_ID") or resume_run_id
        active = mlflow.active_run()
        if active is not None and (run_id is None or active.info.run_id == run_id):
            run = active
        elif run_id:
            run = mlflow.start_run(run_id=run_id)
            self._owns_run = True
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
            _ensure_local_experiment(self.tracking_uri, name)
            mlflow.set_experiment(name)
            run = mlflow.start_run(run_name=run_name)
            self._owns_run = True
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            # Resumed runs log the same parameters again; MLflow accepts identical values.
            mlflow.log_params({k: _param(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled:
            mlflow.log_metrics(metrics, step=step)

    def log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """After a resume: log the epochs the checkpoint has but the run lacks, so each epoch has one point."""
        if not self.enabled or not history:
            return
        client = mlflow.tracking.MlflowClient()
        logged = {m.step for m in client.get_metric_history(self.run_id, "valid_loss")}
        for row in history:
            if row["epoch"] not in logged:
                self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, data: Any, name: str) -> None:
        if self.enabled:
            mlflow.log_dict(data, name)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled and path.is_file():
            mlflow.log_artifact(str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            mlflow.log_artifacts(str(folder), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self._owns_run and mlflow.active_run() is not None:
            mlflow.end_run(status=status)


def _ensure_local_experiment(tracking_uri: str, name: str) -> None:
    """With a local sqlite store, keep artifacts beside the database: MLflow's default ('./mlruns' in the
    working directory) would put them into the code folder the component runs in."""
    if not tracking_uri.startswith("sqlite:///") or mlflow.get_experiment_by_name(name) is not None:
        return
    database = Path(tracking_uri[len("sqlite:///") :])
    mlflow.create_experiment(name, artifact_location=(database.parent / "mlartifacts").resolve().as_uri())


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
