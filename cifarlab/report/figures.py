"""The report's figures (matplotlib, no metadata: the same database gives the same PNG bytes)."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import style
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cifarlab import config as C
from cifarlab.results.store import Store
from cifarlab.stats import NAN
from cifarlab.report.summary import StudySpec, experiment_config, noise_setting, ok

DPI = 100
# Pinned on top of matplotlib's defaults so a user's matplotlibrc cannot change the PNGs.
RC = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.family": "DejaVu Sans", "font.size": 9,
      "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "path.simplify": True}


def save(fig: Figure, path: Path) -> None:
    # No Software/date metadata: the same data must give the same bytes.
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def color(i: int) -> str:
    return f"C{i % 10}"


def metric_band(rows: list[sqlite3.Row], run_ids: list[int], metric: str) -> tuple[np.ndarray, ...]:
    """(epochs, mean, std) of one metric across runs; std is nan where fewer than two runs have it."""
    n_epochs = max((r["epoch"] for r in rows), default=0)
    m = np.full((len(run_ids), n_epochs), np.nan)
    where = {rid: i for i, rid in enumerate(run_ids)}
    for r in rows:
        if r["run_id"] in where and r[metric] is not None:
            m[where[r["run_id"]], r["epoch"] - 1] = r[metric]
    have = ~np.isnan(m)
    count = have.sum(axis=0)
    mean = np.divide(np.where(have, m, 0).sum(axis=0), count, out=np.full(n_epochs, NAN), where=count > 0)
    sq = np.where(have, m - mean, 0) ** 2
    std = np.sqrt(np.divide(sq.sum(axis=0), count - 1, out=np.full(n_epochs, NAN), where=count > 1))
    return np.arange(1, n_epochs + 1), mean, std


NOISE_METRICS = (("flipped_acc_noisy", "flipped samples: accuracy on their noisy labels (%)"),
                 ("flipped_acc_clean", "flipped samples: accuracy on their clean labels (%)"),
                 ("val_acc_clean", "validation accuracy on clean labels (%)"))


def noise_rows(store: Store, run_ids: list[int]) -> list[dict]:
    """One dict per (run, epoch) with the label-noise epoch metrics (None where absent)."""
    merged: dict[tuple[int, int], dict] = {}
    for rid in run_ids:
        for epoch, name, value in store.epoch_metrics(rid):
            row = merged.setdefault((rid, epoch), {"run_id": rid, "epoch": epoch, **{m: None for m, _ in NOISE_METRICS}})
            if name in row:
                row[name] = value
    return list(merged.values())


def noise_figures(store: Store, spec: StudySpec, summary: list[dict], rows: list[sqlite3.Row],
                  out_dir: Path) -> list[str]:
    """Under label noise: memorisation curves (flipped training samples against their noisy and
    clean labels, clean validation accuracy), one figure for the reference's method at every noise
    setting and one per group with noisy runs that figure lacks, and the score against the noise rate per method
    when the study varies the rate. Nothing when no run recorded label noise.

    A memorisation figure draws each training once: an experiment that differs from one drawn
    before it only in `train.select` (early stopping tests that run's weights) is left out."""
    lines = []
    per_exp = {s["experiment"]: noise_rows(store, s["run_ids"]) for s in summary}
    configs = {s["experiment"]: experiment_config(rows, s["experiment"]) for s in summary}
    noisy = [s["experiment"] for s in summary if any(r["flipped_acc_noisy"] is not None for r in per_exp[s["experiment"]])]
    if noisy:
        ref = configs[spec.reference]
        method = noise_method(ref) if ref is not None else None
        by_rate = [e for e in noisy if configs[e] is not None and noise_method(configs[e]) == method]
        figures = [("memorisation.png", f"{method} at every noise setting", by_rate)] if by_rate else \
            [("memorisation.png", "each experiment", noisy)]
        shown = {training(e, configs) for e in by_rate}
        for group in spec.questions:
            members = [e for e in spec.members(group) if e in noisy]
            if members and not {training(e, configs) for e in members} <= shown:   # else all drawn already
                figures.append((f"memorisation_{group}.png", f"group `{group}`", members))
        for file, what, names in figures:
            drawn = distinct_trainings(names, configs)
            plot_memorisation([s for s in summary if s["experiment"] in drawn], per_exp, out_dir / file)
            left = [e for e in names if e not in drawn]
            lines += [f"![Memorisation, {what}: flipped training samples against their noisy and their clean "
                      f"labels, and clean validation accuracy; mean over seeds, band ±1 std]({file})", "",
                      *([f"Not drawn, as their training is drawn: {', '.join(f'`{e}`' for e in left)} "
                         "(they differ only in the epoch they test).", ""] if left else [])]
    rates = noise_series([(configs[s["experiment"]], s) for s in summary if s["n"]])
    if len({rate for pts in rates.values() for rate, _ in pts}) > 1:
        plot_noise_rates(rates, out_dir / "noise_rates.png", spec.label)
        targets = any(ok(s.get("target")) for pts in rates.values() for _, s in pts)
        lines += [f"![{spec.label.capitalize()} accuracy against the noise rate, per noise type and method; "
                  "mean over seeds, 95% CI" + ("; the variants' targets (published figures, the results "
                                               "table's notes say whose) hollow and dashed" if targets else "")
                  + "](noise_rates.png)", ""]
    return lines


def training(name: str, configs: dict[str, C.ExperimentConfig | None]) -> str:
    """What an experiment trains: its config but `train.select` (its name where unreadable)."""
    return C.selection_hash(configs[name]) if configs[name] is not None else name


def distinct_trainings(names: list[str], configs: dict[str, C.ExperimentConfig | None]) -> list[str]:
    """`names` without those whose training (config but `train.select`) an earlier one has."""
    seen, out = set(), []
    for name in names:
        key = training(name, configs)
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


def noise_method(cfg, forget: bool = True) -> str:
    """How a run fights label noise, for a figure's legend and the noise table's rows: its loss with
    the settings of that loss it changes from their defaults ("elr (beta 0.9)"), its method, its
    selection; the method's own settings as its registry entry states them (`Method.legend`:
    co-teaching's forget rate where it is not the noise rate, one line per forget rule; left out
    with `forget=False`, where a forget rate set for one noise rate should match another's)."""
    default = C.LossConfig()
    own = [f"{f.name.split('_', 1)[1]} {getattr(cfg.loss, f.name):g}" for f in dataclasses.fields(C.LossConfig)
           if f.name.startswith(f"{cfg.loss.name}_") and getattr(cfg.loss, f.name) != getattr(default, f.name)]
    loss = cfg.loss.name + (f" ({', '.join(own)})" if own else "")
    from cifarlab.methods import METHODS
    method = "" if cfg.train.method == "standard" else f" + {cfg.train.method}"
    legend = METHODS.get(cfg.train.method).legend
    said = legend(cfg, noise_setting(cfg)[1]) if forget and legend is not None else ""
    method += f" ({said})" if said else ""
    return loss + method + (" + early stopping" if cfg.train.select == "best_val" else "")


def noise_series(configs: list[tuple]) -> dict[tuple[str, str], list[tuple[float, dict]]]:
    """{(noise type, method): [(rate, summary row)]} from (config, summary row) pairs. A method's
    noise-free point starts each of its noise types' lines (it is 0 % of every type); it is a line
    of its own only where the method has no noisy runs."""
    points: dict[tuple[str, str], list[tuple[float, dict]]] = {}
    clean: dict[str, list[dict]] = {}
    for cfg, s in configs:
        if cfg is None:
            continue
        kind, rate = noise_setting(cfg)
        if kind == "none":
            clean.setdefault(noise_method(cfg), []).append(s)
        else:
            points.setdefault((kind, noise_method(cfg)), []).append((rate, s))
    for method, rows in clean.items():
        kinds = [k for k in points if k[1] == method] or [("none", method)]
        for key in kinds:
            points.setdefault(key, []).extend((0.0, s) for s in rows)
    return {k: sorted(v, key=lambda p: p[0]) for k, v in points.items()}


def plot_memorisation(summary: list[dict], per_exp: dict[str, list[dict]], path: Path) -> None:
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(13, 4.2))
        axes = fig.subplots(1, 3)
        for i, s in enumerate(summary):
            for ax, (metric, _) in zip(axes, NOISE_METRICS):
                draw_band(ax, per_exp[s["experiment"]], s, metric, 100, i)
        for ax, (_, label) in zip(axes, NOISE_METRICS):
            label_epochs(ax, label)
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(loc="best", fontsize=7)
        fig.suptitle("Label noise: what the network learns of the flipped samples (mean over seeds, band ±1 std)")
        fig.tight_layout()
        save(fig, path)


