#!/usr/bin/env bash
# A trainer and a replica on recalld-broker (librdkafka's mock cluster in its
# own process): how fresh the replica is, and how fast a new replica
# bootstraps from <topic>.vectors.
#   bench/cluster.sh [ITEMS] [EVENTS]          (defaults 100000 items, 400000 events)
# 1. freshness: the trainer trains a paced stream (2,000 events/s); a replica
#    started before it applies the published records. PROBES (30) clicks on
#    brand-new items, produced with kcat during the stream, are timed until a
#    recall filtered to the item's city finds them, on the trainer and on the
#    replica (event -> searchable, kcat's start and delivery included). The
#    parts, from the stats: the trainer's freshness (consumed -> applied and
#    indexed), the publisher's tick (vectors.interval_ms, 100), the replica's
#    publish -> applied over its last 4,096 records.
# 2. bootstrap: once ITEMS items are trained and published, a second replica
#    starts and is timed until it holds every item (vector topic caught up);
#    side by side, the reference: an `all` daemon in another group rebuilding
#    the same model by replaying the click topic from its beginning.
# The mock keeps ~5 MiB per partition and does not compact: 32 partitions,
# and the publisher coalesces for 1 s, so the vector topic keeps the items'
# newest records (kafka.vectors.lost says if it did not). 1M items do not fit
# 32 partitions of the mock's retention (~560 bytes a record at d64 with the
# output vector): part 4 (ONLY=bootstrap) uses 256.
# 3. trainer shards (role trainer repartitions the clicks by city through
#    <topic>.by-city): total events/s of 1, 2 and 3 shards on the same
#    generated stream (SHARD_EVENTS, 200,000; 24 cities), each on a fresh
#    broker with the stream pre-loaded: the shards start together (one
#    rebalance) and are timed from the first event trained to the last; the
#    repartition hop is inside the figure. Then shard failover: 3 shards on a paced stream (4,000
#    events/s), one killed -9, timed until its by-city partitions are assigned
#    to survivors and until every one of them is read again; with the default
#    session.timeout.ms (6000, heartbeat 2000) and with -X 4000 / 1000 (the
#    mock's rebalance after a member timeout waits session.timeout.ms - 1 s
#    for the survivors to rejoin).
#    ONLY=shards runs this part alone.
# 4. bootstrap at BOOT_ITEMS (1,000,000) items, ONLY=bootstrap (not run by
#    default): a trainer restored from a checkpoint of BOOT_ITEMS items
#    (bench_checkpoint: 8 cities x 6 categories, d64) publishes its whole table
#    once at start (records with the output vector: ~560 bytes at d64) to a
#    clicks.vectors of BOOT_PARTS (256) partitions, enough for the mock's
#    ~5 MiB per partition; then, one after the other, (a) a replica is timed
#    from its start until it holds every item, caught up, index flushed, and
#    (b) a fresh trainer in a group of its own (every by-city partition new to
#    it: the failover path) until its bootstrap run has installed every item
#    and resumed. The reference, same run: the trainer's own restore of the
#    checkpoint (checkpoint.restore_ms) and its start -> socket answering.
# Timings on a loaded machine: read the ratio, not the seconds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init cluster KILL
ITEMS=${1:-100000}
N=${2:-400000}
now() { date +%s.%N; }
# waitfor SOCK CONDITION: polls the socket's stats every 20 ms in one process
# (a python expression over the stats `d`; the socket may not exist yet) and
# prints the stats once it holds: the poll costs no process start per round.
waitfor() {
    python3 - "$1" "$2" <<'PY'
import json, socket, sys, time
path, cond = sys.argv[1], sys.argv[2]
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b'{"op":"stats"}\n')
        d = json.loads(s.makefile().readline())
        s.close()
        if eval(cond):
            print(json.dumps(d))
            break
    except (OSError, ValueError, KeyError, TypeError):
        pass
    time.sleep(0.02)
PY
}
wait_sock() { for _ in $(seq 600); do stats "$1" >/dev/null && return 0; sleep 0.1; done; echo "no socket $1" >&2; exit 1; }

