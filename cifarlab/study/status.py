"""`study status`: what is done, running, pending and failed, and the training time left."""

from __future__ import annotations

from cifarlab.results.store import Store
from cifarlab.study.spec import Study


def status_table(study: Study, store: Store, workers: int = 1, machine: str | None = None,
                 others: list | None = None, measure: int = 0, shared=None, p=None) -> str:
    """done / running / pending / failed per variant, counting only current configs, and an
    estimate of the training time left: the finished runs' mean wall time per epoch times the
    epochs left (variants may train different budgets), shared by `workers` processes (the mean
    already holds the slowdown of the workers that ran them). Where some finished runs ran on
    `machine` (this one's name), only theirs count: machines here differ several-fold in speed.
    A variant with finished runs of its own is timed by them (co-teaching trains two networks, so
    its epochs take twice as long); one without, by the finished runs of its training method
    (`train.method`) where there are some; the others by the mean of all; each as seconds per
    training image and network, times the variant's images per epoch (an epoch of a subset is
    shorter) and networks (`epoch_rate`). A run in flight or
    interrupted counts only the epochs it has not recorded yet (an interrupted one: after its last
    checkpoint). A run that takes a sibling's shared work (`run.sharing`: a choice of weights, a
    probe) adds no epochs once one of its siblings is done or counted (a done one's files in the
    shared folder `shared`, RUNS_DIR/STUDY/_shared: `plan.takes_here`; None: assumed), nor does a tuned arm's test
    run that will test a tuning run's weights (`plan.pending_tests`). With no finished run yet, the
    planned FLOPs are turned into hours at `machine`'s rate in the databases `others` (other
    studies), where it finished runs there. `measure` > 0: also the hours the training steps left
    take at rates timed here now, `measure` steps per network (`measured_line`). `p`: the study's
    plan against `store`, if already made."""
    from cifarlab.study.plan import plan
    p = p or plan(study, store)   # planned once: tally and the tuning lines read the same plan
    runs, counts, timed, work, methods, left = tally(study, store, p, shared)
    width = max(20, *(len(name) for name, _, _ in runs))
    rows = [f"{'experiment':{width}s}  done  running  pending  failed"]
    for name, c in counts.items():
        rows.append(f"{name:{width}s} {c['done']:5d} {c['running']:8d} {c['pending']:8d} {c['failed']:7d}")
    total = len(runs)
    rows += failed_lines(runs, store)
    here = [t for t in timed if t[2] == machine]
    if timed:
        per_epoch = seconds_per_epoch(here or timed)
        rate = epoch_rate(runs, timed, methods, machine)
        seconds_left = sum(epochs * rate(name) for name, _, epochs, _ in work)
        timing = rate
        whose = (f"the mean of the {len(here)} finished run(s) on this machine" if here else
                 "the finished runs' mean" + (", none of them on this machine" if machine else ""))
        rows.append(f"{total - left} of {total} runs done, {span(sum(t[0] for t in timed))} of training "
                    f"wall time; about {span(seconds_left / workers)} left with {workers} "
                    f"worker(s), at {per_epoch_text(per_epoch)} per epoch ({whose}; a variant with finished runs, at "
                    "theirs; one without, at its training method's; each scaled to its images per epoch "
                    "and its networks)"
                    + ("" if workers > 1 or not seconds_left else "; --workers N divides it by N"))
    else:
        timing = None
        rows.append(planned_compute([(cfg, epochs) for _, cfg, epochs, _ in work], total, workers,
                                    machine_rate(others or [], machine)))
    if measure and work:
        own = {t[3] for t in here if not t[4]}   # variants with finished runs of their own on this machine
        rows.append(measured_line(work, workers, measure, machine,
                                  observed=[(cfg, epochs, epochs * rate(name)) for name, cfg, epochs, _ in work
                                            if name in own] if own else None))
    if study.order == "group" and work:
        rows.append(group_shares(study, work, p))
    if study.tuned:
        rows += tuning_lines(study, store, p)
    if study.more_seeds is not None:
        rows.append(more_seeds_line(study, store, p, timing, workers))
    return "\n".join(rows)


