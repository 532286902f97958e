#!/usr/bin/env bash
# Socket recall latency of "mode":"two_tower" next to the avg mode, same
# daemon, same run, at ~1M items while ingesting. The tower model has random
# weights (bench_tower_model): serving cost does not depend on their values.
# It is loaded at start (--model), so every item the stream creates gets its
# item-tower vector on the trainer at creation (the cold-start path), and
# drifted w2v vectors are re-checked as in production.
#   bench/tower_recall.sh [ITEMS] [EVENTS]     (defaults 1000000, 4000000)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
ITEMS=${1:-1000000}
EVENTS=${2:-4000000}
USERS=$ITEMS
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }
stat() { "$B/recallctl" --socket "$tmp/r.sock" --raw stats; }
gen=(--seed 3 --users "$USERS" --items "$ITEMS" --cities 20 --cates 10
     --communities $((ITEMS / 200)) --zipf 0.6)

"$B/bench_tower_model" "$tmp/m.tower" 64 64 50 1
cat >"$tmp/r.json" <<JSON
{"kafka": {"embedded": true, "embedded_partitions": 128},
 "sessions": {"max_users": $((USERS + USERS / 4)), "history": 50},
 "log": {"level": "warn", "stats_interval_ms": 0}}
JSON
"$B/recalld" --config "$tmp/r.json" --socket "$tmp/r.sock" --model "$tmp/m.tower" 2>"$tmp/r.log" &
pids+=($!)
for _ in $(seq 200); do "$B/recallctl" --socket "$tmp/r.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
bs=$(stat | field '["kafka"]["bootstrap"]')
echo "== loading: $EVENTS events over $ITEMS items, $USERS users"
t0=$(date +%s)
"$B/recalld-gen" "${gen[@]}" --events "$EVENTS" --rate 60000 --brokers "$bs" >/dev/null 2>"$tmp/gen.err"
for _ in $(seq 900); do
    a=$(stat | field '["events"]["applied"]'); [ "$a" -ge "$EVENTS" ] && break; sleep 0.5
done
s=$(stat)
echo "   loaded in $(( $(date +%s) - t0 )) s: items $(echo "$s" | field '["items"]'), users $(echo "$s" | field '["users"]["active"]')"
echo "   tower: $(echo "$s" | python3 -c 'import json,sys; t=json.load(sys.stdin)["tower"]; print({k: t[k] for k in ("items","params","dim","checked","recomputed","refresh_pending","bytes")}, "index", {k: t["index"][k] for k in ("size","partitions","ivf_partitions","pending","staleness_ms","new_item_p50_ms","new_item_p99_ms")})')"
echo "   memory: $(echo "$s" | field '["memory"]') profiles $(echo "$s" | field '["profiles"]')"
echo "== latency while ingesting (recalld-gen --rate 20000 in the background)"
"$B/recalld-gen" "${gen[@]}" --seed 4 --events 2000000 --rate 20000 --brokers "$bs" >/dev/null 2>&1 &
pids+=($!)
sleep 2
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 20000 --quality 0 --mode avg
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 20000 --quality 0 --mode two_tower
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 5000 --quality 0 --mode two_tower --city c3
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 5000 --quality 0 --mode two_tower --city '*'
s=$(stat)
echo "   server-side two_tower: $(echo "$s" | field '["two_tower"]')"
echo "   tower index while ingesting: $(echo "$s" | python3 -c 'import json,sys; t=json.load(sys.stdin)["tower"]; print({k: t["index"][k] for k in ("size","pending","staleness_ms","new_item_p50_ms","new_item_p99_ms")}, "refresh_pending", t["refresh_pending"], "recomputed", t["recomputed"])')"
echo "== quiet (the generator stopped; nothing ingesting)"
kill "${pids[-1]}" 2>/dev/null || true
sleep 3
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 20000 --quality 0 --mode avg
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 20000 --quality 0 --mode two_tower
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 5000 --quality 0 --mode two_tower --city c3
echo "== reload_model of the same size while ingesting"
"$B/recalld-gen" "${gen[@]}" --seed 5 --events 2000000 --rate 20000 --brokers "$bs" >/dev/null 2>&1 &
pids+=($!)
sleep 1
"$B/bench_tower_model" "$tmp/m2.tower" 64 64 50 2 >/dev/null
/usr/bin/time -f "   reload wall %e s" "$B/recallctl" --socket "$tmp/r.sock" reload-model "$tmp/m2.tower"
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 5000 --quality 0 --mode two_tower
