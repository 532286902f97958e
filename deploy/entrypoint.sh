#!/bin/sh
# Container entrypoint: recalld with the image's config. recalld stays PID 1 (exec), so
# SIGTERM from the runtime reaches it directly and it drains, checkpoints and exits 0.
#   RECALLD_CONFIG   config file (default /etc/recalld/recalld.json)
#   RECALLD_BROKERS  Kafka bootstrap servers, overrides kafka.brokers of the config
# Arguments are recalld flags and come last, so a --brokers flag wins over the variable.
set -eu
if [ -n "${RECALLD_BROKERS:-}" ]; then
    exec /usr/local/bin/recalld --config "${RECALLD_CONFIG:-/etc/recalld/recalld.json}" \
        --brokers "$RECALLD_BROKERS" "$@"
fi
exec /usr/local/bin/recalld --config "${RECALLD_CONFIG:-/etc/recalld/recalld.json}" "$@"
