"""The study planner: which runs a study needs now, given what the results store holds.

A study without `tune` needs its variants' runs (`Study.runs`). A tuned study first needs each
tuned arm's tuning runs (`cifarlab.study.fair`): when they have all finished, the arm's choice is
made from their validation accuracy (growing the grid past an edge value first, which plans more
tuning runs) and recorded in the store; from then on the plan also holds that arm's test runs at
the chosen value. Every process plans from the store, so several workers agree on the choice, and
a rerun (or the report) finds the recorded one.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab import config as C
from cifarlab.errors import ConfigError
from cifarlab.results.store import RunKey, Store
from cifarlab.stats import mean_std, seedwise
from cifarlab.study import fair
from cifarlab.study.spec import Study, Variant


@dataclass
class ArmTuning:
    """One arm's tuning: its grid as grown so far, its runs, their scores and the choice."""
    arm: str
    keys: tuple[str, ...]
    epochs: float
    seeds: tuple[int, ...]
    tune_hash: str
    runs: list[tuple[dict, RunKey, C.ExperimentConfig]] = field(default_factory=list)  # (values, key, config)
    scores: list[tuple[dict, float, int]] = field(default_factory=list)  # (values, mean val acc, n) when all done
    grown: list[tuple[str, Any]] = field(default_factory=list)           # (key, value) added past an edge
    choice: dict | None = None
    reason: str = ""


@dataclass
class Plan:
    runs: dict[RunKey, C.ExperimentConfig]      # tuning runs first, then the test runs known so far
    tuning: dict[str, ArmTuning]                 # arm -> its tuning
    names: dict[RunKey, str]                     # key -> the variant (or tuning run) it belongs to
    extra: dict[str, tuple[int, ...]] = field(default_factory=dict)  # variant -> seeds `more_seeds` added
    why: dict[str, str] = field(default_factory=dict)   # variant -> the validation difference that added them

    @property
    def choices(self) -> dict[str, dict]:
        return {arm: t.choice for arm, t in self.tuning.items() if t.choice is not None}

    @property
    def undecided(self) -> list[str]:
        return [arm for arm, t in self.tuning.items() if t.choice is None]


def tuned_arms(study: Study) -> dict[str, Variant]:
    """arm -> its variant at the first budget (the one its tuning runs stretch from)."""
    out: dict[str, Variant] = {}
    for v in study.variants:
        if v.tune is not None:
            out.setdefault(v.arm or v.name, v)
    return out


def tuning_base(v: Variant) -> tuple[C.ExperimentConfig, float]:
    """The arm's tuning config (its tuning length, the test set never read) and that length."""
    epochs = v.tune.epochs or v.config.train.epochs
    cfg = fair.stretch(v.config, epochs)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, test=False)), epochs


