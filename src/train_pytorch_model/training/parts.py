"""The parts of a training run that the fit and finish phases share, gathered once."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from ..tracking import Tracker
from .checkpoint import Checkpoint, FitState
from .distributed import DistributedContext
from .early_stopping import EarlyStopping
from .prepare import PreparedData
from .setup import TrainingSetup


@dataclass
class TrainingRun:
    settings: Settings
    prepared: PreparedData  # phase 1: the checked, decoded inputs
    setup: TrainingSetup  # phase 2: device, optimizer, sampler, run record
    state: FitState  # phase 3 (resume) and 4 (fit): what the epochs carry
    stopper: EarlyStopping
    checkpoint: Checkpoint
    tracker: Tracker
    context: DistributedContext
    started: float  # perf_counter() at launch
