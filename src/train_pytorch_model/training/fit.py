"""The fit phase: the epoch loop. Each epoch trains, validates, lets early stopping decide, checkpoints and
logs; every decision is taken by a named object (EarlyStopping, Checkpoint, Tracker, RunProgress)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..data.augment import epoch_generator
from ..data.batches import eval_batches, train_batches
from ..errors import InvalidParameterError, ModuleOutOfMemoryError
from ..settings import Settings
from .distributed import DistributedContext
from .epoch import evaluate, train_one_epoch
from .parts import TrainingRun
from .prepare import PreparedData
from .progress import RunProgress
from .setup import TrainingSetup

log = logging.getLogger("train_pytorch_model")


def fit(run: TrainingRun) -> None:
    """Train from state.next_epoch until the last epoch, an early stop or a divergence (stopper says which)."""
    settings, prepared, setup, state, stopper = run.settings, run.prepared, run.setup, run.state, run.stopper
    checkpoint, tracker, context = run.checkpoint, run.tracker, run.context
    # Only the first process shows progress; the others would repeat it.
    progress = RunProgress(context.is_main, settings.epochs, setup.steps_per_epoch, settings.batch_size)
    for epoch in range(state.next_epoch, settings.epochs + 1):
        if stopper.should_stop:  # resumed after an early stop, killed before the output was written
            break
        metrics = run_epoch(epoch, settings, prepared, setup, progress, context)
        state.history.append({"epoch": epoch, **metrics})
        (log.info if context.is_main else log.debug)(_epoch_line(epoch, settings.epochs, metrics))
        improved = stopper.update(epoch, metrics["valid_loss"], metrics["train_loss"])
        ema_chosen = bool(metrics.get("ema_chosen"))
        if improved:
            state.best_state = weights_copy(setup.ema.model if ema_chosen else setup.network)
        if stopper.diverged:
            tracker.log_epoch(metrics, epoch)
            break
        # Every rank took the same decision from the same all-reduced loss; only the first one writes, in the
        # background while the next epoch trains.
        # The checkpoint stores the best weights once when they are the network's; the averaged weights, when
        # they were chosen, are not the network's and are stored beside it.
        best_is_network = improved and not ema_chosen
        checkpoint.save(epoch, setup.stateful(("early_stopping", stopper)), state, tracker.run_id, best_is_network)
        # A job killed before this checkpoint lands trains this epoch again when it resumes; the tracker then
        # keeps the point it has (one point per epoch), and the checkpoint logs what it holds that the run lacks.
        tracker.log_epoch(metrics, epoch)
        if stopper.should_stop:
            log.info("Stopping early: %s.", stopper.stop_reason)
    state.first_step_at = progress.first_step_at


def weights_copy(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights as they are now, on the CPU: what the output gets if no later epoch does better."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in network.state_dict().items()}


def run_epoch(
    epoch: int,
    settings: Settings,
    prepared: PreparedData,
    setup: TrainingSetup,
    progress: RunProgress,
    context: DistributedContext,
) -> dict[str, float]:
    """One epoch of training and one validation pass; returns the epoch's metrics as MLflow logs them."""
    lr = setup.optimizer.param_groups[0]["lr"]
    setup.sampler.set_epoch(epoch)
    compute = setup.compute
    augment = None
    if setup.augmenter is not None:
        generator = epoch_generator(settings.random_seed, context.rank, epoch)
        augment = functools.partial(setup.augmenter, generator=generator)
    batches = train_batches(
        prepared.train_data, list(setup.sampler), settings.batch_size, setup.drop_partial, setup.normalize, augment
    )
    progress.start_epoch(epoch)
    try:
        with _step_errors(settings, prepared, compute.device):
            train = train_one_epoch(
                setup.model,
                batches,
                setup.optimizer,
                setup.scheduler,
                compute.precision,
                compute.device,
                on_step=progress.on_step,
                reduce=context.all_reduce_sum,
                loss_fn=setup.loss,
                micro=setup.micro,
                after_step=setup.ema.update if setup.ema is not None else None,
                before_step=_freezing(setup, epoch),
            )
            valid = _validate(setup.network, settings, prepared, setup, context)
            averaged = _validate(setup.ema.model, settings, prepared, setup, context) if setup.ema else None
    finally:
        progress.end_epoch()
    extra, seconds = {}, train.seconds + valid.seconds + (averaged.seconds if averaged else 0.0)
    if averaged is not None:  # the better of the two weights is the epoch's, for early stopping and the output
        extra = {"valid_loss_trained": valid.loss, "valid_loss_ema": averaged.loss}
        extra["ema_chosen"] = float(averaged.loss < valid.loss)
        valid = averaged if extra["ema_chosen"] else valid
    return {
        "train_loss": train.loss,
        "train_accuracy": train.accuracy,
        "valid_loss": valid.loss,
        "valid_accuracy": valid.accuracy,
        "valid_top5_accuracy": valid.top5_accuracy,
        "learning_rate": lr,
        "train_images_per_second": train.images_per_second,
        "epoch_seconds": seconds,
        **extra,
    }


def _freezing(setup: TrainingSetup, epoch: int):
    """What drops the body's gradients before each step of a classifier-only epoch; None in the others."""
    freeze = setup.freeze
    return freeze.drop_body_gradients if freeze is not None and freeze.applies_to(epoch) else None


def _validate(network, settings: Settings, prepared: PreparedData, setup: TrainingSetup, context: DistributedContext):
    context.broadcast_buffers(network)  # every rank validates (and the first saves) the same model
    compute = setup.compute
    batches = eval_batches(prepared.valid_data, settings.batch_size * 2, setup.normalize, context.rank,
                           context.world_size)  # fmt: skip
    return evaluate(network, batches, compute.precision, compute.device, len(prepared.classes),
                    reduce=context.all_reduce_sum)  # fmt: skip


@contextmanager
def _step_errors(settings: Settings, prepared: PreparedData, device: torch.device) -> Iterator[None]:
    """What a step can fail with that the user can fix, as the component's own errors."""
    try:
        yield
    except ValueError as exc:
        if "Expected more than 1 value per channel" not in str(exc):
            raise
        height, width = prepared.preprocessing.image_size
        raise InvalidParameterError(
            f"{settings.batch_size} is too small for {prepared.spec.architecture} at {width}x{height}: its "
            "BatchNorm layers cannot normalise a single value per channel.",
            "Set batch_size to 2 or more (or raise image_size).",
            subject="Parameter batch_size",
        ) from exc
    except torch.OutOfMemoryError as exc:
        raise ModuleOutOfMemoryError(
            f"the {device.type.upper()} ran out of memory at batch size {settings.batch_size} ({exc}).",
            "Lower batch_size (halve it), or lower image_size, or use a compute with more memory.",
            subject="Training",
        ) from exc


def _epoch_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    return (
        f"Epoch {epoch}/{epochs}  train_loss {metrics['train_loss']:.4f}  train_acc {metrics['train_accuracy']:.4f}"
        f"  valid_loss {metrics['valid_loss']:.4f}  valid_acc {metrics['valid_accuracy']:.4f}"
        f"  top5 {metrics['valid_top5_accuracy']:.4f}  lr {metrics['learning_rate']:.3g}"
        f"  {metrics['train_images_per_second']:.0f} img/s"
    )
