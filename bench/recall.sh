#!/usr/bin/env bash
# Socket recall latency at ~1M items while ingesting and quiet, recall@50
# against exact search (brute force through the same socket), memory at 1M
# items x d64 with ~1M active users, and where the time goes: after every
# latency section the server's per-stage table (stats "recall_stages", only
# that section's requests; see docs/PROTOCOL.md "Recall stages").
# The click log is a separate recalld-broker process (librdkafka's mock
# cluster), so recalld's RSS and CPU are its own.
#   bench/recall.sh [ITEMS] [EVENTS]     (defaults 1000000, 4000000)
# Environment: BG_NICE (pipeline.background_nice, default the daemon's),
# BG_POLICY (pipeline.background_policy, default the daemon's), BG_CPUS
# (pipeline.background_cpus, e.g. auto; AB_POLICY=pin compares the same split
# against none within one daemon),
# UV_THREADPOOL_SIZE (request workers), TOWER=0 (no two-tower model, no
# two_tower sections), LOAD_ONLY=1 (stop after the load and its memory figures), AB_ROUNDS (see ab below), DRIFT, OVERFETCH,
# STORAGE (index.storage, default the daemon's), IVF_MIN (index.ivf_min), IDX_BATCH
# (index.batch: rows the trainer writes into a partition under one hold of its lock), MALLOC_INFO=1 (after the load: resident
# memory by kind and malloc's free chunks per arena, from bench/probe/malloc_probe.c
# preloaded; RC_PROBE_SO names that library for a reference build without it), QUIET_WAIT
# (seconds the quiet sections wait for the backlog, default 900), CLIENT_SLICE_US
# (bench_recall --slice-us: the client's own scheduler slice; default the kernel's),
# PEERS_NICE (recalld-broker's threads and recalld-gen at this nice value: on a
# machine of its own recalld shares no core with Kafka or the producers),
# PEERS_CPUS (recalld-broker's threads and recalld-gen confined to these cores,
# a taskset list, e.g. 1 with BG_CPUS=auto on 2 cores: the request core then
# runs no Kafka and no producer, as when they live on other machines),
# CLIENT_CPUS (bench_recall confined to these cores).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init recall
ITEMS=${1:-1000000}
EVENTS=${2:-4000000}
USERS=$ITEMS
TOWER=${TOWER:-1}
stat() { stats "$tmp/r.sock"; }
rss() { echo "recalld $(( $(ps -o rss= -p "$rpid") / 1024 )) MiB, recalld-broker $(( $(ps -o rss= -p "$bpid") / 1024 )) MiB"; }
gen=(--seed 3 --users "$USERS" --items "$ITEMS" --cities 20 --cates 10
     --communities $((ITEMS / 200)) --zipf 0.6)
client_slice=()
[ -n "${CLIENT_SLICE_US:-}" ] && client_slice=(--slice-us "$CLIENT_SLICE_US")
client=()
[ -n "${CLIENT_CPUS:-}" ] && client=(taskset -c "$CLIENT_CPUS")
bench() { "${client[@]}" "$B/bench_recall" --socket "$tmp/r.sock" --users "$USERS" "${client_slice[@]}" "$@"; }

# The broker: 128 partitions keep ~4M clicks inside the mock's retention.
broker_start "$tmp" 128 fifo
peers=()
if [ -n "${PEERS_NICE:-}" ]; then
    peers=(nice -n "$PEERS_NICE")
    for t in /proc/"$bpid"/task/*; do renice -n "$PEERS_NICE" -p "${t##*/}" >/dev/null; done
fi
if [ -n "${PEERS_CPUS:-}" ]; then
    peers+=(taskset -c "$PEERS_CPUS")
    taskset -a -p -c "$PEERS_CPUS" "$bpid" >/dev/null
fi
nice_cfg=""
[ -n "${BG_NICE:-}" ] && nice_cfg=", \"background_nice\": $BG_NICE"
[ -n "${BG_POLICY:-}" ] && nice_cfg="$nice_cfg, \"background_policy\": \"$BG_POLICY\""
[ -n "${BG_CPUS:-}" ] && nice_cfg="$nice_cfg, \"background_cpus\": \"$BG_CPUS\""
storage_cfg=""
[ -n "${STORAGE:-}" ] && storage_cfg=", \"storage\": \"$STORAGE\""
ivf_cfg=""
[ -n "${IVF_MIN:-}" ] && ivf_cfg=", \"ivf_min\": $IVF_MIN"
[ -n "${IDX_BATCH:-}" ] && ivf_cfg="$ivf_cfg, \"batch\": $IDX_BATCH"
cat >"$tmp/r.json" <<JSON
{"kafka": {"brokers": "$bs"},
 "pipeline": {"queue_batches": 4$nice_cfg},
 "index": {"drift": ${DRIFT:-0.0005}, "overfetch": ${OVERFETCH:-3.0}$storage_cfg$ivf_cfg},
 "sessions": {"max_users": $((USERS + USERS / 4))},
 "log": {"level": "warn", "stats_interval_ms": 0}}
