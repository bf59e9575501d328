"""Augmentations that mix two images and their labels: MixUp (Zhang et al. 2018) and CutMix
(Yun et al. 2019). One mixing weight per batch, drawn from Beta(alpha, alpha); each image is
mixed with the image at a random permutation of the batch. The batch's soft targets become
lam * (its targets) + (1 - lam) * (its partner's targets), so the rows still sum to 1 and a later
mixing step mixes mixed targets. Training accuracy is counted against the dominant label."""

from __future__ import annotations

import numpy as np
import torch

from cifarlab.augment.pipeline import register
from cifarlab.augment.erase import box_mask
from cifarlab.schema import AugmentConfig
from cifarlab.data.batch import Batch


def beta(gen: torch.Generator, alpha: float) -> float:
    """A Beta(alpha, alpha) draw, seeded from the torch generator (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def partner(batch: Batch, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(len(batch), generator=gen, device=gen.device).to(batch.images.device)


def mixed_targets(batch: Batch, perm: torch.Tensor, lam: float, num_classes: int) -> torch.Tensor:
    t = batch.soft_targets(num_classes)
    return lam * t + (1 - lam) * t[perm]


def mixup(batch: Batch, gen: torch.Generator, alpha: float, p: float, num_classes: int) -> Batch:
    """x = lam x + (1 - lam) x[perm] (rounded to uint8), targets likewise, with probability p per batch."""
    if torch.rand((), generator=gen, device=gen.device).item() >= p:
        return batch
    lam, perm = beta(gen, alpha), partner(batch, gen)
    x = batch.images.float()
    images = (lam * x + (1 - lam) * x[perm]).round_().to(torch.uint8).contiguous(memory_format=torch.channels_last)
    return Batch(images, batch.labels, batch.index, mixed_targets(batch, perm, lam, num_classes))


def cutmix(batch: Batch, gen: torch.Generator, alpha: float, p: float, num_classes: int) -> Batch:
    """Paste a box of the partner image into each image (one box for the batch, of area 1 - lam,
    centred anywhere and cut by the border); the targets' weights are the areas actually kept and
    pasted, with probability p per batch."""
    if torch.rand((), generator=gen, device=gen.device).item() >= p:
        return batch
    lam, perm = beta(gen, alpha), partner(batch, gen)
    _, _, h, w = batch.images.shape
    bh, bw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy, cx = (int(v) for v in torch.randint(0, h, (2,), generator=gen, device=gen.device))
    y0, y1 = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, w)
    one = lambda v: torch.tensor([v], device=batch.images.device)  # noqa: E731
    mask = box_mask(h, w, one(y0), one(y1), one(x0), one(x1))
    images = torch.where(mask, batch.images[perm], batch.images).contiguous(memory_format=torch.channels_last)
    kept = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return Batch(images, batch.labels, batch.index, mixed_targets(batch, perm, kept, num_classes))


@register("mixup", "MixUp: blend with a partner image, lam ~ Beta(augment.mix_alpha), p augment.mix_p", mixes=True)
def _mixup(cfg: AugmentConfig, image_size: int, num_classes: int):
    return lambda batch, gen: mixup(batch, gen, cfg.mix_alpha, cfg.mix_p, num_classes)


@register("cutmix", "CutMix: paste a box of a partner image, area ~ Beta(augment.mix_alpha), p augment.mix_p",
          mixes=True)
def _cutmix(cfg: AugmentConfig, image_size: int, num_classes: int):
    return lambda batch, gen: cutmix(batch, gen, cfg.mix_alpha, cfg.mix_p, num_classes)
