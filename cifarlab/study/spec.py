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
from cifarlab.errors import ConfigError
from cifarlab.results.store import RunKey

if TYPE_CHECKING:
    from cifarlab.report import StudySpec

STUDY_KEYS = ("name", "experiment", "seeds", "reference", "set", "variants", "description", "groups",
              "convergence", "selection")
VARIANT_KEYS = ("name", "set", "extends", "target", "note", "group")
GROUP_KEYS = ("question", "baseline", "also")
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

    def runs(self) -> list[tuple[Variant, C.ExperimentConfig, RunKey]]:
        """Every (variant, seeded config, key), seed-major: early seeds give complete comparisons first."""
        out = []
        for seed in self.seeds:
            for v in self.variants:
                cfg = dataclasses.replace(v.config, train=dataclasses.replace(v.config.train, seed=seed))
                out.append((v, cfg, RunKey(self.name, v.name, seed, C.config_hash(cfg))))
        return out

    def spec(self) -> "StudySpec":
        from cifarlab.report import StudySpec
        return StudySpec(name=self.name, reference=self.reference,
                         experiments=tuple(v.name for v in self.variants),
                         targets={v.name: v.target for v in self.variants if v.target is not None},
                         hashes={v.name: C.config_hash(v.config) for v in self.variants},
                         notes={v.name: v.note for v in self.variants if v.note},
                         groups={v.name: v.group for v in self.variants if v.group},
                         questions=dict(self.questions), baselines=dict(self.baselines), also=dict(self.also),
                         convergence=self.convergence, selection=self.selection,
                         description=self.description, seeds=tuple(self.seeds))


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
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; valid: {', '.join(valid)}")


def load_variant(item: Any, study: dict, path: Path, index: int) -> Variant:
    where = f"{path} variant {index + 1}"
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ConfigError(f"{where}: each [[variants]] entry needs a name")
    check_keys(item, VARIANT_KEYS, where)
    base = path.parent / item.get("extends", study["experiment"])
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
        raise ConfigError(f"{where} ({item['name']}): {e}") from None
    return Variant(item["name"], cfg, None if target is None else float(target), str(item.get("note", "")), group)


def load_study(path: str | Path) -> Study:
    path = Path(path)
    raw = C.read_toml(path, "study", "studies/basic.toml")
    check_keys(raw, STUDY_KEYS, str(path))
    if not isinstance(raw.get("experiment"), str):
        raise ConfigError(f"{path}: `experiment` (the reference experiment file) is required")
    seeds = load_seeds(raw.get("seeds"), path)
    items = raw.get("variants") or [{"name": "reference"}]
    variants = tuple(load_variant(v, raw, path, i) for i, v in enumerate(items))
    names = [v.name for v in variants]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"{path}: variant name {duplicate!r} is used twice; names must be unique")
    reference = raw.get("reference", names[0])
    if reference not in names:
        raise ConfigError(f"{path}: reference {reference!r} is not a variant; valid: {', '.join(names)}")
    questions, baselines, also = load_groups(raw.get("groups", {}), variants, path)
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
    return Study(name, path, seeds, reference, variants,
                 str(raw.get("description", "")), questions, baselines, load_convergence(raw, path), selection,
                 also)


def load_seeds(seeds: Any, path: Path) -> tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: `seeds` must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: `seeds` lists a seed twice: {seeds}")
    return tuple(seeds)


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
