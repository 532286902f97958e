#!/usr/bin/env bash
# Builds recalld's container image on a machine without a Docker engine, with Debian's
# podman and buildah, then smoke-tests it. Not part of the test suite (CI needs no podman).
#
#   deploy/build-image.sh [--smoke-only]
#
# 1. tools: podman buildah debootstrap uidmap fuse-overlayfs (apt-get, when missing);
# 2. base image localhost/debian:bookworm, when missing: debootstrap --variant=minbase from
#    the mirror named by the host's apt sources (read now, never written into the project);
# 3. build: buildah bud --isolation chroot of deploy/Dockerfile, from a copy of the working
#    tree without build*/ and .git (uncommitted files included);
# 4. smoke test, inside ONE `buildah run` of the image as its own (non-root) user: recalld on
#    its embedded Kafka, recalld-gen produces a generated stream to it, `recallctl recall`
#    returns items, `recallctl health` exits 0, SIGTERM stops recalld with exit status 0.
#
# Environment: RC_IMAGE (default localhost/recalld), RC_BASE_IMAGE (default
# localhost/debian:bookworm), RC_SMOKE_EVENTS (default 20000).
# Exit status 0 iff the build and every smoke check passed.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
image=${RC_IMAGE:-localhost/recalld}
base=${RC_BASE_IMAGE:-localhost/debian:bookworm}
events=${RC_SMOKE_EVENTS:-20000}
smoke_only=0
case "${1:-}" in
    --smoke-only) smoke_only=1 ;;
    "") ;;
    *) echo "usage: deploy/build-image.sh [--smoke-only]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive
t_start=$(date +%s)
log() { printf '== build-image: %s\n' "$*"; }
elapsed() { echo $(( $(date +%s) - $1 )); }

work=$(mktemp -d --tmpdir=/var/tmp)
ctr=
# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
    if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# ---- 1. tools
missing=()
for p in podman buildah debootstrap uidmap fuse-overlayfs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing[@]}" >/dev/null
fi