# What a training step's time does not depend on: rates, momenta, decay, the schedule, seeds, the
# budget, what is tested and how, where files go, the noise on the labels and the loss's constants
# (label smoothing, and each registered loss's own keys, `not_timed`). Everything else (the network,
# augmentation, loss, optimizer, batch, method, precision) keys a timing.
NOT_TIMED = {"data": {"val_size", "split_seed", "subset", "noise", "noise_rate", "noise_seed", "label_column"},
             "optim": {"lr", "momentum", "nesterov", "weight_decay", "bias_lr", "muon_lr", "muon_momentum"},
             "schedule": None,
             "loss": {"label_smoothing"},
             "supcon": {"temperature", "probe_epochs", "probe_lr"},
             "train": {"epochs", "seed", "device", "threads", "eval_batch_size", "tta", "forget_rate", "forget_epochs",
                       "lookahead_alpha", "lookahead_ramp", "select", "checkpoint_every", "tensorboard", "mlflow",
                       "test"}}


def speed_key(cfg) -> str:
    """A config without the keys a training step's time does not depend on (`NOT_TIMED`), with the
    share of its epochs in a two-phase method's first phase: runs of one key are timed once (a
    grid over rates is one network)."""
    import json

    from cifarlab import config as C
    from cifarlab.methods import pretrain_epochs, total_epochs
    d, skip = C.to_dict(cfg), not_timed()
    kept = {section: {k: v for k, v in values.items() if skip.get(section, set()) is not None
                      and k not in skip.get(section, set())}
            for section, values in d.items() if isinstance(values, dict)}
    return json.dumps([kept, pretrain_epochs(cfg) / total_epochs(cfg)], sort_keys=True, default=str)


def not_timed() -> dict[str, set[str] | None]:
    """`NOT_TIMED` with every registered loss's own keys of the loss section (`LOSSES.keys_of`: GCE's
    q, SCE's alpha and beta, ELR's beta and lambda) among the loss's constants. A plug-in loss's
    settings are `loss.options`, which key a timing (a plug-in's option may change a step's cost)."""
    from cifarlab.losses import LOSSES
    own = {key.split(".", 1)[1] for name in LOSSES.names() for key in LOSSES.keys_of(name)
           if key.startswith("loss.")}
    return {**NOT_TIMED, "loss": NOT_TIMED["loss"] | own}


MEASURED: dict[tuple[str, int, int], float] = {}   # (speed_key, threads, steps) -> seconds per image, per process


def measured_seconds(cfg, epochs: float, threads: int, steps: int = 5) -> float | None:
    """Seconds of `epochs` of `cfg`'s training steps at the rate its network trains here now (a
    few steps on a synthetic batch, timed once per network in this process: `MEASURED`); None for a
    dataset of unknown size. Validation and data handling add to it."""
    from cifarlab.bench import seconds_per_image
    from cifarlab.flops import images_per_epoch
    from cifarlab.methods import total_epochs
    if images_per_epoch(cfg) is None or not cfg.train.epochs:
        return None
    key = (speed_key(cfg), threads, steps)
    if key not in MEASURED:
        import torch
        before = torch.get_num_threads()   # timing sets the thread count: the process's runs keep their own
        try:
            MEASURED[key] = seconds_per_image(cfg, steps, threads)
        finally:
            torch.set_num_threads(before)
    # `epochs` counts train.epochs (a two-phase run's first phase); the timing averages every phase
    return epochs * total_epochs(cfg) / cfg.train.epochs * MEASURED[key] * images_per_epoch(cfg)


