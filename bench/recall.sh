#!/usr/bin/env bash
# Socket recall latency at ~1M items while ingesting, recall@50 against exact
# search (brute force through the same socket), and memory at 1M items x d64
# with ~1M active users.
#   bench/recall.sh [ITEMS] [EVENTS]     (defaults 1000000, 4000000)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
ITEMS=${1:-1000000}
EVENTS=${2:-4000000}
USERS=$ITEMS
tmp=$(mktemp -d /tmp/rc-bench-recall.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }
stat() { "$B/recallctl" --socket "$tmp/r.sock" --raw stats; }
gen=(--seed 3 --users "$USERS" --items "$ITEMS" --cities 20 --cates 10
     --communities $((ITEMS / 200)) --zipf 0.6)

cat >"$tmp/r.json" <<JSON
{"kafka": {"embedded": true, "embedded_partitions": 128},
 "index": {"drift": ${DRIFT:-0.01}, "overfetch": ${OVERFETCH:-3.0}},
 "sessions": {"max_users": $((USERS + USERS / 4))},
 "log": {"level": "warn", "stats_interval_ms": 0}}
JSON
"$B/recalld" --config "$tmp/r.json" --socket "$tmp/r.sock" 2>"$tmp/r.log" &
pids+=($!)
for _ in $(seq 200); do "$B/recallctl" --socket "$tmp/r.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
bs=$(stat | field '["kafka"]["bootstrap"]')
echo "== loading: $EVENTS events over $ITEMS items, $USERS users (paced so the mock's retention is never exceeded)"
t0=$(date +%s)
"$B/recalld-gen" "${gen[@]}" --events "$EVENTS" --rate 60000 --brokers "$bs" >/dev/null 2>"$tmp/gen.err"
for _ in $(seq 600); do
    a=$(stat | field '["events"]["applied"]'); [ "$a" -ge "$EVENTS" ] && break; sleep 0.5
done
s=$(stat)
echo "   loaded in $(( $(date +%s) - t0 )) s: items $(echo "$s" | field '["items"]'), users $(echo "$s" | field '["users"]["active"]'), index $(echo "$s" | field '["index"]')"
echo "   memory: $(echo "$s" | field '["memory"]')"
echo "== latency while ingesting (recalld-gen --rate 20000 in the background)"
"$B/recalld-gen" "${gen[@]}" --seed 4 --events 2000000 --rate 20000 --brokers "$bs" >/dev/null 2>&1 &
pids+=($!)
sleep 2
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 20000 --quality 0
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 5000 --quality 0 --city c3
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 5000 --quality 0 --city '*'
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 5000 --quality 0 --mode multi_category
kill "${pids[-1]}" 2>/dev/null || true
# Quiet: wait until the backlog is applied and the index has nothing pending.
prev=-1
for _ in $(seq 100); do
    s=$(stat); a=$(echo "$s" | field '["events"]["applied"]'); p=$(echo "$s" | field '["index"]["pending"]')
    [ "$a" = "$prev" ] && [ "$p" = 0 ] && break; prev=$a; sleep 0.5
done
echo "== quality: recall@50 of the index against exact search (quiet)"
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 1000 --quality 300
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 1000 --quality 300 --city '*'
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 1000 --quality 300 --city c3
s=$(stat)
echo "   memory after: $(echo "$s" | field '["memory"]')"
