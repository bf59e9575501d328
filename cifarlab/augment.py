"""Batched data augmentation on the training device, per-image random parameters.

Each augmentation is a callable `(images uint8 NCHW, generator) -> images` built
from the config by a registry entry; a new augmentation is a new entry plus its
config key. Working on uint8 keeps memory traffic at a quarter of float32.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from cifarlab.config import AugmentConfig
from cifarlab.registry import Registry

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTS: Registry = Registry("augmentation")


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(images), generator=gen, device=gen.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_translate(images: torch.Tensor, gen: torch.Generator, max_shift: int, fill: str) -> torch.Tensor:
    """Shift each image by integer dx, dy drawn uniformly from [-max_shift, max_shift].

    Implemented as pad-then-crop with per-image offsets gathered in one indexing op.
    `fill` decides what enters at the border: edge (replicate the border pixel, Keras'
    "nearest", the tutorial's default), zero (black) or reflect.
    """
    n, _, h, w = images.shape
    p = max_shift
    mode = {"edge": "replicate", "zero": "constant", "reflect": "reflect"}[fill]
    # F.pad's replicate/reflect modes need a float tensor; uint8 round-trips exactly.
    padded = F.pad(images.float(), (p, p, p, p), mode=mode).to(torch.uint8) if mode != "constant" \
        else F.pad(images, (p, p, p, p))
    dy, dx = torch.randint(0, 2 * p + 1, (2, n), generator=gen, device=gen.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, chans, rows, cols].contiguous(memory_format=torch.channels_last)


@AUGMENTS.register("flip")
def build_flip(cfg: AugmentConfig) -> Augment | None:
    return random_flip if cfg.flip else None


@AUGMENTS.register("translate")
def build_translate(cfg: AugmentConfig, image_size: int = 32) -> Augment | None:
    shift = round(cfg.translate * image_size)
    if shift == 0:
        return None
    return lambda images, gen: random_translate(images, gen, shift, cfg.fill)


def build_pipeline(cfg: AugmentConfig) -> Augment | None:
    """All enabled augmentations, applied in registry order; None when none is on."""
    steps = [s for s in (AUGMENTS.get(name)(cfg) for name in AUGMENTS.names()) if s is not None]
    if not steps:
        return None

    def pipeline(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for step in steps:
            images = step(images, gen)
        return images
    return pipeline
