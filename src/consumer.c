/* consumer — librdkafka consumer group driven by a libuv loop.
 *
 * Wake-ups: the consumer queue (which the main queue is forwarded to) writes
 * one byte to a pipe when it goes from empty to non-empty; a uv_poll watches
 * the read end. librdkafka only signals that transition, so after each wake-up
 * the queue is served until it is empty (a short batch); a tick serves at most
 * MAX_ROUNDS batches and then continues from a uv_idle so other handles get
 * their turn. rd_kafka_consume_batch_queue also serves rebalance and
 * offset-commit callbacks (rd_kafka_poll_cb on every non-fetch op), so they run
 * on the loop thread.
 *
 * Backpressure: a refused batch is kept (messages not destroyed, c->held > 0)
 * and neither the queue nor the pipe is watched until rc_consumer_resume; it is
 * then offered again before anything else. While paused nothing calls into the
 * consumer queue, so a pause longer than max.poll.interval.ms (300 s by
 * default) makes librdkafka leave the group. */
#include "recalld/consumer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "consumer_int.h"
#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/log.h"

#define MOD               "consumer"
#define MAX_ROUNDS        8           /* batches served per loop tick */
#define TIMER_MS          1000        /* lag refresh + DLQ producer poll */
#define DLQ_PAYLOAD_MAX   (64 * 1024) /* payload bytes kept in a dead-letter file line */
#define DEFAULT_BATCH     1024
#define LOOKUP_TIMEOUT_MS 10000 /* committed-offset look-up at assignment */

struct part {
    int64_t next; /* last offset handed over + 1, -1 none yet */
    int64_t lag;  /* high watermark - position at the last refresh, -1 unknown */
    int assigned;
    /* Gap accounting while next < 0 (see rc_consumer_stats.lost): where this
     * assignment must start, -1 while the committed offset is looked up, -2
     * nothing to check (the log start seen first is the start); and the first
     * offset handed over since the assignment, -1 none. */
    int64_t expect, first;
    /* Lowest offset this assignment may commit: where it started (the owner's
     * position, the committed offset, the first offset read). A checkpoint
     * taken while the partition belonged to someone else must not move the
     * group's committed offset back (the next owner would apply again what
     * was applied since). INT64_MAX until known. */
    int64_t floor;
    uint32_t epoch; /* assignments of this partition: matches look-up results */
};

/* A committed-offset look-up (rd_kafka_committed blocks: on a thread of its
 * own, so the loop never waits for the group coordinator). */
struct lookup {
    rc_consumer *c;
    rd_kafka_topic_partition_list_t *l; /* opaque = the partition's epoch */
    rd_kafka_resp_err_t err;
    uv_thread_t th;
    atomic_int done;
    struct lookup *next;
};

struct rc_consumer {
    uv_loop_t *loop;
    rc_consumer_opts o; /* string fields point at the copies below */
    char *topic, *group, *dlq_topic, *dlq_file, *bootstrap;
    rc_consumer_mock *mock;
    rd_kafka_t *rk;   /* consumer */
    rd_kafka_t *prod; /* DLQ producer: mock->rk when embedded, else own (or NULL) */
    rd_kafka_queue_t *q;
    FILE *dlq_fp;
    rc_buf line; /* dead-letter file line, reused */
    /* kafka.dlq_file_max_mb (loop thread): size and lines of FILE, lines of
     * FILE.1 (deleted, and counted dropped, at the next rotation) */
    uint64_t dlq_bytes, dlq_lines, dlq_prev_lines;
    int dlq_shut; /* torn down: the file is not reopened */
    int pipefd[2];
    uv_poll_t poll;
    uv_idle_t idle;
    uv_timer_t timer;
    rd_kafka_message_t **msgs; /* batch slots; msgs[0..held) kept while refused */
    rc_kmsg *kmsgs;
    size_t batch, held;
    int paused, closing, handles_open, destroyed;
    int in_offer, resume_early; /* rc_consumer_resume called from inside on_batch */
    rc_consumer_close_cb close_cb;
    void *close_arg;
    struct part *parts; /* indexed by partition id */
    int32_t nparts;
    int dlq_inflight;
    rd_kafka_topic_partition_list_t *revoking; /* deferred revoke (opts.defer_revoke) */
    int revoking_coop;
    char *instance_id;
    int ever_assigned;  /* an assignment arrived (see kafka_teardown) */
    int replay_pending; /* opts.replay_from_start, until the first assignment */
    int fatal;
    int all_assigned;            /* opts.assign_all: done */
    uv_async_t lookup_async;     /* a look-up finished (sent under mu) */
    int async_open;              /* under mu */
    struct lookup *lookups;      /* started and not yet joined (loop thread) */
    rc_consumer_stats st;        /* loop thread */
    rc_consumer_stats pub;       /* copy for other threads, under mu */
    rc_consumer_part *pub_parts; /* assigned partitions for other threads, under mu */
    size_t pub_nparts, pub_cap;
    uv_mutex_t mu;
};

/* Copies the counters and the assigned partitions' positions for other
 * threads. The copy grows to the largest assignment seen (a partition id
 * count) and is reused. */
static void publish(rc_consumer *c)
{
    uv_mutex_lock(&c->mu);
    c->pub = c->st;
    size_t n = 0;
    for (int32_t p = 0; p < c->nparts; p++) {
        if (!c->parts[p].assigned)
            continue;
        if (n == c->pub_cap) {
            size_t cap = c->pub_cap ? c->pub_cap * 2 : 16;
            rc_consumer_part *np = realloc(c->pub_parts, cap * sizeof *np);
            if (!np)
                break; /* the copy stays short; the counters above are complete */
            c->pub_parts = np;
            c->pub_cap = cap;
        }
        c->pub_parts[n++] =
            (rc_consumer_part){.partition = p, .next = c->parts[p].next, .lag = c->parts[p].lag};
    }
    c->pub_nparts = n;
    uv_mutex_unlock(&c->mu);
}

size_t rc_consumer_partitions(rc_consumer *c, rc_consumer_part *out, size_t cap)
{
    if (!c)
        return 0;
    uv_mutex_lock(&c->mu);
    size_t n = c->pub_nparts;
    for (size_t i = 0; i < n && i < cap && out; i++)
        out[i] = c->pub_parts[i];
    uv_mutex_unlock(&c->mu);
    return n;
}

/* librdkafka log lines (any thread) go to our log; rc_log is thread-safe. */
void rc__consumer_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    enum rc_log_level l = level <= LOG_ERR       ? RC_LOG_ERROR
                          : level == LOG_WARNING ? RC_LOG_WARN
                          : level <= LOG_INFO    ? RC_LOG_INFO
                                                 : RC_LOG_DEBUG;
    rc_log(l, "kafka", buf, "fac=%s client=%s", fac, rd_kafka_name(rk));
}

/* The DLQ producer gets the consumer's extra settings too: its warnings about
 * consumer-only keys are expected. */
static void producer_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (!strcmp(fac, "CONFWARN") && strstr(buf, "consumer property"))
        return;
    rc__consumer_kafka_log(rk, level, fac, buf);
}

int rc__consumer_conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errbuf,
                          size_t errlen)
{
    char why[256];
    if (rd_kafka_conf_set(conf, k, v, why, sizeof why) != RD_KAFKA_CONF_OK)
        return rc_err(errbuf, errlen, RC_EKAFKA, "kafka: %s: %s", k, why);
    return 0;
}

