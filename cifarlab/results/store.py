"""SQLite results store (WAL mode), shared safely by several study processes.

Schema (version 1, tables unchanged since)
------------------
meta(key, value)                 schema_version
runs                             one row per (study, experiment, seed, config_hash)
    id, study, experiment, seed, config_hash, config (resolved config, JSON)
    status        pending | running | done | failed
    claimed_by    "<host>:<pid>:<start>" of the process running it (start: its start time in clock
                  ticks since boot, so a reused pid is not taken for it; older rows lack it);
                  heartbeat (unix time) of its last sign of life
    git_commit, git_dirty, versions (JSON: python, torch, numpy, cifarlab, platform; plugins where a run
    had any: module -> its source file's hash), machine
    created, started, finished (unix times), wall_seconds, images_per_s
    val_acc, val_loss, test_acc, test_loss, per_class_test_acc (JSON list), classes (JSON list)
    run_dir       where its checkpoint and files live; error (last failure message)
    runtime       (version 4) device, precision, memory layout and threads of the run
epochs(run_id, epoch, ...)       train_loss, train_acc, val_loss, val_acc, lr, seconds (train + val)
run_metrics(run_id, name, value) (version 7) a done run's further metrics, e.g. test_top5
epoch_metrics(run_id, epoch, name, value) (version 9) an epoch's further metrics, e.g. val_acc_clean

Version 2 changed no table: config_hash became a hash of the non-default config values
only (see `config.config_hash`), and the migration recomputes it from each run's stored config.
Version 3 changed no table either: execution-only keys (threads, checkpoint_every,
eval_batch_size) left the hash; the same migration step recomputes it.
Version 4 added runs.runtime: how the run computed ("cpu (AMD EPYC), fp32, channels_last,
1 threads"), so that wall times of runs made with different thread counts can be told apart.
Version 5 added runs.stopped (why a done run ended before its last epoch).
Version 6 changed no table: the model anatomy renamed model.batchnorm (bool) to model.norm
("batch" | "none") and model.pool to model.downsample (`config.RENAMED`); the migration rewrites
each stored config with the new keys and recomputes its hash, so a committed database still
matches its study and regenerates its report.
Version 7 added run_metrics(run_id, name, value): a done run's metrics beyond the columns of
runs, one row each (today test_top5 and val_top5, `RUN_METRICS`), so that a new metric needs
no schema change.
Version 8 changed no table: train.label_smoothing moved to loss.label_smoothing and augment.flip
became an entry of the ordered augment.pipeline (`config.upgrade_renamed`); the same rewrite of
stored configs and rehash as version 6.
Version 9 added epoch_metrics(run_id, epoch, name, value): an epoch's metrics beyond the columns of
epochs, one row each (`EPOCH_METRICS`: top-5 and, under label noise, the clean-label validation
accuracy and the memorisation curve).

Version 10 added tune_choices(study, arm, tune_hash, choice, reason, decided): the value each arm of
a study with a `tune` grid chose on the validation split, recorded once when its tuning runs had
all finished (`cifarlab.study.plan`), so that the arm's test runs, the report and a later rerun all
use that one choice; tune_hash names the grid, seeds and budget it was chosen on.

Migrations: MIGRATIONS[v] lists the steps that take a database from version v-1 to v
(SQL statements, or functions of the connection); opening an older database applies the
missing ones in order, inside one transaction. A database from a newer version is
refused, never silently read.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from cifarlab.errors import UserError

SCHEMA_VERSION = 10


def rehash_configs(conn: sqlite3.Connection) -> None:
    """Recompute every run's config_hash from its stored config with the current definition."""
    from cifarlab import config as C
    from cifarlab.errors import ConfigError
    for run_id, text in conn.execute("SELECT id, config FROM runs").fetchall():
        try:
            new = C.config_hash(C.from_dict(json.loads(text), recorded=True))
        except (ConfigError, ValueError):
            continue  # a config this version cannot read keeps its old hash and matches nothing
        # OR IGNORE: should two old rows now share a hash, the second keeps its old one.
        conn.execute("UPDATE OR IGNORE runs SET config_hash=? WHERE id=?", (new, run_id))