JSON
model=()
if [ "$TOWER" = 1 ]; then
    # Random weights: serving cost does not depend on their values (bench/tower_recall.sh).
    "$B/bench_tower_model" "$tmp/m.tower" 64 64 50 1 >/dev/null
    model=(--model "$tmp/m.tower")
fi
probe=()
[ "${MALLOC_INFO:-0}" = 1 ] && probe=(env LD_PRELOAD="${RC_PROBE_SO:-$B/librc_malloc_probe.so}" RC_MALLOC_PROBE="$tmp/mi.xml")
"${probe[@]}" "$B/recalld" --config "$tmp/r.json" --socket "$tmp/r.sock" "${model[@]}" 2>"$tmp/r.log" &
rpid=$!
pids+=($rpid)
for _ in $(seq 300); do "$B/recallctl" --socket "$tmp/r.sock" health >/dev/null 2>&1 && break; sleep 0.1; done
echo "== machine: $(nproc) cores, $(uptime | sed 's/.*load/load/'); broker $bs; BG_NICE=${BG_NICE:-default} BG_POLICY=${BG_POLICY:-default} BG_CPUS=${BG_CPUS:-default} PEERS_NICE=${PEERS_NICE:-0} PEERS_CPUS=${PEERS_CPUS:-any} CLIENT_CPUS=${CLIENT_CPUS:-any} STORAGE=${STORAGE:-default} IVF_MIN=${IVF_MIN:-default} IDX_BATCH=${IDX_BATCH:-default} UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE:-default} TOWER=$TOWER"
echo "== loading: $EVENTS events over $ITEMS items, $USERS users (paced so the mock's retention is never exceeded)"
t0=$(date +%s)
"${peers[@]}" "$B/recalld-gen" "${gen[@]}" --events "$EVENTS" --rate 60000 --brokers "$bs" >/dev/null 2>"$tmp/gen.err"
# Events the mock broker trimmed before recalld read them never arrive: they are
# counted as events.lost, and the load is complete when applied + lost reach EVENTS.
for _ in $(seq 1200); do
    a=$(stat | python3 -c 'import json,sys; e=json.load(sys.stdin)["events"]; print(e["applied"] + e["lost"])')
    [ "$a" -ge "$EVENTS" ] && break; sleep 0.5
done
s=$(stat)
echo "   loaded in $(( $(date +%s) - t0 )) s: lost to the broker's retention $(stat | field '["events"]["lost"]'), items $(echo "$s" | field '["items"]'), users $(echo "$s" | field '["users"]["active"]'), index $(echo "$s" | field '["index"]')"
echo "   memory: $(echo "$s" | field '["memory"]')"
echo "   rss: $(rss)"
echo "$s" | python3 -c '
import json, sys
d = json.load(sys.stdin)
mb = lambda v: "%.1f" % ((v or 0) / 1e6)
tw = d.get("tower") or {}
print("   MB: table %s, sessions %s, index %s, tower %s + its index %s, profiles %s, cooc %s, replay %s; heap %s (free %s), trims %s (last %s ms)" % (
    mb(d["memory"]["table_bytes"]), mb(d["memory"]["session_bytes"]), mb(d["memory"]["index_bytes"]),
    mb(tw.get("bytes")), mb((tw.get("index") or {}).get("bytes")), mb((d.get("profiles") or {}).get("bytes")),
    mb((d.get("cooc") or {}).get("bytes")), mb(((d.get("training") or {}).get("replay") or {}).get("bytes")),
    mb(d["memory"].get("heap_bytes")), mb(d["memory"].get("heap_free_bytes")), d["memory"].get("trims"),
    (d["memory"].get("trim_last_us") or 0) / 1000))'