static int conf_extra(rd_kafka_conf_t *conf, const char *const *kv, char *errbuf, size_t errlen)
{
    for (; kv && kv[0]; kv += 2) {
        if (!kv[1])
            return rc_err(errbuf, errlen, RC_EINVAL, "kafka: %s: missing value", kv[0]);
        int rc = rc__consumer_conf_set(conf, kv[0], kv[1], errbuf, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- partitions, positions, lag ---- */

/* Entry for partition p, growing the table (rare: only for ids past the last
 * seen). */
static struct part *part_get(rc_consumer *c, int32_t p)
{
    if (p < 0)
        return NULL;
    if (p >= c->nparts) {
        int32_t n = RC_MAX(p + 1, c->nparts * 2);
        struct part *np = realloc(c->parts, (size_t)n * sizeof *np);
        if (!np)
            return NULL;
        for (int32_t i = c->nparts; i < n; i++)
            np[i] = (struct part){.next = -1,
                                  .lag = -1,
                                  .assigned = 0,
                                  .expect = -2,
                                  .first = -1,
                                  .floor = INT64_MAX};
        c->parts = np;
        c->nparts = n;
    }
    return &c->parts[p];
}

/* The total is known only when every assigned partition's is: a partition
 * just assigned has no watermarks until its first fetch, and counting it as 0
 * would report "caught up" over a backlog nobody has measured yet. */
static void lag_refresh(rc_consumer *c)
{
    int64_t lag = 0;
    int known = 0, unknown = 0;
    for (int32_t p = 0; p < c->nparts; p++) {
        int64_t lo, hi, from;
        c->parts[p].lag = -1;
        if (!c->parts[p].assigned)
            continue;
        if (rd_kafka_get_watermark_offsets(c->rk, c->topic, p, &lo, &hi) ||
            hi == RD_KAFKA_OFFSET_INVALID) {
            unknown = 1;
            continue;
        }
        /* where reading goes on: after the last message handed over, else the
         * assignment's start (the committed offset) once known, else the log
         * start. A partition whose committed offset is its end has no lag
         * although nothing was handed over yet. */
        from = c->parts[p].next >= 0     ? c->parts[p].next
               : c->parts[p].expect >= 0 ? RC_MAX(c->parts[p].expect, lo)
                                         : lo;
        if (from == RD_KAFKA_OFFSET_INVALID) {
            unknown = 1;
            continue;
        }
        c->parts[p].lag = hi > from ? hi - from : 0;
        lag += c->parts[p].lag;
        known = 1;
    }
    c->st.lag = known && !unknown ? lag : -1;
}

size_t rc_consumer_positions(const rc_consumer *c, int32_t *parts, int64_t *next_offsets,
                             size_t cap)
{
    size_t n = 0;
    if (!c)
        return 0;
    for (int32_t p = 0; p < c->nparts; p++) {
        if (!c->parts[p].assigned || c->parts[p].next < 0)
            continue;
        if (n < cap && parts && next_offsets) {
            parts[n] = p;
            next_offsets[n] = c->parts[p].next;
        }
        n++;
    }
    return n;
}

size_t rc_consumer_lags(const rc_consumer *c, int32_t *parts, int64_t *lags, size_t cap)
{
    size_t n = 0;
    if (!c)
        return 0;
    for (int32_t p = 0; p < c->nparts; p++) {
        if (!c->parts[p].assigned)
            continue;
        if (n < cap && parts && lags) {
            parts[n] = p;
            lags[n] = c->parts[p].lag;
        }
        n++;
    }
    return n;
}

/* ---- offset gaps ---- */

/* Offsets [from, to) of p were skipped. The part below the log start (as of
 * the fetch that brought `to`; a log start only grows) was deleted before it
 * was read: lost. The rest never held a message this consumer could read
 * (compaction, transaction markers, aborted transactions). */
static void gap_found(rc_consumer *c, int32_t p, int64_t from, int64_t to)
{
    int64_t lo = RD_KAFKA_OFFSET_INVALID, hi = RD_KAFKA_OFFSET_INVALID;
    rd_kafka_get_watermark_offsets(c->rk, c->topic, p, &lo, &hi);
    int64_t gone = lo >= 0 ? RC_MIN(lo, to) : to; /* unknown log start: never hide it */
    uint64_t lost = gone > from ? (uint64_t)(gone - from) : 0;
    uint64_t other = (uint64_t)(to - from) - lost;
    if (other) {
        c->st.offset_gaps += other;
        rc_log_debug(MOD, "offsets without messages skipped",
                     "partition=%" PRId32 " from=%" PRId64 " to=%" PRId64, p, to - (int64_t)other,
                     to);
    }
    if (!lost)
        return;
    c->st.lost += lost;
    c->st.last_gap_partition = p;
    c->st.last_gap_from = from;
    c->st.last_gap_to = from + (int64_t)lost;
    rc_log_warn(MOD, "events lost: deleted from the log before they were read (retention)",
                "topic=%s partition=%" PRId32 " from=%" PRId64 " to=%" PRId64 " lost=%" PRIu64
                " log_start=%" PRId64 " lost_total=%" PRIu64,
                c->topic, p, from, from + (int64_t)lost, lost, lo, c->st.lost);
    if (c->o.on_gap)
        c->o.on_gap(c->o.ud, p, from, from + (int64_t)lost);
}

static void lookup_run(void *arg)
{
    struct lookup *lk = arg;
    rc_consumer *c = lk->c;
    lk->err = rd_kafka_committed(c->rk, lk->l, LOOKUP_TIMEOUT_MS);
    atomic_store(&lk->done, 1);
    uv_mutex_lock(&c->mu);
    if (c->async_open)
        uv_async_send(&c->lookup_async);
    uv_mutex_unlock(&c->mu);
}

/* Looks up the committed offsets of l's partitions (epochs in opaque). */
static void lookup_start(rc_consumer *c, rd_kafka_topic_partition_list_t *l)
{
    struct lookup *lk = calloc(1, sizeof *lk);
    if (lk) {
        lk->c = c;
        lk->l = l;
    }
    if (!lk || uv_thread_create(&lk->th, lookup_run, lk) != 0) {
        c->st.lookups_failed++;
        rc_log_warn(MOD,
                    "cannot look up committed offsets: gaps at the start of these "
                    "partitions are not detected",
                    "partitions=%d", l->cnt);
        free(lk);
        rd_kafka_topic_partition_list_destroy(l);
        return;
    }
    lk->next = c->lookups;
    c->lookups = lk;
}

/* Loop thread: a partition's committed offset is where its assignment starts
 * (none: the log's beginning, 0 for the embedded cluster whose topic this
 * process created, else whatever the log starts with). */
static void lookup_apply(rc_consumer *c, struct lookup *lk)
{
    for (int i = 0; i < lk->l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &lk->l->elems[i];
        struct part *pt = part_get(c, tp->partition);
        if (!pt || !pt->assigned || pt->expect != -1 ||
            pt->epoch != (uint32_t)(uintptr_t)tp->opaque)
            continue;
        if (lk->err || tp->err) {
            pt->expect = -2;
            c->st.lookups_failed++;
            rc_log_warn(MOD,
                        "committed offset look-up failed: a gap at the start of this "
                        "partition is not detected",
                        "partition=%" PRId32 " err=\"%s\"", tp->partition,
                        rd_kafka_err2str(lk->err ? lk->err : tp->err));
            continue;
        }
        pt->expect = tp->offset >= 0 ? tp->offset : c->mock ? 0 : -2;
        if (pt->expect >= 0)
            pt->floor = RC_MIN(pt->floor, pt->expect);
        if (pt->first >= 0 && pt->expect >= 0 && pt->first > pt->expect)
            gap_found(c, tp->partition, pt->expect, pt->first);
    }
}

static void lookups_reap(rc_consumer *c, int apply)
{
    for (struct lookup **pp = &c->lookups; *pp;) {
        struct lookup *lk = *pp;
        if (apply && !atomic_load(&lk->done)) {
            pp = &lk->next;
            continue;
        }
        uv_thread_join(&lk->th);
        if (apply)
            lookup_apply(c, lk);
        *pp = lk->next;
        rd_kafka_topic_partition_list_destroy(lk->l);
        free(lk);
    }
}

static void on_lookup_done(uv_async_t *h)
{
    rc_consumer *c = h->data;
    lookups_reap(c, 1);
    publish(c);
}

/* ---- rebalance ---- */

static void notify_rebalance(rc_consumer *c, int assigned, const rd_kafka_topic_partition_list_t *l)
{
    int32_t *ids = malloc((size_t)(l->cnt > 0 ? l->cnt : 1) * sizeof *ids);
    size_t n = 0;
    int lost_now = 0;
    for (int i = 0; i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        struct part *pt;
        if (strcmp(tp->topic, c->topic) != 0 || !(pt = part_get(c, tp->partition)))
            continue;
        c->st.assigned += assigned ? !pt->assigned : -pt->assigned;
        pt->assigned = assigned;
        /* A clean revoke hands the partition over with our durable offsets
         * committed (see defer_revoke/rc_consumer_release): whoever owns it next
         * continues from the group's committed offset, and so do we if it comes
         * back — our own position would re-apply what the other member applied
         * meanwhile. A lost assignment keeps our position (our commit may not
         * have happened). At start, positions restored from a checkpoint are
         * the owner's and win over the committed offsets. */
        if (!assigned && !rd_kafka_assignment_lost(c->rk))
            pt->next = -1;
        else if (!assigned)
            lost_now = 1;
        if (ids)
            ids[n++] = tp->partition;
    }
    c->st.rebalances++;
    if (lost_now) {
        /* The group went on without this member (session timeout, fenced):
         * nothing could be committed; the next owner starts at the last
         * commit and applies again what this member applied since. */
        c->st.lost_assignments++;
        rc_log_warn(MOD,
                    "assignment lost: the partitions' next owner starts at the last "
                    "committed offset (events since then are applied twice)",
                    "count=%d", l->cnt);
    }
    rc_log_info(MOD, assigned ? "partitions assigned" : "partitions revoked",
                "count=%d assigned_now=%d", l->cnt, c->st.assigned);
    if (c->o.on_rebalance && ids)
        c->o.on_rebalance(c->o.ud, assigned, ids, n);
    free(ids);
    if (!ids)
        rc_log_error(MOD, "rebalance: out of memory", "partitions=%d", l->cnt);
}

/* Assigned partitions start at the owner's position when it has one (else,
 * on a replay, at the log's beginning, else at the committed offset, else
 * auto.offset.reset); the committed offsets are looked up for the gap check. */
static void set_start_offsets(rc_consumer *c, rd_kafka_topic_partition_list_t *l)
{
    rd_kafka_topic_partition_list_t *look = NULL;
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        struct part *pt;
        if (strcmp(tp->topic, c->topic) != 0 || !(pt = part_get(c, tp->partition)))
            continue;
        pt->epoch++;
        pt->first = -1;
        pt->expect = -2;
        pt->floor = INT64_MAX;
        if (pt->next >= 0) {
            tp->offset = pt->next;
            pt->floor = pt->next;
            rc_log_info(MOD, "partition starts at the owner's position",
                        "partition=%" PRId32 " offset=%" PRId64, tp->partition, pt->next);
        } else if (c->replay_pending) {
            tp->offset = RD_KAFKA_OFFSET_BEGINNING;
            pt->expect = 0;
            pt->floor = 0;
            rc_log_info(MOD, "partition replayed from the beginning of the log",
                        "partition=%" PRId32, tp->partition);
        } else if (c->closing || c->destroyed) {
            /* an assignment served by the close or by rd_kafka_destroy is
             * never read from; a look-up thread started there would outlive
             * c->rk (TSan saw it leaked) */
        } else {
            pt->expect = -1;
            if (!look)
                look = rd_kafka_topic_partition_list_new(l->cnt);
            rd_kafka_topic_partition_list_add(look, c->topic, tp->partition)->opaque =
                (void *)(uintptr_t)pt->epoch;
        }
    }
    c->replay_pending = 0;
    if (look)
        lookup_start(c, look);
}

static void unassign(rc_consumer *c, rd_kafka_topic_partition_list_t *l, int coop)
{
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_resume_partitions(c->rk, l); /* a later assignment must not start paused */
    if (coop)
        e = rd_kafka_incremental_unassign(c->rk, l);
    else
        aerr = rd_kafka_assign(c->rk, NULL);
    if (e) {
        rc_log_error(MOD, "incremental unassign failed", "err=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (aerr) {
        rc_log_error(MOD, "unassign failed", "err=\"%s\"", rd_kafka_err2str(aerr));
    }
}

/* Revoke: deferred when the owner asked for it and the partitions are still
 * ours to commit; returns 1 when deferred. */
static int defer_revoke(rc_consumer *c, rd_kafka_topic_partition_list_t *l, int coop)
{
    if (!c->o.defer_revoke || c->closing || c->destroyed || rd_kafka_assignment_lost(c->rk) ||
        l->cnt == 0)
        return 0;
    if (c->revoking) { /* cannot happen with librdkafka's protocol; never leave one behind */
        unassign(c, c->revoking, c->revoking_coop);
        rd_kafka_topic_partition_list_destroy(c->revoking);
    }
    c->revoking = rd_kafka_topic_partition_list_copy(l);
    c->revoking_coop = coop;
    rd_kafka_pause_partitions(c->rk, l);
    c->st.revoke_pending = 1;
    rc_log_info(MOD, "revoke deferred until the owner commits", "count=%d", l->cnt);
    return 1;
}

/* Served from rd_kafka_consume_batch_queue (or consumer_close) on the loop
 * thread. */
static void on_kafka_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *l, void *opaque)
{
    rc_consumer *c = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        c->ever_assigned = 1;
        set_start_offsets(c, l);
        if (coop)
            e = rd_kafka_incremental_assign(rk, l);
        else
            aerr = rd_kafka_assign(rk, l);
        notify_rebalance(c, 1, l);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        if (defer_revoke(c, l, coop)) {
            notify_rebalance(c, 0, l);
            break;
        }
        notify_rebalance(c, 0, l);
        unassign(c, l, coop); /* resumed first: the owner may have paused some (vboot.h) */
        break;
    default:
        rc_log_error(MOD, "rebalance failed", "err=\"%s\"", rd_kafka_err2str(err));
        notify_rebalance(c, 0, l);
        unassign(c, l, 0);
        break;
    }
    if (e) {
        rc_log_error(MOD, "incremental assign failed", "err=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (aerr) {
        rc_log_error(MOD, "assign failed", "err=\"%s\"", rd_kafka_err2str(aerr));
    }
    lag_refresh(c);
    publish(c);
}

static void on_kafka_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *l, void *opaque)
{
    rc_consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return; /* nothing to commit */
    if (err) {
        c->st.commit_errors++;
        rc_log_warn(MOD, "commit failed", "err=\"%s\"", rd_kafka_err2str(err));
    } else {
        c->st.commits++;
    }
    publish(c);
}

/* ---- draining ---- */

/* Drops error messages from msgs[0..n) (logged, counted), fills kmsgs; returns
 * how many messages remain. */
static size_t batch_prepare(rc_consumer *c, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = c->msgs[i];
        if (m->err == RD_KAFKA_RESP_ERR__FATAL && !c->fatal) {
            char why[96];
            rd_kafka_resp_err_t fe = rd_kafka_fatal_error(c->rk, why, sizeof why);
            c->fatal = c->st.fatal = 1;
            snprintf(c->st.last_error, sizeof c->st.last_error, "%s: %s", rd_kafka_err2name(fe),
                     why);
            rc_log_error(MOD, "fatal consumer error: consuming stopped", "err=%s reason=\"%s\"",
                         rd_kafka_err2name(fe), why);
            if (c->o.on_fatal)
                c->o.on_fatal(c->o.ud, c->st.last_error);
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                c->st.errors++;
                snprintf(c->st.last_error, sizeof c->st.last_error, "%s: %s",
                         rd_kafka_err2name(m->err), rd_kafka_message_errstr(m));
                rc_log_warn(MOD, "consumer error", "err=\"%s\" reason=\"%s\"",
                            rd_kafka_err2str(m->err), rd_kafka_message_errstr(m));
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        rd_kafka_timestamp_type_t tt;
        int64_t ts = rd_kafka_message_timestamp(m, &tt);
        const void *hv = NULL;
        size_t hlen = 0;
        rd_kafka_headers_t *hdrs;
        if (c->o.header && rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(hdrs, c->o.header, &hv, &hlen) != RD_KAFKA_RESP_ERR_NO_ERROR)
            hv = NULL, hlen = 0;
        c->msgs[k] = m;
        c->kmsgs[k] = (rc_kmsg){.payload = m->payload ? m->payload : "",
                                .len = m->len,
                                .key = m->key,
                                .key_len = m->key_len,
                                .partition = m->partition,
                                .offset = m->offset,
                                .timestamp_ms = tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts,
                                .header = hv,
                                .header_len = hlen};
        k++;
    }
    return k;
}

/* Offers msgs[0..held) to the owner. RC_EAGAIN: kept for later. */
/* Drops from msgs[0..held) what must not reach the owner: messages of
 * partitions not (or no longer) assigned, and messages below the owner's
 * position (fetched before a seek, or replayed by a reset): the model holds
 * them already. */
static void batch_filter(rc_consumer *c)
{
    size_t k = 0;
    for (size_t i = 0; i < c->held; i++) {
        struct part *pt = part_get(c, c->kmsgs[i].partition);
        if (pt && pt->assigned && c->kmsgs[i].offset >= pt->next) {
            c->msgs[k] = c->msgs[i];
            c->kmsgs[k++] = c->kmsgs[i];
            continue;
        }
        if (pt && pt->assigned && c->st.skipped_applied++ % 10000 == 0)
            rc_log_warn(MOD, "message below the owner's position dropped",
                        "partition=%" PRId32 " offset=%" PRId64 " position=%" PRId64,
                        c->kmsgs[i].partition, c->kmsgs[i].offset, pt->next);
        rd_kafka_message_destroy(c->msgs[i]);
    }
    c->held = k;
}

static int batch_offer(rc_consumer *c)
{
    batch_filter(c);
    if (!c->held)
        return 0;
    c->in_offer = 1;
    c->resume_early = 0;
    int rc = c->o.on_batch(c->o.ud, c->kmsgs, c->held);
    c->in_offer = 0;
    if (rc == RC_EAGAIN) {
        c->st.refused_batches++;
        return c->resume_early ? RC_OK : rc; /* resumed already: offer again next tick */
    }
    if (rc)
        rc_log_warn(MOD, "on_batch returned an error: batch counted as taken", "rc=%d", rc);
    c->st.batches++;
    for (size_t i = 0; i < c->held; i++) {
        struct part *pt = part_get(c, c->kmsgs[i].partition);
        int64_t off = c->kmsgs[i].offset;
        if (pt && pt->next >= 0 && off > pt->next) {
            gap_found(c, c->kmsgs[i].partition, pt->next, off);
        } else if (pt && pt->next < 0 && pt->first < 0) {
            pt->first = off; /* checked now, or when the committed offset is known */
            pt->floor = RC_MIN(pt->floor, off);
            if (pt->expect >= 0 && off > pt->expect)
                gap_found(c, c->kmsgs[i].partition, pt->expect, off);
        }
        if (pt && off >= pt->next)
            pt->next = off + 1;
        c->st.messages++;
        c->st.bytes += c->kmsgs[i].len;
        rd_kafka_message_destroy(c->msgs[i]);
    }
    c->held = 0;
    return 0;
}

static void pause_drain(rc_consumer *c)
{
    c->paused = 1;
    uv_poll_stop(&c->poll);
    uv_idle_stop(&c->idle);
}

static void on_idle(uv_idle_t *h);

/* One tick: serve up to MAX_ROUNDS batches; continue from the idle handle if
 * the queue may still hold more. */
static void drain(rc_consumer *c)
{
    if (c->prod && c->dlq_inflight > 0)
        rd_kafka_poll(c->prod, 0);
    for (int round = 0; round < MAX_ROUNDS && !c->paused && !c->closing && !c->fatal; round++) {
        int empty = 0;
        if (!c->held) {
            ssize_t n = rd_kafka_consume_batch_queue(c->q, 0, c->msgs, c->batch);
            if (n < 0) {
                c->st.errors++;
                rc_log_error(MOD, "consume failed", "err=\"%s\"",
                             rd_kafka_err2str(rd_kafka_last_error()));
                break;
            }
            c->held = batch_prepare(c, (size_t)n);
            empty = (size_t)n < c->batch;
        }
        if (c->held && batch_offer(c) == RC_EAGAIN) {
            pause_drain(c);
            break;
        }
        if (c->held)
            break; /* refused, but resumed from inside on_batch: offered next tick */
        if (empty) {
            /* Short batch: the queue was empty, the next enqueue signals the pipe. */
            uv_idle_stop(&c->idle);
            publish(c);
            return;
        }
    }
    if (!c->paused && !c->closing && !c->fatal)
        uv_idle_start(&c->idle, on_idle);
    publish(c);
}

static void on_idle(uv_idle_t *h) { drain(h->data); }

static void on_readable(uv_poll_t *h, int status, int events)
{
    rc_consumer *c = h->data;
    char buf[64];
    if (status < 0) {
        rc_log_error(MOD, "poll failed", "err=\"%s\"", uv_strerror(status));
        return;
    }
    /* Empty the pipe before serving: a byte written after this point means a new
     * empty -> non-empty transition that the next poll will see. */
    while (read(c->pipefd[0], buf, sizeof buf) > 0)
        ;
    drain(c);
}

/* opts.assign_all: every partition of the topic from the beginning of its
 * log, without a group. The metadata look-up blocks the loop for at most
 * ASSIGN_MD_MS, once a second until the topic is known. */
#define ASSIGN_MD_MS 500
static void assign_all(rc_consumer *c)
{
    const struct rd_kafka_metadata *md = NULL;
    if (!c->o.assign_all || c->all_assigned || c->closing || c->fatal || !c->rk)
        return;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c->rk, c->topic, NULL);
    if (!rkt)
        return;
    rd_kafka_resp_err_t e = rd_kafka_metadata(c->rk, 0, rkt, &md, ASSIGN_MD_MS);
    int n = !e && md && md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : 0;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    if (n <= 0) {
        rc_log_debug(MOD, "topic not known yet: assignment retried", "topic=%s err=\"%s\"",
                     c->topic, rd_kafka_err2str(e));
        return;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int32_t p = 0; p < n; p++) {
        struct part *pt = part_get(c, p);
        if (!pt)
            continue;
        rd_kafka_topic_partition_list_add(l, c->topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        pt->epoch++;
        pt->first = -1;
        pt->expect = 0; /* from the log's start: a later first offset was deleted (lost) */
        pt->floor = 0;
        pt->next = -1;
    }
    notify_rebalance(c, 1, l);
    e = rd_kafka_assign(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        c->st.errors++;
        snprintf(c->st.last_error, sizeof c->st.last_error, "assign: %s", rd_kafka_err2str(e));
        rc_log_error(MOD, "cannot assign the topic's partitions", "topic=%s err=\"%s\"", c->topic,
                     rd_kafka_err2str(e));
        return;
    }
    c->all_assigned = 1;
    rc_log_info(MOD, "every partition assigned from the beginning (no group)",
                "topic=%s partitions=%d", c->topic, n);
}

/* Also polls the consumer queue: librdkafka only signals the pipe when
 * something arrives, and a member that does not poll for max.poll.interval.ms
 * leaves its group - every quiet night, for a click stream. */
static void on_timer(uv_timer_t *h)
{
    rc_consumer *c = h->data;
    if (c->prod)
        rd_kafka_poll(c->prod, 0);
    assign_all(c);
    lag_refresh(c);
    if (!c->paused && !c->closing && !c->fatal)
        drain(c);
    publish(c);
}

void rc_consumer_pause_parts(rc_consumer *c, const int32_t *parts, size_t n, int pause)
{
    if (!c || !c->rk || !n)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    if (!l)
        return;
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, c->topic, parts[i]);
    rd_kafka_resp_err_t e =
        pause ? rd_kafka_pause_partitions(c->rk, l) : rd_kafka_resume_partitions(c->rk, l);
    if (e)
        rc_log_warn(MOD, pause ? "pause failed" : "resume failed", "count=%zu err=\"%s\"", n,
                    rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

void rc_consumer_resume(rc_consumer *c)
{
    if (c && c->in_offer)
        c->resume_early = 1;
    if (!c || !c->paused || c->closing)
        return;
    c->paused = 0;
    /* Not re-entrant from on_batch: the held batch is offered on the next tick.
     */
    uv_poll_start(&c->poll, UV_READABLE, on_readable);
    uv_idle_start(&c->idle, on_idle);
}

/* ---- dead letters ---- */

void rc__consumer_dlq_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    rc_consumer *c = opaque;
    c->dlq_inflight--;
    if (m->err) {
        c->st.dead_letter_errors++;
        rc_log_warn(MOD, "dead letter not delivered", "err=\"%s\"", rd_kafka_err2str(m->err));
    } else {
        c->st.dead_letters++;
    }
}

/* Counts the lines of path (0 when it does not exist). Only at start. */
static uint64_t count_lines(const char *path)
{
    char buf[65536];
    uint64_t n = 0;
    size_t got;
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + got - p))); p++)
            n++;
    fclose(f);
    return n;
}

