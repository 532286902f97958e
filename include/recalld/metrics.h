/* metrics — Prometheus text exposition (format 0.0.4) over a minimal HTTP
 * server, and the daemon's /metrics page.
 *
 * The HTTP server is the daemon's only TCP listener. It runs on the loop
 * thread, answers `GET /metrics` and `GET /health` (HEAD too) with
 * HTTP/1.0-1.1 and `Connection: close`, one request per connection:
 *  - the request line and headers must fit in max_request bytes, or the
 *    answer is 431 and the connection closes;
 *  - every connection is closed timeout_ms after it was accepted, whatever its
 *    state (a peer that sends half a request and goes silent costs one slot
 *    for that long, no more);
 *  - beyond max_clients open connections a new one is accepted and closed at
 *    once;
 *  - a request body, a method other than GET/HEAD (405), a malformed request
 *    line (400), an unknown path (404) never reach the render callback.
 * It binds to 127.0.0.1 unless told otherwise.
 *
 * The module sits above every other one: the daemon's page (rc_metrics_render)
 * reads the engine, the API, the consumer and the server. Files: prom.c (the
 * exposition text writer), metrics_http.c (the listener), metrics.c (the
 * daemon's page). The histograms it exports live in hist.h. */
#ifndef RECALLD_METRICS_H
#define RECALLD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "recalld/api.h"
#include "recalld/buf.h"
#include "recalld/consumer.h"
#include "recalld/engine.h"
#include "recalld/hist.h"
#include "recalld/server.h"

/* ---- exposition text --------------------------------------------------- */

/* "# HELP name help\n# TYPE name type\n". type: counter, gauge, histogram. help
 * must be one line (backslashes and newlines are escaped). */
void rc_prom_family(rc_buf *b, const char *name, const char *type, const char *help);
/* One sample line. labels: rendered label pairs without braces (`op="recall"`),
 * or NULL/"" for none. Integral values print exactly; NaN and infinities print
 * as NaN, +Inf, -Inf. */
void rc_prom_sample(rc_buf *b, const char *name, const char *labels, double v);
void rc_prom_sample_u64(rc_buf *b, const char *name, const char *labels, uint64_t v);
/* Appends `name="value"` (with a leading ',' when b's label text is not empty)
 * to a label buffer, escaping \, " and newline as the format requires. */
void rc_prom_label(rc_buf *labels, const char *name, const char *value);
/* The samples of a histogram family (the family line is the caller's): one
 * cumulative _bucket per bound plus le="+Inf", _sum, _count. The +Inf bucket
 * equals _count by construction (both come from one snapshot of the buckets). */
void rc_prom_hist(rc_buf *b, const char *name, const char *labels, const rc_hist *h);
/* The same from a snapshot (rc_hist_snapshot). */
void rc_prom_hist_snap(rc_buf *b, const char *name, const char *labels, const rc_hist_snap *h);

/* ---- HTTP server ------------------------------------------------------- */

typedef struct rc_metrics rc_metrics;

/* A libuv worker thread (uv_queue_work on the server's loop), one page at a
 * time per connection: appends the whole /metrics body to out. It must only
 * read state that is safe to read off the loop thread. */
typedef void (*rc_metrics_render_cb)(void *ud, rc_buf *out);
/* Loop thread. 1 when ready (/health answers 200 "ok"), else 0 with a reason
 * in why (503 "not ready: why"). */
typedef int (*rc_metrics_ready_cb)(void *ud, char *why, size_t cap);

typedef struct rc_metrics_opts {
    const char *bind;     /* IPv4 or IPv6 literal, NULL = "127.0.0.1" (borrowed) */
    uint16_t port;        /* 0 = an ephemeral port (see rc_metrics_port) */
    uint32_t max_request; /* bytes of request line + headers, 0 = 8192 */
    uint32_t timeout_ms;  /* lifetime of a connection, 0 = 5000 */
    uint32_t max_clients; /* open connections, 0 = 16 */
    size_t max_body;      /* /metrics body bytes before a 500, 0 = 16 MiB */
    rc_metrics_render_cb render;
    rc_metrics_ready_cb ready; /* NULL = always ready */
    void *ud;
} rc_metrics_opts;

