"""Batched data augmentation on the training device, per-image random parameters.

Each augmentation is a callable `(images uint8 NCHW, generator) -> images` built
from the config by a registry entry; a new augmentation is a new entry plus its
config key. Working on uint8 keeps memory traffic at a quarter of float32.
"""

from __future__ import annotations

from typing import Callable

import torch

from cifarlab.config import AugmentConfig
from cifarlab.registry import Registry

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTS: Registry = Registry("augmentation")


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(images), generator=gen, device=gen.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def source_index(shift: torch.Tensor, size: int, fill: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image and output position, the input position it reads, and whether it lies inside.

    edge clamps to the border pixel (Keras' "nearest", the tutorial's default), reflect
    mirrors at the border, zero marks outside positions for masking.
    """
    pos = torch.arange(size, device=shift.device) - shift[:, None]
    if fill == "reflect":
        pos = pos.abs()
        pos = torch.where(pos > size - 1, 2 * (size - 1) - pos, pos)
    inside = (pos >= 0) & (pos < size)
    return pos.clamp(0, size - 1), inside


def random_translate(images: torch.Tensor, gen: torch.Generator, max_shift: int, fill: str) -> torch.Tensor:
    """Shift each image by integer dx, dy drawn uniformly from [-max_shift, max_shift].

    Two gathers (rows, then columns) on the NHWC view: cheaper than pad-and-crop with
    advanced indexing (`cifarlab bench augment` times it), and the batch stays channels-last.
    """
    n, c, h, w = images.shape
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2, n), generator=gen, device=gen.device)
    rows, rows_in = source_index(dy.to(images.device), h, fill)
    cols, cols_in = source_index(dx.to(images.device), w, fill)
    nhwc = images.permute(0, 2, 3, 1)
    out = nhwc.gather(1, rows[:, :, None, None].expand(n, h, w, c))
    out = out.gather(2, cols[:, None, :, None].expand(n, h, w, c))
    if fill == "zero":
        out = out * (rows_in[:, :, None, None] & cols_in[:, None, :, None])
    return out.permute(0, 3, 1, 2)


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