echo "   $(grep -E 'VmRSS|VmHWM' /proc/$rpid/status | tr -s ' \t' ' ' | paste -sd' ')"
# The trainer trims malloc every pipeline.trim_interval_ms (30 s): the load's
# transient buffers (librdkafka's prefetch, retrain snapshots) stay resident until
# then, so the RSS after the next trim is the steady figure.
tr0=$(stat | field '["memory"]["trims"]')
for _ in $(seq 90); do [ "$(stat | field '["memory"]["trims"]')" -gt "$tr0" ] && break; sleep 0.5; done
echo "   after the next malloc trim: rss $(rss), $(grep -E 'VmRSS' /proc/$rpid/status | tr -s ' \t' ' ')"
# MALLOC_INFO=1: where the resident memory is (smaps by kind) and what malloc
# holds free in each arena, by chunk size (malloc_info, from the preloaded
# bench/probe/malloc_probe.c)
if [ "${MALLOC_INFO:-0}" = 1 ]; then
    touch "$tmp/mi.xml.req"
    for _ in $(seq 100); do [ -s "$tmp/mi.xml" ] && break; sleep 0.1; done
    python3 "$here/bench/memmap.py" "$rpid" $([ -s "$tmp/mi.xml" ] && echo "$tmp/mi.xml")
fi
# LOAD_ONLY=1: the memory after the load is all this run measures
[ "${LOAD_ONLY:-0}" = 1 ] && exit 0
sections() {
    bench --requests "$1" --quality 0
    bench --requests "$2" --quality 0 --city c3
    bench --requests "$2" --quality 0 --city '*'
    if [ "$TOWER" = 1 ]; then bench --requests "$2" --quality 0 --mode two_tower; fi
    bench --requests "$2" --quality 0 --mode multi_category
    # The co-occurrence channel alone and merged with the default scope's
    # search (recall.mode "itemknn" / "fused"): their cost beside "avg".
    bench --requests "$2" --quality 0 --mode itemknn
    bench --requests "$1" --quality 0 --mode fused
}
# AB_ROUNDS=N: N rounds, while ingesting, of the default scope with the
# background threads (rc-trainer and the index retrains it starts, rc-shardN,
# rc-decoder, rc-checkpoint) at the daemon's nice ("same") and at nice + 10
# ("lower"), alternating, so that both see the same machine; the median
# p50/p99 of each, and the events the trainer applied per second during each
# condition's rounds. AB_POLICY=idle compares "lower" with "idle" (the same
# threads under SCHED_IDLE, nice + 10: pipeline.background_policy "idle")
# instead; going back from SCHED_IDLE needs root or CAP_SYS_NICE.
# AB_POLICY=slice compares the request path's scheduler slice instead:
# socket.request_slice_us 0 (the kernel's default, "long") and 100 µs ("short",
# the default), switched by a SIGHUP reload of the same daemon; the table
# adds the server's own p99 (stage "total"), which no client wake-up inflates.
slice_set() {
    local us=0
    [ "$1" = short ] && us=100
    python3 - "$tmp/r.json" "$us" <<'PY'
import json, sys
p, us = sys.argv[1], int(sys.argv[2])
c = json.load(open(p))
c.setdefault("socket", {})["request_slice_us"] = us
json.dump(c, open(p, "w"))
PY
    kill -HUP "$rpid"
    for _ in $(seq 100); do [ "$(stat | field '["server"]["slice_us"]')" = "$us" ] && break; sleep 0.1; done
}
# AB_POLICY=peers compares recalld-broker's and recalld-gen's threads at nice 0
# ("peers0") and at nice 10 ("peers10"), as if Kafka and the producers ran on
# other machines (they cannot be taken off these cores in one run).
peers_set() {
    local n=${1#peers} t
    for t in /proc/"$bpid"/task/* /proc/"$gpid"/task/*; do renice -n "$n" -p "${t##*/}" >/dev/null 2>&1 || true; done
}
# AB_POLICY=bgslice compares the background threads' (rc-*) scheduler slice:
# the kernel's default ("bglong") and 100 us ("bgshort"), set on each thread
# with sched_setattr(2) (another thread of the same user may be set).
bgslice_set() {
    python3 - "$rpid" "$1" <<'PY'
import ctypes, os, sys
pid, mode = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("prio", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64),
                ("umin", ctypes.c_uint32), ("umax", ctypes.c_uint32)]
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        if not open(f"/proc/{pid}/task/{t}/comm").read().startswith("rc-"):
            continue
    except OSError:
        continue
    a = Attr()
    if libc.syscall(315, int(t), ctypes.byref(a), ctypes.sizeof(a), 0):  # sched_getattr
        continue
    a.size, a.flags = ctypes.sizeof(a), 0
    a.runtime = 100000 if mode == "bgshort" else 0
    libc.syscall(314, int(t), ctypes.byref(a), 0)  # sched_setattr
