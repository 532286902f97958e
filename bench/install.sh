#!/usr/bin/env bash
# install_model at scale: a daily rebuild installed into a serving daemon.
# The daemon learns ITEMS items from EVENTS clicks through recalld-broker and
# checkpoints them; recalld-train rebuilds the model from the same clicks (the
# generator's log, written to a file) starting from that checkpoint (--init:
# docs/OPERATIONS.md "A daily rebuild that goes on from the live table"); then
# `recallctl install-model` installs it while a client keeps asking for
# recalls. Printed side by side: socket
# recall p50/p99 quiet before the install (the reference), during it (from
# the request until the index has re-indexed every installed row) and quiet
# after; the install's rows/s and its phases (load, install on the trainer,
# re-index); recall@50 of the index against exact search before and after.
#   bench/install.sh [ITEMS] [EVENTS]     (defaults 1000000, 4000000)
# Environment: REBUILD_EVENTS (clicks of the rebuild's log, default EVENTS),
# REBUILD_EPOCHS (recalld-train --epochs, default its own: 5), INIT=0 (the
# rebuild starts from random vectors: a table trained elsewhere),
# REQUESTS (requests of the quiet references, default 20000), TOWER=1 (serve
# a two-tower model too: its index re-vectorises the installed rows),
# RETRAIN_FIT (index.retrain_fit, default the daemon's; 0 = off).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init install
ITEMS=${1:-1000000}
EVENTS=${2:-4000000}
USERS=$ITEMS
REQUESTS=${REQUESTS:-20000}
TOWER=${TOWER:-0}
stat() { stats "$tmp/r.sock"; }
rss() { echo "$(( $(ps -o rss= -p "$rpid") / 1024 )) MiB"; }
gen=(--seed 3 --users "$USERS" --items "$ITEMS" --cities 20 --cates 10
     --communities $((ITEMS / 200)) --zipf 0.6)
bench() { "$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" "$@"; }
# the index's centroid fit and retrains: "fit F, retrains R (by fit RF)"
fitline() {
    stat | python3 -c 'import json,sys; i=json.load(sys.stdin)["index"]; print("fit %.2f, retrains %d (by fit %d), ivf partitions %d" % (i["fit"], i["retrains"], i["retrains_fit"], i["ivf_partitions"]))'
}
# the latency line's p50 and p99, in us
p50p99() { sed -nE 's/^latency .* p50 ([0-9]+) us .* p99 ([0-9]+) us .*/\1 \2/p' "$1"; }
# waits until the index (and the tower index) have nothing pending
wait_indexed() {
    local s p tp
    for _ in $(seq 3600); do
        s=$(stat); p=$(echo "$s" | field '["index"]["pending"]')
        tp=0; [ "$TOWER" = 1 ] && tp=$(echo "$s" | field '["tower"]["index"]["pending"]')
        [ "$p" = 0 ] && [ "$tp" = 0 ] && return 0
        sleep 0.2
    done
    echo "index still pending after 720 s" >&2; exit 1
}

mkdir "$tmp/models" "$tmp/data"
broker_start "$tmp" 128
cat >"$tmp/r.json" <<JSON
{"kafka": {"brokers": "$bs"},
 "model": {"dir": "$tmp/models"},
 "checkpoint": {"interval_ms": 15000},
 "index": {"retrain_fit": ${RETRAIN_FIT:-0.5}},
 "sessions": {"max_users": $((USERS + USERS / 4))},
 "log": {"level": "warn", "stats_interval_ms": 0}}
JSON
model=()
if [ "$TOWER" = 1 ]; then
    "$B/bench_tower_model" "$tmp/m.tower" 64 64 50 1 >/dev/null
    model=(--model "$tmp/m.tower")
fi
"$B/recalld" --config "$tmp/r.json" --socket "$tmp/r.sock" --data-dir "$tmp/data" "${model[@]}" \
    2>"$tmp/r.log" &
rpid=$!
pids+=($rpid)
for _ in $(seq 300); do "$B/recallctl" --socket "$tmp/r.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
echo "== machine: $(nproc) cores, $(uptime | sed 's/.*load/load/'); TOWER=$TOWER INIT=${INIT:-1} REBUILD_EPOCHS=${REBUILD_EPOCHS:-5} RETRAIN_FIT=${RETRAIN_FIT:-0.5}"
echo "== loading: $EVENTS events over $ITEMS items, $USERS users"
t0=$(date +%s)
"$B/recalld-gen" "${gen[@]}" --events "$EVENTS" --rate 60000 --brokers "$bs" >/dev/null 2>"$tmp/gen.err"
for _ in $(seq 2400); do
    a=$(stat | field '["events"]["applied"]'); [ "$a" -ge "$EVENTS" ] && break; sleep 0.5
done
wait_indexed
echo "   loaded in $(( $(date +%s) - t0 )) s: items $(stat | field '["items"]'), rss $(rss); index $(fitline)"