typedef struct rc_metrics_stats {
    uint64_t accepted, refused; /* refused: over max_clients */
    uint64_t scrapes;           /* 200 answers to /metrics */
    uint64_t health;            /* answers to /health */
    uint64_t bad_requests;      /* 400, 404, 405, 431 */
    uint64_t timeouts;          /* closed by timeout_ms before the answer left */
    uint64_t clients;           /* open now */
} rc_metrics_stats;

/* Loop thread. Binds and listens. Returns 0, RC_EINVAL (no render callback,
 * bind not an IP literal: "metrics: bind ADDR: expected an IP address") or
 * RC_EIO ("metrics 127.0.0.1:9464: bind: address already in use"). On RC_EIO
 * the listener handle closes through the loop: run it before uv_loop_close. */
int rc_metrics_start(uv_loop_t *loop, const rc_metrics_opts *opts, rc_metrics **out, char *errbuf,
                     size_t errlen);

/* The bound port (useful with opts.port 0). Any thread. */
int rc_metrics_port(const rc_metrics *m);

/* Loop thread. Closes the listener and every connection, frees m after the
 * handles are closed and then calls cb(arg) (cb may be NULL). NULL-safe;
 * calling it twice is a no-op. */
void rc_metrics_close(rc_metrics *m, void (*cb)(void *arg), void *arg);

/* Any thread. */
void rc_metrics_stats_get(const rc_metrics *m, rc_metrics_stats *st);

/* ---- the daemon's metrics page ----------------------------------------- */

/* Checkpoint figures, filled by the checkpoint owner's callback. */
typedef struct rc_metrics_checkpoint {
    int64_t last_ok_wall_ms;  /* epoch ms when the newest durable checkpoint was
                               * completed, -1 = none yet */
    double last_duration_s;   /* duration of the last write attempt, -1 = none */
    double last_pause_s;      /* the model writer's pause to copy it, -1 = none */
    uint64_t written, failed; /* attempts that completed / failed */
    uint64_t last_bytes;      /* size of the newest durable checkpoint */
} rc_metrics_checkpoint;

/* What the /metrics page shows; every pointer may be NULL (its families are
 * left out). Everything is read on the thread that renders the page (a
 * worker, see rc_metrics_render_cb): through accessors safe off the loop. */
typedef struct rc_metrics_sources {
    rc_engine *engine;
    rc_consumer *consumer; /* lag per partition (rc_consumer_partitions) */
    const char *topic;     /* label of the lag gauges */
    rc_server *server;
    rc_api *api;         /* readiness and request latency by op */
    rc_metrics *metrics; /* this server's own counters */
    /* Returns 0 and fills out, or nonzero when checkpoints are not enabled. */
    int (*checkpoint)(void *arg, rc_metrics_checkpoint *out);
    void *checkpoint_arg;
    /* Appends more families (full exposition text). */
    void (*extra)(void *arg, rc_buf *out);
    void *extra_arg;
} rc_metrics_sources;

/* Appends the exposition text of every source to out. Any thread. With an
 * api (else an engine) it also renders, from the stats op's own text
 * (rc_api_stats_json), every number that no source family shows (see
 * rc_metrics_stat). */
void rc_metrics_render(const rc_metrics_sources *s, rc_buf *out);

/* ---- the stats op on the page ------------------------------------------ */

enum rc_metrics_stat_kind {
    RC_MSTAT_COUNTER, /* rendered from the stats text as a counter */
    RC_MSTAT_GAUGE,   /* rendered from the stats text as a gauge (-1: no sample) */
    RC_MSTAT_SAME,    /* the same figure, rendered from its source as `metric` */
    RC_MSTAT_HIST,    /* a quantile or sample count of a recent window: `metric` is
                       * the histogram (or gauge) to use instead */
    RC_MSTAT_INFO     /* not a quantity (where, not how many): no metric */
};

/* One number of the stats object (JSON path "events.late"; "*" stands for a
 * map's key, which becomes the label `label`). value on the page = stats
 * value * scale (milliseconds to seconds...). Static data. */
typedef struct rc_metrics_stat {
    const char *path;
    const char *metric; /* NULL for RC_MSTAT_INFO */
    int kind;
    double scale;
    const char *label;
    const char *help;
} rc_metrics_stat;

/* The row for a stats path, NULL when there is none. Any thread. */
const rc_metrics_stat *rc_metrics_stat_find(const char *path);
/* The whole table (n rows). */
const rc_metrics_stat *rc_metrics_stat_table(size_t *n);

#endif
