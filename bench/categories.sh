#!/usr/bin/env bash
# What the items' categories give the stream on the Diginetica sample
# (docs/BENCHMARKS.md, "The log's categories"): every run twice, without and with
# diginetica/product-categories.csv (recalld-eval --item-cates), side by side.
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
# (the daily part takes about 12 minutes on a loaded 2-core machine), REBUILD=live|fresh
# for the hybrids' rebuild (recalld-eval --rebuild; default live).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
DATA=${1:-${RECALLD_DATA_DIR:-}}
DAILY=${DAILY:-1}
REBUILD=${REBUILD:-live}
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
    echo "   recalld-eval $*" | sed "s|$DATA|\$RECALLD_DATA_DIR|g"
    nice "$B/recalld-eval" "$@" >"$out"
}

echo "== cold: the stream at the daemon's defaults against the tuned batch skip-gram"
cold=(--methods "sgns,prequential" --window 32 --negatives 10 --power 0.5 --epochs 120 --lr 0.01)
eval_run "$tmp/cold-without.json" "${dg[@]}" "${cold[@]}"
eval_run "$tmp/cold-with.json" "${dg[@]}" "${cold[@]}" "${with[@]}"

if [ "$DAILY" != 0 ]; then
    echo "== daily: 40 warm-up days, the tuned batch settings fixed (--rebuild $REBUILD)"
    daily=(--protocol daily --new-items --warmup-periods 40 --window 6 --negatives 10
        --power 0.25 --epochs 200 --subsample 0 --lr 0.05 --gate-hours 24 --rebuild "$REBUILD"
        --methods "itemknn,batch-daily,stream-warm,stream-daily-install,stream-daily-gated")
    eval_run "$tmp/daily-without.json" "${dg[@]}" "${daily[@]}"
    eval_run "$tmp/daily-with.json" "${dg[@]}" "${daily[@]}" "${with[@]}"
fi

"$PY" - "$tmp" <<'PYEOF'
import json, os, sys
tmp = sys.argv[1]
def load(name):
    p = os.path.join(tmp, name)
    return json.load(open(p))["methods"] if os.path.exists(p) else None
def hr(ms, m, part=None):
    v = ms[m]
    return v["slices"][part]["hr@50"] if part else v["hr@50"]

print("\nHR@50, without and with the categories (the ratio columns: with / without)")
cw, cc = load("cold-without.json"), load("cold-with.json")
print("%-24s %9s %9s %9s" % ("cold", "without", "with", "ratio"))
for m in ("sgns", "prequential"):
    print("%-24s %9.4f %9.4f %8.2fx" % (m, hr(cw, m), hr(cc, m), hr(cc, m) / hr(cw, m)))
print("%-24s %8.3fx %8.3fx   (issue 14's target: >= 0.9x)" % (
    "prequential / sgns", hr(cw, "prequential") / hr(cw, "sgns"),
    hr(cc, "prequential") / hr(cc, "sgns")))

dw, dc = load("daily-without.json"), load("daily-with.json")
if dw and dc:
    print("\n%-24s %9s %9s %9s %9s %9s" % ("daily", "without", "new", "older", "with",
                                          "new", ) + " %9s" % "older")
    for m in dw:
        print("%-24s %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f" % (
            m, hr(dw, m), hr(dw, m, "new"), hr(dw, m, "older"), hr(dc, m), hr(dc, m, "new"),
            hr(dc, m, "older")))
    for name, ms in (("without", dw), ("with", dc)):
        b, w = hr(ms, "batch-daily"), hr(ms, "stream-warm")
        hyb = max(("stream-daily-install", "stream-daily-gated"), key=lambda m: hr(ms, m))
        h = hr(ms, hyb)
        print("%-8s stream-warm / batch-daily %.3fx (target >= 1.05x); best hybrid (%s)"
              " / batch-daily %.3fx, / stream-warm %.3fx (target >= 1 both)" % (
                  name, w / b, hyb, h / b, h / w))
PYEOF
