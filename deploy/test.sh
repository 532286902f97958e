#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole suite
# twice — a normal build, then an AddressSanitizer+UBSan build.
#   deploy/test.sh            both builds
#   deploy/test.sh --quick    normal build only
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
ncpu=$(nproc)
# Tests that need a program the suite cannot install must fail, not skip.
export RC_TEST_TIMEOUT=${RC_TEST_TIMEOUT:-300}

echo "== build (RelWithDebInfo)"
RC_BUILD_DIR=$here/build deploy/build.sh
echo "== tests (RelWithDebInfo)"
(cd build && ctest --output-on-failure -j"$ncpu" --timeout 600)

if [ "${1:-}" != "--quick" ]; then
    echo "== build (ASan+UBSan)"
    RC_BUILD_DIR=$here/build-asan deploy/build.sh -DRC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
    echo "== tests (ASan+UBSan)"
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    if [ -f "$here/tests/lsan.supp" ]; then
        export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/tests/lsan.supp:print_suppressions=0}
    fi
    (cd build-asan && ctest --output-on-failure -j"$ncpu" --timeout 900)
fi
