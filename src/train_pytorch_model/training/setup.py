"""The second phase: the device, precision, data-parallel wrapper, optimizer, schedule and sampler, and the run
record that describes them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from ..data.batches import Normalizer, batches_of
from ..model.families import has_batchnorm
from ..model.networks import DesignerNet
from ..output.run_record import Hyperparameters, RunRecord, file_digest, listing
from ..settings import Settings
from .checkpoint import Stateful
from .device import Compute, pick_compute
from .distributed import DistributedContext
from .loss import TrainingLoss
from .optimizer import (
    MOMENTUM,
    NESTEROV,
    OPTIMIZER_NAME,
    SCHEDULE_NAME,
    WEIGHT_DECAY,
    make_optimizer,
    make_scheduler,
)
from .prepare import PreparedData

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

    def stateful(self, *others: tuple[str, Stateful]) -> dict[str, Stateful]:
        """What a checkpoint saves and a resume restores, by the names the checkpoint file uses."""
        return {"model": self.network, "optimizer": self.optimizer, "scheduler": self.scheduler, **dict(others)}


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
    hyperparameters = _hyperparameters(settings, preprocessing.image_size, world)
    optimizer = make_optimizer(model, hyperparameters.effective_learning_rate)
    sampler = DistributedSampler(
        range(len(prepared.train_data)),
        num_replicas=world,
        rank=context.rank,
        shuffle=True,
        seed=settings.random_seed % 2**63,
    )
    # A few images cannot train BatchNorm (see batches_of); networks without it train on them like on any other.
    drop_partial = settings.batch_size > 1 and has_batchnorm(prepared.spec.architecture)
    steps_per_epoch = sum(1 for _ in batches_of(list(sampler), settings.batch_size, drop_partial))
    return TrainingSetup(
        compute=compute,
        network=network,
        model=model,
        normalize=normalize,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, settings.epochs * steps_per_epoch),
        sampler=sampler,
        steps_per_epoch=steps_per_epoch,
        drop_partial=drop_partial,
        record=_record(hyperparameters, prepared, compute),
        loss=TrainingLoss(prepared.spec.family.aux_weight),
    )


def _hyperparameters(settings: Settings, image_size: tuple[int, int], world: int) -> Hyperparameters:
    return Hyperparameters(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        world_size=world,
        learning_rate=settings.learning_rate,
        random_seed=settings.random_seed,
        patience=settings.patience,
        image_size=tuple(image_size),
        optimizer=OPTIMIZER_NAME,
        momentum=MOMENTUM,
        nesterov=NESTEROV,
        weight_decay=WEIGHT_DECAY,
        lr_schedule=SCHEDULE_NAME,
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
