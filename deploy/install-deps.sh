#!/usr/bin/env bash
# Install recalld's build and test dependencies from Debian's archive and build
# FAISS's C API (libfaiss_c) from Debian's faiss source package.
#
# Idempotent: every step checks first and returns at once when its work is done.
# Usage: deploy/install-deps.sh [--runtime-only] [PREFIX]
#   PREFIX (default: build/deps) receives lib/libfaiss_c.a and include/faiss/c_api/.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$here/build/deps}
log() { printf 'install-deps: %s\n' "$*" >&2; }

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive

pkgs=(build-essential cmake pkg-config
      librdkafka-dev libuv1-dev libjansson-dev libopenblas-dev
      libfaiss-dev libgomp1 zlib1g-dev kcat python3 dpkg-dev)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# deb-src entry: needed for `apt-get source faiss`. Derive it from the deb entries.
ensure_deb_src() {
    if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    log "adding a deb-src entry derived from the existing deb entries"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed -e 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources |
            $SUDO tee /etc/apt/sources.list.d/recalld-src.sources >/dev/null
    else
        grep -hE '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' |
            $SUDO tee /etc/apt/sources.list.d/recalld-src.list >/dev/null
    fi
    return 1
}

need_update=0
faiss_c_lib=$prefix/lib/libfaiss_c.a
if [ ! -f "$faiss_c_lib" ]; then
    ensure_deb_src || need_update=1
fi
if [ ${#missing[@]} -gt 0 ] || [ "$need_update" = 1 ]; then
    log "apt-get update"
    $SUDO apt-get update -q >/dev/null
fi
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f "$faiss_c_lib" ]; then
    exit 0
fi

# FAISS C API: Debian ships its headers in libfaiss-dev but not the compiled
# c_api; compile it from the matching source package against libfaiss.a.
work=$here/build/faiss-src
mkdir -p "$work"
if ! ls -d "$work"/faiss-*/c_api >/dev/null 2>&1; then
    log "apt-get source faiss (into $work)"
    (cd "$work" && apt-get source -q --download-only faiss >/dev/null &&
        dpkg-source -x --no-check ./*.dsc >/dev/null 2>&1 || dpkg-source -x ./*.dsc >/dev/null)
fi
src=$(ls -d "$work"/faiss-*/ | head -n 1)
log "compiling FAISS C API from $src"
mkdir -p "$prefix/lib" "$work/obj"
objs=()
for f in "$src"/c_api/*.cpp "$src"/c_api/impl/*.cpp "$src"/c_api/utils/*.cpp; do
    [ -f "$f" ] || continue
    o=$work/obj/$(basename "${f%.cpp}").o
    g++ -std=c++17 -O2 -fPIC -fopenmp -I"$src" -c "$f" -o "$o"
    objs+=("$o")
done
ar rcs "$faiss_c_lib.tmp" "${objs[@]}"
mv "$faiss_c_lib.tmp" "$faiss_c_lib"
log "built $faiss_c_lib (${#objs[@]} objects)"
