"""Study reports and CSV exports, derived only from the results database.

A study's reference experiment, display order, published targets and current
config hashes are not in the database; a `StudySpec` supplies them. Everything
else (every number, figure and provenance line) is read from the runs and
epochs tables, so rerunning the report on the same database gives the same
README and PNGs byte for byte.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import style
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cifarlab import config as C
from cifarlab.errors import ConfigError, UserError
from cifarlab.results.store import Store
from cifarlab.stats import NAN, ci95, mean_std, paired_diff

STATUSES = ("done", "running", "pending", "failed")
DASH = "—"
DPI = 100
# Pinned on top of matplotlib's defaults so a user's matplotlibrc cannot change the PNGs.
RC = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.family": "DejaVu Sans", "font.size": 9,
      "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "path.simplify": True}
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


GROUP_NAME = re.compile(r"[A-Za-z0-9_-]+")  # group names become file names of its figures


@dataclass(frozen=True)
class StudySpec:
    name: str
    reference: str                      # experiment name the others are compared with
    experiments: tuple[str, ...]        # in display order
    targets: dict[str, float]           # optional published figures, accuracy in [0,1]
    hashes: dict[str, str] | None = None  # experiment -> current config_hash (None: accept all)
    notes: dict[str, str] = field(default_factory=dict)  # optional one-line description per experiment
    groups: dict[str, str] = field(default_factory=dict)     # experiment -> group ("" or absent: none)
    questions: dict[str, str] = field(default_factory=dict)  # declared group -> its question, report order
    baselines: dict[str, str] = field(default_factory=dict)  # group -> experiment (default: first member)
    also: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> other groups' experiments it shows
    convergence: float | None = None    # validation accuracy whose first crossing is reported
    selection: bool = False             # a study that chooses settings: report validation accuracy only
    description: str = ""               # shown under the title
    seeds: tuple[int, ...] = ()         # the study's seeds, where known: runs not yet registered count as not started

    @property
    def metric(self) -> str:
        """The accuracy the report compares: test, or validation in a selection study."""
        return "val_acc" if self.selection else "test_acc"

    @property
    def label(self) -> str:
        return "validation" if self.selection else "test"

    def __post_init__(self) -> None:
        known = set(self.experiments)
        if len(known) != len(self.experiments):
            raise UserError(f"study {self.name!r} lists an experiment twice: {', '.join(self.experiments)}")
        if self.reference not in known:
            raise UserError(f"study {self.name!r}: reference {self.reference!r} is not one of its "
                            f"experiments ({', '.join(self.experiments)})")
        for what, names in (("targets", self.targets), ("notes", self.notes), ("hashes", self.hashes or {}),
                            ("groups", self.groups)):
            if set(names) - known:
                raise UserError(f"study {self.name!r}: {what} name unknown experiments "
                                f"{', '.join(sorted(set(names) - known))}; valid: {', '.join(self.experiments)}")
        if self.hashes is not None and known - set(self.hashes):
            raise UserError(f"study {self.name!r}: no config hash for {', '.join(sorted(known - set(self.hashes)))}")
        if self.convergence is not None and not 0 < self.convergence < 1:
            raise UserError(f"study {self.name!r}: convergence must be an accuracy in (0, 1), got {self.convergence}")
        self.check_groups()

    def check_groups(self) -> None:
        declared = ", ".join(self.questions) or "(none)"
        for exp, group in self.groups.items():
            if group and group not in self.questions:
                raise UserError(f"study {self.name!r}: experiment {exp!r} is in undeclared group {group!r}; "
                                f"declared: {declared}")
        for group in self.questions:
            if not GROUP_NAME.fullmatch(group):
                raise UserError(f"study {self.name!r}: group name {group!r} may use only letters, digits, - and _")
            if not self.members(group):
                raise UserError(f"study {self.name!r}: group {group!r} has no experiments")
        for group, names in self.also.items():
            if group not in self.questions or set(names) - set(self.experiments):
                raise UserError(f"study {self.name!r}: `also` of group {group!r} names "
                                f"{', '.join(names)}; it needs a declared group ({declared}) and experiments "
                                f"of the study")
        for group, exp in self.baselines.items():
            if group not in self.questions or exp not in self.experiments:
                raise UserError(f"study {self.name!r}: baseline {exp!r} of group {group!r} is not an experiment "
                                f"of a declared group; declared: {declared}")

    def members(self, group: str) -> list[str]:
        """The group's baseline first, then its experiments and its `also` ones, in display order."""
        own = [e for e in self.experiments if self.groups.get(e) == group]
        own += [e for e in self.also.get(group, ()) if e not in own]
        baseline = self.baselines.get(group, own[0] if own else None)
        return ([baseline] if baseline else []) + [e for e in own if e != baseline]


