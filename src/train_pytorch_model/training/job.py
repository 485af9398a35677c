"""The training job: from input folders to the trained ModelDirectory, in phases with typed results between
them.

    prepare (inputs checked, network built, images decoded)  -> PreparedData
    set_up  (device, precision, DDP, optimizer, schedule)    -> TrainingSetup (with the RunRecord)
    resume  (the checkpoint, when its fingerprint matches)   -> FitState
    fit     (the epoch loop)                                 -> FitState, EarlyStopping's verdict
    finish  (best weights, final evaluation, output folder)  -> RunOutcome
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ComponentError
from ..formats.model_directory import read_model_directory
from ..output.publish import check_output_folder, invalidate_earlier_output
from ..output.report import format_dataset_summary
from ..settings import CHECKPOINT_DIR, Settings
from ..tracking import Tracker
from .checkpoint import Checkpoint
from .distributed import init_distributed
from .early_stopping import EarlyStopping
from .finish import RunOutcome, finish, raise_diverged
from .fit import fit
from .parts import TrainingRun
from .prepare import prepare
from .setup import set_up

log = logging.getLogger("train_pytorch_model")


def seed_everything(seed: int) -> None:
    """Seed every generator before anything random happens (the head's initialisation included). Shuffling
    does not draw from these: DistributedSampler derives each epoch's order from the seed and the epoch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % 2**63)


def run(settings: Settings) -> RunOutcome:
    started = time.perf_counter()
    context = init_distributed()
    output = settings.trained_model
    if context.is_main:  # the only process that writes the output; the others never touch it
        check_output_folder(output, settings.inputs, subject="Output trained_model", kind="ModelDirectory")
        if invalidate_earlier_output(output):
            log.info("The output folder holds an earlier model; it is replaced when this run finishes.")
        output.mkdir(parents=True, exist_ok=True)
    seed_everything(settings.random_seed)
    spec = read_model_directory(settings.untrained_model)
    scratch = Path(tempfile.mkdtemp(prefix="train-pytorch-model-"))
    try:
        prepared = prepare(settings, spec, scratch, context.world_size)
        setup = set_up(settings, prepared, context)
        stopper = EarlyStopping(settings.patience)
        checkpoint = Checkpoint(output / CHECKPOINT_DIR, setup.record.fingerprint(), writer=context.is_main)
        state = checkpoint.restore(setup.stateful(("early_stopping", stopper)))
        if context.is_main:
            print(format_dataset_summary(prepared.dataset_summary), flush=True)
        tracker = Tracker(enabled=context.is_main)
        parts = TrainingRun(settings, prepared, setup, state, stopper, checkpoint, tracker, context, started)
        return _tracked(parts)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        context.shutdown()


def _tracked(run: TrainingRun) -> RunOutcome:
    """Fit and finish inside one MLflow run, which ends FAILED unless the output was written."""
    tracker, state = run.tracker, run.state
    tracker.start(run_name="train_pytorch_model", resume_run_id=state.resumed_run_id)
    status = "FAILED"
    try:
        if state.resumed_from:
            tracker.log_missing_epochs(state.history)
        if not state.resumed_from or tracker.run_id != state.resumed_run_id:  # a fresh run, or a resume into a new one
            tracker.log_params(run.setup.record.mlflow_params())
            tracker.log_dict(run.prepared.dataset_summary, "dataset_summary.json")
        fit(run)
        if run.stopper.diverged:
            raise_diverged(run)
        outcome = finish(run)
        status = "FINISHED"
        return outcome
    except ComponentError as error:
        # The run page in the studio shows the same sentence as the job's error banner (stderr's tail).
        tracker.set_tags({"error": error.name, "mlflow.note.content": f"{error.name}: {error.message}"})
        raise
    finally:
        tracker.end(status)
