"""The augmentation registry and the pipeline that runs its entries in the configured order.

An entry is `(AugmentConfig, image_size, num_classes) -> Step`, a step being `(Batch, generator) ->
Batch`; the modules beside this one (`image`, `photometric`, `erase`, `mix`) register theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cifarlab.schema import AugmentConfig
from cifarlab.data.batch import Batch
from cifarlab.registry import Registry

Step = Callable[[Batch, torch.Generator], Batch]


@dataclass(frozen=True)
class Entry:
    build: Callable[[AugmentConfig, int, int], Step]   # (cfg, image size, number of classes)
    doc: str
    mixes: bool = False   # sets soft targets (MixUp, CutMix): switched off in the last `mix_off` epochs
    per_epoch: bool = False  # the step also takes the epoch: `(Batch, generator, epoch) -> Batch`


AUGMENTS: Registry = Registry("augmentation")


def register(name: str, doc: str, mixes: bool = False, per_epoch: bool = False, plugin: bool = False):
    def add(build: Callable[[AugmentConfig, int, int], Step]):   # a plug-in's: registered by its module
        AUGMENTS.register(name, build.__module__ if plugin else None)(Entry(build, doc, mixes, per_epoch))
        return build
    return add


class Pipeline:
    """The configured steps in order; `__call__(batch, gen, epoch, epochs)`."""

    def __init__(self, cfg: AugmentConfig, image_size: int = 32, num_classes: int = 10):
        self.names = tuple(cfg.pipeline)
        self.entries = [AUGMENTS.get(n) for n in self.names]
        self.steps = [e.build(cfg, image_size, num_classes) for e in self.entries]
        self.mix_off = cfg.mix_off

    def __call__(self, batch: Batch, gen: torch.Generator, epoch: int = 0, epochs: float = 1.0) -> Batch:
        mixing = epoch < epochs - self.mix_off
        for entry, step in zip(self.entries, self.steps):
            if mixing or not entry.mixes:
                batch = step(batch, gen, epoch) if entry.per_epoch else step(batch, gen)
        return batch


def build_pipeline(cfg: AugmentConfig, image_size: int = 32, num_classes: int = 10) -> Pipeline | None:
    """The pipeline of `cfg`, or None when it lists nothing."""
    return Pipeline(cfg, image_size, num_classes) if cfg.pipeline else None


def uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """n draws from U[lo, hi) on the generator's device."""
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=gen.device)