# ----------------------------------------------------------------------------- selection

def counted_rows(store: Store, spec: StudySpec) -> list[sqlite3.Row]:
    """Rows of the spec's experiments; rows of superseded configs are left out when hashes are given."""
    wanted = set(spec.experiments)
    return [r for r in store.runs(spec.name) if r["experiment"] in wanted
            and (spec.hashes is None or r["config_hash"] == spec.hashes[r["experiment"]])]


def latest_done(rows: list[sqlite3.Row]) -> dict[str, dict[int, sqlite3.Row]]:
    """experiment -> seed -> the newest done row (without hashes, several configs may share a seed)."""
    out: dict[str, dict[int, sqlite3.Row]] = {}
    for r in rows:
        if r["status"] != "done":
            continue
        seeds = out.setdefault(r["experiment"], {})
        if r["seed"] not in seeds or r["id"] > seeds[r["seed"]]["id"]:
            seeds[r["seed"]] = r
    return out


def experiment_config(rows: list[sqlite3.Row], experiment: str) -> C.ExperimentConfig | None:
    """The config of the experiment's lowest seed (newest row), or None if absent or unreadable."""
    mine = sorted((r for r in rows if r["experiment"] == experiment), key=lambda r: (r["seed"], -r["id"]))
    if not mine:
        return None
    try:
        return C.from_dict(json.loads(mine[0]["config"]))
    except (ConfigError, ValueError):
        return None  # written by a cifarlab with other keys: it cannot be compared key by key


def config_diff(ref: C.ExperimentConfig | None, cfg: C.ExperimentConfig | None) -> dict | None:
    if ref is None or cfg is None:
        return None
    # Seeds differ between runs by design; they are not a difference between experiments.
    return {k: v for k, v in sorted(C.diff(ref, cfg).items()) if k != "train.seed"}


def parameter_count(rows: list[sqlite3.Row], experiment: str) -> int | None:
    """Parameters of the experiment's network, built from its stored config for its class count."""
    from cifarlab.data.sources import IMAGE_SHAPE
    from cifarlab.models import build_model, count_parameters
    cfg = experiment_config(rows, experiment)
    named = [json.loads(r["classes"]) for r in rows if r["experiment"] == experiment and r["classes"]]
    if cfg is None or not named:
        return None
    try:
        return count_parameters(build_model(cfg.model, len(named[0]), IMAGE_SHAPE[0]))
    except ConfigError:
        return None


# ----------------------------------------------------------------------------- summary

def summarize(store: Store, spec: StudySpec) -> list[dict]:
    """One dict per experiment, in the spec's order; accuracies as fractions in [0, 1]."""
    rows = counted_rows(store, spec)
    done = latest_done(rows)
    ref_score = {s: r[spec.metric] for s, r in done.get(spec.reference, {}).items()}
    ref_cfg = experiment_config(rows, spec.reference)
    out = []
    for exp in spec.experiments:
        runs = done.get(exp, {})
        out.append({"experiment": exp, "note": spec.notes.get(exp, ""), "reference": exp == spec.reference,
                    "group": spec.groups.get(exp, ""), "registered": sum(r["experiment"] == exp for r in rows),
                    **run_numbers(runs, ref_score, spec.metric), "target": spec.targets.get(exp),
                    "config_diff": config_diff(ref_cfg, experiment_config(rows, exp)),
                    "parameters": parameter_count(rows, exp)})
        epochs = epochs_by_run(store, out[-1]["run_ids"])
        out[-1].update(train_numbers(epochs), at_chance=at_chance(runs, epochs),
                       **top5_numbers(store, runs, spec.metric))
        if spec.convergence is not None:
            out[-1].update(convergence_numbers(epochs, out[-1]["run_ids"], spec.convergence))
    return out


def top5_numbers(store: Store, runs: dict[int, sqlite3.Row], metric: str) -> dict:
    """Top-5 accuracy (of the split `metric` reads) over the seeds that recorded it, and the
    class count: the report shows top-5 only for datasets of more than 10 classes."""
    name = metric.replace("_acc", "_top5")
    extra = store.run_metrics([r["id"] for r in runs.values()]) if runs else {}
    values = [m[name] for m in extra.values() if m.get(name) is not None]
    classes = [len(json.loads(r["classes"])) for r in runs.values() if r["classes"]]
    mean, std = mean_std(values) if values else (NAN, NAN)
    return {"top5_mean": mean, "top5_std": std, "top5_n": len(values), "classes_n": max(classes, default=0)}


