#!/usr/bin/env bash
# The answers-that-hold studies (issue #44) on a lent GPU, in priority order, until SECONDS run out:
# each study resumes from its database under results/ (carried over: tuning choices and finished
# runs stay), runs with WORKERS processes side by side on the GPU, and its database comes back under
# $OUT (scripts/gpu_study.sh). Data: as scripts/gpu_study.sh (data/cifar10/cifar10.npz, or the parts
# of scripts/device_data.py in $DEVDATA). CIFAR-100 studies need data/cifar100 too.
# Usage: scripts/gpu_depth.sh SECONDS WORKERS [STUDY ...]   (default: the #44 queue below)
# The default queue puts first what the two CPU workers cannot finish in a session or several
# (noise_methods, about 52 process-hours on the Zen 4; augment_budget, about 73: `cifarlab study
# status studies/S.toml --db results/S/results.db` there), then the rest.
# Runbook, with a device lent (its budget is about 15 minutes, start included):
#   1. pause the CPU workers (touch logs/queue.stop; SIGTERM the `study run` processes: each gives
#      back its claim and keeps its finished epochs), so no database changes while it is carried;
#   2. device run: OUT=$OUT scripts/gpu_depth.sh 420 8   (carry nothing else: results/ is tracked);
#   3. bring each database back into the local one without losing what the CPU added meanwhile:
#      cifarlab study adopt studies/S.toml --db results/S/results.db --from-db FILES_AT/S/results.db
#      (a finished run with the same config and seed is recorded once; tuning choices follow from
#      the adopted tuning runs); then scripts/snapshot_results.sh S and commit. Run folders stay on
#      the device: a tuned arm's test run that would have tested a tuning run's weights, left
#      unfinished there, trains again here.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/gpu_depth.sh SECONDS WORKERS [STUDY ...]" >&2; exit 2; }
seconds=$1 workers=$2; shift 2
queue=("$@")
[ ${#queue[@]} -gt 0 ] || queue=(noise_methods augment_budget norms_fair norms_batch patchify_flops
                                 speed94_ablate supcon_budget se_deep c100_budget basic_fair)
deadline=$(( $(date +%s) + seconds ))
for study in "${queue[@]}"; do
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 60 ] || { echo "gpu_depth: time is up before $study"; break; }
  echo "gpu_depth: $study, $left s left"
  OUT="${OUT:-/tmp/gpu_depth}/$study" scripts/gpu_study.sh "studies/$study.toml" "results/$study/results.db" \
    "$left" "$workers" --runs-dir /root/runs
done
