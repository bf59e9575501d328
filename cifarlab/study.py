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

from tqdm import tqdm

from cifarlab import config as C
from cifarlab.errors import ConfigError
from cifarlab.results.store import RunKey, Store

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


# ----------------------------------------------------------------------------- running

class DataCache:
    """Load each dataset once and split it once per data config, for all runs of a process."""

    def __init__(self, data_dir: str | None, download: bool, progress: bool):
        self.data_dir, self.download, self.progress = data_dir, download, progress
        self.arrays: dict[str, Any] = {}
        self.splits: dict[C.DataConfig, Any] = {}

    def get(self, cfg: C.DataConfig) -> Any:
        from cifarlab.data import load_dataset
        from cifarlab.data.loader import make_splits
        source = (cfg.dataset, cfg.image_size, cfg.label_column)
        if source not in self.arrays:
            self.arrays[source] = load_dataset(cfg.dataset, self.data_dir, download=self.download,
                                               progress=self.progress, image_size=cfg.image_size,
                                               label_column=cfg.label_column)
        if cfg not in self.splits:
            self.splits[cfg] = make_splits(self.arrays[source], cfg)
        return self.splits[cfg]


def run_dir_for(runs_root: Path, key: RunKey) -> Path:
    return runs_root / key.study / key.experiment / f"seed{key.seed}-{key.config_hash}"


def plan_runs(study: Study, store: Store, only: tuple[str, ...] = ()) -> dict[RunKey, C.ExperimentConfig]:
    """The study's runs (or the `only` variants' runs), registered in the store, in study order."""
    names = [v.name for v in study.variants]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(f"--only {unknown[0]!r} is not a variant of {study.name}; valid: {', '.join(names)}")
    plan = {key: cfg for v, cfg, key in study.runs() if not only or v.name in only}
    for key, cfg in plan.items():
        store.register(key, C.to_dict(cfg))
    return plan


def run_study(study: Study, store: Store, data: DataCache, runs_root: Path, *, progress: bool = True,
              only: tuple[str, ...] = (), threads: int = 0) -> int:
    """Run every missing run of the study (or of the `only` variants); returns how many this process finished.

    `threads` (0: PyTorch's default) sets train.threads, which the config hash leaves out, so
    the runs stay the study's runs whatever the thread count.
    """
    from cifarlab.executors import train_one

    plan = plan_runs(study, store, only)
    if threads:
        plan = {key: dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))
                for key, cfg in plan.items()}
    done = sum(1 for key in plan if store.status_of(key) == "done")
    outer = tqdm(total=len(plan), initial=done, desc=f"study {study.name}", unit="run", disable=not progress,
                 position=0, dynamic_ncols=True)
    finished = 0
    while (row := store.claim(study.name, list(plan))) is not None:
        key = RunKey(row["study"], row["experiment"], row["seed"], row["config_hash"])
        cfg = plan[key]
        try:
            result = train_one(key, cfg, data.get(cfg.data), run_dir_for(runs_root, key), progress=progress,
                               progress_row=1, on_epoch=lambda r, i=row["id"]: store.record_epoch(i, r))
        except KeyboardInterrupt:
            store.release(row["id"])
            raise
        except Exception as e:
            store.fail(row["id"], f"{type(e).__name__}: {e}")
            raise
        final = result.final
        store.finish(row["id"], final, result.run_dir, final["epochs"])
        finished += 1
        outer.update(1)
        val = "no validation split" if final["val_acc"] is None else f"val {final['val_acc']:.4f}"
        tqdm.write(f"{study.name}/{key.experiment} seed {key.seed}: {val} "
                   f"({final['epochs']} epochs, {final['wall_seconds']:.0f} s)")
    outer.close()
    return finished


def adopt_run(study: Study, store: Store, runs_root: Path, path: Path) -> str:
    """Record a finished run made outside the study (`cifarlab run`) as the study run it equals.

    It counts when its config has the hash and seed of one of the study's runs: the same
    experiment, whatever its name or thread count. The run directory is copied to where the
    study keeps its runs; its checkpoint is copied as bytes, never loaded. Returns what was done.
    """
    import shutil

    from cifarlab.runs import RunDir

    run = RunDir(path)
    final = run.read_final() if (path / "config.toml").exists() else None
    if final is None:
        raise ConfigError(f"{path} holds no finished run (it needs config.toml and final.json)")
    cfg = C.load_resolved(path / "config.toml")  # the resolved config the run wrote; its hash is recomputed
    if final.get("seed") != cfg.train.seed:
        raise ConfigError(f"{path}: config.toml says seed {cfg.train.seed}, final.json {final.get('seed')}")
    history = run.read_metrics()
    if len(history) != final.get("epochs"):
        raise ConfigError(f"{path}: metrics.jsonl has {len(history)} epochs, final.json {final.get('epochs')}")
    plan = plan_runs(study, store)
    key = next((k for k in plan if k.config_hash == C.config_hash(cfg) and k.seed == cfg.train.seed), None)
    if key is None:
        raise ConfigError(f"{path}: its config and seed ({cfg.train.seed}) match no run of study {study.name}; "
                          f"`cifarlab study status` lists them")
    if store.status_of(key) == "done":
        return f"{path}: {key.experiment} seed {key.seed} is already done; left as it is"
    row = store.claim(study.name, [key])
    if row is None:
        return f"{path}: {key.experiment} seed {key.seed} is being run by another process; not adopted"
    dest = run_dir_for(runs_root, key)
    try:
        if dest.resolve() != path.resolve():
            if dest.exists():
                shutil.rmtree(dest)  # an unfinished attempt of the same run, superseded
            shutil.copytree(path, dest)
        for epoch in history:
            store.record_epoch(row["id"], epoch)
    except BaseException:
        store.release(row["id"])
        raise
    store.finish(row["id"], final, str(dest), final["epochs"])
    return f"{path}: adopted as {key.experiment} seed {key.seed} -> {dest}"


