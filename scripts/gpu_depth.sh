#!/usr/bin/env bash
# The answers-that-hold studies (issue #44) on a lent GPU, in priority order, until SECONDS run out:
# each study resumes from its database under results/ (carried over: tuning choices and finished
# runs stay), runs with WORKERS processes side by side on the GPU, and its database comes back under
# $OUT (scripts/gpu_study.sh). Data: as scripts/gpu_study.sh (data/cifar10/cifar10.npz, or the parts
# of scripts/device_data.py in $DEVDATA). CIFAR-100 studies need data/cifar100 too.
# Usage: scripts/gpu_depth.sh SECONDS WORKERS [STUDY ...]   (default: the #44 queue below)
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/gpu_depth.sh SECONDS WORKERS [STUDY ...]" >&2; exit 2; }
seconds=$1 workers=$2; shift 2
queue=("$@")
[ ${#queue[@]} -gt 0 ] || queue=(resnetify_fair norms_fair noise_methods augment_budget norms_batch
                                 patchify_flops speed94_ablate supcon_budget se_deep c100_budget basic_fair)
deadline=$(( $(date +%s) + seconds ))
for study in "${queue[@]}"; do
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 60 ] || { echo "gpu_depth: time is up before $study"; break; }
  echo "gpu_depth: $study, $left s left"
  OUT="${OUT:-/tmp/gpu_depth}/$study" scripts/gpu_study.sh "studies/$study.toml" "results/$study/results.db" \
    "$left" "$workers" --runs-dir /root/runs
done