def shows_top5(summary: list[dict]) -> bool:
    return any(s.get("top5_n") and s["classes_n"] > 10 for s in summary)


def run_numbers(runs: dict[int, sqlite3.Row], ref_score: dict[int, float], metric: str) -> dict:
    """Mean, std, CI and paired difference of `metric` (test_acc, or val_acc) over the seeds."""
    seeds = sorted(runs)
    score = {s: runs[s][metric] for s in seeds}
    score_mean, score_std = mean_std(score.values())
    # t-intervals clipped to what an accuracy can take: a bimodal set (runs stalled at chance beside
    # runs that trained) has a std so large that the bare interval passes 0 or 100 %
    score_lo, score_hi = (min(max(v, 0.0), 1.0) if ok(v) else v for v in ci95(score.values()))
    val_mean, val_std = mean_std(present(runs[s]["val_acc"] for s in seeds))
    return {"n": len(seeds), "seeds": seeds, "run_ids": [runs[s]["id"] for s in seeds], "score_by_seed": score,
            "score_mean": score_mean, "score_std": score_std, "score_lo": score_lo, "score_hi": score_hi,
            "score_median": float(np.median(list(score.values()))) if score else NAN,
            "val_mean": val_mean, "val_std": val_std, **diff_numbers(score, ref_score),
            "stopped": {s: runs[s]["stopped"] for s in seeds if runs[s]["stopped"]},
            "wall_mean": mean_std(present(runs[s]["wall_seconds"] for s in seeds))[0],
            "images_per_s_mean": mean_std(present(runs[s]["images_per_s"] for s in seeds))[0]}


def diff_numbers(score: dict[int, float], other: dict[int, float]) -> dict:
    diff_mean, diff_lo, diff_hi, diff_n = paired_diff(score, other)
    diff_lo, diff_hi = (min(max(v, -1.0), 1.0) if ok(v) else v for v in (diff_lo, diff_hi))  # a difference of accuracies
    return {"diff_mean": diff_mean, "diff_lo": diff_lo, "diff_hi": diff_hi, "diff_n": diff_n}


def epochs_by_run(store: Store, run_ids: list[int]) -> dict[int, list[sqlite3.Row]]:
    """Each run's epoch rows, in epoch order."""
    epochs: dict[int, list[sqlite3.Row]] = {}
    for e in store.epochs(run_ids) if run_ids else []:
        epochs.setdefault(e["run_id"], []).append(e)
    return epochs


def train_numbers(epochs: dict[int, list[sqlite3.Row]]) -> dict:
    """Training accuracy of each run's last epoch (dropout and augmentation on), mean ± std.

    Beside validation accuracy it tells over-fitting (train far above val) from under-fitting."""
    train_mean, train_std = mean_std(present(rows[-1]["train_acc"] for rows in epochs.values()))
    return {"train_mean": train_mean, "train_std": train_std}


CHANCE_MARGIN = 0.02  # a run whose best validation accuracy stays below chance + this never learned


def at_chance(runs: dict[int, sqlite3.Row], epochs: dict[int, list[sqlite3.Row]]) -> dict[int, float]:
    """{seed: best validation accuracy} of the runs that never rose above chance (1 / classes) in
    any epoch: a network that diverged or died at the start, which a mean ± std silently absorbs."""
    out = {}
    for seed, run in runs.items():
        best = max(present(e["val_acc"] for e in epochs.get(run["id"], [])), default=None)
        classes = len(json.loads(run["classes"])) if run["classes"] else 0
        if best is not None and classes and best < 1 / classes + CHANCE_MARGIN:
            out[seed] = best
    return out


def convergence_numbers(epochs: dict[int, list[sqlite3.Row]], run_ids: list[int], threshold: float) -> dict:
    """Epochs and seconds to the first epoch with val_acc >= threshold, over the seeds that get there."""
    hits = [h for h in (first_crossing(epochs.get(i, []), threshold) for i in run_ids) if h is not None]
    ep_mean, ep_std = mean_std(float(e) for e, _ in hits)
    s_mean, s_std = mean_std(s for _, s in hits)
    return {"epochs_to_threshold_mean": ep_mean, "epochs_to_threshold_std": ep_std,
            "seconds_to_threshold_mean": s_mean, "seconds_to_threshold_std": s_std,
            "threshold_reached": len(hits), "threshold_never": len(run_ids) - len(hits)}


