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

from ..disk_space import require_free_space
from ..errors import ComponentError
from ..formats.model_directory import read_model_directory
from ..host_memory import keep_freed_memory
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

# The output's files besides the weights: the MLflow model's code, the report's images, the summaries.
OUTPUT_EXTRAS_BYTES = 16 << 20


def seed_everything(seed: int) -> None:
    """Seed every generator before anything random happens (the head's initialisation included). Shuffling
    does not draw from these: DistributedSampler derives each epoch's order from the seed and the epoch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % 2**63)


def run(settings: Settings) -> RunOutcome:
    started = time.perf_counter()
    keep_freed_memory()  # before the first large allocation: every epoch then reuses its memory
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
    checkpoint: Checkpoint | None = None
    try:
        prepared = prepare(settings, spec, scratch, context)
        setup = set_up(settings, prepared, context)
        if context.is_main:
            check_output_space(output, setup.network)
        stopper = EarlyStopping(settings.patience)
        checkpoint = Checkpoint(output / CHECKPOINT_DIR, setup.record.fingerprint(), writer=context.is_main)
        state = checkpoint.restore(setup.stateful(("early_stopping", stopper)))
        if context.is_main:
            print(format_dataset_summary(prepared.dataset_summary), flush=True)
        tracker = Tracker(enabled=context.is_main)
        parts = TrainingRun(settings, prepared, setup, state, stopper, checkpoint, tracker, context, started)
        return _tracked(parts)
    finally:
        try:
            if checkpoint is not None:
                checkpoint.close()  # a failed run keeps its last checkpoint, whole, for a re-run to resume from
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            context.shutdown()


def check_output_space(output: Path, network: torch.nn.Module) -> None:
    """Refuse before the first epoch a run whose checkpoint and model cannot fit the output's disk, rather than
    after an hour of training. The checkpoint holds up to three copies of the weights (the weights, the
    momentum, the best epoch's) and is replaced by writing the next one beside it; the output holds two (the
    designer's file and the MLflow model) while the last checkpoint is still there: six copies at the most."""
    weights = sum(tensor.numel() * tensor.element_size() for tensor in network.state_dict().values())
    require_free_space(output, 6 * weights + OUTPUT_EXTRAS_BYTES, "the checkpoint and the trained model")


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
            tracker.log_metrics(run.prepared.decode_metrics(), step=0)
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
