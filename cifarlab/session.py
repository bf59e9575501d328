"""What one training run holds while it runs: its config, networks, optimizers, schedule, augmentation,
loss and runtime. `train.build_session` makes one; the methods (`cifarlab.methods`) and the training
loop (`cifarlab.train`) read and step it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cifarlab import distributed, runtime
from cifarlab.augment import Pipeline
from cifarlab.evaluate import Preprocess
from cifarlab.losses import Loss
from cifarlab.optim import Lookahead, Schedule, WeightAverage
from cifarlab.schema import ExperimentConfig


@dataclass
class Session:
    """Everything one training run holds while it runs."""
    cfg: ExperimentConfig
    rt: runtime.Runtime
    model: nn.Module
    opt: torch.optim.Optimizer
    schedule: Schedule
    augment: Pipeline | None
    loss: Loss
    prep: Preprocess
    steps_per_epoch: int
    total_steps: int
    provenance: dict  # taken when the run starts: the code that runs is the code recorded
    peer: nn.Module | None = None                   # the second network of a two-network method
    peer_opt: torch.optim.Optimizer | None = None
    probe_opt: torch.optim.Optimizer | None = None  # a two-phase method's second optimizer (SupCon's probe)
    world: distributed.World = distributed.World()  # the processes training this run (torchrun), else one
    share: float = 1.0                              # this process's share of the current batch
    ema: WeightAverage | None = None                # train.ema: the averaged weights, which evaluation uses
    lookahead: Lookahead | None = None              # train.lookahead: the slow weights

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt] + ([self.peer_opt] if self.peer_opt is not None else [])

    def stateful(self) -> dict:
        """Every part a checkpoint holds to resume exactly, by its key in the checkpoint: the
        network(s), their optimizers, and a loss with per-sample state (ELR)."""
        parts = {"model": self.model, "optimizer": self.opt}
        if hasattr(self.loss, "state_dict"):
            parts["loss"] = self.loss
        if self.peer is not None:
            parts |= {"peer": self.peer, "peer_optimizer": self.peer_opt}
        if self.probe_opt is not None:
            parts["probe_optimizer"] = self.probe_opt
        if self.ema is not None:
            parts["ema"] = self.ema
        return parts

    @property
    def evaluated(self) -> nn.Module:
        """The network that validation, the test and `select = best_val` use: the averaged weights
        under train.ema, else the trained network."""
        return self.model if self.ema is None else self.ema.module

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)