# ---- 2. base image
mirror() {
    local m=
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $2 !~ /^\[/ { print $2; exit }' /etc/apt/sources.list)
    fi
    [ -n "$m" ] || { echo "build-image: no Debian mirror in the apt sources" >&2; return 1; }
    echo "$m"
}

t_base=$(date +%s)
if podman image exists "$base"; then
    log "base image $base present"
else
    m=$(mirror)
    log "debootstrap --variant=minbase bookworm (mirror from the host's apt sources: $m)"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$m" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 30 "$work/debootstrap.log"; exit 1; }
    # Package caches are no part of a base image.
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    tar -C "$work/rootfs" -c . | podman import - "$base" >/dev/null
    rm -rf "$work/rootfs"
    log "base image $base imported in $(elapsed "$t_base") s"
fi

# ---- 3. build
t_build=$(date +%s)
if [ "$smoke_only" = 0 ]; then
    ctx=$work/context
    mkdir -p "$ctx"
    tar -C "$here" --anchored --exclude='./build*' --exclude='./.git' -cf - . | tar -C "$ctx" -xf -
    log "context: $(du -sh "$ctx" | cut -f1) from the working tree (build*/ and .git excluded)"
    # --format docker: the OCI image format has no HEALTHCHECK; buildah would drop it.
    # --layers: reuse the dependency layer (apt + FAISS C API) when only sources change.
    log "buildah bud --isolation chroot ... -t $image -f deploy/Dockerfile ."
    (cd "$ctx" && buildah bud --isolation chroot --format docker --layers \
        --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
        --build-arg BASE="$base" -t "$image" -f deploy/Dockerfile .)
    log "image built in $(elapsed "$t_build") s"
fi
podman image exists "$image" || { echo "build-image: no image $image" >&2; exit 1; }

# ---- 4. smoke test: one shell inside the image, as the image's user.
# shellcheck disable=SC2016 # expanded inside the container
smoke='
set -u
d=$(mktemp -d)
pid=
fail() {
    echo "smoke: FAIL: $*"
    if [ -f "$d/recalld.log" ]; then tail -n 20 "$d/recalld.log" | sed "s/^/  recalld.log: /"; fi
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null; fi
    exit 1
}
ok() { echo "smoke: ok   $*"; }
field() { recallctl --raw stats | sed -n "s/.*\"$1\":\"*\([^\",}]*\).*/\1/p"; }

echo "smoke: $(recalld --version), user $(id -un) (uid $(id -u), gid $(id -g))"
[ "$(id -u)" != 0 ] || fail "runs as root"
for dir in /run/recalld /var/lib/recalld; do
    [ -w "$dir" ] || fail "$dir is not writable by $(id -un)"
done
recalld --config /etc/recalld/recalld.json --check-config >/dev/null || fail "image config invalid"
ok "non-root user; /run/recalld and /var/lib/recalld writable; /etc/recalld/recalld.json valid"

export RECALLD_SOCKET="$d/recalld.sock"
# --metrics-port 0: `buildah run` shares the host network, whose port 9464 may be taken.
recalld --config /etc/recalld/recalld.json --embedded-kafka --socket "$RECALLD_SOCKET" \
    --metrics-port 0 --log-level info 2>"$d/recalld.log" &
pid=$!
i=0
until recallctl health >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "recalld exited during start"
    i=$((i + 1)); [ "$i" -le 300 ] || fail "recalld not healthy after 60 s"
    sleep 0.2
done
bs=$(field bootstrap)
[ -n "$bs" ] || fail "no kafka.bootstrap in stats"
ok "recalld ready on its embedded Kafka at $bs (socket $RECALLD_SOCKET)"

recalld-gen --brokers "$bs" --topic clicks --events EVENTS --seed 7 --users 2000 \
    --items 1000 >"$d/gen.log" 2>&1 || { cat "$d/gen.log"; fail "recalld-gen"; }
sed "s/^/  /" "$d/gen.log"
i=0
while :; do
    n=$(field consumed)
    [ "${n:-0}" -ge EVENTS ] && break
    i=$((i + 1)); [ "$i" -le 300 ] || fail "consumed ${n:-0} of EVENTS events after 60 s"
    sleep 0.2
done
ok "consumed $n events: applied $(field applied), items $(field items), index size $(field size)"

out=$(recallctl --raw recall u1 10) || fail "recall u1 10: $out"
nitems=$(printf "%s" "$out" | grep -o "\"item_id\"" | wc -l)
[ "$nitems" -gt 0 ] || fail "recall returned no items: $out"
ok "recallctl recall u1 10 -> $nitems items: $(printf "%s" "$out" | cut -c1-150)..."
out=$(recallctl --raw similar "$(printf "%s" "$out" | sed -n "s/.*\"item_id\":\"\([^\"]*\)\".*/\1/p" | head -n1)" 5) ||
    fail "similar: $out"
ok "recallctl similar -> $(printf "%s" "$out" | grep -o "\"item_id\"" | wc -l) items"
hc=$(recallctl health) || fail "recallctl health exit $?: $hc"
ok "recallctl health exit 0: $(printf "%s" "$hc" | tr -d " \n")"

kill -TERM "$pid"
wait "$pid"
st=$?
pid=
[ "$st" -eq 0 ] || fail "recalld exit status $st after SIGTERM"
grep -q "msg=\"\{0,1\}stopped" "$d/recalld.log" || fail "no stopped line in the log"
ok "SIGTERM: recalld drained and exited 0"
rm -rf "$d"
echo "smoke: PASS"
'
smoke=${smoke//EVENTS/$events}

t_smoke=$(date +%s)
log "smoke test: buildah run --isolation chroot (one sh -c inside $image)"
ctr=$(buildah from "$image")
set +e
buildah run --isolation chroot "$ctr" -- sh -c "$smoke"
smoke_rc=$?
set -e
buildah rm "$ctr" >/dev/null
ctr=

size_bytes=$(podman image inspect "$image" --format '{{.Size}}')
size_mb=$(( (size_bytes + 500000) / 1000000 ))
user=$(podman image inspect "$image" --format '{{.Config.User}}')
hcheck=$(buildah inspect --type image --format '{{.Docker.Config.Healthcheck}}' "$image")
echo
log "summary"
echo "  image        $image, $size_mb MB ($size_bytes bytes; target <= 250 MB)"
echo "  user         $user"
echo "  healthcheck  $hcheck"
echo "  smoke test   $([ "$smoke_rc" = 0 ] && echo PASS || echo FAIL) in $(elapsed "$t_smoke") s"
echo "  total        $(elapsed "$t_start") s"
if [ "$smoke_rc" = 0 ] && [ "$size_mb" -le 250 ]; then
    echo "build-image: PASS"
    exit 0
fi
echo "build-image: FAIL"
exit 1
