"""A clock for wall times that leaves out the time the process spent stopped.

A study worker paused with SIGSTOP (for the test suite, or while `scripts/snapshot_results.sh`
commits its database) keeps its monotonic clock running, so an epoch that spans a pause would
record minutes it never trained, and the run's wall time and images/s would read slower than the
machine is. `clock()` is `time.perf_counter()` less the seconds the process was seen stopped.

How a pause is seen: a daemon thread looks at the clock every `TICK` seconds, and so does every
reading of `clock()`. A look later than `GAP` seconds after the previous one means the thread could
not run; of that delay, the part in which the process neither used CPU time (`time.process_time()`)
nor had its main thread waiting for a core (Linux's /proc/self/schedstat: a computation that holds
the GIL on a machine whose cores are all busy) is a pause. A thread kept waiting by a busy core is
late by milliseconds, and one kept from the GIL by a long computation is late while the process
computes or waits to, which is not counted. A pause shorter than
`GAP` counts as wall time; a pause is counted by the first look after the process resumes, so a
reading taken then already leaves it out.
"""

from __future__ import annotations

import os
import threading
import time

TICK = 0.25   # seconds the watching thread sleeps between looks at the clock
GAP = 2.0     # a look later than this may hold a pause of the process


class PauseWatch:
    """Seconds the process spent stopped since `start`, counted by a daemon thread's looks and by
    every reading's."""

    def __init__(self, tick: float = TICK, gap: float = GAP, now=time.perf_counter, used=None):
        """`now` and `used` (default `busy`): the wall clock and the seconds the process ran or
        waited for a core, as this watch reads them (a test gives its own)."""
        self.tick, self.gap = tick, gap
        self.now, self.used = now, used or busy
        self.paused = 0.0
        self.pid: int | None = None   # the process whose thread counts: a forked child starts its own
        self.lock = threading.Lock()
        self.last = self.cpu = 0.0
        self.done = threading.Event()

    def start(self) -> None:
        with self.lock:
            if self.pid == os.getpid():
                return
            self.pid, self.paused = os.getpid(), 0.0
            self.last, self.cpu = self.now(), self.used()
            self.done = threading.Event()
        threading.Thread(target=self._watch, name="cifarlab-pause-watch", daemon=True).start()

    def look(self) -> float:
        """`time.perf_counter()` now less the pauses, one that ended since the previous look counted."""
        with self.lock:
            now, cpu = self.now(), self.used()
            late = now - self.last - self.tick
            if late > self.gap:
                self.paused += max(0.0, late - (cpu - self.cpu))
            self.last, self.cpu = now, cpu
            return now - self.paused

    def stop(self) -> None:
        self.done.set()

    def _watch(self) -> None:
        while not self.done.wait(self.tick):
            self.look()


def busy(wait=None) -> float:
    """Seconds this process has run on a core (every thread's CPU time) or had its main thread
    waiting for one (its run-queue wait, where /proc/self/schedstat says it): a process stopped
    does neither. `wait`: what reads that wait (`waited`; tests pass their own)."""
    return time.process_time() + (wait or waited)()


# run time, run-queue wait (ns), timeslices of the main thread (the thread-group leader), whichever
# thread reads it
SCHEDSTAT = "/proc/self/schedstat"
_WAITED = [0.0]   # the last run-queue wait read: a read that fails once does not drop it


def waited(path: str = SCHEDSTAT, last: list[float] = _WAITED) -> float:
    """Seconds the main thread has waited for a core (Linux's /proc/self/schedstat, its second
    field); 0 where the kernel does not say, the last reading where one read fails (`last` keeps it)."""
    try:
        with open(path, encoding="ascii") as f:
            last[0] = int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):   # not Linux, a kernel without scheduler statistics
        pass
    return last[0]


_WATCH = PauseWatch()


def clock() -> float:
    """Seconds on `time.perf_counter()`'s scale less the time this process spent stopped since its
    first call: differences of two readings are wall time without pauses."""
    _WATCH.start()
    return _WATCH.look()


def paused_seconds() -> float:
    """The seconds this process has been seen stopped since `clock()` was first called."""
    return _WATCH.paused if _WATCH.pid == os.getpid() else 0.0
