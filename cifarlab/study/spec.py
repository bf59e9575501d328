"""Studies: named variants of a reference experiment, each run over several seeds.

A study file (`studies/<name>.toml`):

    name = "regularization"                       # default: the file's stem
    experiment = "../experiments/fast/baseline.toml"  # the reference experiment (path relative to this file)
    seeds = [0, 1, 2]
    reference = "baseline"                        # variant the report compares with (default: the first)
    set = { "train.epochs" = 10 }                 # overrides applied to every variant
    convergence = 0.80                            # optional: report epochs/seconds to val acc >= 80%
    selection = false                             # true: a study that chooses settings (an LR, a length);
                                                  # its report compares validation accuracy, never test
    order = "seed"                                # claim order: "seed" (tuning runs, then seed 0 of every
                                                  # comparison, then seed 1...) or "group" (that order within
                                                  # one group, its baseline and `also` included, then the next)

    [groups.dropout]                              # optional: a question the report answers in "Findings"
    question = "Does dropout beat no regularization?"
    baseline = "baseline"                         # compared with (any variant; default: the group's first)
    also = ["augment"]                            # optional: variants of other groups this one compares too

    [[variants]]
    name = "baseline"
    target = 0.735                                # optional published figure to report beside ours

    [[variants]]
    name = "dropout"
    group = "dropout"                             # optional: one declared group per variant
    set = { "model.dropout" = [0.2, 0.2, 0.2], "model.dense_dropout" = 0.2 }
    note = "tutorial dropout after each pooling and the dense layer"
    # extends = "../experiments/other.toml"       # or start from another experiment file

    [[variants]]
    name = "augment"                              # in no group: `also` compares the dropout group with it
    set = { "augment.pipeline" = ["flip", "translate"], "augment.translate" = 0.1 }

Fair comparisons (each arm tuned on validation, budgets, compute-matched arms, corrected findings):
`tune`, `tune_seeds`, `tune_epochs`, `tune_extend`, `budgets` / `budget_epochs`, `match`,
`correction`, and `seeds` per group or variant; see `cifarlab.study.fair` and docs/FAIR.md.

Groups are reported in declaration order; each lists its baseline first, then its variants.
`run_study` runs what is missing, seed by seed, claiming each run atomically in the
results store so that several processes can share one study.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarlab import config as C
from cifarlab.errors import ConfigError, did_you_mean
from cifarlab.results.store import RunKey
from cifarlab.study import fair
from cifarlab.study.fair import Budget, Tune

if TYPE_CHECKING:
    from cifarlab.report import StudySpec

STUDY_KEYS = ("name", "experiment", "seeds", "reference", "set", "variants", "description", "groups",
              "convergence", "selection", "tune", "tune_seeds", "tune_epochs", "tune_extend", "budgets",
              "budget_epochs", "match", "correction", "order", "more_seeds")
# Claim order: seed-major over the whole study (seed 0 of every comparison first), or group by group
# (each group's tuning and test runs before the next group's: a long study answers one question at a time).
ORDERS = ("seed", "group")
VARIANT_KEYS = ("name", "set", "extends", "target", "note", "group", "tune", "seeds")
GROUP_KEYS = ("question", "baseline", "also", "seeds", "more_seeds")
# Same rule as report.GROUP_NAME (names become figure file names), checked here so that a study
# fails when loaded, not at report time; report is not imported because it loads matplotlib.
GROUP_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Variant:
    name: str
    config: C.ExperimentConfig      # seed not yet applied
    target: float | None = None
    note: str = ""
    group: str = ""                 # "" : in no group
    tune: Tune | None = None        # a grid this variant chooses its value from on validation
    seeds: tuple[int, ...] | None = None  # its own seeds (a group's or its own `seeds`); None: the study's
    arm: str = ""                   # the declared variant it expands (budgets); "": itself
    budget: str = ""                # the budget's label ("20ep") where the study has several


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    seeds: tuple[int, ...]
    reference: str
    variants: tuple[Variant, ...]
    description: str = ""
    questions: dict[str, str] = dataclasses.field(default_factory=dict)  # group -> question, declaration order
    baselines: dict[str, str] = dataclasses.field(default_factory=dict)  # group -> variant (default: first member)
    convergence: float | None = None
    selection: bool = False  # chooses settings: its report reads validation accuracy only
    also: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # group -> other groups' variants
    budgets: tuple[Budget, ...] = ()     # several: each variant is one experiment per budget
    match: str = "epochs"                # epochs | flops: what the arms have equal of at each budget
    correction: str = "none"             # none | holm: how findings treat several comparisons in a group
    order: str = "seed"                  # seed | group: the order workers claim runs in (ORDERS)
    more_seeds: fair.MoreSeeds | None = None  # more seeds where a comparison's validation difference is small
    without_more_seeds: frozenset[str] = frozenset()  # groups that opt out of it (`more_seeds = false`)

    def seeds_of(self, v: Variant) -> tuple[int, ...]:
        return v.seeds if v.seeds is not None else self.seeds

    @property
    def tuned(self) -> bool:
        return any(v.tune is not None for v in self.variants)

    def configured(self, v: Variant, choices: dict[str, dict] | None) -> C.ExperimentConfig | None:
        """The variant's config with its arm's tuned choice applied; None while the arm is undecided."""
        if v.tune is None:
            return v.config
        choice = (choices or {}).get(v.arm or v.name)
        if choice is None:
            return None
        # an epoch-valued choice (a warm-up) was made at the tuning length: stretched like the schedule
        first = next(u for u in self.variants if (u.arm or u.name) == (v.arm or v.name))
        tuned_at = v.tune.epochs or first.config.train.epochs
        return fair.apply(v.config, fair.stretch_choice(choice, v.config.train.epochs / tuned_at))

    def runs(self, choices: dict[str, dict] | None = None) -> list[tuple[Variant, C.ExperimentConfig, RunKey]]:
        """Every (variant, seeded config, key), seed-major: early seeds give complete comparisons first;
        with several budgets, budget-major first (the shortest budget's comparison is complete, every
        seed, before the next budget's runs start). A tuned variant's runs are listed once its arm's
        choice ({arm: {key: value}}) is known."""
        out = []
        for seed in sorted({s for v in self.variants for s in self.seeds_of(v)}, key=self.seed_order):
            for v in self.variants:
                cfg = self.configured(v, choices)
                if seed not in self.seeds_of(v) or cfg is None:
                    continue
                cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
                out.append((v, cfg, RunKey(self.name, v.name, seed, C.config_hash(cfg))))
        labels = [b.label for b in self.budgets]
        return sorted(out, key=lambda r: labels.index(r[0].budget) if r[0].budget in labels else 0)

    def seed_order(self, seed: int) -> tuple[int, int]:
        return (0, self.seeds.index(seed)) if seed in self.seeds else (1, seed)

    def spec(self, choices: dict[str, dict] | None = None, tuning: dict | None = None,
             added: dict[str, tuple[int, ...]] | None = None, why: dict[str, str] | None = None) -> "StudySpec":
        from cifarlab.report import StudySpec
        configs = {v.name: self.configured(v, choices) for v in self.variants}
        own_seeds = {v.name: self.seeds_of(v) for v in self.variants if v.seeds is not None}
        return StudySpec(name=self.name, reference=self.reference,
                         experiments=tuple(v.name for v in self.variants),
                         targets={v.name: v.target for v in self.variants if v.target is not None},
                         hashes={n: C.config_hash(c) if c is not None else "undecided" for n, c in configs.items()},
                         notes={v.name: v.note for v in self.variants if v.note},
                         groups={v.name: v.group for v in self.variants if v.group},
                         questions=dict(self.questions), baselines=dict(self.baselines), also=dict(self.also),
                         convergence=self.convergence, selection=self.selection,
                         description=self.description, seeds=tuple(self.seeds), seeds_of=own_seeds,
                         budgets={v.name: (v.arm, v.budget) for v in self.variants if v.budget},
                         correction=self.correction, tuning=tuning or {}, match=self.match,
                         more_seeds=(self.more_seeds.below, self.more_seeds.seeds) if self.more_seeds else None,
                         added=added or {}, added_why=why or {})


def apply_set(raw: dict, overrides: Any, where: str) -> dict:
    """Apply a `set` table: {"optim.lr": 0.1} or nested {optim = {lr = 0.1}}."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: `set` must be a table of section.key = value")
    raw = C.merge(raw, {k: v for k, v in overrides.items() if "." not in k})
    for key, value in overrides.items():
        if "." in key:
            C.set_dotted(raw, key, value)
    return raw


