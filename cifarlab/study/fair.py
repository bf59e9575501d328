"""Fair comparisons in a study file: each arm tuned on validation, a budget axis, compute-matched arms.

    tune = { "optim.lr" = [0.05, 0.1, 0.2, 0.4] }   # every variant chooses its own value on validation
    tune_seeds = [0]                                # seeds of the tuning runs (default: the study's first)
    tune_epochs = 5                                 # their length (default: each arm's epochs at the first budget)
    tune_extend = 2                                 # steps a grid may grow past an edge value (default 2)
    budgets = [1, 4]                                # every arm at 1x and 4x its schedule (stretched, not truncated)
    # budget_epochs = [5, 20]                       # or explicit epochs of the reference arm
    match = "flops"                                 # arms train as many FLOPs as the reference at each budget
    correction = "holm"                             # Holm-corrected findings, unstable seeds, seeds needed

A variant's own `tune` table replaces the study's (`tune = {}`: none for that variant); a group's
or a variant's `seeds` replace the study's seeds for its runs (5 where effects are small).

Each tuned arm first trains its tuning runs: every grid value (the product, for several keys) at
`tune_epochs` on `tune_seeds`, with `train.test = false`, so the test set is never read. The arm's
value is the one with the best mean validation accuracy; where that value lies at the edge of a
numeric grid, the grid grows one step past it (the ratio of its two outer values, or their
difference when the grid is not all positive) and the new value is tuned too, at most `tune_extend`
times per key. The choice and the reason are recorded in the results store (`tune_choices`), and the
arm's test runs train at the chosen value at every budget (`cifarlab.study.plan`; an epoch-valued
choice, e.g. a warm-up, is stretched from the tuning length with the rest of the schedule).

With budgets, each arm becomes one experiment per budget, named `ARM-Eep` (E: the reference arm's
epochs at that budget), and each group is answered at every budget (`GROUP-Eep`); the report then
says per comparison whether its conclusion holds at every budget, flips, or is distinguishable only
at some. Stretching multiplies every epoch-valued key: train.epochs, the warm-up, the step and
restart periods, co-teaching's forget ramp and the mixing cut-off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from cifarlab import config as C
from cifarlab.errors import ConfigError, did_you_mean

# Epoch-valued keys: a budget multiplies them all, so the schedule keeps its shape.
STRETCHED = (("train", "epochs"), ("schedule", "warmup"), ("schedule", "step_every"),
             ("schedule", "restart_every"), ("train", "forget_epochs"), ("augment", "mix_off"))
MATCHES = ("epochs", "flops")
CORRECTIONS = ("none", "holm")
TUNE_NAME = "tune"   # tuning runs are experiments ARM-tune-KEYVALUE


@dataclass(frozen=True)
class Tune:
    grid: tuple[tuple[str, tuple[Any, ...]], ...]   # (section.key, values as given), in the file's order
    seeds: tuple[int, ...]
    epochs: float | None                            # None: the arm's epochs at the first budget
    extend: int = 2                                 # grid steps allowed past an edge, per key

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.grid)


@dataclass(frozen=True)
class Budget:
    label: str          # "20ep": the reference arm's epochs at this budget
    factor: float       # multiplier of each arm's schedule (match = "epochs")
    epochs: float       # the reference arm's epochs at this budget


# ----------------------------------------------------------------------------- parsing

def load_tune(table: Any, raw: dict, settings: tuple[tuple[int, ...], float | None, int], where: str) -> Tune | None:
    """A `tune` table -> Tune (None for an empty table); every key must be a config key and every
    value one the config accepts."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: `tune` must be a table of \"section.key\" = [values], got {table!r}")
    if not table:
        return None
    grid = []
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: tune grid {key!r} must be a non-empty list of values, got {values!r}")
        check_key(key, where)   # an unknown key first: the likelier mistake
        if len(values) == 1:
            raise ConfigError(f"{where}: tune grid {key!r} has one value, {values[0]!r}: the arm would choose "
                              f"nothing and spend a tuning run on it; give two or more values, or set "
                              f"{{ {json.dumps(key)} = {json.dumps(values[0])} }} instead")
        if len(set(map(json.dumps, values))) != len(values):
            raise ConfigError(f"{where}: tune grid {key!r} lists a value twice: {values}")
        for v in values:
            try:
                C.from_dict(with_values(raw, {key: v}))
            except ConfigError as e:
                raise ConfigError(f"{where}: tune {key} = {v!r}: {e}") from None
        grid.append((key, tuple(values)))
    seeds, epochs, extend = settings
    return Tune(tuple(grid), seeds, epochs, extend)


