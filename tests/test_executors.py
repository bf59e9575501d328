"""The executor seam: a study on a local Ray instance records the rows the local executor records,
though Ray workers are killed mid-study (nothing lost, nothing duplicated); Ray's absence and an
address where no cluster answers are refused in one line, the database untouched."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest


from cifarlab.results import open_store
from conftest import cli_command, cli_env
from test_fair import final_metrics
from test_study import EXPERIMENT, STUDY, results, study, study_dir  # noqa: F401 (study_dir: a fixture)

RAY = ("--executor", "ray", "--threads", "1")
# one xdist worker runs them all, one after another: each starts a local Ray instance that uses every core
pytestmark = pytest.mark.xdist_group("ray")


def rows(db):
    """Each run's identity and outcome, and every epoch's numbers: what two executors must agree on."""
    conn = sqlite3.connect(db)
    keys = conn.execute("SELECT experiment, seed, config_hash, status FROM runs "
                        "ORDER BY experiment, seed").fetchall()
    return keys, results(db)


def processes(match) -> list[int]:
    """The processes whose command line (its arguments NUL-separated, as bytes) `match`es."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and match((proc / "cmdline").read_bytes()):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            pass
    return found


@pytest.fixture(autouse=True)
def no_ray_instance_left():
    """A local Ray instance outlives its driver for a while (its GCS server and raylet shut down after
    it): each test here waits for the one before to be gone, since `--address auto` would join it."""
    deadline = time.monotonic() + 120
    while ray_instances() and time.monotonic() < deadline:
        time.sleep(0.5)
    yield


def ray_instances() -> list[int]:
    """The GCS servers and raylets of the Ray instances on this machine."""
    return processes(lambda cmd: cmd.split(b"\0")[0].endswith((b"gcs_server", b"raylet")))


def ray_tasks() -> list[int]:
    """The Ray worker processes executing one of our runs now: Ray titles them ray::<task name>."""
    return processes(lambda cmd: cmd.startswith(b"ray::cifarlab-run"))


def test_a_study_on_ray_records_the_local_executors_rows_though_its_workers_are_killed(study_dir):  # noqa: F811
    """Ray workers killed mid-study lose and duplicate nothing: the driver records the rows the local
    executor records, run for run and epoch for epoch."""
    (study_dir / "study.toml").write_text(STUDY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    (study_dir / "tiny.toml").write_text(EXPERIMENT.replace("epochs = 2", "epochs = 4"))
    local = study(study_dir, "run", "--runs-dir", "runs-local", db="local.db")
    assert local.returncode == 0, local.stderr

    proc = study(study_dir, "run", *RAY, "--runs-dir", "runs-ray", db="ray.db", wait=False)
    killed, deadline = [], time.monotonic() + 300
    try:
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            if done_runs(study_dir / "ray.db") >= 1:  # one run recorded, others training: kill their workers
                for pid in ray_tasks():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=600)
    finally:  # never leave the driver (and its Ray instance) behind for the next test
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert killed, f"no Ray task was caught mid-study: {out} {err}"
    assert proc.returncode == 0, err
    assert "6 run(s) finished on Ray" in out and "6 of 6 runs done" in out, out
    # Every run once, each epoch once; same experiments, seeds and config hashes, and on this CPU the
    # same accuracies and losses, epoch by epoch, as the runs nothing interrupted.
    keys, outcome = rows(study_dir / "ray.db")
    assert [k[3] for k in keys] == ["done"] * 6 and len(outcome[1]) == 24   # 6 runs x 4 epochs
    assert (keys, outcome) == rows(study_dir / "local.db")
    # The driver recorded; each run directory was written by the task that trained it.
    for run_dir, in sqlite3.connect(study_dir / "ray.db").execute("SELECT run_dir FROM runs"):
        assert (study_dir / "runs-ray").resolve() in [p for p in (study_dir / run_dir).resolve().parents]
    again = study(study_dir, "run", *RAY, "--runs-dir", "runs-ray", db="ray.db")
    assert again.returncode == 0 and "0 run(s) finished on Ray" in again.stdout, again.stderr


def done_runs(db) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()[0]
    except sqlite3.OperationalError:  # the database or its tables are not created yet
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_refusal(r, message):
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cifarlab: error: "), r.stderr
    assert message in r.stderr, r.stderr


