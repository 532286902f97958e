#!/usr/bin/env bash
# What the index costs in recommendation quality: HR@50 of the batch skip-gram
# model scored through the daemon's index (recalld-eval's default, the
# daemon's index.* settings and over-fetch) beside the same model scored by
# brute force (--search exact), and recall@50 of the index against exact
# search for the same queries (--ann-recall: the share of each prediction's
# exact top-50 that the index returns) — on a planted stream large enough
# for IVF partitions at the daemon's defaults, and on the public datasets,
# where the catalogs are small enough that the default index is exact (flat
# partitions) and a second row forces IVF lists (index.ivf_min 64).
#
#   bench/ann_hr.sh [DATA_DIR] [ITEMS] [EVENTS]
# DATA_DIR defaults to $RECALLD_DATA_DIR (movielens-100k/, diginetica/); without
# it only the planted stream runs. ITEMS (200000) and EVENTS (2000000) size the
# planted stream: CITIES x CATES (20 x 10, as bench/recall.sh generates: below
# ~820k items its partitions stay under index.ivf_min and are flat, i.e. exact;
# CITIES=4 CATES=5 puts 200k items into 20 IVF partitions), ITEMS/200 co-click
# communities. Environment: RC_BUILD_DIR (default build),
# PREDICTIONS (--max-predictions, default 4000). Training is single-threaded so
# both searches score the very same model.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
DATA=${1:-${RECALLD_DATA_DIR:-}}
ITEMS=${2:-200000}
EVENTS=${3:-2000000}
PRED=${PREDICTIONS:-4000}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
for bin in recalld-eval recalld-gen; do
    [ -x "$B/$bin" ] || { echo "ann_hr: $B/$bin not built (set RC_BUILD_DIR)" >&2; exit 1; }
done
tmp=$(mktemp -d /tmp/rc-bench-ann.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# run NAME EVAL-ARGS...: the index (with --ann-recall) and exact, side by side.
run() {
    local name=$1 t0
    shift
    t0=$(date +%s)
    "$B/recalld-eval" "$@" --methods sgns --threads 1 --max-predictions "$PRED" --ann-recall \
        --json --quiet >"$tmp/index.json"
    "$B/recalld-eval" "$@" --methods sgns --threads 1 --max-predictions "$PRED" \
        --search exact --json --quiet >"$tmp/exact.json"
    "$PY" - "$name" "$tmp/index.json" "$tmp/exact.json" "$(($(date +%s) - t0))" <<'PYEOF'
import json, sys
name, fi, fe, secs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
i = json.load(open(fi))["methods"]["sgns"]
e = json.load(open(fe))["methods"]["sgns"]
ratio = i["hr@50"] / e["hr@50"] if e["hr@50"] else float("nan")
print("| %s | %.4f | %.4f | **%.4f** (%+.2f%%) | %.4f | %.4f | %d | %s s |"
      % (name, i["hr@50"], e["hr@50"], ratio, 100 * (ratio - 1), i["mrr@50"], i["ann_recall@50"],
         i["predictions"], secs))
PYEOF
}

echo "== $(date -u +%FT%TZ), $(nproc) cores, $(uptime | sed 's/.*load/load/')"
echo "| log (index settings) | HR@50 through the index | HR@50 exact (reference) | index / exact | MRR@50 index | recall@50 of the index vs exact | predictions | seconds |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"

CITIES=${CITIES:-20}
CATES=${CATES:-10}
"$B/recalld-gen" --seed 3 --users "$ITEMS" --items "$ITEMS" --cities "$CITIES" --cates "$CATES" \
    --communities $((ITEMS / 200)) --zipf 0.6 --events "$EVENTS" --out "$tmp/gen.jsonl" 2>/dev/null
run "planted, $ITEMS items in $CITIES cities x $CATES categories, $EVENTS events (daemon defaults)" \
    --input "$tmp/gen.jsonl"
rm -f "$tmp/gen.jsonl"

ML=$DATA/movielens-100k
if [ -n "$DATA" ] && [ -r "$ML/u.data" ]; then
    ml=(--input "$ML/u.data" --format tsv --user 0 --item 1 --time 3 --time-unit s)
    [ -r "$ML/u.item" ] && ml+=(--item-cates "$ML/u.item" --item-cates-format movielens)
    run "MovieLens-100k (daemon defaults)" "${ml[@]}"
    run "MovieLens-100k (index.ivf_min 64)" "${ml[@]}" --stream-set index.ivf_min=64
else
    echo "| MovieLens-100k | SKIP: no \$RECALLD_DATA_DIR/movielens-100k/u.data | | | | | | |"
fi
DG=$DATA/diginetica
if [ -n "$DATA" ] && [ -r "$DG/sample_train-item-views.csv" ]; then
    dg=(--input "$DG/sample_train-item-views.csv" --sep ';' --header --session session_id
        --item item_id --time eventdate --time-unit iso --time-offset timeframe
        --window 32 --negatives 10 --power 0.5 --epochs 120 --lr 0.01) # its tuned settings
    [ -r "$DG/product-categories.csv" ] && dg+=(--item-cates "$DG/product-categories.csv")
    run "Diginetica sample (daemon defaults)" "${dg[@]}"
    run "Diginetica sample (index.ivf_min 64)" "${dg[@]}" --stream-set index.ivf_min=64
else
    echo "| Diginetica sample | SKIP: no \$RECALLD_DATA_DIR/diginetica/sample_train-item-views.csv | | | | | | |"
fi
echo "== done $(date -u +%FT%TZ), $(uptime | sed 's/.*load/load/')"
