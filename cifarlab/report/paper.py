"""The project report, generated: prose written by hand, every number read from the results.

`cifarlab paper` reads a Markdown source (docs/REPORT.src.md) whose sentences cite results by
reference instead of typing numbers, and writes the Markdown report (docs/REPORT.md) and one
self-contained HTML file (docs/REPORT.html, figures embedded as base64 PNG). Rewriting the report
after a study gains runs is a rerun of the command; a sentence whose claim the data no longer
support stops the build. The same source, databases and figures give the same two files, byte for
byte.

References (double braces; STUDY is a folder under results/, which holds its `results.db`, and
its study file is studies/<name>.toml for the study the database holds; VARIANT is one of the
study's variants, as its report names them):

    {{STUDY/VARIANT}}               the study's metric (test accuracy; validation in a selection
                                    study) over the variant's done seeds: "91.51 ± 0.19 % (n = 3)"
    {{STUDY/VARIANT:FIELD}}         test_acc | val_acc | val_acc_max (best epoch) | train_acc, flipped_acc_noisy,
                                    flipped_acc_clean, val_acc_clean (last epoch) | test_top5 |
                                    val_top5 as above; n (done seeds); wall (mean seconds per run);
                                    params (parameters of its network); target (the study's published
                                    figure); target_diff (mean minus target, points); at_chance ("2 of 3
                                    seeds": runs that never left chance accuracy); epochs_to (epochs
                                    until validation first reaches the study's `convergence`
                                    threshold) and convergence (that threshold: "70 %"); or a config key
                                    of its runs, e.g. train.epochs, optim.lr, model.widths; a config
                                    key ending in % is printed as a percentage (data.noise_rate%: "40 %")
    {{delta STUDY A B}}             paired mean difference A - B over the seeds both have, in points,
    {{delta STUDY A B:FIELD}}       with its 95 % t-interval: "+0.74 points, 95 % CI [+0.70, +0.78], n = 3"
    {{delta STUDY A - B vs C - D}}  how much a difference changed (A - B) - (C - D), paired over the
                                    seeds all four share, with its interval: one comparison at two
                                    budgets, e.g. "resnet20-20ep - plain20-20ep vs resnet20-5ep - plain20-5ep"
    {{claim STUDY: A > B}}          a claim checked against that interval: `>` holds when the interval
    {{claim STUDY:FIELD: A < B}}    lies above 0, `<` below 0, `~` (not distinguishable) when it holds
    {{claim STUDY: A - B < C - D}}  0; it prints the evidence, as delta does. A claim the data do not
                                    support stops the build with one line naming the file, line and
                                    sentence (exit 2); so does one with fewer than 2 common seeds.
    {{claim S: A > B after holm over A, C}}  the same, Holm-corrected over the comparisons of each
                                    named variant with B (a study whose file corrects nothing)
    {{fig STUDY/FILE.png}}          (alone on a line) the study's committed figure results/STUDY/FILE.png:
                                    linked from the Markdown, embedded in the HTML
    {{table STUDY: A, B, C}}        (alone on a line) a table of the variants: n, the metric (or
    {{table STUDY:FIELD: A, B}}     FIELD), the paired difference with A, the published figure, the note
    {{study STUDY}}                 a link to the study's own report, results/STUDY/README.md
    {{runs STUDY}}                  "51 of 60 runs": done runs the report counts, of those it plans
    {{hours STUDY}}                 "8.4 process-hours": the wall time of those runs, summed
    {{machines STUDY}}              the machines those runs trained on, as their reports name them
    {{tuning STUDY}}                "2.6 process-hours over 19 tuning runs, 20 % of the study's": what
                                    choosing a tuned study's settings on validation cost, beside its runs
    {{choices STUDY}}               how many tuned arms chose clear of the seed noise, suggestively, within it
    {{tuned STUDY: A - B}}          two tuned arms setting by setting on their tuning runs, where both
                                    finished every tuning seed: "optim.lr = 0.08: -4.46, optim.lr = 0.16:
                                    -2.46 points (validation accuracy, 1 tuning seed(s))"
    {{brief delta ...}}             a delta or a claim, checked the same, in a table cell's words:
    {{brief claim ...}}             "+6.12 [+4.02, +8.22], n = 3; Holm p = 0.038" (the correction's
                                    family left to the prose)
    {{pub KEY}}                     a published figure from a `published` block of the source
    {{costs: S1, S2}}               (alone on a line) what each study file studies/S.toml has left to
                                    train (runs, epochs, PFLOP, from its database if it has one) and
                                    the process-hours that takes on each CPU with RATE_RUNS finished
                                    runs in the committed databases, at its median rate

Published figures are the only numbers a source types, and only in a fenced block with the info
string `published`, one per line, each with its source; the block renders as a table:

    ```published
    supcon-ce = 95.0 % | Khosla et al. 2020, reference code: cross-entropy, ResNet-50, 1000 epochs
    ```

References are not expanded inside other fenced code blocks, and HTML comments that start a line
(notes to the source's authors) are left out of the report. Every reference is resolved before
anything is written: an unknown study, variant, field, figure or key is one line naming the file
and line, and nothing is written. `hand_typed_numbers` finds the numbers a source types outside
references (tests/test_paper.py keeps the committed source free of them).

The Markdown-to-HTML conversion (`to_html`) covers what the report uses: headings, paragraphs,
pipe tables, lists, block quotes, fenced code, images, links, inline code, bold and italics.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cifarlab.errors import UserError
from cifarlab.stats import mean_std, paired_diff, seedwise

REF = re.compile(r"\{\{(.*?)\}\}")
NAME = r"[A-Za-z0-9_.+-]+"            # a study folder, variant or published key
VALUE_REF = re.compile(rf"({NAME})/({NAME})(?::(\S+))?")
SIDE = rf"{NAME}(?:\s+-\s+{NAME})?"    # a variant, or a difference of two ("a - b": spaces round the minus)
DELTA_REF = re.compile(rf"delta\s+({NAME})\s+({NAME})\s+({NAME})(?::(\S+))?")
CHANGE_REF = re.compile(rf"delta\s+({NAME})\s+({NAME}\s+-\s+{NAME})\s+vs\s+({NAME}\s+-\s+{NAME})(?::(\S+))?")
CLAIM_REF = re.compile(rf"claim\s+({NAME})(?::(\S+))?:\s+({SIDE})\s*([<>~])\s*({SIDE})"
                       rf"(\s+after\s+(?i:holm))?(?:\s+over\s+({NAME}(?:\s*,\s*{NAME})*))?")
FIG_REF = re.compile(rf"fig\s+({NAME})/([A-Za-z0-9_.-]+\.png)")
TABLE_REF = re.compile(rf"table\s+({NAME})(?::(\S+))?:\s+({NAME}(?:\s*,\s*{NAME})*)")
STUDY_REF = re.compile(rf"(study|runs|machines|hours|tuning)\s+({NAME})")
PUB_REF = re.compile(rf"pub\s+({NAME})")
COSTS_REF = re.compile(rf"costs:\s+({NAME}(?:\s*,\s*{NAME})*)")
CHOICES_REF = re.compile(rf"choices\s+({NAME})")
TUNED_REF = re.compile(rf"tuned\s+({NAME}):\s+({NAME})\s+-\s+({NAME})")
# A CPU's rate costs the studies left once it has finished this many runs in the committed databases.
RATE_RUNS = 50
PUB_LINE = re.compile(rf"({NAME})\s*=\s*([^|]+?)\s*\|\s*(.+)")

# Read from the run's last epoch: training accuracy, and under label noise the memorisation curve's
# ends (the flipped training samples against their noisy and clean labels, clean validation labels).
LAST_EPOCH = ("train_acc", "flipped_acc_noisy", "flipped_acc_clean", "val_acc_clean")
ACCURACIES = ("test_acc", "val_acc", "test_top5", "val_top5", "val_acc_max") + LAST_EPOCH
FIELDS = ACCURACIES + ("n", "wall", "machine", "params", "target", "target_diff", "at_chance", "epochs_to",
                       "convergence")
BLOCKS = ("fig", "table", "costs")  # references that stand alone on their line


class PaperError(UserError):
    """A reference the results cannot resolve, or a claim they no longer support."""


class ClaimFailed(PaperError):
    """A claim the data do not support."""


# ----------------------------------------------------------------------------- the results

@dataclass
class StudyData:
    """One results folder's study as its report counts it: the spec and the newest done run of
    each (variant, seed) of the current configs."""
    folder: str
    spec: object                 # report.StudySpec
    rows: list
    done: dict                   # experiment -> seed -> row
    store: object
    _curves: dict = field(default_factory=dict)   # run id -> its epochs (`curve`)

    def variant(self, name: str) -> dict:
        if name not in self.spec.experiments:
            raise PaperError(f"study {self.folder} has no variant {name!r}; its variants: "
                             f"{', '.join(self.spec.experiments)}")
        runs = self.done.get(name, {})
        if not runs:
            raise PaperError(f"{self.folder}/{name} has no finished runs yet")
        return runs

    def scores(self, name: str, what: str) -> dict[int, float]:
        """{seed: value} of an accuracy field over the variant's done seeds, as a fraction."""
        runs = self.variant(name)
        if what not in ACCURACIES:
            raise PaperError(f"{what!r} is not an accuracy; compare one of {', '.join(ACCURACIES)}")
        if self.spec.selection and what.startswith("test"):
            raise PaperError(f"{self.folder} is a selection study: it reads validation only; cite val_acc")
        if what in LAST_EPOCH:
            return {s: self.last_epoch(r["id"], what) for s, r in runs.items()}
        if what == "val_acc_max":   # the best epoch's validation accuracy (a noisy run's peak)
            return {s: self.best_val(r["id"]) for s, r in runs.items()}
        if what in ("test_top5", "val_top5"):
            extra = self.store.run_metrics([r["id"] for r in runs.values()])
            out = {s: extra[r["id"]].get(what) for s, r in runs.items()}
        else:
            out = {s: r[what] for s, r in runs.items()}
        if any(v is None for v in out.values()):
            raise PaperError(f"{self.folder}/{name} did not record {what} in every run")
        return out

    def curve(self, run_id: int) -> list[dict]:
        """The run's epochs, each with its further metrics (label noise's), read once."""
        if run_id not in self._curves:
            rows = {r["epoch"]: dict(r) for r in self.store.epochs([run_id])}
            for epoch, name, value in self.store.epoch_metrics(run_id):
                rows.setdefault(epoch, {"epoch": epoch})[name] = value
            self._curves[run_id] = [rows[e] for e in sorted(rows)]
        return self._curves[run_id]

    def last_epoch(self, run_id: int, what: str) -> float:
        epochs = self.curve(run_id)
        value = epochs[-1].get(what) if epochs else None
        if value is None:
            raise PaperError(f"{self.folder}: run {run_id} recorded no {what} in its last epoch")
        return value

    def best_val(self, run_id: int) -> float:
        values = [e["val_acc"] for e in self.curve(run_id) if e.get("val_acc") is not None]
        if not values:
            raise PaperError(f"{self.folder}: run {run_id} recorded no validation accuracy")
        return max(values)