/* Opens kafka.dlq_file for appending and learns its size. Lines are counted
 * only at start (count set): later the counts are kept as the file grows,
 * so the loop thread never reads the file back. */
static int dlq_file_open(rc_consumer *c, int count)
{
    struct stat sb;
    char old[PATH_MAX];
    c->dlq_fp = fopen(c->dlq_file, "ae");
    if (!c->dlq_fp)
        return RC_EIO;
    c->dlq_bytes = fstat(fileno(c->dlq_fp), &sb) == 0 ? (uint64_t)sb.st_size : 0;
    if (count) {
        c->dlq_lines = c->dlq_bytes ? count_lines(c->dlq_file) : 0;
        if (snprintf(old, sizeof old, "%s.1", c->dlq_file) < (int)sizeof old)
            c->dlq_prev_lines = count_lines(old);
    }
    return 0;
}

/* kafka.dlq_file_max_mb: before a line would take FILE past the cap, FILE
 * becomes FILE.1 and a new FILE starts. The dead letters of the previous
 * FILE.1 are deleted by the rename: they are counted (dead_letters_dropped)
 * and logged, never lost silently. Disk use stays below twice the cap. */
static int dlq_file_rotate(rc_consumer *c)
{
    char old[PATH_MAX];
    if (snprintf(old, sizeof old, "%s.1", c->dlq_file) >= (int)sizeof old)
        return RC_EINVAL;
    uint64_t prev = c->dlq_prev_lines;
    fclose(c->dlq_fp);
    c->dlq_fp = NULL;
    if (rename(c->dlq_file, old) != 0) {
        rc_log_warn(MOD, "dead-letter file not rotated", "file=%s err=\"%s\"", c->dlq_file,
                    strerror(errno));
        (void)dlq_file_open(c, 0); /* keep appending to FILE past the cap */
        return RC_EIO;
    }
    c->st.dead_letters_dropped += prev;
    c->st.dlq_rotations++;
    c->dlq_prev_lines = c->dlq_lines;
    c->dlq_lines = 0;
    rc_log_warn(MOD, "dead-letter file rotated", "file=%s max_bytes=%llu dropped=%llu", c->dlq_file,
                (unsigned long long)c->o.dlq_file_max_bytes, (unsigned long long)prev);
    return dlq_file_open(c, 0);
}

