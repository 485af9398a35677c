"""The training run: from input folders to the trained ModelDirectory.

Data flows one way: model folder and datasets are read and checked, images decoded once, the network trained
with early stopping on the validation loss, and the best epoch's weights written as a ModelDirectory.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from . import __version__
from .checkpoint import (
    CHECKPOINT_DIR,
    file_digest,
    fingerprint,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from .data import (
    DecodedImages,
    Normalizer,
    batches_of,
    choose_image_size,
    decode_dataset,
    default_workers,
    survey_images,
)
from .designer_files import check_output_folder, invalidate_earlier_output, publish
from .distributed import DistributedContext, init_distributed
from .engine import EarlyStopping, Precision, evaluate, train_one_epoch
from .errors import (
    ComponentError,
    InvalidDatasetError,
    InvalidModelDirectoryError,
    InvalidParameterError,
    ModuleOutOfMemoryError,
    TrainingDivergedError,
)
from .image_directory import LabeledImages, load_labeled_images
from .mlflow_model import save_mlflow_model
from .model_directory import ModelSpec, load_weights, read_model_directory, write_model_directory
from .models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DesignerNet,
    build_network,
    classifier_of,
    load_matching,
    replace_classifier,
    strip_parallel_prefixes,
)
from .progress import EpochProgress
from .reporting import REPORT_FILES, format_dataset_summary, write_report
from .scoring import PREPROCESSING_FILE, Preprocessing
from .tracking import Tracker
from .train import Settings

log = logging.getLogger("train_pytorch_model")

MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
SUMMARY_FILE = "training_summary.json"


def seed_everything(seed: int) -> None:
    """Seed every generator before anything random happens (the head's initialisation included). Shuffling
    does not draw from these: DistributedSampler derives each epoch's order from the seed and the epoch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % 2**63)


def check_classes(train: LabeledImages, valid: LabeledImages) -> list[str]:
    """Training classes, in the training set's order; validation labels are matched to them by name."""
    present = [name for name, count in train.class_counts().items() if count > 0]
    if len(present) < 2:
        raise InvalidDatasetError(
            f"it has images of {len(present)} class{'es' if len(present) != 1 else ''} "
            f"({', '.join(map(repr, present))}); a classifier needs at least two.",
            "Add a subfolder of images for each class to tell apart.",
            subject="Training dataset",
        )
    classes = train.classes
    unknown = sorted({r.label for r in valid.records} - set(classes))
    if unknown:
        raise InvalidDatasetError(
            f"it has classes that the training dataset does not have: {', '.join(map(repr, unknown[:10]))}. "
            "Categories of the validation dataset must be among those of the training dataset.",
            "Make sure training and validation datasets have the same categories.",
            subject="Validation dataset",
        )
    return classes


def build_model(spec: ModelSpec, num_classes: int) -> tuple[DesignerNet, dict]:
    """The network of the untrained model folder, its saved weights loaded where they fit, with a fresh
    classifier for our classes. Weights of another architecture are refused."""
    state = strip_parallel_prefixes(load_weights(spec))
    state = {k: v for k, v in state.items() if not k.startswith("out_linear_model.")}
    saved_classes = spec.num_classes or _saved_head_size(state, spec) or 1000
    network = build_network(spec.architecture, num_classes=saved_classes, flag=spec.flag)
    model = DesignerNet(network)
    head_name, _ = classifier_of(network)
    head_prefix = f"model.{head_name}."
    loaded, missing = load_matching(model, state)
    body_missing = [k for k in missing if not k.startswith(head_prefix)]
    # Tensors the network has no place for mean a deeper or wider relative (resnet34 weights in a resnet18):
    # its first blocks would fit by name and shape, and the rest would be dropped without a word.
    own_keys = set(model.state_dict())
    unexpected = sorted(set(state) - own_keys)
    if body_missing or unexpected:
        expected = len(own_keys)
        problem = (
            f"{len(body_missing)} of {expected} tensors missing or of another shape, e.g. {body_missing[0]}"
            if body_missing
            else f"{len(unexpected)} tensors that a {spec.architecture} does not have, e.g. {unexpected[0]}"
        )
        raise InvalidModelDirectoryError(
            f'ModelDirectory "{spec.root}" is invalid: its weights do not fit a {spec.architecture} ({problem}).',
            "The weights file must come from the same architecture as model_spec.yaml names; re-create the "
            "untrained model with the DenseNet or ResNet module.",
            subject="Untrained model",
        )
    reinitialised = saved_classes != num_classes
    if reinitialised:
        replace_classifier(network, num_classes)
        loaded = [k for k in loaded if not k.startswith(head_prefix)]
    info = {"tensors_loaded": len(loaded), "head_reinitialised": reinitialised}
    return model, info


def _saved_head_size(state: dict, spec: ModelSpec) -> int | None:
    for key in ("model.fc.weight", "model.classifier.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return None


def describe_device(
    device: torch.device, precision: Precision, channels_last: bool, world: int, batch_size: int
) -> str:
    """One line that says where and how the run computes, so that a log shows at once whether the GPU is used."""
    if device.type == "cuda":
        parts = [f"{device} ({torch.cuda.get_device_name(device)})"]
        parts.append(f"{str(precision.dtype).removeprefix('torch.')} autocast" if precision.enabled else "float32")
        if channels_last:
            parts.append("channels_last")
    else:
        parts = [f"CPU ({torch.get_num_threads()} threads)", "float32"]
    if world > 1:
        parts.append(f"{world} processes x batch {batch_size} = global batch {world * batch_size}")
    return ", ".join(parts)


def pick_device(context: DistributedContext) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return torch.device("cpu")


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum; no weight decay on biases and BatchNorm, which it only hurts."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM, nesterov=True)


def run(settings: Settings) -> dict:
    started = time.perf_counter()
    context = init_distributed()
    output = settings.trained_model
    inputs = {
        "untrained_model": settings.untrained_model,
        "training_dataset": settings.training_dataset,
        "validation_dataset": settings.validation_dataset,
    }
    if context.is_main:  # the only process that writes the output; the others never touch it
        check_output_folder(output, inputs, subject="Output trained_model", kind="ModelDirectory")
        if invalidate_earlier_output(output):
            log.info("The output folder holds an earlier model; it is replaced when this run finishes.")
        output.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = output / CHECKPOINT_DIR
    seed_everything(settings.random_seed)

    spec = read_model_directory(settings.untrained_model)
    scratch = Path(tempfile.mkdtemp(prefix="train-pytorch-model-"))
    try:
        return _train(settings, spec, scratch, checkpoint_dir, started, context)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        context.shutdown()


def _train(settings, spec, scratch, checkpoint_dir, started, context: DistributedContext) -> dict:
    train_set = load_labeled_images(settings.training_dataset, "Training dataset", scratch)
    valid_set = load_labeled_images(settings.validation_dataset, "Validation dataset", scratch)
    classes = check_classes(train_set, valid_set)
    class_to_idx = {name: index for index, name in enumerate(classes)}
    if settings.batch_size > len(train_set.records):
        raise InvalidParameterError(
            f"{settings.batch_size} is larger than the {len(train_set.records)} labelled training images.",
            f"Set batch_size to at most {len(train_set.records)}.",
            subject="Parameter batch_size",
        )

    model, load_info = build_model(spec, len(classes))
    train_survey = survey_images(train_set.records, settings.random_seed)
    valid_survey = survey_images(valid_set.records, settings.random_seed)
    min_size = spec.family.min_size
    if settings.image_size is not None:
        size = (max(settings.image_size, min_size),) * 2
    else:
        size = choose_image_size(
            train_set.records, min_size, settings.max_image_size, settings.random_seed, survey=train_survey
        )
    # ImageNet weights need ImageNet statistics; otherwise the folder's own (a trained output records the
    # statistics it was trained with, so training it further keeps them).
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if spec.pretrained else (spec.mean, spec.std)
    workers = settings.num_workers or default_workers()
    log.info(
        "Training %s on %d images of %d classes at %dx%d; validating on %d images.",
        spec.architecture,
        len(train_set.records),
        len(classes),
        size[1],
        size[0],
        len(valid_set.records),
    )

    train_data = decode_dataset(
        train_set.records,
        class_to_idx,
        size,
        "Training dataset",
        workers=workers,
        scratch=scratch,
        root=train_set.root,
    )
    valid_data = decode_dataset(
        valid_set.records,
        class_to_idx,
        size,
        "Validation dataset",
        workers=workers,
        scratch=scratch,
        root=valid_set.root,
    )
    share = math.ceil(len(train_data) / context.world_size)  # what each process trains on per epoch
    if settings.batch_size > share:
        where = "" if context.world_size == 1 else f" ({context.world_size} processes share them: {share} each)"
        raise InvalidParameterError(
            f"{settings.batch_size} is larger than the {len(train_data)} readable training images{where}.",
            f"Set batch_size to at most {share}.",
            subject="Parameter batch_size",
        )

    device = pick_device(context)
    channels_last = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = model  # the plain module: what is checkpointed and saved
    if context.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    precision = Precision(device)
    normalize = Normalizer(mean, std, device, channels_last)
    world = context.world_size
    log.info("Device: %s.", describe_device(device, precision, channels_last, world, settings.batch_size))
    learning_rate = settings.learning_rate * world  # see distributed.py for the rule
    optimizer = make_optimizer(model, learning_rate)
    sampler = DistributedSampler(
        range(len(train_data)),
        num_replicas=world,
        rank=context.rank,
        shuffle=True,
        seed=settings.random_seed % 2**63,
    )
    # A trailing batch of one is skipped (BatchNorm cannot train on it), unless every batch is of one.
    single = settings.batch_size > 1
    steps_per_epoch = sum(1 for _ in batches_of(list(sampler), settings.batch_size, single))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * steps_per_epoch)
    stopper = EarlyStopping(settings.patience)

    run_settings = {
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "random_seed": settings.random_seed,
        "patience": settings.patience,
        "image_size": list(size),
        "world_size": world,
        "architecture": spec.architecture,
        "pretrained": spec.pretrained,
        "untrained_weights_sha256": file_digest(spec.weights_file),
        "classes": classes,
        # Sizes as well as names: a dataset replaced under the same file names must not resume an old run.
        "train": [(str(r.path.relative_to(train_set.root)), r.label, _size(r.path)) for r in train_set.records],
        "valid": [(str(r.path.relative_to(valid_set.root)), r.label, _size(r.path)) for r in valid_set.records],
    }
    digest = fingerprint(run_settings)
    history: list[dict] = []
    best_state: dict | None = None
    start_epoch = 1
    resumed_from = 0
    mlflow_run_id = None
    saved = load_checkpoint(checkpoint_dir)
    if saved is not None and saved.get("fingerprint") == digest:
        network.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        stopper.load_state_dict(saved["early_stopping"])
        restore_rng_state(saved["rng"])
        history = saved["history"]
        best_state = saved["best_state"]
        start_epoch = saved["epoch"] + 1
        resumed_from = saved["epoch"]
        mlflow_run_id = saved.get("mlflow_run_id")
        if stopper.should_stop:  # killed after the early stop, before the output was written
            start_epoch = settings.epochs + 1
        log.info("Resuming from the checkpoint of epoch %d.", saved["epoch"])
    elif saved is not None:
        log.warning("Ignoring the checkpoint in %s: it belongs to other data or parameters.", checkpoint_dir)

    dataset_summary = _dataset_summary(
        (train_set, train_data, train_survey), (valid_set, valid_data, valid_survey), classes
    )
    if context.is_main:
        print(format_dataset_summary(dataset_summary), flush=True)
    tracker = Tracker(enabled=context.is_main)
    tracker.start(run_name="train_pytorch_model", resume_run_id=mlflow_run_id)
    status = "FAILED"
    try:
        if resumed_from:
            tracker.log_missing_epochs(history)
        if not resumed_from or tracker.run_id != mlflow_run_id:  # a fresh run, or a resume into a new run
            tracker.log_params(
                {
                    "epochs": settings.epochs,
                    "batch_size": settings.batch_size,
                    "learning_rate": settings.learning_rate,
                    "random_seed": settings.random_seed,
                    "patience": settings.patience,
                    "architecture": spec.architecture,
                    "pretrained": spec.pretrained,
                    "image_height": size[0],
                    "image_width": size[1],
                    "num_classes": len(classes),
                    "train_images": len(train_data),
                    "valid_images": len(valid_data),
                    "optimizer": f"SGD(momentum={MOMENTUM}, nesterov=True, weight_decay={WEIGHT_DECAY})",
                    "lr_schedule": "cosine, per step",
                    "device": str(device),
                    "global_batch_size": settings.batch_size * world,
                    "world_size": world,
                    "effective_learning_rate": learning_rate,
                }
            )
            tracker.log_dict(dataset_summary, "dataset_summary.json")
        first_step_at: list[float] = []
        stop_reason = "completed all epochs"
        for epoch in range(start_epoch, settings.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            sampler.set_epoch(epoch)
            train_batches = (
                (normalize(train_data.images.index_select(0, index)), train_data.labels[index])
                for index in batches_of(list(sampler), settings.batch_size, single)
            )
            # Only the first process shows progress; the others would repeat it.
            progress = (
                EpochProgress(epoch, settings.epochs, steps_per_epoch, settings.batch_size) if context.is_main else None
            )

            def on_step(step, loss_sum, correct, seen, progress=progress):
                if not first_step_at:
                    first_step_at.append(time.perf_counter())
                if progress is not None:
                    progress(step, loss_sum, correct, seen)

            try:
                train_stats = train_one_epoch(
                    model,
                    train_batches,
                    optimizer,
                    scheduler,
                    precision,
                    device,
                    on_step=on_step,
                    reduce=context.all_reduce_sum,
                )
                context.broadcast_buffers(network)
                valid_stats = evaluate(
                    network,
                    _eval_batches(valid_data, settings.batch_size * 2, normalize, context),
                    precision,
                    device,
                    len(classes),
                    reduce=context.all_reduce_sum,
                )
            except ValueError as exc:
                _close(progress)
                if "Expected more than 1 value per channel" not in str(exc):
                    raise
                raise InvalidParameterError(
                    f"{settings.batch_size} is too small for {spec.architecture} at {size[1]}x{size[0]}: its "
                    "BatchNorm layers cannot normalise a single value per channel.",
                    "Set batch_size to 2 or more (or raise image_size).",
                    subject="Parameter batch_size",
                ) from exc
            except torch.OutOfMemoryError as exc:
                _close(progress)
                raise ModuleOutOfMemoryError(
                    f"the {device.type.upper()} ran out of memory at batch size {settings.batch_size} ({exc}).",
                    "Lower batch_size (halve it), or lower image_size, or use a compute with more memory.",
                    subject="Training",
                ) from exc
            _close(progress)
            metrics = {
                "train_loss": train_stats.loss,
                "train_accuracy": train_stats.accuracy,
                "valid_loss": valid_stats.loss,
                "valid_accuracy": valid_stats.accuracy,
                "valid_top5_accuracy": valid_stats.top5_accuracy,
                "learning_rate": lr,
                "train_images_per_second": train_stats.images_per_second,
                "epoch_seconds": train_stats.seconds + valid_stats.seconds,
            }
            history.append({"epoch": epoch, **metrics})
            (log.info if context.is_main else log.debug)(
                "Epoch %d/%d  train_loss %.4f  train_acc %.4f  valid_loss %.4f  valid_acc %.4f  top5 %.4f"
                "  lr %.3g  %.0f img/s",
                epoch,
                settings.epochs,
                train_stats.loss,
                train_stats.accuracy,
                valid_stats.loss,
                valid_stats.accuracy,
                valid_stats.top5_accuracy,
                lr,
                train_stats.images_per_second,
            )
            if not (np.isfinite(train_stats.loss) and np.isfinite(valid_stats.loss)):
                tracker.log_metrics(metrics, step=epoch)
                _diverged(settings, spec, classes, size, mean, std, best_state, stopper, train_set, history, context)
            if stopper.update(epoch, valid_stats.loss):
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}
            # Every rank took the same decision from the same all-reduced loss; only the first one writes.
            _save_checkpoint_on_main(
                context,
                checkpoint_dir,
                {
                    "fingerprint": digest,
                    "epoch": epoch,
                    "model": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "early_stopping": stopper.state_dict(),
                    "rng": rng_state(),
                    "history": history,
                    "best_state": best_state,
                    "mlflow_run_id": tracker.run_id,
                },
            )
            # Logged after the checkpoint: a job killed in between logs this epoch when it resumes.
            tracker.log_metrics(metrics, step=epoch)
            if stopper.should_stop:
                stop_reason = (
                    f"early stop: no lower validation loss for {settings.patience} epochs "
                    f"after epoch {stopper.best_epoch}"
                )
                log.info("Stopping early: %s.", stop_reason)
                break

        assert best_state is not None
        last_epoch = history[-1]["epoch"] if history else 0
        if not context.is_main:
            context.barrier()  # the first rank writes the output; the others wait for it
            status = "FINISHED"
            return {
                "best_epoch": stopper.best_epoch,
                "last_epoch": last_epoch,
                "history": history,
                "rank": context.rank,
            }
        network.load_state_dict(best_state)
        final = evaluate(
            network,
            _eval_batches(valid_data, settings.batch_size * 2, normalize),
            precision,
            device,
            len(classes),
            keep_predictions=True,
        )
        summary = {
            "best_epoch": stopper.best_epoch,
            "last_epoch": last_epoch,
            "stopped_early": last_epoch < settings.epochs,
            "stop_reason": stop_reason,
            "resumed_from_epoch": resumed_from,
            "best_valid_loss": stopper.best_loss,
            "best_valid_accuracy": final.accuracy,
            "best_valid_top5_accuracy": final.top5_accuracy,
            "history": history,
            "seconds": time.perf_counter() - started,
            "seconds_to_first_step": (first_step_at[0] - started) if first_step_at else None,
            "device": str(device),
            "hyperparameters": {
                "epochs": settings.epochs,
                "batch_size": settings.batch_size,
                "global_batch_size": settings.batch_size * world,
                "world_size": world,
                "learning_rate": settings.learning_rate,
                "effective_learning_rate": learning_rate,
                "random_seed": settings.random_seed,
                "patience": settings.patience,
                "momentum": MOMENTUM,
                "nesterov": True,
                "weight_decay": WEIGHT_DECAY,
                "lr_schedule": "cosine",
                "image_size": list(size),
            },
            "model": {"architecture": spec.architecture, "pretrained": spec.pretrained, **load_info},
            "classes": classes,
            "mlflow_run_id": tracker.run_id,
            "mlflow_tracking_uri": tracker.tracking_uri,
            "mlflow_problem": tracker.problem,
            "versions": {
                "train_pytorch_model": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        tracker.log_metrics(
            {
                "best_epoch": stopper.best_epoch,
                "last_epoch": last_epoch,
                "best_valid_loss": stopper.best_loss,
                "best_valid_accuracy": final.accuracy,
            },
            step=0,
        )
        summary["images_per_second"] = _mean([row["train_images_per_second"] for row in history])

        def report(folder: Path) -> None:
            summary["per_class"] = write_report(
                folder, history, stopper.best_epoch, final.targets.numpy(), final.predictions.numpy(), classes
            )
            (folder / "dataset_summary.json").write_text(
                json.dumps(dataset_summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )

        write_output(settings.trained_model, network, spec, classes, size, mean, std, train_set, summary, report)
        # The checkpoint (weights, momentum and best weights: 3x the model) has served its purpose; removed
        # before the upload so that it never ends up among the run's artifacts.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        tracker.log_artifacts(settings.trained_model, "trained_model")
        for name in (*REPORT_FILES, SUMMARY_FILE):
            tracker.log_artifact(settings.trained_model / name)
        status = "FINISHED"
        context.barrier()
        return summary
    except ComponentError as error:
        # The run page in the studio shows the same sentence as the job's error banner (stderr's tail).
        tracker.set_tags({"error": error.name, "mlflow.note.content": f"{error.name}: {error.message}"})
        raise
    finally:
        tracker.end(status)


def _finite(value):
    """NaN and infinities (a diverged epoch's loss) as null: strict JSON readers refuse bare NaN."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _eval_batches(
    data: DecodedImages, batch_size: int, normalize: Normalizer, context: DistributedContext | None = None
):
    """Validation batches; with several processes each takes every world_size-th image (sums are reduced)."""
    shard = torch.arange(len(data))
    if context is not None and context.enabled:
        shard = shard[context.rank :: context.world_size]
    for start in range(0, len(shard), batch_size):
        index = shard[start : start + batch_size]
        yield normalize(data.images.index_select(0, index)), data.labels[index]


def _close(progress: EpochProgress | None) -> None:
    if progress is not None:
        progress.close()


def _save_checkpoint_on_main(context: DistributedContext, folder: Path, state: dict) -> None:
    if context.is_main:
        save_checkpoint(folder, state)


def _diverged(settings, spec, classes, size, mean, std, best_state, stopper, train_set, history, context) -> None:
    """Keep the best model so far, then stop with an error that says what to change."""
    epoch = history[-1]["epoch"]
    kept = ""
    if best_state is not None and context.is_main:
        model = DesignerNet(build_network(spec.architecture, num_classes=len(classes), flag=spec.flag))
        model.load_state_dict(best_state)
        summary = {
            "best_epoch": stopper.best_epoch,
            "stop_reason": f"loss diverged at epoch {epoch}",
            "history": history,
            "classes": classes,
        }
        write_output(settings.trained_model, model, spec, classes, size, mean, std, train_set, summary)
        # Resuming would only diverge again: the run is over, and its output is the kept model alone.
        shutil.rmtree(settings.trained_model / CHECKPOINT_DIR, ignore_errors=True)
        kept = f" The model of epoch {stopper.best_epoch}, the best before that, was saved."
    raise TrainingDivergedError(
        f"the loss became NaN or infinite at epoch {epoch}.{kept}",
        f"Lower the learning rate (now {settings.learning_rate}); check the images for corrupt content.",
        subject="Training",
    )


def write_output(
    destination: Path,
    model: nn.Module,
    spec: ModelSpec,
    classes: list[str],
    size,
    mean,
    std,
    train_set: LabeledImages,
    summary: dict,
    report: Callable[[Path], None] | None = None,
) -> None:
    """Write the ModelDirectory aside, then move it into place with '_meta.yaml' last."""
    staging = destination / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = model.cpu().eval()
    init_params = {
        "model_name": spec.architecture,
        "pretrained": False,
        spec.family.flag: spec.flag,
        "num_classes": len(classes),
    }
    # 'pretrained: false': the weights are in the file, so designer readers must not fetch ImageNet ones.
    write_model_directory(staging, model.state_dict(), spec.family, init_params, classes=classes, mean=mean, std=std)
    if train_set.schema_file is not None:
        shutil.copyfile(train_set.schema_file, staging / "_schema.json")
    if train_set.samples_file is not None:
        shutil.copyfile(train_set.samples_file, staging / "_samples.json")
    preprocessing = Preprocessing(image_size=tuple(size), mean=tuple(mean), std=tuple(std), classes=classes)
    preprocessing.save(staging / PREPROCESSING_FILE)
    if report is not None:
        report(staging)
    text = json.dumps(_finite(summary), indent=2, ensure_ascii=False, allow_nan=False)
    (staging / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
    save_mlflow_model(copy.deepcopy(model), preprocessing, staging)
    publish(staging, destination, keep=(CHECKPOINT_DIR,))


def _dataset_summary(train: tuple, valid: tuple, classes: list[str]) -> dict:
    """Images per class, sizes and modes seen, and every skipped file with its reason."""

    def part(listing: LabeledImages, decoded: DecodedImages, survey) -> dict:
        counts = dict.fromkeys(classes, 0)
        for label in decoded.labels.tolist():
            counts[classes[label]] += 1
        return {
            "root": str(listing.root),
            "layout": listing.layout,
            "images": len(decoded),
            "images_per_class": counts,
            "sizes": {f"{w}x{h}": n for (w, h), n in survey.sizes.most_common(20)},
            "modes": dict(survey.modes.most_common()),
            "headers_sampled": survey.sampled,
            "skipped": [{"file": f, "reason": r} for f, r in listing.skipped + decoded.skipped],
        }

    return {"classes": classes, "training": part(*train), "validation": part(*valid)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