def rename_config_keys(conn: sqlite3.Connection) -> None:
    """Rewrite every stored config with the keys of `config.RENAMED`, then recompute the hashes."""
    from cifarlab import config as C
    for run_id, text in conn.execute("SELECT id, config FROM runs").fetchall():
        try:
            raw = json.loads(text)
        except ValueError:
            continue
        new = C.upgrade_renamed(raw)
        if new != raw:
            conn.execute("UPDATE runs SET config=? WHERE id=?", (json.dumps(new, sort_keys=True), run_id))
    rehash_configs(conn)


MIGRATIONS: dict[int, list[str | Callable[[sqlite3.Connection], None]]] = {
    1: [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            study TEXT NOT NULL, experiment TEXT NOT NULL, seed INTEGER NOT NULL,
            config_hash TEXT NOT NULL, config TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
            claimed_by TEXT, heartbeat REAL,
            git_commit TEXT, git_dirty INTEGER, versions TEXT, machine TEXT,
            created REAL NOT NULL, started REAL, finished REAL, wall_seconds REAL, images_per_s REAL,
            val_acc REAL, val_loss REAL, test_acc REAL, test_loss REAL,
            per_class_test_acc TEXT, classes TEXT, run_dir TEXT, error TEXT,
            UNIQUE (study, experiment, seed, config_hash))""",
        """CREATE TABLE epochs (
            run_id INTEGER NOT NULL REFERENCES runs(id), epoch INTEGER NOT NULL,
            train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL, lr REAL, seconds REAL,
            PRIMARY KEY (run_id, epoch))""",
    ],
    2: [rehash_configs],
    3: [rehash_configs],
    4: ["ALTER TABLE runs ADD COLUMN runtime TEXT"],
    5: ["ALTER TABLE runs ADD COLUMN stopped TEXT"],  # why a done run ended before its last epoch
    6: [rename_config_keys],
    7: ["""CREATE TABLE run_metrics (
            run_id INTEGER NOT NULL REFERENCES runs(id), name TEXT NOT NULL, value REAL,
            PRIMARY KEY (run_id, name))"""],
    8: [rename_config_keys],
    9: ["""CREATE TABLE epoch_metrics (
            run_id INTEGER NOT NULL REFERENCES runs(id), epoch INTEGER NOT NULL, name TEXT NOT NULL, value REAL,
            PRIMARY KEY (run_id, epoch, name))"""],
    10: ["""CREATE TABLE tune_choices (
            study TEXT NOT NULL, arm TEXT NOT NULL, tune_hash TEXT NOT NULL,
            choice TEXT NOT NULL, reason TEXT NOT NULL, decided REAL NOT NULL,
            PRIMARY KEY (study, arm, tune_hash))"""],
}
# Metrics of final.json that a done run keeps in run_metrics (where the run recorded them).
RUN_METRICS = ("test_top5", "val_top5", "val_acc_clean", "train_flops", "images_seen")
# Metrics of an epoch's row kept in epoch_metrics (where the run recorded them).
EPOCH_METRICS = ("val_top5", "val_acc_clean", "flipped_acc_noisy", "flipped_acc_clean")
# What a done run carries from one database to another (`Store.copy_done`): all but its identity.
COPIED = ("git_commit", "git_dirty", "versions", "machine", "started", "finished", "wall_seconds", "images_per_s",
          "val_acc", "val_loss", "test_acc", "test_loss", "per_class_test_acc", "classes", "run_dir", "runtime",
          "stopped")
STALE_HEARTBEAT_S = 30 * 60  # a claim from another host with no sign of life for this long is reclaimed


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid()) or ''}"


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the process's name (state first), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()  # the name before ")" may hold spaces


def process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, from /proc), or None where unknown."""
    fields = proc_stat(pid)
    return fields[19] if fields else None  # field 22


def claim_is_dead(claimed_by: str | None, heartbeat: float | None, now: float) -> bool:
    """A claim is dead when its process is gone (same host) or silent too long (other host).

    On the same host a pid that now belongs to another process (a restarted machine or
    container reuses pids) counts as gone: the claim records its process's start time. So does a
    zombie (a worker killed whose parent has not reaped it yet: scripts/queue_stop.sh's SIGKILL).
    """
    if not claimed_by:
        return True
    host, pid, start = (claimed_by.split(":") + [""])[:3]
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        fields = proc_stat(int(pid))
        if fields and fields[0] in ("Z", "X"):   # killed, not yet reaped by its parent: it trains no more
            return True
        return bool(start) and fields is not None and fields[19] != start
    return heartbeat is None or now - heartbeat > STALE_HEARTBEAT_S


@dataclass(frozen=True)
class RunKey:
    study: str
    experiment: str
    seed: int
    config_hash: str


def file_identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`, None when there is none: a checkout, stash or mv
    over a database gives its path a new file, which an open connection would not see."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn, self.path = conn, path
        self._where = path.absolute()   # not resolved: a symlink re-pointed elsewhere is a new file too
        self._identity = file_identity(self._where)

    def replaced(self) -> bool:
        """Whether the file at the path is no longer the one this connection opened (a checkout,
        stash or mv over it, or its removal). A copy written into the same file (cp, shutil.copy)
        keeps its inode and is not seen: never copy over a database in use."""
        return file_identity(self._where) != self._identity

    def check_file(self) -> None:
        """Refuse to write once the file at the path was replaced: SQLite would go on writing to the
        old file, and every write would be lost."""
        now = file_identity(self._where)
        if now != self._identity:
            what = "removed" if now is None else "replaced by another file (a checkout, stash or mv over it?)"
            raise UserError(f"results database {self.path} was {what} while this process had it open, so "
                            "it stops rather than write to the old file. Once every process that had it open "
                            f"has stopped, delete {self.path}-wal and {self.path}-shm (the old file's, which "
                            "SQLite would lay over the new one) and run the command again: finished runs the "
                            "new file lacks are recorded from their run directories, and runs in flight "
                            "resume from their checkpoints")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front: claims cannot interleave. Then the file is
        checked to be the one this connection opened (after the lock, which may have been waited for)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.check_file()
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ runs
    def register(self, key: RunKey, config: dict) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO runs (study, experiment, seed, config_hash, config, created) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (key.study, key.experiment, key.seed, key.config_hash,
                                                    json.dumps(config, sort_keys=True), time.time()))

    def claim(self, study: str, wanted: list[RunKey]) -> sqlite3.Row | None:
        """Atomically take the first wanted run that is pending, failed, or held by a dead process."""
        now = time.time()
        with self.transaction() as c:
            for key in wanted:
                row = c.execute("SELECT * FROM runs WHERE study=? AND experiment=? AND seed=? AND config_hash=?",
                                (key.study, key.experiment, key.seed, key.config_hash)).fetchone()
                if row is None or row["status"] == "done":
                    continue
                if row["status"] == "running" and not claim_is_dead(row["claimed_by"], row["heartbeat"], now):
                    continue
                c.execute("UPDATE runs SET status='running', claimed_by=?, heartbeat=?, "
                          "started=COALESCE(started, ?) WHERE id=?", (me(), now, now, row["id"]))
                return c.execute("SELECT * FROM runs WHERE id=?", (row["id"],)).fetchone()
        return None

    def clear_epochs(self, run_id: int) -> None:
        """Drop the epochs recorded for a claimed run that starts over (no checkpoint of it where it
        trains now: a fresh checkout, another machine), so that neither `study status` nor a report
        of the study in progress reads an earlier attempt's epochs as this one's."""
        with self.transaction() as c:
            c.execute("DELETE FROM epochs WHERE run_id=?", (run_id,))
            c.execute("DELETE FROM epoch_metrics WHERE run_id=?", (run_id,))

    def record_epoch(self, run_id: int, row: dict) -> None:
        with self.transaction() as c:
            self._epoch(c, run_id, row)

    @staticmethod
    def _epoch(c: sqlite3.Connection, run_id: int, row: dict) -> None:
        c.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (run_id, row["epoch"], row["train_loss"], row["train_acc"], row.get("val_loss"),
                   row.get("val_acc"), row["lr"], row["train_seconds"] + row.get("val_seconds", 0.0)))
        c.executemany("INSERT OR REPLACE INTO epoch_metrics VALUES (?, ?, ?, ?)",
                      [(run_id, row["epoch"], k, row[k]) for k in EPOCH_METRICS if row.get(k) is not None])
        c.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time(), run_id))

    def beat(self, run_ids: list[int]) -> None:
        """Mark claims alive (a driver whose runs train elsewhere: no epoch of theirs reaches it)."""
        with self.transaction() as c:
            c.executemany("UPDATE runs SET heartbeat=? WHERE id=? AND claimed_by=?",
                          [(time.time(), i, me()) for i in run_ids])

    def finish(self, run_id: int, final: dict, run_dir: str, epochs: int,
               history: list[dict] | None = None) -> bool:
        """Record a finished run. With `history` (every epoch's row: a driver whose run trained
        elsewhere), the epochs go in the same transaction, and only while this process still holds
        the run's claim, so that a run is never recorded twice; returns whether it was recorded."""
        versions = {k: final[k] for k in ("python", "torch", "numpy", "cifarlab", "platform")}
        if final.get("plugins"):   # the plug-ins' source hashes (provenance.plugin_hashes)
            versions["plugins"] = final["plugins"]
        with self.transaction() as c:
            if history is not None:
                row = c.execute("SELECT status, claimed_by FROM runs WHERE id=?", (run_id,)).fetchone()
                if row is None or row["status"] != "running" or row["claimed_by"] != me():
                    return False
                for epoch in history:
                    self._epoch(c, run_id, epoch)
            c.execute("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, epochs))
            c.execute("DELETE FROM epoch_metrics WHERE run_id=? AND epoch>?", (run_id, epochs))
            c.execute(
                "UPDATE runs SET status='done', finished=?, git_commit=?, git_dirty=?, versions=?, machine=?, "
                "wall_seconds=?, images_per_s=?, val_acc=?, val_loss=?, test_acc=?, test_loss=?, "
                "per_class_test_acc=?, classes=?, run_dir=?, runtime=?, stopped=?, error=NULL WHERE id=?",
                (time.time(), final["git_commit"], final["git_dirty"], json.dumps(versions, sort_keys=True),
                 final["machine"], final["wall_seconds"], final["images_per_s"], final["val_acc"],
                 final["val_loss"], final["test_acc"], final["test_loss"],
                 json.dumps(final["per_class_test_acc"]), json.dumps(final["classes"]), run_dir,
                 final.get("runtime"), final.get("stopped"), run_id))
            c.execute("DELETE FROM run_metrics WHERE run_id=?", (run_id,))
            c.executemany("INSERT INTO run_metrics VALUES (?, ?, ?)",
                          [(run_id, k, final[k]) for k in RUN_METRICS if final.get(k) is not None])
        # Fold the write-ahead log into the database file, so that a copy of the file taken while
        # other workers still run (a commit of results/) holds every finished run.
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return True

    def copy_done(self, run_id: int, source: sqlite3.Row, epochs: list[sqlite3.Row],
                  metrics: dict[str, float] | None = None,
                  epoch_metrics: list[tuple[int, str, float]] | None = None) -> None:
        """Make a claimed run the done run `source` (a row of another database) with its epochs
        and run metrics: the same outcome, provenance and timings; only its study and experiment
        name stay this row's."""
        sets = ", ".join(f"{col}=?" for col in COPIED)
        with self.transaction() as c:
            c.execute(f"UPDATE runs SET status='done', error=NULL, {sets} WHERE id=?",
                      [source[col] for col in COPIED] + [run_id])
            c.execute("DELETE FROM epochs WHERE run_id=?", (run_id,))
            c.executemany("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          [(run_id, e["epoch"], e["train_loss"], e["train_acc"], e["val_loss"], e["val_acc"],
                            e["lr"], e["seconds"]) for e in epochs])
            c.execute("DELETE FROM run_metrics WHERE run_id=?", (run_id,))
            c.executemany("INSERT INTO run_metrics VALUES (?, ?, ?)",
                          [(run_id, k, v) for k, v in (metrics or {}).items()])
            c.execute("DELETE FROM epoch_metrics WHERE run_id=?", (run_id,))
            c.executemany("INSERT INTO epoch_metrics VALUES (?, ?, ?, ?)",
                          [(run_id, e, k, v) for e, k, v in (epoch_metrics or [])])
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def fail(self, run_id: int, error: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET status='failed', error=?, claimed_by=NULL WHERE id=?", (error, run_id))

    def claimed_dir(self, run_id: int, run_dir: str) -> None:
        """Record where a claimed run trains (its checkpoint lives there), before its first epoch."""
        with self.transaction() as c:
            c.execute("UPDATE runs SET run_dir=? WHERE id=? AND status='running'", (run_dir, run_id))

    def release(self, run_id: int) -> None:
        """Give a claim back (interrupted): the next study process resumes it."""
        with self.transaction() as c:
            c.execute("UPDATE runs SET status='pending', claimed_by=NULL WHERE id=? AND status='running'",
                      (run_id,))

    # ------------------------------------------------------------------ queries
    def run(self, key: RunKey) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM runs WHERE study=? AND experiment=? AND seed=? AND config_hash=?",
                                 (key.study, key.experiment, key.seed, key.config_hash)).fetchone()

    def status_of(self, key: RunKey) -> str | None:
        row = self.run(key)
        return row["status"] if row else None

    def runs(self, study=None) -> list[sqlite3.Row]:
        """Every recorded run (done, running, failed), of one study if given (its name, or a loaded
        `Study`): rows with the runs table's columns (experiment, seed, status, val_acc, test_acc, ...)."""
        q, args = "SELECT * FROM runs", ()
        if study is not None:
            q, args = q + " WHERE study=?", (getattr(study, "name", study),)
        return self.conn.execute(q + " ORDER BY study, experiment, seed, id", args).fetchall()

    def epochs(self, run_ids: list[int]) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(run_ids))
        return self.conn.execute(f"SELECT * FROM epochs WHERE run_id IN ({marks}) ORDER BY run_id, epoch",
                                 run_ids).fetchall()

    def run_metrics(self, run_ids: list[int]) -> dict[int, dict[str, float]]:
        """{run id: {name: value}} of the runs' further metrics (version 7's table)."""
        marks = ",".join("?" * len(run_ids))
        out: dict[int, dict[str, float]] = {i: {} for i in run_ids}
        for r in self.conn.execute(f"SELECT * FROM run_metrics WHERE run_id IN ({marks})", run_ids):
            out[r["run_id"]][r["name"]] = r["value"]
        return out

    def epoch_metrics(self, run_id: int) -> list[tuple[int, str, float]]:
        """(epoch, name, value) of the run's further epoch metrics (version 9's table)."""
        return [(r["epoch"], r["name"], r["value"]) for r in self.conn.execute(
            "SELECT * FROM epoch_metrics WHERE run_id=? ORDER BY epoch, name", (run_id,))]

    def record_choice(self, study: str, arm: str, tune_hash: str, choice: dict, reason: str) -> tuple[dict, str]:
        """Record an arm's tuned choice unless one is recorded already; returns the recorded one
        (the first process to decide wins; every process decides the same from the same runs)."""
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO tune_choices VALUES (?, ?, ?, ?, ?, ?)",
                      (study, arm, tune_hash, json.dumps(choice, sort_keys=True), reason, time.time()))
        return self.choices(study)[(arm, tune_hash)]

    def choices(self, study: str) -> dict[tuple[str, str], tuple[dict, str]]:
        """{(arm, tune_hash): (choice, reason)} of the study's recorded tuning choices (version 10)."""
        return {(r["arm"], r["tune_hash"]): (json.loads(r["choice"]), r["reason"]) for r in self.conn.execute(
            "SELECT * FROM tune_choices WHERE study=? ORDER BY arm, tune_hash", (study,))}

    def studies(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT study FROM runs ORDER BY study")]

    def close(self) -> None:
        self.conn.close()


def open_store(path: str | Path, must_exist: bool = False, option: str = "--db") -> Store:
    """Open (creating or migrating) the database at `path`. Commands that only read results
    pass must_exist, so a mistyped --db is an error, not an empty report and a stray file;
    `option` names the command-line option the path came from, for that error."""
    path = Path(path)
    if must_exist:
        require_database(path, option)
    deadline = time.monotonic() + 60
    while True:
        conn = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA journal_mode=WAL")
            migrate(conn, path)
            return Store(conn, path)
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as e:
            if conn is not None:
                conn.close()
            # Two processes opening a new database at once: switching it to WAL takes an
            # exclusive lock for which SQLite does not wait (no busy handler), so try again.
            if _is_busy(e) and time.monotonic() < deadline:
                time.sleep(random.uniform(0.05, 0.25))
                continue
            raise UserError(f"cannot open results database {path} ({e}); it must be a cifarlab database "
                            f"in a writable directory (choose one with --db)") from None


def _is_busy(e: BaseException) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


def empty_store(path: str | Path, source: sqlite3.Connection | None = None) -> Store:
    """A database in memory standing for the one at `path`, written nowhere: empty (what a command
    would do before it creates the file), or a copy of `source`'s contents."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    if source is not None:
        source.backup(conn)
    conn.row_factory = sqlite3.Row
    migrate(conn, Path(path))
    return Store(conn, Path(path))


def copy_store(path: str | Path) -> Store:
    """The database at `path` copied into memory, the file opened read-only: for a command that
    only reads (`study status` plans pending runs in the copy, never in the file)."""
    source = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        return empty_store(path, source)
    except sqlite3.DatabaseError as e:
        raise UserError(f"{path} is not a readable results database ({e})") from None
    finally:
        source.close()


def require_runs(store: Store, study_name: str | None, db: str | Path, hint: str) -> None:
    """One line when the database holds no run of the study (of any study, for None): a report, an
    export or a summary of nothing is a mistake (a wrong database or study), not an empty result."""
    if store.runs(study_name):
        return
    held = store.studies()
    what = f"no run of study {study_name}" if study_name else "no run"
    raise UserError(f"{db} holds {what}" + (f" (it holds {', '.join(held)})" if held else " (it is empty)")
                    + f"; {hint}")


def require_database(path: str | Path, option: str = "--db") -> None:
    """One line when `path` is no file, before anything is opened, created or migrated."""
    if not Path(path).is_file():
        raise UserError(f"results database not found: {path}; give as {option} a database that "
                        "`cifarlab study run` wrote (e.g. results/basic/results.db)")


def schema_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise UserError(f"results database {path} has schema version {version}, newer than this "
                            f"cifarlab's {SCHEMA_VERSION}; upgrade cifarlab to read it")
        for v in range(version + 1, SCHEMA_VERSION + 1):
            for step in MIGRATIONS[v]:
                if callable(step):
                    step(conn)
                else:
                    conn.execute(step)
        if version != SCHEMA_VERSION:  # a current database is left byte for byte as it was
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