def adopt_database(study: Study, store: Store, source: Store) -> list[str]:
    """Record the done runs of another results database that equal runs of this study.

    A run counts when its config hash and seed are those of one of the study's runs, whatever
    study or variant name it had there: two studies sharing a variant train it once. Where the
    other database holds several such runs (a rerun), the last finished is taken. The row is
    copied with its epochs, commit, machine and timings; run_dir still names the directory the
    run was trained in. Returns one line per study run it filled.
    """
    if source.path.resolve() == store.path.resolve():
        raise ConfigError(f"--from-db {source.path} is the study's own database (--db); give another one")
    found: dict[tuple[str, int], Any] = {}
    for row in source.runs():
        if row["status"] == "done":
            best = found.get((row["config_hash"], row["seed"]))
            if best is None or (row["finished"] or 0) > (best["finished"] or 0):
                found[(row["config_hash"], row["seed"])] = row
    lines = []
    for key in plan_runs(study, store):
        row = found.get((key.config_hash, key.seed))
        if row is None:
            continue
        where = f"{key.experiment} seed {key.seed}"
        if store.status_of(key) == "done":
            lines.append(f"{where}: already done; left as it is")
            continue
        claimed = store.claim(study.name, [key])
        if claimed is None:
            lines.append(f"{where}: being run by another process; not adopted")
            continue
        store.copy_done(claimed["id"], row, source.epochs([row["id"]]), source.run_metrics([row["id"]])[row["id"]],
                        source.epoch_metrics(row["id"]))
        lines.append(f"{where}: adopted from {source.path} (study {row['study']}, {row['experiment']} "
                     f"seed {row['seed']})")
    return lines or [f"{source.path} holds no done run equal to a run of study {study.name}"]


def status_table(study: Study, store: Store, workers: int = 1, machine: str | None = None) -> str:
    """done / running / pending / failed per variant, counting only current configs, and an
    estimate of the training time left: the finished runs' mean wall time per epoch times the
    epochs left (variants may train different budgets), shared by `workers` processes (the mean
    already holds the slowdown of the workers that ran them). Where some finished runs ran on
    `machine` (this one's name), only theirs count: machines here differ several-fold in speed."""
    width = max(20, *(len(v.name) for v in study.variants))
    rows = [f"{'experiment':{width}s}  done  running  pending  failed"]
    timed: list[tuple[float, int, str]] = []  # (wall seconds, epochs, machine) of each done run
    left, left_epochs = 0, 0
    counts = {v.name: {"done": 0, "running": 0, "pending": 0, "failed": 0} for v in study.variants}
    for v, cfg, key in study.runs():
        row = store.run(key)
        status = row["status"] if row else "pending"
        counts[v.name][status] += 1
        if status == "done" and row["wall_seconds"] is not None:
            # an early-stopped run makes the epochs a slight overestimate
            timed.append((row["wall_seconds"], cfg.train.epochs, row["machine"]))
        elif status != "done":
            left += 1
            left_epochs += cfg.train.epochs
    for name, c in counts.items():
        rows.append(f"{name:{width}s} {c['done']:5d} {c['running']:8d} {c['pending']:8d} {c['failed']:7d}")
    total = len(study.variants) * len(study.seeds)
    if timed:
        here = [t for t in timed if t[2] == machine]
        basis = here or timed
        per_epoch = sum(t[0] for t in basis) / sum(t[1] for t in basis)
        whose = (f"the mean of the {len(here)} finished run(s) on this machine" if here else
                 "the finished runs' mean" + (", none of them on this machine" if machine else ""))
        rows.append(f"{total - left} of {total} runs done, {sum(t[0] for t in timed) / 3600:.1f} h of training "
                    f"wall time; about {left_epochs * per_epoch / workers / 3600:.1f} h left with {workers} "
                    f"worker(s), at {per_epoch:.0f} s per epoch ({whose})"
                    + ("" if workers > 1 else "; --workers N divides it by N"))
    return "\n".join(rows)

