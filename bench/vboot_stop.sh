#!/usr/bin/env bash
# SIGTERM during a trainer's bootstrap of newly assigned cities (src/vboot.c):
# how long a trainer takes to exit while a bootstrap run holds its four
# by-city partitions, side by side with the same trainer once its run is
# over. The run is held by leaving clicks.vectors' only partition without a
# leader (its watermarks never come; vectors.bootstrap_timeout_ms is an
# hour), as in tests/test_vboot.c.
#   bench/vboot_stop.sh [ROUNDS] [WAIT_S]
# WAIT_S (0): seconds between the condition and SIGTERM, in both runs; past
# ~8 s the held run's watermark request waits 5 s a try, the longest a stop
# can wait for the reader's thread.
# Per round, two runs on recalld-broker (1 broker, clicks.by-city of 4):
#   mid-bootstrap - SIGTERM while the run waits (kafka.vectors.bootstrap.running)
#   reference     - SIGTERM after the run ended (the topic has its leader)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init vboot_stop
ROUNDS=${1:-3}
WAIT_S=${2:-0}

# run NAME HOLD -> prints the seconds from SIGTERM to exit, and the exit code
run() {
    local name=$1 hold=$2 d=$tmp/$1 s pid t0 t1 rc=0
    rm -rf "$d"
    mkdir -p "$d"
    broker_start "$d" 2 fifo --topic clicks --topic clicks.dlq
    echo "create clicks.by-city 4" >&9
    echo "create clicks.vectors 1" >&9
    [ "$hold" = 1 ] && echo "leader clicks.vectors 0 -1" >&9
    printf '{"vectors":{"bootstrap_timeout_ms":3600000}}\n' >"$d/conf.json"
    "$B/recalld" --role trainer --brokers "$bs" --group vs --data-dir "$d/data" \
        --config "$d/conf.json" --socket "$d/s.sock" --log-level info 2>"$d/recalld.log" &
    pid=$!
    pids+=($pid)
    while :; do
        s=$(stats "$d/s.sock" 2>/dev/null) || { sleep 0.2; continue; }
        local a r n
        a=$(echo "$s" | field '["kafka"]["assigned"]')
        r=$(echo "$s" | field '["kafka"]["vectors"]["bootstrap"]["running"]')
        n=$(echo "$s" | field '["kafka"]["vectors"]["bootstrap"]["runs"]')
        if [ "$hold" = 1 ]; then
            [ "$a" -eq 4 ] && [ "$r" = True ] && break
        else
            [ "$a" -eq 4 ] && [ "$r" = False ] && [ "$n" -ge 1 ] && break
        fi
        sleep 0.2
    done
    sleep "$WAIT_S"
    t0=$(date +%s.%N)
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    t1=$(date +%s.%N)
    exec 9>&-
    kill "$bpid"; wait "$bpid" 2>/dev/null || true
    echo "$("$PY" -c "print(round($t1 - $t0, 2))")" "$rc"
}

printf '%-6s %16s %16s %8s\n' round "mid-bootstrap s" "reference s" ratio
for i in $(seq "$ROUNDS"); do
    read -r h hrc < <(run held 1)
    read -r f frc < <(run free 0)
    printf '%-6s %16s %16s %8s\n' "$i" "$h (exit $hrc)" "$f (exit $frc)" \
        "$("$PY" -c "print('%.2fx' % ($h/$f if $f > 0 else 0))")"
done
