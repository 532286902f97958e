/* api — the request protocol of the Unix socket: one JSON object per line in,
 * one per line out. Ops: recall, similar, user, stats, health. Every failure is
 * {"ok":false,"error":{"code":C,"message":M}} and the connection stays usable.
 * Runs on server worker threads (rc_server_handler); thread-safe. */
#ifndef RECALLD_API_H
#define RECALLD_API_H

#include <stdatomic.h>
#include <stddef.h>

#include "recalld/buf.h"
#include "recalld/engine.h"

typedef struct rc_api {
    rc_engine *engine;
    /* Extra stats provider (Kafka side), appended inside the stats object as
     * `"kafka":{...}`; may be NULL. Called on worker threads. */
    void (*kafka_stats)(void *arg, rc_buf *out);
    void *kafka_arg;
    atomic_int assigned; /* consumer has partitions (health) */
    atomic_int stopping; /* shutting down (health) */
    _Atomic unsigned long long requests, errors;
} rc_api;

/* rc_server_handler: ud is an rc_api. */
void rc_api_handle(void *ud, const char *line, size_t len, rc_buf *reply);

#endif
