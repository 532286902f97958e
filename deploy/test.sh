#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole suite
# in three passes — a normal build (build/), an AddressSanitizer+UBSan build
# with LeakSanitizer's check after every case (build-asan/), and a
# ThreadSanitizer build (build-tsan/). The last line is the sum over the passes:
# "N passed, N failed, N skipped". Exits non-zero when a build or a test
# failed, or a test skipped that is not in EXPECTED_SKIPS below.
#   deploy/test.sh               all three passes
#   deploy/test.sh --quick       normal build only
#   deploy/test.sh --asan-only   ASan+UBSan pass only
#   deploy/test.sh --tsan-only   TSan pass only
#   deploy/test.sh --no-tsan     normal and ASan passes
#   deploy/test.sh --stress N    every selected pass runs the suite N times in a
#                                row (ctest --repeat until-fail:N) beside busy
#                                loops that keep the CPUs loaded (RC_STRESS_HOGS
#                                of them, default one per CPU)
# Environment: RECALLD_DATA_DIR (the directory of the public click datasets;
# the tests that need it skip without it), RC_TEST_TIMEOUT (seconds per case,
# normal and ASan passes; the TSan pass gets 4 times as long), RC_STRESS_HOGS.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
ncpu=$(nproc)

# The only tests allowed to skip: they need the real datasets of
# $RECALLD_DATA_DIR, which a fresh clone does not have. Any other skip fails
# the run (a test that needs a program the suite cannot install must fail).
EXPECTED_SKIPS="clicklog_shared_datasets"

# Tests left out of the TSan pass, with the reason. Keep this short.
#  checkpoint_kill9_seed_*: the second kill -9 must land inside a checkpoint
#    write, a window of milliseconds the test finds by polling the data dir;
#    under TSan's slowdown it misses the window (in_write assertion) most
#    runs. The crash recovery they test runs in the normal and ASan passes,
#    and the checkpoint thread's concurrency under TSan in the other
#    checkpoint_* and lifecycle_* cases.
TSAN_EXCLUDE="checkpoint_kill9_seed_1 checkpoint_kill9_seed_2 checkpoint_kill9_seed_3"

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
passes="normal asan tsan"
stress=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) passes="normal" ;;
        --asan-only) passes="asan" ;;
        --tsan-only) passes="tsan" ;;
        --no-tsan) passes="normal asan" ;;
        --stress)
            stress=${2:-}
            [[ "$stress" =~ ^[1-9][0-9]*$ ]] || { echo "test.sh: --stress needs a count" >&2; exit 2; }
            shift ;;
        --stress=*)
            stress=${1#--stress=}
            [[ "$stress" =~ ^[1-9][0-9]*$ ]] || { echo "test.sh: --stress needs a count" >&2; exit 2; }
            ;;
        -h|--help) usage; exit 0 ;;
        *) echo "test.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

export RC_TEST_TIMEOUT=${RC_TEST_TIMEOUT:-300}
logdir=$(mktemp -d /tmp/recalld-test.XXXXXX)
hogs=()
cleanup() {
    for p in "${hogs[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    rm -rf "$logdir"
}
trap cleanup EXIT

if [ "$stress" -gt 0 ]; then
    nhogs=${RC_STRESS_HOGS:-$ncpu}
    echo "== stress: the suite $stress times per pass beside $nhogs busy loops"
    for _ in $(seq "$nhogs"); do
        bash -c 'while :; do :; done' &
        hogs+=($!)
        # at nice 0 even when this script runs under nice (needs the privilege)
        renice -n 0 -p "$!" >/dev/null 2>&1 || true
    done
fi

total_pass=0 total_fail=0 total_skip=0 bad=0
summary=()