def test_ray_missing_or_a_dead_address_is_one_line_and_leaves_the_database_untouched(study_dir,  # noqa: F811
                                                                                   tmp_path):
    hide = tmp_path / "no-ray" / "ray"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = cli_env(PYTHONPATH=f"{hide.parent}{os.pathsep}{cli_env()['PYTHONPATH']}")
    cmd = cli_command("study", "run", "study.toml", "--db", "results.db", "--data-dir", "data", "--no-progress",
                      "--executor", "ray")
    r = subprocess.run(cmd, cwd=study_dir, env=env, capture_output=True, text=True, timeout=600)
    one_line_refusal(r, 'needs Ray, which is not installed; install it with: pip install -e ".[ray]"')
    assert not (study_dir / "results.db").exists()

    open_store(study_dir / "results.db").close()  # an existing database keeps its bytes
    before = (study_dir / "results.db").read_bytes()
    nowhere = f"127.0.0.1:{free_port()}"
    r = study(study_dir, "run", "--executor", "ray", "--address", nowhere)
    one_line_refusal(r, f"--address {nowhere}: no Ray cluster answers there")
    assert (study_dir / "results.db").read_bytes() == before

    for args, message in ((("--executor", "ray", "--workers", "2"), "--executor ray is for `study run` without"),
                          (("--address", "auto"), "--address and --gpus-per-run are for --executor ray"),
                          (("--executor", "ray", "--gpus-per-run", "-1"), "--gpus-per-run must be >= 0"),
                          (("--executor", "dask"), "invalid choice: 'dask'"),
                          (("--executor", "ray", "--adopt-done-elsewhere"),
                           "--adopt-done-elsewhere works with the local executor")):
        one_line_refusal(study(study_dir, "run", *args), message)
    one_line_refusal(study(study_dir, "status", "--executor", "ray"), "study status takes no --executor")
    assert (study_dir / "results.db").read_bytes() == before


