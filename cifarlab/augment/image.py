"""Geometric augmentations: flip, integer translation, random affine, random resized crop."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cifarlab.augment.pipeline import register, uniform
from cifarlab.schema import AugmentConfig


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(images), generator=gen, device=gen.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def alternating_flip(images: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
    """Derandomized flip (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"): image `index` is mirrored
    in epoch e when its fixed pseudo-random bit plus e is odd, so a random half is mirrored in the
    first epoch and every image alternates after it: each is seen mirrored and not in any two
    consecutive epochs. The bit is a multiplicative hash of the index (the same for every seed)."""
    bit = (index.to(images.device) * 2654435761 >> 15) & 1
    flip = (bit + epoch) % 2 == 1
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


PADDING = {"edge": "border", "zero": "zeros", "reflect": "reflection"}


def warp(images: torch.Tensor, theta: torch.Tensor, fill: str) -> torch.Tensor:
    """Resample each image through its 2x3 affine `theta` (output -> input, normalised
    coordinates): bilinear interpolation, borders filled per `fill`, rounded back to uint8."""
    x = images.float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=PADDING[fill], align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).contiguous(memory_format=torch.channels_last)


def random_affine(images: torch.Tensor, gen: torch.Generator, rotate: float, scale: float, shear: float,
                  shift: float, fill: str) -> torch.Tensor:
    """One `affine_grid` / `grid_sample` for the whole batch, with per-image rotation in
    [-rotate, rotate] degrees, zoom in [1 - scale, 1 + scale], shear in [-shear, shear] degrees
    and translation in [-shift, shift] of the width. Zoom > 1 enlarges the content."""
    n = len(images)
    angle = torch.deg2rad(uniform(n, -rotate, rotate, gen))
    zoom = uniform(n, 1 - scale, 1 + scale, gen)
    sh = torch.tan(torch.deg2rad(uniform(n, -shear, shear, gen)))
    tx, ty = uniform(n, -shift, shift, gen) * 2, uniform(n, -shift, shift, gen) * 2  # normalised: width = 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map: rotate(shear(zoom(p))) + t; theta is its inverse (grid_sample reads input positions)
    fwd = torch.zeros(n, 3, 3, device=gen.device)
    fwd[:, 0, 0], fwd[:, 0, 1] = zoom * cos, zoom * (cos * sh - sin)
    fwd[:, 1, 0], fwd[:, 1, 1] = zoom * sin, zoom * (sin * sh + cos)
    fwd[:, 0, 2], fwd[:, 1, 2], fwd[:, 2, 2] = tx, ty, 1
    theta = torch.linalg.inv(fwd)[:, :2].to(images.device)
    return warp(images, theta, fill)


def random_resized_crop(images: torch.Tensor, gen: torch.Generator, min_area: float) -> torch.Tensor:
    """Crop a random box of area in [min_area, 1] of the image and aspect ratio in [3/4, 4/3]
    (log-uniform), anywhere it fits, and resize it to the full image (bilinear), per image
    (Szegedy et al. 2015's crop, at CIFAR scale). A box that does not fit (a side above the
    image's) becomes the whole image, as torchvision falls back to; min_area = 1 is the identity."""
    n = len(images)
    area = uniform(n, min_area, 1.0, gen)
    ratio = torch.exp(uniform(n, math.log(3 / 4), math.log(4 / 3), gen))
    w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)   # fractions of the side
    fits = (w <= 1) & (h <= 1)
    w, h = torch.where(fits, w, 1.0), torch.where(fits, h, 1.0)
    cx = uniform(n, 0, 1, gen) * (1 - w) + w / 2     # box centre, in [0, 1]
    cy = uniform(n, 0, 1, gen) * (1 - h) + h / 2
    theta = torch.zeros(n, 2, 3, device=gen.device)
    theta[:, 0, 0], theta[:, 1, 1] = w, h
    theta[:, 0, 2], theta[:, 1, 2] = 2 * cx - 1, 2 * cy - 1
    return warp(images, theta.to(images.device), "edge")


def pixel_step(fn):
    """A Batch step from an images -> images function."""
    return lambda batch, gen: batch.with_images(fn(batch.images, gen))


@register("flip", "horizontal flip with probability 1/2")
def _flip(cfg: AugmentConfig, image_size: int, num_classes: int):
    return pixel_step(random_flip)


@register("altflip", "horizontal flip alternating per image between epochs (Jordan 2024): half of the "
          "images in the first epoch, then each the opposite of its previous epoch", per_epoch=True)
def _altflip(cfg: AugmentConfig, image_size: int, num_classes: int):
    return lambda batch, gen, epoch: batch.with_images(alternating_flip(batch.images, batch.index, epoch))


@register("translate", "integer shift of up to augment.translate of the width in x and y, borders per augment.fill")
def _translate(cfg: AugmentConfig, image_size: int, num_classes: int):
    shift = max(1, round(cfg.translate * image_size))
    return pixel_step(lambda images, gen: random_translate(images, gen, shift, cfg.fill))


@register("affine", "rotation (augment.rotate), zoom (scale), shear and translation (shift), bilinear, borders per fill")
def _affine(cfg: AugmentConfig, image_size: int, num_classes: int):
    return pixel_step(lambda images, gen: random_affine(images, gen, cfg.rotate, cfg.scale, cfg.shear,
                                                        cfg.shift, cfg.fill))


@register("resized_crop", "random resized crop: area in [augment.crop_area, 1], aspect 3/4 to 4/3, bilinear")
def _resized_crop(cfg: AugmentConfig, image_size: int, num_classes: int):
    return pixel_step(lambda images, gen: random_resized_crop(images, gen, cfg.crop_area))


__all__ = ["random_affine", "random_flip", "random_resized_crop", "random_translate", "source_index"]
