/* vboot — new owner of a city bootstraps it from the vector topic (see
 * include/recalld/vboot.h). */
#include "recalld/vboot.h"

#include <librdkafka/rdkafka.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumer_int.h"
#include "recalld/common.h"
#include "recalld/log.h"
#include "recalld/repart.h"
#include "recalld/vecpub.h"

#define MOD            "vboot"
#define META_TIMEOUT   5000 /* one metadata or watermark request at most */
#define META_FIRST     1000 /* its first try (doubled up to META_TIMEOUT) */
#define POLL_MS        200
#define DEDUP_AT_LEAST 65536

/* A kept record: its bytes, and where its item id is in them. */
struct rec {
    uint64_t version;
    uint32_t len, ilen;
    uint32_t pi; /* its partition's index in run.parts */
    char data[];
};

/* One run: owned by its thread while reading, then by the loop thread;
 * gone and cancel are written by the loop thread (a revoke) while it reads. */
struct run {
    int32_t *parts;
    atomic_uchar *gone;  /* per part: revoked since the run started */
    size_t nparts, live; /* live: parts not gone (loop thread) */
    atomic_int cancel;   /* every part gone: the reader stops */
    uint64_t dropped;    /* kept records of gone parts, not handed (loop thread) */
    int32_t bparts;      /* partitions of the by-city topic */
    struct rec **recs;
    size_t n, cap, dedup_at;
    uint64_t records, matched, invalid, lost, gaps, errors;
    int timeout, truncated;
    char error[128];
    uint64_t start_ns;
};

struct rc_vboot {
    rc_vboot_opts o;
    char *brokers, *vtopic, *bytopic, *group;
    uv_async_t async;
    pthread_t th;
    int th_running;
    _Atomic int stop;
    struct run *run;
    int state; /* IDLE, READING, FEEDING */
    size_t feed_i;
    int32_t *wait; /* paused, for the next run */
    size_t nwait, capwait;
    pthread_mutex_t mu; /* st */
    rc_vboot_stats st;
};

enum { IDLE, READING, FEEDING };

/* Loop thread: the partitions held now, for stats. */
static void note_paused(rc_vboot *v)
{
    pthread_mutex_lock(&v->mu);
    v->st.paused = (uint32_t)(v->nwait + (v->run ? v->run->live : 0));
    v->st.running = v->run != NULL;
    pthread_mutex_unlock(&v->mu);
}

/* ---- reading (the run's thread) ---- */

static int rec_cmp(const void *a, const void *b)
{
    const struct rec *x = *(const struct rec *const *)a, *y = *(const struct rec *const *)b;
    size_t n = RC_MIN(x->ilen, y->ilen);
    int c = memcmp(x->data + RC_VECREC_HEADER, y->data + RC_VECREC_HEADER, n);
    if (c)
        return c;
    if (x->ilen != y->ilen)
        return x->ilen < y->ilen ? -1 : 1;
    return x->version > y->version ? -1 : x->version < y->version; /* newest first */
}

/* Keeps the newest record per item. */
static void dedup(struct run *r)
{
    if (r->n < 2)
        return;
    qsort(r->recs, r->n, sizeof *r->recs, rec_cmp);
    size_t w = 1;
    for (size_t i = 1; i < r->n; i++) {
        struct rec *p = r->recs[w - 1], *q = r->recs[i];
        if (p->ilen == q->ilen &&
            memcmp(p->data + RC_VECREC_HEADER, q->data + RC_VECREC_HEADER, p->ilen) == 0)
            free(q);
        else
            r->recs[w++] = q;
    }
    r->n = w;
}

/* The index in r->parts of a partition still the run's, or -1. */
static long wanted(struct run *r, int32_t p)
{
    for (size_t i = 0; i < r->nparts; i++)
        if (r->parts[i] == p)
            return atomic_load_explicit(&r->gone[i], memory_order_relaxed) ? -1 : (long)i;
    return -1;
}

static int halted(rc_vboot *v, struct run *r)
{
    return atomic_load(&v->stop) || atomic_load(&r->cancel);
}

