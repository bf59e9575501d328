"""Deterministic, stratified train/validation split and stratified subsets."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `holdout` images drawn evenly across classes.

    Each class gives holdout * class_share images (largest remainders get the
    leftovers), so the held-out set has the training set's class balance.
    The same labels, size and seed always give the same indices.
    """
    n = len(labels)
    if not 0 <= holdout < n:
        raise ValueError(f"holdout size {holdout} must lie in [0, {n})")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * holdout / n
    take = np.floor(quota).astype(int)
    leftover = holdout - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, int)
    keep = np.setdiff1d(np.arange(n), held_out, assume_unique=True)
    return keep, held_out