class Results:
    """The study folders under `results`, opened when first cited and read once each."""

    def __init__(self, results: Path, studies: Path):
        self.results, self.studies = Path(results), Path(studies)
        self.open: dict[str, StudyData] = {}

    def folders(self) -> list[str]:
        return sorted(p.parent.name for p in self.results.glob("*/results.db"))

    def study(self, folder: str) -> StudyData:
        if folder in self.open:
            return self.open[folder]
        from cifarlab.report.summary import counted_rows, latest_done
        from cifarlab.results.store import open_store
        from cifarlab.study import load_study
        from cifarlab.study.plan import study_spec
        db = self.results / folder / "results.db"
        if not db.is_file():
            raise PaperError(f"unknown study {folder!r}: no {db}; studies under {self.results}: "
                             f"{', '.join(self.folders()) or '(none)'}")
        store = open_store(db, must_exist=True)
        names = [n for n in store.studies() if (self.studies / f"{n}.toml").is_file()]
        if folder in names:
            names = [folder]
        if len(names) != 1:
            store.close()
            raise PaperError(f"{db} holds {len(names)} studies with a file in {self.studies} "
                             f"({', '.join(names) or 'none'}); a folder cited must hold exactly one")
        spec = study_spec(load_study(self.studies / f"{names[0]}.toml"), store)
        rows = counted_rows(store, spec)
        self.open[folder] = StudyData(folder, spec, rows, latest_done(rows), store)
        return self.open[folder]

    def close(self) -> None:
        for data in self.open.values():
            data.store.close()


