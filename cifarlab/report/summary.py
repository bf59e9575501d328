"""What a report says, as numbers: the study's spec, the runs it counts, and per experiment the
mean, spread, confidence intervals and paired differences, read only from the results database."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cifarlab import config as C
from cifarlab.errors import ConfigError, UserError
from cifarlab.results.store import Store
from cifarlab.stats import NAN, best_epoch, ci95, mean_std, near_chance, paired_diff

STATUSES = ("done", "running", "pending", "failed")
DASH = "—"


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
    seeds_of: dict[str, tuple[int, ...]] = field(default_factory=dict)  # experiment -> its own seeds, where not the study's
    budgets: dict[str, tuple[str, str]] = field(default_factory=dict)  # experiment -> (arm, budget label), several budgets
    correction: str = "none"            # none | holm: Holm-corrected findings with unstable seeds and seeds needed
    tuning: dict[str, dict] = field(default_factory=dict)  # arm -> its grid's scores and choice (`study.plan.study_spec`)
    match: str = "epochs"               # epochs | flops: what a study's arms have equal of
    more_seeds: tuple[float, tuple[int, ...]] | None = None  # (below, seeds) of the study's `more_seeds` rule
    added: dict[str, tuple[int, ...]] = field(default_factory=dict)  # experiment -> the seeds the rule added so far
    added_why: dict[str, str] = field(default_factory=dict)  # experiment -> the validation difference that added them

    @property
    def fair(self) -> bool:
        """Whether the study uses the fair-comparison keys: its report then adds their sections."""
        return bool(self.budgets or self.tuning or self.seeds_of or self.correction != "none" or self.match != "epochs"
                    or self.more_seeds)

    def planned(self, experiment: str) -> tuple[int, ...]:
        return self.seeds_of.get(experiment, self.seeds)

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
    """Rows of the spec's experiments; rows of superseded configs are left out when hashes are given,
    and rows of seeds the study does not plan (its seeds, a variant's own, those `more_seeds` added)
    when its seeds are known: another study file of the same name may have added runs to the database."""
    wanted = set(spec.experiments)

    def planned(r) -> bool:
        return not spec.seeds or r["seed"] in spec.planned(r["experiment"]) or r["seed"] in spec.added.get(r["experiment"], ())
    return [r for r in store.runs(spec.name) if r["experiment"] in wanted and planned(r)
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
        return C.from_dict(json.loads(mine[0]["config"]), recorded=True)
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
        runs, cfg = done.get(exp, {}), experiment_config(rows, exp)
        out.append({"experiment": exp, "note": spec.notes.get(exp, ""), "reference": exp == spec.reference,
                    "group": spec.groups.get(exp, ""), "registered": sum(r["experiment"] == exp for r in rows),
                    **run_numbers(runs, ref_score, spec.metric), "target": spec.targets.get(exp),
                    "config_diff": config_diff(ref_cfg, cfg), "parameters": parameter_count(rows, exp)})
        epochs = epochs_by_run(store, out[-1]["run_ids"])
        selected = selected_epochs(cfg, runs, epochs)
        clean = clean_val_by_run(store, runs)
        on_test: set[int] = set()
        out[-1].update(train_numbers(epochs), at_chance=at_chance(runs, epochs, clean, on_test), chance_on_test=on_test,
                       selected=selected,
                       **top5_numbers(store, runs, spec.metric), **clean_val_numbers(cfg, runs, epochs, selected, clean))
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


def noise_setting(cfg) -> tuple[str, float]:
    """(noise type, rate) of a run's training labels: drawn noise, or Imagenette's published noisy
    labels ("noisy_labels"), whose rate the CSV column names (noisy_labels_25: 25 %); ("none", 0)
    when clean."""
    if cfg.data.label_column != "noisy_labels_0":
        return "noisy_labels", int(cfg.data.label_column.rsplit("_", 1)[1]) / 100
    return (cfg.data.noise if cfg.data.noise_rate else "none"), cfg.data.noise_rate


def setting_name(setting: tuple[str, float]) -> str:
    """A noise setting as the reports name it: "clean", "symmetric 40 %"."""
    kind, rate = setting
    return "clean" if kind == "none" else f"{kind} {100 * rate:g} %"


def clean_val_by_run(store: Store, runs: dict[int, sqlite3.Row]) -> dict[int, dict[int, float]]:
    """{run id: {epoch: validation accuracy on the clean labels}}, recorded under label noise only."""
    return {run["id"]: {epoch: value for epoch, name, value in store.epoch_metrics(run["id"])
                        if name == "val_acc_clean"} for run in runs.values()}


def clean_val_numbers(cfg: C.ExperimentConfig | None, runs: dict[int, sqlite3.Row],
                      epochs: dict[int, list[sqlite3.Row]], selected: dict[int, tuple[int, int]],
                      clean_by_run: dict[int, dict[int, float]]) -> dict:
    """Validation accuracy on the clean labels of the weights each run tested (its selected epoch,
    else its last): beside the noisy validation accuracy a user would have, what we know. Under
    label noise (its config says so, or its runs recorded clean-label accuracy) it is read from the
    epoch metrics, so a run's tested epoch counts even where its final record kept the last epoch's
    value; without noise it is the validation accuracy."""
    noisy = ((cfg is not None and noise_setting(cfg)[0] != "none")
             or any(clean_by_run.get(run["id"]) for run in runs.values()))
    values = []
    for seed, run in runs.items():
        if not noisy:
            values += present([run["val_acc"]])
            continue
        last = epochs[run["id"]][-1]["epoch"] if epochs.get(run["id"]) else None
        tested = selected[seed][0] if seed in selected else last
        clean = clean_by_run.get(run["id"], {})
        if tested in clean:
            values.append(clean[tested])
    mean, std = mean_std(values) if values else (NAN, NAN)
    return {"val_clean_mean": mean, "val_clean_std": std, "val_clean_n": len(values), "noisy_labels": noisy}


def shows_clean_val(summary: list[dict]) -> bool:
    """Whether any experiment trained and validated on noisy labels and recorded its clean accuracy."""
    return any(s.get("noisy_labels") and s["val_clean_n"] for s in summary)


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


def selected_epochs(cfg: C.ExperimentConfig | None, runs: dict[int, sqlite3.Row],
                    epochs: dict[int, list[sqlite3.Row]]) -> dict[int, tuple[int, int]]:
    """{seed: (epoch tested, epochs trained)} of an experiment that tests its best-validation
    weights (`train.select = best_val`), by the rule training applies; a run that diverged tests its
    last epoch (the seed is left out: `stopped` reports it). Empty for any other experiment."""
    if cfg is None or cfg.train.select != "best_val":
        return {}
    out = {}
    for seed, run in runs.items():
        rows = [dict(e) for e in epochs.get(run["id"], [])]
        best = best_epoch(rows)
        if rows and best is not None and not (run["stopped"] or "").startswith("diverged"):
            out[seed] = (best, len(rows))
    return out


def at_chance(runs: dict[int, sqlite3.Row], epochs: dict[int, list[sqlite3.Row]],
              clean_by_run: dict[int, dict[int, float]] | None = None, on_test: set[int] | None = None) -> dict[int, float]:
    """{seed: best validation accuracy} of the runs that never rose above chance (1 / classes) in
    any epoch: a network that diverged or died at the start, which a mean ± std silently absorbs.
    Under label noise the clean labels' accuracy counts: on noisy labels a network that learned
    stays near chance (at 80 % symmetric noise, 45 % on the clean labels is 13 % on the noisy).
    A run that held out no validation split is judged on its test accuracy at the end (its seed
    goes into `on_test`)."""
    out = {}
    for seed, run in runs.items():
        clean = (clean_by_run or {}).get(run["id"], {})
        best = max(present(clean.get(e["epoch"], e["val_acc"]) for e in epochs.get(run["id"], [])), default=None)
        if best is None and "test_acc" in run.keys() and run["test_acc"] is not None:
            best = run["test_acc"]
            if on_test is not None:
                on_test.add(seed)
        classes = len(json.loads(run["classes"])) if run["classes"] else 0
        if best is not None and near_chance(best, classes):
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


def ok(x: Any) -> bool:
    return x is not None and not math.isnan(x)