static int dlq_file_write(rc_consumer *c, const rc_kmsg *m, const char *reason, const char *err)
{
    rc_buf *b = &c->line;
    size_t plen = RC_MIN(m->len, (size_t)DLQ_PAYLOAD_MAX);
    int rc;
    rc_buf_reset(b);
    rc = rc_buf_puts(b, "{\"reason\":");
    rc = rc ? rc : rc_buf_json_str(b, reason, strlen(reason));
    rc = rc ? rc : rc_buf_puts(b, ",\"error\":");
    rc = rc ? rc : rc_buf_json_str(b, err, strlen(err));
    rc = rc ? rc
            : rc_buf_printf(b,
                            ",\"partition\":%" PRId32 ",\"offset\":%" PRId64 ",\"len\":%zu,"
                            "\"truncated\":%s,\"payload\":",
                            m->partition, m->offset, m->len, plen < m->len ? "true" : "false");
    rc = rc ? rc : rc_buf_json_str(b, m->payload ? m->payload : "", m->payload ? plen : 0);
    rc = rc ? rc : rc_buf_puts(b, "}\n");
    if (rc)
        return rc;
    if (!c->dlq_fp && (c->dlq_shut || dlq_file_open(c, 0)))
        return RC_EIO;
    uint64_t cap = c->o.dlq_file_max_bytes;
    if (cap && c->dlq_bytes > 0 && c->dlq_bytes + b->len > cap && (rc = dlq_file_rotate(c)))
        return rc;
    /* Plain stdio on the loop thread: a page-cache write, no fsync. */
    if (fwrite(b->data, 1, b->len, c->dlq_fp) != b->len || fflush(c->dlq_fp) != 0) {
        /* the file's size is unknown now: learn it again at the next write */
        int er = errno;
        fclose(c->dlq_fp);
        c->dlq_fp = NULL;
        errno = er;
        return RC_EIO;
    }
    c->dlq_bytes += b->len;
    c->dlq_lines++;
    return 0;
}

