#!/usr/bin/env bash
# Two-tower ablation (issue 6) with recalld-eval --ablation: on each dataset,
# one time split and four rows on it — the word2vec average (sgns), the towers
# without user features (two_tower-nofeat), + interest tags (two_tower+tags),
# + device and behaviour statistics with attention (two_tower) — with HR@10/
# 20/50, MRR@50, coverage@50, average position and AUC; then the same rows per
# slice of the predictions (the user's history length before the target: 1-4,
# 5-19, 20-99, 100+ clicks; with / without profile features) with HR@50,
# MRR@50 and AUC, to show where the towers beat the word2vec average.
#
#   bench/ablation.sh [DATA_DIR]
# DATA_DIR defaults to $RECALLD_DATA_DIR: the directory holding the public click
# datasets (movielens-100k/, diginetica/); the script stops when neither is given.
# Environment: RC_BUILD_DIR (default build), THREADS (2), TOWER_EPOCHS (3),
# MAX_PREDICTIONS (predictions sampled per dataset, 4000), GEN_EVENTS (200000),
# TUNE_SECONDS (60: the sgns row is --tune'd for that long and the towers are
# trained on top of the tuned table, so the baseline row is the strong one of
# bench/quality.sh, not word2vec's defaults; 0 = no tuning, fixed settings).
#
# Datasets:
#  (a) generated (recalld-gen): device and tags planted (tied to the users'
#      long-term favourite category), without and with drifting interests
#      (--drift 0.3: clicks move to temporary interests the profile does not
#      describe);
#  (b) MovieLens-100k: u.data clicks, genres as categories (u.item), the user
#      demographics of u.user as --user-features (age numeric: bucketed;
#      gender, occupation categorical; zip dropped);
#  (c) Diginetica sample: categories from product-categories.csv; no user
#      features and no user ids (a session is a user), so only sgns vs
#      two_tower-nofeat is meaningful there (the feature rows get nothing more).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
DATA=${1:-${RECALLD_DATA_DIR:-}}
if [ -z "$DATA" ]; then
    echo "ablation: RECALLD_DATA_DIR is not set: set it to the directory holding the public" >&2
    echo "ablation: click datasets (movielens-100k/, diginetica/) or pass that directory as the first argument" >&2
    exit 2
fi
if [ ! -d "$DATA" ]; then
    echo "ablation: $DATA (RECALLD_DATA_DIR) is not a directory" >&2
    exit 2