PY
}
# Sets the cores of recalld's threads (sched_setaffinity(2) per thread;
# threads started later inherit their creator's set): "float" every thread on
# every core; otherwise the threads named PREFIX* on the last core ("bg") or
# on the others ("req"), and with OTHERS=rest every other thread on the others.
thread_cpus() {
    python3 - "$rpid" "$@" <<'PY'
import os, sys
pid, mode = int(sys.argv[1]), sys.argv[2]
prefix = sys.argv[3] if len(sys.argv) > 3 else ""
others = len(sys.argv) > 4 and sys.argv[4] == "rest"
cpus = sorted(os.sched_getaffinity(0))
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        if mode == "float":
            os.sched_setaffinity(int(t), cpus)
        elif open(f"/proc/{pid}/task/{t}/comm").read().startswith(prefix):
            os.sched_setaffinity(int(t), cpus[-1:] if mode == "bg" else cpus[:-1])
        elif others:
            os.sched_setaffinity(int(t), cpus[:-1])
    except OSError:
        pass
PY
}
# AB_POLICY=pin compares the threads floating over both cores ("float") with
# recalld's background threads (rc-*) on the last core and its other threads
# (loop, request workers, librdkafka) on the others ("pinned").
pin_set() {
    if [ "$1" = float ]; then thread_cpus float; else thread_cpus bg rc- rest; fi
}
# AB_POLICY=rdk compares librdkafka's threads (rdk:*) on the request cores
# ("rdkreq", where pipeline.background_cpus "auto" left them until 2026-12-05)
# with the same threads on the last core, the background threads' ("rdkbg").
rdk_set() {
    if [ "$1" = rdkbg ]; then thread_cpus bg rdk:; else thread_cpus req rdk:; fi
}
# AB_POLICY=client compares the client floating over every core ("clientany")
# with the client confined to AB_CLIENT_CPUS (default 0, "clientpin": with
# BG_CPUS=auto on 2 cores, the request core, as an application beside its
# recalld sidecar); the client's set is chosen per round, nothing in recalld.
client_set() {
    client=()
    [ "$1" = clientpin ] && client=(taskset -c "${AB_CLIENT_CPUS:-0}")
    return 0
}
bg_set() {
    case "$1" in long|short) slice_set "$1"; return;; clientany|clientpin) client_set "$1"; return;;
        rdkreq|rdkbg) rdk_set "$1"; return;; peers*) peers_set "$1"; return;;
        bglong|bgshort) bgslice_set "$1"; return;; float|pinned) pin_set "$1"; return;; esac
    python3 - "$rpid" "$1" <<'PY'
import os, sys
pid, mode = int(sys.argv[1]), sys.argv[2]
base = os.getpriority(os.PRIO_PROCESS, pid)
delta = 0 if mode == "same" else 10
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
        if comm.startswith("rc-"):
            tid = int(t)
            if mode == "idle":
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            elif os.sched_getscheduler(tid) != os.SCHED_OTHER:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, tid, min(base + delta, 19))
    except OSError:
        pass
