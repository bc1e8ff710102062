"""Data parallelism under ``torchrun``: process group set-up, each rank's slice of the global
batch, and the few collectives the trainer needs so that every rank takes the same decisions.

Every rank draws the *global* batch from the same seeded generator and keeps its slice, so the
data (and therefore the result) does not depend on the number of ranks. Without torchrun's
environment everything here degrades to the single-process case.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from cellstate.tasks import Batch


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main rank writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: str) -> World:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA) if launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """End this rank's process with `code` at once, without the interpreter's teardown. Call it
    after `close_world`, once everything is written.

    Why: DDP leaves references to the gloo process group that `destroy_process_group` does not
    drop (torch 2.13), so the group's worker threads outlive it. A worker that lets go of the last
    collective's tensor only after the main thread has begun the interpreter's shutdown needs the
    GIL there, cannot have it and aborts the process (SIGABRT, "terminate called without an active
    exception"; the backtrace runs from ProcessGroupGloo::runLoop to TensorImpl::decref_pyobject):
    a finished run reported as a crash, 3 times in 150 two-rank runs on 2 busy cores.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rank_slice(batch: Batch, world: World) -> tuple[Batch, float]:
    """This rank's contiguous slice of the global batch, and the weight that makes DDP's gradient
    average equal the gradient of the global batch's loss.

    A task's loss is a mean over its sequences (final-step tasks) or over the masked steps
    (per-step tasks). The slice's loss times `size * local_count / global_count`, averaged over
    the ranks by DDP, is then exactly the global mean.
    """
    if not world.distributed:
        return batch, 1.0
    B = batch.inputs.shape[1]
    if B % world.size:
        raise ValueError(f"batch size {B} is not divisible by the {world.size} ranks")
    share = B // world.size
    lo, hi = world.rank * share, (world.rank + 1) * share
    if batch.mask is None:  # targets (B, O)
        local = Batch(batch.inputs[:, lo:hi], batch.targets[lo:hi], batch.lengths[lo:hi])
        weight = share / B
    else:  # per-step targets (T, B, ...), mask (T, B)
        mask = batch.mask[:, lo:hi]
        local = Batch(batch.inputs[:, lo:hi], batch.targets[:, lo:hi], batch.lengths[lo:hi], mask)
        weight = float(mask.sum()) / float(batch.mask.sum())
    return local, world.size * weight


def gather_flags(flags: Tensor, world: World) -> Tensor:
    """(B,) bool of the global batch from each rank's (B / size,) slice, in rank order."""
    if not world.distributed:
        return flags
    local = flags.to(torch.uint8)  # NCCL has no bool
    parts = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts).bool()


def sum_scalar(value: float, world: World, device: torch.device) -> float:
    """The sum of `value` over the ranks (float64, so the global loss is exact enough)."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor)


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any: a signal seen by one rank stops them all at
    the same step, so no rank waits forever in a collective."""
    if not world.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor)