static int dlq_produce(rc_consumer *c, const rc_kmsg *m, const char *reason, const char *err)
{
    char part[16], off[24];
    snprintf(part, sizeof part, "%" PRId32, m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        c->prod, RD_KAFKA_V_TOPIC(c->dlq_topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE((void *)m->payload, m->len), RD_KAFKA_V_KEY((void *)m->key, m->key_len),
        RD_KAFKA_V_HEADER("reason", reason, -1), RD_KAFKA_V_HEADER("error", err, -1),
        RD_KAFKA_V_HEADER("partition", part, -1), RD_KAFKA_V_HEADER("offset", off, -1),
        RD_KAFKA_V_END);
    if (e) {
        rc_log_warn(MOD, "dead letter not queued", "err=\"%s\"", rd_kafka_err2str(e));
        return RC_EKAFKA;
    }
    c->dlq_inflight++;
    return 0;
}

int rc_consumer_dead_letter(rc_consumer *c, const rc_kmsg *m, const char *reason, const char *err)
{
    int rc;
    if (!c || !m || (!m->payload && m->len))
        return RC_EINVAL;
    reason = reason ? reason : "";
    err = err ? err : "";
    if (c->dlq_file) {
        rc = dlq_file_write(c, m, reason, err);
        if (rc && c->st.dead_letter_errors++ % 1000 == 0)
            rc_log_warn(MOD, "dead letter not written", "file=%s errors=%llu err=\"%s\"",
                        c->dlq_file, (unsigned long long)c->st.dead_letter_errors,
                        rc == RC_EIO ? strerror(errno) : rc_strerror(rc));
        else if (!rc)
            c->st.dead_letters++;
    } else {
        rc = c->prod ? dlq_produce(c, m, reason, err) : RC_EINVAL;
        if (rc)
            c->st.dead_letter_errors++;
    }
    publish(c);
    return rc;
}

/* ---- commit, stats, bootstrap ---- */

/* Completes a deferred revoke. */
static void on_release_committed(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *l, void *opaque)
{
    rc_consumer *c = opaque;
    if (c->revoking) {
        unassign(c, c->revoking, c->revoking_coop);
        rc_log_info(MOD, "deferred revoke completed", "count=%d", c->revoking->cnt);
        rd_kafka_topic_partition_list_destroy(c->revoking);
        c->revoking = NULL;
        c->st.revoke_pending = 0;
    }
    publish(c);
}

int rc_consumer_store(rc_consumer *c, const int32_t *parts, const int64_t *offsets, size_t n)
{
    if (!c || !c->rk || (n && (!parts || !offsets)) || n > INT32_MAX)
        return RC_EINVAL;
    if (n == 0)
        return 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        if (offsets[i] < 0 || parts[i] < 0)
            continue;
        if (parts[i] < c->nparts && offsets[i] < c->parts[parts[i]].floor) {
            c->st.stale_offsets++;
            rc_log_debug(MOD, "offset below this assignment's start not stored",
                         "partition=%" PRId32 " offset=%" PRId64 " start=%" PRId64, parts[i],
                         offsets[i], c->parts[parts[i]].floor);
            continue;
        }
        rd_kafka_topic_partition_list_add(l, c->topic, parts[i])->offset = offsets[i];
    }
    rd_kafka_resp_err_t e = l->cnt ? rd_kafka_offsets_store(c->rk, l) : RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; e && i < l->cnt; i++) /* per partition: not assigned (any more) */
        if (l->elems[i].err)
            rc_log_debug(MOD, "offset not stored", "partition=%" PRId32 " err=\"%s\"",
                         l->elems[i].partition, rd_kafka_err2str(l->elems[i].err));
    rd_kafka_topic_partition_list_destroy(l);
    return e ? RC_EKAFKA : 0;
}

