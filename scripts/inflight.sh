#!/usr/bin/env bash
# Keep a study's unfinished runs for the next session where the working directory survives it:
# a checksummed, CPU-labelled copy of the checkpoints of the runs workers were training. The copy is
# ignored by git (checkpoints stay out of the repository), so a fresh checkout starts them over.
#
#   scripts/inflight.sh carry STUDY [STUDY ...]     # runs/STUDY -> results/STUDY/inflight (by
#                                                   # scripts/snapshot_results.sh, workers paused)
#   scripts/inflight.sh restore STUDY [STUDY ...]   # results/STUDY/inflight -> runs/STUDY (called by
#                                                   # scripts/cpu_queue.sh before its workers start)
#
# carry copies every run directory under RUNS_DIR/STUDY (default runs/) that has a checkpoint and no
# final.json (checkpoint.pt, metrics.jsonl, config.toml, best.pt, the .sha256 of each torch file; each
# written atomically by the run)
# into results/STUDY/inflight/VARIANT/RUN/ with a file CPU (vendor, family, model and the widest
# extension, which decides bf16 or fp32), and the shared weights a run still to come will take
# instead of training (RUNS_DIR/STUDY/_shared: `cifarlab.study.plan.shared_wanted`) into
# results/STUDY/inflight/_shared/, then SHA256SUMS over them all. It replaces what an earlier carry
# left, except a run carried earlier that this checkout has no directory for (never restored here:
# another CPU, or a queue without its study): that one stays carried. restore copies back only the
# files SHA256SUMS lists, only when every checksum matches (nothing is loaded otherwise; a run then
# reads its checkpoint with torch.load(weights_only=True) as any resumed run does, a shared file is
# checked again against its own .sha256), a run only where RUNS_DIR has no directory of that name
# and only on a CPU of the kind it was carried from, so that it keeps one precision and one
# machine's wall time. A run its study already holds done is never claimed again: a stale copy is
# inert.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/inflight.sh carry|restore STUDY [STUDY ...]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
what=$1; shift
case "$what" in carry|restore) ;; *) echo "unknown action '$what'; $usage" >&2; exit 2 ;; esac
RUNS_DIR=${RUNS_DIR:-runs}
CPUINFO=${CPUINFO:-/proc/cpuinfo}
PYTHON=${PYTHON:-.venv/bin/python}   # with cifarlab installed: which shared files a later run takes

cpu_id() {   # "AuthenticAMD 25 17 avx512_bf16"
  awk -F': *' '/^vendor_id/ && !v {v=$2} /^cpu family/ && !f {f=$2} /^model[ \t]*:/ && !m {m=$2}
               /^flags/ && !x {x = "other"; if ($2 ~ /avx2/) x = "avx2"; if ($2 ~ /avx512f/) x = "avx512f"
                               if ($2 ~ /avx512_bf16/) x = "avx512_bf16"; if ($2 ~ /amx_bf16/) x = "amx_bf16"}
               END {print v, f, m, x}' "$CPUINFO"
}

carry() {
  local s=$1 dst="results/$1/inflight" n=0 kept=0 shared=0 run rel f name wanted="" old
  old=$(mktemp -d)
  for run in "$dst"/*/*/; do   # carried earlier, not restored here: kept
    run=${run%/}; rel=${run#"$dst/"}
    [ -d "$run" ] && [ ! -L "$run" ] && [ "${rel%%/*}" != _shared ] && [ ! -e "$RUNS_DIR/$s/$rel" ] || continue
    mkdir -p "$old/${rel%/*}"; cp -r "$run" "$old/$rel"
  done
  rm -rf "$dst"
  for run in "$RUNS_DIR/$s"/*/*/; do
    run=${run%/}
    [ -f "$run/checkpoint.pt" ] && [ ! -e "$run/final.json" ] || continue
    rel=${run#"$RUNS_DIR/$s/"}
    mkdir -p "$dst/$rel"
    for f in checkpoint.pt checkpoint.pt.sha256 config.toml best.pt best.pt.sha256 metrics.jsonl; do
      [ ! -f "$run/$f" ] || cp "$run/$f" "$dst/$rel/$f"
    done
    cpu_id > "$dst/$rel/CPU"
    n=$((n + 1))
  done
  for run in "$old"/*/*/; do
    [ -d "$run" ] || continue
    run=${run%/}; rel=${run#"$old/"}
    mkdir -p "$dst/${rel%/*}"; cp -r "$run" "$dst/$rel"
    kept=$((kept + 1))
  done
  rm -rf "$old"
  # the shared weights a run still to come will take instead of training (a tuning run's for its
  # arm's test run, cross-entropy's for early stopping's): only those, the spent ones stay behind
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
  if [ "$((n + kept + shared))" -gt 0 ]; then
    (cd "$dst" && find . -type f ! -name SHA256SUMS -print0 | LC_ALL=C sort -z | xargs -0 sha256sum > SHA256SUMS)
  fi
  local said="results/$s/inflight: $n unfinished run(s) and $shared shared file(s) a later run will take carried"
  [ "$kept" = 0 ] || said="$said; $kept carried earlier and not restored here kept"
  echo "$said"
}

restore() {
  local s=$1 src="results/$1/inflight" n=0 other=0 f rel here
  [ -f "$src/SHA256SUMS" ] || return 0
  if ! (cd "$src" && sha256sum --check --quiet --strict SHA256SUMS >/dev/null 2>&1); then
    echo "$src: a file does not match SHA256SUMS; nothing restored, its runs start over"
    return 0
  fi
  here=$(cpu_id)
  # only the files SHA256SUMS lists ("HASH  ./VARIANT/RUN/FILE", "HASH  ./_shared/FILE"): each run
  # only where runs/ lacks it and its CPU file names this CPU's kind, each shared file where runs/
  # lacks that file
  local -A skip=()
  while read -r _ f; do
    f=${f#./}; rel=${f%/*}
    case "$f" in /*|*..*|*/*/*/*) continue ;; esac   # inside the carried folder, two levels at most
    [ "$rel" != "$f" ] && [ ! -L "$src/$f" ] || continue
    if [ "$rel" = _shared ]; then
      [ -e "$RUNS_DIR/$s/$f" ] || { mkdir -p "$RUNS_DIR/$s/_shared"; cp "$src/$f" "$RUNS_DIR/$s/$f"; }
      continue
    fi
    if [ -z "${skip[$rel]+x}" ]; then
      if [ -e "$RUNS_DIR/$s/$rel" ]; then
        skip[$rel]=1
      elif [ "$(cat "$src/$rel/CPU" 2>/dev/null)" != "$here" ]; then
        skip[$rel]=1; other=$((other + 1))
        echo "$src/$rel: carried from another CPU ($(cat "$src/$rel/CPU" 2>/dev/null || echo unknown); this one: $here); it starts over here"
      else
        skip[$rel]=0; n=$((n + 1))
      fi
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
