#!/usr/bin/env bash
# Issue 11's six abuse probes against a loaded daemon, measured.
#   bench/abuse.sh [ITEMS] [PROBES]     (defaults 1000000, "1 2 3 4 5 6")
# Probe 0, a quiet run with the same watchers, always runs first: the latencies
# of the others are also printed as ratios to it (the machine's load cancels).
# recalld-broker (the mock cluster in its own process, so its log is not in
# recalld's RSS) + recalld loaded by recalld-gen with ~ITEMS items and as many
# users; then each probe (bench/abuse_probe.py) while a liveness prober and a
# good client measure what users see. Per probe: RSS before/after, health
# p99 during, good-client recall p99 during, and what was refused or counted.
# The probes of the socket side (3, 4, 5) measure whatever this build does.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init abuse
ITEMS=${1:-1000000}
PROBES="0 ${2:-1 2 3 4 5 6}" # 0: the quiet reference run the others are compared with
EVENTS=$((ITEMS * 4))
USERS=$ITEMS
# Room for probe 1's 70,000 new items; probe 6 floods past it.
HEAD=$((ITEMS / 10 + 70000))
PORT=${ABUSE_METRICS_PORT:-$((20000 + RANDOM % 20000))}
broker_start "$tmp" 128 fifo

cat >"$tmp/r.json" <<JSON
{"kafka": {"brokers": "$bs", "dlq_file": "$tmp/dlq.jsonl", "dlq_file_max_mb": 16},
 "model": {"max_items": $((ITEMS + HEAD))},
 "sessions": {"max_users": $((USERS + USERS / 10))},
 "metrics": {"port": $PORT},
 "log": {"level": "warn", "stats_interval_ms": 0}}
JSON
"$B/recalld" --config "$tmp/r.json" --socket "$tmp/r.sock" 2>"$tmp/r.log" &
dpid=$!
pids+=($dpid)
for _ in $(seq 600); do "$B/recallctl" --socket "$tmp/r.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
"$B/recallctl" --socket "$tmp/r.sock" health >/dev/null

echo "== loading: $EVENTS events over $ITEMS items, $USERS users (recalld-broker, 128 partitions)"
t0=$(date +%s)
"$B/recalld-gen" --seed 3 --users "$USERS" --items "$ITEMS" --cities 20 --cates 10 \
    --communities $((ITEMS / 200 + 1)) --zipf 0.6 --events "$EVENTS" --rate 60000 \
    --brokers "$bs" >/dev/null 2>"$tmp/gen.err"
for _ in $(seq 1200); do
    a=$(stats "$tmp/r.sock" | field '["events"]["applied"]'); [ "$a" -ge "$EVENTS" ] && break; sleep 0.5
done
s=$(stats "$tmp/r.sock")
items=$(echo "$s" | field '["items"]'); users=$(echo "$s" | field '["users"]["active"]')
echo "   loaded in $(( $(date +%s) - t0 )) s: items $items, users $users"
echo "$s" | python3 -c '
import json, sys
s = json.load(sys.stdin); m = s["memory"]; i = max(1, s["items"]); u = max(1, s["users"]["active"])
print("   memory: RSS %.0f MB; table %.0f B/item, index %.0f B/item, sessions %.0f B/user, "
      "profiles %.0f B/user; RSS/item %.0f B" % (m["rss_bytes"] / 2**20, m["table_bytes"] / i,
      m["index_bytes"] / i, m["session_bytes"] / u, s.get("profiles", {}).get("bytes", 0) / u,
      m["rss_bytes"] / i))'

for p in $PROBES; do
    nice python3 "$here/bench/abuse_probe.py" --sock "$tmp/r.sock" --pid "$dpid" --probe "$p" \
        --users "$USERS" --bootstrap "$bs" --tmp "$tmp" --dlq "$tmp/dlq.jsonl" \
        --metrics-port "$PORT" --sparse-gb "${ABUSE_SPARSE_GB:-1}" \
        --max-items $((ITEMS + HEAD)) --flood-users $((USERS / 2)) --flood-bad "${ABUSE_BAD:-5000}" ||
        echo "   probe $p: the measuring script failed (exit $?)"
done
echo "== health at the end"
"$B/recallctl" --socket "$tmp/r.sock" --timeout 5000 --raw health || true
echo "== WARN and ERROR messages in the daemon's log (count, message)"
grep 'level=warn\|level=error' "$tmp/r.log" | grep -o 'msg="[^"]*"' | sort | uniq -c | sort -rn || true
