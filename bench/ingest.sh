#!/usr/bin/env bash
# Ingest throughput and freshness through Kafka, with gensim's online word2vec
# on the same clicks as the reference (when Debian's python3-gensim is there).
#   bench/ingest.sh [EVENTS] [RATE_FOR_FRESHNESS]
# 1. recalld-broker (mock Kafka, own process, 64 partitions) is filled with
#    EVENTS generated clicks; then recalld (dim 64, window 5, 5 negatives)
#    consumes them: events/s = applied / time from first to last event.
# 2. freshness: recalld on its embedded Kafka while recalld-gen produces at
#    RATE events/s (below saturation): batch consumed -> trained+searchable.
# 3. gensim: the same clicks as sessions, fed in chunks of 10k clicks through
#    build_vocab(update=True) + train (its online mode), 1 worker and 2 workers.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
B=${RC_BUILD_DIR:-$here/build}
N=${1:-1000000}
RATE=${2:-50000}
tmp=$(mktemp -d /tmp/rc-bench-ingest.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
gen=(--seed 7 --users 100000 --items 100000 --cities 20 --cates 10 --communities 1000)
stat() { "$B/recallctl" --socket "$1" --raw stats; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }

echo "== 1. ingest: $N events pre-loaded in recalld-broker (64 partitions)"
"$B/recalld-broker" --partitions 64 >"$tmp/broker.out" 2>"$tmp/broker.err" &
pids+=($!)
for _ in $(seq 50); do [ -s "$tmp/broker.out" ] && break; sleep 0.1; done
bs=$(head -1 "$tmp/broker.out")
"$B/recalld-gen" "${gen[@]}" --events "$N" --brokers "$bs" >/dev/null 2>"$tmp/gen.err"
"$B/recalld-gen" "${gen[@]}" --events "$N" --out "$tmp/clicks.jsonl" 2>/dev/null
"$B/recalld" --brokers "$bs" --socket "$tmp/a.sock" --metrics-port 0 --log-level warn 2>"$tmp/a.log" &
pids+=($!)
t_first= ; a_first=0
while :; do
    s=$(stat "$tmp/a.sock" 2>/dev/null) || { sleep 0.05; continue; }
    a=$(echo "$s" | field '["events"]["applied"]')
    now=$(date +%s.%N)
    if [ -z "$t_first" ] && [ "$a" -gt 0 ]; then t_first=$now; a_first=$a; fi
    [ "$a" -ge "$N" ] && break
    sleep 0.02
done
secs=$(python3 -c "print($now - $t_first)")
rate=$(python3 -c "print(round(($a - $a_first) / ($now - $t_first)))")
echo "$s" >"$tmp/ingest-stats.json"
echo "   recalld: $((a - a_first)) events in ${secs}s = $rate events/s"
echo "   $(echo "$s" | field '["training"]') "
echo "   rss $(echo "$s" | field '["memory"]["rss_bytes"]//2**20') MiB, index $(echo "$s" | field '["index"]["size"]') vectors"

echo "== 2. freshness at $RATE events/s (embedded Kafka, producer paced)"
"$B/recalld" --embedded-kafka --partitions 64 --socket "$tmp/b.sock" --metrics-port 0 --log-level warn 2>"$tmp/b.log" &
pids+=($!)
for _ in $(seq 100); do "$B/recallctl" --socket "$tmp/b.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
bsb=$(stat "$tmp/b.sock" | field '["kafka"]["bootstrap"]')
"$B/recalld-gen" "${gen[@]}" --events $((RATE * 10)) --rate "$RATE" --brokers "$bsb" >/dev/null 2>/dev/null
sleep 1
fr=$(stat "$tmp/b.sock" | field '["freshness_ms"]')
echo "   freshness (ms): $fr"

if /usr/bin/python3 -c 'import gensim' 2>/dev/null; then
    echo "== 3. gensim online reference on the same clicks"
    for w in 1 2; do
        g=$(/usr/bin/python3 "$here/bench/gensim_online.py" "$tmp/clicks.jsonl" "$w")
        echo "   gensim workers=$w: $g events/s; recalld/gensim = $(python3 -c "print(round($rate / $g, 2))")x"
    done
else
    echo "== 3. gensim reference skipped: /usr/bin/python3 cannot import gensim (apt-get install python3-gensim)"
fi
