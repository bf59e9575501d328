"""The report's sections for fair comparisons (studies that opt in with `tune`, `budgets`, `match`,
`correction` or per-group `seeds`; `cifarlab.study.fair`): each arm's tuning, findings corrected for
the number of comparisons in a group (Holm), unstable variants named as such, the seeds a difference
would need, each conclusion across budgets, and each arm's compute."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import matplotlib
from matplotlib import style
from matplotlib.figure import Figure

from cifarlab.report.figures import RC, color, save
from cifarlab.report.summary import DASH, StudySpec, diff_numbers, ok
from cifarlab.results.store import Store
from cifarlab.stats import NAN, holm, mean_std, paired_diff, paired_p, seedwise, seeds_needed

ALPHA = 0.05


# ----------------------------------------------------------------------------- tuning

def tuning_section(spec: StudySpec, summary: list[dict] | None = None, out_dir: Path | None = None) -> list[str]:
    """Each tuned arm's grid, the mean validation accuracy of every setting, and its choice, with its
    margin over the runner-up set beside the seed-to-seed noise of the arm's validation accuracy."""
    if not spec.tuning:
        return []
    lines = ["## Tuning: each arm's choice on the validation split", "",
             "Each tuned arm trained every setting of its grid on the tuning seeds (the test set never read: "
             "`train.test = false`) and took the one with the best mean validation accuracy; a best value at the "
             "edge of a numeric grid grew the grid one step past it first. The choice is recorded in the results "
             "database, and the arm's test runs below train at it. Below each choice, its margin over the runner-up "
             "is set beside the seed-to-seed noise of the arm's validation accuracy (the standard deviation over "
             "its test runs' seeds at the tuning length): a choice made on few seeds is clear only where the margin "
             "exceeds what a difference of two settings' means varies by.", ""]
    if out_dir is not None and tuning_figure(spec, out_dir / "tuning.png"):
        lines += ["![Validation accuracy of each tuned arm against its setting, tuning seeds, the choice ringed]"
                  "(tuning.png)", ""]
    for arm, t in spec.tuning.items():
        lines += [f"### `{arm}`", "", "| setting | validation accuracy (%) | seeds |", "|---|---:|---:|"]
        chosen = t["chosen"]
        for text, acc, n in t["scores"]:
            mark = " **(chosen)**" if text == chosen else ""
            lines.append(f"| {text}{mark} | {100 * acc:.2f} | {n} |" if math.isfinite(acc) else f"| {text} | {DASH} | 0 |")
        lines += ["", f"Choice: {t['reason']}." if chosen is not None else
                  f"Not chosen yet: {sum(n for _, _, n in t['scores'])} of {t['runs']} tuning runs done (the grid may "
                  "still grow).", ""]
        said = margin(t, {s["experiment"]: s for s in summary or []})
        lines += [said, ""] if said else []
    return lines


CLEAR, SUGGESTIVE, WITHIN = "clear of the noise", "suggestive, not resolved", "within the noise"


MIN_NOISE_SEEDS = 3   # seeds at the tuning length before a std is trusted for a verdict


def margin_numbers(t: dict, by_exp: dict[str, dict]) -> dict | None:
    """The chosen setting's lead over the best other setting (points; negative where a recorded
    choice now scores below another) and, where the arm's runs at the tuning length (its test runs
    there: seeds of one config) give a seed-to-seed standard deviation of validation accuracy over
    at least MIN_NOISE_SEEDS seeds, the noise of a difference of two settings' means over the tuning
    seeds (std x sqrt(2/n), an upper bound: settings trained on one seed share its initialisation
    and data order, so their difference varies less), the lead in units of it and its verdict.
    None before a choice or with one setting scored."""
    scores = {text: acc for text, acc, n in t["scores"] if n and math.isfinite(acc)}
    if t["chosen"] is None or t["chosen"] not in scores or len(scores) < 2:
        return None
    runner = max((text for text in scores if text != t["chosen"]), key=lambda text: scores[text])
    out = {"runner": runner, "lead": 100 * (scores[t["chosen"]] - scores[runner]), "n_tune": len(t["seeds"])}
    if not t.get("twin"):
        return {**out, "why": "no test variant trains at the tuning length, so the seed-to-seed noise is not measured"}
    s = by_exp.get(t["twin"])
    if s is None or s.get("n", 0) < MIN_NOISE_SEEDS or not ok(s.get("val_std")) or s["val_std"] <= 0:
        return {**out, "why": f"the seed-to-seed noise is not known yet: fewer than {MIN_NOISE_SEEDS} seeds of "
                              f"`{t['twin']}` at the tuning length"}
    std = 100 * s["val_std"]
    noise = std * math.sqrt(2 / out["n_tune"])
    k = out["lead"] / noise
    return {**out, "std": std, "n": s["n"], "twin": s["experiment"], "noise": noise, "k": k,
            "verdict": WITHIN if k < 1 else SUGGESTIVE if k < 2 else CLEAR}