# ----------------------------------------------------------------------------- formatting

def machines_text(runs: list[tuple[str, str]]) -> str:
    """Each machine once, in first-seen order, with the thread counts its runs recorded ("CPU X, 2
    threads; CPU Y"); where only some of a machine's runs recorded theirs, how many did not."""
    by_machine: dict[str, list[str]] = {}
    for machine, threads in runs:
        by_machine.setdefault(machine, []).append(threads)
    said = []
    for machine, threads in by_machine.items():
        known = list(dict.fromkeys(t for t in threads if t))
        missing = threads.count("")
        text = f"{machine}, {' or '.join(known)}" if known else machine
        if known and missing:
            text += f" (not recorded for {missing} of {len(threads)} runs)"
        said.append(text)
    return "; ".join(said)


def threads_of(runtime: str | None) -> str:
    """"2 threads" from a run's recorded runtime ("cpu (...), bfloat16, channels_last, 2 threads"), or ""."""
    m = re.search(r"(\d+) threads?\b", runtime or "")
    return f"{m.group(1)} thread{'s' if m.group(1) != '1' else ''}" if m else ""


def accuracy_text(values: list[float]) -> str:
    mean, std = mean_std(values)
    if len(values) < 2:
        return f"{100 * mean:.2f} % (n = {len(values)})"
    return f"{100 * mean:.2f} ± {100 * std:.2f} % (n = {len(values)})"


def signed(x: float) -> str:
    text = f"{x:+.2f}"
    return "+0.00" if text == "-0.00" else text


def delta_text(mean: float, lo: float, hi: float, n: int, short: bool = False) -> str:
    """"+0.74 points, 95 % CI [+0.70, +0.78], n = 3"; `short` (a table cell's): "+0.74 [+0.70, +0.78], n = 3"."""
    points = "" if short else " points"
    if n < 2:
        return f"{signed(100 * mean)}{points} (n = {n}, no interval)"
    interval = "" if short else ", 95 % CI"
    return f"{signed(100 * mean)}{points}{interval} [{signed(100 * lo)}, {signed(100 * hi)}], n = {n}"


