#!/usr/bin/env bash
# Ingest throughput and freshness through Kafka, with gensim's online word2vec
# on the same clicks as the reference (when Debian's python3-gensim is there).
#   bench/ingest.sh [EVENTS] [RATE_FOR_FRESHNESS]
# 1. recalld-broker (mock Kafka, own process, 64 partitions) is filled with
#    EVENTS generated clicks; then recalld (dim 64, window 5, 5 negatives)
#    consumes them: events/s = applied / time from first to last event. Once
#    per model.trainer_threads in THREADS (default "1 2"), each run a new
#    daemon and consumer group on the same broker, ROUNDS times alternately
#    (default 1), printed side by side with the ratio to the first setting;
#    the CPU columns are seconds per million events of the daemon, of
#    recalld-broker and of the daemon's busiest threads. The end is watched
#    by bench/ingest_watch.py: one process, one connection, `stats` every
#    POLL s (0.05); until 2026-12-03 a python3 start per poll took a quarter
#    of the throughput it measured. ONLY_INGEST=1 stops after part 1.
#    BG_NICE=N sets pipeline.background_nice for these runs (default: the
#    daemon's, 10 levels below it). CONF='"kafka":{"batch":1024}' adds
#    top-level sections to the daemon's config for every run.
# 2. freshness: recalld on its embedded Kafka while recalld-gen produces at
#    RATE events/s (below saturation): batch consumed -> trained+searchable.
# 3. gensim: the same clicks as sessions, fed in chunks of GENSIM_CHUNK clicks
#    (default 100,000) through build_vocab(update=True) + train (its online
#    mode), 1 worker and 2 workers; each recalld setting over each.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init ingest
N=${1:-1000000}
RATE=${2:-50000}
gen=(--seed 7 --users 100000 --items 100000 --cities 20 --cates 10 --communities 1000)

echo "== machine: $(nproc) cores, $(uptime | sed 's/.*load/load/')"
echo "== 1. ingest: $N events pre-loaded in recalld-broker (64 partitions)"
broker_start "$tmp" 64
"$B/recalld-gen" "${gen[@]}" --events "$N" --brokers "$bs" >/dev/null 2>"$tmp/gen.err"
"$B/recalld-gen" "${gen[@]}" --events "$N" --out "$tmp/clicks.jsonl" 2>/dev/null
THREADS=${THREADS:-1 2}
ROUNDS=${ROUNDS:-1}
declare -A best
run=0
ingest() { # $1 = model.trainer_threads: sets out_rate (events/s), out_cpu, out_bcpu
    # (CPU s per M events of recalld and of recalld-broker) and out_threads
    local th=$1 pid
    run=$((run + 1))
    printf '{"model":{"trainer_threads":%s}%s%s}\n' "$th" \
        "${BG_NICE:+,\"pipeline\":{\"background_nice\":$BG_NICE\}}" \
        "${CONF:+,$CONF}" >"$tmp/th$run.json"
    "$B/recalld" --config "$tmp/th$run.json" --brokers "$bs" --group "ingest$run" \
        --socket "$tmp/a$run.sock" --metrics-port 0 --log-level warn 2>"$tmp/a$run.log" &
    pid=$!
    pids+=($pid)
    read -r out_rate out_cpu out_bcpu out_threads < <("$PY" "$here/bench/ingest_watch.py" \
        "$tmp/a$run.sock" "$N" "$pid" "$bpid" "${POLL:-0.05}" || echo fail)
    [ "$out_rate" != fail ] || exit 1
    stats "$tmp/a$run.sock" >"$tmp/ingest-stats-$th.json"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
}
printf '   %-6s %-16s %10s %7s %14s %13s  %s\n' round trainer_threads events/s ratio cpu_s/M_events broker_cpu_s threads_cpu_s/M_events
for r in $(seq "$ROUNDS"); do
    base=
    for th in $THREADS; do
        ingest "$th"
        rate=$out_rate cpu=$out_cpu
        [ -z "$base" ] && base=$rate
        [ "${best[$th]:-0}" -lt "$rate" ] && best[$th]=$rate
        printf '   %-6s %-16s %10s %7s %14s %13s  %s\n' "$r" "$th" "$rate" \
            "$(python3 -c "print(f'{$rate / $base:.2f}')")" "$cpu" "$out_bcpu" "$out_threads"
    done
done
rate=${best[${THREADS%% *}]}
s=$(cat "$tmp/ingest-stats-${THREADS##* }.json")
echo "   best of $ROUNDS: $(for th in $THREADS; do printf '%s thread(s) %s/s  ' "$th" "${best[$th]}"; done)"
echo "   last setting: $(echo "$s" | field '["training"]') "
echo "   rss $(echo "$s" | field '["memory"]["rss_bytes"]//2**20') MiB, index $(echo "$s" | field '["index"]["size"]') vectors"

[ -n "${ONLY_INGEST:-}" ] && exit 0
echo "== 2. freshness at $RATE events/s (embedded Kafka, producer paced)"
"$B/recalld" --embedded-kafka --partitions 64 --socket "$tmp/b.sock" --metrics-port 0 --log-level warn 2>"$tmp/b.log" &
pids+=($!)
for _ in $(seq 100); do "$B/recallctl" --socket "$tmp/b.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
bsb=$(stats "$tmp/b.sock" | field '["kafka"]["bootstrap"]')
"$B/recalld-gen" "${gen[@]}" --events $((RATE * 10)) --rate "$RATE" --brokers "$bsb" >/dev/null 2>/dev/null
sleep 1
fr=$(stats "$tmp/b.sock" | field '["freshness_ms"]')
echo "   freshness (ms): $fr"

if /usr/bin/python3 -c 'import gensim' 2>/dev/null; then
    GENSIM_CHUNK=${GENSIM_CHUNK:-100000}
    echo "== 3. gensim online reference on the same clicks (chunks of $GENSIM_CHUNK clicks)"
    for w in 1 2; do
        g=$(/usr/bin/python3 "$here/bench/gensim_online.py" "$tmp/clicks.jsonl" "$w" "$GENSIM_CHUNK")
        echo "   gensim workers=$w: $g events/s; recalld/gensim: $(for th in $THREADS; do
            printf '%s thread(s) %sx  ' "$th" "$(python3 -c "print(round(${best[$th]} / $g, 2))")"; done)"
    done
else
    echo "== 3. gensim reference skipped: /usr/bin/python3 cannot import gensim (apt-get install python3-gensim)"
fi