PY
}
ab() {
    local conds="same lower"
    [ "${AB_POLICY:-}" = idle ] && conds="lower idle"
    [ "${AB_POLICY:-}" = slice ] && conds="long short"
    [ "${AB_POLICY:-}" = peers ] && conds="peers0 peers10"
    [ "${AB_POLICY:-}" = bgslice ] && conds="bglong bgshort"
    [ "${AB_POLICY:-}" = pin ] && conds="float pinned"
    [ "${AB_POLICY:-}" = client ] && conds="clientany clientpin"
    [ "${AB_POLICY:-}" = rdk ] && conds="rdkreq rdkbg"
    for r in $(seq "$AB_ROUNDS"); do
        for cond in $conds; do
            bg_set $cond
            a0=$(stat | field '["events"]["applied"]'); t0=$(date +%s.%N)
            out=$(bench --requests "${AB_REQUESTS:-2000}" --quality 0)
            a1=$(stat | field '["events"]["applied"]'); t1=$(date +%s.%N)
            srv=$(echo "$out" | awk '$1 == "stages" && $2 == "total" {print $6}')
            off=$(echo "$out" | awk '$1 == "stages" && $2 == "off_cpu" {print $6}')
            echo "$cond $(echo "$out" | head -n1) server p99 ${srv%.*} us applied $(python3 -c "print(round(($a1-$a0)/($t1-$t0)))") events/s; off_cpu p99 ${off:-?} us"
        done
    done | tee "$tmp/ab.txt" | sed 's/^/   ab: /'
    for cond in $conds; do
        grep "^$cond " "$tmp/ab.txt" | sed -E 's/.* p50 ([0-9]+) us .* p99 ([0-9]+) us .* server p99 ([0-9]+) us applied ([0-9]+) events.*/\1 \2 \3 \4/' |
            python3 -c "import sys,statistics as s; v=[l.split() for l in sys.stdin]; print('   ab: %s: median over %d rounds of p50 %d us, p99 %d us (server p99 %d us); applied %d events/s' % ({'same':'background threads at nice +0','lower':'background threads at nice +10','idle':'background threads SCHED_IDLE','long':'request slice the kernel default','short':'request slice 100 us','peers0':'broker and generator at nice 0','peers10':'broker and generator at nice 10','bglong':'background threads with the default slice','bgshort':'background threads with a 100 us slice','float':'threads on any core','pinned':'background threads on one core, the rest on the other','clientany':'client on any core','clientpin':'client on cores ${AB_CLIENT_CPUS:-0}','rdkreq':'librdkafka threads on the request cores','rdkbg':'librdkafka threads on the background core'}['$cond'], len(v), *(s.median(int(x[i]) for x in v) for i in range(4))))"
    done
    if [ "${AB_POLICY:-}" = slice ]; then bg_set short
    elif [ "${AB_POLICY:-}" = peers ]; then bg_set "peers${PEERS_NICE:-0}"
    elif [ "${AB_POLICY:-}" = bgslice ]; then bg_set bglong
    elif [ "${AB_POLICY:-}" = pin ]; then bg_set float
    elif [ "${AB_POLICY:-}" = rdk ]; then bg_set rdkreq
    elif [ "${AB_POLICY:-}" = client ]; then
        client=()
        [ -n "${CLIENT_CPUS:-}" ] && client=(taskset -c "$CLIENT_CPUS")
    elif [ "${BG_POLICY:-nice}" = idle ]; then bg_set idle; elif [ "${BG_NICE:-10}" = 0 ]; then bg_set same; else bg_set lower; fi
}
echo "== latency while ingesting (recalld-gen --rate 20000 in the background)"
"${peers[@]}" "$B/recalld-gen" "${gen[@]}" --seed 4 --events 2000000 --rate 20000 --brokers "$bs" >/dev/null 2>&1 &
gpid=$!
pids+=($gpid)
sleep 2
if [ -n "${AB_ROUNDS:-}" ]; then ab; fi
a0=$(stat | field '["events"]["applied"]'); t1=$(date +%s.%N)
sections 20000 5000
a1=$(stat | field '["events"]["applied"]'); t2=$(date +%s.%N)
echo "   applied while measuring: $(python3 -c "print(round(($a1-$a0)/($t2-$t1)))") events/s; rss: $(rss)"
# The generator's 2M events are all produced before the quiet sections (it
# was killed here until 2026-12-04: faster sections then applied fewer of its
# events, and the quality figures came from different states of the model).
wait "${pids[-1]}" 2>/dev/null || true
# Quiet: wait until the backlog is applied (Kafka lag 0) and the index has
# nothing pending, at most QUIET_WAIT seconds (900): on a loaded machine the
# niced trainer can need minutes for the ingest phase's backlog.
qt0=$(date +%s)
while :; do
    s=$(stat); l=$(echo "$s" | field '["kafka"]["lag"]'); p=$(echo "$s" | field '["index"]["pending"]')
    [ "$l" = 0 ] && [ "$p" = 0 ] && break
    [ $(( $(date +%s) - qt0 )) -ge "${QUIET_WAIT:-900}" ] && break
    sleep 1
done
echo "== latency quiet (nothing ingesting; backlog applied in $(( $(date +%s) - qt0 )) s, Kafka lag now $l, index pending $p)"
sections 20000 5000
echo "== quality: recall@50 of the index against exact search (quiet)"
bench --requests 1000 --quality 300
bench --requests 1000 --quality 300 --city '*'
bench --requests 1000 --quality 300 --city c3
s=$(stat)
echo "   memory after: $(echo "$s" | field '["memory"]')"
echo "   rss after: $(rss)"
echo "== machine after: $(uptime | sed 's/.*load/load/')"
