#!/usr/bin/env bash
# Installs what is missing (deploy/install-deps.sh) and builds recalld into
# build/ (or $RC_BUILD_DIR). Idempotent: quick when everything is in place.
#   deploy/build.sh [extra cmake -D options]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bdir=${RC_BUILD_DIR:-$here/build}
"$here/deploy/install-deps.sh" "$here/build/deps"
if [ ! -f "$bdir/CMakeCache.txt" ] || [ $# -gt 0 ]; then
    cmake -S "$here" -B "$bdir" -DRC_DEPS_PREFIX="$here/build/deps" "$@" >/dev/null
fi
# The progress lines are filtered out; the build's own exit status decides (an
# older binary left in $bdir must not pass for a build that failed).
set +e
cmake --build "$bdir" -j"$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ] || [ ! -x "$bdir/recalld" ]; then
    echo "build failed (cmake --build exit $status)" >&2
    exit 1
fi
