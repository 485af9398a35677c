"""The second phase: the device, precision, data-parallel wrapper, optimizer, schedule and sampler, and the run
record that describes them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from ..data.augment import BatchAugmenter
from ..data.batches import Normalizer, batches_of
from ..formats.preprocessing import Preprocessing
from ..model.families import has_batchnorm
from ..model.networks import DesignerNet
from ..output.run_record import Hyperparameters, RunRecord, file_digest, listing
from ..settings import Settings
from .checkpoint import Stateful
from .device import Compute, pick_compute
from .distributed import DistributedContext
from .freezing import HeadOnly, head_only
from .loss import TrainingLoss, class_weights
from .micro_batches import MicroBatching
from .optimizer import OPTIMIZERS, make_optimizer, make_scheduler, schedule_name, warmup_steps
from .prepare import PreparedData
from .weight_average import WeightAverage

log = logging.getLogger("train_pytorch_model")


@dataclass
class TrainingSetup:
    compute: Compute
    network: DesignerNet  # the plain module: what is checkpointed, evaluated and saved
    model: nn.Module  # what trains: the network, or its DistributedDataParallel wrapper
    normalize: Normalizer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: DistributedSampler  # each process's shard of every epoch, reshuffled per epoch
    steps_per_epoch: int
    drop_partial: bool  # skip a trailing batch of few images (BatchNorm networks; see batches_of)
    record: RunRecord
    loss: TrainingLoss
    augmenter: BatchAugmenter | None  # None: training images as decoded
    micro: MicroBatching  # batches a step, and the pieces an out-of-memory back-off cuts them into
    ema: WeightAverage | None  # the weights' moving average, when the recipe keeps one
    freeze: HeadOnly | None  # the first epochs' classifier-only training, when the recipe asks for it

    def stateful(self, *others: tuple[str, Stateful]) -> dict[str, Stateful]:
        """What a checkpoint saves and a resume restores, by the names the checkpoint file uses."""
        parts = {"model": self.network, "optimizer": self.optimizer, "scheduler": self.scheduler, **dict(others)}
        return {**parts, "ema": self.ema} if self.ema is not None else parts


def set_up(settings: Settings, prepared: PreparedData, context: DistributedContext) -> TrainingSetup:
    compute = pick_compute(context)
    network = prepared.network.model.to(compute.device)
    if compute.channels_last:
        network = network.to(memory_format=torch.channels_last)
    model: nn.Module = network
    if context.enabled:
        device_ids = [compute.device.index] if compute.device.type == "cuda" else None
        model = DistributedDataParallel(network, device_ids=device_ids)
    preprocessing = prepared.preprocessing
    normalize = Normalizer(preprocessing.mean, preprocessing.std, compute.device, compute.channels_last)
    world = context.world_size
    log.info("Device: %s.", compute.describe(world, settings.batch_size))
    sampler = DistributedSampler(
        range(len(prepared.train_data)),
        num_replicas=world,
        rank=context.rank,
        shuffle=True,
        seed=settings.random_seed % 2**63,
    )
    # A few images cannot train BatchNorm (see batches_of); networks without it train on them like on any other.
    drop_partial = settings.batch_size > 1 and has_batchnorm(prepared.spec.architecture)
    batches = sum(1 for _ in batches_of(list(sampler), settings.batch_size, drop_partial))
    micro = MicroBatching(settings.recipe.gradient_accumulation)
    steps_per_epoch = -(-batches // micro.accumulation)
    total_steps = settings.epochs * steps_per_epoch
    warmup = warmup_steps(settings.recipe, steps_per_epoch, total_steps)
    hyperparameters = _hyperparameters(settings, preprocessing, world, warmup)
    optimizer = make_optimizer(model, hyperparameters.effective_learning_rate, settings.recipe)
    labels = prepared.train_data.labels
    weights = class_weights(labels, len(prepared.classes), settings.recipe.class_weighting)
    return TrainingSetup(
        compute=compute,
        network=network,
        model=model,
        normalize=normalize,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, total_steps, warmup),
        sampler=sampler,
        steps_per_epoch=steps_per_epoch,
        drop_partial=drop_partial,
        record=_record(hyperparameters, prepared, compute),
        micro=micro,
        freeze=head_only(network, prepared.spec.architecture, settings.recipe.freeze_epochs),
        ema=WeightAverage(network, settings.recipe.ema_decay) if settings.recipe.ema_decay > 0 else None,
        augmenter=BatchAugmenter(settings.recipe.augmentation) if settings.recipe.augmentation != "none" else None,
        loss=TrainingLoss(
            prepared.spec.family.aux_weight,
            settings.recipe.label_smoothing,
            weights.to(compute.device) if weights is not None else None,
        ),
    )


def _hyperparameters(settings: Settings, preprocessing: Preprocessing, world: int, warmup: int) -> Hyperparameters:
    recipe = settings.recipe
    optimizer = OPTIMIZERS[recipe.optimizer]
    return Hyperparameters(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        world_size=world,
        learning_rate=settings.learning_rate,
        random_seed=settings.random_seed,
        patience=settings.patience,
        image_size=tuple(preprocessing.image_size),
        image_fit=preprocessing.fit,
        crop_ratio=preprocessing.crop_ratio,
        optimizer=optimizer.name,
        momentum=optimizer.momentum,
        nesterov=optimizer.nesterov,
        weight_decay=optimizer.weight_decay,
        lr_schedule=schedule_name(warmup),
        recipe=recipe,
        validation_fraction=None if settings.validation_dataset is not None else settings.validation_fraction,
    )


def _record(hyperparameters: Hyperparameters, prepared: PreparedData, compute: Compute) -> RunRecord:
    spec = prepared.spec
    return RunRecord(
        hyperparameters=hyperparameters,
        architecture=spec.architecture,
        pretrained=spec.pretrained,
        untrained_weights_sha256=file_digest(spec.weights_file),
        classes=tuple(prepared.classes),
        train_listing=listing(prepared.train_set),
        valid_listing=listing(prepared.valid_set),
        train_images=len(prepared.train_data),
        valid_images=len(prepared.valid_data),
        device=str(compute.device),
    )