def measured_line(work: list[tuple], workers: int, steps: int, machine: str | None, threads: int = 1,
                  observed: list[tuple] | None = None) -> str:
    """The training steps left in `work` ((name, config, epochs left) per run) in hours at the rate
    each network trains here now (`bench.seconds_per_image`: `steps` timed steps on a synthetic batch,
    `threads` threads, as a study worker runs), with the rate of each network timed. Other processes
    on this machine slow it: pause them first. An epoch's validation pass and data handling add to it:
    `observed` ((config, epochs left, seconds at its variant's own finished runs' rate on this machine)
    for each run left of a variant that has some) gives that ratio, the factor to scale a
    measurement by here (a variant timed by other networks' runs would add their difference)."""
    from cifarlab.flops import images_per_epoch
    if any(images_per_epoch(cfg) is None for _, cfg, *_ in work):
        return "--measure: a dataset of unknown size (no train_images in its registry entry): not costed"
    hours = sum(measured_seconds(cfg, left, threads, steps) or 0.0 for _, cfg, left, *_ in work) / 3600
    timed: dict[str, tuple[str, object, float]] = {}   # key -> (name, config, seconds per image) it was timed by
    for name, cfg, *_ in work:
        timed.setdefault(speed_key(cfg), (name, cfg, MEASURED.get((speed_key(cfg), threads, steps))))
    timed = {k: v for k, v in timed.items() if v[2] is not None}   # a run of no epochs was not timed
    rates = ", ".join(f"{name} {1 / s:,.0f} ({s * images_per_epoch(cfg):,.0f} s per epoch)"
                      for name, cfg, s in timed.values())
    return (f"measured here now ({machine or 'this machine'}, {threads} thread(s) per process, {steps} steps per "
            f"network on synthetic batches; other processes here slow it): about {process_span(hours * 3600)} of "
            f"training steps left, {span(hours * 3600 / workers)} with {workers} worker(s); training images/s: {rates} "
            "(validation passes and data handling add to it)" + observed_text(observed, threads, steps))


def observed_text(observed: list[tuple] | None, threads: int, steps: int) -> str:
    """The ratio of the hours the runs left of variants with finished runs on this machine take at
    those runs' rate to their measured steps' hours (`measured_line`)."""
    measured = sum(measured_seconds(cfg, left, threads, steps) or 0.0 for cfg, left, _ in observed or ())
    if not measured:
        return ""
    seconds = sum(s for *_, s in observed)
    return (f"; the {len(observed)} run(s) left of variants with finished runs on this machine take "
            f"{process_span(seconds)} at those runs' rate, {seconds / measured:.2f}x their measured "
            "steps' time (validation, data handling and the workers beside them)")


def more_seeds_line(study: Study, store: Store, p, rate=None, workers: int = 1) -> str:
    """What the study's `more_seeds` rule has added so far (its extra runs are counted above once
    added), and the most it may still add (`more_seeds_ceiling`), with the epochs those runs would
    train and, where `rate(variant)` times an epoch, the hours."""
    rule = study.more_seeds
    head = (f"more_seeds: seed(s) {', '.join(map(str, rule.seeds))} where a validation difference from the group's "
            f"baseline is under {rule.below:g} points")
    added = [name for name in (v.name for v in study.variants) if name in p.extra]
    said = head + (f"; added to {', '.join(added)}" if added else "; none added yet (decided as comparisons finish)")
    runs, epochs, seconds = more_seeds_ceiling(study, store, p, rate)
    if not runs:
        return said + ("; nothing more can be added" if added else "")
    hours = f", about {span(seconds / workers)} with {workers} worker(s)" if seconds is not None else ""
    return said + f"; it may add up to {runs} more run(s), {epochs:g} epochs{hours}, not in the estimate above"


def more_seeds_ceiling(study: Study, store: Store, p, rate=None) -> tuple[int, float, float | None]:
    """(runs, epochs, seconds or None) the `more_seeds` rule could still add if every comparison not
    decided yet (the member or its group's baseline has planned seeds unfinished) fell under its bar:
    the member and the baseline, where not added already."""
    from cifarlab.study.plan import comparisons, finished_val
    by_name = {v.name: v for v in study.variants}
    finished = finished_val(study, store, p.choices)
    could: dict[str, None] = {}
    for base, name in comparisons(study):
        if finished(name) is None or finished(base) is None:
            could.update({n: None for n in (name, base) if n not in p.extra})
    added = {name: [s for s in study.more_seeds.seeds if s not in study.seeds_of(by_name[name])] for name in could}
    epochs = {name: len(seeds) * by_name[name].config.train.epochs for name, seeds in added.items()}
    seconds = None if rate is None else sum(n * rate(name) for name, n in epochs.items())
    return sum(map(len, added.values())), float(sum(epochs.values())), seconds