/* One message of the vector topic. 0, or RC_ENOMEM. */
static int take(rc_vboot *v, struct run *r, const rd_kafka_message_t *m, float *scratch)
{
    rc_vecrec rec;
    r->records++;
    if (rc_vecrec_decode(m->payload, m->len, &rec, scratch, NULL, v->o.dim) ||
        rec.dim != v->o.dim) {
        r->invalid++;
        return 0;
    }
    long pi = wanted(r, rc_repart_partition(rec.city, rec.city_len, r->bparts));
    if (pi < 0)
        return 0;
    r->matched++;
    if (r->n == r->cap) {
        if (r->n >= r->dedup_at) {
            dedup(r);
            r->dedup_at = RC_MAX((size_t)DEDUP_AT_LEAST, 2 * r->n);
        }
        if (r->n == r->cap) {
            size_t cap = r->cap ? 2 * r->cap : 4096;
            struct rec **p = realloc(r->recs, cap * sizeof *p);
            if (!p)
                return RC_ENOMEM;
            r->recs = p;
            r->cap = cap;
        }
    }
    struct rec *k = malloc(sizeof *k + m->len);
    if (!k)
        return RC_ENOMEM;
    k->version = rec.version;
    k->len = (uint32_t)m->len;
    k->ilen = rec.item_len;
    k->pi = (uint32_t)pi;
    memcpy(k->data, m->payload, m->len);
    r->recs[r->n++] = k;
    return 0;
}

static void run_error(struct run *r, const char *what, const char *why)
{
    r->errors++;
    snprintf(r->error, sizeof r->error, "%.40s: %.80s", what, why);
}

/* The wait of a metadata or watermark request's try: META_FIRST, doubled
 * per try up to META_TIMEOUT, so that a stop or a cancel is noticed soon
 * while a slow broker still gets its answer in. */
static int try_ms(int tries) { return tries >= 3 ? META_TIMEOUT : META_FIRST << tries; }

static int32_t partition_count(rc_vboot *v, rd_kafka_t *rk, const char *topic, struct run *r)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int32_t n = -1;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__TIMED_OUT;
    uint64_t until = rc_now_ns() + (uint64_t)META_TIMEOUT * 1000000ull;
    for (int tries = 0; rkt && e == RD_KAFKA_RESP_ERR__TIMED_OUT && !halted(v, r); tries++) {
        e = rd_kafka_metadata(rk, 0, rkt, &md, try_ms(tries));
        if (rc_now_ns() > until)
            break;
    }
    if (!rkt)
        e = rd_kafka_last_error();
    if (!e && md->topic_cnt == 1)
        e = md->topics[0].err;
    if (!e && md->topics[0].partition_cnt > 0)
        n = md->topics[0].partition_cnt;
    if (n < 0 && !halted(v, r))
        run_error(r, topic, e ? rd_kafka_err2str(e) : "no partitions");
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return n;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/* Every partition's watermarks (hi[p] = -1: none). A partition that does not
 * answer (no leader for a while) is asked again, round after round, until
 * the run's deadline, a stop or a cancel; the others are asked meanwhile. */
static void watermarks(rc_vboot *v, rd_kafka_t *rk, struct run *r, int32_t np, uint64_t deadline,
                       int64_t *lo, int64_t *hi)
{
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    int32_t todo = np;
    for (int32_t p = 0; p < np; p++)
        hi[p] = -2; /* not known yet */
    for (int round = 0; todo > 0 && !halted(v, r); round++) {
        if (round > 0) {
            if (rc_now_ns() > deadline) {
                r->timeout = 1;
                break;
            }
            for (int i = 0; i < 5 && !halted(v, r); i++) /* 500 ms between rounds */
                nap_ms(100);
        }
        for (int32_t p = 0; p < np && !halted(v, r); p++) {
            if (hi[p] != -2)
                continue;
            rd_kafka_resp_err_t pe =
                rd_kafka_query_watermark_offsets(rk, v->vtopic, p, &lo[p], &hi[p], try_ms(round));
            if (pe) {
                hi[p] = -2;
                e = pe;
                rc_log_debug(MOD, "watermarks: asked again", "partition=%d err=\"%s\"", (int)p,
                             rd_kafka_err2str(pe));
            } else {
                todo--;
            }
        }
    }
    for (int32_t p = 0; p < np; p++)
        if (hi[p] == -2)
            hi[p] = -1;
    if (todo > 0 && !halted(v, r))
        run_error(r, "watermarks", rd_kafka_err2str(e));
}