# Keys a grid may not tune: the seed, the budget, the test switch, and what defines the data and its
# validation split (a choice must be made on one validation set, the one its test runs share).
UNTUNABLE = ("train.seed", "train.epochs", "train.test", "data.dataset", "data.labels", "data.val_size",
             "data.split_seed", "data.subset", "data.image_size", "data.label_column")


def check_key(key: str, where: str) -> None:
    section, _, leaf = key.partition(".")
    fields = {f.name for f in dataclasses.fields(C.SECTIONS[section])} if section in C.SECTIONS else set()
    if key in UNTUNABLE:
        raise ConfigError(f"{where}: tune key {key!r} is not a key a study can tune: not {', '.join(UNTUNABLE)} "
                          "(the budget sets the epochs; a choice is made on one data set and validation split)")
    option = leaf.partition(".")[2] if leaf.startswith("options.") and "options" in fields else ""
    if leaf not in fields and not option.isidentifier():
        every = [f"{name}.{f.name}" for name, sec in C.SECTIONS.items() for f in dataclasses.fields(sec)]
        raise ConfigError(f"{where}: tune key {key!r} is not a config key; give section.key of `cifarlab list keys` "
                          "(or a plug-in's option, model.options.NAME or loss.options.NAME)"
                          + did_you_mean(key, [k for k in every if k not in UNTUNABLE], show=str))