shards() {
    local NS=${SHARD_EVENTS:-200000} k i base=
    printf 'trainer shards (%s events, 24 cities; clicks and clicks.by-city of 32 partitions):\n' "$NS"
    for k in 1 2 3; do
        mkdir -p "$tmp/s$k"
        broker_start "$tmp/s$k" 32 --topic clicks --topic clicks.dlq --topic clicks.vectors \
            --topic clicks.by-city
        # the same stream, pre-loaded; the shards start together (they join in
        # the group's first rebalance) and are timed from their first trained
        # event to the last
        "$B/recalld-gen" --seed 11 --events "$NS" --items 20000 --users 50000 --cities 24 \
            --brokers "$bs" --topic clicks >/dev/null 2>"$tmp/s$k/gen.err"
        local socks=()
        for i in $(seq "$k"); do
            "$B/recalld" --brokers "$bs" --metrics-port 0 --log-level warn --role trainer \
                --config "$tmp/t.json" --socket "$tmp/s$k/t$i.sock" 2>"$tmp/s$k/t$i.log" &
            pids+=($!)
            socks+=("$tmp/s$k/t$i.sock")
        done
        shard_py run "$k $NS ${base:-0}" "${socks[@]}" | tee "$tmp/s$k/rate"
        [ -n "$base" ] || base=$(sed -n 's/.* \([0-9.]*\) events\/s.*/\1/p' "$tmp/s$k/rate")
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
        pids=()
    done
    failover 6000 2000
    failover 4000 1000
}

