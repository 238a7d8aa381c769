"""PyTorch's own distributed engine, as the training loop needs it: torchrun's environment, DDP.

Launched by ``torchrun --nproc_per_node=N -m ckd_lib.train --config run.yaml``, every process
reads RANK, WORLD_SIZE and LOCAL_RANK from the environment, joins the process group (NCCL on
CUDA, gloo on the CPU), trains the student wrapped in DistributedDataParallel on its shard of each
global batch, and reduces its metrics over the ranks; only rank 0 writes records and checkpoints.
Without torchrun everything here degrades to a single process with no communication at all.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks in place (a no-op in a single process)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank (used for decisions only rank 0 may take)."""
        if not self.enabled:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun describes; a single-process context otherwise.

    Idempotent: a second call in the same process returns the context of the first.
    """
    if not launched_by_torchrun():
        return DistContext()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if world_size > 1 and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        atexit.register(_leave_process_group)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank,
                       backend=backend if world_size > 1 else None)


def _leave_process_group() -> None:
    """Destroy the process group while the interpreter is still whole. Left to interpreter
    finalisation, gloo's worker threads can abort the process (SIGABRT, "terminate called
    without an active exception"; pytorch/pytorch#190489). One such abort of a resumed CPU rank
    was seen once in this project's DDP test and not reproduced since."""
    if dist.is_initialized():
        dist.destroy_process_group()