def margin(t: dict, by_exp: dict[str, dict]) -> str | None:
    """The tuning choice's margin over the runner-up against the seed-to-seed noise, in words:
    whether a choice made on few seeds is clear of the noise it was made in."""
    m = margin_numbers(t, by_exp)
    if m is None:
        return None
    said = f"Margin over the runner-up ({m['runner']}): {m['lead']:.2f} points"
    if m["lead"] < 0:
        said += " (the recorded choice stands, though this setting now scores higher)"
    if "k" not in m:
        return said + f" ({m['why']})."
    seeds = f"{m['n_tune']} seed" + ("s" if m["n_tune"] != 1 else "")
    verdict = {WITHIN: f"less than one: a choice on {seeds} cannot tell the two apart (on this evidence either "
                       "would do)", SUGGESTIVE: f"between one and two: {SUGGESTIVE}",
               CLEAR: f"more than two: {CLEAR}"}[m["verdict"]]
    return (said + f"; the arm's validation accuracy varies by {m['std']:.2f} points from seed to seed (std over the "
            f"{m['n']} seeds of `{m['twin']}`, the same length), so a difference of two settings' means over "
            f"{m['n_tune']} tuning seed(s) varies by at most about {m['noise']:.2f} (x √(2/{m['n_tune']}); less where "
            f"settings share a seed's initialisation and data order) and the margin is {m['k']:.1f} of that, {verdict}.")


