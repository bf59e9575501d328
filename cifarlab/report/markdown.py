"""The report's README: results table, findings per question, figures, configs and provenance."""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from cifarlab import config as C
from cifarlab.report import fair
from cifarlab.results.store import Store
from cifarlab.report.figures import (noise_figures, noise_method, plot_accuracy, plot_learning_curves,
                                     plot_val_curves, pretraining_figure)
from cifarlab.stats import CHANCE_MARGIN, mean_std
from cifarlab.report.summary import (DASH, STATUSES, StudySpec, counted_rows, diff_numbers,
                                     experiment_config, latest_done, noise_setting, ok, present, setting_name, shows_clean_val,
                                     shows_top5, summarize)


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
             *progress_lines(spec, summary),
             *(["**A selection study**: it exists to choose settings, so this page compares validation "
                "accuracy only; the test accuracy its runs record at their end is neither shown nor used "
                "for a choice.", ""] if spec.selection else []),
             *results_table(spec, summary), "", *noise_table(spec, summary, rows, store),
             *(fair.tuning_section(spec, summary, out_dir) if spec.fair else []),
             *findings_section(store, spec, summary, out_dir),
             *(fair.budget_section(spec, summary, out_dir) if spec.fair else []),
             *(fair.compute_section(store, spec, summary) if spec.fair else []), "## Figures", "",
             "![Learning curves: mean over seeds, band ±1 std](learning_curves.png)", "",
             f"![{spec.label.capitalize()} accuracy: mean over seeds, 95% CI]({bars})", "",
             *noise_figures(store, spec, summary, rows, out_dir),
             *pretraining_figure(store, summary, rows, out_dir), *phases_section(store, summary, rows),
             *features_section(features),
             *grid_section(grids or {}),
             *config_section(spec, summary), "", *provenance_section(used, rows, spec, tuning_rows(store, spec))]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return readme


def progress_lines(spec: StudySpec, summary: list[dict]) -> list[str]:
    """A study not yet complete says so before its first table: how many of its runs (and of its
    tuning runs) are done, and that its findings cover the finished runs only. Nothing once complete."""
    planned = sum(len(spec.planned(e)) for e in spec.experiments)
    done = sum(min(s["n"], len(spec.planned(s["experiment"]))) for s in summary)
    tune_planned = sum(t["runs"] for t in spec.tuning.values())
    tune_done = sum(n for t in spec.tuning.values() for _, _, n in t["scores"])
    if done >= planned and tune_done >= tune_planned:
        return []
    tuning = (f", and {tune_done} of {tune_planned} tuning runs so far (a grid that grows adds runs)"
              if tune_planned else "")
    return [f"**Not complete**: {done} of {planned} {'test runs' if tune_planned else 'runs'} done{tuning}. The "
            "tables and findings below cover the finished runs only; an arm or a seed still missing is not yet "
            "part of any answer.", ""]


NOISE_KINDS = {"none": "", "symmetric": "a flipped label is any other class",   # column order, and what each is
               "asymmetric": "the dataset's class map", "pairflip": "each class to the next",
               "noisy_labels": "the dataset's published noisy labels"}


