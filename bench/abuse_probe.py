#!/usr/bin/env python3
"""One probe of issue 11 against a running recalld, measured (bench/abuse.sh runs it).

While the probe's attack runs, two watchers measure what users of the daemon see:
  - a liveness prober: {"op":"health"} on a new connection every 50 ms (3 s timeout);
  - a good client: recall for a random known user on one connection, back to back.
Printed, one block per probe: RSS before/after (/proc/PID/status), health p99 and
failures during, good-client recall p99 and failures during, and what the daemon
refused or counted (stats and /metrics counters that moved, reply codes of the attack).
"""
import argparse
import json
import os
import random
import resource
import socket
import subprocess
import threading
import time
import urllib.request

A = None  # parsed arguments


def rss_mb():
    try:
        with open(f"/proc/{A.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return -1.0


def connect(timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(A.sock)
    return s


def readline(s, limit=1 << 26):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
        if len(buf) > limit:
            raise ValueError("reply too long")
    return buf


def request(obj, timeout=10.0):
    s = connect(timeout)
    try:
        s.sendall((json.dumps(obj) + "\n").encode())
        return json.loads(readline(s))
    finally:
        s.close()


def stats():
    try:
        return request({"op": "stats"}, 30.0)
    except Exception:  # noqa: BLE001 - a probe may leave the daemon unable to answer
        return {}


def metrics():
    out = {}
    if not A.metrics_port:
        return out
    try:
        url = f"http://127.0.0.1:{A.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#") and " " in line:
                    k, v = line.rsplit(" ", 1)
                    if k.startswith(("recalld_socket_", "recalld_kafka_dead", "recalld_events_")):
                        out[k] = float(v)
    except Exception:  # noqa: BLE001
        pass
    return out


def flat(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + k + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = v
    return out


class Watch:
    def __init__(self):
        self.stop = threading.Event()
        self.health, self.health_fail = [], 0
        self.recall, self.recall_fail = [], 0
        self.threads = [threading.Thread(target=self.prober, daemon=True),
                        threading.Thread(target=self.client, daemon=True)]

    def prober(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                r = request({"op": "health"}, 3.0)
                if r.get("ok"):
                    self.health.append(time.monotonic() - t0)
                else:
                    self.health_fail += 1
            except Exception:  # noqa: BLE001
                self.health_fail += 1
                self.health.append(3.0)  # a timeout counts as the probe's limit
            self.stop.wait(0.05)

    def client(self):
        rnd = random.Random(7)
        s = None
        while not self.stop.is_set():
            try:
                if s is None:
                    s = connect(5.0)
                u = f"u{rnd.randrange(A.users)}"
                t0 = time.monotonic()
                s.sendall((json.dumps({"op": "recall", "user_id": u, "k": 50}) + "\n").encode())
                r = json.loads(readline(s))
                if r.get("ok"):
                    self.recall.append(time.monotonic() - t0)
                else:
                    self.recall_fail += 1
            except Exception:  # noqa: BLE001
                self.recall_fail += 1
                if s is not None:
                    s.close()
                s = None
                self.stop.wait(0.05)
        if s is not None:
            s.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def p99_s(xs):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def p99(xs, ref=None):
    """p99 in ms, and its ratio to the reference run's (probe 0) when known."""
    v = p99_s(xs)
    if v is None:
        return "n/a"
    return f"{v * 1000:.1f} ms" + (f" ({v / ref:.1f}x the quiet run)" if ref else "")


def kcat(lines):
    path = os.path.join(A.tmp, "probe.tsv")
    with open(path, "w") as f:
        f.write("".join(lines))
    subprocess.run(["kcat", "-P", "-b", A.bootstrap, "-t", "clicks", "-K", "\t", "-l", path],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.unlink(path)


def wait_consumed(n0, n, limit_s=600):
    """Until n more events are accounted for and the index has nothing pending."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        e = stats().get("events", {})
        done = e.get("applied", 0) + e.get("invalid", 0) + e.get("ignored", 0) + \
            e.get("rejected_capacity", 0)
        if done >= n0 + n and stats().get("index", {}).get("pending", 1) == 0:
            return True
        time.sleep(0.2)
    return False


def accounted():
    e = stats().get("events", {})
    return e.get("applied", 0) + e.get("invalid", 0) + e.get("ignored", 0) + \
        e.get("rejected_capacity", 0)


# ---- the probes -------------------------------------------------------------

def probe1(notes):
    """70,000 events with distinct city_id values (partition overflow)."""
    n0, T = accounted(), 1700000000000
    kcat([f"x{i % 97}\t" + json.dumps({"user_id": f"x{i % 97}", "item_id": f"p1_{i}",
                                       "city_id": f"pc{i}", "cate_id": "k0", "ts": T + i}) + "\n"
          for i in range(70000)])
    ok = wait_consumed(n0, 70000)
    notes.append(f"all 70,000 accounted and index pending 0: {ok}")


def probe2(notes):
    """ts = INT64_MAX for a known user, then that user's real clicks."""
    n0 = accounted()
    now = stats().get("events", {}).get("max_ts", 0) + 1000  # the stream's time, not ours
    u = "u1"
    lines = [f"{u}\t" + json.dumps({"user_id": u, "item_id": "i1", "city_id": "c0",
                                    "cate_id": "k0", "ts": 9223372036854775807}) + "\n"]
    lines += [f"{u}\t" + json.dumps({"user_id": u, "item_id": f"i{j}", "city_id": "c0",
                                     "cate_id": "k0", "ts": now + j}) + "\n"
              for j in range(2, 12)]
    kcat(lines)
    wait_consumed(n0, len(lines))
    r = request({"op": "user", "user_id": u}, 10.0)
    ts = [c["ts"] for c in r.get("clicks", [])]
    notes.append(f"user {u} newest click ts {max(ts) if ts else None} (INT64_MAX would be poison)")


def probe3(notes):
    """4 concurrent recalls: users[256], k 1000, exact, city *."""
    users = [f"u{i}" for i in range(256)]
    req = {"op": "recall", "users": users, "k": 1000, "exact": True, "city": "*"}
    codes, lock = [], threading.Lock()

    def one():
        t0 = time.monotonic()
        try:
            r = request(req, 120.0)
            c = "ok" if r.get("ok") else r.get("error", {}).get("code", "?")
        except Exception as e:  # noqa: BLE001
            c = type(e).__name__
        with lock:
            codes.append(f"{c} in {time.monotonic() - t0:.1f} s")
    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    notes.append("attack replies: " + "; ".join(codes))


def probe4(notes):
    """reload_model with paths a client should not be able to name."""
    fifo = os.path.join(A.tmp, "fifo")
    sparse = os.path.join(A.tmp, "sparse.bin")
    os.mkfifo(fifo)
    with open(sparse, "wb") as f:
        f.truncate(A.sparse_gb << 30)
    codes = []
    for p in ["/etc/shadow", "/etc/passwd", "/nonexistent/x", sparse]:
        try:
            r = request({"op": "reload_model", "path": p}, 60.0)
            codes.append(f"{p}: " + ("ok" if r.get("ok") else
                                     f"{r['error']['code']} ({r['error']['message'][:60]})"))
        except Exception as e:  # noqa: BLE001
            codes.append(f"{p}: {type(e).__name__}")

    # The FIFO last: a loader that opens it blocks until a writer comes;
    # the writer below unblocks it (EOF) after the measurement.
    def fifo_req():
        try:
            r = request({"op": "reload_model", "path": fifo}, 10.0)
            codes.append(f"fifo: " + ("ok" if r.get("ok") else r["error"]["code"]))
        except Exception as e:  # noqa: BLE001
            codes.append(f"fifo: {type(e).__name__} (no answer in 10 s)")
    t = threading.Thread(target=fifo_req)
    t.start()
    t.join()
    try:
        r = request({"op": "reload_model", "path": "/etc/passwd"}, 10.0)
        codes.append("reload after fifo: " + ("ok" if r.get("ok") else r["error"]["code"]))
    except Exception as e:  # noqa: BLE001
        codes.append(f"reload after fifo: {type(e).__name__}")
    for _ in range(20):  # a writer that opens and closes gives a blocked loader EOF
        _has_reader(fifo)
        time.sleep(0.1)
    os.unlink(fifo)
    os.unlink(sparse)
    notes.append("replies: " + "; ".join(codes))


def _has_reader(fifo):
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        return True
    except OSError:
        return False


def probe5(notes):
    """1,000 clients that never read, then 1,100 idle connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    line = (json.dumps({"op": "recall", "user_id": "u1", "k": 1000}) + "\n").encode() * 64
    socks, refused = [], 0
    for _ in range(A.slow_clients):
        try:
            s = connect(2.0)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            refused += 1
    deadline = time.monotonic() + A.slow_seconds
    while time.monotonic() < deadline:
        for s in socks:
            try:
                s.send(line)
            except OSError:
                pass
        time.sleep(0.2)
    peak = rss_mb()
    for s in socks:
        s.close()
    idle, irefused = [], 0
    for _ in range(1100):
        try:
            idle.append(connect(2.0))
        except OSError:
            irefused += 1
    time.sleep(2.0)
    try:
        h = request({"op": "health"}, 3.0)
        hs = "ok" if h.get("ok") else h.get("error", {}).get("code")
    except Exception as e:  # noqa: BLE001
        hs = type(e).__name__
    for s in idle:
        s.close()
    notes.append(f"slow clients connected {len(socks)} (refused at connect {refused}), RSS peak "
                 f"{peak:.0f} MB; idle connections held {len(idle)} (refused {irefused}); "
                 f"health with them open: {hs}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def probe6(notes):
    """Bounds: new items past model.max_items, users past sessions.max_users,
    fat malformed events against the dead-letter file's cap."""
    n0, T = accounted(), 1700000000000
    cfg = stats()
    pad = "x" * 6000
    # past model.max_items whatever the load left: the room plus 5% of the items
    n_items = max(0, A.max_items - cfg.get("items", 0)) + A.users // 20
    n_users, n_bad = A.flood_users, A.flood_bad
    lines = [f"f{i % 211}\t" + json.dumps({"user_id": f"f{i % 211}", "item_id": f"n6_{i}",
                                           "city_id": "c0", "cate_id": "k0", "ts": T + i}) + "\n"
             for i in range(n_items)]
    lines += [f"g{i}\t" + json.dumps({"user_id": f"g{i}", "item_id": "i1", "city_id": "c0",
                                      "cate_id": "k0", "ts": T + i}) + "\n"
              for i in range(n_users)]
    lines += [f"b{i % 13}\t" + json.dumps({"user_id": "b", "item_id": "i1", "city_id": "c0",
                                           "cate_id": "k0", "ts": pad}) + "\n"
              for i in range(n_bad)]
    for i in range(0, len(lines), 200000):
        kcat(lines[i:i + 200000])
    ok = wait_consumed(n0, len(lines))
    dlq = A.dlq
    sizes = [os.path.getsize(p) if os.path.exists(p) else 0 for p in (dlq, dlq + ".1")]
    notes.append(f"{n_items} new items, {n_users} new users, {n_bad} malformed 6 KB events; "
                 f"accounted: {ok}; dead-letter files {sizes[0] >> 20} MiB + {sizes[1] >> 20} MiB "
                 f"(items before: {cfg.get('items')})")


def probe0(notes):
    """The reference: the same watchers for 5 s with no attack."""
    time.sleep(5.0)
    notes.append("reference for the ratios below")


PROBES = {0: ("quiet reference run: no attack", probe0),
          1: ("partition overflow: 70,000 distinct city_id", probe1),
          2: ("event time: ts = INT64_MAX, then real clicks", probe2),
          3: ("CPU: 4 x recall users[256] k 1000 exact city *", probe3),
          4: ("reload_model paths: /etc/shadow, missing, sparse file, FIFO", probe4),
          5: ("memory/connections: clients that never read, 1,100 idle connections", probe5),
          6: ("bounds: max_items, max_users, dead-letter file", probe6)}

WATCH_KEYS = ("events.", "index.overflow_rows", "index.partitions", "index.pending", "index.size",
              "items", "users.", "kafka.dead_letter", "kafka.dlq_rotations", "two_tower.errors")


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--probe", type=int, required=True)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--dlq", required=True)
    ap.add_argument("--metrics-port", type=int, default=0)
    ap.add_argument("--sparse-gb", type=int, default=1)
    ap.add_argument("--slow-clients", type=int, default=1000)
    ap.add_argument("--slow-seconds", type=float, default=10.0)
    ap.add_argument("--max-items", type=int, required=True)
    ap.add_argument("--flood-users", type=int, default=100000)
    ap.add_argument("--flood-bad", type=int, default=100000)
    A = ap.parse_args()
    title, fn = PROBES[A.probe]
    s0, m0, r0 = flat(stats()), metrics(), rss_mb()
    notes = []
    t0 = time.monotonic()
    with Watch() as w:
        fn(notes)
        time.sleep(1.0)
    took = time.monotonic() - t0
    s1, m1, r1 = flat(stats()), metrics(), rss_mb()
    alive = os.path.exists(f"/proc/{A.pid}")
    ref_path = os.path.join(A.tmp, "reference.json")
    if A.probe == 0:
        with open(ref_path, "w") as f:
            json.dump({"health": p99_s(w.health), "recall": p99_s(w.recall)}, f)
    ref = {}
    if A.probe != 0 and os.path.exists(ref_path):
        with open(ref_path) as f:
            ref = json.load(f)
    print(f"== probe {A.probe}: {title}  ({took:.1f} s)")
    print(f"   RSS {r0:.0f} MB -> {r1:.0f} MB; daemon alive: {alive}")
    print(f"   health p99 {p99(w.health, ref.get('health'))} over {len(w.health)} probes, "
          f"{w.health_fail} of them failed or timed out (counted as 3 s)")
    print(f"   good client recall p99 {p99(w.recall, ref.get('recall'))} over {len(w.recall)} ok, "
          f"{w.recall_fail} failed")
    moved = [f"{k} +{s1[k] - s0.get(k, 0):g}" for k in sorted(s1)
             if k.startswith(WATCH_KEYS) and s1[k] != s0.get(k, 0) and k != "events.max_ts"]
    moved += [f"{k} +{m1[k] - m0.get(k, 0):g}" for k in sorted(m1)
              if (k.endswith("_total") or "refused" in k or "dropped" in k)
              and m1[k] != m0.get(k, 0) and not k.startswith("recalld_events_")]
    print("   counted: " + (", ".join(moved) if moved else "nothing"))
    if "index.pending" in s1:
        print(f"   now: index.size {s1.get('index.size'):g}, pending {s1.get('index.pending'):g}, "
              f"partitions {s1.get('index.partitions'):g}")
    for n in notes:
        print("   " + n)


if __name__ == "__main__":
    main()