# run_pass LABEL BUILD_DIR JOBS CTEST_TIMEOUT [env VAR=VALUE...] [ctest_args ARG...]:
# runs ctest in BUILD_DIR with those variables, adds its counts to the totals
# and checks the skips.
run_pass() {
    local label=$1 bdir=$2 jobs=$3 tmo=$4
    shift 4
    local envs=() args=()
    if [ "${1:-}" = env ]; then
        shift
        while [ $# -gt 0 ] && [ "$1" != ctest_args ]; do
            envs+=("$1")
            shift
        done
    fi
    [ "${1:-}" = ctest_args ] && shift
    args=("$@")
    local log="$logdir/$label.log" t0=$SECONDS status=0
    local repeat=()
    [ "$stress" -gt 0 ] && repeat=(--repeat "until-fail:$stress")
    echo "== tests ($label)"
    (cd "$bdir" && env "${envs[@]}" ctest --output-on-failure -j"$jobs" --timeout "$tmo" \
        "${repeat[@]}" "${args[@]}") 2>&1 |
        tee "$log" || status=$?
    local secs=$((SECONDS - t0))
    # ctest's summary: "NN% tests passed, F tests failed out of T"; skipped
    # tests count as passed there and are listed as "N - name (Skipped)".
    local line total failed skipped
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1 || true)
    if [ -z "$line" ]; then
        echo "== $label: no ctest summary (ctest exit $status)" >&2
        summary+=("$label: no result (ctest exit $status), ${secs}s")
        bad=1
        return 0
    fi
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
    local names
    names=$(sed -nE 's/^[[:space:]]*[0-9]+ - ([A-Za-z0-9_]+) \(Skipped\)$/\1/p' "$log" | sort -u)
    skipped=$(grep -c . <<<"$names" || true)
    local passed=$((total - failed - skipped))
    total_pass=$((total_pass + passed))
    total_fail=$((total_fail + failed))
    total_skip=$((total_skip + skipped))
    [ "$failed" -eq 0 ] || bad=1
    local n
    for n in $names; do
        if [[ " $EXPECTED_SKIPS " != *" $n "* ]]; then
            echo "== $label: unexpected skip: $n" >&2
            summary+=("$label: unexpected skip of $n")
            bad=1
        fi
    done
    summary+=("$label: $passed passed, $failed failed, $skipped skipped in ${secs}s")
}

build_pass() {
    local label=$1 bdir=$2
    shift 2
    local t0=$SECONDS
    echo "== build ($label)"
    if ! RC_BUILD_DIR=$bdir deploy/build.sh "$@"; then
        summary+=("$label: build failed")
        bad=1
        return 1
    fi
    echo "== build ($label): $((SECONDS - t0))s"
}

for pass in $passes; do
    case $pass in
    normal)
        build_pass RelWithDebInfo "$here/build" &&
            run_pass RelWithDebInfo build "$ncpu" 600
        ;;
    asan)
        build_pass ASan+UBSan "$here/build-asan" -DRC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
            run_pass ASan+UBSan build-asan "$ncpu" 900 env \
                ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}" \
                UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
                LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/tests/lsan.supp:print_suppressions=0}"
        ;;
    tsan)
        # ThreadSanitizer slows the cases down several times: 4x the time each,
        # and 4x the limits of the e2e waits for the daemon (RC_TEST_TIME_SCALE).
        # ignore_noninstrumented_modules: accesses made by libc calls from the
        # uninstrumented shared libraries (libuv, librdkafka, libgomp, ...) are
        # not checked (their locks still count): those libraries synchronise
        # with atomics and raw syscalls TSan cannot see (libuv closes
        # descriptors with syscall(SYS_close), so a reused descriptor number
        # looks like a race). recalld's own accesses are all checked.
        exclude=()
        if [ -n "$TSAN_EXCLUDE" ]; then
            echo "== not run under TSan: $TSAN_EXCLUDE"
            exclude=(-E "^($(tr ' ' '|' <<<"$TSAN_EXCLUDE"))\$")
        fi
        build_pass TSan "$here/build-tsan" -DRC_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            -DRC_TEST_TIMEOUT_S=$((RC_TEST_TIMEOUT * 4 + 60)) &&
            run_pass TSan build-tsan "$ncpu" $((RC_TEST_TIMEOUT * 4 + 60)) env \
                RC_TEST_TIMEOUT=$((RC_TEST_TIMEOUT * 4)) RC_TEST_TIME_SCALE=4 \
                TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:history_size=4:ignore_noninstrumented_modules=1:suppressions=$here/tests/tsan.supp}" \
                ctest_args "${exclude[@]}"
        ;;
    esac
done

echo "== summary"
for s in "${summary[@]}"; do
    echo "   $s"
done
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$bad" -eq 0 ]
