#!/usr/bin/env bash
# multi_category recall with its category searches on one thread each
# (recall.multi_category_parallel true) against one after another on the
# worker (false): two daemons fed by the same recalld-broker (two consumer
# groups, same clicks), measured in alternating rounds on the same machine.
#   bench/mc_parallel.sh [ITEMS] [EVENTS] [ROUNDS]   (defaults 200000 800000 6)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init mc
ITEMS=${1:-200000}
EVENTS=${2:-800000}
ROUNDS=${3:-6}
broker_start "$tmp" 128 fifo
for p in true false; do
    cat >"$tmp/$p.json" <<JSON
{"kafka": {"brokers": "$bs", "group": "mc-$p"},
 "recall": {"multi_category_parallel": $p},
 "sessions": {"max_users": $((ITEMS + ITEMS / 4))},
 "log": {"level": "warn", "stats_interval_ms": 0}}
JSON
    "$B/recalld" --config "$tmp/$p.json" --socket "$tmp/$p.sock" 2>"$tmp/$p.log" &
    pids+=($!)
done
applied() { stats "$tmp/$1.sock" | field '["events"]["applied"]'; }
for p in true false; do
    for _ in $(seq 300); do "$B/recallctl" --socket "$tmp/$p.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "== machine: $(nproc) cores, $(uptime | sed 's/.*load/load/')"
"$B/recalld-gen" --seed 3 --users "$ITEMS" --items "$ITEMS" --cities 20 --cates 10 \
    --communities $((ITEMS / 200)) --zipf 0.6 --events "$EVENTS" --rate 60000 --brokers "$bs" >/dev/null 2>&1
for p in true false; do
    for _ in $(seq 2400); do [ "$(applied $p)" -ge "$EVENTS" ] && break; sleep 0.5; done
done
for r in $(seq "$ROUNDS"); do
    for p in true false; do
        echo "$p $("$B/bench_recall" --socket "$tmp/$p.sock" --users "$ITEMS" --requests 2000 --quality 0 --mode multi_category | head -n1)"
    done
done | tee "$tmp/ab.txt"
for p in true false; do
    grep "^$p " "$tmp/ab.txt" | sed -E 's/.* p50 ([0-9]+) us .* p99 ([0-9]+) us .*/\1 \2/' |
        python3 -c "import sys,statistics as s; v=[l.split() for l in sys.stdin]; print('multi_category_parallel=$p: median over %d rounds of p50 %d us, p99 %d us' % (len(v), s.median(int(a) for a,_ in v), s.median(int(b) for _,b in v)))"
done
echo "== machine after: $(uptime | sed 's/.*load/load/')"
