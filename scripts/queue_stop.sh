#!/usr/bin/env bash
# End a session's compute: stop scripts/cpu_queue.sh's slots, leave no claim held, and snapshot the
# studies they worked on, in the order that loses nothing:
#   1. logs/queue.stop: no slot starts another study (nor its FILL studies);
#   2. SIGTERM to every local `study run`: each stops at once (or at its next training step), gives
#      back its claim and keeps its last finished epoch's checkpoint; waited for (60 s, then SIGKILL:
#      a killed claim is taken over at once by this machine's next `study run`);
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
mkdir -p logs
touch logs/queue.stop
pattern="cifarlab(\.cli)?\"? (study run|run) "
pids=$(pgrep -f "$pattern" || true)
if [ -n "$pids" ]; then
  # shellcheck disable=SC2086
  kill -CONT $pids 2>/dev/null || true   # a paused worker (SIGSTOP) would take no signal
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 60); do
    pgrep -f "$pattern" > /dev/null || break
    sleep 1
  done
  if pgrep -f "$pattern" > /dev/null; then
    echo "still running 60 s after SIGTERM: SIGKILL (their claims are taken over by the next study run here)" >&2
    pkill -KILL -f "$pattern" || true
  fi
fi
held=0
for s in "$@"; do
  n=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM runs WHERE status = ?", ("running",)).fetchone()[0])' "results/$s/results.db")
  [ "$n" = 0 ] || { echo "results/$s/results.db: $n run(s) still marked running: not snapshotted" >&2; held=1; }
done
[ "$held" = 0 ] || exit 1
scripts/snapshot_results.sh "$@"
echo "stopped: no study run left here, no claim held; commit what was staged (git commit)"
