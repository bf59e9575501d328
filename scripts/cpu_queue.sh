#!/usr/bin/env bash
# Keep this machine's cores on a queue of studies: WORKERS background worker slots, each running
# `cifarlab study run` (one worker, one thread) on the first study of the queue, then the next
# when that study has nothing left for it, and so on. Studies resume from their databases
# (results/STUDY/results.db) and runs from their checkpoints, so the same command continues a
# queue in a later session; a run another study's database holds done (the same config and seed) is
# adopted, not trained again (--adopt-done-elsewhere). Logs: logs/STUDY_SLOT.log. Stop after the current study: touch
# logs/queue.stop (removed at the next start); stop now: SIGTERM the `study run` processes (each gives
# back its claim and keeps its finished epochs). UNTIL=HH:MM (local time, the next such): each `study run` claims only
# runs expected to end by then (`--until`), so a session that ends at a known time leaves nothing
# half-trained; a study with no run that fits hands the slot to the next study of the queue.
# FILL="STUDY ..." (with UNTIL): once a slot's queue has no run that fits before UNTIL, the slot runs
# these studies without --until rather than stand idle: the runs it claims go on past UNTIL, to be
# stopped at the session's end (SIGTERM: each keeps its last finished epoch's checkpoint), carried
# by scripts/snapshot_results.sh (results/STUDY/inflight) and resumed by the next session's queue
# where this working directory and this kind of CPU survive to it (elsewhere they start over).
#   scripts/cpu_queue.sh 2 resnetify_fair norms_fair norms_batch
#   UNTIL=18:40 scripts/cpu_queue.sh 2 noise_methods augment_budget patchify_flops
#   UNTIL=18:40 FILL=noise_methods scripts/cpu_queue.sh 2 noise_methods augment_budget
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/cpu_queue.sh WORKERS STUDY [STUDY ...] (studies/STUDY.toml)" >&2; exit 2; }
workers=$1; shift
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || { echo "WORKERS must be a positive integer, got '$workers'" >&2; exit 2; }
CIFARLAB=${CIFARLAB:-.venv/bin/cifarlab}
UNTIL=${UNTIL:-}
FILL=${FILL:-}
[ -z "$FILL" ] || [ -n "$UNTIL" ] || { echo "FILL runs studies past UNTIL once nothing fits before it: set UNTIL=HH:MM too (without UNTIL every study of the queue runs to its end)" >&2; exit 2; }
for s in "$@" $FILL; do
  [ -f "studies/$s.toml" ] || { echo "no studies/$s.toml; studies: $(ls studies | sed 's/\.toml$//' | tr '\n' ' ')" >&2; exit 2; }
done
if [ -n "$UNTIL" ]; then   # one fixed date and time for every slot and study: the next $UNTIL (tomorrow's once it passed)
  [[ "$UNTIL" =~ ^([01]?[0-9]|2[0-3]):[0-5][0-9]$ ]] || { echo "UNTIL must be HH:MM (00:00-23:59), got '$UNTIL'" >&2; exit 2; }
  at=$(date -d "$UNTIL" +%s); [ "$at" -gt "$(date +%s)" ] || at=$((at + 86400))
  UNTIL=$(date -d "@$at" +%Y-%m-%dT%H:%M)
  echo "until $UNTIL (local time): each study run claims only runs expected to end by then"
fi
DATA_DIR=${DATA_DIR:-../shared/data}
mkdir -p logs
rm -f logs/queue.stop
# the runs an earlier session's snapshot carried unfinished (results/STUDY/inflight) resume, not start
# over; not while study workers run here (one may be about to start a run whose directory it found empty)
if pgrep -f "cifarlab(\.cli)?\"? (study run|run) " > /dev/null; then
  echo "study workers are running here: carried runs not restored (scripts/inflight.sh restore STUDY once they stop)"
else
  scripts/inflight.sh restore "$@" $FILL
fi
for slot in $(seq "$workers"); do
  nohup bash -c '
    for s in "$@"; do
      [ -e logs/queue.stop ] && exit 0
      mkdir -p "results/$s"   # study run makes no folder for a database (an empty one is not tracked)
      "'"$CIFARLAB"'" study run "studies/$s.toml" --db "results/$s/results.db" --workers 1 --threads 1 \
        --no-progress --adopt-done-elsewhere --data-dir "'"$DATA_DIR"'" '"${UNTIL:+--until $UNTIL}"' \
        >> "logs/${s}_'"$slot"'.log" 2>&1 || true
    done
    for s in '"$FILL"'; do   # past UNTIL: runs that a later session resumes (FILL)
      [ -e logs/queue.stop ] && exit 0
      mkdir -p "results/$s"
      "'"$CIFARLAB"'" study run "studies/$s.toml" --db "results/$s/results.db" --workers 1 --threads 1 \
        --no-progress --adopt-done-elsewhere --data-dir "'"$DATA_DIR"'" >> "logs/${s}_'"$slot"'.log" 2>&1 || true
    done' queue "$@" > /dev/null 2>&1 &
  echo "slot $slot: $*${FILL:+, then past UNTIL: $FILL} (pid $!)"
  sleep 2   # the slots' first claims one after another
done