def tune_arm(study: Study, arm: str, v: Variant, store: Store | None, recorded: dict) -> ArmTuning:
    """The arm's tuning as far as the store's runs take it."""
    base, epochs = tuning_base(v)
    t = ArmTuning(arm, v.tune.keys, epochs, v.tune.seeds, fair.tune_hash(base, v.tune, epochs))
    grid = {k: list(values) for k, values in v.tune.grid}
    steps = dict.fromkeys(grid, 0)
    while True:
        t.runs = []
        for values in fair.combos(grid):
            cfg = fair.apply(base, values)
            for seed in v.tune.seeds:
                seeded = dataclasses.replace(cfg, name=fair.tune_name(arm, values),
                                             train=dataclasses.replace(cfg.train, seed=seed))
                t.runs.append((values, RunKey(study.name, fair.tune_name(arm, values), seed, C.config_hash(seeded)),
                               seeded))
        rows = [store.run(key) if store is not None else None for _, key, _ in t.runs]
        done = [r is not None and r["status"] == "done" for r in rows]
        t.scores = []
        for values in fair.combos(grid):   # every value's mean so far (the report shows them while tuning)
            accs = [r["val_acc"] for (vals, _, _), r, d in zip(t.runs, rows, done)
                    if vals == values and d and r["val_acc"] is not None]
            t.scores.append((values, mean_std(accs)[0] if accs else float("-inf"), len(accs)))
        if not all(done):
            break
        best = max(t.scores, key=lambda s: s[1])[0]   # ties: the first in grid order
        grew = False
        for key in grid:
            new = fair.grown(grid[key], best[key]) if steps[key] < v.tune.extend else None
            if new is not None and not valid(base, {**best, key: new}):
                new = None   # a value the config refuses (an EMA decay past 1, half a batch): the grid ends here
            if new is not None:
                grid[key] = sorted(grid[key] + [new]) if fair.numeric(grid[key]) else grid[key] + [new]
                steps[key] += 1
                t.grown.append((key, new))
                grew = True
        if not grew:
            t.choice, t.reason = best, reason(t, best, grid, steps, v.tune.extend)
            break
    if (arm, t.tune_hash) in recorded:   # decided before: that choice stands
        t.choice, t.reason = recorded[arm, t.tune_hash]
        t.reason = t.reason.replace("after 0 of 0 step(s)", NO_GROWTH)   # as recorded before 2026-12-07
    elif t.choice is not None and store is not None:
        t.choice, t.reason = store.record_choice(study.name, arm, t.tune_hash, t.choice, t.reason)
    return t


def valid(base: C.ExperimentConfig, values: dict) -> bool:
    try:
        fair.apply(base, values)
    except ConfigError:
        return False
    return True


NO_GROWTH = "(tune_extend = 0: the grid does not grow)"


def reason(t: ArmTuning, best: dict, grid: dict[str, list], steps: dict[str, int], extend: int) -> str:
    score = next(s for s in t.scores if s[0] == best)
    said = (f"{setting(best)}: the best mean validation accuracy, {100 * score[1]:.2f} % over seed(s) "
            f"{', '.join(map(str, t.seeds))} at {t.epochs:g} epochs, of {len(t.scores)} setting(s)")
    if t.grown:
        said += "; the grid grew past its edge to " + ", ".join(f"{k} = {v:g}" for k, v in t.grown)
    edge = [k for k in grid if fair.numeric(grid[k]) and len(grid[k]) > 1 and best[k] in (min(grid[k]), max(grid[k]))]
    if edge:
        said += (f"; still at the grid's edge in {', '.join(edge)} "
                 + (f"after {max(steps[k] for k in edge)} of {extend} step(s)" if extend else NO_GROWTH)
                 + ": the best value may lie beyond")
    return said


def setting(values: dict) -> str:
    return ", ".join(f"{k} = {v:g}" if fair.numeric([v]) else f"{k} = {v}" for k, v in values.items())


def plan(study: Study, store: Store | None, only: tuple[str, ...] = ()) -> Plan:
    """The runs the study needs now (`only`: of those variants and their arms' tuning), in claim
    order: every tuning run first, then the test runs, seed-major, then the seeds `more_seeds` added
    (with `order = "group"`, that order within each group, group after group: `claim_groups`; a
    group's added seeds close it). Without a store, the plan of an empty one."""
    recorded = store.choices(study.name) if store is not None else {}
    wanted = {v.arm or v.name for v in study.variants if not only or v.name in only}
    tuning = {arm: tune_arm(study, arm, v, store, recorded) for arm, v in tuned_arms(study).items() if arm in wanted}
    runs, names = {}, {}
    for t in tuning.values():
        for _, key, cfg in t.runs:
            runs[key], names[key] = cfg, key.experiment
    choices = {arm: t.choice for arm, t in tuning.items() if t.choice is not None}
    why: dict[str, str] = {}
    extra = more_seeds(study, store, choices, why)
    later = []   # the seeds `more_seeds` added come after every planned seed of every budget (of the group)
    for v, cfg, key in with_seeds(study, extra).runs(choices):
        if not only or v.name in only:
            if key.seed in extra.get(v.name, ()):
                later.append((key, cfg, v.name))
            else:
                runs[key], names[key] = cfg, v.name
    for key, cfg, name in later:
        runs[key], names[key] = cfg, name
    if study.order == "group":
        groups = list(study.questions)
        group = claim_groups(study, tuning)
        added = {key for key, _, _ in later}   # a group's added seeds close that group, before the next one
        runs = {key: runs[key] for key in sorted(
            runs, key=lambda k: (groups.index(group[names[k]]) if group.get(names[k]) in groups
                                 else len(groups), k in added))}
    return Plan(runs, tuning, names, extra, why)


