"""Adopting runs made elsewhere: a `cifarlab run` directory, or the done runs of another results
database, recorded as the study runs they equal (same config hash and seed), never trained again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cifarlab import config as C
from cifarlab.errors import ConfigError, finishing
from cifarlab.results.store import Store
from cifarlab.study.data import run_dir_for
from cifarlab.study.plan import plan as plan_study
from cifarlab.study.plan import sharing
from cifarlab.study.run import plan_runs
from cifarlab.study.spec import Study


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
        with finishing():
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
    lines, seen, grown = [], set(), True
    while grown:   # an adopted tuning run may decide its arm: the arm's test runs join the plan, and are adopted too
        grown = False
        for key in plan_runs(study, store):
            row = found.get((key.config_hash, key.seed))
            if row is None or key in seen:
                continue
            seen.add(key)
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
            grown = True
    return lines or [f"{source.path} holds no done run equal to a run of study {study.name}"]


def adopt_elsewhere(study: Study, store: Store) -> list[str]:
    """Adopt every study run not done here that a sibling results database holds done (`done_elsewhere`,
    `adopt_database`), each sibling read from an in-memory copy; one line per run adopted. `study run
    --adopt-done-elsewhere` calls it before each claim, so a run another study finishes meanwhile is
    taken, not trained again."""
    from cifarlab.results.store import copy_store
    lines = []
    for other in done_elsewhere(study, store, store.path):
        source = copy_store(other)
        try:
            lines += [line for line in adopt_database(study, store, source) if ": adopted from " in line]
        finally:
            source.close()
    return lines


def done_elsewhere(study: Study, store: Store, db_path: Path) -> dict[Path, list]:
    """The study runs not done in `store` (nor running) that a sibling results database already
    holds done, with the same config hash and seed: `{other database: [RunKey, ...]}`. Siblings are
    the `*/results.db` beside this database's folder (the `results/<study>/results.db` layout);
    each is read read-only, and one that cannot be read is skipped. Training those runs again would
    repeat them: `study adopt --from-db` copies them."""
    import sqlite3

    own = Path(db_path).resolve()
    wanted = {}
    for key in plan_runs(study, store):
        if store.status_of(key) in (None, "pending", "failed"):
            wanted[(key.config_hash, key.seed)] = key
    found: dict[Path, list] = {}
    if not wanted:
        return found
    for other in sorted(own.parent.parent.glob("*/results.db")):
        if other.resolve() == own:
            continue
        try:
            conn = sqlite3.connect(f"file:{other}?mode=ro", uri=True)
            try:
                done = set(conn.execute("SELECT config_hash, seed FROM runs WHERE status = 'done'").fetchall())
            finally:
                conn.close()
        except sqlite3.Error:
            continue
        keys = [key for pair, key in wanted.items() if pair in done]
        if keys:
            found[other] = keys
            for key in keys:
                wanted.pop((key.config_hash, key.seed))
    return found


def elsewhere_note(study: Study, store: Store, db_path: Path, study_arg: str, db_arg: str) -> str | None:
    """One paragraph naming the runs `done_elsewhere` found and the command that adopts them."""
    found = done_elsewhere(study, store, db_path)
    if not found:
        return None
    lines = [f"{sum(map(len, found.values()))} run(s) not done here are done in another results database "
             "with the same config and seed (training them again repeats them):"]
    for other, keys in found.items():
        runs = ", ".join(f"{k.experiment} seed {k.seed}" for k in keys)
        lines.append(f"  {runs}: cifarlab study adopt {study_arg} --db {db_arg} --from-db {_shown(other)}")
    adoptable = {k for keys in found.values() for k in keys}
    share = sharing(plan_study(study, store).runs)   # the plan's runs: tuned arms' and added seeds' too
    for key in sorted(adoptable, key=lambda k: (k.seed, k.experiment)):
        left = sorted(f"{k.experiment} seed {k.seed}" for k in share.get(key, ())
                      if k not in adoptable and store.status_of(k) != "done")
        if left:
            lines.append(f"  but {key.experiment} seed {key.seed} trained here leaves its work for "
                         f"{', '.join(left)} (`train.select` or the probe apart); adopted, that run trains in full")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
