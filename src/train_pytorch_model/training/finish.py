"""The last phase: the best epoch's weights, a final evaluation, the summary, the output folder and its
artifacts; or, when the loss diverged, the best model so far kept and an error that says what to change."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.batches import SMALL_BATCH, eval_batches
from ..errors import TrainingDivergedError
from ..formats.json_file import write_json
from ..model.families import has_batchnorm
from ..output.model_output import write_model_output
from ..output.report import REPORT_FILES, write_report
from ..output.summary import DATASET_SUMMARY_FILE, SUMMARY_FILE, Outcome, Tracking, diverged_summary, training_summary
from .epoch import evaluate
from .parts import TrainingRun

log = logging.getLogger("train_pytorch_model")


@dataclass
class RunOutcome:
    """What run() returns on every process; summary (training_summary.json) only on the first, which writes."""

    rank: int
    best_epoch: int
    last_epoch: int
    history: list[dict]
    summary: dict | None = None


def finish(run: TrainingRun) -> RunOutcome:
    state, stopper, context = run.state, run.stopper, run.context
    outcome = RunOutcome(context.rank, stopper.best_epoch, state.last_epoch, state.history)
    if not context.is_main:
        context.barrier()  # the first rank writes the output; the others wait for it
        return outcome
    assert state.best_state is not None
    prepared, setup = run.prepared, run.setup
    setup.network.load_state_dict(state.best_state)
    final = evaluate(
        setup.network,
        eval_batches(prepared.valid_data, run.settings.batch_size * 2, setup.normalize),
        setup.compute.precision,
        setup.compute.device,
        len(prepared.classes),
        keep_predictions=True,
    )
    epochs = Outcome(
        best_epoch=stopper.best_epoch,
        last_epoch=state.last_epoch,
        stop_reason=stopper.stop_reason,
        resumed_from_epoch=state.resumed_from,
        best_valid_loss=stopper.best_loss,
        best_valid_accuracy=final.accuracy,
        best_valid_top5_accuracy=final.top5_accuracy,
        history=state.history,
    )
    tracker = run.tracker
    summary = training_summary(
        epochs,
        setup.record,
        prepared.network.summary(),
        Tracking(tracker.run_id, tracker.tracking_uri, tracker.problem),
        seconds=time.perf_counter() - run.started,
        seconds_to_first_step=(state.first_step_at - run.started) if state.first_step_at else None,
    )
    summary.update(prepared.decode_metrics())
    best_row = next((row for row in state.history if row["epoch"] == stopper.best_epoch), {})
    summary["best_weights"] = "ema" if best_row.get("ema_chosen") else "trained"  # which weights were written
    summary["epochs_not_checkpointed"] = run.checkpoint.skipped  # while an earlier checkpoint was still written
    tracker.log_metrics(
        {
            "best_epoch": epochs.best_epoch,
            "last_epoch": epochs.last_epoch,
            "best_valid_loss": epochs.best_valid_loss,
            "best_valid_accuracy": epochs.best_valid_accuracy,
        },
        step=0,
    )

    def report(folder: Path) -> None:
        targets, predictions = final.targets.numpy(), final.predictions.numpy()
        summary["per_class"] = write_report(
            folder, state.history, stopper.best_epoch, targets, predictions, prepared.classes
        )
        write_json(folder / DATASET_SUMMARY_FILE, prepared.dataset_summary)

    _write(run, summary, report)
    output = run.settings.trained_model
    tracker.log_artifacts(output, "trained_model")
    for name in (*REPORT_FILES, SUMMARY_FILE):
        tracker.log_artifact(output / name)
    context.barrier()
    outcome.summary = summary
    return outcome


def _write(run: TrainingRun, summary: dict, report=None) -> None:
    """The output folder, then the checkpoint removed: it (weights, momentum and best weights: 3x the model) has
    served its purpose, and goes before the upload so that it never ends up among the run's artifacts."""
    prepared = run.prepared
    designer_files = (
        (prepared.train_set.schema_file, "_schema.json"),
        (prepared.train_set.samples_file, "_samples.json"),
    )
    write_model_output(
        run.settings.trained_model,
        run.setup.network,
        prepared.spec,
        prepared.preprocessing,
        summary,
        copied=designer_files,
        report=report,
    )
    run.checkpoint.remove()


def raise_diverged(run: TrainingRun) -> None:
    """Keep the best model so far (resuming would only diverge again: the run is over, and its output is the
    kept model alone), then stop with an error that says what to change."""
    state, stopper = run.state, run.stopper
    kept = ""
    if state.best_state is not None and run.context.is_main:
        run.setup.network.load_state_dict(state.best_state)
        summary = diverged_summary(stopper.best_epoch, stopper.stop_reason, state.history, run.prepared.classes)
        _write(run, summary)
        kept = f" The model of epoch {stopper.best_epoch}, the best before that, was saved."
    raise TrainingDivergedError(
        f"the loss became NaN or infinite at epoch {stopper.diverged_epoch}.{kept}",
        f"Lower the learning rate (now {run.settings.learning_rate}); check the images for corrupt content."
        + _small_batch_hint(run),
        subject="Training",
    )


def _small_batch_hint(run: TrainingRun) -> str:
    batch_size, architecture = run.settings.batch_size, run.prepared.spec.architecture
    if batch_size >= SMALL_BATCH or not has_batchnorm(architecture):
        return ""
    height, width = run.prepared.preprocessing.image_size
    return (
        f" With batch_size {batch_size}, {architecture}'s BatchNorm layers normalise by the statistics of "
        f"{batch_size} images, which at {width}x{height} (a few values a channel in the last layers) can throw the "
        f"gradients off: raise batch_size to {SMALL_BATCH} or more, or image_size."
    )