def more_seeds(study: Study, store: Store | None, choices: dict[str, dict],
               why: dict[str, str] | None = None) -> dict[str, tuple[int, ...]]:
    """variant -> the seeds the study's `more_seeds` rule adds to it: for each group, every member
    (and `also` variant) whose every planned seed has finished, as have the baseline's, and whose mean
    validation-accuracy difference with the baseline over their common seeds is under `below` points
    gets the rule's seeds, and so does the baseline. Decided from validation accuracy only."""
    rule = study.more_seeds
    if rule is None or store is None:
        return {}
    finished = finished_val(study, store, choices)
    extra: dict[str, tuple[int, ...]] = {}
    for base, name in comparisons(study):
        base_val = finished(base)
        val = finished(name) if base_val is not None else None
        common = seedwise(val, base_val) if val is not None else {}
        diff = 100 * sum(common.values()) / len(common) if common else None
        if diff is not None and abs(diff) < rule.below:
            extra[name] = extra[base] = rule.seeds
            if why is not None:   # what the report says of the decision
                why[name] = f"validation {diff:+.2f} points against `{base}` over seeds {', '.join(map(str, common))}"
                why.setdefault(base, "a baseline")
    own = {v.name: study.seeds_of(v) for v in study.variants}   # a seed a variant plans anyway is not added
    return {name: added for name, seeds in extra.items() if (added := tuple(s for s in seeds if s not in own[name]))}


def comparisons(study: Study) -> list[tuple[str, str]]:
    """(baseline, variant) of each comparison the `more_seeds` rule reads: in every group that takes
    part, each member and `also` variant against the group's baseline (its first member by default)."""
    out = []
    for group in (g for g in study.questions if g not in study.without_more_seeds):
        members = [v.name for v in study.variants if v.group == group]
        base = study.baselines.get(group) or (members[0] if members else None)
        out += [(base, name) for name in dict.fromkeys(members + list(study.also.get(group, ()))) if base and name != base]
    return out


def finished_val(study: Study, store: Store, choices: dict[str, dict]):
    """variant -> {seed: validation accuracy} once every seed it plans (without `more_seeds`) is done
    with a validation accuracy, else None."""
    keys: dict[str, dict[int, RunKey]] = {}
    for v, _, key in study.runs(choices):
        keys.setdefault(v.name, {})[key.seed] = key

    @functools.cache   # a baseline is read once, not once per comparison
    def finished(name: str) -> dict[int, float] | None:
        rows = {seed: store.run(key) for seed, key in keys.get(name, {}).items()}
        if not rows or any(r is None or r["status"] != "done" or r["val_acc"] is None for r in rows.values()):
            return None
        return {seed: r["val_acc"] for seed, r in rows.items()}
    return finished


def with_seeds(study: Study, extra: dict[str, tuple[int, ...]]) -> Study:
    """The study with each variant's seeds followed by the seeds `extra` adds to it (`more_seeds`
    adds none a variant plans already)."""
    if not extra:
        return study
    return dataclasses.replace(study, variants=tuple(
        dataclasses.replace(v, seeds=study.seeds_of(v) + extra[v.name]) if v.name in extra else v
        for v in study.variants))