# failover SESSION_MS HEARTBEAT_MS: 3 shards with these group timings on a
# paced stream; one is killed -9.
failover() {
    local d="$tmp/f$1" i
    mkdir -p "$d"
    broker_start "$d" 32 --topic clicks --topic clicks.dlq --topic clicks.vectors \
        --topic clicks.by-city
    local socks=()
    for i in 1 2 3; do
        "$B/recalld" --brokers "$bs" --metrics-port 0 --log-level warn --role trainer \
            --config "$tmp/t.json" --socket "$d/t$i.sock" -X "session.timeout.ms=$1" \
            -X "heartbeat.interval.ms=$2" 2>"$d/t$i.log" &
        pids+=($!)
        socks+=("$d/t$i.sock")
    done
    shard_py joined 0 "${socks[@]}"
    "$B/recalld-gen" --seed 12 --events 60000 --items 20000 --users 50000 --cities 24 \
        --rate 4000 --brokers "$bs" --topic clicks >/dev/null 2>"$d/gen.err" &
    local gpid=$!
    pids+=($gpid)
    sleep 3
    shard_py failover "${pids[1]} $1" "${socks[@]}"
    wait "${pids[1]}" 2>/dev/null || true
    wait "$gpid" || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

# shard_py WHAT ARG SOCK...: the shards' stats polls (one process each)
shard_py() {
    python3 - "$@" <<'PY'
import json, os, signal, socket, sys, time
what, arg, socks = sys.argv[1], sys.argv[2], sys.argv[3:]
def st(p):
    s = socket.socket(socket.AF_UNIX)
    s.connect(p)
    s.sendall(b'{"op":"stats"}\n')
    d = json.loads(s.makefile().readline())
    s.close()
    return d
def parts(p):
    return {q["partition"]: (q["next"], q["lag"]) for q in st(p)["kafka"]["partitions"]}
if what == "joined":
    for _ in range(6000):
        try:
            ds = [st(p) for p in socks]
            if sum(d["kafka"]["repartition"]["assigned"] for d in ds) == 32 and \
               sum(d["kafka"]["assigned"] for d in ds) == 32:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
elif what == "run":
    k, n, base = arg.split()
    k, n, base = int(k), int(n), float(base)
    def done():
        try:
            return sum(d["events"]["applied"] + d["events"]["invalid"]
                       for d in (st(p) for p in socks))
        except (OSError, ValueError, KeyError):
            return -1
    while done() <= 0:
        time.sleep(0.02)
    t0 = time.monotonic()
    while done() < n:
        time.sleep(0.05)
    t1 = time.monotonic()
    ds = [st(p) for p in socks]
    rate = n / (t1 - t0)
    ratio = f"{rate / base:4.2f}x the 1-shard rate" if base else "reference"
    share = " / ".join(str(d["events"]["applied"]) for d in ds)
    late = sum(d["events"]["late"] for d in ds)
    print(f"  {k} shard(s): {t1 - t0:6.2f} s, {rate:.0f} events/s ({ratio}); "
          f"applied per shard {share}; late {late}")
elif what == "failover":
    victim, session = map(int, arg.split())
    dead, live = socks[0], socks[1:]
    mine = set(parts(dead))
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    first = {}
    assigned = resumed = None
    while resumed is None and time.monotonic() - t0 < 120:
        now = {}
        for p in live:
            now.update({q: v for q, v in parts(p).items() if q in mine})
        for q, v in now.items():
            first.setdefault(q, v)
        if assigned is None and set(now) == mine:
            assigned = time.monotonic() - t0
        # reading again: every moved partition's position went past where it
        # was first seen, or it has nothing to read (lag 0: no city in it)
        if assigned is not None and all(now[q][0] > first[q][0] or now[q][1] == 0
                                        for q in mine):
            resumed = time.monotonic() - t0
        time.sleep(0.05)
    fmt = lambda v: f"{v:.2f} s" if v is not None else "not within 120 s"
    print(f"  failover: kill -9 of a shard owning {len(mine)} by-city partitions -> assigned to "
          f"survivors after {fmt(assigned)}, all of them read again after {fmt(resumed)} "
          f"(session.timeout.ms {session}; target <= 10 s)")
PY
}
bootstrap() {
    local items=${BOOT_ITEMS:-1000000} parts=${BOOT_PARTS:-256} d="$tmp/bt" s t0 t1 t2 t3 t4 t5
    mkdir -p "$d/data"
    "$B/bench_checkpoint" --items "$items" --takes 1 --dir "$d" --keep >"$d/seed.out"
    mv "$(sed -n 's/^kept: //p' "$d/seed.out")" "$d/data/"
    broker_start "$d" "$parts" --topic clicks --topic clicks.dlq --topic clicks.vectors \
        --topic clicks.by-city
    local common=(--brokers "$bs" --metrics-port 0 --log-level warn)
    local maxi=$((items + items / 4))
    echo "{\"model\":{\"max_items\":$maxi},\"vectors\":{\"max_rate\":10000000,\"bootstrap\":false},\"checkpoint\":{\"interval_ms\":0}}" >"$d/t.json"
    echo "{\"model\":{\"max_items\":$maxi}}" >"$d/r.json"
    t0=$(now)
    "$B/recalld" "${common[@]}" --role trainer --config "$d/t.json" --data-dir "$d/data" \
        --socket "$d/t.sock" 2>"$tmp/bt-t.log" &
    pids+=($!)
    waitfor "$d/t.sock" 'True' >/dev/null
    t1=$(now)
    s=$(waitfor "$d/t.sock" "d['kafka']['vectors']['published'] >= $items and d['kafka']['vectors']['pending'] == 0 and d['kafka']['vectors']['inflight'] == 0")
    t2=$(now)
    local restore_ms pub
    restore_ms=$(echo "$s" | field '["checkpoint"]["restore_ms"]')
    pub=$(echo "$s" | field '["kafka"]["vectors"]["published"]')
    t3=$(now)
    "$B/recalld" "${common[@]}" --role replica --config "$d/r.json" --socket "$d/r.sock" \
        2>"$tmp/bt-r.log" &
    pids+=($!)
    s=$(waitfor "$d/r.sock" "d['items'] >= $items and d['replica']['staleness_ms'] == 0 and d['index']['pending'] == 0")
    t4=$(now)
    local rrec rlost
    rrec=$(echo "$s" | field '["replica"]["records"]')
    rlost=$(echo "$s" | field '["kafka"]["vectors"]["lost"]')
    t5=$(now)
    "$B/recalld" "${common[@]}" --role trainer --group boot2 --config "$d/r.json" \
        --socket "$d/n.sock" 2>"$tmp/bt-n.log" &
    pids+=($!)
    s=$(waitfor "$d/n.sock" "d['kafka']['vectors']['bootstrap']['runs'] >= 1 and d['kafka']['vectors']['bootstrap']['paused'] == 0 and d['items'] >= $items and d['index']['pending'] == 0")
    local t6
    t6=$(now)
    local nb
    nb=$(echo "$s" | python3 -c 'import json,sys; b=json.load(sys.stdin)["kafka"]["vectors"]["bootstrap"]; print(b["records"], b["installed"], b["lost"], b["ms"])')
    python3 - "$items" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$t6" "$restore_ms" "$pub" "$rrec" "$rlost" $nb <<'EOF2'
import sys
items = int(sys.argv[1])
t0, t1, t2, t3, t4, t5, t6 = map(float, sys.argv[2:9])
restore_ms, pub, rrec, rlost, nrec, ninst, nlost, nms = (int(float(x)) for x in sys.argv[9:17])
print(f"bootstrap at {items} items (d64, records with output vectors):")
print(f"  trainer restore of the checkpoint (reference): {restore_ms / 1000:7.2f} s "
      f"(start -> socket {t1 - t0:.2f} s)")
print(f"  trainer publishes its restored table         : {t2 - t1:7.2f} s  ({pub} records, "
      f"{pub / (t2 - t1):,.0f} records/s)")
print(f"  replica start -> every item, caught up        : {t4 - t3:7.2f} s  ({rrec} records, "
      f"{rrec / (t4 - t3):,.0f} records/s, {rlost} lost to retention); "
      f"/ restore {(t4 - t3) / (restore_ms / 1000):.2f}x")
print(f"  new trainer (every city new) -> installed     : {t6 - t5:7.2f} s  (run {nms / 1000:.2f} s: "
      f"{nrec} records read, {ninst} installed, {nlost} lost); / restore "
      f"{(t6 - t5) / (restore_ms / 1000):.2f}x")
EOF2
}

if [ "${ONLY:-}" = bootstrap ]; then
    bootstrap
    exit 0
fi

if [ "${ONLY:-}" = shards ]; then
    echo '{"train":{"replay_ratio":0}}' >"$tmp/t.json"
    shards
    exit 0
fi

broker_start "$tmp" 32 --topic clicks --topic clicks.dlq --topic clicks.vectors \
    --topic clicks.by-city
echo '{"train":{"replay_ratio":0},"vectors":{"max_rate":200000,"interval_ms":1000}}' >"$tmp/t.json"
echo '{"vectors":{"interval_ms":100}}' >"$tmp/f.json"
common=(--brokers "$bs" --metrics-port 0 --log-level warn)

# ---- 1. freshness on a paced stream ----
"$B/recalld" "${common[@]}" --role trainer --config "$tmp/f.json" --socket "$tmp/f.sock" \
    2>"$tmp/f.log" &
pids+=($!)
fpid=$!
"$B/recalld" "${common[@]}" --role replica --socket "$tmp/fr.sock" 2>"$tmp/fr.log" &
pids+=($!)
frpid=$!
wait_sock "$tmp/f.sock"
wait_sock "$tmp/fr.sock"
"$B/recalld-gen" --seed 3 --events 20000 --items 5000 --rate 2000 --brokers "$bs" \
    --topic clicks >/dev/null 2>"$tmp/gen0.err" &
gpid=$!
pids+=($gpid)
printf 'freshness (paced 2,000 events/s, 20,000 events):\n'
sleep 3
# Probes during the stream: a click on a brand-new item in a city of its own,
# produced with kcat; then a user's recall filtered to that city, on the
# trainer and on the replica, until the item is in the answer (a replica
# knows the item from the click at once, but searches it only once its
# vector record is applied and indexed). Event -> searchable, side by side.
python3 - "$bs" "$tmp/f.sock" "$tmp/fr.sock" "${PROBES:-30}" <<'PY'
import json, socket, subprocess, sys, time
bs, tsock, rsock, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def req(path, obj):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall((json.dumps(obj) + "\n").encode())
    line = s.makefile().readline()
    s.close()
    return json.loads(line)
user = next(f"u{u}" for u in range(10000)
            if req(tsock, {"op": "user", "user_id": f"u{u}"}).get("ok")
            and req(rsock, {"op": "user", "user_id": f"u{u}"}).get("ok"))
def found(sock, item, city):
    r = req(sock, {"op": "recall", "user_id": user, "k": 5, "city": city})
    return any(x["item_id"] == item for x in r.get("items", []))
lt, lr, missed = [], [], 0
for i in range(n):
    item, city = f"probe{i}", f"cprobe{i}"
    ev = json.dumps({"user_id": f"probeu{i}", "item_id": item, "city_id": city,
                     "cate_id": "k0", "ts": 1700000000000 + i})
    t0 = time.monotonic()
    subprocess.run(["kcat", "-P", "-b", bs, "-t", "clicks", "-K", "\t"],
                   input=f"probeu{i}\t{ev}\n".encode(), check=True)
    dt = dr = None
    while dt is None or dr is None:
        now = time.monotonic() - t0
        if now > 30:
            missed += 1
            break
        if dt is None and found(tsock, item, city):
            dt = now
        if dr is None and found(rsock, item, city):
            dr = time.monotonic() - t0
        time.sleep(0.002)
    if dt is not None and dr is not None:
        lt.append(dt * 1000)
        lr.append(dr * 1000)
    time.sleep(0.1)
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
print(f"  event -> searchable (kcat, {len(lt)} probes, {missed} missed): trainer p50 {q(lt, .5):.0f} ms"
      f" p99 {q(lt, .99):.0f} ms; replica p50 {q(lr, .5):.0f} ms p99 {q(lr, .99):.0f} ms"
      f" (each includes kcat's start and delivery)")
PY
wait "$gpid" || true
sleep 2
fs=$(stats "$tmp/f.sock")
rs=$(stats "$tmp/fr.sock")
printf '  trainer consumed -> applied+indexed  p50 %s ms  p99 %s ms\n' \
    "$(echo "$fs" | field '["freshness_ms"]["p50"]')" "$(echo "$fs" | field '["freshness_ms"]["p99"]')"
printf '  publisher tick (vectors.interval_ms)  <= 100 ms\n'
printf '  replica publish -> applied           p50 %s ms  p99 %s ms  (%s records)\n' \
    "$(echo "$rs" | field '["replica"]["publish_to_applied_ms"]["p50"]')" \
    "$(echo "$rs" | field '["replica"]["publish_to_applied_ms"]["p99"]')" \
    "$(echo "$rs" | field '["replica"]["applied"]')"
kill "$fpid" "$frpid"
wait "$fpid" "$frpid" 2>/dev/null || true

# ---- 2. bootstrap at ITEMS items ----
# a topic of its own: the freshness run's records would be mixed in
kill -9 "$bpid"
wait "$bpid" 2>/dev/null || true
mkdir -p "$tmp/b2"
broker_start "$tmp/b2" 32 --topic clicks --topic clicks.dlq --topic clicks.vectors \
    --topic clicks.by-city
common=(--brokers "$bs" --metrics-port 0 --log-level warn)
"$B/recalld-gen" --seed 7 --events "$N" --items "$ITEMS" --users 50000 --brokers "$bs" \
    --topic clicks >/dev/null 2>"$tmp/gen.err"
"$B/recalld" "${common[@]}" --role trainer --config "$tmp/t.json" --socket "$tmp/t.sock" \
    2>"$tmp/t.log" &
pids+=($!)
wait_sock "$tmp/t.sock"
while :; do
    s=$(stats "$tmp/t.sock")
    [ "$(echo "$s" | field '["events"]["applied"]')" -ge "$N" ] &&
        [ "$(echo "$s" | field '["kafka"]["vectors"]["pending"]')" -eq 0 ] &&
        [ "$(echo "$s" | field '["kafka"]["vectors"]["inflight"]')" -eq 0 ] && break
    sleep 0.5
done
titems=$(echo "$s" | field '["items"]')
tpub=$(echo "$s" | field '["kafka"]["vectors"]["published"]')

t0=$(now)
"$B/recalld" "${common[@]}" --role replica --socket "$tmp/r.sock" 2>"$tmp/r.log" &
pids+=($!)
s=$(waitfor "$tmp/r.sock" \
    'd["kafka"]["vectors"]["assigned"] > 0 and d["replica"]["staleness_ms"] == 0 and d["index"]["pending"] == 0')
t1=$(now)
ritems=$(echo "$s" | field '["items"]')
rrec=$(echo "$s" | field '["replica"]["records"]')
rlost=$(echo "$s" | field '["kafka"]["vectors"]["lost"]')

# the reference: replaying the clicks into a fresh model (another group)
t2=$(now)
"$B/recalld" "${common[@]}" --group replay-ref --config "$tmp/t.json" --socket "$tmp/a.sock" \
    2>"$tmp/a.log" &
pids+=($!)
s=$(waitfor "$tmp/a.sock" "d['events']['applied'] >= $N and d['index']['pending'] == 0")
t3=$(now)
python3 - "$t0" "$t1" "$t2" "$t3" "$titems" "$ritems" "$rrec" "$rlost" "$tpub" "$N" <<'EOF'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
titems, ritems, rrec, rlost, tpub, n = map(int, sys.argv[5:11])
print(f"bootstrap at {titems} items (trainer published {tpub} records):")
print(f"  replica from the vector topic : {t1 - t0:7.2f} s  ({rrec} records, {ritems} items, "
      f"{rlost} lost to retention)")
print(f"  reference, replaying {n} clicks: {t3 - t2:7.2f} s")
print(f"  ratio replay / bootstrap      : {(t3 - t2) / (t1 - t0):7.2f}x")
EOF
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
shards