def check_keys(table: dict, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; valid: {', '.join(valid)}"
                          + did_you_mean(unknown[0], valid))


def study_set_error(base: Path, given: dict, path: Path) -> str | None:
    """The error of the study-level `set` applied alone to the experiment `base` (every variant
    inherits it), naming the first of its keys that fails by itself; None where it is valid, so
    that a variant's failure is the variant's."""
    import copy
    try:
        C.from_dict(apply_set(C.read_toml_chain(base), given, str(path)))
        return None
    except ConfigError as e:
        raw = C.read_toml_chain(base)
        bad = [k for k in given if not applies(copy.deepcopy(raw), {k: given[k]}, path)]
        return f"{path}: the study's set ({bad[0] + ', ' if bad else ''}given to every variant): {e}"


def applies(raw: dict, given: dict, path: Path) -> bool:
    """Whether the settings `given` make a valid config of the experiment dict `raw`."""
    try:
        C.from_dict(apply_set(raw, given, str(path)))
        return True
    except ConfigError:
        return False


def load_variant(item: Any, study: dict, path: Path, index: int,
                 tune_settings: tuple[tuple[int, ...], float | None, int] | None = None) -> Variant:
    where = f"{path} variant {index + 1}"
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ConfigError(f"{where}: each [[variants]] entry needs a name")
    check_keys(item, VARIANT_KEYS, where)
    key = "extends" if "extends" in item else "experiment"
    base = path.parent / item.get("extends", study["experiment"])
    if isinstance(item.get(key, study["experiment"]), str) and not base.exists():
        owner = f"{where} ({item['name']})" if key in item else f"{path}"   # the study's own key: not the variant's
        raise ConfigError(f"{owner}: {key} = {item.get(key, study['experiment'])!r}, but "
                          f"{base.resolve()} does not exist (the path is relative to the study file's folder)")
    raw = apply_set(C.read_toml_chain(base), study.get("set", {}), str(path))
    raw = apply_set(raw, item.get("set", {}), f"{where} ({item['name']})")
    raw["name"] = item["name"]
    target, group = item.get("target"), item.get("group", "")
    if not isinstance(group, str):
        raise ConfigError(f"{where} ({item['name']}): group must be a string, got {group!r}")
    if target is not None and not (isinstance(target, (int, float)) and 0 <= target <= 1):
        raise ConfigError(f"{where}: target must be an accuracy in [0, 1], got {target!r}")
    try:
        cfg = C.from_dict(raw)
    except ConfigError as e:
        ours = study_set_error(base, {k: v for k, v in study.get("set", {}).items() if k not in item.get("set", {})},
                               path)   # a key the variant sets itself is the variant's
        if ours:   # the study's own `set`, which every variant inherits, fails without this variant's: name it
            raise ConfigError(ours) from None
        raise ConfigError(f"{where} ({item['name']}): {e}") from None
    tune = None
    if "tune" in item or "tune" in study:
        tune = fair.load_tune(item.get("tune", study.get("tune")), raw, tune_settings, f"{where} ({item['name']})")
        both = [k for k in (tune.keys if tune is not None else ()) if k in item.get("set", {})]
        if both:   # the grid's values replace it in every run: the set value would be silently ignored
            raise ConfigError(f"{where} ({item['name']}): set gives {both[0]}, which this variant tunes (its grid's "
                              f"values replace it in every run); drop it from set, or give the variant tune = {{}} "
                              "to run it at that value untuned")
        if tune is not None and cfg.data.val_size == 0:
            raise ConfigError(f"{where} ({item['name']}): a tuned variant chooses on the validation split, but "
                              "data.val_size is 0; give it a validation split (e.g. data.val_size = 5000)")
    seeds = load_seeds(item["seeds"], path) if "seeds" in item else None
    return Variant(item["name"], cfg, None if target is None else float(target), str(item.get("note", "")), group,
                   tune, seeds)


