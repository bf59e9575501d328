"""Photometric augmentation: brightness, contrast and saturation, a random factor per image each."""

from __future__ import annotations

import torch

from cifarlab.augment.pipeline import register, uniform
from cifarlab.augment.image import pixel_step
from cifarlab.schema import AugmentConfig

# ITU-R BT.601 luma weights: the grey a colour image is blended towards
LUMA = (0.299, 0.587, 0.114)


def grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def random_photometric(images: torch.Tensor, gen: torch.Generator, brightness: float, contrast: float,
                       saturation: float) -> torch.Tensor:
    """In this order, each with a factor f drawn per image: brightness (x * f, f in [1 - b, 1 + b]),
    contrast (blend with the image's mean grey: m + f (x - m)), saturation (blend with each pixel's
    grey); values clipped to [0, 255] and rounded. Hue is left alone: on 32 px objects a hue shift
    changes what a class looks like (a red car stays a car, but a green frog is the cue)."""
    n = len(images)
    x = images.float()
    fb, fc, fs = (uniform(n, 1 - s, 1 + s, gen).to(x.device).view(n, 1, 1, 1)
                  for s in (brightness, contrast, saturation))
    x = x * fb
    mean = grey(x).mean((2, 3), keepdim=True)
    x = mean + fc * (x - mean)
    g = grey(x)
    x = g + fs * (x - g)
    return x.round_().clamp_(0, 255).to(torch.uint8).contiguous(memory_format=torch.channels_last)


@register("photometric", "brightness, contrast, saturation factors in [1 - v, 1 + v] (augment.brightness, ...)")
def _photometric(cfg: AugmentConfig, image_size: int, num_classes: int):
    return pixel_step(lambda images, gen: random_photometric(images, gen, cfg.brightness, cfg.contrast,
                                                              cfg.saturation))


def random_grayscale(images: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """With probability p per image, its luma in all three channels (SupCon's and SimCLR's recipe)."""
    on = (torch.rand(len(images), generator=gen, device=gen.device) < p).to(images.device)
    g = grey(images.float()).round_().clamp_(0, 255).to(torch.uint8).expand_as(images)
    return torch.where(on[:, None, None, None], g, images).contiguous(memory_format=torch.channels_last)


@register("grayscale", "luma in all channels with probability augment.gray_p (SimCLR / SupCon: 0.2)")
def _grayscale(cfg: AugmentConfig, image_size: int, num_classes: int):
    return pixel_step(lambda images, gen: random_grayscale(images, gen, cfg.gray_p))