def first_crossing(epochs: list[sqlite3.Row], threshold: float) -> tuple[int, float] | None:
    """(epoch, seconds spent up to and including it) of the first crossing; epochs in order."""
    seconds = []
    for e in epochs:
        seconds.append(e["seconds"] or 0.0)
        if e["val_acc"] is not None and e["val_acc"] >= threshold:
            return e["epoch"], math.fsum(seconds)
    return None


def present(xs) -> list[float]:
    return [x for x in xs if x is not None]


# ----------------------------------------------------------------------------- README

def write_report(store: Store, spec: StudySpec, out_dir: Path, command: str,
                 grids: dict[str, str] | None = None, features: dict | None = None) -> Path:
    """Write out_dir/README.md with its figures (two, plus two per group); returns the README's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(store, spec)
    rows = counted_rows(store, spec)
    plot_learning_curves(store, summary, out_dir / "learning_curves.png")
    bars = f"{spec.label}_accuracy.png"
    plot_accuracy(summary, out_dir / bars, spec.label)
    used = [r for runs in latest_done(rows).values() for r in runs.values()]
    lines = [f"# Study `{spec.name}`", "", *([spec.description, ""] if spec.description else []),
             "Regenerate this page (figures included) with:", "", "```", command, "```", "",
             "Every number on this page is read from the results database; only the targets "
             "(published figures) come from the study definition.", "",
             *(["**A selection study**: it exists to choose settings, so this page compares validation "
                "accuracy only and never reads the test set.", ""] if spec.selection else []),
             *results_table(spec, summary), "", *findings_section(store, spec, summary, out_dir), "## Figures", "",
             "![Learning curves: mean over seeds, band ±1 std](learning_curves.png)", "",
             f"![{spec.label.capitalize()} accuracy: mean over seeds, 95% CI]({bars})", "",
             *noise_figures(store, spec, summary, rows, out_dir),
             *pretraining_figure(store, summary, rows, out_dir), *features_section(features),
             *grid_section(grids or {}),
             *config_section(spec, summary), "", *provenance_section(used, rows, spec)]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return readme


def pretraining_figure(store: Store, summary: list[dict], rows: list[sqlite3.Row], out_dir: Path) -> list[str]:
    """SupCon runs: the pre-training loss (L_out) per epoch, apart from the probe's cross-entropy
    that follows it in the same run. Nothing when no experiment of the study is a SupCon one."""
    phases = {}
    for s in summary:
        cfg = experiment_config(rows, s["experiment"])
        if cfg is not None and cfg.train.method == "supcon" and s["run_ids"]:
            phases[s["experiment"]] = int(cfg.train.epochs)
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


def features_section(features: dict | None) -> list[str]:
    """`report --features`: the test images' features of each variant's lowest-seed run, projected."""
    if not features:
        return []
    lines = ["## Features", "", "The test images' features (`features(x)`; for SupCon the encoder's, below the "
             "projection head) of each variant's lowest-seed run, projected on their first two principal "
             "components (PCA, computed per run; `cifarlab show features`), coloured by class.", "",
             f"![Test features on their first two principal components, one panel per run]({features['file']})", ""]
    if features["missing"]:
        lines += ["Not drawn (no run directory with a checkpoint on the machine that wrote this page): "
                  + ", ".join(f"`{n}`" for n in features["missing"]) + ".", ""]
    return lines


def grid_section(grids: dict[str, str]) -> list[str]:
    """What each variant's augmentation does: a few training images (one per class) and draws."""
    if not grids:
        return []
    lines = ["## Augmentations", "", "Each variant's pipeline on the first training image of four classes: the "
             "original, then four draws (`cifarlab show augment`).", ""]
    for name, file in grids.items():
        lines += [f"### `{name}`", "", f"![{name}: augmented draws]({file})", ""]
    return lines


def target_lines(spec: StudySpec, summary: list[dict]) -> list[str]:
    """Each experiment's distance to its published figure: mean minus target, in points."""
    gaps = [f"`{s['experiment']}` {signed_pct(s['score_mean'] - s['target'])} (n={s['n']})"
            for s in summary if s["target"] is not None and s["n"]]
    return ["", f"Against the published figures (mean {spec.label} accuracy minus the target, in points): "
            + ", ".join(gaps) + "."] if gaps else []