def claim_groups(study: Study, tuning: dict[str, "ArmTuning"]) -> dict[str, str]:
    """experiment -> the group whose runs it is claimed with under `order = "group"`: the first group,
    in declaration order, that has the variant as a member, its baseline or in `also` (a group's
    answer needs them all); a tuning run goes with its arm's earliest variant. Absent: no group."""
    out: dict[str, str] = {}
    for g in study.questions:
        for name in [v.name for v in study.variants if v.group == g] + [study.baselines.get(g, "")] + list(study.also.get(g, ())):
            out.setdefault(name, g)
    groups = list(study.questions)
    for arm, t in tuning.items():
        mine = [out[v.name] for v in study.variants if (v.arm or v.name) == arm and v.name in out]
        if mine:
            out |= {key.experiment: min(mine, key=groups.index) for _, key, _ in t.runs}
    return out


def pending_tests(study: Study, p: Plan) -> list[tuple[str, C.ExperimentConfig, bool]]:
    """(variant, config, repeats) of each test run not planned yet because its arm is still tuning
    (for estimates: the config carries the arm's untuned value). `repeats`: the run has a tuning
    seed and the tuning length, so it will test the chosen tuning run's weights (`shares`), not train."""
    out = []
    for v in study.variants:
        t = p.tuning.get(v.arm or v.name)
        if v.tune is None or t is None or t.choice is not None:
            continue
        for s in study.seeds_of(v):
            cfg = dataclasses.replace(v.config, train=dataclasses.replace(v.config.train, seed=s))
            out.append((v.name, cfg, s in t.seeds and abs(cfg.train.epochs - t.epochs) < 1e-9))
    return out


def study_spec(study: Study, store: Store | None, p: Plan | None = None):
    """The study's report spec with every tuned arm's recorded choice and its tuning, for the report
    (`p`: the study's plan against `store`, if already made)."""
    if not study.tuned and study.more_seeds is None:
        return study.spec()
    p = p or plan(study, store)
    if not study.tuned:
        return with_seeds(study, p.extra).spec(added=p.extra, why=p.why)
    tuning = {arm: {"keys": t.keys, "epochs": t.epochs, "seeds": t.seeds, "reason": t.reason,
                    "chosen": setting(t.choice) if t.choice is not None else None,
                    "scores": [(setting(values), acc, n) for values, acc, n in t.scores], "runs": len(t.runs),
                    "values": [values for values, _, _ in t.scores],
                    "twin": twin(study, arm, t.epochs),
                    "run_keys": [(key.experiment, key.config_hash, key.seed) for _, key, _ in t.runs]}
              for arm, t in p.tuning.items()}
    return with_seeds(study, p.extra).spec(p.choices, tuning, p.extra, p.why)


def twin(study: Study, arm: str, epochs: float) -> str | None:
    """The arm's test variant at its tuning length (its seeds' validation accuracies measure the
    seed-to-seed noise a one-seed choice is made under), or None where no budget has that length."""
    return next((v.name for v in study.variants if (v.arm or v.name) == arm and v.tune is not None
                 and abs(v.config.train.epochs - epochs) < 1e-9), None)


def shares(key: RunKey, cfg: C.ExperimentConfig, share: dict[RunKey, set[RunKey]], tuned: bool) -> bool:
    """Whether the run of `key` trains with the study's shared folder: it has a sibling now
    (`sharing`), or it is a tuned study's run that reads no test set (a tuning run: the run of its
    arm at the same seed and length, planned once the arm chooses this value, then tests its
    weights instead of retraining). A study without `tune` has no such later run, so its
    validation-only runs keep to their own folders."""
    return key in share or (tuned and not cfg.train.test)


