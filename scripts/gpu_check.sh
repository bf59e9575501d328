#!/usr/bin/env bash
# One short GPU check (CUDA, bf16 autocast): the throughput bench (with its ablation, and 4 and 8
# processes side by side), then the fast recipes over one seed each with bench tta, where data is
# there. Budgeted to finish within 8 minutes on one H100. The device tool carries 64 MiB a call:
# carry CIFAR-10 with scripts/device_data.py (README, "Measured on a lent GPU") or run it without.
# Usage: scripts/gpu_check.sh [DATA_DIR]   (default: $CIFARLAB_DATA, else ./data)
# Needs the CIFAR-10 npz or official archive in DATA_DIR; without it, only the throughput bench runs.
# Results go to stdout and, when $OUT is set (the device tool), to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
data="${1:-${CIFARLAB_DATA:-./data}}"
log="${OUT:-/tmp}/gpu_check.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch, numpy, tqdm" 2>/dev/null || pip install -q torch numpy tqdm
if [ ! -e "$data/cifar10/cifar10.npz" ] && [ -e "${DEVDATA:-/root/devdata}/manifest.json" ]; then
  python3 scripts/device_data.py unpack "${DEVDATA:-/root/devdata}" "$data/cifar10/cifar10.npz"
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  # On an H100 (2026-11-27) bf16 autocast + channels_last ran at 0.88x of plain fp32 for this
  # launch-bound net at batch 128: the ablation says which of the two costs it; --compile says
  # whether torch.compile's fused kernels (fewer launches) pay for a train.compile key on a GPU
  # (on the CPUs here it did not: docs/PERFORMANCE.md).
  python3 -m cifarlab.cli bench throughput --ablate --compile --rounds 2 --steps 100 --experiment experiments/basic/final.toml
  python3 -m cifarlab.cli bench throughput --rounds 2 --steps 50 --batch-size 512 --experiment experiments/basic/final.toml
  # Processes side by side (what `study run --workers N` does): sum of their img/s. 8 gave 4.6x one
  # process on 2026-11-27; 12 says whether the 16 cores allow more workers.
  for n in 4 8 12; do
    for i in $(seq "$n"); do
      timeout 60 python3 -m cifarlab.cli bench throughput --rounds 2 --steps 300 \
        --experiment experiments/basic/final.toml > "/tmp/side_by_side.$n.$i.log" 2>&1 &
    done
    wait
    echo "$n processes side by side, img/s of each (default path):"
    grep -h "^  default " /tmp/side_by_side."$n".*.log | awk '{s += $2; print "  " $2} END {print "  sum " s}'
  done
  if [ -e "$data/cifar10/cifar10.npz" ] || [ -e "$data/cifar10.npz" ] || [ -e "$data/cifar-10-python.tar.gz" ]; then
    for recipe in experiments/fast/speed73.toml experiments/fast/speed94.toml experiments/fast/resnet90.toml experiments/fast/baseline.toml; do
      [ -e "$recipe" ] || continue
      timeout 150 python3 -m cifarlab.cli bench tta "$recipe" --seeds 1 --data-dir "$data" --no-download \
        --thresholds 0.73,0.90,0.94 --out /tmp/gpu_runs --set train.device=cuda
    done
  else
    echo "no CIFAR-10 under $data: recipes skipped"
  fi
} 2>&1 | tee "$log"