int rc_consumer_release(rc_consumer *c, const int32_t *parts, const int64_t *offsets, size_t n)
{
    if (!c || !c->revoking || (n && (!parts || !offsets)) || n > INT32_MAX)
        return RC_EINVAL;
    int rc = rc_consumer_store(c, parts, offsets, n);
    /* The unassign commits what is stored for the revoked partitions, and
     * librdkafka rejoins only once that commit is answered. */
    on_release_committed(c->rk, RD_KAFKA_RESP_ERR_NO_ERROR, NULL, c);
    return rc;
}

int rc_consumer_owns(const rc_consumer *c, int32_t p)
{
    if (!c || p < 0)
        return 0;
    if (p < c->nparts && c->parts[p].assigned)
        return 1;
    for (int i = 0; c->revoking && i < c->revoking->cnt; i++)
        if (c->revoking->elems[i].partition == p && !strcmp(c->revoking->elems[i].topic, c->topic))
            return 1;
    return 0;
}

int rc_consumer_commit(rc_consumer *c, const int32_t *parts, const int64_t *offsets, size_t n)
{
    if (!c || !parts || !offsets || n == 0 || n > INT32_MAX)
        return RC_EINVAL;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    if (!l)
        return RC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (offsets[i] < 0 || parts[i] < 0) {
            rd_kafka_topic_partition_list_destroy(l);
            return RC_EINVAL;
        }
        rd_kafka_topic_partition_list_add(l, c->topic, parts[i])->offset = offsets[i];
    }
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, l, 1 /* async: result via on_kafka_commit */);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        c->st.commit_errors++;
        rc_log_warn(MOD, "commit not started", "err=\"%s\"", rd_kafka_err2str(e));
        return RC_EKAFKA;
    }
    return 0;
}

const char *rc_consumer_bootstrap(const rc_consumer *c) { return c ? c->bootstrap : NULL; }

void rc_consumer_stats_get(rc_consumer *c, rc_consumer_stats *st)
{
    if (!c || !st)
        return;
    uv_mutex_lock(&c->mu);
    *st = c->pub;
    uv_mutex_unlock(&c->mu);
}

/* ---- start ---- */

static int consumer_new(rc_consumer *c, char *errbuf, size_t errlen)
{
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc;
    if (!conf)
        return rc_err(errbuf, errlen, RC_ENOMEM, "kafka: out of memory");
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_log_cb(conf, rc__consumer_kafka_log);
    rd_kafka_conf_set_rebalance_cb(conf, on_kafka_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_kafka_commit);
    if ((rc = rc__consumer_conf_set(conf, "bootstrap.servers", c->bootstrap, errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "group.id", c->group, errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "client.id", "recalld", errbuf, errlen)) ||
        /* Only offsets the owner stores (rc_consumer_store) are committed,
         * by librdkafka's committer: in the background, for partitions being
         * unassigned before they are handed over, and at close - never while
         * the group rebalances (a commit sent during a join comes back with
         * an illegal generation and costs the assignment). */
        (rc = rc__consumer_conf_set(conf, "enable.auto.commit", "true", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "enable.auto.offset.store", "false", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "auto.offset.reset", "earliest", errbuf, errlen)) ||
        /* At the default 100000 queued messages (counted over the whole
         * consumer queue) librdkafka 2.0 stops fetching and looks again only
         * about once a second: that capped ingest at ~120k events/s with the
         * pipeline idle half of the time (measured, bench/ingest.sh). 300000
         * lifts the cap to ~300k/s for ~80 MiB more RSS at full prefetch
         * (1000000: ~170 MiB, no faster). A kafka.config entry overrides it. */
        (rc = rc__consumer_conf_set(conf, "queued.min.messages", "300000", errbuf, errlen)) ||
        /* Incremental rebalancing: a member keeps consuming the partitions it
         * keeps, and a partition that moves is revoked while the group is
         * stable, so the owner's commit before the hand-over is accepted (the
         * mock cluster refuses commits during an eager rebalance). */
        (rc = rc__consumer_conf_set(conf, "partition.assignment.strategy", "cooperative-sticky",
                                    errbuf, errlen)) ||
        /* A member that died is noticed after session.timeout.ms; until then
         * the group waits for it and its partitions stay unread, a restarted
         * daemon's included (librdkafka's default is 45 s). 6 s is the
         * brokers' default minimum; heartbeats run on librdkafka's own
         * thread, so a busy trainer does not miss them. */
        (rc = rc__consumer_conf_set(conf, "session.timeout.ms", "6000", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "heartbeat.interval.ms", "2000", errbuf, errlen)) ||
        /* Stored offsets (durable checkpoints) reach the group within 1 s
         * (librdkafka's default: 5 s): after a failed hand-over or a crash,
         * the next owner re-applies at most what came since. */
        (rc = rc__consumer_conf_set(conf, "auto.commit.interval.ms", "1000", errbuf, errlen)) ||
        (c->instance_id &&
         (rc = rc__consumer_conf_set(conf, "group.instance.id", c->instance_id, errbuf, errlen))) ||
        (c->o.assign_all &&
         (rc = rc__consumer_conf_set(conf, "enable.auto.commit", "false", errbuf, errlen))) ||
        /* A replica's vectors: a fetch waits at most 100 ms for data (librdkafka's
         * 500 ms default was most of the publish -> applied time on the mock
         * cluster, bench/cluster.sh); a kafka.config entry overrides it. */
        (c->o.assign_all &&
         (rc = rc__consumer_conf_set(conf, "fetch.wait.max.ms", "100", errbuf, errlen))) ||
        (rc = conf_extra(conf, c->o.extra, errbuf, errlen))) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!c->rk) {
        rd_kafka_conf_destroy(conf);
        return rc_err(errbuf, errlen, RC_EKAFKA, "kafka: consumer: %s", why);
    }
    rd_kafka_poll_set_consumer(c->rk);
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (!c->o.assign_all) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, c->topic, RD_KAFKA_PARTITION_UA);
        e = rd_kafka_subscribe(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (e)
        return rc_err(errbuf, errlen, RC_EKAFKA, "kafka: subscribe %s: %s", c->topic,
                      rd_kafka_err2str(e));
    c->q = rd_kafka_queue_get_consumer(c->rk);
    if (!c->q)
        return rc_err(errbuf, errlen, RC_EKAFKA, "kafka: no consumer queue");
    if (pipe2(c->pipefd, O_NONBLOCK | O_CLOEXEC) != 0)
        return rc_err(errbuf, errlen, RC_EIO, "pipe: %s", strerror(errno));
    rd_kafka_queue_io_event_enable(c->q, c->pipefd[1], "1", 1);
    return 0;
}

