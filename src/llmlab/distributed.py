"""Data-parallel training with `torchrun` (sprint 09).

`torchrun --nproc_per_node=N` starts N copies of a script and sets `RANK`, `LOCAL_RANK` and
`WORLD_SIZE`. Each copy (a rank) holds the whole model, trains on its own slice of every
global batch, and `DistributedDataParallel` averages the gradients across ranks during
`backward()`, so every rank takes the same optimiser step. Only rank 0 writes logs and
checkpoints.

- `init_distributed(device)`: join the process group (gloo on CPU, nccl on GPU) when launched
  by torchrun; a plain single-process run gets rank 0 of 1.
- `all_reduce_mean(x)`: the mean of a number over ranks (for logging the global loss).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the process group if launched by torchrun; otherwise a single process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def all_reduce_mean(value: torch.Tensor | float, info: DistInfo) -> float:
    """Mean of `value` over all ranks (the value itself when not distributed)."""
    if not info.enabled:
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64, device=info.device).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / info.world_size


def cleanup(info: DistInfo) -> None:
    """Leave the process group (call once at the end of a distributed run)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