def config_text(value, percent: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(config_text(v, percent) for v in value)
    if percent:
        if not isinstance(value, (int, float)):
            raise PaperError(f"a % field must be a number, got {value!r}")
        return f"{100 * value:g} %"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def paired(data: StudyData, a: str, b: str, what: str) -> tuple[float, float, float, int]:
    """The paired difference a - b over their common seeds. A side "x - y" is itself a paired
    difference, so "x - y" against "u - v" is how much the difference changed (an interaction: a
    comparison at one budget against the same at another), over the seeds all four share."""
    pairs = " - " in a
    mean, lo, hi, n = paired_diff(side_scores(data, a, what), side_scores(data, b, what))
    if n == 0:
        raise PaperError(f"{data.folder}/{a} and {data.folder}/{b} have no seed in common")
    # a difference of accuracies lies in [-1, 1], a difference of two such in [-2, 2]: so does its
    # interval, as the study reports clip it
    edge = 2.0 if pairs else 1.0
    return mean, max(lo, -edge), min(hi, edge), n


def side_scores(data: StudyData, side: str, what: str) -> dict[int, float]:
    """seed -> the score of a variant, or of "x - y" the difference of two variants' (seeds both have)."""
    names = side.split(" - ")
    if len(names) == 1:
        return data.scores(names[0], what)
    return seedwise(*(data.scores(n, what) for n in names))


# ----------------------------------------------------------------------------- references

@dataclass
class Paper:
    """What a rendering found: the figures it embeds (Markdown link -> file) and the studies it cites."""
    figures: dict[str, Path] = field(default_factory=dict)
    cited: set[str] = field(default_factory=set)
    published: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (value, source)
    figure_count: int = 0


class Renderer:
    def __init__(self, results: Results, out_dir: Path):
        self.results, self.out_dir, self.paper = results, Path(out_dir), Paper()
        self.summaries: dict[str, dict[str, dict]] = {}   # folder -> experiment -> its report summary row

    def data(self, folder: str) -> StudyData:
        self.paper.cited.add(folder)
        return self.results.study(folder)

    def expand(self, ref: str, alone: bool) -> str:
        """The text a reference stands for; PaperError says why there is none."""
        ref = " ".join(ref.split())
        if ref.startswith("brief "):   # a table cell's form of a delta or a claim: the same checks, fewer words
            for pattern, method in ((DELTA_REF, self.delta), (CHANGE_REF, self.delta), (CLAIM_REF, self.claim)):
                m = pattern.fullmatch(ref[len("brief "):])
                if m:
                    return method(*m.groups(), short=True)
            raise PaperError("brief shortens a delta or a claim: {{brief delta ...}}, {{brief claim ...}}")
        kind = ref.split(" ", 1)[0]
        if kind in BLOCKS and not alone:
            raise PaperError(f"a {kind} reference stands alone on its line")
        for pattern, method in ((DELTA_REF, self.delta), (CHANGE_REF, self.delta), (CLAIM_REF, self.claim), (FIG_REF, self.figure),
                                (TABLE_REF, self.table), (STUDY_REF, self.study), (PUB_REF, self.pub),
                                (COSTS_REF, self.costs), (CHOICES_REF, self.choices), (TUNED_REF, self.tuned),
                                (VALUE_REF, self.value)):
            m = pattern.fullmatch(ref)
            if m:
                return method(*m.groups())
        raise PaperError("not a reference; docs/PAPER.md lists the forms")

    def value(self, folder: str, name: str, what: str | None) -> str:
        data = self.data(folder)
        what = what or data.spec.metric
        runs = data.variant(name)
        if what in ACCURACIES:
            return accuracy_text(list(data.scores(name, what).values()))
        if what == "n":
            return str(len(runs))
        if what == "wall":
            walls = [r["wall_seconds"] for r in runs.values() if r["wall_seconds"] is not None]
            if not walls:
                raise PaperError(f"{folder}/{name} recorded no wall time")
            return f"{mean_std(walls)[0]:,.0f} s"
        if what == "machine":   # where its wall times were measured: the CPU or GPU, and threads per run
            said = machines_text([(r["machine"], threads_of(r["runtime"])) for r in runs.values() if r["machine"]])
            if not said:
                raise PaperError(f"{folder}/{name} recorded no machine")
            return said
        if what == "at_chance":
            return "{} of {} seeds".format(*self.at_chance(data, name))
        if what in ("epochs_to", "convergence") and data.spec.convergence is None:
            raise PaperError(f"{folder} sets no convergence threshold (`convergence` in its study file)")
        if what == "convergence":   # the threshold itself, so that prose can say what epochs_to counts to
            return f"{100 * data.spec.convergence:g} %"
        if what == "epochs_to":   # the study's `convergence` threshold: first epoch whose validation reaches it
            from cifarlab.report.summary import convergence_numbers, epochs_by_run
            ids = [r["id"] for r in runs.values()]
            c = convergence_numbers(epochs_by_run(data.store, ids), ids, data.spec.convergence)
            if not c["threshold_reached"]:
                return f"never ({len(ids)} seeds)"
            never = f", {c['threshold_never']} of {len(ids)} seeds never" if c["threshold_never"] else ""
            return f"{c['epochs_to_threshold_mean']:.1f} ± {c['epochs_to_threshold_std']:.1f} epochs{never}"
        if what == "params":
            from cifarlab.report.summary import parameter_count
            count = parameter_count(data.rows, name)
            if count is None:
                raise PaperError(f"{folder}/{name}: its network cannot be rebuilt from its stored config")
            return f"{count:,}"
        if what in ("target", "target_diff"):
            if name not in data.spec.targets:
                raise PaperError(f"{folder}/{name} has no published target in its study file")
            target = data.spec.targets[name]
            if what == "target":
                return f"{100 * target:.2f} %"
            mean = mean_std(data.scores(name, data.spec.metric).values())[0]
            return f"{signed(100 * (mean - target))} points"
        return self.config_value(data, name, what)

    def config_value(self, data: StudyData, name: str, what: str) -> str:
        from cifarlab.report.summary import experiment_config
        key, percent = what.rstrip("%"), what.endswith("%")
        section, _, attr = key.partition(".")
        cfg = experiment_config(data.rows, name)
        if not attr or cfg is None or not hasattr(cfg, section) or not hasattr(getattr(cfg, section), attr):
            raise PaperError(f"unknown field {what!r}; fields: {', '.join(FIELDS)}, or a config key "
                             "section.key (`cifarlab list keys`)")
        return config_text(getattr(getattr(cfg, section), attr), percent)

    def delta(self, folder: str, a: str, b: str, what: str | None, short: bool = False) -> str:
        data = self.data(folder)
        return delta_text(*paired(data, a, b, what or data.spec.metric), short=short)

    def claim(self, folder: str, what: str | None, a: str, op: str, b: str, holm: str | None = None,
              over: str | None = None, short: bool = False) -> str:
        said = f"claim \"{folder}: {a} {op} {b}{' after holm' if holm else ''}{f' over {over}' if over else ''}\""
        if over and not holm:
            raise PaperError(f"{said}: \"over\" names the family of a claim \"after holm\"")
        if (" - " in a) != (" - " in b):
            raise PaperError(f"{said}: compare a variant with a variant, or a difference \"x - y\" with a difference")
        if holm and (" - " in a or what):
            raise PaperError(f"{said}: a claim after Holm's correction compares two variants on the study's "
                             "metric, as its report's findings do")
        data = self.data(folder)
        mean, lo, hi, n = paired(data, a, b, what or data.spec.metric)
        evidence = delta_text(mean, lo, hi, n, short)
        if n < 2:
            raise ClaimFailed(f"{said} cannot be checked: it needs 2 or more common seeds, there are {n}")
        if holm:
            from cifarlab.report.fair import ALPHA
            if over:   # a family the prose names: each of its variants against b (a study that corrects none)
                q, k = self.holm_over(data, said, a, b, [v.strip() for v in over.split(",")])
                family = f"the {k} comparisons with `{b}`"
            else:
                q, k, group = self.holm_p(data, said, a, b)
                family = f"the {k} comparison{'s' if k != 1 else ''} of group `{group}`"
            # a table cell (`short`) leaves the family to its prose
            evidence += f"; Holm p = {q:.3f}" if short else f"; p = {q:.3f} after Holm's correction over {family}"
            holds = {">": q < ALPHA and mean > 0, "<": q < ALPHA and mean < 0, "~": q >= ALPHA}[op]
        else:
            holds = {">": lo > 0, "<": hi < 0, "~": lo <= 0 <= hi}[op]
        if not holds:
            raise ClaimFailed(f"{said} is not supported by the data ({evidence})")
        return evidence

    def holm_over(self, data: StudyData, said: str, a: str, b: str, family: list[str]) -> tuple[float, int]:
        """The Holm-adjusted p of a against b among the comparisons of each variant of `family` with b
        (paired over common seeds, the study's metric); with the family's size. For a study whose
        file corrects nothing, so that prose can say which of its findings survive a correction."""
        from cifarlab import stats
        if a not in family or b in family:
            raise PaperError(f"{said}: the family after \"over\" lists {a} and not {b} (each of its variants "
                             f"is compared with {b})")
        base = data.scores(b, data.spec.metric)
        ps = []
        for v in family:
            mine = data.scores(v, data.spec.metric)
            if len(set(mine) & set(base)) < 2:
                raise ClaimFailed(f"{said} cannot be checked: {v} and {b} share under 2 seeds")
            ps.append(stats.paired_p(mine, base))
        return stats.holm(ps)[family.index(a)], len(family)

    def holm_p(self, data: StudyData, said: str, a: str, b: str) -> tuple[float, int, str]:
        """The Holm-adjusted p of a against b as the study report's finding computes it: within the
        group whose baseline is one of the two and whose members include the other; with the number
        of comparisons in that family and the group's name."""
        from cifarlab.report.fair import corrected
        from cifarlab.report.summary import summarize
        if data.spec.correction != "holm":
            raise PaperError(f"{said}: study {data.folder} applies no correction (its file has no "
                             "correction = \"holm\"); claim without \"after holm\"")
        found = []
        for group in data.spec.questions:
            names = data.spec.members(group)
            if a == b or not names or names[0] not in (a, b) or a not in names or b not in names:
                continue
            if data.folder not in self.summaries:   # summarised once per study, not once per claim
                self.summaries[data.folder] = {s["experiment"]: s for s in summarize(data.store, data.spec)}
            by_exp = self.summaries[data.folder]
            rows = corrected([by_exp[e] for e in names])
            other = next(r for r in rows if r["experiment"] == (a if names[0] == b else b))
            found.append((other["p_holm"], sum(1 for r in rows if r["p"] == r["p"]), group))
        if not found:
            raise PaperError(f"{said}: no group of study {data.folder} has one of the two as its baseline and the "
                             "other as a member; Holm's correction is over a group's comparisons with its baseline")
        if len(found) > 1:   # two families correct the same pair differently: which one the prose means is unclear
            raise PaperError(f"{said}: the pair is corrected in groups {', '.join(g for *_, g in found)}; "
                             "a claim after Holm needs the pair in one group only")
        q, k, group = found[0]
        if q != q:   # nan: a variant unstable, or under two common seeds
            raise ClaimFailed(f"{said} cannot be checked: the study report does not compare them "
                              "(a variant unstable, or under two common seeds)")
        return q, k, group

    def figure(self, folder: str, file: str) -> str:
        self.paper.cited.add(folder)
        path = self.results.results / folder / file
        if not (self.results.results / folder).is_dir():
            raise PaperError(f"unknown study {folder!r}; studies under {self.results.results}: "
                             f"{', '.join(self.results.folders())}")
        if not path.is_file():
            figures = sorted(p.name for p in path.parent.glob("*.png"))
            raise PaperError(f"no figure {path}; its figures: {', '.join(figures) or '(none)'}")
        link = Path(os.path.relpath(path, self.out_dir)).as_posix()
        self.paper.figures[link] = path
        self.paper.figure_count += 1
        return f"![Figure {self.paper.figure_count}: {folder}/{file}]({link})"

    @staticmethod
    def at_chance(data, name: str) -> tuple[int, int]:
        """(seeds that never left chance accuracy, done seeds) of a variant."""
        from cifarlab.report.summary import at_chance, clean_val_by_run, epochs_by_run
        runs = data.variant(name)
        chance = at_chance(runs, epochs_by_run(data.store, [r["id"] for r in runs.values()]),
                           clean_val_by_run(data.store, runs))
        return len(chance), len(runs)

    def delta_cell(self, data, name: str, first: str, what: str) -> str:
        """A table's difference with its first variant; for a variant with seeds that never left
        chance, how many: a run that failed is not a shifted draw, so a t-interval over it would mislead."""
        chance, seeds = self.at_chance(data, name)
        if chance:
            return f"{chance} of {seeds} seed{'' if seeds == 1 else 's'} at chance: no interval"
        return delta_text(*paired(data, name, first, what))

    def table(self, folder: str, what: str | None, names: str) -> str:
        data = self.data(folder)
        what = what or data.spec.metric
        variants = [n.strip() for n in names.split(",")]
        first = variants[0]
        label = {"test_acc": "test accuracy", "val_acc": "validation accuracy"}.get(what, what)
        targets = any(v in data.spec.targets for v in variants)
        head = ["variant", f"{label}, mean ± std", f"Δ vs `{first}` (points, paired 95 % CI)"]
        head += ["published"] if targets else []
        head += ["what it changes"]
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + ("---:|" if targets else "") + "---|"]
        for v in variants:
            cells = [f"`{v}`", accuracy_text(list(data.scores(v, what).values())),
                     "reference" if v == first else self.delta_cell(data, v, first, what)]
            if targets:
                cells.append(f"{100 * data.spec.targets[v]:.2f} %" if v in data.spec.targets else "—")
            cells.append(data.spec.notes.get(v, "").replace("|", "/"))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def study(self, kind: str, folder: str) -> str:
        if kind == "study":
            if not (self.results.results / folder / "results.db").is_file():
                raise PaperError(f"unknown study {folder!r}; studies under {self.results.results}: "
                                 f"{', '.join(self.results.folders())}")
            self.paper.cited.add(folder)
            link = Path(os.path.relpath(self.results.results / folder / "README.md", self.out_dir)).as_posix()
            return f"[{folder}]({link})"
        data = self.data(folder)
        used = [r for seeds in data.done.values() for r in seeds.values()]
        if kind == "machines":
            from cifarlab.report.markdown import unique
            return ", ".join(unique(r["machine"] for r in used)) or "none yet"
        if kind == "hours":
            return f"{sum(r['wall_seconds'] or 0.0 for r in used) / 3600:.1f} process-hours"
        if kind == "tuning":
            from cifarlab.report.markdown import tuning_cost, tuning_rows
            tuned = tuning_rows(data.store, data.spec)
            if not tuned:
                raise PaperError(f"{folder} has no finished tuning run (a study that tunes its arms: `tune`)")
            tune, share = tuning_cost(tuned, used)
            return f"{tune / 3600:.1f} process-hours over {len(tuned)} tuning runs, {100 * share:.0f} % of the study's"
        planned = sum(len(data.spec.planned(e)) for e in data.spec.experiments)
        # a study that tunes its arms also trains tuning runs, which this count leaves out
        return f"{len(used)} of {planned} {'test runs' if data.spec.tuning else 'runs'}"

    def costs(self, names: str) -> str:
        """A table of what each study (studies/NAME.toml) has left to train: runs (tuning runs
        included), epochs, training FLOPs, and process-hours at the measured rate of each CPU that
        finished at least RATE_RUNS runs in the databases under results/ (the median, per single
        process). Each database is read from an in-memory copy: the build writes none."""
        from cifarlab.results.store import copy_store, open_store
        from cifarlab.study import load_study
        from cifarlab.study.status import flops_left, machine_rates, tally
        dbs = sorted(self.results.results.glob("*/results.db"))
        cpus = {m: r for m, r in sorted(machine_rates(dbs, runtime="cpu").items(), key=lambda kv: (-kv[1][1], kv[0]))
                if r[1] >= RATE_RUNS}
        head = ["study", "runs left (tuning runs included)", "epochs left", "training left"]
        head += [f"process-hours, {m}" for m in cpus]
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for name in (n.strip() for n in names.split(",")):
            path = self.results.studies / f"{name}.toml"
            if not path.is_file():
                raise PaperError(f"no study file {path}")
            db = self.results.results / name / "results.db"
            store = copy_store(db) if db.is_file() else open_store(":memory:")
            try:
                runs, _, _, work, _, left = tally(load_study(path), store)
            finally:
                store.close()
            if db.is_file():
                self.paper.cited.add(name)
            flops = flops_left([(cfg, epochs) for _, cfg, epochs, _ in work])
            cells = [f"`studies/{name}.toml`", f"{left} of {len(runs)}", f"{sum(e for _, _, e, _ in work):,.0f}",
                     f"{flops / 1e15:,.1f} PFLOP"]
            cells += [f"{flops / (rate * 1e12) / 3600:,.1f}" for rate, _, _ in cpus.values()]
            lines.append("| " + " | ".join(cells) + " |")
        rates = "; ".join(f"{m}: {r:.3f} TFLOP/s per process ({n} runs)" for m, (r, n, _) in cpus.items())
        return "\n".join(lines + ["", "Rates (the median training FLOP/s of the finished CPU runs in the "
                                       "results databases, wall time including validation; networks run "
                                       f"nearer or further from a CPU's peak, so a rough guide): {rates or 'none yet'}."])

    def choices(self, folder: str) -> str:
        """How many of the study's tuned arms chose clear of the seed-to-seed noise, suggestively, or
        within it (the margin over the runner-up against the noise of a difference of two settings'
        means: the study report's tuning section, counted), naming the arms of each."""
        from cifarlab.report.fair import CLEAR, MIN_NOISE_SEEDS, SUGGESTIVE, WITHIN, margin_numbers
        data = self.data(folder)
        if not data.spec.tuning:
            raise PaperError(f"study {folder} tunes no arm (no `tune` in its study file)")
        counted: dict[str, list[str]] = {CLEAR: [], SUGGESTIVE: [], WITHIN: []}
        waiting, seeds = [], set()
        for arm, t in data.spec.tuning.items():
            twin = t.get("twin")
            vals = list(data.scores(twin, "val_acc").values()) if twin and data.done.get(twin) else []
            std = mean_std(vals)[1] if len(vals) > 1 else float("nan")
            m = margin_numbers(t, {twin: {"experiment": twin, "n": len(vals), "val_std": std}} if twin else {})
            if m is None or "k" not in m:
                waiting.append(f"`{arm}`")
                continue
            seeds.add(m["n_tune"])
            counted[m["verdict"]].append(f"`{arm}`")
        parts = [f"{len(arms)} {verdict} ({', '.join(arms)})" for verdict, arms in counted.items() if arms]
        n = sum(len(a) for a in counted.values())
        if not n:
            raise PaperError(f"study {folder}: no tuned arm has a choice and {MIN_NOISE_SEEDS} seeds at its tuning length yet")
        said = (f"of {n} choices made on {' or '.join(map(str, sorted(seeds)))} tuning seed(s), " + ", ".join(parts))
        edge = [f"`{arm}`" for arm, t in data.spec.tuning.items() if "still at the grid's edge" in (t.get("reason") or "")]
        said += f"; {len(edge)} still at its grid's edge, the best value possibly beyond ({', '.join(edge)})" if edge else ""
        return said + (f"; not yet known for {', '.join(waiting)}" if waiting else "")

    def tuned(self, folder: str, a: str, b: str) -> str:
        """Two tuned arms setting by setting on their tuning runs (validation accuracy): A - B at each
        setting both finished on every tuning seed, in A's grid order, so prose can say where along
        the grid one arm passes the other without resting on either arm's single choice. The two
        must tune at the same length; a setting either has not finished on every seed is left out."""
        data = self.data(folder)
        arms = data.spec.tuning
        if a == b:
            raise PaperError(f"{folder}: tuned compares two arms; {a!r} with itself is no comparison")
        for arm in (a, b):
            if arm not in arms:
                raise PaperError(f"study {folder} tunes no arm {arm!r}; its tuned arms: {', '.join(arms) or 'none'}")
        if arms[a]["epochs"] != arms[b]["epochs"]:
            raise PaperError(f"{folder}: {a!r} tunes at {arms[a]['epochs']:g} epochs and {b!r} at "
                             f"{arms[b]['epochs']:g}; tuned compares arms tuned at one length")

        def complete(arm: str) -> dict[str, float]:   # setting -> mean over every tuning seed
            seeds = len(arms[arm]["seeds"])
            return {text: acc for text, acc, n in arms[arm]["scores"] if n == seeds and math.isfinite(acc)}
        mine, theirs = complete(a), complete(b)
        if not {text for text, *_ in arms[a]["scores"]} & {text for text, *_ in arms[b]["scores"]}:
            raise PaperError(f"{folder}: arms {a!r} and {b!r} tune different grids (no setting in common)")
        pairs = [(text, acc - theirs[text]) for text, acc in mine.items() if text in theirs]
        if not pairs:
            raise PaperError(f"{folder}: arms {a!r} and {b!r} have no setting both finished on every tuning seed yet")
        return (", ".join(f"{text}: {signed(100 * d)}" for text, d in pairs) +
                f" points (validation accuracy, {len(arms[a]['seeds'])} tuning seed(s))")

    def pub(self, key: str) -> str:
        if key not in self.paper.published:
            raise PaperError(f"no published figure {key!r}; defined: {', '.join(sorted(self.paper.published)) or '(none)'}")
        return self.paper.published[key][0]


