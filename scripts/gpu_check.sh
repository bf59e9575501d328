#!/usr/bin/env bash
# One short GPU check (CUDA, bf16 autocast): the throughput bench, then the fast recipes over
# one seed each with bench tta. Budgeted to finish within 8 minutes on one H100.
# Usage: scripts/gpu_check.sh [DATA_DIR]   (default: $CIFARLAB_DATA, else ./data)
# Needs the CIFAR-10 npz or official archive in DATA_DIR; without it, only the throughput bench runs.
# Results go to stdout and, when $OUT is set (the device tool), to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
data="${1:-${CIFARLAB_DATA:-./data}}"
log="${OUT:-/tmp}/gpu_check.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch, numpy, tqdm" 2>/dev/null || pip install -q torch numpy tqdm
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -m cifarlab.cli bench throughput --rounds 3 --steps 50
  python3 -m cifarlab.cli bench throughput --rounds 3 --steps 50 --batch-size 512
  if [ -e "$data/cifar10/cifar10.npz" ] || [ -e "$data/cifar10.npz" ] || [ -e "$data/cifar-10-python.tar.gz" ]; then
    for recipe in experiments/fast/speed*.toml experiments/fast/baseline.toml; do
      [ -e "$recipe" ] || continue
      timeout 150 python3 -m cifarlab.cli bench tta "$recipe" --seeds 1 --data-dir "$data" --no-download \
        --thresholds 0.73,0.88,0.94 --out /tmp/gpu_runs --set train.device=cuda
    done
  else
    echo "no CIFAR-10 under $data: recipes skipped"
  fi
} 2>&1 | tee "$log"
