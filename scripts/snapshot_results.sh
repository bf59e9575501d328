#!/usr/bin/env bash
# Regenerate the reports, CSV exports and the results index of live studies at one database state,
# carry their unfinished runs' checkpoints (results/STUDY/inflight), and stage them for a commit:
# every local `cifarlab` process is paused (SIGSTOP) while the pages are written and resumed
# afterwards, so no worker finishes a run between the report and `git add` (the results index test
# compares the committed index with one regenerated from the databases).
#
#   scripts/snapshot_results.sh noise_imagenette noise_cifar10    # then: git commit
#
# Each name is a study: studies/NAME.toml with its database results/NAME/results.db.
# DATA_DIR (default ../shared/data) is passed to the reports; CIFARLAB (default .venv/bin/cifarlab).
# The carried checkpoints (results/STUDY/inflight) are ignored by git: checkpoints stay out of the
# repository, so they resume a run only where this working directory survives to the next session.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/snapshot_results.sh STUDY [STUDY ...] (studies/STUDY.toml, results/STUDY/results.db)" >&2; exit 2; }
CIFARLAB=${CIFARLAB:-.venv/bin/cifarlab}
DATA_DIR=${DATA_DIR:-../shared/data}
for s in "$@"; do
  [ -f "studies/$s.toml" ] && [ -f "results/$s/results.db" ] || { echo "no studies/$s.toml or results/$s/results.db" >&2; exit 2; }
done
# `study run` processes, their `--workers N` children (python -m cifarlab.cli study run ... --worker)
# and single `cifarlab run`s
PIDS=$(pgrep -f "cifarlab(\.cli)?\"? (study run|run) " || true)   # and scripts/cpu_queue.sh's loops (cifarlab" study run)
resume() { [ -z "$PIDS" ] || kill -CONT $PIDS 2>/dev/null || true; }
trap resume EXIT
[ -z "$PIDS" ] || kill -STOP $PIDS
checkpoint() {   # fold the write-ahead log into the file that git stages; refuse if a paused writer holds it
  python3 - "$1" <<'PY'
import sqlite3, sys
busy, log, done = sqlite3.connect(sys.argv[1]).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
if busy or log != done:
    sys.exit(f"{sys.argv[1]}: the write-ahead log could not be folded in (a paused process holds it); try again")
PY
}
finished() {   # how many runs the database holds done
  python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM runs WHERE status = ?", ("done",)).fetchone()[0])' "$1"
}
stage=()
for s in "$@"; do
  db="results/$s/results.db"
  checkpoint "$db"
  if [ "$(finished "$db")" = 0 ]; then   # a study just begun: no report yet, its database stays out of git
    scripts/inflight.sh carry "$s"
    echo "results/$s: no finished run yet; its unfinished runs carried, nothing staged"
    continue
  fi
  stage+=("results/$s")
  # the page's own extra sections (--grids, --features), as its "Regenerate" command names them
  extra=$(grep -m1 "^cifarlab report studies/$s.toml" "results/$s/README.md" 2>/dev/null | grep -o -- "--grids\|--features" | tr '\n' ' ' || true)
  # shellcheck disable=SC2086
  "$CIFARLAB" report "studies/$s.toml" --db "$db" --out "results/$s" --data-dir "$DATA_DIR" $extra
  "$CIFARLAB" results export --db "$db" --out "results/$s" --study "studies/$s.toml"
  # the unfinished runs' checkpoints, so that the next session's checkout resumes them (it reads the
  # database, so before the last fold)
  scripts/inflight.sh carry "$s"
  checkpoint "$db"
done
"$CIFARLAB" results index --out results/README.md
# the project report cites the databases: regenerate it at the same state (a claim the new runs no
# longer support stops here with one line naming the sentence; fix the source, then snapshot again)
"$CIFARLAB" paper
git add results/README.md docs/REPORT.md docs/REPORT.html "${stage[@]}"
echo "staged $*; the paused workers resume now"