# ----------------------------------------------------------------------------- the source

def sentence_at(line: str, start: int, end: int) -> str:
    """The sentence of `line` around [start, end), references removed, for an error message."""
    left = max(line.rfind(". ", 0, start), line.rfind("? ", 0, start))
    right = min([i for i in (line.find(". ", end), line.find("? ", end)) if i >= 0] or [len(line)])
    text = " ".join(REF.sub("…", line[left + 2 if left >= 0 else 0:right + 1]).split())
    return (text if len(text) <= 160 else text[:159] + "…") if text.strip("… .") else line.strip()


def published_blocks(lines: list[str], src: str) -> dict[str, tuple[str, str]]:
    out, inside = {}, None
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            inside = line[3:].strip() if inside is None else None
            continue
        if inside == "published" and line.strip():
            m = PUB_LINE.fullmatch(line.strip())
            if m is None:
                raise PaperError(f"{src}:{number}: a published figure is `KEY = VALUE | SOURCE`, got {line.strip()!r}")
            if m.group(1) in out:
                raise PaperError(f"{src}:{number}: published figure {m.group(1)!r} is defined twice")
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def render(source: str, src: str, results: Results, out_dir: Path) -> tuple[str, Paper]:
    """The Markdown report of a source text (`src` names it in messages) and what it cites."""
    r = Renderer(results, out_dir)
    lines = source.splitlines()
    r.paper.published = published_blocks(lines, src)
    out, fence, comment = [f"<!-- Generated by `cifarlab paper` from {src} and the results databases: edit "
                           "the source, not this file. -->", ""], None, False
    for number, line in enumerate(lines, 1):
        if fence is None and (comment or line.startswith("<!--")):  # the source's own notes stay in it
            comment = "-->" not in line
            continue
        if not line.strip() and out and not out[-1].strip():
            continue
        if line.startswith("```"):
            if fence is None:
                fence = line[3:].strip()
                if fence == "published":
                    out += ["| published figure | value | source |", "|---|---:|---|"]
                    out += [f"| {k} | {v} | {s} |" for k, (v, s) in r.paper.published.items()] + [""]
                    continue
            elif fence == "published":
                fence = None
                continue
            else:
                fence = None
        if fence is not None:
            if fence != "published":
                out.append(line)
            continue
        alone = REF.fullmatch(line.strip()) is not None

        def sub(m: re.Match) -> str:
            try:
                return r.expand(m.group(1), alone)
            except ClaimFailed as e:
                raise PaperError(f"{src}:{number}: {e} in the sentence \"{sentence_at(line, m.start(), m.end())}\"") from None
            except PaperError as e:
                raise PaperError(f"{src}:{number}: {{{{{m.group(1).strip()}}}}}: {e}") from None

        out.append(REF.sub(sub, line))
    return "\n".join(out).rstrip("\n") + "\n", r.paper