def sharing(plan: dict[RunKey, C.ExperimentConfig]) -> dict[RunKey, set[RunKey]]:
    """Each run of `plan` that shares work with a sibling of the same seed (`train.train`'s `shared`)
    -> those siblings: runs with a validation split that differ only in `train.select` (one
    training, two choices of weights), and runs of a two-phase method that differ only in its
    second phase (SupCon: in their probe; one pre-training, `methods.Pretraining.identity`)."""
    from cifarlab.methods import pretrain_epochs
    from cifarlab.train import pretraining_hash
    groups: dict[tuple, list[RunKey]] = {}
    for key, cfg in plan.items():
        if cfg.data.val_size > 0:
            groups.setdefault(("select", C.selection_hash(cfg), key.seed), []).append(key)
        if pretrain_epochs(cfg):
            groups.setdefault(("pretrain", cfg.train.method, pretraining_hash(cfg), key.seed), []).append(key)
    out: dict[RunKey, set[RunKey]] = {}
    for keys in groups.values():
        for key in keys if len(keys) > 1 else ():
            out.setdefault(key, set()).update(k for k in keys if k != key)
    return out


def takes_here(cfg: C.ExperimentConfig, shared: Path) -> bool:
    """Whether the shared folder `shared` (RUNS_DIR/STUDY/_shared) holds the training a run of `cfg`
    would take instead of repeating it (a sibling's or a tuning run's weights, a pre-training): files
    of an earlier session's working directory are not there on a fresh checkout."""
    from cifarlab.methods import pretrain_epochs
    from cifarlab.train import pretrained_path, trained_path
    return ((cfg.data.val_size > 0 and trained_path(shared, cfg).is_file())
            or bool(pretrain_epochs(cfg)) and pretrained_path(shared, cfg).is_file())


def takes_done_sibling(key: RunKey, cfg: C.ExperimentConfig, share: dict[RunKey, set[RunKey]], store: Store,
                       shared: Path | None) -> bool:
    """Whether the run of `key` only tests training a finished sibling left (`sharing`), its files in
    `shared` (`takes_here`; None: assumed there)."""
    return (any(store.status_of(k) == "done" for k in share.get(key, ()))
            and (shared is None or takes_here(cfg, shared)))


def shared_wanted(study: Study, store: Store) -> set[str]:
    """The file names under RUNS_DIR/STUDY/_shared that a run the study still needs may take: each
    unfinished run's, and for an arm still tuning, each of its tuning runs' (its chosen value's test
    run, not planned yet, takes that one). The rest are spent: taken by the sibling they were left
    for, or left by a tuning run whose value was not chosen (`scripts/inflight.sh` carries only these)."""
    from cifarlab.methods import pretrain_epochs
    from cifarlab.train import pretrained_path, trained_path
    p = plan(study, store)
    configs = [cfg for key, cfg in p.runs.items() if store.status_of(key) != "done"]
    configs += [cfg for arm in p.undecided for _, _, cfg in p.tuning[arm].runs]
    names = {trained_path(Path(), cfg).name for cfg in configs if cfg.data.val_size > 0}
    return names | {pretrained_path(Path(), cfg).name for cfg in configs if pretrain_epochs(cfg)}


def current_runs(study: Study, store: Store, p: Plan | None = None) -> set[tuple[str, str, int]]:
    """(experiment, config hash, seed) of every run the study file plans now, its tuning runs
    included: what its report counts. A finished run of the study outside it belongs to a variant
    renamed or changed since it ran (`results export --study` marks it current = 0). `p`: the
    study's plan against `store`, if already made (planned once here otherwise)."""
    if p is None and (study.tuned or study.more_seeds is not None):
        p = plan(study, store)
    spec = study_spec(study, store, p)
    current = {(e, h, seed) for e, h in spec.hashes.items() for seed in (*spec.planned(e), *spec.added.get(e, ()))}
    if study.tuned:
        current |= {(key.experiment, key.config_hash, key.seed) for arm in p.tuning.values() for _, key, _ in arm.runs}
    return current
