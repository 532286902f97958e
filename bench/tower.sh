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
rate() { awk '{for (i = 1; i < NF; i++) if ($(i + 1) == "examples/s") print $i}'; }

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "PyTorch not installed: skipped"
    exit 0
fi
# Side by side at every thread count bench_tower ran (1 and THREADS): on a
# small machine PyTorch's intra-op threads can lose to one thread, so both
# are shown rather than only the largest.
printf '%-8s %14s %14s %10s\n' threads C_examples/s torch_ex/s C/torch
echo "$c_out" | grep '^train ' | while read -r line; do
    n=$(echo "$line" | awk '{print $2}')
    c_rate=$(echo "$line" | rate)
    t_line=$("$PY" "$here/bench/tower_torch.py" --seconds "$SECONDS_PER_RUN" --threads "$n")
    t_rate=$(echo "$t_line" | rate)
    awk -v n="$n" -v c="$c_rate" -v t="$t_rate" \
        'BEGIN { printf "%-8s %14.0f %14.0f %10.2f   (target C/torch >= 1)\n", n, c, t, c / t }'
done