def epoch_rate(runs: list, timed: list, methods: dict, machine: str | None):
    """`rate(variant)`: seconds per epoch of a variant not done, from `tally`'s finished runs (those
    on `machine` where there are some): its own finished runs, else its training method's, else all
    of them, as seconds per training image and network (co-teaching trains two) times its images
    per epoch and networks."""
    from cifarlab.flops import images_per_epoch, method_factor
    nets = {name: method_factor(cfg) for name, cfg, _ in runs}
    basis = [t for t in timed if t[2] == machine] or timed
    own, by_method = {}, {}
    for t in basis:
        if not t[4]:   # a run that stopped early timed fewer epochs than it was planned
            own.setdefault(t[3], []).append(t)
            by_method.setdefault(t[5], []).append(t)
    images = {name: images_per_epoch(cfg) for name, cfg, _ in runs}   # an epoch of a subset is shorter
    if None in images.values():   # a dataset of unknown size: every epoch counts alike
        images = dict.fromkeys(images, 1)

    def rate(name: str) -> float:
        like = own.get(name) or by_method.get(methods[name]) or basis
        return sum(t[0] for t in like) / sum(t[1] * images[t[3]] * nets[t[3]] for t in like) * images[name] * nets[name]
    return rate


def seconds_left(study: Study, store: Store, machine: str | None, others: list = (), shared=None,
                 threads: int | None = None, keys=None):
    """{run key: seconds it still needs} of each planned run not done: 0 for one whose sibling is
    done (it takes the sibling's training: a choice of weights, a tuning run's, a pre-training) where
    the shared folder `shared` holds that training (`plan.takes_here`; None: assumed), else
    the epochs it has not recorded (an interrupted run's or a dead claim's after its last
    checkpoint) at `epoch_rate`, as `study status` estimates them; with no finished run of the study,
    its training FLOPs at `machine`'s median rate in the databases `others` (`machine_rate`); None
    where neither times it. With `threads` (a `study run --until` worker's), where no finished run
    of the study ran on `machine`, each network's training steps are also timed here
    (`measured_seconds`) and the larger estimate counts: machines here differ up to tenfold, and
    a slow CPU timed by a fast one's runs claims runs it cannot finish. `keys`: only these runs (the
    ones a claim could take now), so that nothing else is timed; None: every run not done."""
    from cifarlab.study.plan import sharing, takes_done_sibling
    runs, _, timed, _, methods, _ = tally(study, store)
    if timed:
        rate = epoch_rate(runs, timed, methods, machine)
        seconds = lambda name, cfg, epochs: epochs * rate(name)   # noqa: E731
    else:
        flop_rate = machine_rate(list(others), machine)
        seconds = None if flop_rate is None else (
            lambda name, cfg, epochs: flops_left([(cfg, epochs)]) / (flop_rate[0] * 1e12))   # noqa: E731
    # timed here where the study's finished runs are another machine's, or nothing else times it (a
    # machine rate from the databases beside it is this machine's own)
    measure = threads is not None and not any(t[2] == machine for t in timed) and (bool(timed) or seconds is None)
    if seconds is None and not measure:
        return None
    share = sharing({key: cfg for _, cfg, key in runs})
    out, measured_any = {}, False
    for name, cfg, key in runs:
        row = store.run(key)
        if (row is not None and row["status"] == "done") or (keys is not None and key not in keys):
            continue
        if takes_done_sibling(key, cfg, share, store, shared):
            out[key] = 0.0
            continue
        epochs = epochs_left(row, cfg, store)
        estimates = [seconds(name, cfg, epochs) if seconds else None,
                     measured_seconds(cfg, epochs, threads) if measure and epochs else None]
        if any(e is not None for e in estimates):   # a run neither times is left out: it does not fit
            out[key] = max(e for e in estimates if e is not None)
            measured_any = measured_any or estimates[1] is not None
    return out if seconds is not None or measured_any else None   # None: nothing timed the study