def plot_noise_rates(rates: dict, path: Path, label: str) -> None:
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        series = sorted(rates.items())
        for i, ((kind, method), points) in enumerate(series):
            # each line (and its targets) nudged sideways, so that lines with equal points (early stopping
            # that tested the last epoch) stay visible: 0.6 rate points per line, not a change of rate
            nudge = 0.6 * (i - (len(series) - 1) / 2)
            x = [100 * r + nudge for r, _ in points]
            y = [100 * s["score_mean"] for _, s in points]
            err = [[100 * (s["score_mean"] - s["score_lo"]) if ok(s["score_lo"]) else 0 for _, s in points],
                   [100 * (s["score_hi"] - s["score_mean"]) if ok(s["score_hi"]) else 0 for _, s in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color(i), label=f"{method} ({kind})")
            published = [(100 * r + nudge, 100 * s["target"]) for r, s in points if ok(s.get("target"))]
            if published:
                ax.plot(*zip(*published), linestyle="--", marker="D", markerfacecolor="none", color=color(i),
                        label=f"{method} ({kind}): target (published)")
        ax.set_xlabel("noise rate (%; lines nudged apart sideways)")
        ax.set_ylabel(f"{label} accuracy (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save(fig, path)


def plot_learning_curves(store: Store, summary: list[dict], path: Path) -> None:
    panels = (("train_acc", "train accuracy (%)", 100), ("val_acc", "validation accuracy (%)", 100),
              ("train_loss", "train loss", 1), ("val_loss", "validation loss", 1))
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(10, 7.5))
        axes = fig.subplots(2, 2).ravel()
        for i, s in enumerate(summary):
            rows = store.epochs(s["run_ids"]) if s["run_ids"] else []
            for ax, (metric, _, scale) in zip(axes, panels):
                draw_band(ax, rows, s, metric, scale, i)
        for ax, (_, label, _) in zip(axes, panels):
            label_epochs(ax, label)
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(loc="lower right")
        fig.suptitle("Mean over seeds; band: ±1 std across seeds")
        fig.tight_layout()
        save(fig, path)


def plot_val_curves(store: Store, summary: list[dict], path: Path, threshold: float | None, group: str) -> None:
    """Validation accuracy per epoch of a few experiments, with the convergence threshold if any."""
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        for i, s in enumerate(summary):
            draw_band(ax, store.epochs(s["run_ids"]) if s["run_ids"] else [], s, "val_acc", 100, i)
        if threshold is not None:
            ax.axhline(100 * threshold, color="gray", linestyle="--", linewidth=1, label=f"{100 * threshold:g}%")
        label_epochs(ax, "validation accuracy (%)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right")
        ax.set_title(f"{group}: mean over seeds; band: ±1 std across seeds")
        fig.tight_layout()
        save(fig, path)


def draw_band(ax, rows: list[sqlite3.Row], s: dict, metric: str, scale: float, i: int) -> None:
    x, mean, std = metric_band(rows, s["run_ids"], metric)
    if np.isfinite(mean).any():
        ax.plot(x, scale * mean, color=color(i), label=f"{s['experiment']} (n={s['n']})")
        low, high = band_limits(mean, std, metric)
        ax.fill_between(x, scale * low, scale * high, where=np.isfinite(std), color=color(i), alpha=0.2, linewidth=0)


def band_limits(mean: np.ndarray, std: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """mean ± std clipped to what the metric can take (losses >= 0, accuracies in [0, 1]): seeds
    stalled at chance spread wider than the distance to 0 % or 100 %, and a band past those would
    read as a measurement."""
    low, high = np.maximum(mean - std, 0.0), mean + std
    return low, np.minimum(high, 1.0) if metric.endswith("_acc") else high


def label_epochs(ax, label: str) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)


def plot_accuracy(summary: list[dict], path: Path, label: str = "test", title: str | None = None) -> None:
    """Bars of the mean accuracy (test, or validation in a selection study) with 95% CIs and targets."""
    title = title or f"{label.capitalize()} accuracy: mean over seeds, 95% CI"
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(max(6.0, 1.1 * len(summary) + 2), 4.5))
        ax = fig.subplots()
        bottom, top = axis_limits(summary)
        for i, s in enumerate(summary):
            draw_bar(ax, i, s, bottom)
        ax.set_xticks(range(len(summary)), [s["experiment"] for s in summary], rotation=20, ha="right")
        ax.set_xlim(-0.6, len(summary) - 0.4)
        ax.set_ylim(bottom, top)
        ax.set_ylabel(f"{label} accuracy (%)" + (f"; y axis starts at {bottom:.0f}" if bottom > 0 else ""))
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left")
        fig.tight_layout()
        save(fig, path)