def tuning_figure(spec: StudySpec, path: Path) -> bool:
    """Where every tuned arm chooses one numeric key (a rate), its validation accuracy against the
    value (log2 axis), one line per arm, the choice ringed: how flat each optimum is and where arms
    want different values. False (no figure) otherwise."""
    arms = {arm: t for arm, t in spec.tuning.items() if len(t.get("keys", ())) == 1 and t.get("values")}
    keys = {t["keys"][0] for t in arms.values()}
    if not arms or len(arms) != len(spec.tuning) or len(keys) != 1:
        return False
    key = keys.pop()
    if not all(isinstance(v[key], (int, float)) and not isinstance(v[key], bool) and v[key] > 0
               for t in arms.values() for v in t["values"]):
        return False
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        for i, (arm, t) in enumerate(arms.items()):
            pts = sorted((v[key], 100 * acc, text) for v, (text, acc, n) in zip(t["values"], t["scores"])
                         if n and math.isfinite(acc))
            if not pts:
                continue
            ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker="o", color=color(i), label=arm)
            ax.plot([x for x, _, text in pts if text == t["chosen"]], [y for _, y, text in pts if text == t["chosen"]],
                    "o", markersize=11, markerfacecolor="none", color=color(i))
        ax.set_xscale("log", base=2)
        ticks = sorted({v[key] for t in arms.values() for v in t["values"]})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_xlabel(f"{key} (log scale)")
        ax.set_ylabel("validation accuracy (%), tuning seeds")
        ax.set_title(f"{spec.name}: each arm's {key}, chosen on validation (ringed)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        save(fig, path)
    return True


# ----------------------------------------------------------------------------- corrected findings

def unstable(s: dict) -> str | None:
    """"2 of 3 seeds at chance" for a variant some of whose seeds never learned; None otherwise."""
    k = len(s.get("at_chance") or {})
    return f"{k} of {s['n']} seeds at chance" if k and s["n"] else None


def corrected(rows: list[dict]) -> list[dict]:
    """rows (the baseline first) with each comparison's paired p-value and Holm-adjusted p over the
    group's comparisons; unstable variants are left out of the family."""
    base = rows[0]
    ps = [paired_p(s["score_by_seed"], base["score_by_seed"]) if s is not base and s["n"] and not unstable(s)
          and not unstable(base) else NAN for s in rows]
    adjusted = holm(ps)
    return [{**s, "p": p, "p_holm": q} for s, p, q in zip(rows, ps, adjusted)]


def apart(s: dict) -> bool:
    return ok(s.get("p_holm")) and s["p_holm"] < ALPHA


def finding_holm(rows: list[dict]) -> str:
    """The group's finding with Holm-corrected verdicts: the best experiment, then every other
    against the baseline, unstable variants named and not compared, and for a difference not
    resolved, about how many seeds one of its size would need."""
    rows = corrected(rows)
    base, ran = rows[0], [s for s in rows if s["n"] > 0]
    if not ran:
        return "No finished runs yet."
    stable = [s for s in ran if not unstable(s)]
    best = max(stable or ran, key=lambda s: s["score_mean"])
    family = sum(1 for s in rows if ok(s["p"]))
    said = (f"Best in this group: `{best['experiment']}` at {pm(best)} % (n={best['n']})"
            + (", the baseline itself." if best is base else "."))
    if unstable(base):
        return said + (f" The baseline `{base['experiment']}` is unstable ({unstable(base)}; {pm(base)} %, median "
                       f"{100 * base['score_median']:.2f} %), so nothing is compared with it.")
    groups = {"distinguishable after Holm's correction": [], "not distinguishable": [], "fewer than 2 common seeds": [],
              "unstable, not compared": []}
    for s in ran:
        if s is base:
            continue
        if unstable(s):
            groups["unstable, not compared"].append(f"`{s['experiment']}` ({unstable(s)}; {pm(s)} %, median "
                                                    f"{100 * s['score_median']:.2f} %)")
        elif not ok(s["p"]):
            groups["fewer than 2 common seeds"].append(f"`{s['experiment']}`")
        elif apart(s):
            groups["distinguishable after Holm's correction"].append(f"{delta(s)} (p = {s['p_holm']:.3f})")
        else:
            need = seeds_for(s, base)
            groups["not distinguishable"].append(
                f"{delta(s)} (p = {s['p_holm']:.3f}; " +
                (f"about {need} seeds would resolve a difference this size)" if need else
                 "a difference this size is beyond reach of any practical number of seeds)"))
    parts = [f"{k}: {', '.join(v)}" for k, v in groups.items() if v]
    if parts:
        said += (f" Against the baseline `{base['experiment']}` (points, paired 95% CI; p Holm-adjusted over the "
                 f"group's {family} comparison(s)): " + "; ".join(parts) + ".")
    return said


def seeds_for(s: dict, base: dict) -> int | None:
    diffs = [s["score_by_seed"][k] - base["score_by_seed"][k] for k in sorted(set(s["score_by_seed"]) & set(base["score_by_seed"]))]
    mean, std = mean_std(diffs)
    return seeds_needed(mean, std)


def delta(s: dict) -> str:
    return f"`{s['experiment']}` {100 * s['diff_mean']:+.2f} {ci(s)}"


def ci(s: dict) -> str:
    return f"[{100 * s['diff_lo']:+.2f}, {100 * s['diff_hi']:+.2f}]" if ok(s["diff_lo"]) else "[n<2]"


def pm(s: dict) -> str:
    return f"{100 * s['score_mean']:.2f} ± {100 * s['score_std']:.2f}" if ok(s["score_std"]) else f"{100 * s['score_mean']:.2f}"


# ----------------------------------------------------------------------------- budgets

def budget_groups(spec: StudySpec) -> dict[str, list[tuple[str, str]]]:
    """Declared group (before expansion) -> [(expanded group, budget label)] in budget order."""
    labels = list(dict.fromkeys(label for _, label in spec.budgets.values()))
    out: dict[str, list[tuple[str, str]]] = {}
    for group in spec.questions:
        label = next((b for b in labels if group.endswith(f"-{b}")), None)
        if label is not None:
            out.setdefault(group[: -len(label) - 1], []).append((group, label))
    return out


def verdict(cells: list[tuple[str, dict | None]], holm_on: bool) -> str:
    """Whether a comparison's conclusion holds at every budget, flips, or is distinguishable only at some."""
    seen = [(label, s) for label, s in cells if s is not None and s["n"] and not unstable(s)]
    shaky = [label for label, s in cells if s is not None and s["n"] and unstable(s)]
    if shaky:   # some seeds at chance there: not compared at those budgets, the others judged alone
        rest = [(label, s) for label, s in cells if label not in shaky]
        return f"unstable at {', '.join(shaky)}" + (f"; at the other budget(s): {verdict(rest, holm_on)}" if rest else "")
    if not seen:
        return "no finished runs"
    if len(seen) < len(cells):
        return "not every budget has finished runs"

    def sig(s: dict) -> bool:
        return apart(s) if holm_on else (ok(s["diff_lo"]) and (s["diff_lo"] > 0 or s["diff_hi"] < 0))
    signs = {label: (1 if s["diff_mean"] > 0 else -1) for label, s in seen if sig(s)}
    if not signs:
        flips = len({s["diff_mean"] > 0 for _, s in seen}) > 1
        return "not distinguishable at any budget" + (" (its sign changes)" if flips else "")
    if len(set(signs.values())) > 1:
        order = ", ".join(f"{'+' if v > 0 else '-'} at {k}" for k, v in signs.items())
        return f"**flips**: distinguishable with opposite signs ({order})"
    sign = "better" if next(iter(signs.values())) > 0 else "worse"
    if len(signs) == len(seen):
        return f"holds at every budget ({sign})"
    return f"{sign}, distinguishable only at {', '.join(signs)}"


def budget_section(spec: StudySpec, summary: list[dict], out_dir: Path) -> list[str]:
    """Per declared group: accuracy against budget per arm (a figure) and, per comparison with the
    group's baseline, its paired difference at each budget and whether the conclusion holds."""
    groups = budget_groups(spec)
    if not groups:
        return []
    by_exp = {s["experiment"]: s for s in summary}
    holm_on = spec.correction == "holm"
    lines = ["## Across budgets", "",
             "Each arm trained at every budget with its schedule stretched (not truncated). For each comparison "
             "with the group's baseline: the paired difference at each budget (points, 95% CI"
             + ("; a * marks a difference distinguishable after Holm's correction" if holm_on else
                "; a * marks a CI that excludes 0") + "), how much it changed from the first budget to the last "
             "(the difference at the last minus the difference at the first, seed by seed over the seeds all four "
             "runs share, with its 95% CI, uncorrected, a † where it excludes 0: does the budget change the answer?), then whether the "
             "conclusion holds at every budget, flips sign, or is distinguishable only at some.", ""]
    for group, expanded in groups.items():
        labels = [label for _, label in expanded]
        table: dict[str, dict[str, dict]] = {}
        for name, label in expanded:
            members = spec_members(spec, name)
            rows = corrected([versus(by_exp[e], by_exp[members[0]]) for e in members])
            for s in rows:
                table.setdefault(spec.budgets[s["experiment"]][0], {})[label] = s
        arms = list(table)
        file = f"budgets_{group}.png"
        plot_budgets(table, labels, out_dir / file, f"{group}: {spec.label} accuracy against budget")
        base_arm = arms[0]
        several = len(labels) > 1
        lines += [f"### `{group}`", "", f"![{group}: accuracy against budget, mean and 95% CI]({file})", "",
                  "| arm | " + " | ".join(f"{spec.label} % at {b}" for b in labels) + " | "
                  + " | ".join(f"Δ at {b}" for b in labels)
                  + (f" | change of Δ, {labels[-1]} − {labels[0]}" if several else "") + " | conclusion |",
                  "|---|" + "---:|" * (2 * len(labels) + several) + "---|"]
        for arm in arms:
            cells = [(b, table[arm].get(b)) for b in labels]
            accs = [pm(s) if s is not None and s["n"] else DASH for _, s in cells]
            if arm == base_arm:
                lines.append(f"| `{arm}` (baseline) | " + " | ".join(accs) + " | "
                             + " | ".join(DASH for _ in labels + labels[:several]) + " | — |")
                continue
            deltas = [(f"{100 * s['diff_mean']:+.2f} {ci(s)}" + ("*" if (apart(s) if holm_on else excludes(s)) else "")
                       if s is not None and s["n"] and not unstable(s) else (unstable(s) if s is not None and s["n"] else DASH))
                      for _, s in cells]
            if several:
                deltas.append(change_cell(table[arm], table[base_arm], labels[0], labels[-1]))
            lines.append(f"| `{arm}` | " + " | ".join(accs) + " | " + " | ".join(deltas) + f" | {verdict(cells, holm_on)} |")
        lines.append("")
    return lines


def change_cell(arm: dict[str, dict], base: dict[str, dict], first: str, last: str) -> str:
    """(arm − baseline at `last`) − (arm − baseline at `first`), paired over the seeds all four share,
    with its 95% CI (a † where it excludes 0, uncorrected; the table's * means after Holm's
    correction): how much the budget moved the comparison."""
    rows = [arm.get(last), base.get(last), arm.get(first), base.get(first)]
    if any(r is None or not r["n"] for r in rows):
        return DASH
    a_last, b_last, a_first, b_first = (r["score_by_seed"] for r in rows)
    mean, lo, hi, n = paired_diff(seedwise(a_last, b_last), seedwise(a_first, b_first))
    if n < 2:
        return f"{100 * mean:+.2f} [n<2]" if n else DASH
    dagger = "†" if lo > 0 or hi < 0 else ""
    return f"{100 * mean:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]{dagger} (n={n})"


def excludes(s: dict) -> bool:
    return ok(s["diff_lo"]) and (s["diff_lo"] > 0 or s["diff_hi"] < 0)


def spec_members(spec: StudySpec, group: str) -> list[str]:
    return spec.members(group)


def versus(s: dict, base: dict) -> dict:
    return {**s, "reference": s is base, **diff_numbers(s["score_by_seed"], base["score_by_seed"])}


def plot_budgets(table: dict[str, dict[str, dict]], labels: list[str], path: Path, title: str) -> None:
    """Accuracy (mean, 95% CI) against the budget's epochs, one line per arm, log2 x axis."""
    xs = [float((b[1:] if b.startswith("x") else b[:-2]).replace("p", ".")) for b in labels]
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(6.5, 4.2))
        ax = fig.subplots()
        for i, (arm, cells) in enumerate(table.items()):
            pts = [(x, cells[b]) for x, b in zip(xs, labels) if b in cells and cells[b]["n"]]
            if not pts:
                continue
            mean = [100 * s["score_mean"] for _, s in pts]
            err = [[m - 100 * s["score_lo"] if ok(s["score_lo"]) else 0 for m, (_, s) in zip(mean, pts)],
                   [100 * s["score_hi"] - m if ok(s["score_hi"]) else 0 for m, (_, s) in zip(mean, pts)]]
            ax.errorbar([x for x, _ in pts], mean, yerr=err, marker="o", capsize=3, color=color(i), label=arm)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel("budget: epochs (log scale)" if not labels[0].startswith("x") else
                      "budget: multiple of each arm's schedule (log scale)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right")
        fig.tight_layout()
        save(fig, path)