def epochs_left(row, cfg, store: Store) -> float:
    """The epochs a run not done has still to train, counted as `train.epochs` counts them (a
    two-phase run's first phase: its recorded epochs run over both phases, `total_epochs`, and are
    scaled back): those it has not recorded, where it resumes from its last checkpoint (every
    `train.checkpoint_every` epochs, `checkpointed`) unless its claim is live."""
    from cifarlab.methods import total_epochs
    if row is None:
        return cfg.train.epochs
    trained, live = run_progress(row, store)
    if not live:
        trained = checkpointed(trained, cfg)
    total = total_epochs(cfg)
    return max(0, total - trained) * cfg.train.epochs / total if total else 0


def run_progress(row, store: Store) -> tuple[int, bool]:
    """(the last epoch a run's row recorded, 0 for none; whether a live process claims it now)."""
    import time

    from cifarlab.results.store import claim_is_dead
    recorded = max((r["epoch"] for r in store.epochs([row["id"]])), default=0)
    live = row["status"] == "running" and not claim_is_dead(row["claimed_by"], row["heartbeat"], time.time())
    return recorded, live


def checkpointed(recorded: int, cfg) -> int:
    """The last epoch a run's checkpoint holds, of the `recorded` ones: one every
    `train.checkpoint_every` epochs, and one at the last."""
    from cifarlab.methods import total_epochs
    if recorded >= total_epochs(cfg):
        return recorded
    return recorded - recorded % max(1, int(cfg.train.checkpoint_every))


def tally(study: Study, store: Store, p=None, shared=None) -> tuple[list, dict, list, list, dict, int]:
    """(runs, counts, timed, work, methods, left) of `status_table`: every run `entries` lists;
    {variant: {status: n}}; (wall seconds, epochs, machine, variant, stopped, method) of each done
    run; (variant, config, epochs left, run key) of each run not done that trains; {variant: train.method}
    of those not done; how many are not done. `p`: the study's `plan.plan`, if already made. A run
    whose siblings (`plan.sharing`) are all done takes their training only where the shared folder
    `shared` holds it (`plan.takes_here`; None: assumed): a fresh checkout has none, and it trains."""
    from cifarlab.study.plan import sharing, takes_here
    runs, repeats = entries(study, store, p)
    timed: list[tuple] = []  # (wall seconds, epochs, machine, variant, stopped, method) of each done run
    left, methods = 0, {}  # runs not done; variant -> its train.method
    work: list[tuple] = []   # (variant, config, epochs left, key) of each run not done that trains
    counts = {name: {"done": 0, "running": 0, "pending": 0, "failed": 0} for name, _, _ in runs}
    share = sharing({key: cfg for _, cfg, key in runs})
    trains: set = set()  # runs done or counted as training: their siblings take their work
    done: set = set()
    for name, cfg, key in runs:
        row = store.run(key)
        status = row["status"] if row else "pending"
        counts[name][status] += 1
        siblings = share.get(key, set()) & trains
        takes = (bool(siblings) and (shared is None or bool(siblings - done) or takes_here(cfg, shared))
                 or key in repeats)
        if status == "done" and row["wall_seconds"] is not None:
            # an early-stopped run makes the epochs a slight overestimate
            timed.append((row["wall_seconds"], cfg.train.epochs, row["machine"], name, row["stopped"],
                          cfg.train.method))
        elif status != "done":
            left += 1
            if not takes:   # a run in flight goes on after the epochs it recorded; an interrupted one
                work.append((name, cfg, epochs_left(row, cfg, store), key))   # from its last checkpoint
        methods[name] = cfg.train.method   # a done variant's too: more_seeds may add runs to it
        if status == "done" or not takes:
            trains.add(key)
        if status == "done":
            done.add(key)
    return runs, counts, timed, work, methods, left


def group_shares(study: Study, work: list[tuple], p) -> str:
    """One line for a study claimed group by group: each group's share of the training FLOPs left
    (`work`: (experiment, config, epochs left); `p`: the study's plan), in claim order, so the time
    to its first answers reads off the estimate above."""
    from cifarlab.study.plan import claim_groups
    group = claim_groups(study, p.tuning)
    left: dict[str, float] = {}
    for name, cfg, epochs, *_ in work:
        g = group.get(name, "(no group)")
        left[g] = left.get(g, 0.0) + flops_left([(cfg, epochs)])
    total = sum(left.values()) or 1.0
    order = [g for g in study.questions if g in left] + [g for g in left if g not in study.questions]
    return ("claimed group by group (order = \"group\"); share of the training left: "
            + ", ".join(f"{g} {100 * left[g] / total:.0f} %" for g in order))


