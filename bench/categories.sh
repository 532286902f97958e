#!/usr/bin/env bash
# What the items' categories give the stream on the Diginetica sample
# (docs/BENCHMARKS.md, "The log's categories"): every run twice, without and with
# diginetica/product-categories.csv (recalld-eval --item-cates), and a third time with
# the category file and the batch models' category prior (--cate-prior K), side by side.
#
#   cold:  the batch skip-gram at the tuned settings of BENCHMARKS.md (window 32,
#          negatives 10, power .5, 120 epochs, lr .01) and the stream from cold at
#          the daemon's defaults (prequential), on the default time split
#   daily: --protocol daily --new-items, 40 warm-up days, the batch settings fixed
#          at the tuner's choice (window 6, negatives 10, power .25, 200 epochs,
#          subsample 0, lr .05): batch-daily, stream-warm and the daemon's hybrids
#          (stream-daily-install; stream-daily-gated with a 24-hour gate window)
#
#   bench/categories.sh [DATA_DIR]
# DATA_DIR defaults to $RECALLD_DATA_DIR; without the sample the script says SKIP.
# Environment: RC_BUILD_DIR (default build), DAILY=0 to run only the cold part
# (the daily part takes about 20 minutes on a loaded 2-core machine), REBUILD=live|fresh
# for the hybrids' rebuild (recalld-eval --rebuild; default live), PRIOR=K for the third
# run's --cate-prior (default 3).
# The commands are printed as they run; copy them with $RECALLD_DATA_DIR set.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
DATA=${1:-${RECALLD_DATA_DIR:-}}
DAILY=${DAILY:-1}
REBUILD=${REBUILD:-live}
PRIOR=${PRIOR:-3}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
views=${DATA:+$DATA/diginetica/sample_train-item-views.csv}
cates=${DATA:+$DATA/diginetica/product-categories.csv}
if [ -z "$DATA" ] || [ ! -r "$views" ] || [ ! -r "$cates" ]; then
    echo "categories: SKIP: needs \$RECALLD_DATA_DIR/diginetica/sample_train-item-views.csv and" \
        "product-categories.csv (RECALLD_DATA_DIR='${DATA}')"
    exit 0
fi
if [ ! -x "$B/recalld-eval" ]; then
    echo "categories: $B/recalld-eval not built (set RC_BUILD_DIR)" >&2
    exit 1
fi
tmp=$(mktemp -d /tmp/rc-bench-categories.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

dg=(--input "$views" --sep ';' --header --session session_id --item item_id --time eventdate
    --time-unit iso --time-offset timeframe --threads 1 --json --quiet)
with=(--item-cates "$cates")

# eval OUT ARGS...: one recalld-eval run, its command echoed first
eval_run() {
    local out=$1
    shift
    local a line="   recalld-eval"
    for a in "$@"; do # quoted only where a shell needs it (';'), so it reads as typed
        if [[ $a =~ ^[A-Za-z0-9_./,:=@%+-]+$ ]]; then line+=" $a"; else line+=" '$a'"; fi
    done
    echo "${line//$DATA/\$RECALLD_DATA_DIR}"
    nice "$B/recalld-eval" "$@" >"$out"
}

echo "== cold: the stream at the daemon's defaults against the tuned batch skip-gram"
cold=(--methods "sgns,prequential" --window 32 --negatives 10 --power 0.5 --epochs 120 --lr 0.01)
eval_run "$tmp/cold-without.json" "${dg[@]}" "${cold[@]}"
eval_run "$tmp/cold-with.json" "${dg[@]}" "${cold[@]}" "${with[@]}"
eval_run "$tmp/cold-prior.json" "${dg[@]}" "${cold[@]}" "${with[@]}" --cate-prior "$PRIOR"

if [ "$DAILY" != 0 ]; then
    echo "== daily: 40 warm-up days, the tuned batch settings fixed (--rebuild $REBUILD)"
    daily=(--protocol daily --new-items --warmup-periods 40 --window 6 --negatives 10
        --power 0.25 --epochs 200 --subsample 0 --lr 0.05 --gate-hours 24 --rebuild "$REBUILD"
        --methods "itemknn,batch-daily,stream-warm,stream-daily-install,stream-daily-gated")
    eval_run "$tmp/daily-without.json" "${dg[@]}" "${daily[@]}"
    eval_run "$tmp/daily-with.json" "${dg[@]}" "${daily[@]}" "${with[@]}"
    eval_run "$tmp/daily-prior.json" "${dg[@]}" "${daily[@]}" "${with[@]}" --cate-prior "$PRIOR"
fi

"$PY" - "$tmp" "$PRIOR" <<'PYEOF'
import json, os, sys
tmp, prior = sys.argv[1], sys.argv[2]
runs = ("without", "with", "prior")
heads = ("without", "with", "+prior " + prior)
def load(name):
    p = os.path.join(tmp, name)
    return json.load(open(p))["methods"] if os.path.exists(p) else None
def hr(ms, m, part=None):
    v = ms[m]
    return v["slices"][part]["hr@50"] if part else v["hr@50"]

print("\nHR@50: without the category file, with it, and with it and --cate-prior %s" % prior)
cold = [load("cold-%s.json" % r) for r in runs]
print("%-22s" % "cold" + "".join(" %10s" % h for h in heads))
for m in ("sgns", "prequential"):
    print("%-22s" % m + "".join(" %10.4f" % hr(c, m) for c in cold))
print("%-22s" % "prequential / sgns" + "".join(
    " %9.3fx" % (hr(c, "prequential") / hr(c, "sgns")) for c in cold)
      + "   (issue 14: >= 0.9x)")

daily = [load("daily-%s.json" % r) for r in runs]
if all(daily):
    print("\n%-22s" % "daily (new / older)" + "".join(" %24s" % h for h in heads))
    for m in daily[0]:
        print("%-22s" % m + "".join(" %8.4f (%.4f/%.4f)" % (
            hr(d, m), hr(d, m, "new"), hr(d, m, "older")) for d in daily))
    for h, ms in zip(heads, daily):
        b, w = hr(ms, "batch-daily"), hr(ms, "stream-warm")
        hyb = max(("stream-daily-install", "stream-daily-gated"), key=lambda m: hr(ms, m))
        x = hr(ms, hyb)
        print("%-10s stream-warm / batch-daily %.3fx (issue 14: >= 1.05x); best hybrid (%s)"
              " / batch-daily %.3fx, / stream-warm %.3fx (>= 1 both)" % (h, w / b, hyb, x / b,
                                                                       x / w))
PYEOF