# ----------------------------------------------------------------------------- training loss

def train_loss_figure(store: Store, rows: list[dict], out_dir: Path, group: str) -> list[str]:
    """The group's training loss per epoch (mean, band ±1 std): "does training become easier?".
    Where every arm takes the same optimizer steps per epoch, a top axis counts the steps."""
    from cifarlab.report.figures import draw_band, label_epochs
    file = f"train_loss_{group}.png"
    spe = steps_per_epoch(store, rows)
    with style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        for i, s in enumerate(rows):
            draw_band(ax, store.epochs(s["run_ids"]) if s["run_ids"] else [], s, "train_loss", 1, i)
        label_epochs(ax, "training loss")
        if spe is not None:
            top = ax.secondary_xaxis("top", functions=(lambda e: e * spe / 1000, lambda k: k * 1000 / spe))
            top.set_xlabel("optimizer steps (thousands)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right")
        fig.tight_layout()
        save(fig, out_dir / file)
    steps = "; top axis: optimizer steps" if spe is not None else ""
    return [f"![{group}: training loss per epoch, mean over seeds, band ±1 std{steps}]({file})", ""]


def steps_per_epoch(store: Store, rows: list[dict]) -> int | None:
    """The optimizer steps of one epoch, where every row's finished runs take the same number: the
    images an epoch draws (images seen / epochs) over the batch, the last batch short. None where
    they differ, or nothing records them."""
    from cifarlab.report.summary import experiment_config
    found = set()
    runs = store.runs()
    for s in rows:
        cfg = experiment_config(runs, s["experiment"]) if s["run_ids"] else None
        if cfg is None:
            continue
        metrics = store.run_metrics(s["run_ids"])
        epochs = Counter(e["run_id"] for e in store.epochs(s["run_ids"]))   # each run's epochs, one query
        for run_id in s["run_ids"]:
            seen = metrics.get(run_id, {}).get("images_seen")
            if epochs[run_id] and seen:
                found.add(math.ceil(seen / epochs[run_id] / cfg.train.batch_size))
    return found.pop() if len(found) == 1 else None


