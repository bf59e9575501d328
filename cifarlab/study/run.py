"""Running a study with the local executor: each process claims the study's missing runs from the
shared results store, seed by seed, and trains them one after another (`cifarlab.study.executors`
has the unit of work and the Ray executor)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from cifarlab import config as C
from cifarlab.errors import ConfigError, finishing, stop_if_asked
from cifarlab.results.store import RunKey, Store
from cifarlab.runs import RunDir
from cifarlab.study.data import DataCache, resume_dir, run_dir_for  # noqa: F401 (re-exported: cifarlab.study)
from cifarlab.study.plan import plan as plan_study
from cifarlab.study.plan import shares, sharing, takes_done_sibling
from cifarlab.study.spec import Study

WAIT_S = 20.0  # how often a worker with nothing to claim looks again while an arm finishes tuning elsewhere


def plan_runs(study: Study, store: Store, only: tuple[str, ...] = ()) -> dict[RunKey, C.ExperimentConfig]:
    """The runs the study needs now (or the `only` variants' and their arms' tuning runs), registered
    in the store, in claim order (`cifarlab.study.plan`: a tuned arm's test runs join once its
    tuning runs have chosen)."""
    names = [v.name for v in study.variants]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(f"--only {unknown[0]!r} is not a variant of {study.name}; valid: {', '.join(names)}")
    runs = plan_study(study, store, only).runs
    for key, cfg in runs.items():
        store.register(key, C.to_dict(cfg))
    return runs


def waiting(study: Study, store: Store, only: tuple[str, ...] = ()) -> bool:
    """Whether an arm is still tuning on runs that other live processes hold: its test runs come
    once they finish, so a worker with nothing to claim waits for them instead of leaving."""
    p = plan_study(study, store, only)
    return any(store.status_of(key) == "running" for arm in p.undecided for _, key, _ in p.tuning[arm].runs)


def claim_order(plan: dict[RunKey, C.ExperimentConfig], share: dict[RunKey, set[RunKey]], store: Store,
                shared: Path | None = None) -> list[RunKey]:
    """The plan's keys in study order, except that a run whose sibling is training now comes last:
    started later, it finds the sibling's shared work instead of repeating it; and that a run whose
    sibling is done and whose shared folder `shared` holds the sibling's training comes first: it
    is a test pass now, and a full run once the working directory is gone (a fresh checkout)."""
    running = {k for k in {s for sibs in share.values() for s in sibs} if store.status_of(k) == "running"}
    later = [k for k in plan if share.get(k, set()) & running]
    first = [] if shared is None else [k for k in plan if k not in later and store.status_of(k) != "done"
                                       and takes_done_sibling(k, plan[k], share, store, shared)]
    return first + [k for k in plan if k not in later and k not in first] + later


def bar_total(study: Study, store: Store, plan: dict, only: tuple[str, ...] = ()) -> int:
    """The runs the progress bar counts: the plan's, and the test runs of arms still tuning, which
    join the plan once their arm chooses (`plan.pending_tests`), so the total holds still as arms
    decide; it grows only where a grid extends at its edge or `more_seeds` adds seeds."""
    from cifarlab.study.plan import pending_tests
    if not study.tuned:
        return len(plan)
    return len(plan) + sum(1 for name, _, _ in pending_tests(study, plan_study(study, store, only))
                           if not only or name in only)


def threaded(plan: dict[RunKey, C.ExperimentConfig], threads: int) -> dict[RunKey, C.ExperimentConfig]:
    if not threads:
        return plan
    return {key: dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))
            for key, cfg in plan.items()}


def drive_ray(ray, study, store: Store, runs_root: Path, *, only: tuple[str, ...] = (), data_dir: str | None,
              download: bool, cpus_per_run: int = 1, gpus_per_run: float = 0.0) -> tuple[int, int]:
    """Train every missing run of `study` on Ray (`run_ray`), planning again after each round: a tuned
    study's test runs join the plan once their arms' tuning runs have chosen. Returns (finished, failed)."""
    from cifarlab.study.executors import run_ray
    plan = plan_runs(study, store, only)
    finished, failed = 0, 0
    while True:
        stop_if_asked()   # a stop noted while the last round ended starts no further round
        done, bad = run_ray(ray, plan, store, study.name, runs_root, data_dir=data_dir, download=download,
                            cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, tuned=study.tuned)
        finished, failed = finished + done, failed + bad
        grown = plan_runs(study, store, only)
        if bad or set(grown) <= set(plan):
            return finished, failed
        plan = grown


MARGIN = 1.15, 60.0   # --until: a run fits when its estimate x 1.15 + 60 s ends before the deadline


def fitting(order: list[RunKey], left: dict[RunKey, float] | None, seconds: float) -> tuple[list[RunKey], int]:
    """(the runs of `order` expected to end within `seconds`, how many are not): a run's estimate is
    `left`'s (`status.seconds_left`: 0 for one that takes a finished sibling's training) with
    `MARGIN`; with no estimate at all (nothing to time the study by), none fits."""
    fit = [] if left is None else [k for k in order if k in left and left[k] * MARGIN[0] + MARGIN[1] <= seconds]
    return fit, len(order) - len(fit)


def unfit_line(name: str, unfit: int, candidates: list[RunKey], left: dict[RunKey, float] | None,
               until: float) -> str:
    """The line `study run --until` stops with when no run it could claim fits before `until`."""
    if left is None:
        why = ("and no finished run of it or of this machine in the databases beside it to time them by, "
               "so none under --until")
    else:
        shortest = min((left[k] * MARGIN[0] + MARGIN[1] for k in candidates if k in left), default=None)
        why = ("none expected to end before --until " + time.strftime("%Y-%m-%d %H:%M", time.localtime(until))
               + ("" if shortest is None else f" (the shortest needs about {shortest / 60:.0f} min with the margin)"))
    return f"{name}: {unfit} run(s) left, {why}; stopping"


def none_fit(study: Study, store: Store, until: float, estimate: Callable[[list[RunKey]], dict | None],
             only: tuple[str, ...] = (), adopt: Callable[[], list[str]] | None = None) -> str | None:
    """For a study whose database is not written yet, read against `store`, an empty one in memory
    (`results.store.empty_store`): `run_study`'s stopping line when it would claim nothing before
    `until` (no run fits, and `adopt` finds none done elsewhere), else None. `study run --until`
    then leaves the database uncreated: a queue's slot that only looks in does not add the study."""
    if adopt is not None and adopt():
        return None
    candidates = claimable(store, list(plan_runs(study, store, only)))
    left = estimate(candidates)
    fit, unfit = fitting(candidates, left, until - time.time())
    return None if fit or not unfit else unfit_line(study.name, unfit, candidates, left, until)


