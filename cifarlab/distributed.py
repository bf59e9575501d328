"""One run on several processes (`torchrun --nproc-per-node N -m cifarlab run EXPERIMENT`).

Data-parallel training without a wrapper around the model, so checkpoints, `features` and `head`
stay those of a one-process run:

- Every process builds the same network from the same seed and draws the same epoch order.
- Each global batch of `train.batch_size` images is split into N contiguous chunks; process r
  trains on chunk r (its own augmentation draws and dropout masks, seeded by rank).
- After backward, the gradients are summed over the processes, each weighted by its chunk's share
  of the batch: the gradient of the global batch's mean loss, as one process would compute it.
  So without BatchNorm, dropout or augmentation, N processes follow one process's trajectory up
  to floating-point summation order (tests/test_distributed.py).
- BatchNorm normalises each chunk with its own statistics and keeps its own running averages
  (rank 0's are checkpointed and used for evaluation); `train.sync_bn = true` synchronises the
  batch statistics over the processes on CUDA (nn.SyncBatchNorm).
- The epoch's training loss and accuracy are summed over the processes; every process evaluates
  the full validation and test splits (identical weights), and only rank 0 writes files.

The backend is NCCL on CUDA (each process on GPU LOCAL_RANK) and gloo on CPUs. Methods that
couple the samples of a batch or keep per-sample state (supcon, co-teaching, ELR) are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from cifarlab.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def writes(self) -> bool:
        """Only rank 0 writes the run directory."""
        return self.rank == 0


def from_env() -> World:
    """The world torchrun describes (RANK, WORLD_SIZE), else one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size) if size > 1 else World()


def init(world: World, device: torch.device) -> None:
    import torch.distributed as dist
    if world.size > 1 and not dist.is_initialized():
        if device.type == "cuda":  # one GPU per process, as torchrun numbers them on each node
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown(world: World) -> None:
    import torch.distributed as dist
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def check_supported(cfg, world: World, splitting: list[str], per_sample: bool) -> None:
    """Refuse what `world`'s processes cannot train: a method not in `splitting` (the methods whose
    step splits a batch), a loss with per-sample state, a batch smaller than the world."""
    if world.size == 1:
        return
    if cfg.train.method not in splitting or per_sample:
        raise ConfigError(f"training on {world.size} processes supports train.method = "
                          f"{' or '.join(map(repr, splitting))} with a loss "
                          f"without per-sample state; got method {cfg.train.method!r}, loss {cfg.loss.name!r}: "
                          "run it as one process")
    if cfg.train.batch_size < world.size:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} cannot be split over {world.size} processes; "
                          f"use at least {world.size}")


def chunk(n: int, world: World) -> tuple[int, int]:
    """[start, stop) of this rank's share of a batch of n images (contiguous, sizes differ by <= 1)."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (1 if world.rank < extra else 0)


def average_gradients(modules: Iterable[nn.Module], share: float, world: World) -> None:
    """Sum over the processes of each gradient times this process's share of the batch."""
    if world.size == 1:
        return
    import torch.distributed as dist
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.mul_(share)
            dist.all_reduce(p.grad)


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    if world.size == 1:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
