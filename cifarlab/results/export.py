"""CSV exports of a results database: runs.csv and epochs.csv, one study or all."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

from cifarlab.errors import UserError
from cifarlab.results.store import Store

# The epochs table's columns, in the order epochs.csv lists them.
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def export_csv(store: Store, out_dir: Path, study: str | None, current: set[tuple[str, str, int]] | None = None
               ) -> list[Path]:
    """Write runs.csv and epochs.csv (one study, or all) to out_dir; returns their paths.

    With `current` ((experiment, config hash, seed) of each run its study file plans now), runs.csv
    gets a `current` column: 1 for the rows the study's report counts, 0 for superseded configs and
    seeds the study does not plan."""
    runs = store.runs(study)
    if study is not None and not runs:
        raise UserError(f"no runs recorded for study {study!r}; studies in the database: "
                        f"{', '.join(store.studies()) or '(none)'}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Column names from the table itself, so that an empty export still has its header.
    columns = [d[0] for d in store.conn.execute("SELECT * FROM runs LIMIT 0").description]
    return [write_runs_csv(runs, columns, out_dir / "runs.csv", current),
            write_epochs_csv(store, runs, out_dir / "epochs.csv")]


def write_runs_csv(runs: list[sqlite3.Row], all_columns: list[str], path: Path,
                   current: set[tuple[str, str, int]] | None = None) -> Path:
    versions = [json.loads(r["versions"]) if r["versions"] else {} for r in runs]
    version_keys = sorted({k for v in versions for k in v})
    columns = [c for c in all_columns if c != "versions"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns + ([] if current is None else ["current"]) + [f"version_{k}" for k in version_keys])
        for r, v in zip(runs, versions):
            now = [] if current is None else [int((r["experiment"], r["config_hash"], r["seed"]) in current)]
            w.writerow([r[c] for c in columns] + now + [json.dumps(v[k], sort_keys=True) if isinstance(v.get(k), dict)
                                                        else v.get(k) for k in version_keys])
    return path


def write_epochs_csv(store: Store, runs: list[sqlite3.Row], path: Path) -> Path:
    by_id = {r["id"]: r for r in runs}
    epochs = store.epochs(sorted(by_id)) if by_id else []
    order = {rid: i for i, rid in enumerate(by_id)}  # the runs' own (study, experiment, seed, id) order
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["study", "experiment", "seed", "config_hash", "run_id", "epoch", *EPOCH_METRICS])
        for e in sorted(epochs, key=lambda e: (order[e["run_id"]], e["epoch"])):
            r = by_id[e["run_id"]]
            w.writerow([r["study"], r["experiment"], r["seed"], r["config_hash"], r["id"], e["epoch"],
                        *(e[m] for m in EPOCH_METRICS)])
    return path
