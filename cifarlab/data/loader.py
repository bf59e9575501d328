"""The training split lives on the training device as one uint8 tensor.

Batches are index slices of a per-epoch permutation: no per-sample Python
loader on the hot path. Images are stored NCHW-shaped but channels-last in
memory (NHWC bytes), which is what both the source arrays and the fast CPU
convolution kernels want.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from cifarlab.schema import DataConfig
from cifarlab.data.batch import Batch
from cifarlab.data.noise import corrupt
from cifarlab.data.sources import Arrays, select_labels
from cifarlab.data.split import stratified_split
from cifarlab.errors import ConfigError


@dataclass
class Split:
    images: torch.Tensor   # uint8 (N, 3, H, W), channels-last memory
    labels: torch.Tensor   # int64 (N,): the labels training and choices see (noisy under label noise)
    clean: torch.Tensor | None = None  # int64 (N,): the dataset's labels, where noise changed some; else None

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device),
                     None if self.clean is None else self.clean.to(device))

    def flipped(self, limit: int | None = None) -> "Split | None":
        """The (first `limit`) samples whose label noise changed, with their noisy labels and clean
        ones, or None; only those images are gathered."""
        if self.clean is None:
            return None
        idx = torch.nonzero(self.labels != self.clean).flatten()[:limit]
        return Split(self.images[idx], self.labels[idx], self.clean[idx]) if len(idx) else None

    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[Batch]:
        """Batches in `order` (default: stored order); the last one may be short."""
        for start in range(0, len(self), batch_size):
            if order is None:
                idx = torch.arange(start, min(start + batch_size, len(self)), device=self.labels.device)
                yield Batch(self.images[start:start + batch_size], self.labels[start:start + batch_size], idx)
            else:
                idx = order[start:start + batch_size]
                yield Batch(self.images[idx], self.labels[idx], idx)


@dataclass
class Splits:
    train: Split
    val: Split | None
    test: Split
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per-channel pixel mean of the training split, 0-255 scale
    std: tuple[float, ...]
    noise: dict | None = None  # the label noise drawn (type, rate, actual rate, transition matrix), or None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]


def to_split(images: np.ndarray, labels: np.ndarray, clean: np.ndarray | None = None) -> Split:
    nchw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return Split(nchw, torch.from_numpy(labels.astype(np.int64)),
                 None if clean is None else torch.from_numpy(clean.astype(np.int64)))


def make_splits(arrays: Arrays, cfg: DataConfig) -> Splits:
    """Label noise on the training images, subset, then hold out the validation split (stratified
    on the labels a user has: the noisy ones); statistics come from the training split only."""
    arrays = select_labels(arrays, cfg.labels, cfg.dataset)
    images, labels, clean, noise = arrays.train_images, arrays.train_labels, None, None
    if cfg.noise != "none":
        drawn = corrupt(labels, cfg.noise, cfg.noise_rate, cfg.noise_seed, arrays.classes, cfg.dataset)
        labels, clean, noise = drawn.labels, drawn.clean, drawn.describe()
    elif arrays.train_clean_labels is not None and (arrays.train_clean_labels != labels).any():
        clean = np.asarray(arrays.train_clean_labels, np.int64)   # the published noisy labels (Imagenette's CSV)
        noise = {"type": f"csv column {cfg.label_column}", "actual_rate": float((clean != labels).mean()),
                 "flipped": int((clean != labels).sum())}
    if cfg.subset:
        _, keep = stratified_split(labels, min(cfg.subset, len(labels) - 1), cfg.split_seed)
        images, labels = images[keep], labels[keep]
        clean = None if clean is None else clean[keep]
    if cfg.val_size >= len(labels):
        hint = (f" of data.subset = {cfg.subset}; set data.val_size too, e.g. {max(1, len(labels) // 10)}"
                if cfg.subset else "")
        raise ConfigError(f"data.val_size = {cfg.val_size} must be smaller than the {len(labels)} training images{hint}")
    train_idx, val_idx = stratified_split(labels, cfg.val_size, cfg.split_seed) if cfg.val_size else (None, None)
    if train_idx is not None:
        val = to_split(images[val_idx], labels[val_idx], None if clean is None else clean[val_idx])
        images, labels = images[train_idx], labels[train_idx]
        clean = None if clean is None else clean[train_idx]
    else:
        val = None
    return Splits(
        train=to_split(images, labels, clean), val=val, test=to_split(arrays.test_images, arrays.test_labels),
        classes=arrays.classes, noise=noise,
        mean=tuple(images.mean(axis=(0, 1, 2), dtype=np.float64).tolist()),
        std=tuple(images.std(axis=(0, 1, 2), dtype=np.float64).tolist()),
    )