def axis_limits(summary: list[dict]) -> tuple[float, float]:
    """Zoom the y axis in (to multiples of 5) so that differences of a point or two show."""
    values = [100 * v for s in summary for v in (s["score_lo"], s["score_mean"], s["score_hi"], s["target"]) if ok(v)]
    if not values:
        return 0.0, 100.0
    return float(max(0, 5 * math.floor((min(values) - 5) / 5))), float(min(100, 5 * math.ceil((max(values) + 5) / 5)))


def draw_bar(ax, i: int, s: dict, bottom: float) -> None:
    if s["n"] == 0:
        ax.text(i, bottom + 1, "no runs", ha="center", va="bottom", rotation=90, color="gray")
    else:
        mean = 100 * s["score_mean"]
        yerr = [[mean - 100 * s["score_lo"]], [100 * s["score_hi"] - mean]] if ok(s["score_lo"]) else None
        ax.bar(i, mean - bottom, bottom=bottom, yerr=yerr, capsize=4, color=color(i), alpha=0.8)
        ax.text(i, bottom + 0.5, f"{mean:.2f}", ha="center", va="bottom", fontsize=8)
    if ok(s["target"]):
        seen = any(line.get_label() == "target" for line in ax.get_lines())
        ax.plot([i], [100 * s["target"]], "D", color="black", markersize=6, label="_" if seen else "target")