def variant_config(path: str | Path, name: str) -> C.ExperimentConfig:
    """The config of the study's variant `name` as the study declares it (budgets expanded, before
    any tuned choice), or one line naming the study's variants."""
    return study_variant(path, name).config


def study_variant(path: str | Path, name: str) -> Variant:
    """The study's variant `name`, or one line naming the study's variants (and the closest)."""
    variants = {v.name: v for v in load_study(path).variants}
    if name not in variants:
        raise ConfigError(f"{path} has no variant {name!r}; its variants: {', '.join(variants)}"
                          + did_you_mean(name, list(variants)))
    return variants[name]


def find_study(arg: str | Path) -> Path:
    """A study file's path; a bare name (`basic`) is studies/basic.toml where that exists."""
    path = Path(arg)
    if path.suffix != ".toml" and not path.exists() and (Path("studies") / f"{arg}.toml").exists():
        return Path("studies") / f"{arg}.toml"
    return path


def load_study(path: str | Path) -> Study:
    path = Path(path)
    raw = C.read_toml(path, "study", "studies/basic.toml")
    if "experiment" not in raw and "variants" not in raw and (set(raw) & (set(C.SECTIONS) | {"extends"})):
        raise ConfigError(f"{path} is an experiment file ({', '.join(sorted(set(raw) & (set(C.SECTIONS) | {'extends'})))}"
                          f"), not a study: train it with `cifarlab run {path}`; a study file names one as "
                          "experiment = \"...\" and lists [[variants]] (docs/STUDIES.md, e.g. studies/basic.toml)")
    check_keys(raw, STUDY_KEYS, str(path))
    if not isinstance(raw.get("experiment"), str):
        raise ConfigError(f"{path}: `experiment` (the reference experiment file) is required")
    seeds = load_seeds(raw.get("seeds"), path)
    items = raw.get("variants") or [{"name": "reference"}]
    tuned = "tune" in raw or any(isinstance(v, dict) and "tune" in v for v in items)
    settings = fair.load_tune_settings(raw, seeds, str(path)) if tuned else None
    if not tuned and any(k in raw for k in ("tune_seeds", "tune_epochs", "tune_extend")):
        raise ConfigError(f"{path}: tune_seeds, tune_epochs and tune_extend need a `tune` grid")
    variants = tuple(load_variant(v, raw, path, i, settings) for i, v in enumerate(items))
    names = [v.name for v in variants]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"{path}: variant name {duplicate!r} is used twice; names must be unique")
    reference = raw.get("reference", names[0])
    if reference not in names:
        raise ConfigError(f"{path}: reference {reference!r} is not a variant; valid: {', '.join(names)}")
    questions, baselines, also = load_groups(raw.get("groups", {}), variants, path)
    variants = with_group_seeds(raw.get("groups", {}), variants, path)
    selection = raw.get("selection", False)
    if not isinstance(selection, bool):
        raise ConfigError(f"{path}: `selection` must be true or false, got {selection!r}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str):
        raise ConfigError(f"{path}: `name` must be a string, got {name!r}")
    try:
        C.check_name(name, "study name")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    match = fair.load_choice(raw, "match", fair.MATCHES, str(path))
    correction = fair.load_choice(raw, "correction", fair.CORRECTIONS, str(path))
    order = fair.load_choice(raw, "order", ORDERS, str(path))
    if order == "group" and not raw.get("groups"):
        raise ConfigError(f"{path}: order = \"group\" claims runs group by group, but the study declares no "
                          "[groups.NAME]; declare them, or leave order at \"seed\"")
    ref = next(v for v in variants if v.name == reference)
    budgets = fair.load_budgets(raw, ref.config.train.epochs, str(path))
    if tuned and selection:
        raise ConfigError(f"{path}: a selection study reads validation only; tune its arms in a study that "
                          "tests (selection = false), or list the grid as variants")
    if match == "flops":
        check_flops_match(variants, path)
    more_seeds = fair.load_more_seeds(raw, seeds, str(path))
    opted_out = load_opt_outs(raw.get("groups", {}), more_seeds is not None, path)
    blind = next((v.name for v in variants if more_seeds and not v.config.data.val_size), None)
    if blind:
        raise ConfigError(f"{path}: more_seeds decides on validation accuracy, but variant {blind!r} holds out no "
                          "validation split (data.val_size = 0); set data.val_size > 0 or leave more_seeds out")
    study = Study(name, path, seeds, reference, variants,
                  str(raw.get("description", "")), questions, baselines, load_convergence(raw, path), selection,
                  also, budgets if len(budgets) > 1 or match != "epochs" or budgets[0].factor != 1 else (),
                  match, correction, order, more_seeds, opted_out)
    return expand_budgets(study) if study.budgets else study


def with_group_seeds(groups: dict, variants: tuple[Variant, ...], path: Path) -> tuple[Variant, ...]:
    """A group's `seeds` become its variants' seeds, unless a variant gives its own."""
    own = {g: load_seeds(t["seeds"], path) for g, t in groups.items() if isinstance(t, dict) and "seeds" in t}
    return tuple(dataclasses.replace(v, seeds=own[v.group]) if v.seeds is None and v.group in own else v
                 for v in variants)


def check_flops_match(variants: tuple[Variant, ...], path: Path) -> None:
    from cifarlab.methods import METHODS, one_view
    for v in variants:
        m = METHODS.get(v.config.train.method)
        if not m.single or m.views is not one_view:
            raise ConfigError(f"{path}: match = \"flops\" compares networks trained one image at a time; variant "
                              f"{v.name!r} trains with method {v.config.train.method!r} (two networks or two views "
                              "per image); give it match = \"epochs\" or leave it out")


def arm_epochs(study: Study, v: Variant, budget: Budget, ref: Variant) -> float:
    """The variant's epochs at `budget`: its schedule stretched by the budget's factor, or, with
    match = "flops", the epochs at which it trains as many FLOPs as the reference arm does."""
    if study.match == "epochs" or v is ref:
        return v.config.train.epochs * budget.factor
    from cifarlab.flops import classes_of, flops_per_image, size_of
    ref_flops = flops_per_image(ref.config.model, classes_of(ref.config), size_of(ref.config))
    own = flops_per_image(v.config.model, classes_of(v.config), size_of(v.config))
    return round(budget.epochs * ref_flops / own, 2)


def expand_budgets(study: Study) -> Study:
    """One experiment per (variant, budget) and one group per (group, budget) where the study has
    several budgets; with one budget (match = "flops" alone), each variant at its matched epochs."""
    ref = next(v for v in study.variants if v.name == study.reference)
    several = len(study.budgets) > 1
    if study.match != "epochs" or len({v.config.train.epochs for v in study.variants}) > 1:
        # arms of different lengths: a budget is named by its multiplier, not by one arm's epochs
        study = dataclasses.replace(study, budgets=tuple(
            dataclasses.replace(b, label=f"x{b.factor:g}".replace(".", "p")) for b in study.budgets))

    def named(name: str, b: Budget) -> str:
        return f"{name}-{b.label}" if several else name
    variants = []
    for b in study.budgets:
        for v in study.variants:
            cfg = fair.stretch(v.config, arm_epochs(study, v, b, ref))
            variants.append(dataclasses.replace(v, name=named(v.name, b), config=dataclasses.replace(cfg, name=named(v.name, b)),
                                                group=named(v.group, b) if v.group else "", arm=v.name,
                                                budget=b.label))
    questions = {named(g, b): (f"{q} (at {b.label[1:].replace('p', '.')}x the schedule)" if b.label.startswith("x")
                               else f"{q} (at {b.epochs:g} epochs)") if several else q
                 for b in study.budgets for g, q in study.questions.items()}
    baselines = {named(g, b): named(base, b) for b in study.budgets for g, base in study.baselines.items()}
    also = {named(g, b): tuple(named(n, b) for n in names) for b in study.budgets for g, names in study.also.items()}
    return dataclasses.replace(study, variants=tuple(variants), reference=named(study.reference, study.budgets[0]),
                               questions=questions, baselines=baselines, also=also,
                               without_more_seeds=frozenset(named(g, b) for b in study.budgets
                                                            for g in study.without_more_seeds))


def load_seeds(seeds: Any, path: Path) -> tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: `seeds` must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: `seeds` lists a seed twice: {seeds}")
    return tuple(seeds)


def load_opt_outs(groups: dict, rule: bool, path: Path) -> frozenset[str]:
    """The groups whose `more_seeds = false` opts them out of the study's rule (where a group's
    validation accuracy is a poor proxy for its effect: noisy labels compress its differences)."""
    out = set()
    for name, table in groups.items():
        if isinstance(table, dict) and "more_seeds" in table:
            if table["more_seeds"] is not False:
                raise ConfigError(f"{path} group {name!r}: more_seeds in a group can only be false (opting the "
                                  f"group out of the study's rule), got {table['more_seeds']!r}")
            if not rule:
                raise ConfigError(f"{path} group {name!r}: more_seeds = false opts out of a study rule, but the "
                                  "study sets no more_seeds = { below = ..., seeds = [...] }")
            out.add(name)
    return frozenset(out)


def load_convergence(raw: dict, path: Path) -> float | None:
    value = raw.get("convergence")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{path}: `convergence` must be a validation accuracy in (0, 1), got {value!r}")
    return float(value)


def load_groups(groups: Any, variants: tuple[Variant, ...],
                path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, tuple[str, ...]]]:
    """(group -> question, group -> baseline, group -> `also` variants) from `groups`, checked
    against the variants' `group` keys."""
    if not isinstance(groups, dict):
        raise ConfigError(f"{path}: `groups` must be a table of name = {{ question = \"...\" }}")
    questions, baselines, also = {}, {}, {}
    for name, table in groups.items():
        where = f"{path} group {name!r}"
        if not GROUP_NAME.fullmatch(name):
            raise ConfigError(f"{where}: a group name may use only letters, digits, - and _")
        if not isinstance(table, dict) or not isinstance(table.get("question"), str):
            raise ConfigError(f"{where}: needs question = \"...\" (the question the group answers)")
        check_keys(table, GROUP_KEYS, where)
        questions[name] = table["question"]
        if "baseline" in table:
            baselines[name] = table["baseline"]
        if "also" in table:
            also[name] = load_also(table["also"], name, variants, where)
    check_group_members(variants, questions, baselines, path)
    return questions, baselines, also


