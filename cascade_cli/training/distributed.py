"""Data-parallel training with torch.distributed, launched by torchrun.

    torchrun --nproc-per-node 4 -m cascade_cli finetune ...                       # one node, 4 GPUs
    torchrun --nnodes 2 --node-rank R --rdzv-endpoint HOST:29500 \\
             --nproc-per-node 8 -m cascade_cli finetune ...                       # two nodes

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything runs in one process. Every
rank sees its share of each global batch, so the global batch (and with it the result) does not
depend on the number of processes; only rank 0 logs, validates and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs), or stay single-process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def sum_across(values: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """Sum a tensor over all ranks (a no-op in one process); used for epoch metrics only."""
    if ctx.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()