def load_tune_settings(raw: dict, seeds: tuple[int, ...], where: str) -> tuple[tuple[int, ...], float | None, int]:
    """(seeds, epochs, extend) of the study's tuning runs, checked."""
    tseeds = raw.get("tune_seeds", [seeds[0]])
    if not isinstance(tseeds, list) or not tseeds or not all(type(s) is int and s >= 0 for s in tseeds) \
            or len(set(tseeds)) != len(tseeds):
        raise ConfigError(f"{where}: `tune_seeds` must be a non-empty list of distinct integers >= 0, got {tseeds!r}")
    epochs = raw.get("tune_epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0):
        raise ConfigError(f"{where}: `tune_epochs` must be a number of epochs > 0, got {epochs!r}")
    extend = raw.get("tune_extend", 2)
    if type(extend) is not int or extend < 0:
        raise ConfigError(f"{where}: `tune_extend` must be an integer >= 0 (grid steps past an edge), got {extend!r}")
    return tuple(tseeds), None if epochs is None else float(epochs), extend


@dataclass(frozen=True)
class MoreSeeds:
    """`more_seeds = { below = 0.5, seeds = [3, 4] }`: a comparison with its group's baseline whose
    validation-accuracy difference, over the seeds both have finished, is smaller than `below`
    points trains `seeds` too, for the variant and the baseline (small effects need more seeds;
    the test set plays no part in the decision)."""
    below: float                # points of validation accuracy
    seeds: tuple[int, ...]


def load_more_seeds(raw: dict, seeds: tuple[int, ...], where: str) -> MoreSeeds | None:
    rule = raw.get("more_seeds")
    if rule is None:
        return None
    form = "more_seeds = { below = POINTS, seeds = [S, ...] }"
    if not isinstance(rule, dict) or set(rule) != {"below", "seeds"}:
        raise ConfigError(f"{where}: `more_seeds` must be a table {form}, got {rule!r}")
    below, extra = rule["below"], rule["seeds"]
    if isinstance(below, bool) or not isinstance(below, (int, float)) or not 0 < below <= 100:
        raise ConfigError(f"{where}: more_seeds.below must be points of accuracy, > 0 and <= 100, got {below!r}")
    if not isinstance(extra, list) or not extra or not all(type(s) is int and s >= 0 for s in extra) \
            or len(set(extra)) != len(extra) or set(extra) & set(seeds):
        raise ConfigError(f"{where}: more_seeds.seeds must be distinct integers >= 0 not among the study's seeds "
                          f"{list(seeds)}, got {extra!r}")
    if not raw.get("groups"):
        raise ConfigError(f"{where}: more_seeds compares each group's variants with its baseline, but the study "
                          "declares no [groups.NAME]; declare them, or leave more_seeds out")
    return MoreSeeds(float(below), tuple(extra))


def load_budgets(raw: dict, ref_epochs: float, where: str) -> tuple[Budget, ...]:
    """`budgets` (multipliers) or `budget_epochs` (the reference arm's epochs); default one budget, 1x."""
    if "budgets" in raw and "budget_epochs" in raw:
        raise ConfigError(f"{where}: give `budgets` (multipliers) or `budget_epochs`, not both")
    key = "budget_epochs" if "budget_epochs" in raw else "budgets"
    values = raw.get(key, [1])
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
        raise ConfigError(f"{where}: `{key}` must be a non-empty list of numbers > 0, got {values!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: `{key}` lists a budget twice: {values}")
    factors = [v / ref_epochs for v in values] if key == "budget_epochs" else [float(v) for v in values]
    return tuple(Budget(f"{ref_epochs * f:g}ep".replace(".", "p"), f, ref_epochs * f) for f in factors)


def load_choice(raw: dict, key: str, valid: tuple[str, ...], where: str) -> str:
    value = raw.get(key, valid[0])
    if value not in valid:
        raise ConfigError(f"{where}: `{key}` must be one of {', '.join(valid)}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- configs

def with_values(raw: dict, values: dict[str, Any]) -> dict:
    out = json.loads(json.dumps(raw))
    for key, value in values.items():
        C.set_dotted(out, key, value)
    return out


def apply(cfg: C.ExperimentConfig, values: dict[str, Any]) -> C.ExperimentConfig:
    """The config with `values` ({"optim.lr": 0.2}) set."""
    return C.from_dict(with_values(C.to_dict(cfg), values)) if values else cfg


def stretch(cfg: C.ExperimentConfig, epochs: float) -> C.ExperimentConfig:
    """The config trained for `epochs`, its schedule stretched: every epoch-valued key scaled alike."""
    factor = epochs / cfg.train.epochs
    if factor == 1:
        return cfg
    values = {f"{s}.{k}": round(getattr(getattr(cfg, s), k) * factor, 6) for s, k in STRETCHED}
    return apply(cfg, values)


def stretch_choice(choice: dict[str, Any], factor: float) -> dict[str, Any]:
    """A tuned choice for a run `factor` times the tuning runs' length: its epoch-valued keys (a
    warm-up chosen at 5 epochs) scaled as `stretch` scales the schedule, the others as chosen."""
    if factor == 1:
        return choice
    return {k: round(v * factor, 6) if tuple(k.split(".")) in STRETCHED and numeric([v]) else v
            for k, v in choice.items()}


def tune_name(arm: str, values: dict[str, Any]) -> str:
    """ARM-tune-lr0.16 (the key's last part and the value; several keys joined with -)."""
    parts = [f"{k.rsplit('.', 1)[1]}{value_text(v)}" for k, v in values.items()]
    return f"{arm}-{TUNE_NAME}-" + "-".join(parts)


def value_text(v: Any) -> str:
    text = f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)
    return "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in text)


def tune_hash(cfg: C.ExperimentConfig, tune: Tune, epochs: float) -> str:
    """What an arm's choice depends on: its config, the grid, the seeds, the tuning length, the extension."""
    what = {"config": C.config_hash(cfg), "grid": [[k, list(v)] for k, v in tune.grid], "seeds": list(tune.seeds),
            "epochs": epochs, "extend": tune.extend}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- grids

def numeric(values: tuple | list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def grown(values: list, edge: Any) -> Any | None:
    """The grid's next value past `edge` (its smallest or largest value), or None where it cannot
    grow: not numeric, one value only, or a step that would cross zero."""
    if not numeric(values) or len(values) < 2 or edge not in (min(values), max(values)):
        return None
    ordered = sorted(values)
    up = edge == ordered[-1]
    inner, outer = (ordered[-2], ordered[-1]) if up else (ordered[1], ordered[0])
    if all(v > 0 for v in values):
        new = outer * (outer / inner)
    else:
        new = outer + (outer - inner)
        if outer == 0 or (new > 0) != (outer > 0):   # past 0 (weight decay [0, 5e-4] does not try -5e-4)
            return None
    new = float(f"{new:.6g}")
    if all(type(v) is int for v in values) and new == int(new):
        new = int(new)
    return None if new in values or (math.isnan(new) if isinstance(new, float) else False) else new


def combos(grid: dict[str, list]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
