#!/usr/bin/env bash
# Run (or resume) a study on a lent GPU machine for at most SECONDS, then leave a consistent copy
# of its database and the log under $OUT (the device tool brings $OUT back).
# Usage: scripts/gpu_study.sh STUDY DB SECONDS WORKERS [study run flags...]
# Data: data/cifar10/cifar10.npz, else rebuilt from the parts of scripts/device_data.py found in
# $DEVDATA (default /root/devdata), which refuses to write it unless every array's SHA-256 matches.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { echo "usage: scripts/gpu_study.sh STUDY DB SECONDS WORKERS [study run flags...]" >&2; exit 2; }
study=$1 db=$2 seconds=$3 workers=$4; shift 4
out="${OUT:-/tmp/gpu_study}"; mkdir -p "$out" "$(dirname "$db")"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -e data/cifar10/cifar10.npz ]; then
  python3 scripts/device_data.py unpack "${DEVDATA:-/root/devdata}" data/cifar10/cifar10.npz || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# SIGTERM first: the workers finish the epoch's checkpoint and release their claimed runs.
timeout -k 20 "$seconds" python3 -m cifarlab.cli study run "$study" --db "$db" --workers "$workers" \
  --data-dir data --no-download --no-progress "$@" 2>&1 | tee "$out/study.log"
python3 - "$db" "$out/$(basename "$db")" <<'EOF'
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
src.backup(dst)
print("copied", sys.argv[1], "->", sys.argv[2], dst.execute("select count(*) from runs").fetchone())
EOF