static rd_kafka_t *reader_new(rc_vboot *v, struct run *r)
{
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, rc__consumer_kafka_log);
    for (const char *const *kv = v->o.extra; kv && kv[0] && kv[1]; kv += 2)
        if (rd_kafka_conf_set(conf, kv[0], kv[1], why, sizeof why) != RD_KAFKA_CONF_OK)
            rc_log_debug(MOD, "librdkafka property not used by the bootstrap reader",
                         "key=%s why=\"%s\"", kv[0], why);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", v->brokers, why, sizeof why) ||
        rd_kafka_conf_set(conf, "group.id", v->group, why, sizeof why) ||
        rd_kafka_conf_set(conf, "client.id", "recalld-vboot", why, sizeof why) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof why) ||
        rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", why, sizeof why) ||
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", why, sizeof why)) {
        rd_kafka_conf_destroy(conf);
        run_error(r, "config", why);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        run_error(r, "consumer", why);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Reads every partition of the vector topic up to its high watermark at
 * the start, keeping the run's cities. */
static void read_all(rc_vboot *v, struct run *r, rd_kafka_t *rk)
{
    uint64_t deadline = r->start_ns + (uint64_t)v->o.timeout_ms * 1000000ull;
    int32_t np, left = 0;
    if ((r->bparts = partition_count(v, rk, v->bytopic, r)) <= 0 ||
        (np = partition_count(v, rk, v->vtopic, r)) <= 0)
        return; /* nothing to read (no trainer published yet), or unknown mapping */
    int64_t *hi = calloc((size_t)np, sizeof *hi), *next = calloc((size_t)np, sizeof *next),
            *low = calloc((size_t)np, sizeof *low);
    float *scratch = malloc(v->o.dim * sizeof *scratch);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    if (!hi || !next || !low || !scratch || !l) {
        run_error(r, "bootstrap", "out of memory");
        goto out;
    }
    watermarks(v, rk, r, np, deadline, low, hi);
    for (int32_t p = 0; p < np && !halted(v, r); p++) {
        int64_t lo = low[p];
        if (hi[p] < 0)
            continue;
        r->lost += (uint64_t)lo; /* deleted by retention: never read */
        next[p] = -1 - lo;       /* < 0: nothing read yet; the start is -1 - next */
        if (hi[p] > lo) {
            rd_kafka_topic_partition_list_add(l, v->vtopic, p)->offset = lo;
            left++;
        }
    }
    if (left && !halted(v, r) && rd_kafka_assign(rk, l)) {
        run_error(r, "assign", "failed");
        goto out;
    }
    while (left > 0 && !halted(v, r)) {
        if (rc_now_ns() > deadline) {
            r->timeout = 1;
            break;
        }
        if (v->o.max_records && r->records >= v->o.max_records) {
            r->truncated = 1;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, POLL_MS);
        if (!m)
            continue;
        int32_t p = m->partition;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                run_error(r, "read", rd_kafka_message_errstr(m));
        } else if (p >= 0 && p < np && hi[p] >= 0 && m->offset < hi[p] &&
                   (next[p] < 0 ? m->offset >= -1 - next[p] : m->offset >= next[p])) {
            int64_t expect = next[p] < 0 ? -1 - next[p] : next[p];
            if (m->offset > expect) { /* the first record: deleted since the watermarks */
                if (next[p] < 0)
                    r->lost += (uint64_t)(m->offset - expect);
                else
                    r->gaps += (uint64_t)(m->offset - expect);
            }
            next[p] = m->offset + 1;
            if (take(v, r, m, scratch)) {
                run_error(r, "bootstrap", "out of memory");
                rd_kafka_message_destroy(m);
                break;
            }
            if (next[p] >= hi[p])
                left--;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
out:
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
    free(hi);
    free(next);
    free(low);
    free(scratch);
    dedup(r);
}

static void *reader_main(void *arg)
{
    rc_vboot *v = arg;
    struct run *r = v->run;
    pthread_setname_np(pthread_self(), "rc-vboot");
    rd_kafka_t *rk = reader_new(v, r);
    if (rk) {
        read_all(v, r, rk);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    uv_async_send(&v->async);
    return NULL;
}

/* ---- loop thread ---- */

static int in_list(const int32_t *l, size_t n, int32_t p)
{
    for (size_t i = 0; i < n; i++)
        if (l[i] == p)
            return 1;
    return 0;
}

static void free_run(struct run *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->recs[i]);
    free(r->recs);
    free(r->parts);
    free((void *)r->gone);
    free(r);
}

static void start_run(rc_vboot *v)
{
    struct run *r = calloc(1, sizeof *r);
    if (!r || !(r->parts = malloc(v->nwait * sizeof *r->parts)) ||
        !(r->gone = malloc(v->nwait * sizeof *r->gone))) {
        if (r)
            free(r->parts);
        free(r);
        rc_log_error(MOD, "out of memory: partitions resumed cold", "count=%zu", v->nwait);
        rc_consumer_pause_parts(v->o.consumer, v->wait, v->nwait, 0);
        v->nwait = 0;
        return;
    }
    memcpy(r->parts, v->wait, v->nwait * sizeof *r->parts);
    for (size_t i = 0; i < v->nwait; i++)
        atomic_init(&r->gone[i], 0);
    atomic_init(&r->cancel, 0);
    r->nparts = r->live = v->nwait;
    r->dedup_at = DEDUP_AT_LEAST;
    r->start_ns = rc_now_ns();
    v->nwait = 0;
    v->run = r;
    v->state = READING;
    note_paused(v);
    rc_log_info(MOD, "bootstrapping newly assigned cities from the vector topic",
                "topic=%s partitions=%zu", v->vtopic, r->nparts);
    if (pthread_create(&v->th, NULL, reader_main, v) != 0) {
        run_error(r, "bootstrap", "thread");
        uv_async_send(&v->async);
        return;
    }
    v->th_running = 1;
}

static int gone(const struct run *r, size_t i)
{
    return atomic_load_explicit(&r->gone[i], memory_order_relaxed);
}

/* The run's partitions still ours and not waiting for the next run. */
static size_t to_resume(const rc_vboot *v, const struct run *r, int32_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nparts; i++)
        if (!gone(r, i) && !in_list(v->wait, v->nwait, r->parts[i]))
            out[n++] = r->parts[i];
    return n;
}