# ----------------------------------------------------------------------------- digits typed by hand

YEAR = re.compile(r"(19|20)\d\d")
DATE = re.compile(r"\b(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b")
ALLOWED = re.compile(r"\d+x\d+|95 % (?:CI|t-interval|Student-t)")  # kernel shapes (3x3), the CI's level
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def hand_typed_numbers(source: str) -> list[tuple[int, str]]:
    """(line, token) of every number the source types outside references, fenced blocks, HTML
    comments and link targets. Allowed: digits inside a name (airbench94, `ce-sym40`, CIFAR-10,
    ResNet-18, L2), years and dates (2026-12-06), citation numbers [3], issue numbers #44, kernel
    shapes (3x3), the confidence level of "95 % CI" and ordered-list markers."""
    found, fence = [], None
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), source, flags=re.S)
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is not None:
            continue
        line = REF.sub(" ", line)
        line = re.sub(r"\]\([^)]*\)", "]", line)      # link targets
        line = re.sub(r"\[\d+\]|#\d+", " ", line)    # citation and issue numbers
        line = DATE.sub(" ", line)                     # a date: running since 2026-12-06
        line = re.sub(r"^\s*\d+\.\s", " ", line)      # an ordered list's marker
        for m in NUMBER.finditer(line):
            before = line[:m.start()]
            if before[-1:].isalnum() or before[-1:] == "_" or re.search(r"[A-Za-z]-$", before):
                continue  # part of a name: airbench94, L2, CIFAR-10, ResNet-18
            if YEAR.fullmatch(m.group(0)) or ALLOWED.match(line, m.start()):
                continue
            found.append((number, m.group(0)))
    return found