def test_auto_without_a_cluster_is_one_line(study_dir):  # noqa: F811
    running = ray_instances()   # not ours: the fixture waited for the one before to be gone
    if running:
        pytest.fail(f"a Ray instance runs on this machine (processes {running}); --address auto "
                    "would join it, so the refusal cannot be checked here")
    env = cli_env(RAY_ADDRESS="")
    cmd = cli_command("study", "run", "study.toml", "--db", "results.db", "--data-dir", "data", "--no-progress",
                      "--executor", "ray", "--address", "auto")
    r = subprocess.run(cmd, cwd=study_dir, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode == 0:
        pytest.fail("a Ray cluster was found on this machine; the refusal cannot be checked here")
    one_line_refusal(r, "--address auto: Ray could not connect")
    assert not (study_dir / "results.db").exists()


def test_sigterm_to_the_ray_driver_gives_its_runs_back(study_dir):  # noqa: F811
    from test_study import EXPERIMENT, running
    # runs long enough that the signal lands inside them (test_study.test_sigterm_releases_the_claim)
    (study_dir / "tiny.toml").write_text(EXPERIMENT.replace("epochs = 2", "epochs = 12"))
    proc = study(study_dir, "run", *RAY, db="ray.db", wait=False)
    deadline = time.monotonic() + 300
    try:
        while not running(study_dir / "ray.db") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running(study_dir / "ray.db"), "no run was claimed on Ray"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143 and "interrupted" in err and "Traceback" not in err, err
    assert not running(study_dir / "ray.db")
    local = study(study_dir, "run", db="ray.db")  # the local executor takes over what is left
    assert local.returncode == 0 and "4 of 4 runs done" in local.stdout, local.stderr


def test_runs_that_raise_on_ray_are_recorded_failed_with_their_error_and_retried_by_the_next_study_run(
        study_dir):  # noqa: F811
    (study_dir / "data").rename(study_dir / "away")  # every task fails to find the data (--no-download)
    r = study(study_dir, "run", *RAY, db="ray.db")
    assert r.returncode == 1 and "0 run(s) finished on Ray, 4 failed" in r.stdout, (r.stdout, r.stderr)
    failed = sqlite3.connect(study_dir / "ray.db").execute("SELECT status, error, claimed_by FROM runs").fetchall()
    assert len(failed) == 4 and all(s == "failed" and c is None for s, _, c in failed)
    # the error the run raised, as the local executor records it, not Ray's wrapper and traceback
    assert all(e.startswith("DataError: CIFAR-10 not found: tried ") and "Traceback" not in e for _, e, _ in failed)
    assert "failed: DataError: CIFAR-10 not found" in r.stdout
    (study_dir / "away").rename(study_dir / "data")
    r = study(study_dir, "run", *RAY, db="ray.db")
    assert r.returncode == 0 and "4 run(s) finished on Ray" in r.stdout, r.stderr


def test_more_cpus_or_gpus_per_run_than_a_local_ray_instance_has_is_one_line(study_dir):  # noqa: F811
    for args, message in ((("--gpus-per-run", "1"), "1 GPU(s) per run (--gpus-per-run) but this machine "
                                                    "has 0: no run could start"),
                          (("--threads", "512"), "512 CPU(s) per run (--threads) but this machine has")):
        if args[0] == "--gpus-per-run" and _has_cuda():
            continue
        r = study(study_dir, "run", "--executor", "ray", *args)
        one_line_refusal(r, message)
        assert not (study_dir / "results.db").exists()


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def test_a_cluster_short_of_cpus_or_gpus_warns_and_a_local_instance_refuses(capsys):
    """A cluster may grow (an autoscaler): asking for more than it has now is a warning per resource;
    the same request on a local instance cannot ever start and is refused in one line."""
    from cifarlab.study.executors import check_resources
    from cifarlab.errors import UserError
    have = {"CPU": 4.0, "GPU": 1.0}
    check_resources(have, cpus=4, gpus=1, local=False)  # enough: silent
    assert capsys.readouterr().err == ""
    check_resources(have, cpus=8, gpus=2, local=False)
    err = capsys.readouterr().err.splitlines()
    assert err == ["cifarlab: warning: 8 CPU(s) per run (--threads) but the cluster has 4: runs wait until a "
                   "node with that many joins",
                   "cifarlab: warning: 2 GPU(s) per run (--gpus-per-run) but the cluster has 1: runs wait "
                   "until a node with that many joins"]
    check_resources({"CPU": 2.0}, cpus=1, gpus=0, local=True)  # no GPU asked, none needed
    with pytest.raises(UserError, match=r"^1 GPU\(s\) per run \(--gpus-per-run\) but this machine has 0: "):
        check_resources({"CPU": 2.0}, cpus=1, gpus=1, local=True)


class FakeTask:
    """`ray.remote(fn).options(...)` of a fake Ray: its `.remote(key, ...)` starts a run, giving a new
    ref (`refs`, in order; `keys`: the run each ref trains)."""

    def __init__(self):
        self.refs, self.keys = [], {}

    def options(self, **_):
        return self

    def remote(self, key, *_):
        self.refs.append(object())
        self.keys[self.refs[-1]] = key
        return self.refs[-1]


def test_the_ray_driver_stops_when_its_database_is_replaced_and_gives_no_run_back(
        study_dir, monkeypatch):  # noqa: F811
    """A checkout or mv over the database while runs train on Ray: the driver's next write (its
    heartbeat) refuses in one line; it cancels every task and gives no run back (those writes would
    be lost, or replayed from the old file's log into the new one)."""
    import shutil

    from cifarlab.errors import UserError
    from cifarlab.results.store import Store
    from cifarlab.study import load_study, plan_runs
    from cifarlab.study import executors

    class FakeRay:   # claims runs, never finishes one; the file is swapped at the first wait
        def __init__(self):
            self.task, self.cancelled = FakeTask(), []

        def remote(self, _fn):
            return self.task

        def wait(self, refs, num_returns, timeout):
            if not self.cancelled and not (study_dir / "swapped").exists():
                os.replace(study_dir / "before.db", study_dir / "results.db")
                (study_dir / "swapped").touch()
            return [], list(refs)

        def cancel(self, ref, force):
            self.cancelled.append(ref)

    monkeypatch.setattr(executors, "HEARTBEAT_S", 0.0)
    released = []
    monkeypatch.setattr(Store, "release", lambda self, run_id: released.append(run_id))
    spec = load_study(study_dir / "study.toml")
    store = open_store(study_dir / "results.db")
    plan_runs(spec, store)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(study_dir / "results.db", study_dir / "before.db")   # what a checkout would put back
    plan = {key: cfg for _, cfg, key in spec.runs()}
    ray = FakeRay()
    with pytest.raises(UserError, match="was replaced by another file"):
        executors.run_ray(ray, plan, store, spec.name, study_dir / "runs", data_dir=None, download=False,
                          tuned=False, say=lambda _: None)
    assert len(ray.task.refs) == 4 and sorted(map(id, ray.cancelled)) == sorted(map(id, ray.task.refs))
    assert released == []   # nothing given back: those writes would go to the old file's log
    # the same driver with its file in place gives its runs back when interrupted
    os.remove(study_dir / "swapped")
    store = open_store(study_dir / "before.db")
    plan_runs(spec, store)
    ray = FakeRay()
    ray.wait = lambda refs, num_returns, timeout: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        executors.run_ray(ray, plan, store, spec.name, study_dir / "runs", data_dir=None, download=False,
                          tuned=False, say=lambda _: None)
    assert len(released) == 4 and len(ray.cancelled) == 4


def test_the_ray_driver_warns_of_a_run_that_never_rose_above_chance(study_dir, capsys):  # noqa: F811
    """As a local worker does: one line per finished run that stayed at chance, none for one that
    learned (a fake Ray whose tasks return at once: seed 0 at chance, seed 1 at 60 %)."""
    from cifarlab.study import executors, load_study, plan_runs

    class Ray:
        def __init__(self):
            self.task = FakeTask()

        def remote(self, _fn):
            return self.task

        def wait(self, refs, num_returns, timeout):
            return list(refs), []

        def get(self, ref):
            key = self.task.keys[ref]
            acc = 0.10 if key.seed == 0 else 0.60
            epoch = {"epoch": 1, "train_loss": 2.0, "train_acc": acc, "val_acc": acc, "lr": 0.1, "train_seconds": 1.0}
            return executors.RunResult(key, final_metrics(plan[key], acc), [epoch], "runs/x", "host")

    ray = Ray()
    spec = load_study(study_dir / "study.toml")
    store = open_store(study_dir / "results.db")
    plan_runs(spec, store)
    plan = {key: cfg for _, cfg, key in spec.runs()}
    finished, failed = executors.run_ray(ray, plan, store, spec.name, study_dir / "runs", data_dir=None,
                                         download=False, tuned=False, say=lambda _: None)
    assert (finished, failed) == (4, 0)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "never rose above chance" in line]
    assert sorted(line.split(":")[2].strip() for line in warnings) == ["tiny/baseline seed 0", "tiny/dropout seed 0"]
    assert all(line.startswith("cifarlab: warning: ") for line in warnings)


