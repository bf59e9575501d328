"""Mistakes that used to pass silently now stop with one line and exit code 2, before anything is
written; and the conventions of a command line tool: --version, help per action, "did you mean",
and a hint when KEY=VALUE is given without --set. In-process (`cli.main`), so each is fast."""

from __future__ import annotations

import pytest

from cifarlab import __version__, cli
from cifarlab.results.store import RunKey, open_store
from conftest import REPO

EXPERIMENT = str(REPO / "experiments" / "tutorial" / "baseline.toml")
STUDY = str(REPO / "studies" / "fast_baseline.toml")


def refused(capsys, *argv) -> str:
    """The one line a refused command prints (its exit code is 2)."""
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cifarlab: error: "), err
    return err


def files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_resume_of_a_run_that_is_not_there_is_refused(tmp_path, capsys):
    err = refused(capsys, "run", EXPERIMENT, "--out", tmp_path / "missing", "--resume")
    assert "--resume: " in err and "holds no checkpoint to continue (it does not exist)" in err
    (tmp_path / "empty").mkdir()
    err = refused(capsys, "run", EXPERIMENT, "--out", tmp_path / "empty", "--resume")
    assert "(it is not a run directory)" in err
    assert files(tmp_path) == ["empty"]


def test_a_run_refused_for_missing_data_leaves_no_run_directory(tmp_path, capsys):
    """The data is read after the run directory is made (and checked writable): a refusal there
    takes back the folders it made, and only those."""
    (tmp_path / "nodata").mkdir()
    (tmp_path / "kept").mkdir()
    refused(capsys, "run", EXPERIMENT, "--out", tmp_path / "kept" / "a" / "b", "--data-dir", tmp_path / "nodata",
            "--no-download")
    assert files(tmp_path) == ["kept", "nodata"]


def test_the_result_line_of_a_run_that_read_no_test_set_shows_validation_only(tmp_path, capsys):
    """A run with train.test = false (a tuning run) records no test accuracy: its line, after training
    or on resuming it finished, shows validation alone (it raised TypeError on the None)."""
    from cifarlab import config as C
    from cifarlab.runs import RunDir
    cfg = C.load(EXPERIMENT, ["train.test=false"])
    final = {"val_acc": 0.5, "test_acc": None, "epochs": 2, "wall_seconds": 3.0, "images_per_s": 10.0,
             "classes": [f"c{i}" for i in range(10)]}
    cli.print_result(cfg, final, RunDir(tmp_path), hide_test=False)
    out = capsys.readouterr().out
    assert out.startswith(f"{cfg.name} seed 0: val 0.5000  (2 epochs, 3.0 s") and "test " not in out.split("->")[0]


def test_bench_tta_says_a_recipe_without_a_validation_split_times_no_threshold():
    """The speed recipes hold out no validation split: their crossing columns said "never", as if the
    run had not reached the accuracy."""
    from cifarlab.bench import format_tta_row
    row = {"seed": 0, "test_acc": 0.74, "wall_seconds": 25.0, "val_acc": None, "crossed": {0.7: None}}
    assert format_tta_row(row, [0.7]).endswith("wall 25.0 s  (no validation split: no threshold timed)")
    assert format_tta_row({**row, "val_acc": 0.6}, [0.7]).endswith("val>=70%: never")


def test_report_and_export_of_a_database_without_the_studys_runs_are_refused(tmp_path, capsys):
    open_store(tmp_path / "empty.db").close()
    err = refused(capsys, "report", STUDY, "--db", tmp_path / "empty.db", "--out", tmp_path / "report")
    assert "holds no run of study fast_baseline (it is empty); run `cifarlab study run" in err
    err = refused(capsys, "results", "export", "--db", tmp_path / "empty.db", "--out", tmp_path / "csv")
    assert "empty.db holds no run (it is empty)" in err
    other = open_store(tmp_path / "other.db")
    other.register(RunKey("another", "v", 0, "0123456789abcdef"), {"name": "v"})
    other.close()
    err = refused(capsys, "results", "export", "--db", tmp_path / "other.db", "--study", STUDY,
                  "--out", tmp_path / "csv")
    assert "holds no run of study fast_baseline (it holds another)" in err
    assert not (tmp_path / "report").exists() and not (tmp_path / "csv").exists()


