"""Small-sample statistics for comparing runs across seeds, without scipy.

Studies have a handful of seeds, so intervals use Student's t, not the normal
approximation; paired differences (same seed, two experiments) cancel the
share of seed-to-seed noise that both experiments have in common.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

NAN = float("nan")

# Two-sided 95% (upper 0.975) quantiles of Student's t, from standard tables.
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
    18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
    26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}
_T975_INF = 1.960


def t_quantile_975(df: int) -> float:
    """Upper 0.975 quantile of Student's t with `df` degrees of freedom (3 decimals)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df in _T975:
        return _T975[df]
    if df > 120:
        return _T975_INF
    lo = max(k for k in _T975 if k < df)
    hi = min(k for k in _T975 if k > df)
    # t is close to linear in 1/df, so interpolating there is more accurate than in df.
    frac = (1 / lo - 1 / df) / (1 / lo - 1 / hi)
    return _T975[lo] + frac * (_T975[hi] - _T975[lo])


def mean_std(xs: Iterable[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1); std is nan below two values, both for none."""
    xs = list(xs)
    n = len(xs)
    if n == 0:
        return NAN, NAN
    mean = math.fsum(xs) / n
    if n < 2:
        return mean, NAN
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))


def ci95(xs: Iterable[float]) -> tuple[float, float]:
    """95% t-interval of the mean; (nan, nan) below two values."""
    xs = list(xs)
    if len(xs) < 2:
        return NAN, NAN
    mean, std = mean_std(xs)
    half = t_quantile_975(len(xs) - 1) * std / math.sqrt(len(xs))
    return mean - half, mean + half


def paired_diff(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[float, float, float, int]:
    """(mean of a - b, 95% CI low, high, n) over the seeds both have."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    mean, _ = mean_std(diffs)
    lo, hi = ci95(diffs)
    return mean, lo, hi, len(diffs)


def best_epoch(history: list[Mapping]) -> int | None:
    """The first epoch of the highest validation accuracy (what train.select = best_val keeps), from
    dicts with "epoch" and, where the epoch was validated, "val_acc"."""
    scored = [h for h in history if h.get("val_acc") is not None]
    return max(scored, key=lambda h: (h["val_acc"], -h["epoch"]))["epoch"] if scored else None