# ----------------------------------------------------------------------------- HTML

STYLE = """body{font-family:Georgia,serif;max-width:52em;margin:2em auto;padding:0 1em;line-height:1.5;color:#222}
h1,h2,h3,h4{font-family:Helvetica,Arial,sans-serif;line-height:1.2}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:0.25em 0.5em;vertical-align:top}
th{background:#f3f3f3}
td.r,th.r{text-align:right}
code{background:#f5f5f5;padding:0 0.2em;font-size:0.9em}
pre{background:#f5f5f5;padding:0.75em;overflow-x:auto}
pre code{padding:0}
figure{margin:1.5em 0;text-align:center}
figure img{max-width:100%}
figcaption{font-size:0.85em;color:#555}
blockquote{border-left:3px solid #ccc;margin-left:0;padding-left:1em;color:#444}"""


def slug(text: str, used: dict[str, int]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", re.sub(r"<[^>]+>", "", text).lower()).strip("-") or "section"
    used[base] = used.get(base, 0) + 1
    return base if used[base] == 1 else f"{base}-{used[base] - 1}"


def inline(text: str, images: dict[str, str]) -> str:
    """Inline Markdown to HTML: code spans, images, links, bold, italics; the rest escaped."""
    codes: list[str] = []

    def keep(s: str) -> str:
        codes.append(s)
        return f"\x00{len(codes) - 1}\x00"

    text = re.sub(r"`([^`]+)`", lambda m: keep(f"<code>{html.escape(m.group(1))}</code>"), text)
    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", lambda m: keep(
        f'<img alt="{html.escape(m.group(1))}" src="{images.get(m.group(2), html.escape(m.group(2)))}">'), text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: keep(
        f'<a href="{html.escape(m.group(2))}">{inline(m.group(1), images)}</a>'), text)
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def table_html(rows: list[str], images: dict[str, str]) -> str:
    def cells(row: str) -> list[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
    align = ["r" if c.endswith(":") and not c.startswith(":") else "" for c in cells(rows[1])]

    def tr(row: str, tag: str) -> str:
        out = []
        for i, c in enumerate(cells(row)):
            cls = f' class="{align[i]}"' if i < len(align) and align[i] else ""
            out.append(f"<{tag}{cls}>{inline(c, images)}</{tag}>")
        return "<tr>" + "".join(out) + "</tr>"
    body = "\n".join(tr(r, "td") for r in rows[2:])
    return f"<table>\n<thead>{tr(rows[0], 'th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


LIST_ITEM = re.compile(r"(\s*)([-*]|\d+\.)\s+(.*)")


def list_html(lines: list[str], images: dict[str, str]) -> str:
    items: list[str] = []
    for line in lines:
        m = LIST_ITEM.fullmatch(line)
        if m and not m.group(1):
            items.append(m.group(3))
        else:
            items[-1] += " " + line.strip()
    tag = "ol" if LIST_ITEM.fullmatch(lines[0]).group(2)[0].isdigit() else "ul"
    return f"<{tag}>\n" + "\n".join(f"<li>{inline(i, images)}</li>" for i in items) + f"\n</{tag}>"


def to_html(markdown: str, images: dict[str, str]) -> str:
    """A self-contained HTML page of the report's Markdown; `images` maps each image link to the
    data URI that replaces it."""
    lines = markdown.splitlines()
    body, used, title, i = [], {}, "Report", 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or (line.startswith("<!--") and line.rstrip().endswith("-->")):
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1:j]))}</code></pre>")
            i = j + 1
        elif re.match(r"#{1,6} ", line):
            level = len(line) - len(line.lstrip("#"))
            text = inline(line[level:].strip(), images)
            if level == 1 and title == "Report":
                title = re.sub(r"<[^>]+>", "", text)
            body.append(f'<h{level} id="{slug(text, used)}">{text}</h{level}>')
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|?", lines[i + 1].strip()):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            body.append(table_html(lines[i:j], images))
            i = j
        elif LIST_ITEM.fullmatch(line) and not LIST_ITEM.fullmatch(line).group(1):
            j = i + 1
            while j < len(lines) and lines[j].strip() and (LIST_ITEM.fullmatch(lines[j]) or lines[j].startswith(" ")):
                j += 1
            body.append(list_html(lines[i:j], images))
            i = j
        elif line.startswith(">"):
            j = i
            while j < len(lines) and lines[j].startswith(">"):
                j += 1
            text = " ".join(l.lstrip(">").strip() for l in lines[i:j])
            body.append(f"<blockquote><p>{inline(text, images)}</p></blockquote>")
            i = j
        elif re.fullmatch(r"!\[[^\]]*\]\([^)\s]+\)", line.strip()):
            alt = re.match(r"!\[([^\]]*)\]", line.strip()).group(1)
            body.append(f"<figure>{inline(line.strip(), images)}<figcaption>{html.escape(alt)}</figcaption></figure>")
            i += 1
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not starts_block(lines, j):
                j += 1
            j = max(j, i + 1)
            body.append(f"<p>{inline(' '.join(l.strip() for l in lines[i:j]), images)}</p>")
            i = j
    sections = [re.match(r'<h2 id="([^"]+)">(.*)</h2>', b) for b in body]
    toc = "".join(f'<li><a href="#{m.group(1)}">{m.group(2)}</a></li>' for m in sections if m)
    if toc and body and body[0].startswith("<h1"):
        body.insert(1, f"<nav><ul>{toc}</ul></nav>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def starts_block(lines: list[str], j: int) -> bool:
    line = lines[j]
    return (line.startswith(("```", "#", "|", ">")) or bool(LIST_ITEM.fullmatch(line))
            or bool(re.fullmatch(r"!\[[^\]]*\]\([^)\s]+\)", line.strip())))


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# ----------------------------------------------------------------------------- build

def make_paper(src: Path, out_md: Path, results: Path, studies: Path) -> tuple[str, str, Paper]:
    """(Markdown, HTML, what was cited) of the source; nothing is written."""
    src = Path(src)
    if not src.is_file():
        raise UserError(f"report source not found: {src}; write one (docs/PAPER.md says how)")
    store = Results(results, studies)
    try:
        markdown, paper = render(src.read_text(), src.as_posix(), store, Path(out_md).parent)
    finally:
        store.close()
    images = {link: data_uri(path) for link, path in paper.figures.items()}
    return markdown, to_html(markdown, images), paper


def write_paper(src: Path, out_md: Path, out_html: Path, results: Path, studies: Path) -> list[Path]:
    """Render everything first, then write both files (each atomically)."""
    markdown, page, _ = make_paper(src, out_md, results, studies)
    written = []
    for path, text in ((Path(out_md), markdown), (Path(out_html), page)):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


def uncited(paper: Paper, results: Results) -> list[str]:
    """Study folders under results/ that the source never cites."""
    return [f for f in results.folders() if f not in paper.cited]


__all__ = ["PaperError", "Results", "hand_typed_numbers", "make_paper", "render", "to_html", "uncited",
           "write_paper"]
