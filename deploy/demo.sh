#!/usr/bin/env bash
# recalld demo: starts recalld on its embedded Kafka, streams generated clicks
# through Kafka into the embeddings and the live index, queries recall over the
# Unix socket, and prints a short report. Installs and builds what is missing.
#   deploy/demo.sh [EVENTS]        (default 300000)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
events=${1:-300000}
cd "$here"
echo "== building (installs missing Debian packages on first run)"
deploy/build.sh
B=$here/build
tmp=$(mktemp -d /tmp/recalld-demo.XXXXXX)
sock=$tmp/recalld.sock
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== starting recalld (embedded Kafka, socket $sock)"
"$B/recalld" --config conf/demo.json --socket "$sock" --dlq-file "$tmp/dead-letters.jsonl" \
    2>"$tmp/recalld.log" &
pid=$!
for _ in $(seq 1 300); do
    "$B/recallctl" --socket "$sock" health >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/recalld.log"; exit 1; }
    sleep 0.1
done
"$B/recallctl" --socket "$sock" health >/dev/null || { echo "recalld did not become ready"; exit 1; }
stats() { "$B/recallctl" --socket "$sock" --raw stats; }
bootstrap=$(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["kafka"]["bootstrap"])')
echo "   Kafka bootstrap: $bootstrap (produce to it with kcat or recalld-gen)"

gen_flags=(--seed 42 --users 20000 --items 20000 --cities 8 --cates 6 --communities 120)
echo "== producing $events generated clicks to topic clicks (recalld-gen --brokers $bootstrap)"
t0=$(date +%s.%N)
"$B/recalld-gen" "${gen_flags[@]}" --events "$events" --brokers "$bootstrap" \
    --truth "$tmp/truth.tsv" >/dev/null 2>"$tmp/gen.log"
# Wait until recalld has consumed and applied all of them.
for _ in $(seq 1 600); do
    n=$(stats | python3 -c 'import json,sys; e=json.load(sys.stdin)["events"]; print(e["applied"]+e["invalid"])')
    [ "$n" -ge "$events" ] && break
    sleep 0.1
done
t1=$(date +%s.%N)

# A brand-new item clicked right after a known one: how long until `similar` shows it.
probe=$(python3 - "$tmp/truth.tsv" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
item, comm, city, cate = rows[0]
print(item, city, cate)
PY
)
read -r known kcity kcate <<<"$probe"
last_ts=$(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"]["max_ts"] + 1000)')
printf 'demo-user\t{"user_id":"demo-user","item_id":"%s","city_id":"%s","cate_id":"%s","ts":%s}\ndemo-user\t{"user_id":"demo-user","item_id":"brand-new-item","city_id":"%s","cate_id":"%s","ts":%s}\n' \
    "$known" "$kcity" "$kcate" "$((last_ts))" "$kcity" "$kcate" "$((last_ts + 2000))" >"$tmp/new.txt"
p0=$(date +%s%N)
kcat -P -b "$bootstrap" -t clicks -K $'\t' -l "$tmp/new.txt" 2>/dev/null
seen_ms=-1
for _ in $(seq 1 500); do
    if "$B/recallctl" --socket "$sock" --raw "{\"op\":\"similar\",\"item_id\":\"$known\",\"k\":10}" |
        grep -q brand-new-item; then
        seen_ms=$(( ($(date +%s%N) - p0) / 1000000 )); break
    fi
    sleep 0.005
done

python3 - "$B/recallctl" "$sock" "$tmp/truth.tsv" "$events" "$t0" "$t1" "$seen_ms" "$known" <<'PY'
import json, subprocess, sys
ctl, sock, truth, events, t0, t1, seen_ms, known = sys.argv[1:]
events, secs = int(events), float(t1) - float(t0)
def req(obj):
    out = subprocess.run([ctl, "--socket", sock, "--raw", json.dumps(obj)], capture_output=True, text=True)
    return json.loads(out.stdout)
items = {}
for line in list(open(truth))[1:]:
    i, comm, city, cate = line.rstrip("\n").split("\t")
    items[i] = (int(comm), city, cate)
users = {}
for line in list(open(truth + ".users"))[1:]:
    u, home, comms = line.rstrip("\n").split("\t")
    users[u] = (home, {int(c) for c in comms.split(",") if c})
st = req({"op": "stats"})
ev, ix, tr, fr, mem = st["events"], st["index"], st["training"], st["freshness_ms"], st["memory"]
print()
print("recalld demo report")
print("-------------------")
print(f"stream      {events:,} clicks through Kafka in {secs:.1f} s = {events/secs:,.0f} events/s "
      f"(producer and recalld share this machine's cores)")
print(f"            applied {ev['applied']:,}, invalid {ev['invalid']:,}, duplicates {ev['duplicates']:,}")
print(f"model       {st['items']:,} items in {st['cities']} cities x {st['categories']} categories, "
      f"{st['users']['active']:,} active users, {tr['pairs']:,} skip-gram pairs, loss {tr['loss']:.3f}")
print(f"index       {ix['size']:,} vectors in {ix['partitions']} partitions ({ix['ivf_partitions']} IVF), "
      f"{ix['reindexed']:,} re-indexed after drift, {ix['pending']} pending")
print(f"freshness   batch consumed -> trained and searchable: p50 {fr['p50']:.1f} ms, p99 {fr['p99']:.1f} ms; "
      f"new item -> searchable p50 {fr['new_item_p50']:.2f} ms")
print(f"new item    'brand-new-item' clicked after {known}: in similar({known}) after "
      + (f"{seen_ms} ms (incl. kcat start-up)" if int(seen_ms) >= 0 else "-- not seen within 2.5 s"))
print(f"memory      rss {mem['rss_bytes']/2**20:.0f} MiB")
# Example users: their session and recall, with the planted truth beside.
shown = 0
city_share = fav_share = total = 0
for u, (home, favs) in list(users.items())[:400]:
    r = req({"op": "recall", "user_id": u, "k": 50})
    if not r.get("ok") or r.get("fallback"):
        continue
    for it in r["items"]:
        comm, city, _ = items.get(it["item_id"], (-1, "", ""))
        city_share += it["city"] == home
        fav_share += comm in favs
        total += 1
    if shown < 1:
        sess = req({"op": "user", "user_id": u})
        print()
        print(f"example user {u}: home city {home}, planted favourite communities {sorted(favs)}")
        print("  recent clicks (oldest first):")
        for c in sess["clicks"][-8:]:
            comm = items.get(c["item_id"], (-1,))[0]
            print(f"    {c['item_id']:>8}  {c['city']}/{c['cate']}  community {comm}")
        print("  recall (top 10 of 50):")
        for it in r["items"][:10]:
            comm = items.get(it["item_id"], (-1,))[0]
            mark = "favourite" if comm in favs else ""
            print(f"    {it['item_id']:>8}  score {it['score']:.3f}  {it['city']}/{it['cate']}  community {comm} {mark}")
        shown += 1
print()
if total:
    print(f"over {total // 50} users' top-50: {100*city_share/total:.0f}% of recalled items in the user's home city, "
          f"{100*fav_share/total:.0f}% in a planted favourite community")
PY
echo
echo "== stopping recalld (SIGTERM)"
kill -TERM "$pid"; wait "$pid"; echo "   exit status $?"; pid=
