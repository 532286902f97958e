# Shared by the bench scripts that run recalld against recalld-broker; sourced
# right after `set -euo pipefail`:
#   bench_init NAME [SIGNAL]  sets B (the build: $RC_BUILD_DIR or build/), tmp
#                             (a private directory, removed at exit) and pids
#                             (processes sent SIGNAL, default TERM, at exit)
#   broker_start DIR PARTS [fifo] [ARG...]
#                             starts recalld-broker with PARTS partitions of
#                             topic clicks (and the ARGs, e.g. --topic NAME),
#                             its files in DIR; sets bs (its
#                             bootstrap address) and bpid. With "fifo" its stdin
#                             is DIR/broker.in, held open on fd 9: fault commands
#                             are written there (recalld-broker --help)
#   stats SOCK                a daemon's stats as JSON (fails while it is not up)
#   (a run that fails prints the last lines of the *.log files in tmp at exit)
#   field PATH                a field of the JSON on stdin, PATH like ["a"]["b"]
#   cpu_ticks PID             a process's user + system CPU, in clock ticks

bench_init() {
    here=$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)
    B=${RC_BUILD_DIR:-$here/build}
    tmp=$(mktemp -d "/tmp/rc-bench-$1.XXXXXX")
    pids=()
    bench_sig=${2:-TERM}
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local st=$? f
    if [ "$st" != 0 ]; then # a failed run says why before its files go
        for f in "$tmp"/*.log; do
            [ -s "$f" ] && { echo "== $(basename "$f") (last lines):"; tail -n 5 "$f"; } >&2
        done
    fi
    exec 2>/dev/null # at exit: no "Killed" notices for the processes stopped here
    for p in "${pids[@]}"; do kill -s "$bench_sig" "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}

broker_start() {
    local dir=$1 parts=$2 fifo= i
    shift 2
    if [ "${1:-}" = fifo ]; then
        fifo=1
        shift
    fi
    if [ -n "$fifo" ]; then
        mkfifo "$dir/broker.in"
        "$B/recalld-broker" --partitions "$parts" "$@" <"$dir/broker.in" >"$dir/broker.out" \
            2>"$dir/broker.log" &
        bpid=$!
        exec 9>"$dir/broker.in" # keeps the broker's stdin open
    else
        "$B/recalld-broker" --partitions "$parts" "$@" >"$dir/broker.out" 2>"$dir/broker.log" &
        bpid=$!
    fi
    pids+=("$bpid")
    for i in $(seq 600); do # its first line is the bootstrap address
        [ -s "$dir/broker.out" ] && break
        kill -0 "$bpid" 2>/dev/null || { echo "recalld-broker exited: $(tail -3 "$dir/broker.log")" >&2; exit 1; }
        sleep 0.1
    done
    bs=$(head -1 "$dir/broker.out")
    [ -n "$bs" ] || { echo "recalld-broker printed no address in 60 s ($dir/broker.log)" >&2; exit 1; }
}

# A loaded machine can hold a stats reply past recallctl's 5 s default: up to
# 3 tries of 20 s before it counts as down.
stats() {
    local out i
    for i in 1 2 3; do
        out=$("$B/recallctl" --socket "$1" --timeout 20000 --raw stats 2>/dev/null) && [ -n "$out" ] &&
            { printf '%s\n' "$out"; return 0; }
        sleep 1
    done
    return 1
}
# The system interpreter when there is one: a version manager's shim costs a
# second a call, and the wait loops call this every half second.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
field() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