def test_a_report_of_a_study_with_no_finished_run_says_so(tmp_path, capsys):
    """A database whose runs are all registered and none finished (a study just started) gives a
    report of nothing: written, with a note that says why and where to see progress."""
    from cifarlab.study import load_study, plan_runs
    store = open_store(tmp_path / "r.db")
    plan_runs(load_study(STUDY), store)
    store.close()
    assert cli.main(["report", STUDY, "--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert "note: none of the 3 run(s) the study file plans now in " in err and "study status" in err, err
    assert (tmp_path / "report" / "README.md").is_file()


def test_study_run_with_an_unknown_variant_makes_no_database(tmp_path, capsys):
    err = refused(capsys, "study", "run", STUDY, "--db", tmp_path / "r.db", "--only", "fast-basline",
                  "--runs-dir", tmp_path / "runs")
    assert "--only 'fast-basline' is not a variant of fast_baseline; valid: fast-baseline" in err
    assert "did you mean 'fast-baseline'?" in err
    assert files(tmp_path) == []


@pytest.mark.parametrize("until, message", [
    ("25:00", "--until '25:00' is not a time; give HH:MM or YYYY-MM-DDTHH:MM, local time"),
    ("soon", "--until 'soon' is not a time"),
    ("2020-01-01T00:00", "--until 2020-01-01T00:00 has passed (it is "),
])
def test_study_run_until_takes_a_time_to_come(tmp_path, capsys, until, message):
    err = refused(capsys, "study", "run", STUDY, "--db", tmp_path / "r.db", "--until", until,
                  "--runs-dir", tmp_path / "runs")
    assert message in err and files(tmp_path) == []


def test_study_run_until_is_refused_with_ray(tmp_path, capsys):
    err = refused(capsys, "study", "run", STUDY, "--db", tmp_path / "r.db", "--until", "23:59",
                  "--executor", "ray", "--runs-dir", tmp_path / "runs")
    assert "--until works with --executor local only" in err and files(tmp_path) == []


def test_study_run_until_says_the_date_and_time_it_stops_claiming_by(tmp_path, capsys, monkeypatch):
    """A time of day already past means tomorrow's: the line says which day (a job script a minute late
    would otherwise claim runs for a day). With nothing to time the study by, nothing is claimed."""
    import datetime as dt

    from cifarlab.study import status
    monkeypatch.setattr(status, "measured_seconds", lambda *a, **k: None)   # no network timed here either
    at = dt.datetime.now().replace(second=0, microsecond=0) - dt.timedelta(minutes=1)   # tomorrow's
    (tmp_path / "mine").mkdir()
    assert cli.main(["study", "run", STUDY, "--db", str(tmp_path / "mine" / "results.db"), "--until", f"{at:%H:%M}",
                     "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    tomorrow = at + dt.timedelta(days=1)
    out = capsys.readouterr().out
    assert f"until {tomorrow:%Y-%m-%d %H:%M} ({tomorrow:%A}, local time): claims only runs expected to end by" in out
    assert "so none under --until" in out
    assert f"{tmp_path / 'mine' / 'results.db'} not created" in out and not (tmp_path / "mine" / "results.db").exists()


def test_until_at_a_time_of_day_means_the_next_one():
    import datetime as dt
    now = dt.datetime.now().replace(second=0, microsecond=0)
    past, soon = now - dt.timedelta(minutes=1), now + dt.timedelta(minutes=2)
    assert dt.datetime.fromtimestamp(cli.parse_until(f"{past:%H:%M}")) == past + dt.timedelta(days=1)   # tomorrow's
    assert dt.datetime.fromtimestamp(cli.parse_until(f"{soon:%H:%M}")) == soon   # (across midnight: tomorrow's too)
    assert dt.datetime.fromtimestamp(cli.parse_until(f"{soon.hour}:{soon:%M}")).time() == soon.time()   # H:MM


def test_study_run_makes_no_folder_for_its_database(tmp_path, capsys):
    err = refused(capsys, "study", "run", STUDY, "--db", tmp_path / "new" / "r.db", "--runs-dir", tmp_path / "runs")
    assert f"the folder {tmp_path / 'new'} does not exist; create it first (mkdir -p" in err
    assert files(tmp_path) == []


@pytest.mark.parametrize("argv", [
    ["study", "status", STUDY, "--db", "{folder}"],
    ["study", "run", STUDY, "--db", "{folder}", "--runs-dir", "{tmp}/runs"],
    ["study", "adopt", STUDY, "--from-db", "{folder}", "--db", "{tmp}/ok.db", "--runs-dir", "{tmp}/runs"],
    ["report", STUDY, "--db", "{folder}", "--out", "{tmp}/out"],
    ["results", "export", "--db", "{folder}", "--out", "{tmp}/out"],
    ["results", "compare", "--db", "{tmp}/ok.db", "--against", "{folder}"],
])
def test_a_database_path_that_is_a_folder_says_so(tmp_path, capsys, argv):
    folder = tmp_path / "results"
    folder.mkdir()
    err = refused(capsys, *[a.replace("{folder}", str(folder)).replace("{tmp}", str(tmp_path)) for a in argv])
    assert f"{folder} is a folder; give the database file, e.g. {folder / 'results.db'}" in err
    assert files(tmp_path) == ["results"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"cifarlab {__version__}\n"


@pytest.mark.parametrize("action, has, lacks", [
    ("run", ["--only", "--executor", "--workers", "--data-dir"], ["--from-db", "RUN_DIR"]),
    ("status", ["--workers"], ["--from-db", "--executor", "--only", "--runs-dir"]),
    ("adopt", ["--from-db", "RUN_DIR", "--runs-dir"], ["--executor", "--only", "--workers"]),
])
def test_each_study_action_has_its_own_help(capsys, action, has, lacks):
    with pytest.raises(SystemExit):
        cli.main(["study", action, "--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"usage: cifarlab study {action} ")
    assert all(option in text for option in has) and not any(option in text for option in lacks)


def test_an_option_of_another_study_action_names_the_action_that_takes_it(tmp_path, capsys):
    err = refused(capsys, "study", "status", STUDY, "--executor", "ray", "--db", tmp_path / "r.db")
    assert "study status takes no --executor; only `study run` does" in err
    err = refused(capsys, "study", "status", STUDY, "some/run", "--db", tmp_path / "r.db")
    assert "study status takes no run directories ('some/run'); only `study adopt` does" in err
    assert files(tmp_path) == []


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown key optim.lrr; valid keys of [optim]: name, lr, momentum"),
    ("optim.lrr=0.1", "; did you mean optim.lr?"),
    ("optm.lr=0.1", "unknown config section 'optm'; valid: name, data, augment, model, optim"),
    ("optm.lr=0.1", "; did you mean 'optim'?"),
    ("model.norm=btach", "model.norm = 'btach' is invalid; valid: none, batch, group, layer, instance; did you mean "
                         "'batch'?"),
    ("augment.pipeline=['flip', 'cutot']", "augment.pipeline: 'cutot' is invalid; valid: "),
    ("augment.pipeline=['flip', 'cutot']", "did you mean 'cutout'?"),
    ("train.tta=flp", "train.tta = 'flp' is invalid; valid: none, flip, flip-translate; did you mean 'flip'?"),
    ("optim.name=adamm", "optim.name = 'adamm' is invalid; valid: sgd, adam, adamw, muon; did you mean 'adam"),
])
def test_a_misspelt_key_or_value_names_the_closest(tmp_path, capsys, override, message):
    assert message in refused(capsys, "run", EXPERIMENT, "--set", override, "--out", tmp_path / "r")


def test_no_suggestion_when_nothing_is_close(tmp_path, capsys):
    err = refused(capsys, "run", EXPERIMENT, "--set", "optim.zzzzzz=1", "--out", tmp_path / "r")
    assert "unknown key optim.zzzzzz" in err and "did you mean" not in err


def test_key_value_without_set_says_to_use_set(tmp_path, capsys):
    err = refused(capsys, "run", EXPERIMENT, "optim.lr=0.1", "--out", tmp_path / "r")
    assert "unrecognized argument 'optim.lr=0.1': to override a config key, write --set optim.lr=0.1" in err
    err = refused(capsys, "run", "optim.lr=0.1", "--out", tmp_path / "r")
    assert "'optim.lr=0.1' is a config override, not an experiment file: give the experiment file first, " \
           "then --set optim.lr=0.1" in err
    err = refused(capsys, "run", EXPERIMENT, "stray", "--out", tmp_path / "r")
    assert "unrecognized arguments: stray (see `cifarlab run --help`)" in err
    err = refused(capsys, "study", "status", STUDY, "--db", tmp_path / "r.db", "--bogus")
    assert "unrecognized arguments: --bogus (see `cifarlab study status --help`)" in err   # the action's help
    assert files(tmp_path) == []


def script(path, *args, **env: str):
    """`bash path args...` with only PATH and `env` in its environment; its output as text."""
    import subprocess
    return subprocess.run(["bash", str(path), *map(str, args)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env})


@pytest.mark.parametrize("until", ["24:00", "9", "noon", "12:60"])
def test_the_cpu_queue_refuses_an_until_that_is_not_a_time_of_day(until):
    """scripts/cpu_queue.sh checks UNTIL before it starts anything (no logs/, no worker)."""
    out = script(REPO / "scripts" / "cpu_queue.sh", 2, "fast_baseline", UNTIL=until, CIFARLAB="false")
    assert out.returncode == 2 and out.stderr == f"UNTIL must be HH:MM (00:00-23:59), got '{until}'\n"
    assert out.stdout == ""


@pytest.mark.parametrize("env, line", [
    ({"FILL": "fast_baseline"}, "FILL runs studies past UNTIL once nothing fits before it: set UNTIL=HH:MM too "
                                "(without UNTIL every study of the queue runs to its end)"),
    ({"FILL": "no_such_study", "UNTIL": "10:00"}, "no studies/no_such_study.toml; studies: ")])
def test_the_cpu_queue_refuses_a_fill_it_could_not_run(env, line):
    """FILL (studies a slot runs past UNTIL) is checked before anything starts, as the queue's studies are."""
    out = script(REPO / "scripts" / "cpu_queue.sh", 2, "fast_baseline", CIFARLAB="false", **env)
    assert out.returncode == 2 and out.stderr.startswith(line) and out.stderr.count("\n") == 1
    assert out.stdout == ""


@pytest.mark.parametrize("args, line", [
    ([], "usage: scripts/queue_stop.sh STUDY [STUDY ...] (studies/STUDY.toml, results/STUDY/results.db)\n"),
    (["no_such_study"], "no studies/no_such_study.toml or results/no_such_study/results.db\n")])
def test_queue_stop_refuses_a_study_it_cannot_snapshot_before_it_stops_anything(args, line, tmp_path):
    """scripts/queue_stop.sh checks its studies before it writes logs/queue.stop or signals a worker
    (a copy in an empty checkout: it works where it lies, and none of this checkout's workers is its)."""
    import shutil
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "queue_stop.sh", tmp_path / "scripts")
    out = script(tmp_path / "scripts" / "queue_stop.sh", *args)
    assert out.returncode == 2 and out.stderr == line and out.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scripts"]   # no logs/queue.stop


@pytest.mark.parametrize("wait", ["0", "5s", "-1"])
def test_queue_stop_refuses_a_wait_that_is_not_whole_seconds_before_it_stops_anything(wait, tmp_path):
    """WAIT (the grace after SIGTERM) is checked before logs/queue.stop or any signal: 0 would send none."""
    import shutil
    for folder in ("scripts", "studies", "results/s"):
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "queue_stop.sh", tmp_path / "scripts")
    (tmp_path / "studies" / "s.toml").write_text("")
    (tmp_path / "results" / "s" / "results.db").write_text("")
    out = script(tmp_path / "scripts" / "queue_stop.sh", "s", WAIT=wait)
    assert out.returncode == 2 and out.stderr == f"WAIT must be whole seconds >= 1, got '{wait}'\n"
    assert not (tmp_path / "logs").exists()


WORKER_THAT_IGNORES_SIGTERM = """
import signal, sys, time
from cifarlab.results.store import RunKey, open_store
store = open_store("results/s/results.db")
key = RunKey("s", "arm", 0, "h")
store.register(key, {})
signal.signal(signal.SIGTERM, signal.SIG_IGN)
assert store.claim("s", [key]) is not None
print("claimed", flush=True)
time.sleep(120)
"""


def test_queue_stop_kills_a_worker_that_ignores_sigterm_and_gives_its_claim_back(tmp_path):
    """A `study run` in this checkout still running WAIT seconds after SIGTERM is killed, its claim
    (held by a process now gone) is given back, and the snapshot runs (a copy of the script in an
    empty checkout, with a stand-in snapshot; the worker is a stand-in whose command line reads as
    `cifarlab study run`, so no real worker is touched)."""
    import shutil
    import subprocess
    import sys

    from cifarlab.results.store import open_store
    (tmp_path / "scripts").mkdir()
    (tmp_path / "studies").mkdir()
    (tmp_path / "results" / "s").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "queue_stop.sh", tmp_path / "scripts")
    (tmp_path / "scripts" / "snapshot_results.sh").write_text('echo "$@" > snapshot.out\n')
    (tmp_path / "scripts" / "snapshot_results.sh").chmod(0o755)
    (tmp_path / "studies" / "s.toml").write_text("")
    (tmp_path / "worker.py").write_text(WORKER_THAT_IGNORES_SIGTERM)
    worker = subprocess.Popen([sys.executable, "worker.py", "cifarlab", "study", "run", "studies/s.toml"],
                              cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline() == "claimed\n"
        out = script(tmp_path / "scripts" / "queue_stop.sh", "s", PYTHON=sys.executable, WAIT="2")
        assert out.returncode == 0, out.stderr
        assert out.stderr == f"still running 2 s after SIGTERM: SIGKILL to {worker.pid} (their claims are given back below)\n"
        assert worker.wait(timeout=30) == -9
    finally:
        worker.kill()
    assert [r["status"] for r in open_store(tmp_path / "results" / "s" / "results.db").runs()] == ["pending"]
    assert (tmp_path / "snapshot.out").read_text() == "s\n" and (tmp_path / "logs" / "queue.stop").exists()


@pytest.mark.parametrize("action", ["status", "run"])
def test_a_study_whose_subset_cannot_hold_its_validation_split_is_refused_before_anything_is_written(
        tmp_path, capsys, action):
    """A variant's data.val_size must fit in its data.subset: found when the study is read, not when
    its first run has been claimed (which left a database and a failed run behind)."""
    study = tmp_path / "s.toml"
    study.write_text(f'name = "s"\nexperiment = "{EXPERIMENT}"\nseeds = [0]\n[[variants]]\nname = "small"\n'
                     'set = { "data.subset" = 2000 }\n')
    err = refused(capsys, "study", action, study, "--db", tmp_path / "r.db", "--runs-dir", tmp_path / "runs")
    assert "data.val_size = 5000 must be smaller than the 2000 training images of data.subset = 2000" in err
    assert files(tmp_path) == ["s.toml"]


def test_a_reader_that_leaves_early_is_no_disk_error(monkeypatch, capsys):
    """`cifarlab list keys | head -1`: the pipe closes under the command; it exits as a process SIGPIPE
    ends (141), not with 'check that the folder is writable'."""
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass
    monkeypatch.setattr("sys.stdout", Closed())
    assert cli.main(["list", "keys"]) == 141
    assert capsys.readouterr().err == ""


def test_an_interrupt_says_what_is_kept_only_where_something_is(monkeypatch, capsys):
    """Ctrl-C: `run` points to --resume, `study run` to the same command, any other command only says
    it was interrupted; SIGTERM exits 143, Ctrl-C 130."""
    import signal

    from cifarlab.errors import STOPPED_BY

    def stop(args):
        raise KeyboardInterrupt
    monkeypatch.setitem(cli.COMMANDS, "list", stop)
    assert cli.main(["list", "keys"]) == 130 and capsys.readouterr().err == "cifarlab: interrupted\n"
    monkeypatch.setitem(cli.COMMANDS, "run", stop)
    monkeypatch.setattr(cli, "check_experiment_arg", lambda args: None)
    assert cli.main(["run", "x.toml"]) == 130 and "--resume" in capsys.readouterr().err

    def term(args):
        cli.interrupt(signal.SIGTERM, None)
    monkeypatch.setitem(cli.COMMANDS, "list", term)
    try:
        assert cli.main(["list", "keys"]) == 143
        monkeypatch.setitem(cli.COMMANDS, "list", stop)   # the next in-process command's Ctrl-C is a Ctrl-C
        assert cli.main(["list", "keys"]) == 130 and STOPPED_BY[0] == signal.SIGINT
    finally:
        STOPPED_BY[0] = signal.SIGINT


def test_an_interrupt_python_cannot_raise_where_it_lands_is_delivered_again(monkeypatch, capsys):
    """SIGTERM landing in a weakref callback (as in an import's module lock) raises where Python only
    prints the error and goes on: while a command runs, the signal is delivered again and stops it."""
    import signal
    import time
    import weakref

    from cifarlab.errors import STOPPED_BY

    class Thing:
        pass

    def lands_in_a_callback(args):
        thing = Thing()
        ref = weakref.ref(thing, lambda _: cli.interrupt(signal.SIGTERM, None))
        del thing   # the callback's KeyboardInterrupt cannot propagate from here
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # the signal delivered again stops the command here
            pass
        return 0 if ref else 1
    monkeypatch.setitem(cli.COMMANDS, "list", lands_in_a_callback)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["list", "keys"]) == 143
        assert capsys.readouterr().err == "cifarlab: interrupted\n"
    finally:
        signal.signal(signal.SIGTERM, previous)
        STOPPED_BY[0] = signal.SIGINT


def test_a_stop_that_code_swallowed_is_raised_again_at_the_next_training_step(monkeypatch, capsys, tmp_path,
                                                                               data_root):
    """SIGTERM's KeyboardInterrupt raised where code catches it and goes on (a library callback whose
    error is cleared, while torch imports its compiler stack: CI, stop 62, the run trained on and
    the process ignored SIGTERM): the run's next training step raises it again, and the command
    exits 143 with no epoch trained. A call after the command is not stopped by it."""
    import signal

    from cifarlab import api
    from cifarlab.errors import STOPPED_BY
    tiny = {"name": "tiny", "data": {"subset": 400, "val_size": 100}, "model": {"widths": [8, 16], "dense": [16]},
            "train": {"epochs": 500, "batch_size": 50, "threads": 1}}

    def swallowed_then_trains(args):
        try:
            cli.interrupt(signal.SIGTERM, None)
        except KeyboardInterrupt:
            pass   # what the code it landed in did
        api.train(api.config(tiny), out=tmp_path / "long", data_dir=data_root, download=False)
        return 0
    monkeypatch.setitem(cli.COMMANDS, "list", swallowed_then_trains)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["list", "keys"]) == 143
        assert capsys.readouterr().err == "cifarlab: interrupted\n"
        assert (tmp_path / "long" / "config.toml").exists() and not (tmp_path / "long" / "metrics.jsonl").exists()
        assert signal.getsignal(signal.SIGTERM) is previous   # the caller's handler again
    finally:
        signal.signal(signal.SIGTERM, previous)
        STOPPED_BY[0] = signal.SIGINT
    one = api.train(api.config(tiny, {"train.epochs": 1}), out=tmp_path / "after", data_dir=data_root, download=False)
    assert one.epochs == 1 and one.stopped is None


def test_ctrl_c_stays_ignored_where_the_shell_ignores_it(monkeypatch):
    """A background job (`cifarlab study run ... &`) starts with SIGINT ignored: the command keeps
    ignoring it (the terminal's Ctrl-C is not meant for it) while it takes SIGTERM, and every handler
    is the caller's again when it returns; in the foreground Ctrl-C stops it."""
    import signal

    seen = {}

    def handlers(args):
        seen["int"], seen["term"] = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        return 0
    monkeypatch.setitem(cli.COMMANDS, "list", handlers)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert cli.main(["list", "keys"]) == 0
        assert seen == {"int": signal.SIG_IGN, "term": cli.interrupt}
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert cli.main(["list", "keys"]) == 0
        assert seen == {"int": cli.interrupt, "term": cli.interrupt}
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is before[1]
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_refusals_of_results_data_adopt_and_bench_write_nothing(tmp_path, capsys):
    """Options a results action does not take, a missing .npz to pack, an adoption refused against a new
    database, and accuracies out of [0, 1] for bench tta: one line each, exit 2, and no file left."""
    db = tmp_path / "r.db"
    err = refused(capsys, "results", "compare", "--db", db, "--out", tmp_path / "cmp")
    assert "results compare takes no --out (it is for results export and index)" in err
    err = refused(capsys, "results", "compare", "--db", db, "--out", "results/export")   # even at export's default
    assert "results compare takes no --out" in err
    err = refused(capsys, "results", "export", "--db", db, "--metric", "val")
    assert "results export takes no --metric (it is for results compare)" in err
    assert "nothere.npz does not exist" in refused(capsys, "data", "pack", tmp_path / "nothere.npz", tmp_path / "packs")
    (tmp_path / "notrun").mkdir()
    refused(capsys, "study", "adopt", STUDY, tmp_path / "notrun", "--db", db, "--runs-dir", tmp_path / "runs")
    err = refused(capsys, "bench", "tta", EXPERIMENT, "--thresholds", "15", "--out", tmp_path / "bench")
    assert "--thresholds must be comma-separated accuracies in [0, 1] (0.94, not 94), got '15'" in err
    assert files(tmp_path) == ["notrun"]


def test_a_failed_write_probe_takes_back_the_folders_it_made(tmp_path, monkeypatch):
    import errno
    import tempfile

    from cifarlab import runs
    from cifarlab.errors import UserError

    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "new" / "deeper"

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(UserError, match=rf"^cannot write to {target} \(Read-only file system\); choose a writable "
                                        "folder with --out$"):
        runs.ensure_writable(target, "--out")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == []   # new/deeper taken back, kept/ stays
    monkeypatch.undo()
    made = runs.ensure_writable(target, "--out")
    assert made == [tmp_path / "kept" / "new", target] and list(target.iterdir()) == []
    (target / "result").write_text("x")
    runs.remove_made(made)                      # something was written: nothing is taken back
    assert (target / "result").is_file()
