"""MLflow tracking, as Azure ML sets it up or, with nothing set, into a local sqlite store.

Azure ML starts the run itself and passes MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME and MLFLOW_RUN_ID; the
job then logs into that run. One job is one MLflow run, also when it resumes after a preemption.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.exceptions

from .errors import first_line

log = logging.getLogger(__name__)
# MLflow sets its own logger to INFO when imported (after the CLI configured logging): its database-creation
# chatter is not the user's business.
logging.getLogger("mlflow").setLevel(logging.WARNING)

DEFAULT_EXPERIMENT = "train_pytorch_model"


def default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


class Tracker:
    """A thin wrapper that logs to one MLflow run; a disabled tracker (other ranks) does nothing.

    Tracking is best-effort: when MLflow cannot be reached or refuses a call (after its own retries), the
    tracker says so once, turns itself off and the job trains on. A model matters more than its charts, and
    training_summary.json holds every metric anyway."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.problem: str | None = None
        self._owns_run = False
        self._epochs_in_run: set[int] = set()  # epochs a resumed run already has a point for

    def start(self, run_name: str, resume_run_id: str | None = None) -> None:
        if self.enabled:
            self._guard("starting the run", self._start, run_name, resume_run_id)

    def _start(self, run_name: str, resume_run_id: str | None) -> None:
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        given = os.environ.get("MLFLOW_RUN_ID")
        active = mlflow.active_run()
        if active is not None and (given is None or active.info.run_id == given):
            self.run_id = active.info.run_id
            return
        if given:
            run = mlflow.start_run(run_id=given)
        else:
            run = self._resume(resume_run_id) if resume_run_id else None
            if run is None:
                name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
                _ensure_local_experiment(self.tracking_uri, name)
                mlflow.set_experiment(name)
                run = mlflow.start_run(run_name=run_name)
        self._owns_run = True
        self.run_id = run.info.run_id

    def _resume(self, run_id: str):
        """The run of the interrupted job; None when this store does not have it (the job moved), so that a
        new run is started rather than the job failing on a run id it cannot use."""
        try:
            return mlflow.start_run(run_id=run_id)
        except mlflow.exceptions.MlflowException as exc:
            log.warning("MLflow: the interrupted job's run %s is not in %s (%s); starting a new run.",
                        run_id, self.tracking_uri, first_line(exc))  # fmt: skip
            return None

    def _guard(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any tracking failure: say it once, train on
            self.enabled = False
            self.problem = f"{what} failed: {first_line(exc)}"
            log.warning(
                "MLflow (%s): %s. Training goes on without tracking; the metrics are in training_summary.json.",
                self.tracking_uri,
                self.problem,
            )
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        # Resumed runs log the same parameters again; MLflow accepts identical values.
        self._guard("logging parameters", mlflow.log_params, {k: _param(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._guard("logging metrics", mlflow.log_metrics, metrics, step=step)

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        """An epoch's metrics at step = epoch, unless the run already has that epoch (a resumed job trains again
        the epochs after its checkpoint; the first attempt may have logged them)."""
        if epoch not in self._epochs_in_run:
            self.log_metrics(metrics, step=epoch)
            self._epochs_in_run.add(epoch)

    def log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """After a resume: log the epochs the checkpoint has but the run lacks, so each epoch has one point."""
        if not self.enabled:
            return
        history_of = mlflow.tracking.MlflowClient().get_metric_history
        points = self._guard("reading the run's metrics", history_of, self.run_id, "valid_loss") or []
        self._epochs_in_run = {int(m.step) for m in points}
        for row in history:
            self.log_epoch({k: v for k, v in row.items() if k != "epoch"}, int(row["epoch"]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._guard("setting tags", mlflow.set_tags, {k: str(v) for k, v in tags.items()})

    def log_dict(self, data: Any, name: str) -> None:
        self._guard(f"logging {name}", mlflow.log_dict, data, name)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_file():
            self._guard(f"uploading {path.name}", mlflow.log_artifact, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self._guard(f"uploading {folder.name}", mlflow.log_artifacts, str(folder), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self._owns_run and mlflow.active_run() is not None:
            if self.enabled:
                self._guard("ending the run", mlflow.end_run, status=status)
            else:  # tracking failed part-way: close the run locally without another remote call
                with contextlib.suppress(Exception):  # the problem was already reported
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
