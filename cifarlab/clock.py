"""A clock for wall times that leaves out the time the process spent stopped.

A study worker paused with SIGSTOP (for the test suite, or while `scripts/snapshot_results.sh`
commits its database) keeps its monotonic clock running, so an epoch that spans a pause would
record minutes it never trained, and the run's wall time and images/s would read slower than the
machine is. `clock()` is `time.perf_counter()` less the seconds the process was seen stopped: a
daemon thread sleeps `TICK` seconds at a time, and a wake-up later than `GAP` seconds can only
mean that the whole process was not scheduled (stopped, or its machine suspended); a thread merely
waiting for a busy core or the GIL is late by milliseconds. A pause shorter than `GAP` counts as
wall time, and the clock learns of a pause within `TICK` seconds of the process resuming.
"""

from __future__ import annotations

import os
import threading
import time

TICK = 0.25   # seconds the watching thread sleeps between looks at the clock
GAP = 2.0     # a wake-up later than this is a pause of the process, not a busy machine


class PauseWatch:
    """Seconds the process spent stopped since `start`, counted by a daemon thread."""

    def __init__(self, tick: float = TICK, gap: float = GAP):
        self.tick, self.gap = tick, gap
        self.paused = 0.0
        self.pid: int | None = None   # the process whose thread counts: a forked child starts its own

    def start(self) -> None:
        if self.pid == os.getpid():
            return
        self.pid, self.paused = os.getpid(), 0.0
        threading.Thread(target=self._watch, name="cifarlab-pause-watch", daemon=True).start()

    def _watch(self) -> None:
        last = time.perf_counter()
        while True:
            time.sleep(self.tick)
            now = time.perf_counter()
            late = now - last - self.tick
            if late > self.gap:
                self.paused += late   # one writer: this thread; readers take a float, atomic in CPython
            last = now


_WATCH = PauseWatch()


def clock() -> float:
    """Seconds on `time.perf_counter()`'s scale less the time this process spent stopped since its
    first call: differences of two readings are wall time without pauses."""
    _WATCH.start()
    return time.perf_counter() - _WATCH.paused


def paused_seconds() -> float:
    """The seconds this process has been seen stopped since `clock()` was first called."""
    return _WATCH.paused if _WATCH.pid == os.getpid() else 0.0
