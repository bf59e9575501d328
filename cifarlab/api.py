"""The Python API: what the command line does, for a notebook or a script (docs/API.md).

    from cifarlab import api
    cfg = api.config("experiments/fast/baseline.toml", {"train.epochs": 2, "optim.lr": 0.1})
    result = api.train(cfg, out="runs/nb/seed0", data_dir="../shared/data")
    result.test_acc, result.run_dir
    run = api.load_run(result.run_dir)
    run.predict(images).top(3)                   # uint8: NumPy N x H x W x 3, torch N x 3 x H x W
    api.export(run, "torchscript", "model.pt")   # uint8 images -> logits, preprocessing inside

Configs are built only through `config` (or the TOML files), so a model preset's keys always apply:
`config(model="resnet18")` is the ResNet-18, where `ExperimentConfig(model=ModelConfig(name=
"resnet18"))` would keep the dataclass defaults (that is refused with one line by `config`).
Nothing here imports an optional extra (Ray, TensorBoard, safetensors, onnx) until it is used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from cifarlab import config as C
from cifarlab.errors import ConfigError
from cifarlab.predict import Prediction, TrainedModel, export, load_run, load_safetensors
from cifarlab.schema import ExperimentConfig

__all__ = ["config", "train", "load_run", "load_result", "export", "load_safetensors", "summary", "compare", "TrainResult",
           "ArmSummary", "Comparison", "TrainedModel", "Prediction", "ExperimentConfig"]


def config(experiment: str | Path | Mapping | ExperimentConfig | None = None,
           overrides: Mapping[str, Any] | Sequence[str] = (), *, model: str | None = None,
           plugins: Sequence[str] = ()) -> ExperimentConfig:
    """A resolved experiment config: from a TOML file (following `extends`), a dict of sections
    ({"model": {"name": "resnet18"}, ...}), a config already built, or the defaults (None); then
    `overrides` ({"optim.lr": 0.1}, ["optim.lr=0.1"] or one "optim.lr=0.1") and `model` (a preset name, its keys applied
    under the overrides). `plugins`: modules to import first (they register models, losses, ...)."""
    for name in plugins:
        C.import_plugin(name, "plugins")
    if isinstance(experiment, (str, Path)):
        raw = C.read_toml_chain(Path(experiment))
        raw.setdefault("name", Path(experiment).stem)
    elif isinstance(experiment, ExperimentConfig):
        raw = C.to_dict(C.resolve(experiment))
    elif isinstance(experiment, Mapping):
        raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in experiment.items()}
    elif experiment is None:
        raw = {}
    else:
        raise ConfigError(f"config(): experiment must be a TOML path, a dict, an ExperimentConfig or None; "
                          f"got {type(experiment).__name__}")
    if model is not None:   # a new preset replaces the model keys a built config carried
        raw["model"] = {"name": model}
    if isinstance(overrides, str):   # one override, not its characters
        overrides = [overrides]
    items = overrides.items() if isinstance(overrides, Mapping) else (C.parse_override(o) for o in overrides)
    for key, value in items:
        C.set_dotted(raw, key, value)
    if plugins:   # recorded in the config (not hashed): its run's config.toml and model.pt load again
        raw["plugins"] = list(dict.fromkeys(list(raw.get("plugins") or []) + list(plugins)))
    return C.from_dict(raw)


@dataclass(frozen=True)
class TrainResult:
    """A finished run: where it is and what it measured (accuracies are fractions, None if not read)."""
    run_dir: Path
    name: str
    seed: int
    config_hash: str
    val_acc: float | None
    test_acc: float | None
    epochs: int
    wall_seconds: float
    images_per_s: float
    train_flops: int
    stopped: str | None
    final: dict   # everything final.json holds

    @property
    def history(self) -> list[dict]:
        """Each epoch's metrics as metrics.jsonl records them (train_loss, val_acc, lr, ...), for curves."""
        from cifarlab.runs import RunDir
        return RunDir(self.run_dir).read_metrics()


@dataclass(frozen=True)
class ArmSummary:
    """One arm (experiment) of a study, as its report counts it: the runs of the study file's
    current settings that finished, accuracies as fractions, None where nothing is measured.
    `metric` is what the study compares: test_acc, or val_acc for a selection study (test unread)."""
    experiment: str
    group: str
    metric: str
    n: int
    scores: dict[int, float | None]      # seed -> metric (None where the run did not measure it)
    mean: float | None
    std: float | None
    ci95: tuple[float | None, float | None]       # t-interval of the mean over the seeds
    val_mean: float | None
    versus: str                          # the study's reference arm
    diff: float | None                   # mean paired (same seed) difference from it
    diff_ci95: tuple[float | None, float | None]
    diff_n: int                          # seeds the pair has in common
    registered: int                      # its runs the database holds (finished, running or failed)


