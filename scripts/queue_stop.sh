#!/usr/bin/env bash
# End a session's compute: stop scripts/cpu_queue.sh's slots, leave no claim held, and snapshot the
# studies they worked on, in the order that loses nothing:
#   1. logs/queue.stop: no slot starts another study (nor its FILL studies);
#   2. SIGTERM to every `study run` process working in this checkout (its working directory is this
#      one: the queue's slots and their runs, a `--workers N` parent and its children; no other
#      checkout's, no single `cifarlab run`), again to any that starts meanwhile: each stops at once
#      (or at its next training step), gives back its claim and keeps its last finished epoch's
#      checkpoint. Waited for up to WAIT seconds (default 300: a loaded machine), then SIGKILL, and a
#      claim whose process is gone is given back here (`results.store.claim_is_dead`);
#   3. a check that no study database still names a run `running` (a committed claim would hold a
#      run from another machine's workers for 30 minutes);
#   4. scripts/snapshot_results.sh STUDY...: reports, exports, the results index and the project
#      report at this final database state, the unfinished runs' checkpoints carried
#      (results/STUDY/inflight, for the next session's cpu_queue.sh to restore), all staged.
# Then `git commit` (what step 4 staged).
#
#   scripts/queue_stop.sh noise_methods augment_budget
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/queue_stop.sh STUDY [STUDY ...] (studies/STUDY.toml, results/STUDY/results.db)" >&2; exit 2; }
for s in "$@"; do
  [ -f "studies/$s.toml" ] && [ -f "results/$s/results.db" ] || { echo "no studies/$s.toml or results/$s/results.db" >&2; exit 2; }
done
PYTHON=${PYTHON:-.venv/bin/python}
WAIT=${WAIT:-300}
[[ "$WAIT" =~ ^[1-9][0-9]*$ ]] || { echo "WAIT must be whole seconds >= 1, got '$WAIT'" >&2; exit 2; }
here=$(pwd -P)
mine() {   # the `study run` processes (and cpu_queue.sh's slot loops) whose working directory is this checkout
  for pid in $(pgrep -f "cifarlab(\.cli)?\"? study run " || true); do
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$here" ] && echo "$pid"
  done
  return 0
}
mkdir -p logs
touch logs/queue.stop
signalled=" "
for _ in $(seq "$WAIT"); do
  pids=$(mine)
  [ -n "$pids" ] || break
  for pid in $pids; do   # each once: a second signal would only be noted (errors.finishing)
    case "$signalled" in *" $pid "*) continue ;; esac
    kill -CONT "$pid" 2>/dev/null || true   # a paused worker (SIGSTOP) would take no signal
    kill -TERM "$pid" 2>/dev/null || true
    signalled="$signalled$pid "
  done
  sleep 1
done
pids=$(mine)
if [ -n "$pids" ]; then
  echo "still running $WAIT s after SIGTERM: SIGKILL to $pids (their claims are given back below)" >&2
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  sleep 1
fi
held=0
for s in "$@"; do   # claims whose process is gone (killed) are given back; a live one is reported
  n=$("$PYTHON" - "results/$s/results.db" <<'PY'
import sys, time
from cifarlab.results.store import claim_is_dead, open_store
store = open_store(sys.argv[1], must_exist=True)
held = 0
for row in store.runs():
    if row["status"] == "running":
        if claim_is_dead(row["claimed_by"], row["heartbeat"], time.time()):
            store.release(row["id"])
        else:
            held += 1
print(held)
PY
)
  [ "$n" = 0 ] || { echo "results/$s/results.db: $n run(s) still claimed by a live process: not snapshotted" >&2; held=1; }
done
[ "$held" = 0 ] || exit 1
scripts/snapshot_results.sh "$@"
echo "stopped: no study run left here, no claim held; commit what was staged (git commit)"