def failed_lines(runs: list, store: Store, most: int = 5) -> list[str]:
    """One line per failed run (the first `most`): its variant, seed and the first line of its error;
    `study run` claims a failed run again."""
    out = []
    for name, _, key in runs:
        row = store.run(key)
        if row is not None and row["status"] == "failed":
            error = (row["error"] or "no error recorded").strip().splitlines() or ["no error recorded"]
            out.append(f"failed: {name} seed {key.seed}: {error[0][:200]}")
    more = f"; {len(out) - most} more" if len(out) > most else ""
    return out[:most] + ([f"(`study run` claims a failed run again{more}; `results export` keeps each whole error)"]
                         if out else [])


def status_report(study: Study, db: str, workers: int, study_arg: str, measure: int = 0, runs_dir=None) -> str:
    """`study status`: the table and estimate of `status_table` for the database `db`, timed at this
    machine (its CPU or GPU name); with no finished run to time by, costed at this machine's rate in
    the other studies' databases beside it (results/*/results.db). A database that does not exist yet
    is planned whole and left unwritten. A run that only tests a done sibling's training counts as
    free only where `runs_dir`/STUDY/_shared holds it (None: assumed). Last, a note where runs of the
    study were trained elsewhere."""
    from pathlib import Path

    import torch

    from cifarlab.results.store import copy_store, empty_store
    from cifarlab.runtime import machine_name
    from cifarlab.study.adopt import elsewhere_note
    here = machine_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    fresh = not Path(db).is_file()   # a study not started: every run pending, nothing written
    store = empty_store(db) if fresh else copy_store(db)   # read only: the runs it plans go in a copy
    lines = [fresh_line(db, study.name)] if fresh else []
    if not fresh and not store.runs(study.name) and store.studies():
        lines.append(f"note: {db} holds no run of study {study.name} (it holds {', '.join(store.studies())}); "
                     f"if that is not meant, give the study's own --db (e.g. results/{study.name}/results.db)")
    shared = None if runs_dir is None else Path(runs_dir) / study.name / "_shared"
    from cifarlab.study.plan import plan
    p = plan(study, store)   # once, for the table and the runs outside it
    lines.append(status_table(study, store, workers, machine=here, others=sibling_databases(db), measure=measure,
                              shared=shared, p=p))
    note = None if fresh else elsewhere_note(study, store, Path(db), study_arg, db)
    resumes = [] if fresh or runs_dir is None else resumable_lines(study, store, Path(runs_dir), p)
    return "\n".join(lines + resumes + ([note] if note else [])
                     + ([] if fresh else outside_lines(study, store, db, study_arg, p)))


def resumable_lines(study: Study, store: Store, runs_root, p=None, most: int = 5) -> list[str]:
    """One line per run not done and not claimed by a live process that recorded epochs (the first
    `most`): where `study run` finds its checkpoint (under `runs_root`, or the directory its last
    claim recorded), from which epoch it resumes; or that no checkpoint is here, so it starts over."""
    from cifarlab.methods import total_epochs
    from cifarlab.runs import RunDir
    from cifarlab.study.data import resume_dir, run_dir_for
    out = []
    for name, cfg, key in entries(study, store, p)[0]:
        row = store.run(key)
        if row is None or row["status"] == "done":
            continue
        recorded, live = run_progress(row, store)
        if live or not recorded:
            continue
        here = run_dir_for(runs_root, key)
        where = resume_dir(row["run_dir"], here) or here
        out.append(f"resumes: {name} seed {key.seed} after epoch {checkpointed(recorded, cfg)} of {total_epochs(cfg):g} "
                   f"(its checkpoint in {where})" if RunDir(where).checkpoint_path.is_file() else
                   f"starts over: {name} seed {key.seed} recorded {recorded} epoch(s), but no checkpoint of it is "
                   f"under {runs_root} (nor where its last claim trained)")
    more = [f"({len(out) - most} more run(s) with recorded epochs)"] if len(out) > most else []
    return out[:most] + more