def noise_table(spec: StudySpec, summary: list[dict], rows: list[sqlite3.Row], store: Store | None = None) -> list[str]:
    """Label-noise studies: the score per method (row) and noise setting (column), the layout of
    the literature's tables, with each method's targets (published figures) in a row beneath it.
    Nothing unless the study has more than one noise setting, or where two experiments share a
    method and a setting (the cell would be ambiguous; the results table has them all), or in a
    selection study (its validation accuracies are on each column's own noisy labels)."""
    if spec.selection:
        return []
    cells: dict[str, dict[tuple[str, float], dict]] = {}
    for s in summary:
        cfg = experiment_config(rows, s["experiment"])
        if cfg is None or not s["n"]:
            continue
        setting, method = noise_setting(cfg), noise_method(cfg)
        if setting in cells.setdefault(method, {}):
            return []
        cells[method][setting] = s
    settings = sorted({k for by in cells.values() for k in by}, key=lambda k: (list(NOISE_KINDS).index(k[0]), k[1]))
    if len(settings) < 2:
        return []
    full = max(s["n"] for by in cells.values() for s in by.values())

    def cell(s: dict | None) -> str:
        if s is None:
            return DASH
        return pm(s["score_mean"], s["score_std"]) + ("" if s["n"] == full else f" (n={s['n']})")
    names = [setting_name(k) for k in settings]
    lines = ["## By noise setting and method", "",
             f"{spec.label.capitalize()} accuracy in %, mean ± std over {full} seeds (fewer where a cell says so); "
             "rows are methods (loss, training method, early stopping), columns the training labels' noise ("
             + "; ".join(f"{kind}: {NOISE_KINDS[kind]}" for kind in dict.fromkeys(k for k, _ in settings)
                         if NOISE_KINDS[kind]) + "). A target row holds the published figures "
             "of the results table's notes.", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for method, by in cells.items():
        lines.append(f"| {method} | " + " | ".join(cell(by.get(k)) for k in settings) + " |")
        targets = [pct(by[k]["target"]) if k in by and ok(by[k].get("target")) else DASH for k in settings]
        if any(t != DASH for t in targets):
            lines.append(f"| {method}: target | " + " | ".join(targets) + " |")
    return lines + ["", *memorisation_table(store, cells, settings, rows)]


def memorisation_table(store: Store | None, cells: dict[str, dict[tuple, dict]], settings: list[tuple],
                       rows: list[sqlite3.Row]) -> list[str]:
    """Under label noise: how far each method's training memorised, per noise setting, in the noise
    table's layout: the flipped training samples' agreement with their noisy labels in the last
    epoch, mean over seeds. A method whose training another row already shows (early stopping tests
    cross-entropy's run at another epoch) is left out. Nothing without that curve."""
    from cifarlab.report.figures import noise_rows, training
    if store is None:
        return []
    names = {s["experiment"] for by in cells.values() for s in by.values()}
    configs = {e: experiment_config(rows, e) for e in names}
    table, seen = [], set()
    for method, by in cells.items():
        line, any_value = [], False
        for k in settings:
            s = by.get(k)
            if s is None or training(s["experiment"], configs) in seen:
                line.append(DASH)
                continue
            seen.add(training(s["experiment"], configs))
            last: dict[int, tuple[int, float]] = {}
            for r in noise_rows(store, s["run_ids"]):
                if r["flipped_acc_noisy"] is not None and r["epoch"] >= last.get(r["run_id"], (0, 0.0))[0]:
                    last[r["run_id"]] = (r["epoch"], r["flipped_acc_noisy"])
            values = [v for _, v in last.values()]
            if not values:
                line.append(DASH)
                continue
            any_value = True
            mean, std = mean_std(values)
            line.append(pm(mean, std) + ("" if len(values) == s["n"] else f" (n={len(values)})"))
        if any_value:
            table.append(f"| {method} | " + " | ".join(line) + " |")
    if not table:
        return []
    names_row = [setting_name(k) for k in settings]
    return ["Memorisation, in the same layout: the flipped training samples' agreement with their noisy labels "
            "in the last epoch, in %, mean ± std over seeds (a network that predicts each sample's true class "
            "scores 0 here, one that guesses at random about a tenth; a method that resists memorisation keeps it "
            "low). A row whose training another row shows "
            "(early stopping tests cross-entropy's run at its best epoch) has no cells of its own.", "",
            "| method | " + " | ".join(names_row) + " |", "|---|" + "---:|" * len(names_row), *table, ""]


PROBES = {"mlp": "MLP probe", "linear": "linear probe"}


def phases_section(store: Store, summary: list[dict], rows: list[sqlite3.Row]) -> list[str]:
    """Studies with SupCon variants: each variant's compute per phase (epochs, and the seconds its
    epochs took, mean over seeds), so that pre-training plus probe compares with end-to-end training."""
    from cifarlab.methods import pretrain_epochs
    table = []
    for s in summary:
        cfg = experiment_config(rows, s["experiment"])
        if cfg is None or not s["run_ids"]:
            continue
        first_phase = pretrain_epochs(cfg)   # a method of two phases (SupCon's): its first phase's epochs
        supcon = first_phase > 0
        per_run: dict[int, list[float]] = {}
        for r in store.epochs(s["run_ids"]):
            spent = per_run.setdefault(r["run_id"], [0.0, 0.0])
            spent[1 if supcon and r["epoch"] > first_phase else 0] += r["seconds"] or 0.0
        if not per_run:   # done runs that recorded no epochs: nothing to time
            continue
        first, second = (sum(x[i] for x in per_run.values()) / len(per_run) for i in (0, 1))
        table.append((s["experiment"], supcon, cfg, first, second))
    if not any(supcon for _, supcon, *_ in table):
        return []
    lines = ["## Compute per phase", "",
             "Epochs of each phase and the seconds they took (training and validation passes), mean over "
             "the variant's done runs; the results table's wall time adds setup and the test pass. A SupCon "
             "pre-training epoch forwards and backwards two views of each image. A run that took a sibling's "
             "pre-training (runs that differ only in their probe share one) shows that pre-training's epochs "
             "and seconds.", "",
             "| experiment | phase 1 | epochs | s | phase 2 | epochs | s | s in all |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for name, supcon, cfg, first, second in table:
        if supcon:
            lines.append(f"| `{name}` | SupCon pre-training (L_out) | {number(cfg.train.epochs, 0)} | "
                         f"{number(first, 0)} | {PROBES.get(cfg.supcon.probe, cfg.supcon.probe)} (frozen encoder) | "
                         f"{number(cfg.supcon.probe_epochs, 0)} | {number(second, 0)} | {number(first + second, 0)} |")
        else:
            loss = "cross-entropy" if cfg.loss.name == "ce" else cfg.loss.name
            lines.append(f"| `{name}` | {loss}, end to end | {number(cfg.train.epochs, 0)} | "
                         f"{number(first, 0)} | {DASH} | {DASH} | {DASH} | {number(first, 0)} |")
    return lines + [""]


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


def selected_line(s: dict) -> str:
    """Which epoch a best-validation experiment tested, per seed ("" for other experiments)."""
    picks = s["selected"]
    if not picks:
        return ""
    epochs = ", ".join(f"{picks[seed][0]} of {picks[seed][1]}" for seed in sorted(picks))
    return (f"epoch tested (first of best validation accuracy) {epochs} "
            f"(seed{'s' if len(picks) > 1 else ''} {', '.join(str(seed) for seed in sorted(picks))})")


def results_table(spec: StudySpec, summary: list[dict]) -> list[str]:
    lines = ["## Results", "",
             f"Accuracies in %; Δ is the mean over common seeds of (experiment − `{spec.reference}`) "
             "in percentage points, with its paired 95% t-interval. Intervals are clipped to what the metric "
             "can take (0 to 100 %, a difference -100 to +100 points). Where a variant has runs that ended "
             "early or never left chance, its mean is followed by the median over its seeds.", ""]
    if not spec.selection and shows_clean_val(summary):
        lines += ["Under label noise the validation split's labels are noisy too: `val acc (noisy labels)` is what "
                  "a user has, `val acc (clean labels)` what we know, both of the weights each run tested; for "
                  "an experiment without noise the two are the same.", ""]
    if spec.convergence is not None:
        lines += [f"Epochs to val ≥ {threshold_label(spec)}: the first epoch whose validation accuracy reaches "
                  "it, mean ± std over the seeds that do (the others are counted as never reaching it); "
                  "s: training + validation seconds up to and including that epoch.", ""]
    lines += table_lines(spec, summary, "reference")
    notes = [f"- `{s['experiment']}`: " + "; ".join(filter(None, (s["note"], selected_line(s))))
             for s in summary if s["note"] or s["selected"]]
    stopped = [f"- `{s['experiment']}` seed {seed}: {why}; the statistics include it, with the accuracies of "
               "the model it ended with." for s in summary for seed, why in s["stopped"].items()]
    chance = [f"- `{s['experiment']}` seed {seed}: " + (f"test accuracy {pct(best)} % (no validation split)"
                                                        if seed in s.get("chance_on_test", ()) else
                                                        f"best validation accuracy {pct(best)} %")
              for s in summary for seed, best in s["at_chance"].items()]
    return (lines + ([""] + notes if notes else []) + target_lines(spec, summary)
            + (["", "Runs that ended early:", "", *stopped] if stopped else [])
            + (["", "Runs that never rose above chance: their best validation accuracy "
                + ("(on the clean labels, where noisy) " if shows_clean_val(summary) else "") + "over all epochs "
                + ("(a run without a validation split: its test accuracy at the end) "
                   if any(s.get("chance_on_test") for s in summary) else "") + "stayed "
                f"within {100 * CHANCE_MARGIN:g} points of 1 / classes (the network diverged or died at the start); "
                "the mean and the interval include them, the median beside the mean describes the typical run:",
                "", *chance] if chance else []))


def table_lines(spec: StudySpec, summary: list[dict], against: str) -> list[str]:
    """The results table; `against` names what the Δ column compares with."""
    clean = not spec.selection and shows_clean_val(summary)   # label noise: the validation labels are noisy
    val = ["val acc (noisy labels)", "val acc (clean labels)"] if clean else ["val acc"]
    header = ["experiment", "n", f"{spec.label} acc mean ± std", "95% CI", f"Δ vs {against} (paired, 95% CI)",
              "target", *([] if spec.selection else val), "train acc, last epoch", "wall s/run", "img/s", "parameters"]
    top5 = shows_top5(summary)
    if top5:
        header.insert(3, f"{spec.label} top-5 acc")
    if spec.convergence is not None:
        header += [f"epochs to val ≥ {threshold_label(spec)}", f"s to val ≥ {threshold_label(spec)}"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for s in summary:
        cells = table_cells(s, with_val=not spec.selection)
        if clean:
            cells.insert(7, pm(s["val_clean_mean"], s["val_clean_std"]) if s.get("val_clean_n") else DASH)
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



def findings_section(store: Store, spec: StudySpec, summary: list[dict], out_dir: Path) -> list[str]:
    """One subsection per declared group: its question, table, figures and a generated finding."""
    if not spec.questions:
        return []
    by_exp = {s["experiment"]: s for s in summary}
    lines = ["## Findings", "",
             "Each group answers one question. Its table compares every experiment with the group's "
             "baseline (listed first); the finding names the best experiment of the group and says whether "
             "its paired 95% CI against the baseline excludes 0, then sorts the group's other experiments "
             "by the same test.", ""] if spec.correction == "none" else [
             "## Findings", "",
             "Each group answers one question. Its table compares every experiment with the group's baseline "
             "(listed first). The finding tests every other experiment against the baseline with a paired t-test "
             "over common seeds and applies Holm's correction within the group, so that the chance of calling any "
             "of its differences real when none is stays at 5 %; the CIs shown are the uncorrected paired 95% CIs. "
             "A variant some of whose seeds stayed at chance is reported as unstable and not compared; a difference "
             "not resolved says about how many seeds one of its size would need (80 % power).", ""]
    lines += more_seeds_said(spec)
    for group in spec.questions:
        lines += group_section(store, spec, by_exp, group, out_dir)
    return lines


def more_seeds_said(spec: StudySpec) -> list[str]:
    """The study's `more_seeds` rule and the experiments it has added seeds to so far."""
    if not spec.more_seeds:
        return []
    below, seeds = spec.more_seeds
    added = "; ".join(f"`{e}`" + (f" ({spec.added_why[e]})" if e in spec.added_why else "")
                      for e in spec.experiments if e in spec.added)
    return [f"More seeds where an effect is small (the study's `more_seeds` rule, fixed in its file): a comparison "
            f"whose validation-accuracy difference from its group's baseline, over the seeds both finished, is under "
            f"{below:g} points also trains seed(s) {', '.join(map(str, seeds))}, and so does the baseline; the test "
            "set plays no part in the decision, but validation and test accuracy move together, so a finding "
            "that includes added seeds was sampled adaptively (more seeds where its first look was small) and its "
            "p-value is somewhat optimistic. "
            + (f"Added so far to: {added}." if added else "No comparison has met it so far."), ""]


def group_section(store: Store, spec: StudySpec, by_exp: dict[str, dict], group: str, out_dir: Path) -> list[str]:
    names = spec.members(group)
    base = by_exp[names[0]]
    if not any(by_exp[e]["n"] for e in names):   # nothing finished: no empty table or blank figures
        return [f"### `{group}`", "", f"**Question.** {spec.questions[group]}", "",
                f"Its experiments, {', '.join(f'`{e}`' for e in names)}, have no finished run: no table or "
                "figures yet.", "", "**Finding.** No finished runs yet.", ""]
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
            *(fair.train_loss_figure(store, rows, out_dir, group) if spec.fair else []),
            f"**Finding.** {finding(rows) if spec.correction == 'none' else fair.finding_holm(rows)}", "",
            *([f"**Convergence.** {speed_finding(rows, threshold_label(spec))}", ""]
              if spec.convergence is not None else [])]


def versus(s: dict, base: dict) -> dict:
    """A copy of the summary row whose Δ is against the group's baseline instead of the study's reference."""
    return {**s, "reference": s is base, **diff_numbers(s["score_by_seed"], base["score_by_seed"])}


def finding(rows: list[dict]) -> str:
    """One sentence on the group's best experiment, and one on the rest against the baseline where
    the group has more; rows[0] is the baseline, every number from `rows`."""
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
                + comparison(runner_up, base, "differs from it by") + the_rest(ran, (base, runner_up)))
    if base["n"] == 0:
        return f"{head}; the baseline `{base['experiment']}` has no finished runs yet, so there is no comparison."
    return (f"{head}; against the baseline `{base['experiment']}` it " + comparison(best, base, "differs by")
            + the_rest(ran, (base, best)))


def the_rest(ran: list[dict], said: tuple[dict, ...]) -> str:
    """A sentence on the group's other experiments against its baseline (paired Δ and 95% CI, in
    table order), sorted by whether seed noise could explain the difference; "" if there are none."""
    rest = [s for s in ran if all(s is not t for t in said)]
    if not rest:
        return ""

    def delta(s: dict) -> str:
        return f"`{s['experiment']}` {signed_pct(s['diff_mean'])} {interval(s['diff_lo'], s['diff_hi'], signed=True)}"
    paired = [s for s in rest if s["diff_n"] >= 2]
    apart = [s for s in paired if distinguishable(s)]
    within = [s for s in paired if not distinguishable(s)]
    few = [f"`{s['experiment']}`" for s in rest if s["diff_n"] < 2]
    parts = [f"distinguishable from seed noise: {', '.join(map(delta, apart))}" if apart else "",
             f"not distinguishable: {', '.join(map(delta, within))}" if within else "",
             f"fewer than 2 common seeds: {', '.join(few)}" if few else ""]
    return " The others against the baseline (points, paired 95% CI): " + "; ".join(filter(None, parts)) + "."


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


def distinguishable(s: dict) -> bool:
    """Whether the paired 95% CI of the row's difference excludes 0."""
    return s["diff_lo"] > 0 or s["diff_hi"] < 0


def comparison(s: dict, base: dict, differs: str) -> str:
    """The end of the finding: the paired difference and whether seed noise could explain it."""
    if s["diff_n"] == 0:
        return f"shares no seed with `{base['experiment']}` yet, so there is no paired comparison."
    said = f"{differs} {signed_pct(s['diff_mean'])} points"
    if s["diff_n"] < 2:
        return f"{said} on 1 common seed: too few seeds to say whether that is more than seed noise."
    verdict = "is" if distinguishable(s) else "is not"
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


def tuning_rows(store: Store, spec: StudySpec) -> list[sqlite3.Row]:
    """The done runs of the tuned arms' grids (validation only; the tables do not count them)."""
    keys = {tuple(k) for t in spec.tuning.values() for k in t.get("run_keys", ())}
    return [r for r in store.runs(spec.name) if r["status"] == "done"
            and (r["experiment"], r["config_hash"], r["seed"]) in keys] if keys else []


def tuning_cost(tuned, used) -> tuple[float, float]:
    """(wall seconds of the tuning runs `tuned`, their share of theirs and the counted runs' `used`)."""
    tune, wall = (math.fsum(present(r["wall_seconds"] for r in rows)) for rows in (tuned, used))
    return tune, tune / (tune + wall) if tune > 0 else 0.0


def provenance_section(used: list[sqlite3.Row], rows: list[sqlite3.Row], spec: StudySpec,
                       tuned: list[sqlite3.Row] = ()) -> list[str]:
    """Where the counted numbers came from, and how far the study has got; with `tuned` (the done
    tuning runs), what choosing each arm's setting cost beside it."""
    commits = unique(f"{r['git_commit'] or 'unknown'}{' (dirty)' if r['git_dirty'] else ''}" for r in used)
    torches = unique(json.loads(r["versions"]).get("torch") for r in used if r["versions"])
    machines = unique(r["machine"] for r in used)
    wall = math.fsum(present(r["wall_seconds"] for r in used))
    tune, share = tuning_cost(tuned, used)
    counts = Counter(r["status"] for r in rows)
    planned = sum(len(spec.planned(e)) for e in spec.experiments)
    registered = len({(r["experiment"], r["seed"]) for r in rows if r["seed"] in spec.planned(r["experiment"])})
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
            *([f"- the tuning runs (validation only, not counted above) on {listing(unique(r['machine'] for r in tuned))}: "
               f"{hours_minutes(tune)} over {len(tuned)} "
               f"runs ({tune / 3600:.2f} process-hours); with them, {(wall + tune) / 3600:.2f} process-hours, "
               f"{100 * share:.0f} % of it choosing the arms' settings"] if tune > 0 else []),
            "- run status: " + ", ".join(f"{st} {counts.get(st, 0)}" for st in STATUSES) + not_started]


def hours_minutes(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min"


def unique(xs) -> list[str]:
    return sorted({str(x) for x in xs if x is not None})


def listing(xs: list[str]) -> str:
    return ", ".join(f"`{x}`" for x in xs) if xs else DASH


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