# ----------------------------------------------------------------------------- compute

def compute_section(store: Store, spec: StudySpec, summary: list[dict]) -> list[str]:
    """Each experiment's compute: epochs, images seen, training FLOPs and wall time, mean over seeds.
    The FLOP column's unit is the one that shows the table's largest count (`flop_unit`)."""
    rows = []
    for s in summary:
        extra = store.run_metrics(s["run_ids"]) if s["run_ids"] else {}
        flops = [m["train_flops"] for m in extra.values() if m.get("train_flops") is not None]
        seen = [m["images_seen"] for m in extra.values() if m.get("images_seen") is not None]
        epochs = [len(store.epochs([i])) for i in s["run_ids"]]
        rows.append((s, epochs, seen, flops))
    unit, scale = flop_unit(max((f for *_, flops in rows for f in flops), default=0.0))
    lines = ["## Compute", "",
             "Training compute per run, mean over the counted seeds: FLOPs are forward + backward of one image "
             "through the network, counted once per network and image size by `torch.utils.flop_counter`, times "
             "the images seen (co-teaching: two networks)"
             + ("; arms are matched by FLOPs at each budget (`match = \"flops\"`)" if spec.match == "flops" else "")
             + ".", "", f"| experiment | epochs | images seen | training {unit} | wall time (s) |", "|---|---:|---:|---:|---:|"]
    for s, epochs, seen, flops in rows:
        lines.append(f"| `{s['experiment']}` | {mean_or_dash(epochs, 1)} | {mean_or_dash(seen, 0)} | "
                     f"{mean_or_dash([f / scale for f in flops], 3)} | {mean_or_dash([s['wall_mean']] if ok(s['wall_mean']) else [], 0)} |")
    return lines + [""]


def flop_unit(largest: float) -> tuple[str, float]:
    """The unit of a column of FLOP counts whose largest is `largest` (`flops.unit`; PFLOP for a
    column of none)."""
    from cifarlab.flops import unit
    return unit(largest) if largest else ("PFLOP", 1e15)


def mean_or_dash(xs: list[float], digits: int) -> str:
    return f"{mean_std(xs)[0]:,.{digits}f}" if xs else DASH
