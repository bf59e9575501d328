"""cifarlab.clock: wall times leave out the time the process was stopped (SIGSTOP ... SIGCONT), as a
study worker is while the test suite or a snapshot runs, and keep the time it merely waited."""

import signal
import subprocess
import sys
import time

from cifarlab.clock import GAP, PauseWatch, clock, paused_seconds

CHILD = """
import sys, time
from cifarlab.clock import clock, paused_seconds
start_wall, start = time.perf_counter(), clock()
print("ready", flush=True)
sys.stdin.readline()            # the parent stops us, waits, resumes us, then writes a line
time.sleep(0.6)                 # the watching thread wakes at least once after the pause
print(f"{time.perf_counter() - start_wall:.3f} {clock() - start:.3f} {paused_seconds():.3f}", flush=True)
"""


def test_a_stopped_process_leaves_its_pause_out_of_the_clock():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGSTOP)
        time.sleep(GAP + 2.0)
        child.send_signal(signal.SIGCONT)
        out, _ = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    wall, measured, paused = map(float, out.split())
    assert wall > GAP + 2.0                  # the pause happened on the monotonic clock
    assert paused > GAP + 1.0                # and was seen
    assert abs(measured - (wall - paused)) < 0.05
    assert measured < wall - GAP             # the clock left it out


def test_a_running_process_counts_every_second_and_a_short_wait_is_not_a_pause():
    before, t0, p0 = clock(), time.perf_counter(), paused_seconds()
    time.sleep(0.5)
    assert abs((clock() - before) - (time.perf_counter() - t0)) < 0.05
    assert paused_seconds() == p0


def test_a_computation_that_holds_the_gil_past_the_gap_is_not_a_pause():
    watch = PauseWatch(tick=0.02, gap=0.1)
    watch.start()
    try:
        time.sleep(0.1)
        t0 = time.perf_counter()
        sum(range(40_000_000))   # one C call that keeps the GIL: the watching thread cannot look meanwhile
        held = time.perf_counter() - t0
        time.sleep(0.1)
        assert held > 0.15            # longer than tick + gap: the watching thread was late
        assert watch.paused < 0.05    # but the process was computing all along, so no pause
    finally:
        watch.stop()


def test_waiting_for_a_busy_core_is_not_a_pause():
    """A look 5 s late in which the process computed 2 s and its main thread waited 3 s for a core (all
    cores busy): no pause. The same look with the 3 s unaccounted for: a pause of them, less the tick."""
    readings = iter([(5.0, 5.0), (10.0, 7.0)])   # (wall clock, busy) at the two looks; both 0 at the start
    now = {"t": 0.0, "busy": 0.0}

    def step():
        now["t"], now["busy"] = next(readings)
    watch = PauseWatch(tick=0.25, gap=2.0, now=lambda: now["t"], used=lambda: now["busy"])
    with watch.lock:   # started by hand: no watching thread
        watch.pid, watch.last, watch.cpu = 0, 0.0, 0.0
    step()
    watch.look()
    assert watch.paused == 0.0
    step()
    watch.look()
    assert watch.paused == 5.0 - 0.25 - 2.0


def test_busy_is_cpu_time_plus_the_main_threads_wait_for_a_core(tmp_path):
    import functools

    import cifarlab.clock as clock
    stat, last = tmp_path / "schedstat", [0.0]   # a file of its own: the shared pause watch reads the real one
    assert clock.waited(str(stat), last) == 0.0   # a kernel that does not say
    stat.write_text("7000000000 2500000000 41\n")   # what Linux writes: run time, run-queue wait (ns), timeslices
    assert clock.waited(str(stat), last) == 2.5
    cpu, measured = time.process_time(), clock.busy(functools.partial(clock.waited, str(stat), last))
    assert cpu + 2.5 <= measured <= time.process_time() + 2.5
    for broken in ("", "7000000000 soon 41\n"):   # a failed read keeps the last wait read
        stat.write_text(broken)
        assert clock.waited(str(stat), last) == 2.5
    stat.unlink()
    assert clock.waited(str(stat), last) == 2.5