def summary(study: str | Path, db: str | Path) -> list[ArmSummary]:
    """The study's arms in its report's order, from its results database (what `cifarlab report`
    tabulates), e.g. `[(a.experiment, a.mean, a.ci95) for a in api.summary("studies/basic.toml",
    "results/basic/results.db")]`."""
    import math

    from cifarlab.report.summary import summarize
    from cifarlab.results.store import copy_store, require_database, require_runs
    from cifarlab.study import find_study, load_study
    from cifarlab.study.plan import study_spec

    path = find_study(study)
    loaded = load_study(path)
    require_database(db, "db")
    store = copy_store(db)   # read only: workers may be writing it; a plan's tuning choice goes in the copy
    try:
        require_runs(store, loaded.name, db, f"give the database `cifarlab study run {path}` wrote")
        spec = study_spec(loaded, store)
        rows = summarize(store, spec)
    finally:
        store.close()

    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    return [ArmSummary(r["experiment"], r["group"], spec.metric, r["n"], {int(k): num(v) for k, v in r["score_by_seed"].items()},
                       num(r["score_mean"]), num(r["score_std"]), (num(r["score_lo"]), num(r["score_hi"])),
                       num(r["val_mean"]), spec.reference, None if r["reference"] else num(r["diff_mean"]),
                       (None, None) if r["reference"] else (num(r["diff_lo"]), num(r["diff_hi"])),
                       0 if r["reference"] else int(r["diff_n"]), r["registered"]) for r in rows]


@dataclass(frozen=True)
class Comparison:
    """Two sets of runs of one metric, compared as a study's report compares two arms: each one's
    mean, standard deviation and 95 % t-interval over its seeds (clipped to [0, 1], as the report
    clips them), and the mean of the differences seed by seed (the seeds both have: the same
    initialisation, data order and augmentation draws; the split is `data.split_seed`'s either way),
    its 95 % t-interval (clipped to [-1, 1]) and paired t-test p-value, and about how many paired
    seeds a difference of this size and spread needs to show at 80 % power (None: no spread yet, or
    beyond 1,000). `stopped`: each side's seeds whose run stopped early (diverged): counted, as the
    report counts them, and named when printed."""
    metric: str
    n: tuple[int, int]
    mean: tuple[float, float]
    std: tuple[float | None, float | None]
    ci95: tuple[tuple[float | None, float | None], tuple[float | None, float | None]]
    diff: float | None
    diff_ci95: tuple[float | None, float | None]
    diff_n: int
    p: float | None
    seeds_needed: int | None
    stopped: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    def __str__(self) -> str:
        def pct(x):
            return "n/a" if x is None else f"{100 * x:.2f}"
        arms = "; ".join(f"{pct(m)} ± {pct(sd)} % (n={n}" + (f", seed(s) {', '.join(map(str, st))} stopped early"
                                                             if st else "") + ")"
                         for m, sd, n, st in zip(self.mean, self.std, self.n, self.stopped))
        if not self.diff_n:
            return f"{self.metric}: {arms}; no seed in common: no paired difference"
        lo, hi = self.diff_ci95
        return (f"{self.metric}: {arms}; difference {100 * self.diff:+.2f} points [{pct(lo)}, {pct(hi)}] over "
                f"{self.diff_n} paired seed(s), p = {'n/a' if self.p is None else f'{self.p:.3g}'}")


def compare(runs: Sequence[TrainResult] | Mapping[int, float], reference: Sequence[TrainResult] | Mapping[int, float],
            metric: str = "test_acc") -> Comparison:
    """`runs` against `reference`, each a list of `train` results (one per seed) or a {seed: value}
    mapping (an `ArmSummary`'s `scores`): e.g. `api.compare(with_dropout, without)` after training
    both at seeds 0-2. Choose on "val_acc"; read "test_acc" once the choice is made."""
    import math

    from cifarlab import stats
    from cifarlab.errors import UserError
    from cifarlab.report.summary import diff_numbers
    if metric not in ("val_acc", "test_acc"):
        raise UserError(f"compare(metric={metric!r}) is invalid; valid: 'val_acc', 'test_acc'")

    def scores(side, name) -> tuple[dict[int, float], tuple[int, ...]]:
        if isinstance(side, TrainResult):   # one run
            side = [side]
        if isinstance(side, Mapping):
            given, stopped = dict(side.items()), ()
        else:
            given, stopped = {}, []
            for r in side:
                if not isinstance(r, TrainResult):
                    raise UserError(f"compare(): {name} holds a {type(r).__name__}; give the results of "
                                    "api.train, or a {seed: value} mapping")
                if r.seed in given:
                    raise UserError(f"compare(): {name} holds seed {r.seed} twice; give one run per seed")
                given[r.seed] = getattr(r, metric)
                if r.stopped:
                    stopped.append(r.seed)
        hashes = {r.config_hash: r for r in side} if not isinstance(side, Mapping) else {}
        if len(hashes) > 1:
            first, other = list(hashes.values())[:2]
            raise UserError(f"compare(): {name} mixes settings: {other.run_dir} (config {other.config_hash}) is not "
                            f"{first.run_dir}'s config ({first.config_hash}); a side is one setting at several seeds")
        out = {}
        for seed, value in given.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise UserError(f"compare(): {name}'s seed {seed} has {metric} {value!r}, not a finite "
                                "accuracy (a run that did not measure it?); leave that seed out or rerun it")
            out[int(seed)] = float(value)
        if not out:
            raise UserError(f"compare(): {name} is empty; give at least one run")
        return out, tuple(sorted(stopped))

    (a, stop_a), (b, stop_b) = scores(runs, "runs"), scores(reference, "reference")

    def num(x, lo=None, hi=None):
        return None if math.isnan(x) else x if lo is None else min(max(x, lo), hi)

    summaries = [(stats.mean_std(x.values()), stats.ci95(x.values())) for x in (a, b)]
    d = diff_numbers(a, b)   # the report's paired difference, its interval clipped as there
    diff, n = d["diff_mean"], d["diff_n"]
    spread = stats.mean_std(stats.seedwise(a, b).values())[1]
    return Comparison(metric, (len(a), len(b)), tuple(m for (m, _), _ in summaries),
                      tuple(num(sd) for (_, sd), _ in summaries),
                      tuple((num(c[0], 0.0, 1.0), num(c[1], 0.0, 1.0)) for _, c in summaries),
                      num(diff) if n else None, (num(d["diff_lo"]), num(d["diff_hi"])), n,
                      num(stats.paired_p(a, b)) if n else None,
                      stats.seeds_needed(diff, spread) if n >= 2 else None, (stop_a, stop_b))


