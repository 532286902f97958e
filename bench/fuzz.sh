#!/usr/bin/env bash
# Fuzzing with libFuzzer (clang): builds the targets of tests/fuzz/ with
# -DRC_FUZZ=ON in a build directory of their own and runs each for SECONDS.
#
#   bench/fuzz.sh [SECONDS] [TARGET...]     run (default 60 s, every target)
#   bench/fuzz.sh merge [TARGET...]         minimise the committed corpus (no rebuild)
#
# Each target starts from its committed seeds (tests/fuzz/corpus/T) and a work
# corpus kept between runs ($RC_FUZZ_BUILD/fuzz-work/T); what it finds goes to
# the work corpus, crashes to $RC_FUZZ_BUILD/fuzz-artifacts/T/ (the script
# then exits 1). `merge` rewrites tests/fuzz/corpus/T as the smallest set of
# inputs covering what the seeds and the work corpus cover (libFuzzer
# -merge=1 -use_counters=0); keep it under 300 files and 1 MB per target.
# Environment: RC_FUZZ_BUILD (default build-fuzz), RC_FUZZ_JOBS (parallel
# targets, default 1), RC_FUZZ_ARGS (more libFuzzer flags).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bdir=${RC_FUZZ_BUILD:-$here/build-fuzz}
all="event api model clicklog checkpoint recall state"
mode=run
if [ "${1:-}" = merge ]; then
    mode=merge
    shift
    secs=0
else
    secs=${1:-60}
    [ $# -gt 0 ] && shift
fi
targets=${*:-$all}

present=""
for t in $targets; do
    if [ -f "$here/tests/fuzz/fuzz_$t.c" ]; then
        present="$present $t"
    else
        echo "fuzz: no target $t (tests/fuzz/fuzz_$t.c), skipped" >&2
    fi
done
if [ "$mode" = run ]; then
    CC=clang CXX=clang++ cmake -S "$here" -B "$bdir" -DRC_FUZZ=ON >/dev/null
    # shellcheck disable=SC2086
    cmake --build "$bdir" -j"$(nproc)" \
        $(for t in $present; do printf -- '--target fuzz_%s ' "$t"; done) >/dev/null
fi
for t in $present; do
    [ -x "$bdir/fuzz/fuzz_$t" ] || { echo "fuzz: $bdir/fuzz/fuzz_$t missing: run first" >&2; exit 2; }
done

run_one() {
    t=$1
    seeds=$here/tests/fuzz/corpus/$t
    work=$bdir/fuzz-work/$t
    art=$bdir/fuzz-artifacts/$t
    log=$bdir/fuzz-$t.log
    mkdir -p "$work" "$art"
    # shellcheck disable=SC2086
    "$bdir/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=140000 -print_final_stats=1 -artifact_prefix="$art/" ${RC_FUZZ_ARGS:-} \
        "$work" "$seeds" >"$log" 2>&1 || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=$(find "$art" -type f | wc -l)
    printf '%-11s %5ss %12s execs  work corpus %5s files  seeds %4s files %6s KB  artifacts %s\n' \
        "$t" "$secs" "${execs:-?}" "$(find "$work" -type f | wc -l)" \
        "$(find "$seeds" -type f | wc -l)" "$(du -sk "$seeds" | cut -f1)" "$crashes"
    [ "$crashes" -eq 0 ] || { echo "fuzz: $t: see $art and $log" >&2; return 1; }
}

merge_one() {
    t=$1
    seeds=$here/tests/fuzz/corpus/$t
    new=$(mktemp -d)
    # edges only (no hit-count buckets): a smaller corpus that still reaches
    # every line the fuzzer reached
    "$bdir/fuzz/fuzz_$t" -merge=1 -use_counters=0 -max_len=140000 -timeout=10 "$new" "$seeds" \
        "$bdir/fuzz-work/$t" >"$bdir/fuzz-merge-$t.log" 2>&1
    rm -rf "$seeds"
    mkdir -p "$seeds"
    cp "$new"/* "$seeds"/
    rm -rf "$new"
    printf '%-11s merged: %4s files %6s bytes\n' "$t" "$(find "$seeds" -type f | wc -l)" \
        "$(cat "$seeds"/* | wc -c)"
}

status=0
if [ "$mode" = merge ]; then
    for t in $present; do merge_one "$t"; done
    exit 0
fi
jobs=${RC_FUZZ_JOBS:-1}
running=0
for t in $present; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n 2>/dev/null || status=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n 2>/dev/null || status=1
    running=$((running - 1))
done
exit $status
