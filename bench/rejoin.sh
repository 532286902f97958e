#!/usr/bin/env bash
# Rejoin after crashes: how long a restarted recalld (same --data-dir) waits
# for its partitions after it was killed (-9) KILLS times within seconds while
# a producer runs, and whether every event then ends in the model once.
#   bench/rejoin.sh [KILLS] [EVENTS]
# Two runs side by side in this script, on recalld-broker (librdkafka's mock
# cluster in its own process, 4 partitions):
#   recalld   - recalld's defaults (session.timeout.ms 6 s)
#   reference - librdkafka's default session.timeout.ms (45 s), what recalld
#               used before: the group waits for every dead member's session.
# The mock ignores static membership (group.instance.id): on a real broker a
# restarted static member gets its partitions back without waiting at all.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init rejoin KILL
KILLS=${1:-5}
N=${2:-20000}

# run NAME KAFKA_CONFIG_JSON -> prints "rejoin_s apply_s applied"
run() {
    local name=$1 kconf=$2 d=$tmp/$1
    mkdir -p "$d"
    broker_start "$d" 4
    printf '{"checkpoint":{"interval_ms":300},"kafka":{"config":%s}}\n' "$kconf" >"$d/conf.json"
    local args=(--brokers "$bs" --group rejoin --data-dir "$d/data" --config "$d/conf.json"
                --socket "$d/s.sock" --metrics-port 0 --log-level warn)
    "$B/recalld-gen" --seed 5 --events "$N" --rate 2000 --brokers "$bs" >/dev/null 2>"$d/gen.err" &
    local gpid=$!
    pids+=($gpid)
    local pid
    for _ in $(seq "$KILLS"); do
        "$B/recalld" "${args[@]}" 2>>"$d/recalld.log" &
        pid=$!
        for _ in $(seq 200); do stats "$d/s.sock" >/dev/null && break; sleep 0.05; done
        sleep 0.5
        kill -9 "$pid"; wait "$pid" 2>/dev/null || true
    done
    local t0 t1 t2 s
    t0=$(date +%s.%N)
    "$B/recalld" "${args[@]}" 2>>"$d/recalld.log" &
    pid=$!
    pids+=($pid)
    while :; do
        s=$(stats "$d/s.sock") && [ "$(echo "$s" | field '["kafka"]["assigned"]')" -eq 4 ] && break
        sleep 0.05
    done
    t1=$(date +%s.%N)
    wait "$gpid"
    while :; do
        s=$(stats "$d/s.sock")
        [ "$(echo "$s" | field '["events"]["applied"]')" -ge "$N" ] && break
        sleep 0.05
    done
    t2=$(date +%s.%N)
    kill -TERM "$pid"; wait "$pid" || true
    kill "$bpid"; wait "$bpid" 2>/dev/null || true
    echo "$(echo "$t1 - $t0" | python3 -c 'print(round(eval(input()),1))')" \
         "$(echo "$t2 - $t0" | python3 -c 'print(round(eval(input()),1))')" \
         "$(echo "$s" | field '["events"]["applied"]')"
}

echo "== $KILLS kill -9 within seconds while producing $N events at 2000/s, then one more start"
read -r r1 a1 n1 < <(run recalld '{}')
read -r r2 a2 n2 < <(run reference '{"session.timeout.ms":"45000","heartbeat.interval.ms":"3000"}')
printf '%-34s %12s %12s %12s\n' "" "recalld" "reference" "ratio"
printf '%-34s %12s %12s %12s\n' "partitions back after restart, s" "$r1" "$r2" \
    "$(python3 -c "print('%.2fx' % ($r2/$r1 if $r1 > 0 else 0))")"
printf '%-34s %12s %12s %12s\n' "all $N events applied, s" "$a1" "$a2" \
    "$(python3 -c "print('%.2fx' % ($a2/$a1 if $a1 > 0 else 0))")"
printf '%-34s %12s %12s\n' "applied (exactly once: = $N)" "$n1" "$n2"
