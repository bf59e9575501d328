"""Two results databases of the same study, run for run: does a replicate (another machine,
another precision, another library version) give the same numbers as the original?

Runs pair when study, experiment, seed and config hash agree and both are done; the table lists
each pair and the mean difference (other - this) with its 95% t-interval over the pairs.
"""
from __future__ import annotations

import statistics

from cifarlab import stats
from cifarlab.errors import UserError
from cifarlab.results.store import Store

METRICS = {"test": "test_acc", "val": "val_acc"}


def done_runs(store: Store, study: str | None) -> dict[tuple, dict]:
    """(study, experiment, seed, config_hash) -> the newest done row."""
    out: dict[tuple, dict] = {}
    for r in store.runs(study):
        if r["status"] == "done":
            out[(r["study"], r["experiment"], r["seed"], r["config_hash"])] = r
    return out


def machines(rows) -> str:
    return ", ".join(sorted({r["machine"] or "unrecorded" for r in rows}))


def compare(this: Store, other: Store, study: str | None, metric: str = "test") -> str:
    """A plain-text table of the paired runs and the mean difference; an error if none pair."""
    column = METRICS[metric]
    a, b = done_runs(this, study), done_runs(other, study)
    keys = sorted(k for k in set(a) & set(b) if a[k][column] is not None and b[k][column] is not None)
    if not keys:
        where = f"study {study!r}" if study else "any study"
        shared = set(a) & set(b)
        why = (f"; {len(shared)} are in both but have no {column} (tuning or selection runs never read the "
               "test set): give --metric val" if shared and metric == "test" else "; nothing to compare")
        raise UserError(f"no done run of {where} is in both databases with the same config and seed "
                        f"and a {column} ({len(a)} and {len(b)} done runs){why}")
    width = max(10, *(len(k[1]) for k in keys))
    lines = [f"this:  {this.path} ({machines(a[k] for k in keys)})",
             f"other: {other.path} ({machines(b[k] for k in keys)})", "",
             f"{'experiment':{width}s}  seed  this {metric} %  other {metric} %  other - this"]
    diffs = []
    for k in keys:
        x, y = 100 * a[k][column], 100 * b[k][column]
        diffs.append(y - x)
        lines.append(f"{k[1]:{width}s}  {k[2]:4d}  {x:11.2f}  {y:12.2f}  {y - x:+12.2f}")
    mean, std = stats.mean_std(diffs)
    lo, hi = stats.ci95(diffs)
    spread = (f" ± {std:.2f} (std) points, 95% CI [{lo:+.2f}, {hi:+.2f}], median {statistics.median(diffs):+.2f}"
              if len(diffs) > 1 else " points")
    lines += ["", f"{len(diffs)} paired run(s): other - this = {mean:+.2f}{spread}; "
                  f"{len(set(a) - set(b))} done run(s) only in this, {len(set(b) - set(a))} only in other"]
    return "\n".join(lines)