def claimable(store: Store, order: list[RunKey]) -> list[RunKey]:
    """The runs of `order` a claim could take now: not done, and not held by a live process."""
    from cifarlab.results.store import claim_is_dead
    now, out = time.time(), []
    for key in order:
        row = store.run(key)
        if row is None or row["status"] in ("pending", "failed") or (
                row["status"] == "running" and claim_is_dead(row["claimed_by"], row["heartbeat"], now)):
            out.append(key)
    return out


def tests_in_selection(study: Study, plan: dict[RunKey, C.ExperimentConfig], done: int) -> str | None:
    """The note a selection study starts with when its runs evaluate the test set (train.test = true):
    its report reads validation only, but each run computes a test accuracy that its final.json and
    the database keep, so the test set is read after all. Said only while no run is done, when the
    study's `set` can still take "train.test" = false (it changes the runs' identity, the config hash)."""
    if not study.selection or done or not any(cfg.train.test for cfg in plan.values()):
        return None
    return (f"note: {study.name} is a selection study (its report reads validation only), but its runs evaluate the "
            'test set (train.test = true) and keep that accuracy; add "train.test" = false to its `set` before its '
            "first run so that the test set is never read")


def run_study(study: Study, store: Store, data: DataCache, runs_root: Path, *, progress: bool = True,
              only: tuple[str, ...] = (), threads: int = 0, adopt: Callable[[], list[str]] | None = None,
              until: float | None = None, estimate: Callable[[list[RunKey]], dict | None] | None = None) -> int:
    """Run every missing run of the study (or of the `only` variants); returns how many this process finished.

    `threads` (0: PyTorch's default) sets train.threads, which the config hash leaves out, so
    the runs stay the study's runs whatever the thread count. `adopt`: called before each claim, it
    records runs made elsewhere and says which (`study run --adopt-done-elsewhere` passes
    `adopt.adopt_elsewhere`: runs a sibling results database holds done), so they are not trained.
    `until` (a UNIX time): claim only the runs expected to end by then (`fitting` of
    `estimate(candidates)`'s seconds per run of the runs a claim could take now,
    `status.seconds_left` as the command line wires it), and stop when none is left that does.
    """
    from cifarlab.study.executors import chance_line, train_one

    plan = threaded(plan_runs(study, store, only), threads)
    dynamic = study.tuned or study.more_seeds is not None   # the plan grows as runs finish
    if until is not None and estimate is None:
        raise ValueError("run_study: `until` needs `estimate`, the seconds each run still needs")
    done = sum(1 for key in plan if store.status_of(key) == "done")
    note = tests_in_selection(study, plan, done)
    if note:
        tqdm.write(note)
    outer = tqdm(total=bar_total(study, store, plan, only), initial=done, desc=f"study {study.name}", unit="run", disable=not progress,
                 position=0, dynamic_ncols=True)
    finished = 0
    while True:
        stop_if_asked()   # a stop some code swallowed (errors.STOP_ASKED) claims no further run
        if adopt is not None:
            for line in adopt():
                tqdm.write(f"{study.name}/{line}")
            if dynamic:   # an adopted tuning run may decide an arm (or a comparison add seeds)
                plan = threaded(plan_runs(study, store, only), threads)
        share = sharing(plan)
        order, unfit = claim_order(plan, share, store, runs_root / study.name / "_shared"), 0
        if until is not None:
            candidates = claimable(store, order)
            left = estimate(candidates)
            order, unfit = fitting(candidates, left, until - time.time())
        stop_if_asked()   # (planning and timing the runs above take a while)
        row = store.claim(study.name, order)
        if row is None and unfit:
            tqdm.write(unfit_line(study.name, unfit, candidates, left, until))
            break
        if row is None:
            if not dynamic:
                break
            # an arm may have chosen (or grown its grid) since this plan was made: its new runs first.
            # `busy` is read before planning again: an arm whose last tuning run finishes in between
            # then shows in the new plan, so this worker does not leave with its test runs untrained
            busy = waiting(study, store, only)
            fresh = threaded(plan_runs(study, store, only), threads)
            if set(fresh) - set(plan):
                plan = fresh
                outer.total = bar_total(study, store, plan, only)
                continue
            if not busy:
                break
            time.sleep(WAIT_S)
            continue
        key = RunKey(row["study"], row["experiment"], row["seed"], row["config_hash"])
        cfg = plan[key]
        run_dir = run_dir_for(runs_root, key)
        earlier = resume_dir(row["run_dir"], run_dir)
        if earlier is not None:
            tqdm.write(f"{study.name}/{key.experiment} seed {key.seed}: resumes from its checkpoint in {earlier} "
                       f"(an earlier study run's --runs-dir), not from the start under {runs_root}")
            run_dir = earlier
        store.claimed_dir(row["id"], str(run_dir.resolve()))   # where a later claim finds its checkpoint
        if not RunDir(run_dir).checkpoint_path.is_file():   # it starts over: an earlier attempt's epochs
            store.clear_epochs(row["id"])                     # (lost with its checkpoint) are not its own
        try:
            result = train_one(key, cfg, data.get(cfg.data), run_dir, progress=progress,
                               progress_row=1, on_epoch=lambda r, i=row["id"]: store.record_epoch(i, r),
                               share=shares(key, cfg, share, study.tuned))
        except KeyboardInterrupt:
            with finishing():   # a second signal does not leave the run marked running
                if not store.replaced():
                    store.release(row["id"])
            raise
        except Exception as e:   # recorded unless the database file was replaced: then this error says so
            if not store.replaced():
                store.fail(row["id"], f"{type(e).__name__}: {e}")
            raise
        final = result.final
        # every epoch goes in again from the run's metrics.jsonl: epochs trained before a resume whose
        # rows never reached this database file (it was replaced under the process) are not lost
        if not store.finish(row["id"], final, result.run_dir, final["epochs"], result.epochs):
            tqdm.write(f"{study.name}/{key.experiment} seed {key.seed}: trained, but another process holds its "
                       "claim now (this one was taken for dead); not recorded by this process")
            continue
        finished += 1
        outer.update(1)
        if dynamic:   # a finished run may decide an arm (its test runs join the plan) or add seeds (`more_seeds`)
            plan = threaded(plan_runs(study, store, only), threads)
            outer.total = bar_total(study, store, plan, only)
        val = "no validation split" if final["val_acc"] is None else f"val {final['val_acc']:.4f}"
        tqdm.write(f"{study.name}/{key.experiment} seed {key.seed}: {val} "
                   f"({final['epochs']} epochs, {final['wall_seconds']:.0f} s)")
        warning = chance_line(study.name, key, final, result.epochs)
        if warning:   # the report calls such a variant unstable and compares it with nothing
            tqdm.write(warning, file=sys.stderr)
    outer.close()
    return finished