def test_a_tuned_study_on_ray_tunes_first_then_trains_the_chosen_value(study_dir):  # noqa: F811
    """The driver runs the tuning runs, the arm chooses, and the test runs at its choice follow."""
    text = STUDY.replace('seeds = [0, 1]', 'seeds = [0]\ntune = { "optim.lr" = [0.02, 0.05] }\ntune_extend = 0')
    (study_dir / "study.toml").write_text(text)
    on_ray = study(study_dir, "run", *RAY, "--runs-dir", "runs-ray", db="ray.db")
    assert on_ray.returncode == 0, on_ray.stderr
    conn = sqlite3.connect(study_dir / "ray.db")
    done = dict(conn.execute("SELECT experiment, status FROM runs").fetchall())
    assert set(done) == {"baseline-tune-lr0.02", "baseline-tune-lr0.05", "dropout-tune-lr0.02",
                         "dropout-tune-lr0.05", "baseline", "dropout"} and set(done.values()) == {"done"}
    chosen = dict(conn.execute("SELECT arm, choice FROM tune_choices").fetchall())
    for arm in ("baseline", "dropout"):
        config = conn.execute("SELECT config FROM runs WHERE experiment = ?", (arm,)).fetchone()[0]
        assert f'"lr": {chosen[arm].split(": ")[1].rstrip("}")}' in config
        # seed 0 at the tuning length repeats the chosen tuning run: the driver tests its weights
        final = next((study_dir / "runs-ray").glob(f"*/{arm}/seed0-*/final.json"))
        assert json.loads(final.read_text())["trained_by"]
