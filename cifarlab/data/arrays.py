"""A dataset in memory: what every source (`sources`, `imagefolder`) returns and the splits read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arrays:
    """A whole dataset in memory: uint8 NHWC RGB images and int64 labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    # CIFAR-100's superclasses where the source has them (int64 labels, 20 names), else None.
    train_coarse_labels: np.ndarray | None = None
    test_coarse_labels: np.ndarray | None = None
    coarse_classes: tuple[str, ...] | None = None
    # The dataset's own labels of the training images where the given ones are noisy (Imagenette's CSV).
    train_clean_labels: np.ndarray | None = None


def few(names, n: int = 3) -> str:
    """The first `n` names and the last, for a one-line description."""
    names = list(names)
    return ", ".join(names[:n]) + (f", ... {names[-1]}" if len(names) > n else "")
