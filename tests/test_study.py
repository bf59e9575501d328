"""Studies end to end: run, resume after SIGKILL, share one database between processes."""

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from cifarlab.errors import ConfigError
from cifarlab.results import open_store
from cifarlab.results.store import SCHEMA_VERSION, RunKey
from cifarlab.study import load_study
from conftest import cli_command, cli_env, finished_metrics, synthetic_arrays

EXPERIMENT = """
name = "tiny"
[data]
subset = 2000
val_size = 200
[model]
widths = [8, 16]
dense = [16]
[optim]
lr = 0.05
nesterov = true
[train]
epochs = 2
batch_size = 100
threads = 1
"""
STUDY = """
name = "tiny"
experiment = "tiny.toml"
seeds = [0, 1]
[[variants]]
name = "baseline"
target = 0.5
[[variants]]
name = "dropout"
set = { "model.dropout" = [0.2, 0.2], "augment.pipeline" = ["flip"] }
"""


@pytest.fixture
def study_dir(tmp_path):
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    np.savez_compressed(root / "cifar10" / "cifar10.npz", **synthetic_arrays(2200, 200))
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)
    (tmp_path / "study.toml").write_text(STUDY)
    return tmp_path


def study(cwd, *args, db="results.db", wait=True):
    cmd = cli_command("study", *args, "study.toml", "--db", db, "--data-dir", "data", "--no-download", "--no-progress")
    if not wait:   # faulthandler: a process (and its workers: its own session) that will not stop can be
        return subprocess.Popen(cmd, cwd=cwd, env=cli_env(PYTHONFAULTHANDLER="1"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)   # asked where it is
    return subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600)


def results(db):
    conn = sqlite3.connect(db)
    runs = conn.execute("SELECT experiment, seed, status, test_acc, val_acc, val_loss, per_class_test_acc "
                        "FROM runs ORDER BY experiment, seed").fetchall()
    epochs = conn.execute("SELECT r.experiment, r.seed, e.epoch, e.train_loss, e.val_loss, e.val_acc "
                          "FROM epochs e JOIN runs r ON r.id = e.run_id ORDER BY 1, 2, 3").fetchall()
    return runs, epochs