def train(cfg: ExperimentConfig, *, out: str | Path | None = None, data_dir: str | Path | None = None,
          download: bool = True, resume: bool = False, progress: bool = False,
          seed: int | None = None) -> TrainResult:
    """Train one run of `cfg` (resolved with `config`) into `out` (default runs/<name>/seed<k>) and
    return its result. `resume` continues a run that `out` holds; the data loads from `data_dir`
    (default: $CIFARLAB_DATA, else ./data, as the command line's --data-dir)."""
    from cifarlab.data import load_dataset
    from cifarlab.data.loader import make_splits
    from cifarlab.runs import RunDir
    from cifarlab.train import train as train_run

    cfg = C.resolve(cfg)
    if seed is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    run = RunDir(Path(out)) if out is not None else RunDir.for_config(cfg)
    if run.checkpoint_path.exists() and not resume:   # before the data loads
        raise run.held(cfg, "pass resume=True", "out=... (another directory), or a config with another name")
    final = run.finished(cfg) if resume else None
    if final is not None:   # nothing left to train: its recorded result, nothing rewritten
        from cifarlab.train import copy_record
        copy_record(cfg, run, final)   # (to TensorBoard / MLflow where turned on now)
        return result(run, cfg, final)
    arrays = load_dataset(cfg.data.dataset, None if data_dir is None else str(data_dir), download=download, progress=progress,
                          image_size=cfg.data.image_size, label_column=cfg.data.label_column)
    final = train_run(cfg, make_splits(arrays, cfg.data), run, resume=resume, progress=progress)
    return result(run, cfg, final)


def load_result(run_dir: str | Path) -> TrainResult:
    """The recorded result of a finished run directory (its final.json; what `train` returned), for
    `compare`; one line where the directory holds no finished run. Nothing is imported or trained."""
    from cifarlab.errors import UserError
    from cifarlab.runs import RunDir
    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise UserError(f"run directory {run.path} does not exist; give a finished run's directory "
                        "(runs/<name>/seed<k>, or the --out of `cifarlab run`)")
    try:
        final = run.read_final()
    except ValueError:
        final = None
    if not isinstance(final, dict) or not {"config_hash", "seed", "name", "epochs"} <= set(final):
        raise UserError(f"{run.path} holds no finished run (no readable final.json); finish it with "
                        f"`cifarlab run {run.path / 'config.toml'} --out {run.path} --resume`")
    if not run.complete(final):   # started over after it finished, and not done
        raise UserError(f"{run.path}: its final.json is older than its training (started over and not finished); "
                        f"finish it with `cifarlab run {run.path / 'config.toml'} --out {run.path} --resume`")
    return recorded(run.path, final["name"], final["seed"], final)


def result(run, cfg: ExperimentConfig, final: dict) -> TrainResult:
    return recorded(run.path, cfg.name, cfg.train.seed, final)


def recorded(path: Path, name: str, seed: int, final: dict) -> TrainResult:
    """The TrainResult of a finished run's final.json (written by this cifarlab or an earlier one)."""
    return TrainResult(path, name, seed, final["config_hash"], final.get("val_acc"), final.get("test_acc"),
                       final["epochs"], final.get("wall_seconds", 0.0), final.get("images_per_s", 0.0),
                       final.get("train_flops", 0), final.get("stopped"), final)
