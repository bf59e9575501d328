"""`cifarlab show augment`: what an experiment's augmentation pipeline does to a few training images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cifarlab import config as C
from cifarlab.augment import build_pipeline
from cifarlab.data.batch import Batch
from cifarlab.data.loader import Splits
from cifarlab.errors import UserError


def first_of_each_class(splits: Splits, count: int) -> torch.Tensor:
    """Indices of the first training image of each of the first `count` classes (fewer if absent)."""
    labels = splits.train.labels
    found = [int(torch.nonzero(labels == c)[0]) for c in range(splits.num_classes) if (labels == c).any()]
    return torch.tensor(found[:count])


def augment_grid(cfg: C.ExperimentConfig, splits: Splits, out: Path, images: int = 6, draws: int = 5,
                 seed: int = 0) -> Path:
    """A PNG grid: one row per image (one per class), the original first, then `draws` augmented
    draws of the pipeline (each draw a different generator seed; MixUp and CutMix mix the shown
    images with each other). The title lists the pipeline in order."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipeline = build_pipeline(cfg.augment, splits.image_size, splits.num_classes)
    if pipeline is None:
        raise UserError(f"{cfg.name} has no augmentation to show: augment.pipeline is empty")
    idx = first_of_each_class(splits, images)
    batch = Batch(splits.train.images[idx], splits.train.labels[idx], idx)
    columns = [batch.images] + [pipeline(batch, torch.Generator().manual_seed(seed + d), 0, cfg.train.epochs).images
                                for d in range(draws)]
    fig, axes = plt.subplots(len(idx), draws + 1, figsize=(1.2 * (draws + 1), 1.2 * len(idx) + 0.5), squeeze=False)
    for col, imgs in enumerate(columns):
        for row in range(len(idx)):
            ax = axes[row][col]
            ax.imshow(np.ascontiguousarray(imgs[row].permute(1, 2, 0).numpy()), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("original" if col == 0 else f"draw {col}", fontsize=7)
            if col == 0:
                ax.set_ylabel(splits.classes[int(batch.labels[row])], fontsize=7)
    fig.suptitle(f"{cfg.name}: " + " -> ".join(cfg.augment.pipeline), fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out
