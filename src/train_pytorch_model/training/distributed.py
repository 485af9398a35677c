"""Multi-process training with torch.distributed, as launched by torchrun or by Azure ML's PyTorch
distribution (both set WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT).

The rule for batch size and learning rate: `batch_size` is per process, so the global batch is
batch_size x world size, and the learning rate is scaled linearly with the world size (Goyal et al.), which
is what the designer's module did too. A 2-process run with batch 8 and rate 0.01 therefore takes the same
steps as a 1-process run with batch 16 and rate 0.02.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..data.cache import process_cores
from ..errors import DistributedSetupError, first_line

# A rank that dies leaves the others waiting in a collective; this bounds the wait (seconds).
TIMEOUT_VARIABLE = "TRAIN_PYTORCH_MODEL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class DistributedContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all ranks (in place for the caller's copy); identity when not distributed."""
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather_on_node(self, value: Any) -> list[Any]:
        """Every value of this node's processes, by local rank (a collective: all ranks of all nodes call
        it). torchrun numbers a node's ranks consecutively from rank - local_rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        first = self.rank - self.local_rank
        return values[first : first + self.local_world_size]

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank the first rank's BatchNorm statistics, so that all of them validate (and the first
        one saves) the very same model."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed() -> DistributedContext:
    """Join the process group when launched with several processes; a plain context otherwise."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return DistributedContext()
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise DistributedSetupError(
                f"WORLD_SIZE is {world_size} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set.",
                "Launch the processes with torchrun (or Azure ML's pytorch distribution), which sets them all.",
                subject="Distributed setup",
            )
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_SECONDS)))
    except ValueError as exc:
        raise DistributedSetupError(
            f"a distributed variable is not a number ({exc}).",
            "Launch the processes with torchrun (or Azure ML's pytorch distribution).",
            subject="Distributed setup",
        ) from exc
    # The node's processes would fight over its cores: each gets its share (torchrun's own default is one
    # thread a process, too few for the work on the host between GPU steps and for training on a CPU).
    torch.set_num_threads(process_cores(local_world_size))
    try:
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo", timeout=timeout)
    except (RuntimeError, ValueError) as exc:  # DistStoreError (a timeout) is a RuntimeError
        raise DistributedSetupError(
            f"process {rank} of {world_size} could not join the others ({first_line(exc)}).",
            f"Check that all {world_size} processes start and can reach {os.environ.get('MASTER_ADDR')}:"
            f"{os.environ.get('MASTER_PORT')}; {TIMEOUT_VARIABLE} sets how long they wait for each other.",
            subject="Distributed setup",
        ) from exc
    return DistributedContext(world_size, rank, local_rank, local_world_size)
