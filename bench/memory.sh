#!/usr/bin/env bash
# Memory of recalld alone at ITEMS items x d64 and about as many users, with
# checkpoints on: the Kafka log lives in a separate recalld-broker process (its
# memory is printed apart), so recalld's RSS holds only recalld.
#   bench/memory.sh [ITEMS] [EVENTS] [RATE]   (defaults 1000000, 7000000, 40000)
# Prints, after the load, after the next checkpoint and after a burst of
# recalls: VmRSS and VmHWM of recalld (from /proc/PID/status) and of the
# broker, recalld's stats.memory, and where recalld's resident memory is
# (/proc/PID/smaps: heap, anonymous mappings by size, files, stacks).
# Extra recalld settings: RC_MEM_CONF='"index":{"drift":0.02},' (JSON members);
# CKPT_COPY=false for checkpoint.copy false, CKPT_MS for checkpoint.interval_ms.
# SEED_ITEMS=N starts recalld from a checkpoint of N items (random vectors over
# 8 cities x 6 categories, written by bench_checkpoint): the table and index at
# N items without streaming ~5N events first (hours on a loaded machine); the
# EVENTS then fill sessions and profiles (new items beyond model.max_items are
# refused, counted rejected_capacity).
# TOWER=1 serves a two-tower model too (random weights, as bench/recall.sh:
# its memory does not depend on their values).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init memory
ITEMS=${1:-1000000}
EVENTS=${2:-7000000}
RATE=${3:-40000}
USERS=$ITEMS
# recalld-broker keeps ~5 MiB per partition (~35k generated clicks): enough
# partitions that the whole stream fits even if recalld falls behind.
PARTS=$(( EVENTS / 30000 + 16 ))
# (replaces lib.sh's cleanup) Newest first (recalld before its broker): SIGTERM, then -9 after 30 s.
cleanup() {
    local st=$? i p
    if [ "$st" -ne 0 ] && [ -f "$tmp/r.log" ]; then
        echo "== failed ($st): last lines of recalld's log" >&2
        tail -20 "$tmp/r.log" >&2
    fi
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        p=${pids[i]}
        kill "$p" 2>/dev/null || continue
        for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
# stats, retried: under load one request may time out (set -e must not end the run)
stat() {
    local i out
    for i in $(seq 30); do
        out=$("$B/recallctl" --socket "$tmp/r.sock" --raw stats 2>/dev/null) && [ -n "$out" ] &&
            { echo "$out"; return 0; }
        sleep 1
    done
    echo "recallctl stats: no answer in 30 tries" >&2
    return 1
}
gen=(--seed 3 --users "$USERS" --items "$ITEMS" --cities 20 --cates 10
     --communities $((ITEMS / 200)) --zipf 0.6)

broker_start "$tmp" "$PARTS"

cat >"$tmp/r.json" <<JSON
{${RC_MEM_CONF:-}
 "sessions": {"max_users": $((USERS + USERS / 4))},
 "checkpoint": {"interval_ms": ${CKPT_MS:-20000}, "copy": ${CKPT_COPY:-true}},
 "log": {"level": "warn", "stats_interval_ms": 0}}
JSON
if [ -n "${SEED_ITEMS:-}" ]; then
    "$B/bench_checkpoint" --items "$SEED_ITEMS" --takes 1 --dir "$tmp" --keep >"$tmp/seed.out"
    mkdir -p "$tmp/data"
    mv "$(sed -n 's/^kept: //p' "$tmp/seed.out")" "$tmp/data/"
    echo "== seeded: a checkpoint of $SEED_ITEMS items ($(grep -o 'write: .*MB' "$tmp/seed.out"))"
fi
model=()
if [ "${TOWER:-0}" = 1 ]; then
    "$B/bench_tower_model" "$tmp/m.tower" 64 64 50 1 >/dev/null
    model=(--model "$tmp/m.tower")
fi
"$B/recalld" --config "$tmp/r.json" --brokers "$bs" --data-dir "$tmp/data" \
    --socket "$tmp/r.sock" --metrics-port 0 "${model[@]}" 2>"$tmp/r.log" &
rpid=$!
pids+=($rpid)
for _ in $(seq 6000); do "$B/recallctl" --socket "$tmp/r.sock" health >/dev/null 2>&1 && break; sleep 0.1; done

# report LABEL: the figures of one point
report() {
    local s
    s=$(stat)
    echo "== $1"
    echo "$s" | python3 -c '
import json, sys
d = json.load(sys.stdin)
m, c = d["memory"], d["checkpoint"]
print("   items %d, users %d, applied %d, checkpoints written %d (in progress %s)" % (
    d["items"], d["users"]["active"], d["events"]["applied"], c["written"], c["in_progress"]))
print("   stats.memory: " + ", ".join("%s %.1f MB" % (k, v / 1e6) for k, v in m.items()
                                     if isinstance(v, (int, float))))
tw = d.get("tower") or {}
if tw.get("index"):
    print("   tower: " + json.dumps({k: tw["index"].get(k) for k in ("size", "ivf_partitions", "bytes", "storage")}) +
          ", tower.bytes %.1f MB" % (tw.get("bytes", 0) / 1e6))
if d.get("profiles", {}).get("bytes") is not None:
    print("   profiles.bytes %.1f MB" % (d["profiles"]["bytes"] / 1e6))
'
    python3 - "$rpid" "$bpid" <<'PY'
import sys
def status(pid):
    f = {}
    for line in open("/proc/%s/status" % pid):
        k, _, v = line.partition(":")
        f[k] = v.split()
    return f
for name, pid in (("recalld", sys.argv[1]), ("recalld-broker", sys.argv[2])):
    s = status(pid)
    print("   %-15s VmRSS %7.1f MB  VmHWM %7.1f MB  threads %s" % (
        name, int(s["VmRSS"][0]) / 1024, int(s["VmHWM"][0]) / 1024, s["Threads"][0]))
# where recalld's resident memory is
cats, cur = {}, None
for line in open("/proc/%s/smaps" % sys.argv[1]):
    p = line.split()
    if "-" in p[0] and not p[0].endswith(":"):
        lo, hi = (int(x, 16) for x in p[0].split("-"))
        path = p[5] if len(p) > 5 else ""
        size = hi - lo
        if path == "[heap]":
            cur = "brk heap"
        elif path.startswith("[stack"):
            cur = "stacks"
        elif path.startswith("/"):
            cur = "files (code, libraries)"
        elif path:
            cur = "other " + path
        elif size >= 64 << 20 and size % (64 << 20) == 0:
            cur = "anon 64 MiB-aligned (glibc thread arenas)"
        elif size >= 128 << 10:
            cur = "anon >= 128 KiB (big mallocs, mmap)"
        else:
            cur = "anon < 128 KiB (thread stacks, small)"
    elif p[0] == "Rss:":
        cats[cur] = cats.get(cur, 0) + int(p[1])
for k, v in sorted(cats.items(), key=lambda kv: -kv[1]):
    if v >= 1024:
        print("     %-45s %7.1f MB" % (k, v / 1024))
PY
}

echo "== loading: $EVENTS events over $ITEMS items, $USERS users, $RATE/s, broker with $PARTS partitions"
t0=$(date +%s)
"$B/recalld-gen" "${gen[@]}" --events "$EVENTS" --rate "$RATE" --brokers "$bs" >/dev/null 2>"$tmp/gen.err"
for _ in $(seq 1200); do
    a=$(stat | field '["events"]["applied"]'); [ "$a" -ge "$EVENTS" ] && break; sleep 0.5
done
echo "   loaded in $(( $(date +%s) - t0 )) s"
report "after load"
# The next periodic checkpoint, finished: written (it had the end of the load
# to write) or unchanged (the previous one already held all of it).
s=$(stat)
w=$(( $(echo "$s" | field '["checkpoint"]["written"]') + $(echo "$s" | field '["checkpoint"]["unchanged"]') ))
for _ in $(seq 600); do
    s=$(stat)
    n=$(( $(echo "$s" | field '["checkpoint"]["written"]') + $(echo "$s" | field '["checkpoint"]["unchanged"]') ))
    [ "$n" -gt "$w" ] && [ "$(echo "$s" | field '["checkpoint"]["in_progress"]')" = False ] && break
    sleep 0.5
done
report "after a checkpoint"
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 20000 --quality 0 | tail -2
"$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" --requests 5000 --quality 0 --city '*' | tail -1
report "after 25,000 recalls"
echo "   uptime: $(uptime)"