static void finish_run(rc_vboot *v)
{
    struct run *r = v->run;
    int32_t *res = malloc((r->nparts ? r->nparts : 1) * sizeof *res);
    size_t nres = res ? to_resume(v, r, res) : 0;
    if (res)
        rc_consumer_pause_parts(v->o.consumer, res, nres, 0);
    else /* out of memory: one by one */
        for (size_t i = 0; i < r->nparts; i++)
            if (!gone(r, i) && !in_list(v->wait, v->nwait, r->parts[i]))
                rc_consumer_pause_parts(v->o.consumer, &r->parts[i], 1, 0);
    free(res);
    int cancelled = r->live == 0;
    int64_t ms = (int64_t)((rc_now_ns() - r->start_ns) / 1000000u);
    pthread_mutex_lock(&v->mu);
    v->st.runs++;
    v->st.records += r->records;
    v->st.matched += r->matched;
    v->st.handed += r->n - r->dropped;
    v->st.dropped += r->dropped;
    v->st.cancelled += (uint64_t)cancelled;
    v->st.invalid += r->invalid;
    v->st.lost += r->lost;
    v->st.gaps += r->gaps;
    v->st.errors += r->errors;
    v->st.timeouts += (uint64_t)r->timeout;
    v->st.truncated += (uint64_t)r->truncated;
    v->st.last_ms = ms;
    if (r->error[0])
        snprintf(v->st.last_error, sizeof v->st.last_error, "%s", r->error);
    pthread_mutex_unlock(&v->mu);
    if (cancelled)
        rc_log_info(MOD, "bootstrap cancelled: every partition of the run was revoked",
                    "partitions=%zu records=%llu dropped=%llu ms=%lld", r->nparts,
                    (unsigned long long)r->records, (unsigned long long)r->dropped, (long long)ms);
    else if (r->timeout || r->truncated || r->errors)
        rc_log_warn(MOD,
                    "bootstrap incomplete: the rest of these cities is rebuilt from their "
                    "clicks",
                    "partitions=%zu revoked=%zu records=%llu handed=%llu timeout=%d truncated=%d "
                    "error=\"%s\" ms=%lld",
                    r->nparts, r->nparts - r->live, (unsigned long long)r->records,
                    (unsigned long long)(r->n - r->dropped), r->timeout, r->truncated, r->error,
                    (long long)ms);
    else
        rc_log_info(MOD, "bootstrap done: partitions resumed",
                    "partitions=%zu resumed=%zu revoked=%zu records=%llu matched=%llu "
                    "handed=%llu dropped=%llu lost=%llu ms=%lld",
                    r->nparts, nres, r->nparts - r->live, (unsigned long long)r->records,
                    (unsigned long long)r->matched, (unsigned long long)(r->n - r->dropped),
                    (unsigned long long)r->dropped, (unsigned long long)r->lost, (long long)ms);
    if (r->lost)
        rc_log_warn(MOD, "vector records deleted by retention before the bootstrap read them",
                    "topic=%s lost=%llu", v->vtopic, (unsigned long long)r->lost);
    free_run(r);
    v->run = NULL;
    v->state = IDLE;
    note_paused(v);
    if (v->nwait && !atomic_load(&v->stop))
        start_run(v);
}

