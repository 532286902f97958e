/* api — the request protocol of the Unix socket: one JSON object per line in,
 * one per line out. Ops: recall, similar, user, stats, health, reload_model.
 * recall and similar take "mode":"two_tower" (the served tower model, engine.h
 * "two-tower serving"); reload_model {"path":FILE} (optional: default the
 * configured tower.model) loads a tower model and swaps it in (blocks the
 * worker for the build; the served model stays on failure); FILE must be
 * tower.model or a file of tower.model_dir (modelpath.h), else "not_allowed".
 * A field an op does not take is bad_request naming it; a recall over
 * recall.max_k_users (k x users) or, exact, recall.max_exact_scan (items x
 * users) is "limit_exceeded" before any search; a reply over the reply
 * buffer's limit "reply_too_large". Every failure is
 * {"ok":false,"error":{"code":C,"message":M}} and the connection stays usable.
 * Runs on server worker threads (rc_server_handler); thread-safe. */
#ifndef RECALLD_API_H
#define RECALLD_API_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "recalld/buf.h"
#include "recalld/engine.h"
#include "recalld/hist.h"

/* Request kinds for the latency histograms; RC_API_OP_INVALID covers lines
 * that name no known op (bad JSON, missing or unknown op). */
enum rc_api_op {
    RC_API_OP_RECALL = 0,
    RC_API_OP_SIMILAR,
    RC_API_OP_USER,
    RC_API_OP_STATS,
    RC_API_OP_HEALTH,
    RC_API_OP_RELOAD_MODEL,
    RC_API_OP_RETRAIN_MODEL,
    RC_API_OP_INSTALL_MODEL,
    RC_API_OP_INVALID,
    RC_API_OP_COUNT
};

/* Stages of a recall request (single or batch, any mode), each a histogram
 * in microseconds: queue_wait (framed on the loop -> a worker starts it),
 * parse (JSON, options, cost limits), query (session look-up, weights, scope,
 * query vector), index_lock / coarse / scan (rc_index_search_timed), rerank
 * (re-scoring, exclusion, sort, multi-category merge), fallback (popular
 * items), reply (rendering the items) and total (queue_wait + the handler).
 * The stages up to total are disjoint parts of it; their sum is <= total.
 * off_cpu is not a part: it is how long, of the handler's run, the worker
 * thread was not on a CPU (the run's wall time minus the thread's CPU time:
 * preempted by another thread or process, or waiting in the kernel), so it
 * overlaps the stages it interrupted. */
enum rc_api_stage {
    RC_API_STAGE_QUEUE_WAIT = 0,
    RC_API_STAGE_PARSE,
    RC_API_STAGE_QUERY,
    RC_API_STAGE_INDEX_LOCK,
    RC_API_STAGE_COARSE,
    RC_API_STAGE_SCAN,
    RC_API_STAGE_RERANK,
    RC_API_STAGE_FALLBACK,
    RC_API_STAGE_REPLY,
    RC_API_STAGE_TOTAL,
    RC_API_STAGE_OFF_CPU,
    RC_API_STAGE_COOC,
    RC_API_STAGE_COUNT
};

typedef struct rc_api {
    rc_engine *engine;
    /* Extra stats provider (Kafka side), appended inside the stats object as
     * `"kafka":{...}`; may be NULL. Called on worker threads. */
    void (*kafka_stats)(void *arg, rc_buf *out);
    void *kafka_arg;
    /* Problems that do not stop serving (e.g. events lost to retention):
     * appends JSON strings separated by commas, nothing when all is well;
     * health then says `"warnings":[...]` and stays ready. May be NULL.
     * Called on worker threads. */
    void (*warnings)(void *arg, rc_buf *out);
    /* Socket figures appended inside the stats' "server" object (after a
     * comma: `"clients":N,...`); may be NULL. Called on worker threads. */
    void (*socket_stats)(void *arg, rc_buf *out);
    void *socket_arg;
    atomic_int assigned; /* consumer has partitions (health) */
    atomic_int stopping; /* shutting down (health) */
    /* The engine exists and any --model / checkpoint restore has finished;
     * whoever restores sets it once the model is complete (health). */
    atomic_int model_ready;
    _Atomic unsigned long long requests, errors;
    rc_hist latency[RC_API_OP_COUNT]; /* handling time by op, us (rc_api_init) */
    /* "mode":"two_tower" recall requests (also counted in latency[recall]) */
    _Atomic unsigned long long tower_requests, tower_errors;
    rc_hist tower_latency;               /* us */
    _Atomic uint32_t tower_recent[1024]; /* the latest latencies, us, for percentiles */
    _Atomic unsigned long long tower_pos;
    rc_hist stage[RC_API_STAGE_COUNT]; /* recall requests by stage, us (rc_api_init) */
    /* the index work of those requests, summed: partitions searched, IVF lists
     * scanned, rows scored ("recall_stages" -> "work") */
    _Atomic uint64_t work_parts, work_lists, work_rows;
} rc_api;

/* Static name of an rc_api_stage ("queue_wait", ..., "total"). */
const char *rc_api_stage_name(int stage);

/* Any thread: p50 and p99 (ms) of the latest two_tower recall latencies and
 * how many samples they cover (<= 1024). */
void rc_api_tower_latency(rc_api *a, double *p50_ms, double *p99_ms, uint32_t *n);

/* Zeroes a and sets up its histograms; then set engine and the rest. */
void rc_api_init(rc_api *a);

/* Any thread. 1 when health is ok (model ready, partitions assigned, not
 * stopping); else 0 and *why (static text) says what is missing. */
int rc_api_ready(rc_api *a, const char **why);

/* Any thread. Appends the members of the `stats` op's object (no braces, no
 * "ok"): the engine's, "server", "two_tower", "recall_stages" and "kafka". The /metrics page
 * (metrics.h) exports every number of it. */
void rc_api_stats_json(rc_api *a, rc_buf *out);

/* Static name of an rc_api_op ("recall", ..., "invalid"). */
const char *rc_api_op_name(int op);

/* rc_server_handler: ud is an rc_api. */
void rc_api_handle(void *ud, const char *line, size_t len, rc_buf *reply);

/* rc_server_fast_handler: answers {"op":"health"} (a line of at most 256
 * bytes) on the caller's thread, so that health never waits behind busy
 * workers; returns 0 without touching reply for anything else. ud: rc_api. */
int rc_api_fast(void *ud, const char *line, size_t len, rc_buf *reply);

#endif
