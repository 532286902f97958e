#!/usr/bin/env bash
# Two-tower training throughput, C (bench_tower) vs the same architecture in
# PyTorch (bench/tower_torch.py), side by side with the ratio; then the C
# inference latencies.
#   bench/tower.sh [SECONDS] [THREADS]      (defaults 10 s per run, 2 threads)
# RC_BUILD_DIR picks the build (default build/). PyTorch runs on the CPU with
# the same thread count; without it the comparison says so and is skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
SECONDS_PER_RUN=${1:-10}
THREADS=${2:-2}
PY=${PYTHON:-/usr/bin/python3}

c_out=$("$B/bench_tower" --seconds "$SECONDS_PER_RUN" --threads "$THREADS")
echo "$c_out"
# The C line with the most threads.
c_line=$(echo "$c_out" | grep '^train ' | tail -1)
c_threads=$(echo "$c_line" | awk '{print $2}')
c_rate=$(echo "$c_line" | awk '{for (i = 1; i < NF; i++) if ($(i + 1) == "examples/s") print $i}')

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "PyTorch not installed: skipped"
    exit 0
fi
t_line=$("$PY" "$here/bench/tower_torch.py" --seconds "$SECONDS_PER_RUN" --threads "$c_threads")
echo "$t_line"
t_rate=$(echo "$t_line" | awk '{for (i = 1; i < NF; i++) if ($(i + 1) == "examples/s") print $i}')
printf '%-10s %8s %14s\n' impl threads examples/s
printf '%-10s %8s %14.0f\n' C "$c_threads" "$c_rate"
printf '%-10s %8s %14.0f\n' PyTorch "$c_threads" "$t_rate"
awk -v c="$c_rate" -v t="$t_rate" 'BEGIN { printf "C / PyTorch = %.2f (target >= 1)\n", c / t }'