void rc_vboot_feed(rc_vboot *v)
{
    if (!v || v->state != FEEDING || atomic_load(&v->stop))
        return;
    struct run *r = v->run;
    while (v->feed_i < r->n) {
        if (gone(r, r->recs[v->feed_i]->pi)) { /* revoked since it was read */
            r->dropped++;
            v->feed_i++;
            continue;
        }
        rc_batch *b = rc_engine_batch_get(v->o.engine);
        if (!b)
            return; /* a batch comes back: rc_vboot_feed again */
        rc_engine_batch_set_install(b);
        while (v->feed_i < r->n) {
            const struct rec *k = r->recs[v->feed_i];
            if (gone(r, k->pi)) {
                r->dropped++;
            } else if (rc_engine_batch_add(b, k->data, k->len, -1, -1)) {
                break;
            }
            v->feed_i++;
        }
        rc_engine_submit(v->o.engine, b);
    }
    finish_run(v);
}

static void on_read_done(uv_async_t *h)
{
    rc_vboot *v = h->data;
    if (v->state != READING || atomic_load(&v->stop))
        return; /* stopping: the run is abandoned (rc_vboot_destroy) */
    if (v->th_running) {
        pthread_join(v->th, NULL);
        v->th_running = 0;
    }
    v->state = FEEDING;
    v->feed_i = 0;
    rc_vboot_feed(v);
}

/* Revoked partitions: a waiting one is forgotten, a running one is marked
 * gone (its records are neither kept nor handed from now on, and it is not
 * resumed at the run's end); a run left without partitions is cancelled.
 * Nothing is resumed here: the consumer resumes what it unassigns, after a
 * deferred revoke's commit (it pauses them for that itself). */
static void revoke_parts(rc_vboot *v, const int32_t *parts, size_t n)
{
    size_t w = 0, nrev = 0;
    for (size_t i = 0; i < v->nwait; i++)
        if (!in_list(parts, n, v->wait[i]))
            v->wait[w++] = v->wait[i];
    v->nwait = w;
    struct run *r = v->run;
    for (size_t i = 0; r && i < r->nparts; i++)
        if (!gone(r, i) && in_list(parts, n, r->parts[i])) {
            atomic_store_explicit(&r->gone[i], 1, memory_order_relaxed);
            r->live--;
            nrev++;
        }
    if (nrev) {
        pthread_mutex_lock(&v->mu);
        v->st.revoked += nrev;
        pthread_mutex_unlock(&v->mu);
        rc_log_info(MOD,
                    "partitions revoked while being bootstrapped: their cities are dropped "
                    "from the run",
                    "revoked=%zu left=%zu", nrev, r->live);
        if (r->live == 0)
            atomic_store(&r->cancel, 1); /* the reader stops within POLL_MS */
    }
    note_paused(v);
}

void rc_vboot_rebalance(rc_vboot *v, int assigned, const int32_t *parts, size_t n)
{
    if (!v || !n || atomic_load(&v->stop))
        return;
    if (!assigned) {
        revoke_parts(v, parts, n);
        return;
    }
    if (v->nwait + n > v->capwait) {
        size_t cap = RC_MAX(v->capwait * 2, v->nwait + n);
        int32_t *w = realloc(v->wait, cap * sizeof *w);
        if (!w) {
            rc_log_error(MOD, "out of memory: partitions start cold", "count=%zu", n);
            return;
        }
        v->wait = w;
        v->capwait = cap;
    }
    rc_consumer_pause_parts(v->o.consumer, parts, n, 1);
    for (size_t i = 0; i < n; i++)
        if (!in_list(v->wait, v->nwait, parts[i]))
            v->wait[v->nwait++] = parts[i];
    note_paused(v);
    if (v->state == IDLE)
        start_run(v);
}

void rc_vboot_stop(rc_vboot *v)
{
    if (!v || atomic_load(&v->stop))
        return;
    atomic_store(&v->stop, 1);
    if (!v->run && !v->nwait)
        return;
    size_t held = v->nwait + (v->run ? v->run->live : 0);
    pthread_mutex_lock(&v->mu);
    v->st.abandoned += v->run != NULL;
    pthread_mutex_unlock(&v->mu);
    rc_log_info(MOD,
                "shutting down: bootstrap abandoned, its partitions stay paused until the "
                "consumer closes (their next owner starts from the committed offsets)",
                "partitions=%zu reading=%d installing=%d handed=%zu", held, v->state == READING,
                v->state == FEEDING, v->state == FEEDING ? v->feed_i : 0);
}

