#!/usr/bin/env bash
# Offline recall quality on the public click datasets ($RECALLD_DATA_DIR) with recalld-eval's
# time-split protocol (include/recalld/eval.h), against the reference numbers
# of issue 4 and a gensim skip-gram baseline evaluated on the SAME split
# (recalld-eval --dump-split; bench/gensim_baseline.py), side by side.
#
#   bench/quality.sh [DATA_DIR]
# DATA_DIR defaults to $RECALLD_DATA_DIR: the directory holding the public click
# datasets (movielens-100k/, diginetica/); the script stops when neither is given.
# Environment: RC_BUILD_DIR (default build), TUNE_SECONDS (--tune budget per
# tuned method, default 60), GENSIM_GRID=0 to skip gensim's 11-setting grid,
# THREADS (training threads, default 2).
#
# Rows: recalld's methods (sgns and cbow with --tune, no hand-picked
# settings; sgns-default / cbow-default untuned), gensim skip-gram with its
# defaults, with recalld's dim/window/negatives/epochs (matched), and the best
# of the grid. Ratios: measured / issue reference, and the issue's targets.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
DATA=${1:-${RECALLD_DATA_DIR:-}}
if [ -z "$DATA" ]; then
    echo "quality: RECALLD_DATA_DIR is not set: set it to the directory holding the public" >&2
    echo "quality: click datasets (movielens-100k/, diginetica/) or pass that directory as the first argument" >&2
    exit 2
fi
if [ ! -d "$DATA" ]; then
    echo "quality: $DATA (RECALLD_DATA_DIR) is not a directory" >&2
    exit 2
fi
TUNE_SECONDS=${TUNE_SECONDS:-60}
THREADS=${THREADS:-2}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
tmp=$(mktemp -d /tmp/rc-bench-quality.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x "$B/recalld-eval" ]; then
    echo "quality: $B/recalld-eval not built (set RC_BUILD_DIR)" >&2
    exit 1
fi
have_gensim=0
if /usr/bin/python3 -c 'import gensim, numpy' 2>/dev/null; then
    have_gensim=1
else
    echo "quality: python3-gensim not importable by /usr/bin/python3: gensim rows skipped"
fi

METHODS=popularity,itemknn,sgns,cbow,prequential,prequential-warm
DIM=64 WINDOW=5 NEG=5 EPOCHS=5 # recalld's defaults: the untuned runs and gensim "matched"

# run NAME FILE REFS LOAD-FLAGS...   REFS = "pop knn gensim-default gensim-best" (HR@50)
run() {
    local name=$1 file=$2 refs=$3
    shift 3
    if [ ! -r "$file" ]; then
        echo "== $name: $file absent: skipped"
        return 0
    fi
    local out="$tmp/$name"
    mkdir -p "$out"
    local common=(--input "$file" "$@" --threads "$THREADS" --dim $DIM --quiet --json)
    echo "== $name: recalld-eval ${common[*]} --methods $METHODS --tune --tune-seconds $TUNE_SECONDS"
    "$B/recalld-eval" "${common[@]}" --methods "$METHODS" --tune --tune-seconds "$TUNE_SECONDS" \
        --dump-split "$out/split" >"$out/tuned.json"
    "$B/recalld-eval" "${common[@]}" --methods sgns,cbow --window $WINDOW --negatives $NEG \
        --epochs $EPOCHS >"$out/default.json"
    if [ $have_gensim = 1 ]; then
        local grid=--grid
        [ "${GENSIM_GRID:-1}" = 0 ] && grid=
        /usr/bin/python3 "$here/bench/gensim_baseline.py" "$out/split" --dim $DIM \
            --window $WINDOW --negatives $NEG --epochs $EPOCHS --threads "$THREADS" $grid \
            >"$out/gensim.json" 2>"$out/gensim.err" || {
            echo "quality: gensim baseline failed:" >&2
            cat "$out/gensim.err" >&2
            echo '{}' >"$out/gensim.json"
        }
    else
        echo '{}' >"$out/gensim.json"
    fi
    "$PY" - "$name" "$out" "$refs" <<'PY'
import json, sys
name, out, refs = sys.argv[1], sys.argv[2], [float(x) for x in sys.argv[3].split()]
tuned = json.load(open(f"{out}/tuned.json"))
default = json.load(open(f"{out}/default.json"))
gensim = json.load(open(f"{out}/gensim.json"))
d = tuned["dataset"]
print(f"   {d['events']} events, {d['users']} users, {d['items']} items, "
      f"{d['sessions']} sessions, {d['skipped']} skipped")
rows = [(k, v) for k, v in tuned["methods"].items()]
rows += [(k + "-default", v) for k, v in default["methods"].items()]
rows += list(gensim.items())
ref = {"popularity": refs[0], "itemknn": refs[1], "gensim-defaults": refs[2],
       "gensim-best": refs[3]}
cols = ["hr@10", "hr@20", "hr@50", "mrr@50", "coverage@50", "avg_position", "auc"]
print(f"   {'method':<18}" + "".join(f"{c:>9}" for c in ["hr@10", "hr@20", "hr@50", "mrr@50",
      "cov@50", "avg_pos", "auc"]) + f"{'preds':>8}{'secs':>8}  ref hr@50  ratio")
for k, v in rows:
    r = ref.get(k)
    tail = f"  {r:9.3f}  {v['hr@50'] / r:5.2f}" if r else ""
    print(f"   {k:<18}" + "".join(f"{v[c]:9.4f}" if c != "avg_position" else f"{v[c]:9.2f}"
                                for c in cols) + f"{v['predictions']:8d}{v['seconds']:8.1f}" + tail)
for k, v in tuned["methods"].items():
    if "tuned" in v:
        t = v["tuned"]
        print(f"   {k} tuned: window={t['window']} negatives={t['negatives']} "
              f"power={t['power']:g} epochs={t['epochs']} subsample={t['subsample']:g} "
              f"lr={t['lr']:g} (validation hr@50 {t['validation_hr@50']:.4f}, "
              f"{t['trials']} runs, {t['seconds']:.0f} s)")
m = tuned["methods"]
hr = lambda k: m[k]["hr@50"] if k in m else float("nan")
best_gensim = max([v["hr@50"] for k, v in gensim.items()] + [refs[3]])
print("   targets:")
print(f"     sgns (tuned) / best gensim (max of issue ref {refs[3]:.3f} and measured): "
      f"{hr('sgns') / best_gensim:.2f}  (target >= 1)")
best_mode = max(hr("sgns"), hr("cbow"))
print(f"     best recalld mode / itemknn: {best_mode / hr('itemknn'):.2f}  (target >= 1;"
      f" vs the issue's item-kNN {refs[1]:.3f}: {best_mode / refs[1]:.2f})")
print(f"     prequential / sgns: {hr('prequential') / hr('sgns'):.2f}, "
      f"prequential-warm / sgns: {hr('prequential-warm') / hr('sgns'):.2f}  (target >= 0.90)")
print(f"     popularity / issue ref: {hr('popularity') / refs[0]:.2f}, "
      f"itemknn / issue ref: {hr('itemknn') / refs[1]:.2f}  (protocol check: ~1)")
PY
}

run movielens-100k "$DATA/movielens-100k/u.data" ".163 .406 .243 .296" \
    --format tsv --user 0 --item 1 --time 3 --time-unit s
run diginetica "$DATA/diginetica/sample_train-item-views.csv" ".046 .208 .021 .205" \
    --sep ';' --header --session session_id --item item_id --time eventdate --time-unit iso \
    --time-offset timeframe
