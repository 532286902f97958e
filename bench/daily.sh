#!/usr/bin/env bash
# The deployed regime (recalld-eval --protocol daily, include/recalld/eval.h):
# popularity, itemknn, batch-daily, stream-warm and stream-daily side by side,
# HR@50 overall and on new / older targets, on generated data with item churn
# and on the public click datasets ($RECALLD_DATA_DIR) — the figures of
# docs/BENCHMARKS.md "The deployed regime".
#
#   bench/daily.sh [DATA_DIR]
# DATA_DIR defaults to $RECALLD_DATA_DIR (movielens-100k/, diginetica/); without
# it only the generated log runs (Diginetica runs twice: without and with
# product-categories.csv). Environment: RC_BUILD_DIR (default build),
# THREADS (training threads, default 1), MOVIELENS=0 to skip MovieLens-100k
# (about 20 minutes on a loaded 2-core machine), TUNE=1 to add --tune
# --tune-seconds 60 and the live item-kNN and fused rows (the warm-up then
# grows until --tune has a validation split: 40 days on Diginetica's sample;
# MovieLens runs with 60 warm-up days), METHODS=a,b,... for another list of
# methods (e.g. add stream-daily-install, stream-daily-gated or stream-daily-live),
# REBUILD=live|fresh|both for the rebuild those install (--rebuild; both: gated only).
# Every method is also printed as a ratio to batch-daily and to stream-warm when they ran.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
DATA=${1:-${RECALLD_DATA_DIR:-}}
THREADS=${THREADS:-1}
MOVIELENS=${MOVIELENS:-1}
TUNE=${TUNE:-0}
extra=()
if [ "$TUNE" != 0 ]; then
    extra=(--tune --tune-seconds 60
        --methods popularity,itemknn,batch-daily,stream-warm,stream-daily,itemknn-live,fused)
fi
if [ -n "${METHODS:-}" ]; then
    extra=(${extra[@]+"${extra[@]:0:3}"} --methods "$METHODS")
fi
if [ -n "${REBUILD:-}" ]; then
    extra=(${extra[@]+"${extra[@]}"} --rebuild "$REBUILD")
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
for bin in recalld-eval recalld-gen; do
    if [ ! -x "$B/$bin" ]; then
        echo "daily: $B/$bin not built (set RC_BUILD_DIR)" >&2
        exit 1
    fi
done
tmp=$(mktemp -d /tmp/rc-bench-daily.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Prints one line per method: HR@50 (MRR@50) overall, on new and older targets.
show() {
    "$PY" - "$1" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
p = j["protocol"]
print("%d periods evaluated (%d of warm-up), %d predictions, %d new targets"
      % (len(p["periods"]), p["warmup_periods"], p["predictions"], p["new_targets"]))
ms = j["methods"]
refs = [r for r in ("batch-daily", "stream-warm") if r in ms and ms[r]["hr@50"] > 0]
print("%-21s %15s %8s %8s%s" % ("method", "hr@50 (mrr@50)", "new", "older",
                                "".join(" %13s" % ("/ " + r) for r in refs)))
for name, m in ms.items():
    s = m["slices"]
    ratios = "".join(" %12.3fx" % (m["hr@50"] / ms[r]["hr@50"]) for r in refs)
    print("%-21s %7.3f (%5.3f) %8.3f %8.3f%s%s" % (name, m["hr@50"], m["mrr@50"],
                                                   s["new"]["hr@50"], s["older"]["hr@50"],
                                                   ratios,
                                                   "   weight %.1f" % m["fuse_weight"]
                                                   if "fuse_weight" in m else ""))
PYEOF
}

run() {
    local name=$1
    shift
    echo "== $name: recalld-eval $* ${extra[*]} --protocol daily --new-items --threads $THREADS"
    nice "$B/recalld-eval" "$@" "${extra[@]}" --protocol daily --new-items --threads "$THREADS" \
        --json --quiet >"$tmp/$name.json"
    show "$tmp/$name.json"
}

nice "$B/recalld-gen" --seed 11 --users 600 --events 200000 --items 5000 --item-life-days 3 \
    --churn-days 10 --out "$tmp/churn.jsonl" 2>/dev/null
run generated-churn --input "$tmp/churn.jsonl"
if [ -z "$DATA" ]; then
    echo "daily: RECALLD_DATA_DIR is not set: the public datasets are skipped" >&2
    exit 0
fi
if [ -f "$DATA/diginetica/sample_train-item-views.csv" ]; then
    run diginetica --input "$DATA/diginetica/sample_train-item-views.csv" --sep ';' --header \
        --session session_id --item item_id --time eventdate --time-unit iso \
        --time-offset timeframe
    # The same with the items' categories, as the daemon's events carry cate_id:
    # a new item starts among its category's items (docs/BENCHMARKS.md, "The log's categories")
    if [ -f "$DATA/diginetica/product-categories.csv" ]; then
        run diginetica-categories --input "$DATA/diginetica/sample_train-item-views.csv" \
            --sep ';' --header --session session_id --item item_id --time eventdate \
            --time-unit iso --time-offset timeframe \
            --item-cates "$DATA/diginetica/product-categories.csv"
    fi
fi
if [ "$MOVIELENS" != 0 ] && [ -f "$DATA/movielens-100k/u.data" ]; then
    if [ "$TUNE" != 0 ]; then
        run movielens-100k --input "$DATA/movielens-100k/u.data" --warmup-periods 60
    else
        run movielens-100k --input "$DATA/movielens-100k/u.data"
    fi
fi