# a checkpoint taken after the last click: the rebuild's --init
ck_count() { stat | python3 -c 'import json,sys; c=json.load(sys.stdin)["checkpoint"]; print(-1 if c["in_progress"] else c["written"] + c["unchanged"])'; }
init=()
if [ "${INIT:-1}" = 1 ]; then
    t0=$(date +%s)
    while c0=$(ck_count); [ "$c0" -lt 0 ]; do sleep 0.5; done
    while c=$(ck_count); [ "$c" -le "$c0" ]; do sleep 0.5; done
    ck=$(ls "$tmp"/data/checkpoint-*.rcc | tail -n1)
    init=(--init "$ck")
    echo "== checkpoint after the last click in $(( $(date +%s) - t0 )) s: $(ls -l "$ck" | awk '{printf "%.0f MB", $5 / 1e6}')"
fi
echo "== the rebuild: recalld-train ${init[*]:+--init CHECKPOINT }--epochs ${REBUILD_EPOCHS:-5} on ${REBUILD_EVENTS:-$EVENTS} clicks of the same generator"
t0=$(date +%s)
"$B/recalld-gen" "${gen[@]}" --events "${REBUILD_EVENTS:-$EVENTS}" --out "$tmp/log.jsonl" 2>/dev/null
"$B/recalld-train" --input "$tmp/log.jsonl" "${init[@]}" --output "$tmp/models/rebuilt.rcm" --epochs "${REBUILD_EPOCHS:-5}" \
    --threads "$(nproc)" --json >"$tmp/train.json" 2>"$tmp/train.log"
rm -f "$tmp/log.jsonl"
echo "   trained in $(( $(date +%s) - t0 )) s: $(ls -l "$tmp/models/rebuilt.rcm" | awk '{printf "%.0f MB", $5 / 1e6}'); $(grep -ho "[0-9]* of [0-9]* items started from" "$tmp/train.log" | head -n1)"
wait_indexed

echo "== recall (default scope), quiet before the install: the reference"
bench --requests "$REQUESTS" --quality 300 | tee "$tmp/before.txt" | sed 's/^/   /'
ix0=$(stat | field '["index"]["reindexed"]')

echo "== recall while installing: from the request until every installed row is re-indexed"
bench --requests 5000000 --quality 0 --after "$tmp/start" --until "$tmp/done" >"$tmp/during.txt" &
bpid_=$!
sleep 0.5 # connected
touch "$tmp/start"
ti0=$(date +%s.%N)
"$B/recallctl" --socket "$tmp/r.sock" --raw install-model rebuilt.rcm >"$tmp/reply.json"
ti1=$(date +%s.%N)
wait_indexed
ti2=$(date +%s.%N)
touch "$tmp/done"
wait "$bpid_"
sed 's/^/   /' "$tmp/during.txt"
ix1=$(stat | field '["index"]["reindexed"]')
python3 - "$tmp/reply.json" "$ti0" "$ti1" "$ti2" "$ix0" "$ix1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t0, t1, t2 = map(float, sys.argv[2:5])
if not r.get("ok"):
    sys.exit("install_model failed: %s" % json.dumps(r))
rows = r["replaced"] + r["created"]
print("   reply: rows %d (replaced %d, created %d, refused %d), load %.0f ms, install %.0f ms on the trainer"
      % (r["rows"], r["replaced"], r["created"], r["refused"], r["load_ms"], r["install_ms"]))
print("   %.0f rows/s installed (trainer); request -> reply %.2f s; reply -> all re-indexed %.2f s (%d rows re-indexed)"
      % (rows / max(r["install_ms"] / 1e3, 1e-9), t1 - t0, t2 - t1, int(sys.argv[6]) - int(sys.argv[5])))
print("   request -> every installed row searchable: %.2f s, %.0f rows/s" % (t2 - t0, rows / (t2 - t0)))
PY

echo "   index after the re-index: $(fitline)"
# index.retrain_fit: partitions whose centroids no longer fit the installed
# rows are retrained in the background, one at a time
FIT_WAIT=${FIT_WAIT:-600}
tf0=$(date +%s)
last=""
while [ $(( $(date +%s) - tf0 )) -lt "$FIT_WAIT" ]; do
    now=$(fitline)
    [ "$now" = "$last" ] && [ $(( $(date +%s) - tf0 )) -ge 10 ] && break # nothing changed in 5 s
    last=$now
    sleep 5
done
echo "   index $(( $(date +%s) - tf0 )) s later (settled, or FIT_WAIT=$FIT_WAIT s): $last"
echo "== recall (default scope), quiet after the install"
bench --requests "$REQUESTS" --quality 300 | tee "$tmp/after.txt" | sed 's/^/   /'
read -r b50 b99 < <(p50p99 "$tmp/before.txt")
read -r d50 d99 < <(p50p99 "$tmp/during.txt")
read -r a50 a99 < <(p50p99 "$tmp/after.txt")
echo "== side by side (us; ratio to the quiet reference before the install)"
python3 - "$b50" "$b99" "$d50" "$d99" "$a50" "$a99" <<'PY'
import sys
b50, b99, d50, d99, a50, a99 = map(int, sys.argv[1:])
print("   %-28s %8s %8s %8s %8s" % ("", "p50", "ratio", "p99", "ratio"))
for name, x, y in (("before (reference)", b50, b99), ("during the install", d50, d99), ("after", a50, a99)):
    print("   %-28s %8d %7.2fx %8d %7.2fx" % (name, x, x / b50, y, y / b99))
PY
echo "   rss after: $(rss); machine after: $(uptime | sed 's/.*load/load/')"