def pretraining_figure(store: Store, summary: list[dict], rows: list[sqlite3.Row], out_dir: Path) -> list[str]:
    """SupCon runs: the pre-training loss (L_out) per epoch, apart from the probe's cross-entropy
    that follows it in the same run. Nothing when no experiment of the study is a SupCon one."""
    from cifarlab.methods import pretrain_epochs
    phases = {}
    for s in summary:
        cfg = experiment_config(rows, s["experiment"])
        if cfg is not None and pretrain_epochs(cfg) and s["run_ids"]:   # a method of two phases (SupCon's)
            phases[s["experiment"]] = pretrain_epochs(cfg)
    if not phases:
        return []
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        for i, s in enumerate(summary):
            if s["experiment"] in phases:
                pre = [r for r in store.epochs(s["run_ids"]) if r["epoch"] <= phases[s["experiment"]]]
                draw_band(ax, pre, s, "train_loss", 1, i)
        label_epochs(ax, "SupCon loss L_out (training)")
        ax.legend(loc="upper right")
        ax.set_title("Pre-training: mean over seeds; band: ±1 std across seeds")
        fig.tight_layout()
        save(fig, out_dir / "pretraining_loss.png")
    return ["![SupCon pre-training loss per epoch (the probe phase's cross-entropy follows it in the learning "
            "curves above); mean over seeds, band ±1 std](pretraining_loss.png)", ""]
