"""Seeded label noise on the training labels (the images the train and validation splits are cut
from), never on the test set.

    symmetric    with probability `rate`, a label becomes one of the other K - 1 classes, uniformly:
                 the true class is never drawn, so the expected flip rate is `rate` itself
    asymmetric   CIFAR-10's standard class-dependent map (Patrini et al. 2017, used by ELR and
                 co-teaching's successors): truck -> automobile, bird -> airplane, deer -> horse,
                 cat <-> dog, each with probability `rate`; other classes keep their labels
    pairflip     with probability `rate`, class i becomes class i + 1 (mod K) (Han et al. 2018)

`data.noise_seed` alone draws the noise, so every training seed of a study sees the same noisy
labels. The transition matrix T (T[i, j] = P(noisy j | clean i)) and the flip rate actually drawn
are recorded with each run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cifarlab.errors import ConfigError

NOISES = ("none", "symmetric", "asymmetric", "pairflip")
# clean class -> the class it is flipped to, by name (CIFAR-10's standard asymmetric noise)
ASYMMETRIC = {"cifar10": {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}}


@dataclass(frozen=True)
class Noise:
    labels: np.ndarray        # the noisy labels, int64
    clean: np.ndarray         # the labels as the dataset has them
    transition: np.ndarray    # (K, K): T[i, j] = P(noisy = j | clean = i) of the process drawn from
    kind: str
    rate: float

    @property
    def flipped(self) -> np.ndarray:
        return self.labels != self.clean

    @property
    def actual_rate(self) -> float:
        return float(self.flipped.mean()) if len(self.labels) else 0.0

    def describe(self) -> dict:
        return {"type": self.kind, "rate": self.rate, "actual_rate": self.actual_rate,
                "flipped": int(self.flipped.sum()), "transition": np.round(self.transition, 6).tolist()}


def transition_matrix(kind: str, rate: float, classes: tuple[str, ...], dataset: str) -> np.ndarray:
    k = len(classes)
    t = np.eye(k)
    if kind == "none" or rate == 0:
        return t
    if kind == "symmetric":
        t = np.full((k, k), rate / (k - 1))
        np.fill_diagonal(t, 1 - rate)
    elif kind == "pairflip":
        for i in range(k):
            t[i, i], t[i, (i + 1) % k] = 1 - rate, rate
    elif kind == "asymmetric":
        if dataset not in ASYMMETRIC:
            raise ConfigError(f"data.noise = 'asymmetric' has a standard map for {', '.join(ASYMMETRIC)} only, "
                              f"not {dataset}; use symmetric or pairflip")
        index = {name: i for i, name in enumerate(classes)}
        for src, dst in ASYMMETRIC[dataset].items():
            if src not in index or dst not in index:
                raise ConfigError(f"asymmetric noise maps {src} -> {dst}, but the classes are {', '.join(classes)}")
            t[index[src], index[src]], t[index[src], index[dst]] = 1 - rate, rate
    else:
        raise ConfigError(f"data.noise = {kind!r} is invalid; valid: {', '.join(NOISES)}")
    return t


def corrupt(labels: np.ndarray, kind: str, rate: float, seed: int, classes: tuple[str, ...],
            dataset: str) -> Noise:
    """Draw noisy labels from the transition matrix of (kind, rate), row by row, with `seed`."""
    if not 0 <= rate < 1:
        raise ConfigError(f"data.noise_rate = {rate} must lie in [0, 1)")
    clean = np.asarray(labels, np.int64)
    t = transition_matrix(kind, rate, classes, dataset)
    rng = np.random.default_rng(seed)
    u = rng.random(len(clean))
    cumulative = np.cumsum(t, axis=1)[clean]               # each sample's row of T, cumulated
    noisy = (u[:, None] >= cumulative).sum(1).clip(max=len(classes) - 1)
    return Noise(noisy.astype(np.int64), clean, t, kind, rate)
