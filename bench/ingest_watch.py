#!/usr/bin/env python3
"""Watches one daemon ingest a pre-loaded stream, for bench/ingest.sh.

    ingest_watch.py SOCKET EVENTS DAEMON_PID BROKER_PID [INTERVAL_S]

Asks `stats` every INTERVAL_S (0.05) over ONE connection to the daemon's
socket until events.applied reaches EVENTS, and prints one line:

    events/s cpu_us_per_event broker_cpu_us_per_event threads

events/s counts from the first poll that saw an applied event to the one that
saw EVENTS; the CPU figures are the daemon's and the broker's user + system
time over the same span, per event; threads names the daemon's 4 busiest
threads with their CPU per event over the whole run (start-up included).

One long-lived process on purpose: a poll that starts programs (recallctl,
grep, python3) 20 times a second took a quarter of the daemon's throughput on
the 2-core machine (2026-12-03: 131-134k against 192-197k events/s), so that
the figure measured the poller.
"""
import json
import os
import socket
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def ticks(path):
    with open(path) as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[11]) + int(fields[12])  # utime + stime


def threads(pid, n):
    out = []
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open("%s/%s/comm" % (base, tid)) as f:
                name = f.read().strip()
            out.append((ticks("%s/%s/stat" % (base, tid)), name))
        except OSError:
            pass
    out.sort(reverse=True)
    return " ".join("%s=%.2f" % (name, t / HZ / n * 1e6) for t, name in out[:4])


def main():
    path, want, dpid, bpid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    iv = float(sys.argv[5]) if len(sys.argv) > 5 else 0.05
    deadline = time.time() + 60
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            break
        except OSError:
            s.close()
            if time.time() > deadline:
                sys.exit("ingest_watch: no socket at %s in 60 s" % path)
            time.sleep(0.05)
    f = s.makefile("rwb")
    first = None
    while True:
        f.write(b'{"op":"stats"}\n')
        f.flush()
        line = f.readline()
        if not line:
            sys.exit("ingest_watch: the daemon closed the socket")
        now = time.time()
        d = json.loads(line)
        a = d["events"]["applied"] if d.get("ok") else 0
        if first is None and a > 0:
            first = (now, a, ticks("/proc/%d/stat" % dpid), ticks("/proc/%d/stat" % bpid))
        if first and a >= want:
            break
        time.sleep(iv)
    dt, n = now - first[0], a - first[1]
    cpu = (ticks("/proc/%d/stat" % dpid) - first[2]) / HZ / n * 1e6
    bcpu = (ticks("/proc/%d/stat" % bpid) - first[3]) / HZ / n * 1e6
    print("%d %.2f %.2f %s" % (round(n / dt), cpu, bcpu, threads(dpid, a)))


if __name__ == "__main__":
    main()
