#!/usr/bin/env bash
# Carry a study's unfinished runs from one session's checkout to the next: the checkpoints of the
# runs that workers were training when a session ended would otherwise be lost with the machine's
# runs/ folder (only what git holds comes back), and those runs would start over.
#
#   scripts/inflight.sh carry STUDY [STUDY ...]     # runs/STUDY -> results/STUDY/inflight (staged by
#                                                   # scripts/snapshot_results.sh, workers paused)
#   scripts/inflight.sh restore STUDY [STUDY ...]   # results/STUDY/inflight -> runs/STUDY (called by
#                                                   # scripts/cpu_queue.sh before its workers start)
#
# carry copies every run directory under RUNS_DIR/STUDY (default runs/) that has a checkpoint and no
# final.json (checkpoint.pt, metrics.jsonl up to its last whole line, config.toml, best.pt) into
# results/STUDY/inflight/VARIANT/RUN/, and the shared weights a run still to come will take instead
# of training (RUNS_DIR/STUDY/_shared: `cifarlab.study.plan.shared_wanted`) into
# results/STUDY/inflight/_shared/, replacing what an earlier carry left there, and writes
# SHA256SUMS and CPU (vendor, family, model) beside them. restore copies a carried run back only
# where RUNS_DIR has no directory of that name, only when every checksum matches (nothing is loaded
# otherwise; the run then reads its checkpoint with torch.load(weights_only=True) as any resumed run
# does) and only on a CPU of the same vendor, family and model: a run finishes on the kind of CPU it
# started on, so its precision (bf16 where the CPU has it, fp32 on AVX2) and its wall time stay one
# machine's. A run whose study already holds it done is never claimed again, so a stale copy is inert.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/inflight.sh carry|restore STUDY [STUDY ...]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
what=$1; shift
case "$what" in carry|restore) ;; *) echo "unknown action '$what'; $usage" >&2; exit 2 ;; esac
RUNS_DIR=${RUNS_DIR:-runs}
CPUINFO=${CPUINFO:-/proc/cpuinfo}
PYTHON=${PYTHON:-.venv/bin/python}   # with cifarlab installed: which shared files a later run takes

cpu_id() {   # "AuthenticAMD 25 17": the CPU kind a carried run may resume on
  awk -F': *' '/^vendor_id/ && !v {v=$2} /^cpu family/ && !f {f=$2} /^model[ \t]*:/ && !m {m=$2}
               END {print v, f, m}' "$CPUINFO"
}

carry() {
  local s=$1 dst="results/$1/inflight" n=0 run rel f
  rm -rf "$dst"
  for run in "$RUNS_DIR/$s"/*/*/; do
    run=${run%/}
    [ -f "$run/checkpoint.pt" ] && [ ! -e "$run/final.json" ] || continue
    rel=${run#"$RUNS_DIR/$s/"}
    mkdir -p "$dst/$rel"
    for f in checkpoint.pt config.toml best.pt; do
      [ ! -f "$run/$f" ] || cp "$run/$f" "$dst/$rel/$f"
    done
    # a paused writer may have left half a line: keep the whole ones (resume drops rows past the checkpoint)
    [ ! -f "$run/metrics.jsonl" ] || python3 -c '
import json, sys
keep = []
for line in open(sys.argv[1], encoding="utf-8"):
    try:
        json.loads(line)
    except ValueError:
        break
    if not line.endswith("\n"):
        break
    keep.append(line)
open(sys.argv[2], "w", encoding="utf-8").writelines(keep)' "$run/metrics.jsonl" "$dst/$rel/metrics.jsonl"
    n=$((n + 1))
  done
  # the shared weights a run still to come will take instead of training (a tuning run's for its
  # arm's test run, cross-entropy's for early stopping's): only those, the spent ones stay behind
  local shared=0 name wanted=""
  if [ -d "$RUNS_DIR/$s/_shared" ] && [ -f "results/$s/results.db" ]; then
    wanted=$("$PYTHON" -c 'import sys
from cifarlab.results import open_store
from cifarlab.study import load_study
from cifarlab.study.plan import shared_wanted
print("\n".join(sorted(shared_wanted(load_study(sys.argv[1]), open_store(sys.argv[2])))))' \
      "studies/$s.toml" "results/$s/results.db") || { echo "results/$s: $PYTHON could not list the shared files later runs take; none carried"; wanted=""; }
    for name in $wanted; do
      [ -f "$RUNS_DIR/$s/_shared/$name" ] && [ -f "$RUNS_DIR/$s/_shared/$name.sha256" ] || continue
      mkdir -p "$dst/_shared"
      cp "$RUNS_DIR/$s/_shared/$name" "$RUNS_DIR/$s/_shared/$name.sha256" "$dst/_shared/"
      shared=$((shared + 1))
    done
  fi
  if [ "$((n + shared))" -gt 0 ]; then
    (cd "$dst" && find . -type f ! -name SHA256SUMS ! -name CPU | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
    cpu_id > "$dst/CPU"
  fi
  echo "results/$s/inflight: $n unfinished run(s) and $shared shared file(s) a later run will take carried"
}

restore() {
  local s=$1 src="results/$1/inflight" n=0 f rel here there
  [ -f "$src/SHA256SUMS" ] || return 0
  here=$(cpu_id); there=$(cat "$src/CPU" 2>/dev/null || echo unknown)
  if [ "$here" != "$there" ]; then
    echo "$src: carried on another CPU ($there; this one: $here); its runs start over here"
    return 0
  fi
  if ! (cd "$src" && sha256sum --check --quiet --strict SHA256SUMS >/dev/null 2>&1); then
    echo "$src: a file does not match SHA256SUMS; nothing restored, its runs start over"
    return 0
  fi
  # only the files SHA256SUMS lists ("HASH  ./VARIANT/RUN/FILE", "HASH  ./_shared/FILE"), each run
  # only where runs/ lacks it, each shared file only where runs/ lacks that file
  local -A skip=()
  while read -r _ f; do
    f=${f#./}; rel=${f%/*}
    case "$f" in /*|*..*) continue ;; esac   # inside the carried folder only
    if [ "$rel" = _shared ]; then
      [ -e "$RUNS_DIR/$s/$f" ] || { mkdir -p "$RUNS_DIR/$s/_shared"; cp "$src/$f" "$RUNS_DIR/$s/$f"; }
      continue
    fi
    if [ -z "${skip[$rel]+x}" ]; then
      if [ -e "$RUNS_DIR/$s/$rel" ]; then skip[$rel]=1; else skip[$rel]=0; n=$((n + 1)); fi
    fi
    [ "${skip[$rel]}" = 0 ] || continue
    mkdir -p "$RUNS_DIR/$s/$rel"
    cp "$src/$f" "$RUNS_DIR/$s/$f"
  done < "$src/SHA256SUMS"
  echo "$src: $n unfinished run(s) restored to $RUNS_DIR/$s"
}

for s in "$@"; do
  [ -f "studies/$s.toml" ] || { echo "no studies/$s.toml; studies: $(ls studies | sed 's/\.toml$//' | tr '\n' ' ')" >&2; exit 2; }
done
for s in "$@"; do "$what" "$s"; done