static int dlq_producer_new(rc_consumer *c, char *errbuf, size_t errlen)
{
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc;
    if (!conf)
        return rc_err(errbuf, errlen, RC_ENOMEM, "kafka: out of memory");
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_log_cb(conf, producer_log);
    rd_kafka_conf_set_dr_msg_cb(conf, rc__consumer_dlq_dr);
    /* extra is applied too (security settings); consumer-only keys only warn. */
    if ((rc = rc__consumer_conf_set(conf, "bootstrap.servers", c->bootstrap, errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "client.id", "recalld-dlq", errbuf, errlen)) ||
        (rc = conf_extra(conf, c->o.extra, errbuf, errlen))) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    c->prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!c->prod) {
        rd_kafka_conf_destroy(conf);
        return rc_err(errbuf, errlen, RC_EKAFKA, "kafka: dlq producer: %s", why);
    }
    return 0;
}

static char *dup_or(const char *s, const char *def) { return strdup(s && s[0] ? s : def); }

static int copy_opts(rc_consumer *c, const rc_consumer_opts *o, char *errbuf, size_t errlen)
{
    char dlq[512];
    c->o = *o;
    c->topic = dup_or(o->topic, "clicks");
    c->group = dup_or(o->group, "recalld");
    if (!c->topic || !c->group)
        return rc_err(errbuf, errlen, RC_ENOMEM, "consumer: out of memory");
    snprintf(dlq, sizeof dlq, "%s.dlq", c->topic);
    c->dlq_topic = dup_or(o->dlq_topic, dlq);
    c->dlq_file = o->dlq_file ? strdup(o->dlq_file) : NULL;
    c->instance_id = o->instance_id && o->instance_id[0] ? strdup(o->instance_id) : NULL;
    c->replay_pending = o->replay_from_start;
    if (!o->embedded)
        c->bootstrap = strdup(o->brokers);
    c->batch = o->batch ? o->batch : DEFAULT_BATCH;
    c->msgs = calloc(c->batch, sizeof *c->msgs);
    c->kmsgs = calloc(c->batch, sizeof *c->kmsgs);
    if (!c->dlq_topic || (o->dlq_file && !c->dlq_file) || (!o->embedded && !c->bootstrap) ||
        (o->instance_id && o->instance_id[0] && !c->instance_id) || !c->msgs || !c->kmsgs)
        return rc_err(errbuf, errlen, RC_ENOMEM, "consumer: out of memory");
    c->o.topic = c->topic;
    c->o.group = c->group;
    c->o.dlq_topic = c->dlq_topic;
    c->o.dlq_file = c->dlq_file;
    c->o.brokers = c->bootstrap;
    c->o.instance_id = c->instance_id;
    return 0;
}

static int kafka_setup(rc_consumer *c, char *errbuf, size_t errlen)
{
    int rc;
    if (c->o.embedded) {
        char vectors[512]; /* for a trainer's publisher (vecpub.h) */
        snprintf(vectors, sizeof vectors, "%s.vectors", c->topic);
        const char *topics[16] = {c->topic, c->dlq_topic, vectors};
        size_t nt = 3;
        for (const char *const *t = c->o.embedded_topics; t && *t && nt < 16; t++)
            topics[nt++] = *t;
        c->o.embedded_topics = NULL; /* used here only */
        rc = rc__consumer_mock_new(1, c->o.embedded_partitions, topics, nt, c, &c->mock, errbuf,
                                   errlen);
        if (rc)
            return rc;
        c->bootstrap = strdup(c->mock->bootstrap);
        if (!c->bootstrap)
            return rc_err(errbuf, errlen, RC_ENOMEM, "consumer: out of memory");
        c->o.brokers = c->bootstrap;
        c->prod = c->mock->rk;
        rc_log_info(MOD, "embedded mock cluster started", "bootstrap=%s topic=%s partitions=%d",
                    c->bootstrap, c->topic,
                    c->o.embedded_partitions > 0 ? c->o.embedded_partitions : DEFAULT_PARTS);
    } else if (!c->dlq_file && !c->o.assign_all && (rc = dlq_producer_new(c, errbuf, errlen))) {
        return rc;
    }
    if (c->dlq_file && dlq_file_open(c, 1))
        return rc_err(errbuf, errlen, RC_EIO, "%s: %s", c->dlq_file, strerror(errno));
    return consumer_new(c, errbuf, errlen);
}

static void kafka_teardown(rc_consumer *c);
static void free_all(rc_consumer *c);

static int seed_positions(rc_consumer *c, char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < c->o.nstart; i++) {
        struct part *pt;
        if (c->o.start_parts[i] < 0 || c->o.start_offsets[i] < 0)
            return rc_err(errbuf, errlen, RC_EINVAL,
                          "consumer: start position %" PRId32 ":%" PRId64 " is negative",
                          c->o.start_parts[i], c->o.start_offsets[i]);
        if (!(pt = part_get(c, c->o.start_parts[i])))
            return rc_err(errbuf, errlen, RC_ENOMEM, "consumer: out of memory");
        pt->next = c->o.start_offsets[i];
    }
    c->o.start_parts = NULL; /* copied: the caller's arrays may go */
    c->o.start_offsets = NULL;
    c->o.nstart = 0;
    return 0;
}