def outside_lines(study: Study, store: Store, db, study_arg: str, p=None) -> list[str]:
    """A line when finished runs of the study lie outside what its file plans now (a variant renamed
    or changed after they ran): its report leaves them out, so say which, and how to see them."""
    from collections import Counter

    from cifarlab.study.plan import current_runs
    current = current_runs(study, store, p)
    outside = Counter(r["experiment"] for r in store.runs(study.name) if r["status"] == "done"
                      and (r["experiment"], r["config_hash"], r["seed"]) not in current)
    if not outside:
        return []
    names = ", ".join(f"{name} ({n})" for name, n in sorted(outside.items()))
    return [f"note: {sum(outside.values())} finished run(s) of this study in {db} are not part of it as "
            f"{study_arg} now stands, so its report leaves them out: {names}; a variant renamed or changed "
            f"after they ran? `cifarlab results export --study {study_arg} --db {db}` lists them (current = 0)"]


def fresh_line(db, name: str) -> str:
    """What `study status` says of a database that does not exist, naming any database beside it (or
    the study's usual one) that holds runs of the study: a mistyped --db is not a study not started."""
    from pathlib import Path

    from cifarlab.results.store import copy_store
    line = f"{db} does not exist yet: nothing of this study has run; the estimate is the whole study's"
    here = Path(db).parent
    candidates = sorted(here.glob("*.db")) if here.is_dir() else []
    candidates += [p for p in [Path("results") / name / "results.db"] if p.is_file() and p not in candidates]
    for other in candidates:
        try:
            done = len([r for r in copy_store(other).runs(name) if r["status"] == "done"])
        except Exception:   # noqa: BLE001 - not a results database: not a candidate
            continue
        if done:
            return line + f" (but {other} holds {done} finished run(s) of it: did you mean --db {other}?)"
    return line


def sibling_databases(db) -> list:
    """The other results databases beside `db`'s folder (results/*/results.db)."""
    from pathlib import Path
    here = Path(db).resolve()
    return [other for other in here.parent.parent.glob("*/results.db") if other != here]


def planned_compute(work: list[tuple], total: int, workers: int = 1, rate: tuple | None = None) -> str:
    """With no finished run to time by: the epochs and training FLOPs left in `work` ((config, epochs
    left) per run; a tuned arm's grid may still grow), and the hours they take at `rate`
    (`machine_rate`) where there is one."""
    from cifarlab.flops import amount as flop_amount
    epochs = sum(left for _, left in work)
    flops = flops_left(work)
    amount = flop_amount(flops, digits=1)
    line = (f"0 of {total} runs done; no finished run to time by: {epochs:,.0f} epochs and about "
            f"{amount} of training left (forward + backward)")
    if rate is None:
        return line + "; one finished run here, or `cifarlab bench peak`, turns it into hours"
    per_process, n_runs, n_dbs = rate
    hours = flops / (per_process * 1e12) / 3600
    return (line + f"; about {process_span(hours * 3600)}, {span(hours * 3600 / workers)} with {workers} worker(s), at "
            f"{per_process:.3f} TFLOP/s per process (the median of {n_runs} finished run(s) of this machine in "
            f"{n_dbs} other database(s); networks differ in how near the ceiling they run, so a rough guide)")


def flops_left(work: list[tuple]) -> float:
    """Training FLOPs (forward + backward) of `work`: (config, epochs left) per run."""
    from cifarlab.flops import planned
    return sum(planned(cfg)["train_flops"] * left / cfg.train.epochs for cfg, left in work if cfg.train.epochs)


def machine_rate(databases: list, machine: str | None) -> tuple[float, int, int] | None:
    """(median training TFLOP/s per process, runs, databases) over the finished runs that `machine`
    trained in `databases` (results databases, opened read-only), wall time including validation;
    None where it trained none."""
    return None if machine is None else machine_rates(databases).get(machine)