def load_also(names: Any, group: str, variants: tuple[Variant, ...], where: str) -> tuple[str, ...]:
    """A group's `also`: variants of other groups shown and compared in this group too, so that a
    cell two questions share (e.g. "augmentation, no dropout, no BatchNorm") runs once."""
    valid = [v.name for v in variants if v.group != group]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: `also` must be a list of variant names, got {names!r}")
    for n in names:
        if n not in valid:
            raise ConfigError(f"{where}: `also` names {n!r}, which is not a variant of another group; "
                              f"valid: {', '.join(valid)}")
    return tuple(dict.fromkeys(names))


def check_group_members(variants: tuple[Variant, ...], questions: dict[str, str], baselines: dict[str, Any],
                        path: Path) -> None:
    names = [v.name for v in variants]
    declared = ", ".join(questions) or "(none: declare them in a top-level `groups` table)"
    for v in variants:
        if v.group and v.group not in questions:
            raise ConfigError(f"{path}: variant {v.name!r} has group {v.group!r}, which is not declared; "
                              f"declared groups: {declared}")
    for name in questions:
        if not any(v.group == name for v in variants):
            raise ConfigError(f"{path}: group {name!r} is declared but no variant has group = {name!r}")
        if name in baselines and baselines[name] not in names:
            raise ConfigError(f"{path}: baseline {baselines[name]!r} of group {name!r} is not a variant; "
                              f"valid: {', '.join(names)}")
