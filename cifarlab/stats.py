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


def seedwise(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """{seed: a - b} over the seeds both have, in seed order."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def paired_diff(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[float, float, float, int]:
    """(mean of a - b, 95% CI low, high, n) over the seeds both have. Where a and b are themselves
    `seedwise` differences, it is how much one difference changed against the other."""
    diffs = list(seedwise(a, b).values())
    mean, _ = mean_std(diffs)
    lo, hi = ci95(diffs)
    return mean, lo, hi, len(diffs)


def best_epoch(history: list[Mapping]) -> int | None:
    """The first epoch of the highest validation accuracy (what train.select = best_val keeps), from
    dicts with "epoch" and, where the epoch was validated, "val_acc"."""
    scored = [h for h in history if h.get("val_acc") is not None]
    return max(scored, key=lambda h: (h["val_acc"], -h["epoch"]))["epoch"] if scored else None


# ----------------------------------------------------------------------------- tests and corrections

CHANCE_MARGIN = 0.02  # a run whose best validation accuracy stays below chance + this never learned
FEW_EPOCHS = 3   # under this many, a run at chance with a finite training loss may only be too short


def near_chance(best: float, classes: int) -> bool:
    """Whether an accuracy stays within `CHANCE_MARGIN` of chance (1 / classes): a network that
    diverged or died at the start."""
    return bool(classes) and best < 1 / classes + CHANCE_MARGIN


def chance_warning(final: Mapping, epochs: list[Mapping], hide_test: bool = False) -> str | None:
    """A run's warning that it never rose above chance in any epoch (on the clean labels where the
    run recorded them: under label noise a network that learned stays near chance on the noisy
    ones), or at the end on the test set where it held out no validation split; None otherwise.
    The report's rule (`report.summary.at_chance`) for one run, said when it ends. `hide_test`
    (`run --hide-test`): a test accuracy it is judged on is not printed."""
    accs = [e.get("val_acc_clean", e.get("val_acc")) for e in epochs]
    accs = [a for a in accs if a is not None]
    best, where = (max(accs), "best validation accuracy") if accs else (final.get("test_acc"), "test accuracy")
    classes = len(final.get("classes") or ())
    if best is None or not near_chance(best, classes):
        return None
    said = (f"on the test set (its accuracy hidden, {classes} classes)" if hide_test and not accs else
            f"({where} {100 * best:.1f} % with {classes} classes, chance {100 / classes:.1f} %)")
    losses = [e.get("train_loss") for e in epochs if e.get("train_loss") is not None]
    trained = len(epochs) or final.get("epochs") or 0
    if 0 < trained < FEW_EPOCHS and all(math.isfinite(x) for x in losses):   # a short try-out: not a verdict
        return (f"this run never rose above chance {said} in {trained} epoch(s), too few to tell a network that "
                "has not learned yet from one that diverged or died at the start: train longer, and if it stays "
                "at chance, a lower learning rate or a warm-up usually helps")
    return (f"this run never rose above chance {said}: the network diverged or died at the start; a lower "
            "learning rate or a warm-up usually helps")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz's method)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), x in [0, 1]."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value of Student's t statistic `t` with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2, 0.5, df / (df + t * t))


def paired_p(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """Two-sided p-value of the paired t-test of a - b over the seeds both have; nan below two."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    if len(diffs) < 2:
        return NAN
    mean, std = mean_std(diffs)
    if std == 0:
        return 0.0 if mean != 0 else 1.0
    return t_two_sided_p(mean / (std / math.sqrt(len(diffs))), len(diffs) - 1)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (nan left as nan, and not counted): the family-wise
    error rate stays at alpha when each adjusted p is compared with alpha."""
    ranked = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    out, running = [NAN] * len(ps), 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        out[i] = running
    return out


Z_POWER_80 = 0.8416  # upper 0.80 quantile of the standard normal


def seeds_needed(diff_mean: float, diff_std: float, limit: int = 1000) -> int | None:
    """About how many paired seeds a two-sided paired t-test at alpha 0.05 needs to detect a true
    difference of `diff_mean` with 80 % power, given the differences' spread `diff_std`
    (n >= ((t_0.975,n-1 + z_0.8) sd / |d|)^2, the usual approximation); None beyond `limit`."""
    if not (diff_std > 0) or diff_mean == 0 or math.isnan(diff_mean):
        return None
    for n in range(2, limit + 1):
        if (t_quantile_975(n - 1) + Z_POWER_80) * diff_std / math.sqrt(n) <= abs(diff_mean):
            return n
    return None