def machine_rates(databases: list, runtime: str = "") -> dict[str, tuple[float, int, int]]:
    """machine -> (median training TFLOP/s per process, runs, databases) over the finished runs each
    machine trained in `databases` (see `machine_rate`); `runtime` "cpu" or "cuda": only the runs
    that trained on such a device."""
    import sqlite3
    import statistics
    from pathlib import Path
    rates: dict[str, list[float]] = {}
    used: dict[str, int] = {}
    seen: set[tuple] = set()
    for db in databases:
        try:
            conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
            try:
                rows = conn.execute(
                    "SELECT r.machine, m.value / r.wall_seconds, r.config_hash, r.seed, r.wall_seconds, r.finished "
                    "FROM runs r JOIN run_metrics m ON m.run_id = r.id "
                    "AND m.name = 'train_flops' WHERE r.status = 'done' AND r.machine IS NOT NULL "
                    "AND r.wall_seconds > 0 AND m.value > 0 AND r.stopped IS NULL AND (? = '' OR r.runtime LIKE ?)",
                    (runtime, f"{runtime}%")).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as e:   # not a results database, or one from before FLOPs were kept: skipped;
            if "locked" in str(e) or "busy" in str(e):   # one a writer holds past the wait: not silently
                raise
            continue
        for machine, rate, *run in rows:
            if (machine, rate, *run) not in seen:   # a run adopted into another database counts once
                seen.add((machine, rate, *run))
                rates.setdefault(machine, []).append(rate / 1e12)
        for machine in {row[0] for row in rows}:
            used[machine] = used.get(machine, 0) + 1
    return {m: (statistics.median(r), len(r), used[m]) for m, r in sorted(rates.items())}


def entries(study: Study, store: Store, p=None) -> tuple[list[tuple], set]:
    """(name, config, key) of every run the study will train: a tuned arm's test runs, while it still
    tunes, at its untuned value (their key matches no row: they count as pending); and the keys of
    those that will test a tuning run's weights instead of training (`plan.pending_tests`; once the
    arm has chosen, `plan.sharing` pairs them with the chosen tuning run)."""
    from cifarlab.results.store import RunKey
    from cifarlab.study.plan import pending_tests, plan
    p = p or plan(study, store)
    out = [(p.names[key], cfg, key) for key, cfg in p.runs.items()]
    pending = [(name, cfg, RunKey(study.name, name, cfg.train.seed, "after-tuning"), repeats)
               for name, cfg, repeats in pending_tests(study, p)]
    return out + [(name, cfg, key) for name, cfg, key, _ in pending], {key for *_, key, repeats in pending if repeats}


def tuning_lines(study: Study, store: Store, p=None) -> list[str]:
    from cifarlab.study.plan import plan, setting
    lines = []
    grows = {v.arm or v.name: v.tune.extend > 0 for v in study.variants if v.tune is not None}
    for arm, t in (p or plan(study, store)).tuning.items():
        done = sum(1 for _, key, _ in t.runs if store.status_of(key) == "done")
        edge = (t.reason or "").partition("; still at the grid's edge")[2]   # after the grid grew as far as allowed
        lines.append(f"tuning {arm}: " + (f"chose {setting(t.choice)}" + (f"; still at the grid's edge{edge}" if edge else "")
                                          if t.choice is not None else
                                          f"{done} of {len(t.runs)} tuning runs done"
                                          + (" (the grid may grow)" if grows.get(arm, True) else "")))
    return lines


def span(seconds: float) -> str:
    """A duration in hours to a tenth, or below a tenth of an hour in whole minutes or seconds (a
    small study's estimate would otherwise read 0.0 h)."""
    if seconds >= 360:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def process_span(seconds: float) -> str:
    """Process time as `span` words it: "8.0 process-hours", or below a tenth of an hour
    "5 process-minutes" / "40 process-seconds" (a tiny study's read "0.0 process-hours")."""
    text = span(seconds)
    number, unit = text.rsplit(" ", 1)
    return f"{number} process-" + {"h": "hours", "min": "minutes", "s": "seconds"}[unit]


def per_epoch_text(seconds: float) -> str:
    """Seconds per epoch to two significant figures below 10 s (a small study's epoch read "0 s")."""
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


def seconds_per_epoch(timed: list[tuple]) -> float:
    """Wall seconds per planned epoch over (wall seconds, epochs, ...) rows."""
    return sum(t[0] for t in timed) / sum(t[1] for t in timed)
