#!/usr/bin/env python3
"""Where a process's resident memory is: /proc/PID/smaps grouped by kind, and,
given malloc_info's XML (glibc), what each arena holds free and in which sizes.

    bench/memmap.py PID [MALLOC_INFO.xml]

Kinds: file-backed, [heap] (the main arena), malloc's other arenas (64 MiB
reservations), large anonymous maps (blocks malloc mapped on their own, FAISS's
and our big arrays), thread stacks and the rest. MB are 10^6 bytes."""
import re
import sys
import xml.etree.ElementTree as ET


def smaps(pid):
    kinds = {}
    cur = None
    with open("/proc/%s/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$", line)
            if m:
                lo, hi = int(m.group(1), 16), int(m.group(2), 16)
                name = m.group(5).strip()
                size = hi - lo
                if name == "[heap]":
                    k = "main arena ([heap])"
                elif name.startswith("[stack"):
                    k = "stacks"
                elif name and not name.startswith("["):
                    k = "file-backed"
                elif size == 64 << 20 or (lo & ((64 << 20) - 1)) == 0 and size < 64 << 20:
                    k = "malloc arenas (64 MiB aligned)"
                elif size >= 256 << 10:
                    k = "anonymous maps >= 256 KiB"
                else:
                    k = "anonymous maps < 256 KiB"
                cur = kinds.setdefault(k, [0, 0])
                cur[1] += 1
                continue
            if cur is not None and line.startswith("Rss:"):
                cur[0] += int(line.split()[1]) * 1024
    return kinds


def minfo(path):
    root = ET.parse(path).getroot()
    out = []
    for heap in root.findall("heap"):
        buckets = []
        for s in heap.find("sizes"):
            if s.tag in ("size", "unsorted"):
                lo, hi = int(s.get("from")), int(s.get("to"))
                buckets.append((lo, hi, int(s.get("total")), int(s.get("count"))))
        free = sum(int(t.get("size")) for t in heap.findall("total"))
        sysc = [int(s.get("size")) for s in heap.findall("system") if s.get("type") == "current"]
        out.append((heap.get("nr"), free, sysc[0] if sysc else 0, buckets))
    return out


def main():
    pid = sys.argv[1]
    tot = 0
    print("   resident by kind, MB (mappings):")
    for k, (rss, n) in sorted(smaps(pid).items(), key=lambda kv: -kv[1][0]):
        tot += rss
        print("     %-32s %9.1f (%d)" % (k, rss / 1e6, n))
    print("     %-32s %9.1f" % ("total", tot / 1e6))
    if len(sys.argv) > 2:
        print("   malloc arenas: free MB of system MB, and the free chunks by size:")
        for nr, free, sysc, buckets in minfo(sys.argv[2]):
            small = sum(t for lo, hi, t, c in buckets if hi < 4096)
            mid = sum(t for lo, hi, t, c in buckets if hi >= 4096 and lo < 65536)
            big = sum(t for lo, hi, t, c in buckets if lo >= 65536)
            print("     arena %s: free %.1f of %.1f; in chunks < 4 KiB %.1f, 4-64 KiB %.1f, >= 64 KiB %.1f"
                  % (nr, free / 1e6, sysc / 1e6, small / 1e6, mid / 1e6, big / 1e6))
            if small > 5e6:  # the sizes that hold it: what left those holes
                top = sorted((b for b in buckets if b[1] < 4096), key=lambda b: -b[2])[:8]
                print("       most free bytes in chunks of: " +
                      ", ".join("%d-%d B %.1f MB (%d)" % (lo, hi, t / 1e6, c) for lo, hi, t, c in top))


if __name__ == "__main__":
    main()
