"""Loss registry: `loss.name` -> a builder `(LossConfig, num_classes) -> loss(logits, batch)`, built
once per run. The loss reads the batch's soft targets when a mixing augmentation set them, else its
labels; a new loss (GCE, SCE, SupCon, ...) is a new entry."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from cifarlab.config import LossConfig
from cifarlab.data.batch import Batch
from cifarlab.registry import Registry

Loss = Callable[[torch.Tensor, Batch], torch.Tensor]
LOSSES: Registry = Registry("loss")


@LOSSES.register("ce")
def cross_entropy(cfg: LossConfig, num_classes: int) -> Loss:
    """Cross-entropy, mean over the batch, with label smoothing (Szegedy et al. 2016: the target
    puts 1 - e + e / K on the label and e / K on every class). With MixUp or CutMix targets it is
    the soft-target cross-entropy -sum_k t_k log p_k (smoothing applied to the mixed targets)."""
    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch.labels if batch.targets is None else batch.targets
        return F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
    return loss


def build_loss(cfg: LossConfig, num_classes: int) -> Loss:
    return LOSSES.get(cfg.name)(cfg, num_classes)
