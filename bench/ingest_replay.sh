#!/usr/bin/env bash
# Backlog drain with replay off and on, side by side (issue 14: replay only in
# idle trainer time must not slow a catch-up).
#   bench/ingest_replay.sh [EVENTS] [ITEMS] [ROUNDS] [RATIO]
# recalld-broker (own process, 64 partitions) is filled once with EVENTS
# generated clicks over ITEMS items. Then, ROUNDS times, two fresh recalld
# processes drain the whole log one after the other (each with its own
# consumer group, from the start of the log): train.replay_ratio 0 and RATIO
# (default 50), the order alternating from round to round. events/s = events
# applied / time from the first applied event to the last. After each drain
# recalld stays up 5 s with no new events: the replay-on daemon must replay
# then (training.replay.replayed grows). The ratio on/off is printed per
# round and for the sums, of events/s and of events per CPU second of recalld
# (utime + stime from /proc over the same span): on a shared machine only the
# ratios mean anything, and the CPU one is the steadier.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init ingest-replay
N=${1:-1000000}
ITEMS=${2:-300000}
ROUNDS=${3:-1}
RATIO=${4:-50}
gen=(--seed 7 --users 200000 --items "$ITEMS" --cities 20 --cates 10 --communities 2000)

echo "== $N events over $ITEMS items pre-loaded in recalld-broker (64 partitions)"
broker_start "$tmp" 64
# ratio A B: A/B to 3 places, or "n/a" when B is 0 (a log drained before the
# first look: EVENTS too small to measure)
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(round(a / b, 3) if b else 'n/a')" "$1" "$2"; }
"$B/recalld-gen" "${gen[@]}" --events "$N" --brokers "$bs" >/dev/null 2>"$tmp/gen.err"

# drain NAME RATIO: prints "events/s events/cpu_s replayed skipped yields items replayed_after_idle"
drain() {
    local name=$1 ratio=$2 sock="$tmp/$1.sock"
    echo "{\"train\":{\"replay_ratio\":$ratio}}" >"$tmp/$name.json"
    "$B/recalld" --config "$tmp/$name.json" --brokers "$bs" --group "$name" --socket "$sock" \
        --metrics-port 0 --log-level warn 2>"$tmp/$name.log" &
    local pid=$!
    pids+=($pid)
    local rate per_cpu cpu s r sk y it
    # one connection, no program started per poll (bench/ingest_watch.py)
    read -r rate cpu _ < <("$PY" "$here/bench/ingest_watch.py" "$sock" "$N" "$pid" "$bpid" 0.05 ||
        echo fail)
    [ "$rate" != fail ] || exit 1
    per_cpu=$(python3 -c "print(round(1e6 / $cpu))")
    s=$(stats "$sock")
    r=$(echo "$s" | field '["training"]["replay"]["replayed"]')
    sk=$(echo "$s" | field '["training"]["replay"]["skipped"]')
    y=$(echo "$s" | field '["training"]["replay"]["yields"]')
    it=$(echo "$s" | field '["items"]')
    sleep 5
    local r2
    r2=$(stats "$sock" | field '["training"]["replay"]["replayed"]')
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$rate $per_cpu $r $sk $y $it $r2"
}

sum_off=0 sum_on=0 cpu_off=0 cpu_on=0
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
    for m in $order; do
        if [ "$m" = off ]; then
            read -r off coff r sk y it r2 < <(drain "off$round" 0)
            echo "   round $round replay off: $off events/s, $coff per CPU s ($it items)"
        else
            read -r on con r sk y it r2 < <(drain "on$round" "$RATIO")
            echo "   round $round replay $RATIO:  $on events/s, $con per CPU s ($it items); during the" \
                "drain: $r replayed, $sk given up, $y yields; 5 s idle after it: $r2 replayed"
        fi
    done
    echo "   round $round on/off: events/s $(ratio "$on" "$off")x," \
        "per CPU s $(ratio "$con" "$coff")x"
    sum_off=$((sum_off + off))
    sum_on=$((sum_on + on))
    cpu_off=$((cpu_off + coff))
    cpu_on=$((cpu_on + con))
done
echo "== replay $RATIO / replay off over $ROUNDS round(s): events/s" \
    "$(ratio "$sum_on" "$sum_off")x, per CPU s" \
    "$(ratio "$cpu_on" "$cpu_off")x"