def results_table(spec: StudySpec, summary: list[dict]) -> list[str]:
    lines = ["## Results", "",
             f"Accuracies in %; Δ is the mean over common seeds of (experiment − `{spec.reference}`) "
             "in percentage points, with its paired 95% t-interval. Intervals are clipped to what the metric "
             "can take (0 to 100 %, a difference -100 to +100 points). Where a variant has runs that ended "
             "early or never left chance, its mean is followed by the median over its seeds.", ""]
    if spec.convergence is not None:
        lines += [f"Epochs to val ≥ {threshold_label(spec)}: the first epoch whose validation accuracy reaches "
                  "it, mean ± std over the seeds that do (the others are counted as never reaching it); "
                  "s: training + validation seconds up to and including that epoch.", ""]
    lines += table_lines(spec, summary, "reference")
    notes = [f"- `{s['experiment']}`: {s['note']}" for s in summary if s["note"]]
    stopped = [f"- `{s['experiment']}` seed {seed}: {why}; the statistics include it, with the accuracies of "
               "the model it ended with." for s in summary for seed, why in s["stopped"].items()]
    chance = [f"- `{s['experiment']}` seed {seed}: best validation accuracy {pct(best)} %" for s in summary
              for seed, best in s["at_chance"].items()]
    return (lines + ([""] + notes if notes else []) + target_lines(spec, summary)
            + (["", "Runs that ended early:", "", *stopped] if stopped else [])
            + (["", f"Runs that never rose above chance: their best validation accuracy over all epochs stayed "
                f"within {100 * CHANCE_MARGIN:g} points of 1 / classes (the network diverged or died at the start); "
                "the mean and the interval include them, the median beside the mean describes the typical run:",
                "", *chance] if chance else []))


