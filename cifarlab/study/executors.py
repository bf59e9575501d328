"""Executors: who trains a study's runs. Only the study driver writes the results store.

`train_one` is the unit of work: it trains (or resumes) one run in its run directory and returns a
typed `RunResult`; it never touches the store. An executor hands runs to `train_one` somewhere and
the driver records what comes back:

- ``local`` (the default): this process trains the runs it claims, one after another, recording
  each epoch as it ends (`study run --workers N` starts N such processes, each claiming from the
  shared store; see `cifarlab.study.run.run_study`).
- ``ray``: every run is a Ray task with its own CPU and GPU resources on a Ray cluster (or a local
  Ray instance). The driver claims the runs, records each result as its task finishes, and holds
  the claims alive while they train. A task whose worker process or node dies is retried by Ray
  (`retries`); the retry resumes from the run's last checkpoint when it lands on a node whose file
  system still holds it (a shared --runs-dir, or the same node), and starts over otherwise. Each
  run is recorded once: the driver records a run only when its task returns, and only while it
  still holds the run's claim. A driver killed outright takes its tasks with it (Ray ends a job's
  workers when its driver dies; on a local instance every Ray process was gone within seconds of a
  SIGKILL); its claims die with its process, and the next `study run` resumes the runs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cifarlab import config as C
from cifarlab.errors import UserError, finishing, stop_if_asked
from cifarlab.results.store import RunKey, Store

EXECUTORS = ("local", "ray")
RAY_INSTALL = 'pip install -e ".[ray]"'
HEARTBEAT_S = 60.0  # how often the Ray driver marks its claims alive while their tasks train


def chance_line(study_name: str, key: RunKey, final: dict, epochs: list) -> str | None:
    """The warning line a study's worker (local or Ray driver) prints for a finished run that never
    rose above chance (`stats.chance_warning`: the report calls such a variant unstable); None
    otherwise."""
    from cifarlab.stats import chance_warning
    warning = chance_warning(final, epochs)
    return warning and f"cifarlab: warning: {study_name}/{key.experiment} seed {key.seed}: {warning}"


@dataclass(frozen=True)
class RunResult:
    """What one trained run hands back to the driver: all the store needs, no file system."""
    key: RunKey
    final: dict            # final.json's metrics and provenance
    epochs: list[dict]     # metrics.jsonl's rows, one per epoch, earlier sessions of a resumed run included
    run_dir: str           # where the run directory lies, on the host that trained it
    host: str


def train_one(key: RunKey, cfg: C.ExperimentConfig, splits: Any, run_path: Path, *, progress: bool = False,
              progress_row: int = 0, on_epoch: Callable[[dict], None] | None = None,
              share: bool = False) -> RunResult:
    """Train one run into `run_path` (RUNS_DIR/STUDY/VARIANT/seedK-HASH), resuming from its checkpoint
    if it has one. It writes only there and, with `share` (the study has a sibling run: `sharing`), in
    RUNS_DIR/STUDY/_shared, where it takes or leaves the work the two would repeat (`train.train`)."""
    from cifarlab.runs import RunDir
    from cifarlab.train import train

    run = RunDir(run_path)
    final = train(cfg, splits, run, resume=run.checkpoint_path.exists(), progress=progress,
                  progress_row=progress_row, on_epoch=on_epoch,
                  shared=Path(run_path).parent.parent / "_shared" if share else None)
    return RunResult(key, final, run.read_metrics(), str(run.path), socket.gethostname())


# ----------------------------------------------------------------------------- ray

def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed; install it with: {RAY_INSTALL}") \
            from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """HOST:PORT must answer a TCP connection before Ray is asked to join it (Ray itself retries
    for minutes); `auto` is left to Ray, which fails at once when no local cluster runs."""
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep:
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise UserError(f"--address {address}: no Ray cluster answers there ({e.__class__.__name__}: {e}); "
                        "give auto (the cluster this machine belongs to), HOST:PORT of a running head node, "
                        "or leave --address out to start a local Ray instance") from None


def connect(address: str | None, cpus: int | None = None):
    """Join the cluster at `address`, or start a local Ray instance (`address` None)."""
    ray = import_ray()
    if address:
        check_reachable(address)
    # Ray's core installs its own handlers (SIGTERM aborts the process); the driver keeps ours, so
    # that SIGTERM and Ctrl-C cancel its tasks and give their runs back.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"--address {address}" if address else "a local Ray instance"
        raise UserError(f"{where}: Ray could not connect: {str(e).splitlines()[0]}") from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return ray


_DATA: dict[tuple, Any] = {}  # per Ray worker process: each dataset loaded and split once


def _ray_task(key: RunKey, cfg: C.ExperimentConfig, run_path: str, data_dir: str | None,
              download: bool, share: bool = False) -> RunResult:
    from cifarlab.study.data import DataCache
    cache = _DATA.setdefault((data_dir, download), DataCache(data_dir, download, False))
    return train_one(key, cfg, cache.get(cfg.data), Path(run_path), share=share)


def run_ray(ray, plan: dict[RunKey, C.ExperimentConfig], store: Store, study_name: str, runs_root: Path, *,
            data_dir: str | None, download: bool, cpus_per_run: int = 1, gpus_per_run: float = 0.0,
            retries: int = 3, say: Callable[[str], None] = print, tuned: bool) -> tuple[int, int]:
    """Train every missing run of `plan` as a Ray task; returns (finished, failed). `tuned`: the
    study tunes its arms (`cifarlab.study.plan.shares`)."""
    from cifarlab.study.data import run_dir_for
    from cifarlab.study.plan import shares, sharing

    task = ray.remote(_ray_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=retries,
                                         retry_exceptions=False, name="cifarlab-run")
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    runs_root = runs_root.resolve()
    share = sharing(plan)
    inflight: dict[Any, tuple[int, RunKey]] = {}
    with DeferredInterrupt() as interrupt:
        try:
            while (row := store.claim(study_name, list(plan))) is not None:
                key = RunKey(row["study"], row["experiment"], row["seed"], row["config_hash"])
                cfg = plan[key]
                cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=cpus_per_run))
                inflight[task.remote(key, cfg, str(run_dir_for(runs_root, key)), data_dir, download,
                                     shares(key, cfg, share, tuned))] = (row["id"], key)
                interrupt.check()
            finished = failed = 0
            beat = time.monotonic()
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                interrupt.check()
                if time.monotonic() - beat >= HEARTBEAT_S:
                    store.beat([run_id for run_id, _ in inflight.values()])
                    beat = time.monotonic()
                for ref in ready:
                    run_id, key = inflight.pop(ref)
                    try:
                        result: RunResult = ray.get(ref)
                    except Exception as e:  # the run raised, or its worker died more than `retries` times
                        error = task_error(e)
                        store.fail(run_id, error)
                        failed += 1
                        say(f"{study_name}/{key.experiment} seed {key.seed}: failed: {error.splitlines()[0]}")
                        continue
                    if not store.finish(run_id, result.final, result.run_dir, result.final["epochs"], result.epochs):
                        say(f"{study_name}/{key.experiment} seed {key.seed}: finished elsewhere first; "
                            "not recorded again")
                        continue
                    finished += 1
                    val = ("no validation split" if result.final["val_acc"] is None
                           else f"val {result.final['val_acc']:.4f}")
                    say(f"{study_name}/{key.experiment} seed {key.seed}: {val} ({result.final['epochs']} epochs, "
                        f"{result.final['wall_seconds']:.0f} s on {result.host})")
                    warning = chance_line(study_name, key, result.final, result.epochs)
                    if warning:   # as a local worker warns: the report calls such a variant unstable
                        print(warning, file=sys.stderr)
            return finished, failed
        except BaseException:  # interrupted (or the store failed): cancel what trains, give the runs back
            with finishing():
                for ref in inflight:
                    ray.cancel(ref, force=True)
                if not store.replaced():   # a replaced database file takes no writes; its error says so
                    for run_id, _ in inflight.values():
                        store.release(run_id)
            raise


def check_resources(have: dict, cpus: int, gpus: float, local: bool) -> None:
    """A run that asks for more CPUs or GPUs than Ray has would wait forever: on a local instance it
    is refused; a cluster may still grow (an autoscaler), so there it is a warning."""
    short = [f"{want:g} {kind}(s) per run (--{option}) but {'this machine' if local else 'the cluster'} "
             f"has {have.get(kind, 0):g}"
             for want, kind, option in ((cpus, "CPU", "threads"), (gpus, "GPU", "gpus-per-run"))
             if want > have.get(kind, 0)]
    if short and local:
        raise UserError(f"{short[0]}: no run could start; ask for at most what this machine has, or join a "
                        "cluster that has more with --address")
    for line in short:
        print(f"cifarlab: warning: {line}: runs wait until a node with that many joins", file=sys.stderr)


def spawn_workers(study_path: str, db: str, runs_dir: str, workers: int, threads: int, only: tuple[str, ...],
                  data_dir: str | None, download: bool, name: str, adopt: bool = False,
                  until: str | None = None) -> int:
    """`study run --workers N`: N worker processes claim the study's runs from the shared store.

    On a small CPU, N single-threaded processes train more images per second in total than one
    process using every core (docs/PERFORMANCE.md). Ctrl-C or SIGTERM stops every worker; each
    gives back its claim and keeps its finished epochs. Returns the highest exit code.
    """
    import subprocess
    threads = worker_threads(threads, workers)
    argv = [sys.executable, "-m", "cifarlab.cli", "study", "run", study_path, "--db", db,
            "--runs-dir", runs_dir, "--threads", str(threads), "--no-progress", "--worker"]
    argv += [f"--only={v}" for v in only]
    argv += (["--data-dir", data_dir] if data_dir else []) + ([] if download else ["--no-download"])
    argv += ["--adopt-done-elsewhere"] if adopt else []
    argv += ["--until", until] if until else []
    print(f"study {name}: {workers} workers x {threads} thread(s)", flush=True)
    stop_if_asked()   # a stop swallowed while this process planned starts no worker
    procs = [subprocess.Popen(argv) for _ in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        with finishing():   # a second signal does not leave the workers running
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()
        raise
    return max(codes)


def task_error(e: Exception) -> str:
    """The error a failed task records, as the local executor records it: the exception the run raised
    (Ray wraps it with the remote traceback), or for a task Ray gave up on, Ray's own last line."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, Exception):
        return f"{type(cause).__name__}: {cause}"
    lines = str(e).strip().splitlines() or [""]
    return f"{type(e).__name__}: {lines[-1][:500]}"


class DeferredInterrupt:
    """SIGTERM and Ctrl-C while the driver is inside Ray's calls are noted and raised as
    KeyboardInterrupt at the driver's next check, never inside Ray itself."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> "DeferredInterrupt":
        self.pending = False
        self.previous = {sig: signal.signal(sig, self.note) for sig in self.SIGNALS}
        return self

    def note(self, signum: int, frame: object) -> None:
        from cifarlab.errors import STOP_ASKED, STOPPED_BY
        STOPPED_BY[0] = signum
        STOP_ASKED[0] = True   # one noted after the last check still stops the next round (drive_ray)
        self.pending = True

    def check(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def worker_threads(threads: int | None, workers: int) -> int:
    """The threads each of `workers` study processes trains with: `threads` (--threads), else this
    machine's cores shared among them."""
    return threads or max(1, default_cpus() // max(1, workers))


def default_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
