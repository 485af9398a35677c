"""Where and how a run computes: the device of this process, mixed precision, and the memory layout."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .distributed import DistributedContext


class Precision:
    """Mixed precision on CUDA: bfloat16 where the GPU supports it (no loss scaling needed), float16 with a
    gradient scaler otherwise. A no-op on the CPU, where float32 keeps runs exactly reproducible."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.enabled = enabled and device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)
        self.device_type = device.type

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.enabled else nullcontext()


@dataclass
class Compute:
    """This process's device and what the run does on it."""

    device: torch.device
    precision: Precision
    channels_last: bool  # NHWC on CUDA, where cuDNN's convolutions are faster in it

    def describe(self, world: int, batch_size: int) -> str:
        """One line that says where and how the run computes, so that a log shows at once whether the GPU is
        used."""
        if self.device.type == "cuda":
            parts = [f"{self.device} ({torch.cuda.get_device_name(self.device)})"]
            precision = self.precision
            parts.append(f"{str(precision.dtype).removeprefix('torch.')} autocast" if precision.enabled else "float32")
            if self.channels_last:
                parts.append("channels_last")
        else:
            parts = [f"CPU ({torch.get_num_threads()} threads)", "float32"]
        if world > 1:
            parts.append(f"{world} processes x batch {batch_size} = global batch {world * batch_size}")
        return ", ".join(parts)


def pick_compute(context: DistributedContext) -> Compute:
    """The process's own GPU when there is one (its local rank's), the CPU otherwise."""
    if torch.cuda.is_available():
        torch.cuda.set_device(context.local_rank)
        device = torch.device("cuda", context.local_rank)
        torch.backends.cudnn.benchmark = True  # one input size for the whole run: autotuning pays off
    else:
        device = torch.device("cpu")
    return Compute(device, Precision(device), channels_last=device.type == "cuda")