int rc_consumer_start(uv_loop_t *loop, const rc_consumer_opts *opts, rc_consumer **out,
                      char *errbuf, size_t errlen)
{
    int rc;
    if (!loop || !opts || !out || !opts->on_batch)
        return rc_err(errbuf, errlen, RC_EINVAL, "consumer: loop, opts, out, on_batch required");
    if (!opts->embedded && (!opts->brokers || !opts->brokers[0]))
        return rc_err(errbuf, errlen, RC_EINVAL, "consumer: brokers: required unless embedded");
    if (opts->embedded_partitions < 0)
        return rc_err(errbuf, errlen, RC_EINVAL, "consumer: embedded_partitions: must be >= 0");
    rc_consumer *c = calloc(1, sizeof *c);
    if (!c)
        return rc_err(errbuf, errlen, RC_ENOMEM, "consumer: out of memory");
    c->loop = loop;
    c->pipefd[0] = c->pipefd[1] = -1;
    c->st.lag = -1;
    c->st.last_gap_partition = -1;
    rc_buf_init(&c->line, 2 * DLQ_PAYLOAD_MAX);
    if (uv_mutex_init(&c->mu) != 0) {
        free(c);
        return rc_err(errbuf, errlen, RC_ENOMEM, "consumer: mutex");
    }
    if ((rc = copy_opts(c, opts, errbuf, errlen)) || (rc = seed_positions(c, errbuf, errlen)) ||
        (rc = kafka_setup(c, errbuf, errlen)))
        goto out_teardown;
    if ((rc = uv_poll_init(loop, &c->poll, c->pipefd[0])) != 0) {
        rc = rc_err(errbuf, errlen, RC_EIO, "uv_poll_init: %s", uv_strerror(rc));
        goto out_teardown;
    }
    uv_idle_init(loop, &c->idle);
    uv_timer_init(loop, &c->timer);
    uv_async_init(loop, &c->lookup_async, on_lookup_done);
    c->poll.data = c->idle.data = c->timer.data = c->lookup_async.data = c;
    c->handles_open = 4;
    uv_mutex_lock(&c->mu);
    c->async_open = 1;
    uv_mutex_unlock(&c->mu);
    uv_poll_start(&c->poll, UV_READABLE, on_readable);
    uv_timer_start(&c->timer, on_timer, TIMER_MS, TIMER_MS);
    assign_all(c);
    /* Whatever was queued before the pipe was attached never signalled it. */
    uv_idle_start(&c->idle, on_idle);
    publish(c);
    rc_log_info(MOD, "consumer started", "bootstrap=%s topic=%s group=%s batch=%zu dlq=%s",
                c->bootstrap, c->topic, c->group, c->batch,
                c->dlq_file ? c->dlq_file : c->dlq_topic);
    *out = c;
    return 0;
out_teardown:
    c->destroyed = 1; /* as in rc_consumer_destroy: no look-up starts from here on */
    kafka_teardown(c);
    free_all(c);
    free(c);
    return rc;
}

/* ---- close, destroy ---- */

static void free_all(rc_consumer *c)
{
    uv_mutex_destroy(&c->mu);
    free(c->pub_parts);
    rc_buf_free(&c->line);
    free(c->parts);
    free(c->msgs);
    free(c->kmsgs);
    free(c->topic);
    free(c->group);
    free(c->dlq_topic);
    free(c->dlq_file);
    free(c->instance_id);
    free(c->bootstrap);
}

static void on_handle_closed(uv_handle_t *h)
{
    rc_consumer *c = h->data;
    if (--c->handles_open > 0)
        return;
    /* Read before cb: a cb that calls rc_consumer_destroy frees c itself. */
    int destroyed = c->destroyed;
    if (c->close_cb)
        c->close_cb(c, c->close_arg);
    if (destroyed) {
        free_all(c);
        free(c);
    }
}

void rc_consumer_close(rc_consumer *c, rc_consumer_close_cb cb, void *arg)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    c->close_cb = cb;
    c->close_arg = arg;
    uv_close((uv_handle_t *)&c->poll, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_mutex_lock(&c->mu);
    c->async_open = 0; /* look-up threads no longer signal it */
    uv_mutex_unlock(&c->mu);
    uv_close((uv_handle_t *)&c->lookup_async, on_handle_closed);
}

/* librdkafka before 2.3.0 (Debian 12 ships 2.0.2) asserts in rd_kafka_destroy
 * when a cooperative-sticky member that has joined its group is destroyed
 * before its first assignment (upstream issue 4312: the assignor's state is
 * created by the first SyncGroup answer and destroyed unconditionally). Such
 * a handle - closed, so it has left the group - is kept instead of destroyed
 * (silenced, reachable from here for the leak checker): this happens at most
 * once per consumer and, in the daemon, only when it exits before ever
 * getting partitions. Eager strategies do not need it; the handle is
 * destroyed as usual once an assignment was seen or with a fixed librdkafka. */
static rd_kafka_t *kept_handles[64];
static atomic_int nkept;

static void destroy_consumer_handle(rc_consumer *c)
{
    if (!c->ever_assigned && rd_kafka_version() < 0x020300ff) {
        int i = atomic_fetch_add(&nkept, 1);
        if (i < (int)RC_ARRAY_LEN(kept_handles)) {
            rd_kafka_set_log_level(c->rk, 0);
            kept_handles[i] = c->rk;
            rc_log_debug(MOD,
                         "consumer handle kept, not destroyed (librdkafka < 2.3.0 "
                         "asserts on a member destroyed before its first assignment)",
                         NULL);
            return;
        }
    }
    /* assign_all: no group joined, nothing to commit or leave; a consumer
     * close would wait for a group coordinator, forever with the brokers gone */
    if (c->o.assign_all)
        rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    else
        rd_kafka_destroy(c->rk);
}

/* Releases every Kafka resource and the pipe; leaves c's memory and uv handles.
 */
static void kafka_teardown(rc_consumer *c)
{
    for (size_t i = 0; i < c->held; i++)
        rd_kafka_message_destroy(c->msgs[i]);
    c->held = 0;
    if (c->q)
        rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
    if (c->revoking) { /* the owner did not release: the next owner replays */
        unassign(c, c->revoking, c->revoking_coop);
        rd_kafka_topic_partition_list_destroy(c->revoking);
        c->revoking = NULL;
        c->st.revoke_pending = 0;
    }
    lookups_reap(c, 0); /* they use c->rk: joined first (each ends within its timeout) */
    if (c->rk && !c->o.assign_all) {
        /* Serves the final revoke (on_rebalance) on this thread. */
        rd_kafka_resp_err_t e = rd_kafka_consumer_close(c->rk);
        if (e)
            rc_log_warn(MOD, "consumer close", "err=\"%s\"", rd_kafka_err2str(e));
    }
    /* none starts while closing (set_start_offsets); kept as a guard */
    lookups_reap(c, 0);
    if (c->q)
        rd_kafka_queue_destroy(c->q);
    if (c->rk)
        destroy_consumer_handle(c);
    c->q = NULL;
    c->rk = NULL;
    if (c->prod && !c->mock) {
        if (rd_kafka_flush(c->prod, FLUSH_TIMEOUT_MS))
            rc_log_warn(MOD, "dead letters lost at shutdown", "pending=%d",
                        rd_kafka_outq_len(c->prod));
        rd_kafka_destroy(c->prod);
    }
    c->prod = NULL;
    rc_consumer_mock_destroy(c->mock); /* flushes its dead letters first */
    c->mock = NULL;
    if (c->dlq_fp)
        fclose(c->dlq_fp);
    c->dlq_fp = NULL;
    c->dlq_shut = 1;
    for (int i = 0; i < 2; i++)
        if (c->pipefd[i] >= 0)
            close(c->pipefd[i]);
    c->pipefd[0] = c->pipefd[1] = -1;
    publish(c);
}

void rc_consumer_destroy(rc_consumer *c)
{
    if (!c || c->destroyed)
        return;
    c->destroyed = 1;
    rc_consumer_close(c, NULL, NULL); /* no-op if already closing */
    kafka_teardown(c);
    if (c->handles_open == 0) {
        free_all(c);
        free(c);
    }
}