def table_lines(spec: StudySpec, summary: list[dict], against: str) -> list[str]:
    """The results table; `against` names what the Δ column compares with."""
    header = ["experiment", "n", f"{spec.label} acc mean ± std", "95% CI", f"Δ vs {against} (paired, 95% CI)",
              "target", *([] if spec.selection else ["val acc"]), "train acc, last epoch", "wall s/run", "img/s", "parameters"]
    top5 = shows_top5(summary)
    if top5:
        header.insert(3, f"{spec.label} top-5 acc")
    if spec.convergence is not None:
        header += [f"epochs to val ≥ {threshold_label(spec)}", f"s to val ≥ {threshold_label(spec)}"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for s in summary:
        cells = table_cells(s, with_val=not spec.selection)
        if top5:
            cells.insert(3, pm(s["top5_mean"], s["top5_std"]) if s.get("top5_n") else DASH)
        cells += convergence_cells(s) if spec.convergence is not None else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def threshold_label(spec: StudySpec) -> str:
    return f"{100 * spec.convergence:g}%"


def table_cells(s: dict, with_val: bool = True) -> list[str]:
    val = [pm(s["val_mean"], s["val_std"]) if s["n"] else DASH] if with_val else []
    if s["n"] == 0:
        return [f"`{s['experiment']}`", "0", DASH, DASH, DASH, pct(s["target"]), *val, DASH, DASH, DASH, DASH]
    if s["reference"]:
        delta = "reference"
    elif s["diff_n"] == 0:
        delta = "no common seeds"
    else:
        delta = f"{signed_pct(s['diff_mean'])} {interval(s['diff_lo'], s['diff_hi'], signed=True)} (n={s['diff_n']})"
    mean = pm(s["score_mean"], s["score_std"])
    if s.get("at_chance") or s["stopped"]:  # a bimodal set: the mean alone describes no run
        mean += f" (median {pct(s['score_median'])})"
    return [f"`{s['experiment']}`", str(s["n"]), mean,
            interval(s["score_lo"], s["score_hi"]), delta, pct(s["target"]),
            *val, pm(s["train_mean"], s["train_std"]), number(s["wall_mean"], 0), number(s["images_per_s_mean"], 0),
            number(s["parameters"], 0)]


def convergence_cells(s: dict) -> list[str]:
    reached, never = s["threshold_reached"], s["threshold_never"]
    if reached == 0:
        return [f"never ({never} of {never})" if never else DASH, DASH]
    epochs = pm_number(s["epochs_to_threshold_mean"], s["epochs_to_threshold_std"], 1)
    if never:
        epochs += f"; {never} of {reached + never} never reached"
    return [epochs, pm_number(s["seconds_to_threshold_mean"], s["seconds_to_threshold_std"], 0)]


# ----------------------------------------------------------------------------- findings

def findings_section(store: Store, spec: StudySpec, summary: list[dict], out_dir: Path) -> list[str]:
    """One subsection per declared group: its question, table, figures and a generated finding."""
    if not spec.questions:
        return []
    by_exp = {s["experiment"]: s for s in summary}
    lines = ["## Findings", "",
             "Each group answers one question. Its table compares every experiment with the group's "
             "baseline (listed first); the finding names the best experiment of the group and says whether "
             "its paired 95% CI against the baseline excludes 0.", ""]
    for group in spec.questions:
        lines += group_section(store, spec, by_exp, group, out_dir)
    return lines


def group_section(store: Store, spec: StudySpec, by_exp: dict[str, dict], group: str, out_dir: Path) -> list[str]:
    names = spec.members(group)
    base = by_exp[names[0]]
    rows = [versus(by_exp[e], base) for e in names]
    plot_accuracy(rows, out_dir / f"group_{group}.png", spec.label,
                  f"{group}: {spec.label} accuracy, mean over seeds, 95% CI")
    plot_val_curves(store, rows, out_dir / f"curves_{group}.png", spec.convergence, group)
    borrowed = [f"`{e}` (group `{spec.groups[e]}`)" if spec.groups.get(e) else f"`{e}`"
                for e in spec.also.get(group, ()) if e != names[0]]
    return [f"### `{group}`", "", f"**Question.** {spec.questions[group]}", "",
            *table_lines(spec, rows, f"`{base['experiment']}`"), "",
            *([f"Shown here from other groups: {', '.join(borrowed)}.", ""] if borrowed else []),
            f"![{group}: {spec.label} accuracy, mean over seeds, 95% CI](group_{group}.png)", "",
            f"![{group}: validation accuracy per epoch, mean over seeds, band ±1 std](curves_{group}.png)", "",
            f"**Finding.** {finding(rows)}", "",
            *([f"**Convergence.** {speed_finding(rows, threshold_label(spec))}", ""]
              if spec.convergence is not None else [])]


def versus(s: dict, base: dict) -> dict:
    """A copy of the summary row whose Δ is against the group's baseline instead of the study's reference."""
    return {**s, "reference": s is base, **diff_numbers(s["score_by_seed"], base["score_by_seed"])}


def finding(rows: list[dict]) -> str:
    """One sentence on the group's best experiment; rows[0] is the baseline, every number from `rows`."""
    base, ran = rows[0], [s for s in rows if s["n"] > 0]
    if not ran:
        return "No finished runs yet."
    best = max(ran, key=lambda s: s["score_mean"])  # ties: the first in table order
    head = f"Best in this group: `{best['experiment']}` at {pm(best['score_mean'], best['score_std'])} % (n={best['n']})"
    if best is base:
        others = [s for s in ran if s is not base]
        if not others:
            return f"{head}, the baseline; no other experiment of the group has finished runs yet."
        runner_up = max(others, key=lambda s: s["score_mean"])
        return (f"{head}, the baseline itself; the runner-up `{runner_up['experiment']}` "
                + comparison(runner_up, base, "differs from it by"))
    if base["n"] == 0:
        return f"{head}; the baseline `{base['experiment']}` has no finished runs yet, so there is no comparison."
    return f"{head}; against the baseline `{base['experiment']}` it " + comparison(best, base, "differs by")


def speed_finding(rows: list[dict], threshold: str) -> str:
    """One sentence on how fast the group reaches the convergence threshold; rows[0] is the baseline.

    Only experiments whose every finished seed reached the threshold compete for "fastest": a mean
    over the seeds that got there would flatter an experiment that often never does."""
    base, ran = rows[0], [s for s in rows if s["n"] > 0]
    if not ran:
        return "No finished runs yet."
    always = [s for s in ran if s["threshold_never"] == 0]
    partly = [s for s in ran if s["threshold_never"] > 0]
    if always:
        fast = min(always, key=lambda s: s["epochs_to_threshold_mean"])  # ties: the first in table order
        said = f"Fastest to val ≥ {threshold} in every seed: `{fast['experiment']}`, {epochs_taken(fast)}"
        if fast is base:
            said += " (the baseline itself)"
        elif base["n"] == 0:
            said += f"; the baseline `{base['experiment']}` has no finished runs yet"
        elif base["threshold_never"] == 0:
            said += f"; the baseline `{base['experiment']}` takes {epochs_taken(base)}"
        said += "."
    else:
        said = f"No experiment of the group reached val ≥ {threshold} in every seed."
    if partly:
        said += " Not in every seed: " + ", ".join(
            f"`{s['experiment']}` ({s['threshold_reached']} of {s['n']})" for s in partly) + "."
    return said


def epochs_taken(s: dict) -> str:
    return (f"{pm_number(s['epochs_to_threshold_mean'], s['epochs_to_threshold_std'], 1)} epochs "
            f"({pm_number(s['seconds_to_threshold_mean'], s['seconds_to_threshold_std'], 0)} s)")


def comparison(s: dict, base: dict, differs: str) -> str:
    """The end of the finding: the paired difference and whether seed noise could explain it."""
    if s["diff_n"] == 0:
        return f"shares no seed with `{base['experiment']}` yet, so there is no paired comparison."
    said = f"{differs} {signed_pct(s['diff_mean'])} points"
    if s["diff_n"] < 2:
        return f"{said} on 1 common seed: too few seeds to say whether that is more than seed noise."
    verdict = "is" if s["diff_lo"] > 0 or s["diff_hi"] < 0 else "is not"
    return (f"{said}, paired 95% CI {interval(s['diff_lo'], s['diff_hi'], signed=True)} over {s['diff_n']} "
            f"common seeds, so the difference {verdict} distinguishable from seed noise at this n.")


def config_section(spec: StudySpec, summary: list[dict]) -> list[str]:
    lines = ["## Config differences from the reference", "",
             f"Settings of each experiment that differ from `{spec.reference}` "
             "(`section.key: reference -> value`).", ""]
    for s in summary:
        if s["reference"]:
            continue
        lines += [f"### `{s['experiment']}`", ""]
        if s["registered"] == 0:
            lines.append("- (no runs recorded)")
        elif s["config_diff"] is None:
            lines.append("- (cannot compare: the reference has no runs, or a config has keys this cifarlab lacks)")
        elif not s["config_diff"]:
            lines.append("- (same settings as the reference)")
        else:
            lines += [f"- `{k}: {C.toml_value(a)} -> {C.toml_value(b)}`" for k, (a, b) in s["config_diff"].items()]
        lines.append("")
    return lines[:-1]


def provenance_section(used: list[sqlite3.Row], rows: list[sqlite3.Row], spec: StudySpec) -> list[str]:
    """Where the counted numbers came from, and how far the study has got."""
    commits = unique(f"{r['git_commit'] or 'unknown'}{' (dirty)' if r['git_dirty'] else ''}" for r in used)
    torches = unique(json.loads(r["versions"]).get("torch") for r in used if r["versions"])
    machines = unique(r["machine"] for r in used)
    wall = math.fsum(present(r["wall_seconds"] for r in used))
    counts = Counter(r["status"] for r in rows)
    planned = len(spec.experiments) * len(spec.seeds)
    registered = len({(r["experiment"], r["seed"]) for r in rows if r["seed"] in spec.seeds})
    not_started = f", not started {planned - registered}" if spec.seeds else ""
    return ["## Provenance", "",
            f"- git commits: {listing(commits)}",
            f"- machines: {listing(machines)}",
            f"- runtimes (device, precision, layout, threads): "
            f"{listing(unique(r['runtime'] or 'unrecorded' for r in used)) if used else 'none'}",
            f"- torch versions: {listing(torches)}",
            f"- total training wall time of this study on {listing(machines) if machines else 'unrecorded machines'}: "
            f"{hours_minutes(wall)} over {len(used)} runs ({wall / 3600:.2f} process-hours, summed over the "
            "counted runs; runs trained side by side by `study run --workers N` overlap, so the study's "
            "elapsed time is shorter)",
            "- run status: " + ", ".join(f"{st} {counts.get(st, 0)}" for st in STATUSES) + not_started]


def hours_minutes(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min"


def unique(xs) -> list[str]:
    return sorted({str(x) for x in xs if x is not None})


def listing(xs: list[str]) -> str:
    return ", ".join(f"`{x}`" for x in xs) if xs else DASH


def ok(x: Any) -> bool:
    return x is not None and not math.isnan(x)


def pct(x: Any) -> str:
    return f"{100 * x:.2f}" if ok(x) else DASH


def signed_pct(x: float) -> str:
    return f"{100 * x:+.2f}"


def pm(mean: float, std: float) -> str:
    if not ok(mean):
        return DASH
    return f"{pct(mean)} ± {pct(std)}" if ok(std) else pct(mean)


def pm_number(mean: float, std: float, digits: int) -> str:
    if not ok(mean):
        return DASH
    return f"{number(mean, digits)} ± {number(std, digits)}" if ok(std) else number(mean, digits)


def interval(lo: float, hi: float, signed: bool = False) -> str:
    if not (ok(lo) and ok(hi)):
        return "[n<2]" if signed else DASH
    f = signed_pct if signed else pct
    return f"[{f(lo)}, {f(hi)}]"


def number(x: Any, digits: int) -> str:
    return f"{x:,.{digits}f}" if ok(x) else DASH


# ----------------------------------------------------------------------------- figures

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
    """Under label noise: the memorisation curve (flipped training samples against their noisy and
    clean labels, clean validation accuracy), and the score against the noise rate per method when
    the study varies the rate. Nothing when no run recorded label noise."""
    lines = []
    per_exp = {s["experiment"]: noise_rows(store, s["run_ids"]) for s in summary}
    if any(r["flipped_acc_noisy"] is not None for rs in per_exp.values() for r in rs):
        plot_memorisation(summary, per_exp, out_dir / "memorisation.png")
        lines += ["![Memorisation: flipped training samples against their noisy and their clean labels, "
                  "and clean validation accuracy; mean over seeds, band ±1 std](memorisation.png)", ""]
    rates = {}
    for s in summary:
        cfg = experiment_config(rows, s["experiment"])
        if cfg is not None and s["n"]:
            method = f"{cfg.loss.name}" + ("" if cfg.train.method == "standard" else f" + {cfg.train.method}")
            rates.setdefault((cfg.data.noise if cfg.data.noise_rate else "none", method), []).append(
                (cfg.data.noise_rate, s))
    if len({rate for pts in rates.values() for rate, _ in pts}) > 1:
        plot_noise_rates(rates, out_dir / "noise_rates.png", spec.label)
        lines += [f"![{spec.label.capitalize()} accuracy against the noise rate, per noise type and method; "
                  "mean over seeds, 95% CI](noise_rates.png)", ""]
    return lines


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
        for i, ((kind, method), points) in enumerate(sorted(rates.items())):
            points = sorted(points, key=lambda p: p[0])
            x = [100 * r for r, _ in points]
            y = [100 * s["score_mean"] for _, s in points]
            err = [[100 * (s["score_mean"] - s["score_lo"]) if ok(s["score_lo"]) else 0 for _, s in points],
                   [100 * (s["score_hi"] - s["score_mean"]) if ok(s["score_hi"]) else 0 for _, s in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color(i), label=f"{method} ({kind})")
        ax.set_xlabel("noise rate (%)")
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


# ----------------------------------------------------------------------------- CSV

def export_csv(store: Store, out_dir: Path, study: str | None, current: dict[str, str] | None = None) -> list[Path]:
    """Write runs.csv and epochs.csv (one study, or all) to out_dir; returns their paths.

    With `current` (experiment -> the config hash its study file defines now), runs.csv gets a
    `current` column: 1 for the rows the study's report counts, 0 for superseded configs."""
    runs = store.runs(study)
    if study is not None and not runs:
        raise UserError(f"no runs recorded for study {study!r}; studies in the database: "
                        f"{', '.join(store.studies()) or '(none)'}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Column names from the table itself, so that an empty export still has its header.
    columns = [d[0] for d in store.conn.execute("SELECT * FROM runs LIMIT 0").description]
    return [write_runs_csv(runs, columns, out_dir / "runs.csv", current),
            write_epochs_csv(store, runs, out_dir / "epochs.csv")]


def write_runs_csv(runs: list[sqlite3.Row], all_columns: list[str], path: Path,
                   current: dict[str, str] | None = None) -> Path:
    versions = [json.loads(r["versions"]) if r["versions"] else {} for r in runs]
    version_keys = sorted({k for v in versions for k in v})
    columns = [c for c in all_columns if c != "versions"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns + ([] if current is None else ["current"]) + [f"version_{k}" for k in version_keys])
        for r, v in zip(runs, versions):
            now = [] if current is None else [int(current.get(r["experiment"]) == r["config_hash"])]
            w.writerow([r[c] for c in columns] + now + [v.get(k) for k in version_keys])
    return path


def write_epochs_csv(store: Store, runs: list[sqlite3.Row], path: Path) -> Path:
    by_id = {r["id"]: r for r in runs}
    epochs = store.epochs(sorted(by_id)) if by_id else []
    order = {rid: i for i, rid in enumerate(by_id)}  # the runs' own (study, experiment, seed, id) order
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["study", "experiment", "seed", "config_hash", "run_id", "epoch", *EPOCH_METRICS])
        for e in sorted(epochs, key=lambda e: (order[e["run_id"]], e["epoch"])):
            r = by_id[e["run_id"]]
            w.writerow([r["study"], r["experiment"], r["seed"], r["config_hash"], r["id"], e["epoch"],
                        *(e[m] for m in EPOCH_METRICS)])
    return path
