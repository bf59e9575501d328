"""Training compute: FLOPs of one training image through a network, counted once per network and
image size with PyTorch's own counter (`torch.utils.flop_counter.FlopCounterMode`, which counts a
multiply-add as 2 FLOPs and covers convolutions and matrix products, the work that matters).

A run records `train_flops` (FLOPs per training image x images seen, x the method's factor) and
`images_seen` in its final.json; a study with `match = "flops"` gives each arm the epochs at which
its training FLOPs equal the reference arm's (`cifarlab.study.plan`).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from cifarlab import config as C
from cifarlab.data.datasets import DATASETS
from cifarlab.errors import ConfigError
from cifarlab.methods import METHODS, pretrain_epochs, total_epochs


def unit(flops: float) -> tuple[str, float]:
    """The unit that shows a FLOP count, with its scale: PFLOP from 0.1 PFLOP, else TFLOP from 0.1
    TFLOP, else GFLOP (a small run's 0.000 PFLOP said nothing)."""
    if flops >= 1e14:
        return "PFLOP", 1e15
    return ("TFLOP", 1e12) if flops >= 1e11 else ("GFLOP", 1e9)


def amount(flops: float, digits: int | None = None) -> str:
    """A FLOP count in the unit that shows it (`unit`), with `digits` decimals (3 for PFLOP and 2
    otherwise where None)."""
    name, scale = unit(flops)
    digits = (3 if name == "PFLOP" else 2) if digits is None else digits
    return f"{flops / scale:,.{digits}f} {name}"


@lru_cache(maxsize=64)
def flops_per_image(model: C.ModelConfig, num_classes: int, image_size: int) -> int:
    """Forward + backward FLOPs of one image through the network (training mode, fp32), the mean
    over a batch of two so that BatchNorm trains as it does in a run."""
    from torch.utils.flop_counter import FlopCounterMode

    from cifarlab.models import build_model
    torch.manual_seed(0)
    net = build_model(model, num_classes, image_size).train()
    x = torch.randn(2, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        net(x).float().sum().backward()
    return counter.get_total_flops() // 2


def method_factor(cfg: C.ExperimentConfig) -> float:
    """Networks trained per image: co-teaching trains two on every batch."""
    return float(METHODS.get(cfg.train.method).networks)


def training_flops(cfg: C.ExperimentConfig, num_classes: int, image_size: int, images_seen: int,
                   pretrain_images: int = 0) -> int:
    """Training FLOPs of a run that saw `images_seen` training images: per image and network, one
    training step; a two-phase method counts its own (`Pretraining.flops`; SupCon: `pretrain_images`
    of them in pre-training, each as two views, the rest through the probe on frozen features, whose
    forward pass is about a third of a training step)."""
    per = flops_per_image(cfg.model, num_classes, image_size)
    two_phase = METHODS.get(cfg.train.method).pretraining
    if two_phase is not None:
        return two_phase.flops(per, images_seen, pretrain_images)
    return int(per * images_seen * method_factor(cfg))


def classes_of(cfg: C.ExperimentConfig) -> int:
    """The classes a run of `cfg` trains on, from its dataset's registry entry."""
    classes = DATASETS.get(cfg.data.dataset).num_classes(cfg.data.labels)
    if not classes:
        raise ConfigError(f"data.dataset = {cfg.data.dataset!r} declares no classes (its registry entry), so its "
                          "network cannot be planned; register it with plugins.register_dataset(..., classes=N)")
    return classes


def size_of(cfg: C.ExperimentConfig) -> int:
    """The image side a run of `cfg` trains at."""
    return cfg.data.image_size or DATASETS.get(cfg.data.dataset).side


def images_per_epoch(cfg: C.ExperimentConfig) -> int | None:
    """The training images one epoch of `cfg` shows (its subset or its dataset's training images, less
    the validation split), or None where its dataset declares no size."""
    known = cfg.data.subset or DATASETS.get(cfg.data.dataset).train_images
    return known - cfg.data.val_size if known else None


def planned(cfg: C.ExperimentConfig) -> dict:
    """A config's compute before it runs: FLOPs per training image, images per epoch and the
    training FLOPs of the whole run (`training_flops` of the images its epochs will show)."""
    per = flops_per_image(cfg.model, classes_of(cfg), size_of(cfg))
    images = images_per_epoch(cfg)
    if images is None:
        raise ConfigError(f"data.dataset = {cfg.data.dataset!r} declares no train_images (its registry entry), so "
                          "its compute cannot be planned; register it with train_images = N, or set data.subset")
    seen = int(images * cfg.train.epochs)
    pretrain = images * pretrain_epochs(cfg)
    if pretrain:   # a two-phase method: the first phase's images, then the second's
        seen = pretrain + int(images * (total_epochs(cfg) - cfg.train.epochs))
    return {"flops_per_image": per, "images_per_epoch": images, "images": seen,
            "train_flops": training_flops(cfg, classes_of(cfg), size_of(cfg), seen, pretrain)}
