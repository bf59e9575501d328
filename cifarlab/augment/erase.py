"""Masking augmentations: cutout (DeVries & Taylor 2017) and random erasing (Zhong et al. 2017)."""

from __future__ import annotations

import math

import torch

from cifarlab.augment.pipeline import register, uniform
from cifarlab.augment.image import pixel_step
from cifarlab.schema import AugmentConfig

GREY = 128  # cutout's fill: close to CIFAR's mean, as the zeros of DeVries & Taylor on normalised images


def box_mask(h: int, w: int, y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) bool: True inside each image's box [y0, y1) x [x0, x1)."""
    rows = torch.arange(h, device=y0.device)
    cols = torch.arange(w, device=x0.device)
    inside_r = (rows >= y0[:, None]) & (rows < y1[:, None])
    inside_c = (cols >= x0[:, None]) & (cols < x1[:, None])
    return (inside_r[:, :, None] & inside_c[:, None, :])[:, None]


def cutout(images: torch.Tensor, gen: torch.Generator, size: int) -> torch.Tensor:
    """A size x size square, centred anywhere in the image (so it may be cut by the border, as in
    the paper), set to grey in every image; size 0 changes nothing."""
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n,), generator=gen, device=gen.device).to(images.device)
    cx = torch.randint(0, w, (n,), generator=gen, device=gen.device).to(images.device)
    half = size // 2
    mask = box_mask(h, w, cy - half, cy - half + size, cx - half, cx - half + size)
    return images.masked_fill(mask, GREY).contiguous(memory_format=torch.channels_last)


def random_erasing(images: torch.Tensor, gen: torch.Generator, p: float, max_area: float) -> torch.Tensor:
    """With probability p per image, a rectangle of area in [0.02, max_area] of the image and aspect
    ratio in [0.3, 1/0.3] (log-uniform), placed wholly inside the image, filled with uniform random
    pixel values (the paper's defaults: p 0.5, area up to 0.4)."""
    n, c, h, w = images.shape
    on = torch.rand(n, generator=gen, device=gen.device) < p
    area = uniform(n, 0.02, max_area, gen) * h * w
    ratio = torch.exp(uniform(n, math.log(0.3), math.log(1 / 0.3), gen))
    bh = torch.sqrt(area * ratio).round().clamp(1, h).long()
    bw = torch.sqrt(area / ratio).round().clamp(1, w).long()
    y0 = (uniform(n, 0, 1, gen) * (h - bh + 1)).long().clamp(max=h - 1)
    x0 = (uniform(n, 0, 1, gen) * (w - bw + 1)).long().clamp(max=w - 1)
    noise = torch.randint(0, 256, images.shape, generator=gen, device=gen.device, dtype=torch.uint8)
    mask = box_mask(h, w, y0, y0 + bh, x0, x0 + bw).to(images.device) & on.to(images.device)[:, None, None, None]
    return torch.where(mask, noise.to(images.device), images).contiguous(memory_format=torch.channels_last)


@register("cutout", "a grey square of side augment.cutout pixels, centred anywhere (DeVries & Taylor 2017)")
def _cutout(cfg: AugmentConfig, image_size: int, num_classes: int):
    return pixel_step(lambda images, gen: cutout(images, gen, cfg.cutout))


@register("erasing", "random erasing: p augment.erase_p, area 0.02 to erase_area, random values (Zhong et al. 2017)")
def _erasing(cfg: AugmentConfig, image_size: int, num_classes: int):
    return pixel_step(lambda images, gen: random_erasing(images, gen, cfg.erase_p, cfg.erase_area))