def test_tiny_study_runs_end_to_end_and_skips_finished_runs(study_dir):
    bad = study(study_dir, "run", "--only", "nope")
    assert bad.returncode == 2 and "--only 'nope' is not a variant of tiny; valid: baseline, dropout" in bad.stderr
    first = study(study_dir, "run", "--only", "dropout")
    assert "2 run(s) finished by this process" in first.stdout, first.stderr
    assert "2 of 4 runs done" in first.stdout and " left with 1 worker(s)" in first.stdout
    r = study(study_dir, "run")
    assert r.returncode == 0, r.stderr
    assert "2 run(s) finished by this process" in r.stdout
    runs, epochs = results(study_dir / "results.db")
    assert [row[2] for row in runs] == ["done"] * 4 and len(epochs) == 8
    again = study(study_dir, "run")
    assert "0 run(s) finished" in again.stdout
    status = study(study_dir, "status")
    assert status.returncode == 0 and "baseline                 2" in status.stdout
    assert "4 of 4 runs done" in status.stdout and "about 0 s left" in status.stdout
    assert "left with 2 worker(s)" in study(study_dir, "status", "--workers", "2").stdout
    runtimes = sqlite3.connect(study_dir / "results.db").execute("SELECT DISTINCT runtime FROM runs").fetchall()
    assert len(runtimes) == 1 and runtimes[0][0].startswith("cpu") and runtimes[0][0].endswith("1 threads")

    cmd = cli_command("report", "study.toml", "--db", "results.db")
    assert subprocess.run(cmd, cwd=study_dir, env=cli_env(), capture_output=True, text=True).returncode == 0
    readme = (study_dir / "reports" / "tiny" / "README.md").read_text()
    assert "| `baseline` | 2 |" in readme and "| `dropout` | 2 |" in readme and "model.dropout" in readme
    for png in ("learning_curves.png", "test_accuracy.png"):
        height, width = imread(study_dir / "reports" / "tiny" / png).shape[:2]
        assert width >= 400 and height >= 300
    first = readme
    subprocess.run(cmd, cwd=study_dir, env=cli_env(), capture_output=True, text=True, check=True)
    assert (study_dir / "reports" / "tiny" / "README.md").read_text() == first

    export = cli_command("results", "export", "--format", "csv", "--db", "results.db", "--out", "export")
    assert subprocess.run(export, cwd=study_dir, env=cli_env(), capture_output=True, text=True).returncode == 0
    assert len((study_dir / "export" / "runs.csv").read_text().splitlines()) == 5
    export = cli_command("results", "export", "--study", "study.toml", "--db", "results.db", "--out", "cur")
    assert subprocess.run(export, cwd=study_dir, env=cli_env(), capture_output=True, text=True).returncode == 0
    header, *rows = (study_dir / "cur" / "runs.csv").read_text().splitlines()
    assert "current" in header.split(",") and len(rows) == 4
    same = cli_command("results", "compare", "--study", "study.toml", "--db", "results.db", "--against", "results.db")
    r = subprocess.run(same, cwd=study_dir, env=cli_env(), capture_output=True, text=True)
    assert "4 paired run(s): other - this = +0.00 ± 0.00 (std) points" in r.stdout, r.stderr
    alone = subprocess.run(cli_command("results", "compare", "--db", "results.db"), cwd=study_dir, env=cli_env(),
                           capture_output=True, text=True)
    assert alone.returncode == 2 and "results compare needs --against DB" in alone.stderr
    (study_dir / "selection.toml").write_text(STUDY.replace("seeds = [0, 1]", "seeds = [0, 1]\nselection = true"))
    chose = cli_command("results", "compare", "--study", "selection.toml", "--db", "results.db", "--against", "results.db")
    r = subprocess.run(chose, cwd=study_dir, env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 0 and "this val %" in r.stdout, r.stderr  # a selection study compares validation
    r = subprocess.run(chose + ["--metric", "test"], cwd=study_dir, env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "is a selection study, compared on validation only; use --metric val" in r.stderr


def test_a_resumed_run_records_every_epoch_even_those_the_database_lost(study_dir):
    assert "2 run(s) finished" in study(study_dir, "run", "--only", "baseline").stdout
    db = sqlite3.connect(study_dir / "results.db")
    # the database file was swapped under the process (a checkout of a committed copy, say): the run
    # trained to its end, but its epochs and its finish went to the old file
    run_id = db.execute("SELECT id FROM runs WHERE experiment='baseline' AND seed=1").fetchone()[0]
    with db:
        db.execute("DELETE FROM epochs WHERE run_id=?", (run_id,))
        db.execute("DELETE FROM epoch_metrics WHERE run_id=?", (run_id,))
        db.execute("UPDATE runs SET status='pending', claimed_by=NULL WHERE id=?", (run_id,))
    again = study(study_dir, "run", "--only", "baseline")
    assert "1 run(s) finished" in again.stdout, again.stderr   # from its last checkpoint: nothing to train
    runs, epochs = results(study_dir / "results.db")
    assert [r[2] for r in runs if r[0] == "baseline"] == ["done"] * 2
    assert [(e[1], e[2]) for e in epochs] == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_a_claim_resumed_under_another_runs_dir_resumes_from_the_checkpoint_it_left(study_dir):
    """An interrupted `study run --runs-dir A` rerun without it: the run resumes from A's checkpoint
    (the database recorded where its claim trained), not from epoch 1 under runs/."""
    first = study(study_dir, "run", "--only", "baseline", "--runs-dir", "elsewhere")
    assert "2 run(s) finished" in first.stdout, first.stderr
    db = sqlite3.connect(study_dir / "results.db")
    run_dir, = db.execute("SELECT run_dir FROM runs WHERE experiment='baseline' AND seed=1").fetchone()
    assert "elsewhere" in run_dir and (Path(study_dir / run_dir) / "checkpoint.pt").is_file()
    with db:   # as an interrupt leaves it: pending again, its claim's directory recorded (absolute)
        db.execute("UPDATE runs SET status='pending', claimed_by=NULL, run_dir=? WHERE experiment='baseline' "
                   "AND seed=1", (str((study_dir / run_dir).resolve()),))
    # `study status` says where it resumes; without its checkpoint, that it starts over
    status = study(study_dir, "status")
    assert "resumes: baseline seed 1 after epoch 2 of 2 (its checkpoint in " in status.stdout, status.stdout + status.stderr
    checkpoint = Path(study_dir / run_dir) / "checkpoint.pt"
    checkpoint.rename(checkpoint.with_name("moved.pt"))
    assert ("starts over: baseline seed 1 recorded 2 epoch(s), but no checkpoint of it is under runs (nor where "
            "its last claim trained)") in study(study_dir, "status").stdout
    checkpoint.with_name("moved.pt").rename(checkpoint)
    again = study(study_dir, "run", "--only", "baseline")
    assert "1 run(s) finished" in again.stdout, again.stderr
    assert "resumes from its checkpoint in" in again.stdout and "elsewhere" in again.stdout
    assert not (study_dir / "runs" / "tiny" / "baseline").exists()     # nothing trained again under runs/
    from cifarlab.study.data import resume_dir
    assert resume_dir(None, study_dir / "runs") is None


def test_sigkill_at_random_moments_loses_nothing(study_dir, tmp_path):
    reference = tmp_path / "straight"
    reference.mkdir()
    for name in ("tiny.toml", "study.toml", "data"):
        os.symlink(study_dir / name, reference / name)
    started = time.perf_counter()
    assert study(reference, "run").returncode == 0
    duration = time.perf_counter() - started

    rng = random.Random(1234)
    for _ in range(5):
        proc = study(study_dir, "run", wait=False)
        time.sleep(rng.uniform(0.3, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = study(study_dir, "run")
    assert final.returncode == 0, final.stderr
    killed_runs, killed_epochs = results(study_dir / "results.db")
    straight_runs, straight_epochs = results(reference / "results.db")
    assert len(killed_runs) == 4 and all(row[2] == "done" for row in killed_runs)
    assert killed_runs == straight_runs
    assert killed_epochs == straight_epochs


def test_two_processes_share_one_database(study_dir):
    procs = [study(study_dir, "run", wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    finished = sum(int(out.split(" run(s) finished")[0].split()[-1]) for out, _ in outs)
    assert finished == 4
    runs, epochs = results(study_dir / "results.db")
    assert len(runs) == 4 and all(row[2] == "done" for row in runs) and len(epochs) == 8


OPEN_AT_ONCE = """
import sys, time
from cifarlab.results import open_store
start = float(sys.argv[2])
while time.time() < start:
    pass
open_store(sys.argv[1]).close()
"""


def test_processes_that_open_a_new_database_at_the_same_moment_all_get_it(tmp_path):
    """Switching a new database to WAL takes a lock SQLite does not wait for: the second of two
    `study run` processes started together once failed with "database is locked"."""
    for attempt in range(6):
        db, start = tmp_path / f"new{attempt}.db", time.time() + 2.0
        procs = [subprocess.Popen([*cli_command()[:1], "-c", OPEN_AT_ONCE, str(db), str(start)],
                                  env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        assert schema_of(db) == SCHEMA_VERSION


def schema_of(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
    finally:
        conn.close()


def grouped(table: str, group: str = "reg") -> str:
    """STUDY with a declared group `reg` = {table} and the variant `dropout` in `group`."""
    return (STUDY.replace("seeds = [0, 1]", f"seeds = [0, 1]\ngroups = {{ reg = {{ {table} }} }}")
            .replace('name = "dropout"', f'name = "dropout"\ngroup = "{group}"'))


@pytest.mark.parametrize("text, message", [
    (STUDY.replace('"augment.pipeline"', '"augment.pipelines"'), "unknown key augment.pipelines"),
    (STUDY.replace('name = "dropout"', 'name = "baseline"'), "variant name 'baseline' is used twice"),
    (STUDY.replace("seeds = [0, 1]", "seeds = []"), "`seeds` must be a non-empty list"),
    (STUDY.replace("seeds = [0, 1]", "seeds = [0, -1]"), "`seeds` must be a non-empty list of integers >= 0, got [0, -1]"),
    (STUDY.replace("seeds = [0, 1]", "seeds = [true]"), "`seeds` must be a non-empty list of integers >= 0"),
    (STUDY.replace("seeds = [0, 1]", "seeds = [0, 1]\nseed = 3"), "unknown key 'seed'"),
    (STUDY.replace("seeds = [0, 1]", 'seeds = [0, 1]\nreference = "nope"'), "reference 'nope' is not a variant"),
    (STUDY + "[[variants]]\nname = 3\n", "needs a name"),
    (grouped('question = "?"', "opt"),
     "variant 'dropout' has group 'opt', which is not declared; declared groups: reg"),
    (grouped('question = "?", baseline = "nope"'), "baseline 'nope' of group 'reg' is not a variant"),
    (grouped('question = "?", also = ["dropout"]'),
     "`also` names 'dropout', which is not a variant of another group; valid: baseline"),
    (grouped('question = "?", also = "baseline"'), "`also` must be a list of variant names"),
    (STUDY.replace("seeds = [0, 1]", "seeds = [0, 1]\nconvergence = 80"),
     "`convergence` must be a validation accuracy"),
    (STUDY + "[[variants\n", "is not valid TOML"),
    (STUDY.replace('experiment = "tiny.toml"', 'experiment = "../fast/tiny.toml"'),
     "study.toml: experiment = '../fast/tiny.toml', but "),   # the study's own key: the study file, not a variant
    (STUDY.replace('name = "dropout"', 'name = "dropout"\nextends = "other.toml"'),
     "variant 2 .dropout.: extends = 'other.toml', but "),
    (STUDY.replace("seeds = [0, 1]", 'seeds = [0, 1]\nselection = "yes"'), "`selection` must be true or false"),
    (STUDY.replace('name = "dropout"', 'name = "../dropout"'), "experiment name '../dropout' is not a valid name"),
    (STUDY.replace('name = "tiny"', 'name = "a/b"'), "study name 'a/b' is not a valid name"),
])
def test_bad_study_files(study_dir, text, message):
    (study_dir / "study.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_study(study_dir / "study.toml")
    r = study(study_dir, "run")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_newer_schema_and_unwritable_location_are_refused(study_dir):
    store = open_store(study_dir / "new.db")
    store.conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    store.close()
    r = study(study_dir, "run", db="new.db")
    assert r.returncode == 2 and "schema version 99, newer than" in r.stderr
    # Running as root ignores file modes, so use a place nobody can create files in (a folder that
    # exists: a missing one is refused before any open, tests/test_cli_conventions.py).
    r = study(study_dir, "run", db="/proc/cifarlab-results.db")
    assert r.returncode == 2 and "cannot open results database" in r.stderr and "Traceback" not in r.stderr


def test_groups_and_convergence_are_parsed(tmp_path):
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)
    (tmp_path / "study.toml").write_text(
        STUDY.replace("seeds = [0, 1]", 'seeds = [0, 1]\nconvergence = 0.8\n'
                      '[groups.reg]\nquestion = "Does dropout help?"\nbaseline = "baseline"')
        .replace('name = "dropout"', 'name = "dropout"\ngroup = "reg"'))
    spec = load_study(tmp_path / "study.toml").spec()
    assert spec.groups == {"dropout": "reg"} and spec.questions == {"reg": "Does dropout help?"}
    assert spec.members("reg") == ["baseline", "dropout"] and spec.convergence == 0.8
    (tmp_path / "study.toml").write_text(
        STUDY.replace("seeds = [0, 1]", 'seeds = [0, 1]\n[groups.reg]\nquestion = "?"\n'
                      '[groups.both]\nquestion = "??"\nalso = ["dropout"]')
        .replace('name = "dropout"', 'name = "dropout"\ngroup = "reg"')
        .replace('name = "baseline"', 'name = "baseline"\ngroup = "both"'))
    spec = load_study(tmp_path / "study.toml").spec()
    assert spec.members("reg") == ["dropout"] and spec.members("both") == ["baseline", "dropout"]
    basic = load_study(os.path.join(os.path.dirname(__file__), "..", "studies", "basic.toml")).spec()
    assert list(basic.questions) == ["regularization", "input-scaling", "optimizers", "schedules", "bn-dropout"]
    assert basic.members("optimizers") == ["final", "final-adam", "final-adamw"]
    assert basic.members("regularization")[0] == "baseline" and basic.convergence == 0.7
    # `augment` (no BatchNorm, no dropout) is the 2 x 2's "neither" cell, shared with regularization
    assert basic.members("bn-dropout") == ["final", "final-dropout-then-bn", "aug-bn-only", "aug-dropout-only",
                                           "augment"]


def test_migration_from_v1_rehashes_stored_configs(tmp_path):
    import json
    from cifarlab import config as C
    from cifarlab.results.store import MIGRATIONS
    conn = sqlite3.connect(tmp_path / "old.db")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    cfg = C.from_dict({"name": "x", "optim": {"lr": 0.02}, "train": {"threads": 1}})
    stored = C.to_dict(cfg)
    del stored["train"]["tta"]  # as written before that key existed
    conn.execute("INSERT INTO runs (study, experiment, seed, config_hash, config, created, status) "
                 "VALUES ('s', 'x', 0, 'old-style-hash', ?, 0, 'done')", (json.dumps(stored),))
    conn.commit()
    conn.close()
    store = open_store(tmp_path / "old.db")
    # v3: threads left the hash, so this run now equals the same experiment run with any threads
    assert store.runs("s")[0]["config_hash"] == C.config_hash(cfg) == C.config_hash(
        C.from_dict({"optim": {"lr": 0.02}}))
    assert store.conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    assert store.runs("s")[0]["runtime"] is None  # v4's column, unknown for older runs
    assert store.runs("s")[0]["stopped"] is None  # v5's: older runs ran all their epochs


def opened_old_database(path, version: int, configs: list[dict]) -> list:
    """The runs of a database built at schema `version` holding done runs with these stored
    configs (as that version wrote them), once this cifarlab has opened and migrated it."""
    import json
    from cifarlab.results.store import MIGRATIONS
    conn = sqlite3.connect(path)
    for v in range(1, version + 1):
        for step in MIGRATIONS[v]:
            step(conn) if callable(step) else conn.execute(step)
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
    for i, stored in enumerate(configs):
        conn.execute("INSERT INTO runs (study, experiment, seed, config_hash, config, created, status) "
                     "VALUES ('s', 'x', ?, 'old-hash', ?, 0, 'done')", (i, json.dumps(stored)))
    conn.commit()
    conn.close()
    return open_store(path).runs("s")


def test_migration_6_renames_batchnorm_and_pool_and_rehashes(tmp_path):
    import json
    from cifarlab import config as C
    configs = []
    for bn, pool in [(True, "max"), (False, "avg"), (True, "avg")]:
        stored = C.to_dict(C.ExperimentConfig(name="x"))
        stored["model"] = {k: v for k, v in stored["model"].items() if k not in ("norm", "downsample")}
        stored["model"].update(batchnorm=bn, pool=pool)
        configs.append(stored)
    rows = opened_old_database(tmp_path / "v5.db", 5, configs)
    want = [C.from_dict({"model": {"norm": n, "downsample": d}}) for n, d in
            [("batch", "max"), ("none", "avg"), ("batch", "avg")]]
    assert [r["config_hash"] for r in rows] == [C.config_hash(c) for c in want]
    assert [json.loads(r["config"])["model"]["norm"] for r in rows] == ["batch", "none", "batch"]
    assert all("batchnorm" not in json.loads(r["config"])["model"] for r in rows)
    assert C.config_hash(want[1]) == C.config_hash(C.from_dict({"model": {"downsample": "avg"}}))


def test_migration_8_moves_label_smoothing_and_makes_flip_a_pipeline_entry(tmp_path):
    from cifarlab import config as C
    old = [({"flip": True, "translate": 0.1, "fill": "edge"}, 0.1), ({"flip": False, "translate": 0.0, "fill": "edge"}, 0.0),
           ({"flip": False, "translate": 0.125, "fill": "zero"}, 0.0), ({"flip": True, "translate": 0.0, "fill": "edge"}, 0.2)]
    configs = []
    for augment, smoothing in old:
        stored = C.to_dict(C.ExperimentConfig(name="x"))
        stored["augment"] = augment
        del stored["loss"]
        stored["train"]["label_smoothing"] = smoothing
        configs.append(stored)
    rows = opened_old_database(tmp_path / "v7.db", 7, configs)
    want = [C.from_dict({"augment": {"pipeline": ["flip", "translate"], "translate": 0.1}, "loss": {"label_smoothing": 0.1}}),
            C.from_dict({}),
            C.from_dict({"augment": {"pipeline": ["translate"], "translate": 0.125, "fill": "zero"}}),
            C.from_dict({"augment": {"pipeline": ["flip"]}, "loss": {"label_smoothing": 0.2}})]
    assert [r["config_hash"] for r in rows] == [C.config_hash(c) for c in want]
    assert rows[1]["config_hash"] == C.config_hash(C.ExperimentConfig())   # nothing on: the defaults


def test_a_committed_schema_3_database_regenerates_its_committed_report(tmp_path):
    """tests/data/basic_lr_schema3.db is results/basic_lr/results.db as committed before the model
    anatomy and the augmentation pipeline renamed its keys (schema 3, at 5bd168e); migrated, it must
    still match its study and give the committed report."""
    import shutil
    from cifarlab.report import write_report
    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "tests" / "data" / "basic_lr_schema3.db", tmp_path / "results.db")
    spec = load_study(repo / "studies" / "basic_lr.toml").spec()
    store = open_store(tmp_path / "results.db")
    assert {r["config_hash"] for r in store.runs("basic_lr")} == set(spec.hashes.values())
    command = "cifarlab report studies/basic_lr.toml --db results/basic_lr/results.db --out results/basic_lr"
    readme = write_report(store, spec, tmp_path / "report", command)
    assert readme.read_text() == (repo / "results" / "basic_lr" / "README.md").read_text()


def test_reading_a_current_database_leaves_its_bytes_as_they_were(tmp_path):
    store = open_store(tmp_path / "r.db")
    store.register(RunKey("s", "x", 0, "h"), {"name": "x"})
    store.close()
    before = (tmp_path / "r.db").read_bytes()
    reader = open_store(tmp_path / "r.db", must_exist=True)  # what `report` and `results compare` do
    assert len(reader.runs("s")) == 1
    reader.close()
    assert (tmp_path / "r.db").read_bytes() == before  # a committed results.db stays clean in git


def test_sigterm_releases_the_claim(study_dir):
    # Runs long enough that the signal lands inside one: at two epochs the whole study can finish
    # between two polls on a busy machine, and the signal then finds no process (exit 0; CI, stop 55).
    (study_dir / "tiny.toml").write_text(EXPERIMENT.replace("epochs = 2", "epochs = 500"))
    proc = study(study_dir, "run", wait=False)
    db = study_dir / "results.db"
    with stopped_at_the_end(proc):
        err = signalled_once_claimed(proc, db)
    assert proc.returncode == 143 and "interrupted" in err and "Traceback" not in err
    assert "rerun the same command" in err and "--resume" not in err  # `study run` has no --resume
    assert not running(db)


def signalled_once_claimed(proc, db) -> str:
    """SIGTERM to `proc` once a run of its study is claimed (within 120 s); its stderr once it exits
    (within 300 s). One that does not is stopped with SIGABRT, so the failure shows where each of its
    threads was (`study(..., wait=False)` starts it with faulthandler on): in CI (stop 62) and twice in
    a few dozen tries here, a SIGTERM landing while torch imported its compiler stack was swallowed
    and the run trained on (`errors.stop_if_asked` now stops it at its next step)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not running(db):
        time.sleep(0.2)
    if not running(db):
        proc.kill()
        raise AssertionError(f"no run was claimed within 120 s: {proc.communicate()[1]}")
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=300)[1]
    except subprocess.TimeoutExpired:   # SIGABRT to it and its --workers children, which share its pipes
        os.killpg(proc.pid, signal.SIGABRT)
        raise AssertionError(f"still running 300 s after SIGTERM; where it was:\n{proc.communicate()[1]}") from None


@contextlib.contextmanager
def stopped_at_the_end(proc):
    """Leave no study process behind when a test fails midway: SIGTERM, which stops its workers too,
    then SIGKILL if it lingers."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def running(db) -> bool:
    try:
        return bool(sqlite3.connect(db).execute("SELECT 1 FROM runs WHERE status='running'").fetchone())
    except sqlite3.OperationalError:  # the database or its tables are not created yet
        return False


def test_workers_share_the_study_and_adopt_records_an_outside_run(study_dir):
    # A run made with `cifarlab run` (other name, other thread count) is the study's run it equals.
    (study_dir / "probe.toml").write_text('extends = "tiny.toml"\nname = "my-probe"\n')
    outside = subprocess.run(cli_command("run", "probe.toml", "--seed", "1", "--threads", "2", "--out", "mine",
                                         "--data-dir", "data", "--no-download", "--no-progress"),
                             cwd=study_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert outside.returncode == 0, outside.stderr
    r = study(study_dir, "adopt", "mine")
    assert r.returncode == 2 and "mine is a directory; a study is a TOML file" in r.stderr  # study file first
    adopt = subprocess.run(cli_command("study", "adopt", "study.toml", "mine", "--db", "results.db"),
                           cwd=study_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert adopt.returncode == 0 and "adopted as baseline seed 1" in adopt.stdout, adopt.stderr
    status = subprocess.run(cli_command("study", "status", "study.toml", "mine", "--db", "results.db"),
                            cwd=study_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert status.returncode == 2 and "study status takes no run directories" in status.stderr
    again = subprocess.run(cli_command("study", "adopt", "study.toml", "mine", "--db", "results.db"),
                           cwd=study_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already done" in again.stdout
    import shutil
    for name, edit, message in [
            ("short", lambda d: (d / "metrics.jsonl").write_text((d / "metrics.jsonl").read_text().splitlines()[0]
                                                                  + "\n"),
             "metrics.jsonl has 1 epochs, final.json 2"),
            ("other", lambda d: (d / "config.toml").write_text((d / "config.toml").read_text()
                                                                .replace("lr = 0.05", "lr = 0.07")),
             "its config and seed (1) match no run of study tiny")]:
        shutil.copytree(study_dir / "mine", study_dir / name)
        edit(study_dir / name)
        bad = subprocess.run(cli_command("study", "adopt", "study.toml", name, "--db", "results.db"),
                             cwd=study_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    (study_dir / "mine" / "final.json").unlink()
    unfinished = subprocess.run(cli_command("study", "adopt", "study.toml", "mine", "--db", "results.db"),
                                cwd=study_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert unfinished.returncode == 2 and "holds no finished run" in unfinished.stderr

    r = study(study_dir, "run", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "2 workers x 1 thread(s)" in r.stdout
    assert r.stdout.count("runs done") == 1 and "4 of 4 runs done" in r.stdout   # one table, once every worker is done
    runs, epochs = results(study_dir / "results.db")
    assert len(runs) == 4 and all(row[2] == "done" for row in runs) and len(epochs) == 8
    adopted = [row for row in runs if row[:2] == ("baseline", 1)][0]
    final = json.loads((study_dir / "runs" / "tiny" / "baseline").glob("seed1-*").__next__()
                       .joinpath("final.json").read_text())
    assert adopted[3] == final["test_acc"] and final["name"] == "my-probe"
    assert r.stdout.count("tiny/") == 3  # each worker announces the runs it trained: the three left

    # Another study sharing a variant (under another name) takes its runs from this database.
    (study_dir / "other.toml").write_text(STUDY.replace('name = "tiny"', 'name = "other"', 1)
                                          .replace('name = "baseline"', 'name = "plain"')
                                          .replace('"augment.pipeline" = ["flip"]', '"augment.pipeline" = []'))
    def adopt_db(*args):
        return subprocess.run(cli_command("study", "adopt", "other.toml", "--db", "other.db", *args),
                              cwd=study_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
    shared = adopt_db("--from-db", "results.db")
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout.count("adopted from results.db (study tiny, baseline seed") == 2, shared.stdout
    copied = sqlite3.connect(study_dir / "other.db").execute(
        "SELECT experiment, seed, status, test_acc, val_acc, wall_seconds FROM runs ORDER BY experiment, seed").fetchall()
    origin = sqlite3.connect(study_dir / "results.db").execute(
        "SELECT 'plain', seed, status, test_acc, val_acc, wall_seconds FROM runs WHERE experiment='baseline' "
        "ORDER BY seed").fetchall()
    assert copied[2:] == origin and [row[2] for row in copied[:2]] == ["pending", "pending"]  # dropout differs
    assert len(results(study_dir / "other.db")[1]) == 4  # both runs' epochs came along
    again = adopt_db("--from-db", "results.db")
    assert again.returncode == 0 and again.stdout.count("already done") == 2
    own = adopt_db("--from-db", "other.db")
    assert own.returncode == 2 and "is the study's own database" in own.stderr
    # A RUN_DIR may follow the options.
    done_dir = next((study_dir / "runs" / "tiny" / "baseline").glob("seed0-*"))
    late = adopt_db(str(done_dir))
    assert late.returncode == 0 and "plain seed 0 is already done" in late.stdout, late.stderr

    # In the results/<study>/results.db layout, status and run name the runs done in a sibling database.
    import shutil
    (study_dir / "results" / "tiny").mkdir(parents=True)
    shutil.copy(study_dir / "results.db", study_dir / "results" / "tiny" / "results.db")
    (study_dir / "results" / "other").mkdir()
    open_store(study_dir / "results" / "other" / "results.db").close()
    (study_dir / "results" / "broken").mkdir()  # a sibling that is no database is skipped, not fatal
    (study_dir / "results" / "broken" / "results.db").write_bytes(b"not a database" * 100)

    def other(*args):
        return subprocess.run(cli_command("study", *args, "other.toml", "--db", "results/other/results.db",
                                          "--data-dir", "data", "--no-progress"),
                              cwd=study_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
    hint = ("plain seed 0, plain seed 1: cifarlab study adopt other.toml --db results/other/results.db "
            "--from-db results/tiny/results.db")
    status = other("status")
    assert status.returncode == 0 and "2 run(s) not done here are done in another results database" in status.stdout
    assert hint in status.stdout, status.stdout
    ran = other("run", "--only", "dropout")   # warns once, trains only what it was asked to
    assert ran.returncode == 0 and ran.stderr.count(hint) == 1, ran.stderr
    assert other("adopt", "--from-db", "results/tiny/results.db").returncode == 0
    assert "not done here" not in other("status").stdout


def test_the_adopt_hint_says_when_adopting_a_run_costs_its_sibling_the_shared_training(tmp_path):
    from cifarlab.study.adopt import elsewhere_note
    from cifarlab.study.run import plan_runs
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)
    (tmp_path / "study.toml").write_text(STUDY.replace('set = { "model.dropout" = [0.2, 0.2], "augment.pipeline" = '
                                                       '["flip"] }', 'set = { "train.select" = "best_val" }'))
    plan = load_study(tmp_path / "study.toml")
    for name in ("a", "b"):
        (tmp_path / "results" / name).mkdir(parents=True)
    there = open_store(tmp_path / "results" / "a" / "results.db")
    base0 = next(iter(plan_runs(plan, there)))  # baseline seed 0, done in the sibling database
    there.conn.execute("UPDATE runs SET status='done' WHERE id=?", (there.claim(plan.name, [base0])["id"],))
    here = open_store(tmp_path / "results" / "b" / "results.db")
    note = elsewhere_note(plan, here, tmp_path / "results" / "b" / "results.db", "study.toml", "b.db")
    assert "1 run(s) not done here" in note and "baseline seed 0: cifarlab study adopt" in note
    assert ("but baseline seed 0 trained here leaves its work for dropout seed 0 (`train.select` or the probe "
            "apart); adopted, that run trains in full") in note, note
    assert "seed 1" not in note.split("but", 1)[1]


def test_a_claim_dies_with_its_process_even_when_the_pid_is_reused_or_a_zombie():
    from cifarlab.results.store import STALE_HEARTBEAT_S, claim_is_dead, me, proc_stat, process_start
    host, pid, start = me().split(":")
    now = time.time()
    assert start and not claim_is_dead(me(), now, now)
    assert not claim_is_dead(f"{host}:{pid}", now, now)  # a row written before start times were kept
    assert claim_is_dead(f"{host}:{pid}:{int(start) + 1}", now, now)  # same pid, another process
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert claim_is_dead(f"{host}:{gone.pid}:1", now, now)
    killed = subprocess.Popen(["sleep", "60"])
    try:
        alive = f"{host}:{killed.pid}:{process_start(killed.pid)}"
        assert not claim_is_dead(alive, now, now)
        killed.kill()
        deadline = time.time() + 10   # a zombie until this process reaps it (wait, below)
        while (proc_stat(killed.pid) or ["Z"])[0] != "Z" and time.time() < deadline:
            time.sleep(0.05)
        assert claim_is_dead(alive, now, now)
    finally:
        killed.kill()
        killed.wait()
    assert not claim_is_dead("elsewhere:1:1", now - 60, now)
    assert claim_is_dead("elsewhere:1:1", now - STALE_HEARTBEAT_S - 1, now)


def test_a_copy_of_the_database_file_holds_every_finished_run(tmp_path):
    import shutil
    from cifarlab.results.store import RunKey
    db = tmp_path / "r.db"
    worker, other = open_store(db), open_store(db)  # another worker keeps the WAL alive
    key = RunKey("s", "x", 0, "h")
    worker.register(key, {"name": "x"})
    row = worker.claim("s", [key])
    final = {k: "v" for k in ("python", "torch", "numpy", "cifarlab", "platform", "git_commit", "machine")}
    final.update(git_dirty=0, wall_seconds=1.0, images_per_s=1.0, val_acc=0.5, val_loss=1.0, test_acc=0.5,
                 test_loss=1.0, per_class_test_acc=[0.5], classes=["a"], stopped="diverged: at epoch 1 of 2")
    worker.finish(row["id"], final, "runs/x", 1)
    assert worker.run(key)["stopped"] == "diverged: at epoch 1 of 2"
    shutil.copy(db, tmp_path / "copy.db")  # what `git add results/` takes: the file, not its -wal
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT status FROM runs").fetchall() == [("done",)]
    other.close()
    worker.close()


def test_sigterm_stops_every_worker_and_releases_their_claims(study_dir):
    # Runs long enough that the signal lands inside them (see test_sigterm_releases_the_claim), short
    # enough for the resumed study to finish them.
    (study_dir / "tiny.toml").write_text(EXPERIMENT.replace("epochs = 2", "epochs = 12"))
    proc = study(study_dir, "run", "--workers", "2", wait=False)
    db = study_dir / "results.db"
    with stopped_at_the_end(proc):
        err = signalled_once_claimed(proc, db)
    assert proc.returncode == 143 and "Traceback" not in err
    assert not running(db)
    resumed = study(study_dir, "run")  # nothing was lost: the study finishes from where it stopped
    assert resumed.returncode == 0 and "4 of 4 runs done" in resumed.stdout


def test_bad_worker_and_thread_counts_are_refused(study_dir):
    for flag, value in (("--workers", "0"), ("--threads", "-1")):
        r = study(study_dir, "run", flag, value)
        assert r.returncode == 2 and "--workers must be >= 1 and --threads >= 0" in r.stderr, r.stderr


def test_reading_commands_refuse_a_missing_database(study_dir):
    # status plans a study not yet started (the cost before the first run), says the database does
    # not exist (a typo shows there) and writes nothing; the other reading commands refuse
    status = study(study_dir, "status", db="typo.db")
    assert status.returncode == 0 and "typo.db does not exist yet" in status.stdout, status.stderr
    assert "0 of 4 runs done" in status.stdout and "TFLOP of training left" in status.stdout   # a tiny study: TFLOP, not 0.0 PFLOP
    for args in (("report", "study.toml", "--out", "report"), ("results", "export", "--out", "csv")):
        r = subprocess.run(cli_command(*args, "--db", "typo.db"), cwd=study_dir, env=cli_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and "results database not found: typo.db" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (study_dir / "typo.db").exists() and not (study_dir / "report").exists()


def test_status_reads_without_writing_and_points_at_a_database_or_runs_it_did_not_expect(study_dir):
    """`study status` opens an existing database read-only (the runs it plans go in a copy); it notes a
    database holding only another study's runs, a missing --db whose neighbour holds this study, and
    finished runs its file no longer plans (a variant renamed after they ran)."""
    assert study(study_dir, "run", "--only", "baseline").returncode == 0
    db = study_dir / "results.db"
    count = lambda: sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    before, stamp = count(), db.stat().st_mtime_ns
    renamed = study_dir / "renamed.toml"
    renamed.write_text(STUDY.replace('name = "baseline"', 'name = "plain"'))
    r = subprocess.run(cli_command("study", "status", "renamed.toml", "--db", "results.db"), cwd=study_dir,
                       env=cli_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "2 finished run(s) of this study in results.db are not part of it as renamed.toml now stands" in r.stdout
    assert "baseline (2)" in r.stdout and "results export --study renamed.toml" in r.stdout
    other = study_dir / "other.toml"
    other.write_text(STUDY.replace('name = "tiny"\nexperiment', 'name = "another"\nexperiment'))
    r = subprocess.run(cli_command("study", "status", "other.toml", "--db", "results.db"), cwd=study_dir,
                       env=cli_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "results.db holds no run of study another (it holds tiny)" in r.stdout, r.stdout
    assert count() == before and db.stat().st_mtime_ns == stamp          # nothing planned into the file
    (study_dir / "notes.db").write_text("not a database")          # a neighbour that is none: passed over
    typo = study(study_dir, "status", db="results.dbb")
    assert "did you mean --db results.db?" in typo.stdout and "holds 2 finished run(s) of it" in typo.stdout
    assert not (study_dir / "results.dbb").exists()
    from cifarlab.errors import UserError
    from cifarlab.results.store import copy_store
    with pytest.raises(UserError, match="notes.db is not a readable results database"):
        copy_store(study_dir / "notes.db")
    broken = study(study_dir, "status", db="notes.db")
    assert broken.returncode == 2 and "is not a readable results database" in broken.stderr, broken.stderr


def test_a_study_file_and_an_experiment_file_given_for_each_other_are_named(study_dir):
    r = subprocess.run(cli_command("run", "study.toml"), cwd=study_dir, env=cli_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2 and "study.toml is a study file (experiment and [[variants]]), not an experiment" \
        in r.stderr and "its variants: baseline, dropout" in r.stderr, r.stderr
    r = subprocess.run(cli_command("study", "status", "tiny.toml", "--db", "x.db"), cwd=study_dir, env=cli_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "tiny.toml is an experiment file (data, model, optim, train), not a study" \
        in r.stderr, r.stderr
    (study_dir / "typo.toml").write_text(STUDY.replace('seeds = [0, 1]', 'seeds = [0, 1]\nset = { "train.epoch" = 3 }'))
    r = subprocess.run(cli_command("study", "status", "typo.toml", "--db", "x.db"), cwd=study_dir, env=cli_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "typo.toml: the study's set (train.epoch, given to every variant)" in r.stderr, r.stderr
    # a valid study set whose key a variant's typo contains: the variant is named (it matched by substring)
    (study_dir / "typo.toml").write_text(STUDY.replace('seeds = [0, 1]', 'seeds = [0, 1]\nset = { "train.epochs" = 3 }')
                                         .replace('"model.dropout"', '"train.epochss" = 2, "model.dropout"'))
    r = subprocess.run(cli_command("study", "status", "typo.toml", "--db", "x.db"), cwd=study_dir, env=cli_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "(dropout)" in r.stderr and "the study's set" not in r.stderr, r.stderr


def test_a_study_set_whose_keys_fail_only_together_is_blamed_as_a_whole(tmp_path):
    from cifarlab.study.spec import study_set_error
    base = tmp_path / "c100.toml"
    base.write_text(EXPERIMENT.replace("[data]", '[data]\ndataset = "cifar100"'))
    given = {"data.labels": "coarse", "data.dataset": "cifar10"}   # each valid alone, not together
    error = study_set_error(base, given, tmp_path / "s.toml")
    assert error.startswith(f"{tmp_path / 's.toml'}: the study's set (given to every variant): ") and \
        "superclasses" in error, error
    assert study_set_error(base, {"data.labels": "coarse"}, tmp_path / "s.toml") is None


def test_study_run_warns_once_about_a_schedule_that_stops_mid_cycle(study_dir):
    (study_dir / "study.toml").write_text(STUDY + """
[[variants]]
name = "restarts"
set = { "schedule.name" = "cosine_restarts", "schedule.restart_every" = 1.5 }
""")
    warning = "cifarlab: warning: variant restarts: cosine_restarts ends mid-cycle"
    for workers in ("1", "2"):
        r = study(study_dir, "run", "--only", "nope", "--workers", workers)
        assert r.returncode == 2 and r.stderr.count(warning) == 1, r.stderr
        assert "variant baseline" not in r.stderr and "variant dropout" not in r.stderr
    # the workers that `--workers N` starts leave the warning to their parent
    assert "warning" not in study(study_dir, "run", "--only", "nope", "--worker").stderr


def test_status_estimates_the_time_left_per_epoch_so_longer_variants_count_longer(tmp_path):
    from cifarlab.study import plan_runs, status_table
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)  # 2 epochs
    (tmp_path / "study.toml").write_text(STUDY.replace('set = { "model.dropout"', 'set = { "train.epochs" = 6, '
                                                                                  '"model.dropout"'))
    plan = load_study(tmp_path / "study.toml")
    store = open_store(tmp_path / "results.db")
    plan_runs(plan, store)
    done = [key for v, _, key in plan.runs() if v.name == "baseline"]  # 2 runs x 2 epochs
    for key in done:
        row = store.claim(plan.name, [key])
        store.conn.execute("UPDATE runs SET status='done', wall_seconds=3600 WHERE id=?", (row["id"],))
    # 1800 s per epoch; left: 2 dropout runs x 6 epochs = 12 epochs = 6 h (a per-run mean would say 2 h)
    text = status_table(plan, store)
    assert "2 of 4 runs done, 2.0 h of training wall time; about 6.0 h left with 1 worker(s), " \
           "at 1800 s per epoch" in text, text
    assert "about 3.0 h left with 2 worker(s)" in status_table(plan, store, workers=2)
    # machines here differ several-fold in speed: where finished runs ran on this one, only they count
    store.conn.execute("UPDATE runs SET machine='slow box' WHERE status='done'")
    assert "at 1800 s per epoch (the finished runs' mean, none of them on this machine;" in \
        status_table(plan, store, machine="fast box")
    store.conn.execute("UPDATE runs SET machine='fast box', wall_seconds=360 WHERE id=?", (row["id"],))
    text = status_table(plan, store, machine="fast box")
    assert "about 0.6 h left with 1 worker(s), at 180 s per epoch (the mean of the 1 finished run(s) on this " \
           "machine" in text, text
    # a small study's epoch keeps two significant figures (it read "0 s per epoch")
    store.conn.execute("UPDATE runs SET wall_seconds=0.8 WHERE id=?", (row["id"],))
    assert "at 0.4 s per epoch (the mean of the 1 finished run(s)" in status_table(plan, store, machine="fast box")
    store.conn.execute("UPDATE runs SET wall_seconds=360 WHERE id=?", (row["id"],))
    # a variant with finished runs of its own is timed by them: dropout's first run took 3x baseline's epochs
    first_dropout = next(key for v, _, key in plan.runs() if v.name == "dropout")
    store.conn.execute("UPDATE runs SET status='done', wall_seconds=3240, machine='fast box' WHERE id=?",
                       (store.claim(plan.name, [first_dropout])["id"],))
    text = status_table(plan, store, machine="fast box")   # left: dropout seed 1, 6 epochs at 540 s
    assert "3 of 4 runs done" in text and "about 0.9 h left with 1 worker(s)" in text, text
    # a run in flight (or interrupted) resumes after the epochs it recorded: 2 of its 6 are done
    last = store.claim(plan.name, [key for v, _, key in plan.runs() if v.name == "dropout"][1:])
    for epoch in (1, 2):
        store.record_epoch(last["id"], {"epoch": epoch, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0,
                                        "val_acc": 0.5, "lr": 0.1, "train_seconds": 540.0})
    text = status_table(plan, store, machine="fast box")   # left: 4 epochs at 540 s
    assert "3 of 4 runs done" in text and "about 0.6 h left with 1 worker(s)" in text, text
    # interrupted (released to pending), it resumes from its last checkpoint: with one every 4 epochs,
    # epoch 0, so all 6 are left; with one every 2 epochs, after epoch 2
    store.conn.execute("UPDATE runs SET status='pending' WHERE id=?", (last["id"],))
    assert "about 0.6 h left with 1 worker(s)" in status_table(plan, store, machine="fast box")
    def every(n):   # checkpoint_every is not in a run's key: the same runs, another plan
        (tmp_path / f"every{n}.toml").write_text((tmp_path / "study.toml").read_text().replace(
            '"train.epochs" = 6, ', f'"train.epochs" = 6, "train.checkpoint_every" = {n}, '))
        return status_table(load_study(tmp_path / f"every{n}.toml"), store, machine="fast box")
    assert "about 0.9 h left with 1 worker(s)" in every(4)   # left: 6 epochs at 540 s
    assert "about 0.6 h left with 1 worker(s)" in every(2)
    # a run in flight goes on after what it recorded, whatever its checkpoints
    store.conn.execute("UPDATE runs SET status='running' WHERE id=?", (last["id"],))
    assert "about 0.6 h left with 1 worker(s)" in every(4)


def test_status_times_a_variant_without_runs_by_its_training_method(tmp_path):
    from cifarlab.study import plan_runs, status_table
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)  # 2 epochs
    cot = '"train.method" = "coteaching", "train.forget_rate" = '
    (tmp_path / "study.toml").write_text(STUDY.replace('seeds = [0, 1]', 'seeds = [0]').replace(
        'name = "dropout"\nset = { "model.dropout" = [0.2, 0.2], "augment.pipeline" = ["flip"] }',
        f'name = "cot-high"\nset = {{ {cot}0.4 }}') + f'[[variants]]\nname = "cot-low"\nset = {{ {cot}0.2 }}\n')
    plan = load_study(tmp_path / "study.toml")
    store = open_store(tmp_path / "results.db")
    plan_runs(plan, store)
    keys = {v.name: key for v, _, key in plan.runs()}
    for name, seconds in (("baseline", 3600), ("cot-high", 7200)):   # co-teaching's epochs: twice the others'
        store.conn.execute("UPDATE runs SET status='done', wall_seconds=? WHERE id=?",
                           (seconds, store.claim(plan.name, [keys[name]])["id"]))
    # left: cot-low, 2 epochs at co-teaching's 3600 s (the mean of all, 2700 s, would say 1.5 h)
    text = status_table(plan, store)
    assert "2 of 3 runs done" in text and "about 2.0 h left with 1 worker(s)" in text, text
    # a run that stopped early timed fewer epochs than planned: it times no variant or method of its
    # own, only the mean of all, per network-epoch (7200 s over 2 + 2 x 2 of them: 1200 s; cot-low's
    # 2 x 2 take 1.3 h, where co-teaching's own stopped run, 3600 s over 4, would say 1.0 h)
    store.conn.execute("UPDATE runs SET stopped='diverged', wall_seconds=3600 WHERE experiment='cot-high'")
    assert "about 1.3 h left with 1 worker(s)" in status_table(plan, store)
    # with no co-teaching run to time by at all, the others' seconds per epoch count its two networks
    store.conn.execute("UPDATE runs SET status='pending', wall_seconds=NULL WHERE experiment='cot-high'")
    assert "about 4.0 h left with 1 worker(s)" in status_table(plan, store)   # 2 runs x 2 epochs x 2 x 1800 s


def test_status_scales_a_variants_epochs_by_the_images_each_shows(tmp_path):
    """An epoch of a subset a fifth the size takes about a fifth of the time: a variant without
    finished runs is timed per training image of the runs that finished, times its own images."""
    from cifarlab.study import plan_runs, status_table
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)  # 2 epochs of 1,800 training images
    (tmp_path / "study.toml").write_text(STUDY.replace('seeds = [0, 1]', 'seeds = [0]').replace(
        'set = { "model.dropout" = [0.2, 0.2], "augment.pipeline" = ["flip"] }',
        'set = { "data.subset" = 560, "data.val_size" = 200 }'))   # 360 training images: a fifth
    plan = load_study(tmp_path / "study.toml")
    store = open_store(tmp_path / "results.db")
    plan_runs(plan, store)
    first = next(key for v, _, key in plan.runs() if v.name == "baseline")
    store.conn.execute("UPDATE runs SET status='done', wall_seconds=3600 WHERE id=?", (store.claim(plan.name, [first])["id"],))
    # left: dropout's 2 epochs at a fifth of 1800 s each = 0.2 h (per epoch alone would say 1.0 h)
    text = status_table(plan, store)
    assert "1 of 2 runs done, 1.0 h of training wall time; about 0.2 h left with 1 worker(s)" in text, text


def test_status_counts_no_epochs_for_a_run_that_takes_its_siblings_training(tmp_path):
    from cifarlab.study import plan_runs, status_table
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)  # 2 epochs, a validation split
    (tmp_path / "study.toml").write_text(STUDY.replace('set = { "model.dropout" = [0.2, 0.2], "augment.pipeline" = '
                                                       '["flip"] }', 'set = { "train.select" = "best_val" }'))
    plan = load_study(tmp_path / "study.toml")
    store = open_store(tmp_path / "results.db")
    plan_runs(plan, store)
    first = next(key for v, _, key in plan.runs() if v.name == "baseline")
    store.conn.execute("UPDATE runs SET status='done', wall_seconds=3600 WHERE id=?", (store.claim(plan.name, [first])["id"],))
    # left: baseline seed 1 (2 epochs at 1800 s); the best_val runs test the weights their sibling trains
    assert "1 of 4 runs done, 1.0 h of training wall time; about 1.0 h left with 1 worker(s)" in status_table(plan, store)


def test_status_says_why_a_run_failed(tmp_path):
    from cifarlab.study import plan_runs, status_table
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)
    (tmp_path / "study.toml").write_text(STUDY)
    plan = load_study(tmp_path / "study.toml")
    store = open_store(tmp_path / "results.db")
    plan_runs(plan, store)
    first = next(key for v, _, key in plan.runs() if v.name == "baseline")
    store.fail(store.claim(plan.name, [first])["id"], "RuntimeError: out of memory\nand a second line")
    text = status_table(plan, store)
    assert f"failed: baseline seed {first.seed}: RuntimeError: out of memory\n(`study run` claims a failed run again" \
        in text, text
    assert "and a second line" not in text


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "studies").glob("*.toml")), ids=lambda p: p.stem)
def test_every_committed_study_loads_and_resolves_every_run(path):
    from cifarlab.study import load_study
    study = load_study(path)
    assert study.variants and study.seeds
    for variant in study.variants:
        assert variant.config is not None  # the experiment and its overrides resolved and validated


def test_features_refuse_variants_that_train_on_different_data(study_dir, monkeypatch):
    """One projection figure shows one test set: variants on CIFAR-10 and CIFAR-100 are refused in
    one line, not drawn side by side."""
    import cifarlab.report
    from cifarlab.report.panels import feature_panels
    from cifarlab.errors import UserError
    (study_dir / "study.toml").write_text(STUDY.replace('set = { "model.dropout"',
                                                        'set = { "data.dataset" = "cifar100", "model.dropout"'))
    spec = load_study(study_dir / "study.toml")
    done = {}
    for v in spec.variants:
        run = study_dir / "runs" / v.name
        run.mkdir(parents=True)
        (run / "checkpoint.pt").write_bytes(b"")
        (run / "config.toml").write_text("")
        done[v.name] = {0: {"run_dir": str(run)}}
    monkeypatch.setattr(cifarlab.report, "counted_rows", lambda store, spec: [])
    monkeypatch.setattr(cifarlab.report, "latest_done", lambda rows: done)
    with pytest.raises(UserError, match=r"^--features: the variants train on different data \(\[\('cifar10', "):
        feature_panels(spec, store=None)
    del done["dropout"]  # one variant on this machine: one test set, drawn; the other named as missing
    dirs, config, missing = feature_panels(spec, store=None)
    assert dirs == [study_dir / "runs" / "baseline"] and missing == ["dropout"]
    assert config.data.dataset == "cifar10"


def in_process_study(study_dir, monkeypatch, during_training):
    """Run the study's `baseline` variant in this process; `during_training(key)` runs after each
    run's first epoch is recorded, while that run is still training."""
    import cifarlab.study.executors as executors
    from cifarlab.study import DataCache, run_study
    real = executors.train_one

    def train_one(key, cfg, splits, run_path, *, on_epoch=None, **kw):
        def epoch(row):
            on_epoch(row)
            if row["epoch"] == 1:
                during_training(key)
        return real(key, cfg, splits, run_path, on_epoch=epoch, **kw)

    monkeypatch.setattr(executors, "train_one", train_one)
    monkeypatch.chdir(study_dir)
    spec = load_study(study_dir / "study.toml")
    store = open_store(study_dir / "results.db")
    try:
        return run_study(spec, store, DataCache("data", False, False), study_dir / "runs", progress=False,
                         only=("baseline",))
    finally:
        store.close()


def test_a_run_whose_claim_another_process_took_is_not_recorded_twice(study_dir, monkeypatch, capsys):
    """While a run trains, another process takes its claim (it took this one for dead): at the end
    this process says so and leaves the run to the claim's holder."""
    def taken(key):
        with sqlite3.connect(study_dir / "results.db") as other:
            other.execute("UPDATE runs SET claimed_by='elsewhere:1:1', heartbeat=? WHERE seed=? AND "
                          "experiment='baseline'", (time.time(), key.seed))

    assert in_process_study(study_dir, monkeypatch, taken) == 0
    out = capsys.readouterr().out
    assert out.count("another process holds its claim now") == 2, out
    runs = sqlite3.connect(study_dir / "results.db").execute(
        "SELECT status, claimed_by, test_acc FROM runs WHERE experiment='baseline'").fetchall()
    assert runs == [("running", "elsewhere:1:1", None)] * 2


@pytest.mark.parametrize("how", ["replaced", "removed"])
def test_a_database_file_replaced_under_a_running_study_stops_it_in_one_line(study_dir, monkeypatch, how):
    """A checkout or copy over the database while a study writes to it: the process stops at its
    next write, naming the file, instead of writing on into the old file where nothing is kept."""
    from cifarlab.errors import UserError
    db = study_dir / "results.db"

    def swap(key):
        if how == "removed":
            db.unlink()
        else:   # a committed copy: folded, as scripts/snapshot_results.sh folds it before `git add`
            with sqlite3.connect(db) as other:
                other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            copy = study_dir / "copy.db"
            copy.write_bytes(db.read_bytes())
            os.replace(copy, db)

    with pytest.raises(UserError, match=rf"^results database .*results\.db was {how}.* delete .*results\.db-wal "
                                        r"and .*results\.db-shm .* run the command again"):
        in_process_study(study_dir, monkeypatch, swap)
    # what the message says to do: delete the old file's -wal and -shm, run again; the new file goes on
    # from its own state (seed 0 claimed, one epoch recorded) to every run done, each epoch once
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        assert [(r[0], r[1], r[2]) for r in results(db)[0]] == [("baseline", 0, "running"), ("baseline", 1, "pending")]
        with sqlite3.connect(db) as other:   # its claim names this test's process, which a worker would have
            other.execute("UPDATE runs SET claimed_by=? WHERE status='running'",   # ended: a start time of 0
                          (f"{socket.gethostname()}:{os.getpid()}:0",))
    again = study(study_dir, "run", "--only", "baseline")
    assert "2 run(s) finished" in again.stdout, again.stderr
    runs, epochs = results(db)
    assert [r[2] for r in runs if r[0] == "baseline"] == ["done"] * 2
    assert [(e[1], e[2]) for e in epochs] == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_a_fresh_study_is_costed_at_this_machines_rate_in_other_databases(tmp_path):
    from cifarlab.study.status import machine_rate, planned_compute
    db = tmp_path / "other" / "results.db"
    open_store(db)   # the schema
    conn = sqlite3.connect(db)
    for i, (machine, seconds, flops, stopped) in enumerate([("here", 100.0, 2e13, None), ("here", 100.0, 4e13, None),
                                                            ("here", 100.0, 3e13, None), ("there", 1.0, 9e15, None),
                                                            ("here", 1.0, 9e15, "diverged")]):
        cur = conn.execute("INSERT INTO runs (study, experiment, seed, config_hash, config, status, created, "
                           "wall_seconds, machine, stopped) VALUES ('s', ?, 0, 'h', '{}', 'done', 0, ?, ?, ?)",
                           (f"e{i}", seconds, machine, stopped))
        conn.execute("INSERT INTO run_metrics (run_id, name, value) VALUES (?, 'train_flops', ?)",
                     (cur.lastrowid, flops))
    conn.commit()
    conn.close()
    not_a_db = tmp_path / "junk" / "results.db"
    not_a_db.parent.mkdir()
    not_a_db.write_text("not sqlite")
    # the median of this machine's finished runs: another machine's and a stopped run's are not counted
    assert machine_rate([db, not_a_db], "here") == (pytest.approx(0.3), 3, 1)
    assert machine_rate([db], "elsewhere") is None and machine_rate([db], None) is None
    from cifarlab import api
    from cifarlab.flops import planned
    cfg = api.config()
    hours = planned(cfg)["train_flops"] / 0.3e12 / 3600
    line = planned_compute([(cfg, cfg.train.epochs)], 1, workers=2, rate=(0.3, 3, 1))
    assert f"about {hours:,.1f} process-hours, {hours / 2:,.1f} h with 2 worker(s)" in line, line
    assert "0.300 TFLOP/s per process" in line
    assert "bench peak" in planned_compute([(cfg, cfg.train.epochs)], 1)   # no rate: how to get one
    half = planned_compute([(cfg, cfg.train.epochs / 2)], 1, rate=(0.3, 3, 1))   # a run halfway: half left
    assert f"about {hours / 2:,.1f} process-hours" in half


def test_run_adopts_runs_done_in_a_sibling_database_instead_of_training_them(tmp_path):
    """Study b's `shared` equals study a's `base` (same config, seed): with --adopt-done-elsewhere
    the worker copies a's finished run and trains nothing; without the flag the run would train."""
    from cifarlab import config as C
    from cifarlab.study import run_study
    (tmp_path / "tiny.toml").write_text('name = "tiny"\n[train]\nepochs = 1\n[data]\nval_size = 100\n')
    for name, variant in (("a", "base"), ("b", "shared")):
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\nexperiment = "tiny.toml"\nseeds = [0]\n'
                                               f'[[variants]]\nname = "{variant}"\nset = {{ "optim.lr" = 0.03 }}\n')
        (tmp_path / "results" / name).mkdir(parents=True)
    a, b = (load_study(tmp_path / f"{n}.toml") for n in "ab")
    store_a = open_store(tmp_path / "results" / "a" / "results.db")
    (_, cfg, key), = a.runs()
    store_a.register(key, C.to_dict(cfg))
    row = store_a.claim("a", [key])
    store_a.finish(row["id"], finished_metrics(wall_seconds=9.0, val_acc=0.61, test_acc=0.6), "runs/a/base/seed0", 1)
    store_a.close()
    store_b = open_store(tmp_path / "results" / "b" / "results.db")
    from cifarlab.study.adopt import adopt_elsewhere
    finished = run_study(b, store_b, None, tmp_path / "runs", progress=False,   # no data: nothing trains
                         adopt=lambda: adopt_elsewhere(b, store_b))
    (_, _, key_b), = b.runs()
    assert finished == 0 and store_b.status_of(key_b) == "done" and store_b.run(key_b)["test_acc"] == 0.6


def test_status_gives_a_small_studys_times_in_minutes_or_seconds():
    from cifarlab.study.status import span
    assert [span(s) for s in (0, 42, 150, 359, 360, 5400)] == ["0 s", "42 s", "2 min", "6 min", "0.1 h", "1.5 h"]


def test_a_run_that_starts_over_forgets_the_epochs_an_earlier_attempt_recorded(study_dir, monkeypatch):
    """A claim with no checkpoint of its run (a fresh checkout lost it) trains from epoch 1, so the
    epochs the earlier attempt recorded are dropped at the claim: `study status` and a report of the
    study in progress would otherwise read them as this attempt's."""
    import pytest

    from cifarlab.study import plan_runs
    from cifarlab.study import run as R
    plan = load_study(study_dir / "study.toml")
    store = open_store(study_dir / "results.db")
    plan_runs(plan, store)
    key = next(key for v, _, key in plan.runs() if v.name == "baseline")
    row = store.claim(plan.name, [key])
    for epoch in (1, 2):   # an earlier attempt on another machine, then interrupted
        store.record_epoch(row["id"], {"epoch": epoch, "train_loss": 2.0, "train_acc": 0.1, "lr": 0.1,
                                       "train_seconds": 60.0, "val_acc_clean": 0.2})
    store.release(row["id"])
    seen = []

    def attempt(key, cfg, splits, run_dir, **kw):
        seen.append((len(store.epochs([row["id"]])), store.epoch_metrics(row["id"])))
        raise KeyboardInterrupt
    from cifarlab.study import executors
    monkeypatch.setattr(executors, "train_one", attempt)

    def claim_once():
        with pytest.raises(KeyboardInterrupt):
            R.run_study(plan, store, R.DataCache(str(study_dir / "data"), False, False), study_dir / "runs",
                        progress=False, only=("baseline",))
        store.release(row["id"])
    claim_once()
    assert seen == [(0, [])]
    # with its checkpoint where it trains, it resumes: the epochs recorded stay
    from cifarlab.study.data import run_dir_for
    folder = run_dir_for(study_dir / "runs", key)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"state")
    store.conn.execute("UPDATE runs SET status='running' WHERE id=?", (row["id"],))
    store.record_epoch(row["id"], {"epoch": 1, "train_loss": 2.0, "train_acc": 0.1, "lr": 0.1, "train_seconds": 60.0})
    store.release(row["id"])
    claim_once()
    assert seen[-1][0] == 1


def test_planned_compute_writes_its_flops_in_the_unit_that_shows_them(monkeypatch):
    """`study status` before any run: the FLOPs left in flops.unit's unit, a tiny study's in GFLOP."""
    from cifarlab.study import status
    for flops, said in ((1.5e9, "1.5 GFLOP"), (2.25e12, "2.2 TFLOP"), (3.0e15, "3.0 PFLOP")):
        monkeypatch.setattr(status, "flops_left", lambda work, flops=flops: flops)
        assert f"no finished run to time by: 4 epochs and about {said} of training left" in \
            status.planned_compute([(None, 4)], 9)


def test_a_selection_study_whose_runs_would_read_the_test_set_says_so_before_its_first_run(study_dir):
    """A selection study's report reads validation only; where its runs still evaluate the test set
    (train.test = true, the default) `study run` says how to keep the test set unread, while no run
    is done; with "train.test" = false in its `set`, or in a study that tests, it says nothing."""
    from cifarlab.study.run import plan_runs, tests_in_selection
    selection = STUDY.replace("seeds = [0, 1]", "seeds = [0, 1]\nselection = true")
    unread = selection.replace('name = "tiny"\nexperiment', 'name = "tiny"\nset = { "train.test" = false }\nexperiment')
    said = {}
    for name, text in (("tests", STUDY), ("selection", selection), ("unread", unread)):
        (study_dir / f"{name}.toml").write_text(text)
        spec = load_study(study_dir / f"{name}.toml")
        store = open_store(study_dir / f"{name}.db")
        plan = plan_runs(spec, store)
        said[name] = tests_in_selection(spec, plan, 0), tests_in_selection(spec, plan, 1)
        assert all(not cfg.train.test for cfg in plan.values()) == (name == "unread")
    assert said["tests"] == (None, None) and said["unread"] == (None, None)
    assert said["selection"][1] is None and 'add "train.test" = false to its `set` before its first run' in said["selection"][0]