fi
THREADS=${THREADS:-2}
TOWER_EPOCHS=${TOWER_EPOCHS:-3}
MAX_PREDICTIONS=${MAX_PREDICTIONS:-4000}
GEN_EVENTS=${GEN_EVENTS:-200000}
TUNE_SECONDS=${TUNE_SECONDS:-60}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
tmp=$(mktemp -d /tmp/rc-bench-ablation.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

for b in recalld-eval recalld-gen; do
    if [ ! -x "$B/$b" ]; then
        echo "ablation: $B/$b not built (set RC_BUILD_DIR)" >&2
        exit 1
    fi
done

COMMON=(--threads "$THREADS" --dim 64 --epochs 5 --tower-epochs "$TOWER_EPOCHS"
        --max-predictions "$MAX_PREDICTIONS" --ablation --json --quiet)
[ "$TUNE_SECONDS" != 0 ] && COMMON+=(--tune --tune-seconds "$TUNE_SECONDS")
echo "settings: ${COMMON[*]} (tower defaults otherwise: dim 64, hidden 128, batch 256, adam)"

# run NAME NOTE recalld-eval-flags...
run() {
    local name=$1 note=$2
    shift 2
    local out="$tmp/$name.json" t0=$SECONDS
    echo
    echo "== $name: recalld-eval $* ${COMMON[*]}"
    "$B/recalld-eval" "$@" "${COMMON[@]}" >"$out"
    "$PY" - "$out" "$note" $((SECONDS - t0)) <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
d, m = j["dataset"], j["methods"]
uf = d.get("user_features", {})
print(f"   {d['events']} events, {d['users']} users, {d['items']} items, {d['sessions']} sessions;"
      f" users with device {uf.get('users_with_device', 0)}, with tags {uf.get('users_with_tags', 0)}"
      f" ({sys.argv[3]} s)")
cols = ["hr@10", "hr@20", "hr@50", "mrr@50", "coverage@50", "avg_position", "auc"]
print(f"   {'row':<18}" + "".join(f"{c:>9}" for c in
      ["hr@10", "hr@20", "hr@50", "mrr@50", "cov@50", "avg_pos", "auc"]) + f"{'preds':>8}{'secs':>7}")
for k in j["ablation"]:
    v = m[k]
    print(f"   {k:<18}" + "".join(f"{v[c]:9.2f}" if c == "avg_position" else f"{v[c]:9.4f}"
                                for c in cols) + f"{v['predictions']:8d}{v['seconds']:7.1f}")
for k in j["ablation"]:
    t = m[k].get("tower")
    if t:
        print(f"   {k}: features {t['features']}, {t['epochs']} epochs, {t['examples']} examples,"
              f" loss {t['first_loss']:.3f} -> {t['loss']:.3f}")
# Per slice (recalld-eval's "slices": history length, profile or not): where
# each row wins. One line per slice, hr@50 / mrr@50 / auc per row.
rows = j["ablation"]
slices = list(m[rows[0]].get("slices", {}))
if slices:
    print(f"   {'slice':<17}{'preds':>6}" + "".join(f"  {k[:22]:>22}" for k in rows))
    print(f"   {'':<17}{'':>6}" + "".join(f"  {'hr@50 mrr@50   auc':>22}" for k in rows))
    for sl in slices:
        n = m[rows[0]]["slices"][sl]["predictions"]
        cells = "".join(f"  {'-':>22}" if not n else
                        "  {:>22}".format("{:.4f} {:.4f} {:.4f}".format(
                            *(m[k]["slices"][sl][c] for c in ("hr@50", "mrr@50", "auc"))))
                        for k in rows)
        print(f"   {sl:<17}{n:6d}{cells}")
if sys.argv[2]:
    print(f"   note: {sys.argv[2]}")
PY
}

gen() {
    "$B/recalld-gen" --seed 11 --events "$GEN_EVENTS" --users 10000 --items 5000 "$@"
}

gen --out "$tmp/gen.jsonl"
run generated "" --input "$tmp/gen.jsonl"
gen --drift 0.3 --out "$tmp/gen-drift.jsonl"
run generated-drift "" --input "$tmp/gen-drift.jsonl"

ML=$DATA/movielens-100k
if [ -r "$ML/u.data" ] && [ -r "$ML/u.user" ]; then
    # u.user: id|age|gender|occupation|zip -> a headered TSV (zip dropped)
    awk -F'|' 'BEGIN { OFS = "\t"; print "user", "age", "gender", "occupation" }
               NF >= 4 { print $1, $2, $3, $4 }' "$ML/u.user" >"$tmp/ml-users.tsv"
    run movielens-100k "" --input "$ML/u.data" --format tsv --user 0 --item 1 --time 3 \
        --time-unit s --item-cates "$ML/u.item" --item-cates-format movielens \
        --user-features "$tmp/ml-users.tsv"
else
    echo "== movielens-100k: $ML/u.data or u.user absent: skipped"
fi

DG=$DATA/diginetica
if [ -r "$DG/sample_train-item-views.csv" ]; then
    cates=()
    [ -r "$DG/product-categories.csv" ] && cates=(--item-cates "$DG/product-categories.csv")
    run diginetica "no user features and no user ids here: only sgns vs two_tower-nofeat is meaningful" \
        --input "$DG/sample_train-item-views.csv" --sep ';' --header --session session_id \
        --item item_id --time eventdate --time-unit iso --time-offset timeframe "${cates[@]}"
else
    echo "== diginetica: $DG/sample_train-item-views.csv absent: skipped"
fi