/* Everything create allocated (run and wait are NULL until a run). */
static void vboot_free(rc_vboot *v)
{
    free_run(v->run);
    free(v->wait);
    free(v->brokers);
    free(v->vtopic);
    free(v->bytopic);
    free(v->group);
    pthread_mutex_destroy(&v->mu);
    free(v);
}

int rc_vboot_create(const rc_vboot_opts *o, rc_vboot **out, char *errbuf, size_t errlen)
{
    if (!o || !o->loop || !o->brokers || !o->vtopic || !o->bytopic || !o->engine || !o->consumer ||
        !o->dim)
        return rc_err(errbuf, errlen, RC_EINVAL, "vboot: missing option");
    rc_vboot *v = calloc(1, sizeof *v);
    if (!v)
        return rc_err(errbuf, errlen, RC_ENOMEM, "vboot: out of memory");
    v->o = *o;
    v->o.timeout_ms = o->timeout_ms ? o->timeout_ms : 120000;
    v->brokers = strdup(o->brokers);
    v->vtopic = strdup(o->vtopic);
    v->bytopic = strdup(o->bytopic);
    v->group = strdup(o->group && o->group[0] ? o->group : "recalld.vboot");
    v->st.last_ms = -1;
    pthread_mutex_init(&v->mu, NULL);
    if (!v->brokers || !v->vtopic || !v->bytopic || !v->group ||
        uv_async_init(o->loop, &v->async, on_read_done)) {
        vboot_free(v);
        return rc_err(errbuf, errlen, RC_ENOMEM, "vboot: out of memory");
    }
    v->async.data = v;
    *out = v;
    return 0;
}

static void on_closed(uv_handle_t *h) { vboot_free(h->data); }

void rc_vboot_destroy(rc_vboot *v)
{
    if (!v)
        return;
    rc_vboot_stop(v);
    if (v->th_running) {
        pthread_join(v->th, NULL);
        v->th_running = 0;
    }
    uv_close((uv_handle_t *)&v->async, on_closed);
}

void rc_vboot_stats_get(rc_vboot *v, rc_vboot_stats *st)
{
    memset(st, 0, sizeof *st);
    st->last_ms = -1;
    if (!v)
        return;
    pthread_mutex_lock(&v->mu);
    *st = v->st;
    pthread_mutex_unlock(&v->mu);
}

void rc_vboot_stats_json(rc_vboot *v, rc_buf *o)
{
    rc_vboot_stats s;
    rc_engine_install_stats is = {0};
    rc_vboot_stats_get(v, &s);
    if (v)
        rc_engine_install_stats_get(v->o.engine, &is);
    /* a run ends when its last batch is submitted: it installs until the
     * trainer has taken every record handed */
    s.running = s.running || is.records < s.handed;
    rc_buf_printf(
        o,
        "\"runs\":%llu,\"running\":%s,\"paused\":%u,\"records\":%llu,\"matched\":%llu,"
        "\"handed\":%llu,\"installed\":%llu,\"skipped\":%llu,\"count\":%llu,"
        "\"invalid\":%llu,\"lost\":%llu,\"gaps\":%llu,\"errors\":%llu,"
        "\"timeouts\":%llu,\"truncated\":%llu,\"revoked\":%llu,\"cancelled\":%llu,"
        "\"dropped\":%llu,\"abandoned\":%llu,\"ms\":%lld,\"last_error\":",
        (unsigned long long)s.runs, s.running ? "true" : "false", s.paused,
        (unsigned long long)s.records, (unsigned long long)s.matched, (unsigned long long)s.handed,
        (unsigned long long)is.installed, (unsigned long long)is.kept, (unsigned long long)is.count,
        (unsigned long long)(s.invalid + is.invalid), (unsigned long long)s.lost,
        (unsigned long long)s.gaps, (unsigned long long)s.errors, (unsigned long long)s.timeouts,
        (unsigned long long)s.truncated, (unsigned long long)s.revoked,
        (unsigned long long)s.cancelled, (unsigned long long)s.dropped,
        (unsigned long long)s.abandoned, (long long)s.last_ms);
    rc_buf_json_str(o, s.last_error, strlen(s.last_error));
}
