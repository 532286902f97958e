#include "recalld/engine.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "recalld/checkpoint.h"
#include "recalld/common.h"
#include "recalld/index.h"
#include "recalld/log.h"
#include "recalld/model.h"
#include "recalld/profile.h"
#include "recalld/retrain.h"
#include "recalld/sampler.h"
#include "recalld/session.h"
#include "recalld/sgns.h"
#include "recalld/tower.h"
#include "recalld/tserve.h"
#include "recalld/vec.h"

#define ERR_TEXT 112
#define FRESH_RING 4096
#define POP_N 256
#define CTX_MAX 64

struct rc_batch {
    rc_batch *next;
    uint32_t n, cap;
    char *arena; /* raw payloads back to back */
    size_t alen, acap;
    size_t *aoff;
    uint32_t *len;
    int32_t *part;
    int64_t *koff;
    rc_event *ev;
    uint8_t *reason;
    char (*err)[ERR_TEXT];
    uint64_t recv_ns;
};

struct queue {
    rc_batch *head, *tail;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

struct rc_engine {
    rc_config cfg;
    rc_table *table;
    rc_session *sess;
    rc_sampler *sampler;
    rc_index *index;
    rc_sgns_opts sg;
    rc_sgns_work work;
    rc_rng rng;
    rc_event scratch_ev; /* rc_engine_apply_click (offline, single thread) */

    uv_loop_t *loop;
    uv_async_t async;
    rc_engine_done_cb done;
    void *ud;

    pthread_mutex_t free_mu;
    rc_batch *free_list;
    rc_batch *all; /* every batch, for destroy (linked through a side array) */
    rc_batch **batches;
    uint32_t nbatches;

    struct queue q_decode, q_train, q_done;
    pthread_t decoder, trainer;
    int threads;
    atomic_int stop;

    /* sync: batches submitted vs finished */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t submitted, finished;

    /* counters (atomics: bumped by one thread, read by any) */
    _Atomic uint64_t consumed, applied, ignored, pairs, new_items, rejected_capacity, lost;
    _Atomic uint64_t invalid[RC_EV_REASON_COUNT];
    _Atomic uint64_t total_count, batches_done, index_errors;
    _Atomic double loss_avg;
    int64_t max_ts; /* trainer only */
    _Atomic int64_t max_ts_pub; /* newest event time applied, for stats */
    uint64_t last_expire_ns, last_maintain_ns;

    pthread_mutex_t fresh_mu;
    uint32_t fresh_us[FRESH_RING];
    uint32_t fresh_n, fresh_pos;
    rc_hist fresh_hist; /* same samples, as Prometheus buckets (us) */

    pthread_mutex_t pop_mu;
    uint32_t pop[POP_N];
    uint32_t npop;
    uint8_t *in_pop; /* trainer only, by row */
    size_t in_pop_cap;

    struct ckpt *ck; /* checkpoints: see "---- checkpoints ----" */
    rc_profile *prof;  /* per-user device, tags, counters (two-tower user input) */
    struct tower *tw;  /* two-tower serving: see "---- two-tower serving ----" */
    struct retrain *rt; /* background retraining: see "---- background retraining ----" */
};

/* Settings that SIGHUP may change while queries read them (rc_engine_reload). */
static inline uint32_t cfg_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline float cfg_f32(const float *p)
{
    float v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}

static int ck_init(rc_engine *e, char *eb, size_t el);
static void ck_note_batch(rc_engine *e, const rc_batch *b);
static int ck_take(rc_engine *e, int force);
static int ck_start(rc_engine *e, char *eb, size_t el);
static void ck_stop(rc_engine *e);
static void ck_free(rc_engine *e);
static void ck_deliver(rc_engine *e);
static int ck_restore(rc_engine *e, const rc_table_opts *to, const rc_index_opts *io, char *eb,
                      size_t el);
static rc_index *ck_prebuilt_index(rc_engine *e);
static void ck_restored(rc_engine *e, uint64_t t0);
static int ck_was_restored(const rc_engine *e);
static void ck_stats_json(rc_engine *e, rc_buf *o);
static int tw_init(rc_engine *e, char *eb, size_t el);
static int tw_start(rc_engine *e, char *eb, size_t el);
static void tw_stop(rc_engine *e);
static void tw_free(rc_engine *e);
static void tw_dirty(rc_engine *e, uint32_t row);
static void tw_maintain(rc_engine *e, int force);
static void tw_note(rc_engine *e, const rc_event *ev, uint32_t row, unsigned flags);
static int tw_recall(rc_engine *e, const rc_recall_req *req, rc_hit *out, uint32_t *n,
                     int *fallback);
static void tw_stats_json(rc_engine *e, rc_buf *o);
static void tw_set_conf_path(rc_engine *e, const char *path);
static int rt_init(rc_engine *e, char *eb, size_t el);
static int rt_start(rc_engine *e, char *eb, size_t el);
static void rt_cancel(rc_engine *e);
static void rt_stop(rc_engine *e);
static void rt_free(rc_engine *e);
static void rt_note(rc_engine *e, const rc_event *ev, uint32_t row, uint64_t dev,
                    const uint64_t *tags, uint32_t ntags, unsigned flags);
static void rt_stats_json(rc_engine *e, rc_buf *o);

/* ---- queues ---- */

static void q_init(struct queue *q)
{
    q->head = q->tail = NULL;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
}

static void q_fini(struct queue *q)
{
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

static void q_push(struct queue *q, rc_batch *b)
{
    b->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = b;
    else
        q->head = b;
    q->tail = b;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Pops one batch, waiting at most timeout_ms (-1 = until stop). */
static rc_batch *q_pop(struct queue *q, int timeout_ms, atomic_int *stop)
{
    pthread_mutex_lock(&q->mu);
    if (!q->head && !atomic_load(stop) && timeout_ms != 0) {
        if (timeout_ms < 0) {
            while (!q->head && !atomic_load(stop))
                pthread_cond_wait(&q->cv, &q->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)timeout_ms * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&q->cv, &q->mu, &ts);
        }
    }
    rc_batch *b = q->head;
    if (b) {
        q->head = b->next;
        if (!q->head)
            q->tail = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    return b;
}

static void q_wake(struct queue *q)
{
    pthread_mutex_lock(&q->mu);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* ---- batches ---- */

static void batch_free(rc_batch *b)
{
    if (!b)
        return;
    free(b->arena);
    free(b->aoff);
    free(b->len);
    free(b->part);
    free(b->koff);
    free(b->ev);
    free(b->reason);
    free(b->err);
    free(b);
}

static rc_batch *batch_new(uint32_t cap)
{
    rc_batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->cap = cap;
    b->acap = (size_t)cap * 256;
    b->arena = malloc(b->acap);
    b->aoff = malloc(cap * sizeof *b->aoff);
    b->len = malloc(cap * sizeof *b->len);
    b->part = malloc(cap * sizeof *b->part);
    b->koff = malloc(cap * sizeof *b->koff);
    b->ev = malloc(cap * sizeof *b->ev);
    b->reason = malloc(cap);
    b->err = malloc(cap * sizeof *b->err);
    if (!b->arena || !b->aoff || !b->len || !b->part || !b->koff || !b->ev || !b->reason ||
        !b->err) {
        batch_free(b);
        return NULL;
    }
    return b;
}

rc_batch *rc_engine_batch_get(rc_engine *e)
{
    pthread_mutex_lock(&e->free_mu);
    rc_batch *b = e->free_list;
    if (b)
        e->free_list = b->next;
    pthread_mutex_unlock(&e->free_mu);
    if (b) {
        b->n = 0;
        b->alen = 0;
        b->next = NULL;
    }
    return b;
}

static void batch_put(rc_engine *e, rc_batch *b)
{
    pthread_mutex_lock(&e->free_mu);
    b->next = e->free_list;
    e->free_list = b;
    pthread_mutex_unlock(&e->free_mu);
}

int rc_engine_batch_add(rc_batch *b, const char *payload, size_t len, int32_t partition,
                        int64_t offset)
{
    if (b->n == b->cap)
        return RC_E2BIG;
    /* Oversized messages are kept only up to the limit + 1 byte: enough for the
     * decoder to refuse them as too_large and for the dead letter to carry a
     * prefix, without letting one message grow the arena without bound. */
    size_t keep = len > RC_EVENT_MAX ? RC_EVENT_MAX + 1 : len;
    if (b->alen + keep > b->acap) {
        size_t cap = b->acap * 2;
        while (cap < b->alen + keep)
            cap *= 2;
        char *p = realloc(b->arena, cap);
        if (!p)
            return RC_ENOMEM;
        b->arena = p;
        b->acap = cap;
    }
    memcpy(b->arena + b->alen, payload, keep);
    b->aoff[b->n] = b->alen;
    b->len[b->n] = (uint32_t)keep;
    b->part[b->n] = partition;
    b->koff[b->n] = offset;
    b->alen += keep;
    b->n++;
    return 0;
}

uint32_t rc_engine_batch_count(const rc_batch *b) { return b->n; }

/* ---- decode stage ---- */

static void decode_batch(rc_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++) {
        size_t len = b->len[i];
        b->err[i][0] = '\0';
        if (len > RC_EVENT_MAX) {
            b->reason[i] = RC_EV_TOO_LARGE;
            snprintf(b->err[i], ERR_TEXT, "message over %d bytes", RC_EVENT_MAX);
            continue;
        }
        b->reason[i] =
            (uint8_t)rc_event_decode(b->arena + b->aoff[i], len, &b->ev[i], b->err[i], ERR_TEXT);
    }
}

/* ---- train stage ---- */

static void pop_update(rc_engine *e, uint32_t row)
{
    if (row >= e->in_pop_cap) {
        size_t cap = e->in_pop_cap ? e->in_pop_cap : 4096;
        while (cap <= row)
            cap *= 2;
        uint8_t *p = realloc(e->in_pop, cap);
        if (!p)
            return;
        memset(p + e->in_pop_cap, 0, cap - e->in_pop_cap);
        e->in_pop = p;
        e->in_pop_cap = cap;
    }
    uint32_t c = rc_table_count(e->table, row), i;
    pthread_mutex_lock(&e->pop_mu);
    if (e->in_pop[row]) {
        for (i = 0; e->pop[i] != row; i++)
            ;
    } else if (e->npop < POP_N) {
        i = e->npop++;
        e->pop[i] = row;
        e->in_pop[row] = 1;
    } else if (c > rc_table_count(e->table, e->pop[POP_N - 1])) {
        i = POP_N - 1;
        e->in_pop[e->pop[i]] = 0;
        e->pop[i] = row;
        e->in_pop[row] = 1;
    } else {
        pthread_mutex_unlock(&e->pop_mu);
        return;
    }
    while (i > 0 && rc_table_count(e->table, e->pop[i - 1]) < c) {
        e->pop[i] = e->pop[i - 1];
        e->pop[i - 1] = row;
        i--;
    }
    pthread_mutex_unlock(&e->pop_mu);
}

/* Context for a new item's cold start: the user's clicks of the current session. */
static uint32_t cold_context(rc_engine *e, const rc_event *ev, uint32_t *ctx)
{
    rc_click rec[CTX_MAX];
    uint32_t n = 0, m = 0;
    if (rc_session_recent(e->sess, ev->user, ev->user_len, rec, RC_MIN(e->sg.window, CTX_MAX), &n))
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if (rec[i].ts_ms <= ev->ts_ms && ev->ts_ms - rec[i].ts_ms <= e->cfg.gap_ms)
            ctx[m++] = rec[i].row;
    return m;
}

static void apply_event(rc_engine *e, const rc_event *ev)
{
    uint32_t city, cate, row, ctx[CTX_MAX], nctx = 0;
    unsigned flags = 0;
    int created = 0;
    if (strcmp(ev->type, "click") != 0) {
        atomic_fetch_add(&e->ignored, 1);
        return;
    }
    if (rc_table_city_id(e->table, ev->city, ev->city_len, &city) ||
        rc_table_cate_id(e->table, ev->cate, ev->cate_len, &cate))
        goto capacity;
    if (rc_table_find(e->table, ev->item, ev->item_len, &row) != 0) {
        nctx = cold_context(e, ev, ctx);
        if (rc_table_upsert(e->table, ev->item, ev->item_len, city, cate, ctx, nctx, &row,
                            &created))
            goto capacity;
        atomic_fetch_add(&e->new_items, 1);
        rc_sampler_note(e->sampler, row);
        rc_index_touch(e->index, row);
    }
    /* The event-time clock drives idle-user expiry. A producer with a wrong
     * clock must not push it into the future and expire everyone: it never
     * runs ahead of the wall clock by more than 5 minutes. */
    if (ev->ts_ms > e->max_ts) {
        int64_t cap = rc_wall_ms() + 5 * 60 * 1000;
        e->max_ts = ev->ts_ms < cap ? ev->ts_ms : RC_MAX(e->max_ts, cap);
    }
    rc_session_add(e->sess, ev->user, ev->user_len, row, ev->ts_ms, ctx,
                   RC_MIN(e->sg.window, CTX_MAX), &nctx, &flags);
    tw_note(e, ev, row, flags);
    atomic_fetch_add(&e->applied, 1);
    if (ev->ts_ms > atomic_load_explicit(&e->max_ts_pub, memory_order_relaxed))
        atomic_store_explicit(&e->max_ts_pub, ev->ts_ms, memory_order_relaxed);
    if (flags & (RC_SESS_DUPLICATE | RC_SESS_LATE))
        return;
    rc_table_count_add(e->table, row, 1);
    uint64_t total = atomic_fetch_add(&e->total_count, 1) + 1;
    rc_sampler_note(e->sampler, row);
    pop_update(e, row);
    if (nctx) {
        uint32_t p = rc_sgns_click(e->table, e->sampler, &e->rng, &e->sg, e->sg.lr, row, ctx, nctx,
                                   total, &e->work);
        atomic_fetch_add(&e->pairs, p);
        rc_index_touch(e->index, row);
        tw_dirty(e, row);
        for (uint32_t i = 0; i < nctx; i++) {
            rc_index_touch(e->index, ctx[i]);
            tw_dirty(e, ctx[i]);
        }
    }
    return;
capacity:
    /* Valid but beyond a configured bound (model.max_items, dictionaries): the
     * event is counted, logged once in a while, and not applied. */
    if (atomic_fetch_add(&e->rejected_capacity, 1) % 10000 == 0)
        rc_log_warn("engine", "item table full: events are not applied", "max_items=%u",
                    e->cfg.max_items);
}

static void fresh_record(rc_engine *e, uint64_t ns)
{
    uint64_t us = ns / 1000;
    pthread_mutex_lock(&e->fresh_mu);
    e->fresh_us[e->fresh_pos] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    e->fresh_pos = (e->fresh_pos + 1) % FRESH_RING;
    if (e->fresh_n < FRESH_RING)
        e->fresh_n++;
    pthread_mutex_unlock(&e->fresh_mu);
    rc_hist_observe(&e->fresh_hist, us);
}

static void maintain(rc_engine *e, int force)
{
    char err[256];
    uint64_t now = rc_now_ns();
    int rc = rc_index_flush(e->index, 0, err, sizeof err);
    if (rc < 0 && atomic_fetch_add(&e->index_errors, 1) % 1000 == 0)
        rc_log_error("engine", "index flush failed", "error=\"%s\"", err);
    rc_sampler_maintain(e->sampler);
    if (force || now - e->last_maintain_ns > 50 * 1000000ull) {
        e->last_maintain_ns = now;
        if (rc_index_maintain(e->index, err, sizeof err) < 0)
            rc_log_error("engine", "index maintenance failed", "error=\"%s\"", err);
    }
    if (now - e->last_expire_ns > 1000 * 1000000ull) {
        e->last_expire_ns = now;
        rc_session_expire(e->sess, e->max_ts, 50000);
        rc_profile_expire(e->prof, e->max_ts, 50000);
    }
    tw_maintain(e, force);
}

/* Cache hints for the events after i: a lookup is a chain of dependent
 * misses (hash slot, then record or entry, then what it points to), so event
 * i+3 gets the first step, i+2 the second, i+1 the third; an event takes
 * microseconds, far longer than a miss. Before that, event i+4's own fields
 * (decoded on another core) are fetched. */
static void prefetch_ahead(rc_engine *e, const rc_batch *b, uint32_t i)
{
    if (i + 4 < b->n) {
        const rc_event *ev = &b->ev[i + 4];
        __builtin_prefetch(ev->user);
        __builtin_prefetch(ev->item);
        __builtin_prefetch(ev->city);
        __builtin_prefetch(ev->cate);
        __builtin_prefetch(ev->type);
        __builtin_prefetch(&ev->user_len);
        __builtin_prefetch(&ev->ts_ms);
    }
    for (int step = 0; step < 3; step++) {
        uint32_t j = i + 3 - (uint32_t)step;
        if (j < b->n && b->reason[j] == RC_EV_OK) {
            rc_table_prefetch(e->table, b->ev[j].item, b->ev[j].item_len, step);
            rc_session_prefetch(e->sess, b->ev[j].user, b->ev[j].user_len, step);
        }
    }
}

static void train_batch(rc_engine *e, rc_batch *b)
{
    uint64_t pairs0 = e->work.pairs;
    double loss0 = e->work.loss_sum;
    for (uint32_t i = 0; i < b->n; i++) {
        prefetch_ahead(e, b, i);
        if (b->reason[i] == RC_EV_OK) /* refused here, dead-lettered like a decode failure */
            b->reason[i] = (uint8_t)rc_event_check_time(b->ev[i].ts_ms, e->max_ts,
                                                        e->cfg.max_future_ms, e->cfg.max_past_ms,
                                                        b->err[i], ERR_TEXT);
        if (b->reason[i] == RC_EV_OK)
            apply_event(e, &b->ev[i]);
        else /* here, not when reported: a checkpoint's counters match its offsets */
            atomic_fetch_add(&e->invalid[b->reason[i]], 1);
    }
    ck_note_batch(e, b);
    maintain(e, 0);
    fresh_record(e, rc_now_ns() - b->recv_ns);
    uint64_t dp = e->work.pairs - pairs0;
    if (dp) {
        double l = (e->work.loss_sum - loss0) / (double)dp;
        double old = atomic_load(&e->loss_avg);
        atomic_store(&e->loss_avg, old == 0 ? l : 0.95 * old + 0.05 * l);
    }
}

static void finish_batch(rc_engine *e, rc_batch *b)
{
    pthread_mutex_lock(&e->sync_mu);
    e->finished++;
    pthread_cond_broadcast(&e->sync_cv);
    pthread_mutex_unlock(&e->sync_mu);
}

/* Reports refused events of b through the done callback, then recycles b. */
static void report_and_recycle(rc_engine *e, rc_batch *b)
{
    rc_invalid inv[64];
    size_t ninv = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->reason[i] == RC_EV_OK)
            continue;
        inv[ninv] = (rc_invalid){b->arena + b->aoff[i], b->len[i], b->part[i], b->koff[i],
                                 (enum rc_event_reason)b->reason[i], b->err[i]};
        if (++ninv == RC_ARRAY_LEN(inv)) {
            if (e->done)
                e->done(e->ud, inv, ninv);
            ninv = 0;
        }
    }
    if (e->done)
        e->done(e->ud, inv, ninv);
    batch_put(e, b);
}

static void *decoder_main(void *arg)
{
    rc_engine *e = arg;
    for (;;) {
        rc_batch *b = q_pop(&e->q_decode, -1, &e->stop);
        if (!b) {
            if (atomic_load(&e->stop))
                break;
            continue;
        }
        decode_batch(b);
        q_push(&e->q_train, b);
    }
    return NULL;
}

static void *trainer_main(void *arg)
{
    rc_engine *e = arg;
    for (;;) {
        rc_batch *b = q_pop(&e->q_train, (int)e->cfg.flush_interval_ms, &e->stop);
        if (!b) {
            maintain(e, 0);
            ck_take(e, 0);
            if (atomic_load(&e->stop) == 2)
                break;
            continue;
        }
        train_batch(e, b);
        q_push(&e->q_done, b);
        uv_async_send(&e->async);
        finish_batch(e, b);
        ck_take(e, 0); /* a batch boundary */
    }
    return NULL;
}

static void on_async(uv_async_t *h)
{
    rc_engine *e = h->data;
    rc_batch *b;
    while ((b = q_pop(&e->q_done, 0, &e->stop)))
        report_and_recycle(e, b);
    ck_deliver(e);
}

void rc_engine_submit(rc_engine *e, rc_batch *b)
{
    b->recv_ns = rc_now_ns();
    pthread_mutex_lock(&e->sync_mu);
    e->submitted++;
    pthread_mutex_unlock(&e->sync_mu);
    if (e->threads) {
        q_push(&e->q_decode, b);
        return;
    }
    decode_batch(b);
    train_batch(e, b);
    finish_batch(e, b);
    report_and_recycle(e, b);
}

void rc_engine_sync(rc_engine *e)
{
    pthread_mutex_lock(&e->sync_mu);
    while (e->finished < e->submitted)
        pthread_cond_wait(&e->sync_cv, &e->sync_mu);
    pthread_mutex_unlock(&e->sync_mu);
    if (!e->threads)
        maintain(e, 1);
}

enum rc_event_reason rc_engine_apply_line(rc_engine *e, const char *line, size_t len)
{
    rc_batch *b = NULL;
    while (!(b = rc_engine_batch_get(e)))
        usleep(1000);
    if (rc_engine_batch_add(b, line, len, -1, -1)) {
        batch_put(e, b);
        return RC_EV_TOO_LARGE;
    }
    enum rc_event_reason r;
    if (e->threads) {
        /* Decode here to learn the reason; the pipeline decodes it again. */
        rc_event *ev = malloc(sizeof *ev);
        r = ev ? (len > RC_EVENT_MAX ? RC_EV_TOO_LARGE : rc_event_decode(line, len, ev, NULL, 0))
               : RC_EV_BAD_VALUE;
        free(ev);
        rc_engine_submit(e, b);
        rc_engine_sync(e);
        return r;
    }
    b->recv_ns = rc_now_ns();
    pthread_mutex_lock(&e->sync_mu);
    e->submitted++;
    pthread_mutex_unlock(&e->sync_mu);
    decode_batch(b);
    r = (enum rc_event_reason)b->reason[0];
    train_batch(e, b);
    finish_batch(e, b);
    report_and_recycle(e, b);
    return r;
}

int rc_engine_apply_click(rc_engine *e, const char *user, size_t ulen, const char *item,
                          size_t ilen, const char *city, size_t clen, const char *cate,
                          size_t klen, int64_t ts_ms)
{
    rc_event *ev = &e->scratch_ev;
    if (e->threads || ulen == 0 || ulen > RC_ID_MAX || ilen == 0 || ilen > RC_ID_MAX ||
        clen > RC_ATTR_MAX || klen > RC_ATTR_MAX)
        return RC_EINVAL;
    memcpy(ev->user, user, ulen);
    ev->user[ulen] = '\0';
    ev->user_len = (uint8_t)ulen;
    memcpy(ev->item, item, ilen);
    ev->item[ilen] = '\0';
    ev->item_len = (uint8_t)ilen;
    memcpy(ev->city, city, clen);
    ev->city[clen] = '\0';
    ev->city_len = (uint8_t)clen;
    memcpy(ev->cate, cate, klen);
    ev->cate[klen] = '\0';
    ev->cate_len = (uint8_t)klen;
    memcpy(ev->type, "click", 6);
    ev->type_len = 5;
    ev->device[0] = '\0';
    ev->device_len = 0;
    ev->ntags = 0;
    ev->ts_ms = ts_ms;
    apply_event(e, ev);
    return 0;
}

void rc_engine_flush_index(rc_engine *e) { maintain(e, 1); }

rc_index *rc_engine_index(rc_engine *e) { return e->index; }

/* ---- create / destroy ---- */

static int create_model(rc_engine *e, char *eb, size_t el)
{
    const rc_config *c = &e->cfg;
    rc_table_opts to = {.dim = c->dim, .max_items = c->max_items, .seed = c->seed};
    rc_session_opts so = {.max_users = c->max_users, .history = c->history, .gap_ms = c->gap_ms,
                          .ttl_ms = c->ttl_ms};
    rc_sampler_opts sa = {.power = c->power, .min_city_items = c->min_city_items};
    rc_index_opts io = {.ivf_min = c->ivf_min, .nprobe = c->nprobe, .drift = c->drift,
                        .batch = c->index_batch, .max_partitions = c->max_partitions};
    uint64_t t0 = rc_now_ns();
    int rc = ck_restore(e, &to, &io, eb, el); /* a checkpoint wins over model.path */
    if (rc == RC_ENOENT && c->model_path[0])
        rc = rc_model_load(c->model_path, &to, &e->table, eb, el);
    else if (rc == RC_ENOENT)
        rc = rc_table_create(&to, &e->table, eb, el);
    if (!rc)
        e->index = ck_prebuilt_index(e); /* filled while the checkpoint loaded */
    int prebuilt = e->index != NULL;
    rc_profile_opts po = {.max_users = c->max_users, .ttl_ms = c->ttl_ms};
    if (rc || (rc = rc_session_create(&so, &e->sess, eb, el)) ||
        (rc = rc_profile_create(&po, &e->prof, eb, el)) ||
        (rc = rc_sampler_create(&sa, e->table, &e->sampler, eb, el)) ||
        (!prebuilt && (rc = rc_index_create(&io, e->table, &e->index, eb, el))))
        return rc;
    /* A loaded model: every row is sampled from and indexed before serving. */
    uint32_t rows = rc_table_size(e->table);
    for (uint32_t r = 0; r < rows; r++) {
        rc_sampler_note(e->sampler, r);
        if (!prebuilt)
            rc_index_touch(e->index, r);
        e->total_count += rc_table_count(e->table, r);
        pop_update(e, r);
    }
    if (rows) {
        rc_sampler_maintain(e->sampler);
        if ((rc = rc_index_flush(e->index, 0, eb, el)) < 0)
            return rc;
        if (!ck_was_restored(e))
            rc_log_info("engine", "model loaded", "path=%s items=%u dim=%u", c->model_path, rows,
                        rc_table_dim(e->table));
    }
    ck_restored(e, t0);
    e->sg = (rc_sgns_opts){.mode = c->cbow ? RC_SGNS_CBOW : RC_SGNS_SKIPGRAM,
                           .window = c->window,
                           .negatives = c->negatives,
                           .hard_share = c->hard_share,
                           .lr = c->lr,
                           .subsample = c->subsample};
    if (rc_sgns_work_init(&e->work, c->dim))
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    rc_rng_seed(&e->rng, c->seed);
    return 0;
}

static int create_batches(rc_engine *e, char *eb, size_t el)
{
    e->nbatches = e->cfg.queue_batches;
    e->batches = calloc(e->nbatches, sizeof *e->batches);
    if (!e->batches)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    for (uint32_t i = 0; i < e->nbatches; i++) {
        if (!(e->batches[i] = batch_new(e->cfg.kafka_batch)))
            return rc_err(eb, el, RC_ENOMEM, "engine: out of memory for batches");
        batch_put(e, e->batches[i]);
    }
    return 0;
}

int rc_engine_create(const rc_config *cfg, uv_loop_t *loop, rc_engine_done_cb done, void *ud,
                     rc_engine **out, char *eb, size_t el)
{
    rc_engine *e = calloc(1, sizeof *e);
    int rc;
    *out = NULL;
    if (!e)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    e->cfg = *cfg;
    e->loop = loop;
    e->done = done;
    e->ud = ud;
    pthread_mutex_init(&e->free_mu, NULL);
    pthread_mutex_init(&e->sync_mu, NULL);
    pthread_cond_init(&e->sync_cv, NULL);
    pthread_mutex_init(&e->fresh_mu, NULL);
    pthread_mutex_init(&e->pop_mu, NULL);
    rc_hist_init(&e->fresh_hist, rc_hist_freshness_us, rc_hist_freshness_us_n, 1e-6);
    q_init(&e->q_decode);
    q_init(&e->q_train);
    q_init(&e->q_done);
    e->max_ts = INT64_MIN;
    if ((rc = ck_init(e, eb, el)) || (rc = tw_init(e, eb, el)) || (rc = rt_init(e, eb, el)) ||
        (rc = create_model(e, eb, el)) || (rc = create_batches(e, eb, el)))
        goto fail;
    if (loop) {
        if (uv_async_init(loop, &e->async, on_async)) {
            rc = rc_err(eb, el, RC_EIO, "engine: uv_async_init failed");
            goto fail;
        }
        e->async.data = e;
        if (pthread_create(&e->decoder, NULL, decoder_main, e) ||
            pthread_create(&e->trainer, NULL, trainer_main, e)) {
            rc = rc_err(eb, el, RC_EIO, "engine: cannot start threads");
            /* Threads that did start are stopped by destroy. */
            e->threads = 1;
            goto fail;
        }
        e->threads = 1;
        if ((rc = ck_start(e, eb, el)))
            goto fail;
    }
    if ((rc = tw_start(e, eb, el)) || /* after the threads: a threaded engine loads in the background */
        (rc = rt_start(e, eb, el)))
        goto fail;
    *out = e;
    return 0;
fail:
    rc_engine_destroy(e);
    return rc;
}

static void free_engine(rc_engine *e)
{
    rt_free(e);
    tw_free(e); /* its bundles read the table */
    rc_profile_destroy(e->prof);
    rc_index_destroy(e->index);
    rc_sampler_destroy(e->sampler);
    rc_session_destroy(e->sess);
    rc_table_destroy(e->table);
    rc_sgns_work_free(&e->work);
    for (uint32_t i = 0; e->batches && i < e->nbatches; i++)
        batch_free(e->batches[i]);
    free(e->batches);
    free(e->in_pop);
    q_fini(&e->q_decode);
    q_fini(&e->q_train);
    q_fini(&e->q_done);
    pthread_mutex_destroy(&e->free_mu);
    pthread_mutex_destroy(&e->sync_mu);
    pthread_cond_destroy(&e->sync_cv);
    pthread_mutex_destroy(&e->fresh_mu);
    pthread_mutex_destroy(&e->pop_mu);
    ck_free(e);
    free(e);
}

static void on_async_closed(uv_handle_t *h) { free_engine(h->data); }

void rc_engine_destroy(rc_engine *e)
{
    if (!e)
        return;
    rt_stop(e); /* a retrain (its bundle waiting for the trainer) gives up first */
    tw_stop(e); /* a load waiting for the trainer gives up first */
    if (e->threads) {
        rc_engine_sync(e);
        atomic_store(&e->stop, 1);
        q_wake(&e->q_decode);
        pthread_join(e->decoder, NULL);
        atomic_store(&e->stop, 2);
        q_wake(&e->q_train);
        pthread_join(e->trainer, NULL);
        ck_stop(e);
        on_async(&e->async); /* report what is left */
    }
    if (e->loop && uv_is_active((uv_handle_t *)&e->async)) {
        uv_close((uv_handle_t *)&e->async, on_async_closed);
        return;
    }
    free_engine(e);
}

/* ---- queries ---- */

static int resolve_filter(rc_engine *e, const rc_recall_req *r, rc_index_filter *f, uint32_t *cates,
                          int *empty)
{
    uint32_t id;
    *empty = 0;
    f->city = -1;
    f->cates = cates;
    f->ncates = 0;
    if (r->city) {
        if (rc_table_find_city(e->table, r->city, strlen(r->city), &id))
            *empty = 1; /* no item of that city exists (yet) */
        else
            f->city = id;
    }
    for (uint32_t i = 0; i < r->ncates; i++)
        if (rc_table_find_cate(e->table, r->cates[i], strlen(r->cates[i]), &id) == 0)
            cates[f->ncates++] = id;
    if (r->ncates && !f->ncates)
        *empty = 1;
    return 0;
}

static uint32_t popular(rc_engine *e, const rc_index_filter *f, const uint32_t *ex, uint32_t nex,
                        uint32_t k, rc_hit *out)
{
    uint32_t n = 0;
    pthread_mutex_lock(&e->pop_mu);
    for (uint32_t i = 0; i < e->npop && n < k; i++) {
        uint32_t row = e->pop[i], skip = 0;
        if (f->city >= 0 && rc_table_city(e->table, row) != (uint32_t)f->city)
            continue;
        if (f->ncates) {
            skip = 1;
            for (uint32_t j = 0; j < f->ncates; j++)
                skip &= f->cates[j] != rc_table_cate(e->table, row);
        }
        for (uint32_t j = 0; j < nex && !skip; j++)
            skip = ex[j] == row;
        if (!skip)
            out[n++] = (rc_hit){row, (float)rc_table_count(e->table, row)};
    }
    pthread_mutex_unlock(&e->pop_mu);
    return n;
}

/* The city holding most of the click weight: where the user is browsing now.
 * Negatives are drawn from the positive's own city (58.com), so cosines are
 * calibrated within a city, not across cities: recall without a city filter is
 * scoped to this city unless the request asks for "city":"*" or the config
 * says recall.scope = "global". */
static int64_t user_city(rc_engine *e, const uint32_t *rows, const float *w, uint32_t n)
{
    uint32_t city[64];
    float weight[64];
    uint32_t nc = 0, best = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = rc_table_city(e->table, rows[i]), j;
        for (j = 0; j < nc && city[j] != c; j++)
            ;
        if (j == nc) {
            if (nc == 64)
                continue;
            city[nc] = c;
            weight[nc++] = 0;
        }
        weight[j] += w[i];
        if (weight[j] > weight[best])
            best = j;
    }
    return nc ? (int64_t)city[best] : -1;
}

static int recall_clicks(rc_engine *e, const rc_recall_req *req, const rc_index_filter *f,
                         const uint32_t *rows, const float *w, uint32_t nclicks, rc_hit *out,
                         uint32_t *n)
{
    rc_mc_quota plan[64];
    uint32_t nplan = 0;
    if (!nclicks)
        return RC_ENOENT;
    if (req->multi_category) {
        rc_mc_opts mo = {.max_cats = e->cfg.mc_max_categories, .min_quota = e->cfg.mc_min_quota};
        int rc = rc_recall_multi_category(e->table, e->index, rows, w, nclicks, req->k,
                                          cfg_f32(&e->cfg.overfetch), f, rows, nclicks, &mo,
                                          out, n,
                                          req->quotas ? req->quotas : plan,
                                          req->nquotas ? req->nquotas : &nplan);
        return rc;
    }
    float *q = malloc(e->cfg.dim * sizeof *q);
    if (!q)
        return RC_ENOMEM;
    int rc = rc_recall_query_vector(e->table, rows, w, nclicks, q);
    if (rc == 0 && req->exact)
        rc = rc_recall_exact(e->table, q, req->k, f, rows, nclicks, out, n);
    else if (rc == 0)
        rc = rc_recall_search(e->table, e->index, q, req->k, cfg_f32(&e->cfg.overfetch), f,
                              rows, nclicks, out, n);
    free(q);
    return rc;
}

int rc_engine_recall(rc_engine *e, const rc_recall_req *req, rc_hit *out, uint32_t *n,
                     int *fallback)
{
    rc_click clicks[256];
    uint32_t rows[256], nclicks = 0, cates[64];
    int64_t ts[256];
    float w[256];
    rc_index_filter f;
    int empty;
    *n = 0;
    *fallback = 0;
    if (req->nquotas)
        *req->nquotas = 0;
    if (req->k == 0 || req->k > cfg_u32(&e->cfg.k_max) || req->ncates > RC_ARRAY_LEN(cates))
        return RC_EINVAL;
    if (req->two_tower)
        return tw_recall(e, req, out, n, fallback);
    resolve_filter(e, req, &f, cates, &empty);
    if (empty)
        return 0;
    if (rc_session_recent(e->sess, req->user, req->ulen, clicks, cfg_u32(&e->cfg.recall_window),
                          &nclicks))
        nclicks = 0;
    for (uint32_t i = 0; i < nclicks; i++) {
        rows[i] = clicks[i].row;
        ts[i] = clicks[i].ts_ms;
    }
    int64_t hl = req->half_life_ms ? req->half_life_ms : e->cfg.half_life_ms;
    rc_recall_decay_weights(ts, nclicks, hl, w);
    if (!req->city && !req->global && e->cfg.recall_user_city && nclicks)
        f.city = user_city(e, rows, w, nclicks);
    int rc = recall_clicks(e, req, &f, rows, w, nclicks, out, n);
    if (rc == RC_ENOENT || (rc == 0 && *n == 0)) {
        *fallback = 1;
        *n = popular(e, &f, rows, nclicks, req->k, out);
        return 0;
    }
    return rc;
}

int rc_engine_similar(rc_engine *e, const char *item, size_t len, uint32_t k, rc_hit *out,
                      uint32_t *n)
{
    uint32_t row;
    *n = 0;
    if (k == 0 || k > cfg_u32(&e->cfg.k_max))
        return RC_EINVAL;
    if (rc_table_find(e->table, item, len, &row))
        return RC_ENOENT;
    float *q = malloc(e->cfg.dim * sizeof *q);
    if (!q)
        return RC_ENOMEM;
    int rc = rc_recall_query_vector(e->table, &row, NULL, 1, q);
    if (rc == 0)
        rc = rc_recall_search(e->table, e->index, q, k, cfg_f32(&e->cfg.overfetch), NULL, &row, 1,
                              out, n);
    free(q);
    return rc == RC_ENOENT ? 0 : rc;
}

int rc_engine_user_clicks(rc_engine *e, const char *user, size_t ulen, uint32_t *rows, int64_t *ts,
                          uint32_t max, uint32_t *n)
{
    rc_click c[256];
    int rc = rc_session_recent(e->sess, user, ulen, c, RC_MIN(max, 256u), n);
    for (uint32_t i = 0; rc == 0 && i < *n; i++) {
        rows[i] = c[i].row;
        ts[i] = c[i].ts_ms;
    }
    return rc;
}

/* ---- stats ---- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void fresh_pct(rc_engine *e, double *p50, double *p99, uint32_t *n)
{
    static _Thread_local uint32_t tmp[FRESH_RING];
    pthread_mutex_lock(&e->fresh_mu);
    *n = e->fresh_n;
    memcpy(tmp, e->fresh_us, *n * sizeof *tmp);
    pthread_mutex_unlock(&e->fresh_mu);
    *p50 = *p99 = 0;
    if (!*n)
        return;
    qsort(tmp, *n, sizeof *tmp, cmp_u32);
    *p50 = tmp[(*n - 1) / 2] / 1000.0;
    *p99 = tmp[(size_t)((*n - 1) * 0.99)] / 1000.0;
}

static size_t rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

void rc_engine_stats_json(rc_engine *e, rc_buf *o)
{
    rc_session_stats ss;
    rc_index_stats is;
    rc_sampler_stats sa;
    double p50, p99;
    uint32_t nf;
    uint64_t invalid = 0;
    rc_session_stats_get(e->sess, &ss);
    rc_index_stats_get(e->index, &is);
    rc_sampler_stats_get(e->sampler, &sa);
    fresh_pct(e, &p50, &p99, &nf);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++)
        invalid += atomic_load(&e->invalid[r]);
    rc_buf_printf(o, "\"events\":{\"consumed\":%llu,\"applied\":%llu,\"invalid\":%llu,"
                     "\"invalid_by_reason\":{",
                  (unsigned long long)atomic_load(&e->consumed),
                  (unsigned long long)atomic_load(&e->applied), (unsigned long long)invalid);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++)
        rc_buf_printf(o, "%s\"%s\":%llu", r > 1 ? "," : "",
                      rc_event_reason_name((enum rc_event_reason)r),
                      (unsigned long long)atomic_load(&e->invalid[r]));
    rc_buf_printf(o, "},\"ignored\":%llu,\"duplicates\":%llu,\"reordered\":%llu,\"late\":%llu,"
                     "\"rejected_capacity\":%llu,\"lost\":%llu,\"max_ts\":%lld},",
                  (unsigned long long)atomic_load(&e->ignored), (unsigned long long)ss.duplicates,
                  (unsigned long long)ss.reordered, (unsigned long long)ss.late,
                  (unsigned long long)atomic_load(&e->rejected_capacity),
                  (unsigned long long)atomic_load(&e->lost),
                  (long long)atomic_load(&e->max_ts_pub));
    rc_buf_printf(o, "\"items\":%u,\"cities\":%u,\"categories\":%u,", rc_table_size(e->table),
                  rc_table_ncities(e->table), rc_table_ncates(e->table));
    rc_buf_printf(o, "\"users\":{\"active\":%llu,\"evicted_lru\":%llu,\"expired_ttl\":%llu,"
                     "\"sessions\":%llu},",
                  (unsigned long long)ss.users, (unsigned long long)ss.evicted_lru,
                  (unsigned long long)ss.expired_ttl, (unsigned long long)ss.sessions);
    rc_buf_printf(o, "\"index\":{\"size\":%llu,\"partitions\":%llu,\"ivf_partitions\":%llu,"
                     "\"pending\":%llu,\"staleness_ms\":%.3f,\"added\":%llu,\"reindexed\":%llu,"
                     "\"skipped_small_drift\":%llu,\"retrains\":%llu,\"overflow_rows\":%llu,"
                     "\"partition_errors\":%llu},",
                  (unsigned long long)is.size, (unsigned long long)is.partitions,
                  (unsigned long long)is.ivf_partitions, (unsigned long long)is.pending,
                  is.staleness_ms, (unsigned long long)is.added,
                  (unsigned long long)is.reindexed, (unsigned long long)is.skipped_small_drift,
                  (unsigned long long)is.retrains, (unsigned long long)is.overflow_rows,
                  (unsigned long long)is.partition_errors);
    rc_buf_printf(o, "\"training\":{\"mode\":\"%s\",\"pairs\":%llu,\"loss\":%.4f,"
                     "\"sampler_rebuilds\":%llu,\"hard_negatives\":%llu,\"kernel\":\"%s\"},",
                  e->cfg.cbow ? "cbow" : "skipgram", (unsigned long long)atomic_load(&e->pairs),
                  atomic_load(&e->loss_avg), (unsigned long long)sa.rebuilds,
                  (unsigned long long)sa.hard_draws, rc_vec_impl());
    rc_buf_printf(o, "\"freshness_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"samples\":%u,"
                     "\"new_item_p50\":%.3f,\"new_item_p99\":%.3f},",
                  p50, p99, nf, is.fresh_p50_us / 1000.0, is.fresh_p99_us / 1000.0);
    rc_buf_printf(o, "\"memory\":{\"rss_bytes\":%zu,\"table_bytes\":%zu,\"session_bytes\":%zu,"
                     "\"index_bytes\":%zu}",
                  rss_bytes(), rc_table_bytes(e->table), ss.bytes, is.bytes);
    rc_buf_puts(o, ",");
    ck_stats_json(e, o);
    rc_buf_puts(o, ",");
    tw_stats_json(e, o);
}

void rc_engine_session_stats(rc_engine *e, rc_session_stats *st) { rc_session_stats_get(e->sess, st); }

void rc_engine_count_consumed(rc_engine *e, uint64_t n) { atomic_fetch_add(&e->consumed, n); }

void rc_engine_count_lost(rc_engine *e, uint64_t n) { atomic_fetch_add(&e->lost, n); }

void rc_engine_count_invalid(rc_engine *e, enum rc_event_reason r, uint64_t n)
{
    if (r > 0 && r < RC_EV_REASON_COUNT)
        atomic_fetch_add(&e->invalid[r], n);
}

const rc_table *rc_engine_table(const rc_engine *e) { return e->table; }
const rc_config *rc_engine_config(const rc_engine *e) { return &e->cfg; }
uint64_t rc_engine_applied(const rc_engine *e) { return atomic_load(&e->applied); }

void rc_engine_counters_get(const rc_engine *e, rc_engine_counters *c)
{
    rc_engine *m = (rc_engine *)e; /* atomic loads only */
    memset(c, 0, sizeof *c);
    c->consumed = atomic_load(&m->consumed);
    c->applied = atomic_load(&m->applied);
    c->ignored = atomic_load(&m->ignored);
    c->pairs = atomic_load(&m->pairs);
    c->new_items = atomic_load(&m->new_items);
    c->rejected_capacity = atomic_load(&m->rejected_capacity);
    c->lost = atomic_load(&m->lost);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++)
        c->invalid[r] = atomic_load(&m->invalid[r]);
}

const rc_hist *rc_engine_freshness(const rc_engine *e) { return &e->fresh_hist; }

/* ---- checkpoints ----
 * Three parties: the loop thread asks (rc_engine_checkpoint), the trainer takes
 * the snapshot at a batch boundary (the only point where table, counters and
 * offsets agree, the trainer being the only writer), and the checkpoint thread
 * reserves memory before (so the copy does not fault pages in during the
 * trainer's pause) and writes after. States, under ck->mu:
 *   IDLE -> RESERVE (writer) -> WANTED (trainer) -> TAKEN (writer) -> IDLE
 * and the result goes to the loop through e->async. One request can wait
 * behind the one in flight; later requests merge into it (largest ticket). */

enum { CK_IDLE, CK_RESERVE, CK_WANTED, CK_TAKEN };

#define CK_PAUSES 128 /* trainer pauses kept for the p99 */
#define CK_NONE   UINT64_MAX

struct ckpt {
    int enabled, lock_fd;
    rc_checkpoint *snap;
    pthread_t writer;
    int writer_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    int state, stop, again, unchanged, have_result;
    uint64_t after, again_after;
    uint32_t pause_us[CK_PAUSES], npause, pause_pos;
    char last_error[256];
    int take_rc;          /* the trainer's take, for the writer */
    uint64_t take_pause;
    /* the result waiting for the loop (under mu), then the loop's own copy */
    rc_engine_checkpoint_result res;
    int32_t *res_parts, *loop_parts;
    int64_t *res_offs, *loop_offs;
    size_t res_cap, loop_cap;
    char res_err[256], loop_err[256];
    rc_engine_checkpoint_cb cb;
    void *cb_ud;
    atomic_int wanted; /* state == CK_WANTED, for the trainer's cheap check */
    /* trainer only */
    int64_t *next; /* per partition: last processed offset + 1, -1 none */
    uint32_t nparts;
    rc_checkpoint_offset *offs; /* scratch for the meta */
    uint64_t trained, processed, covers;
    /* shared counters */
    _Atomic uint64_t durable_trained; /* `trained` in the last durable checkpoint */
    _Atomic uint64_t written, failures, skipped, last_seq, last_bytes, last_write_ns;
    _Atomic uint64_t last_pause_ns, max_pause_ns;
    _Atomic int64_t current_ms; /* wall time the state was last known durable, 0 never */
    _Atomic uint32_t keep;
    _Atomic double max_mb_s;
    /* restore (set once in create) */
    rc_checkpoint_meta restored;
    int restored_ok;
    int invalid_only; /* checkpoints existed, none valid: replay the stream */
    uint64_t restore_ns, load_ns; /* until ready to serve; of which reading the file */
    /* the index built while the checkpoint loads (ck_on_rows, loader thread) */
    rc_index *rx;
    const rc_table *rx_table;
    rc_index_opts rx_opts;
    int rx_failed, prebuilt;
    uint32_t rx_pending;
};

static const char *const ck_counter_names[] = {"consumed", "applied", "ignored", "pairs",
                                               "new_items", "rejected_capacity", "max_ts",
                                               "lost"};

static int ck_init(rc_engine *e, char *eb, size_t el)
{
    struct ckpt *k = calloc(1, sizeof *k);
    if (!k)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    e->ck = k;
    k->lock_fd = -1;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    atomic_init(&k->durable_trained, CK_NONE);
    atomic_init(&k->keep, e->cfg.ckpt_keep);
    atomic_init(&k->max_mb_s, e->cfg.ckpt_max_mb_s);
    if (!e->cfg.data_dir[0])
        return 0;
    k->enabled = 1;
    if (mkdir(e->cfg.data_dir, 0755) && errno != EEXIST)
        return rc_err(eb, el, RC_EIO, "data_dir %s: %s", e->cfg.data_dir, strerror(errno));
    int fd = rc_checkpoint_lock_dir(e->cfg.data_dir, eb, el);
    if (fd == RC_EAGAIN)
        return fd;
    if (fd < 0) /* read-only media: restore still works; writes will fail and be reported */
        rc_log_warn("engine", "cannot lock the data directory", "error=\"%s\"", eb ? eb : "");
    k->lock_fd = fd;
    return rc_checkpoint_create(&k->snap, eb, el);
}

/* Trainer: partition p is processed up to next - 1. */
static void ck_note(struct ckpt *k, int32_t p, int64_t next)
{
    if (p < 0)
        return;
    if ((uint32_t)p >= k->nparts) {
        uint32_t n = RC_MAX((uint32_t)p + 1, k->nparts * 2);
        int64_t *nx = realloc(k->next, n * sizeof *nx);
        rc_checkpoint_offset *no = realloc(k->offs, n * sizeof *no);
        if (nx)
            k->next = nx;
        if (no)
            k->offs = no;
        if (!nx || !no) /* out of memory: p's position lags what the model holds */
            return;
        for (uint32_t j = k->nparts; j < n; j++)
            k->next[j] = -1;
        k->nparts = n;
    }
    if (next > k->next[p])
        k->next[p] = next;
}

/* Trainer: positions and message count of a trained batch. */
static void ck_note_batch(rc_engine *e, const rc_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++)
        ck_note(e->ck, b->part[i], b->koff[i] + 1);
    e->ck->processed += b->n;
    e->ck->trained++;
}

/* Trainer: counters and offsets as of now. */
static void ck_meta(rc_engine *e, rc_checkpoint_meta *m)
{
    struct ckpt *k = e->ck;
    const uint64_t v[] = {k->processed,
                          atomic_load(&e->applied),
                          atomic_load(&e->ignored),
                          atomic_load(&e->pairs),
                          atomic_load(&e->new_items),
                          atomic_load(&e->rejected_capacity),
                          (uint64_t)e->max_ts,
                          atomic_load(&e->lost)};
    char name[64];
    memset(m, 0, sizeof *m);
    /* kafka.topic is at most 249 bytes (config) */
    memcpy(m->topic, e->cfg.topic, strnlen(e->cfg.topic, RC_CHECKPOINT_TOPIC_MAX));
    m->created_ms = rc_wall_ms();
    for (size_t i = 0; i < RC_ARRAY_LEN(v); i++)
        rc_checkpoint_meta_set(m, ck_counter_names[i], v[i]);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++) {
        snprintf(name, sizeof name, "invalid.%s", rc_event_reason_name((enum rc_event_reason)r));
        rc_checkpoint_meta_set(m, name, atomic_load(&e->invalid[r]));
    }
    for (uint32_t p = 0; p < k->nparts; p++)
        if (k->next[p] >= 0)
            k->offs[m->noffsets++] = (rc_checkpoint_offset){(int32_t)p, k->next[p]};
    m->offsets = k->offs;
}

static void ck_pause_record(struct ckpt *k, uint64_t ns)
{
    atomic_store(&k->last_pause_ns, ns);
    if (ns > atomic_load(&k->max_pause_ns))
        atomic_store(&k->max_pause_ns, ns);
    pthread_mutex_lock(&k->mu);
    k->pause_us[k->pause_pos] = (uint32_t)RC_MIN(ns / 1000, (uint64_t)UINT32_MAX);
    k->pause_pos = (k->pause_pos + 1) % CK_PAUSES;
    k->npause += k->npause < CK_PAUSES;
    pthread_mutex_unlock(&k->mu);
}

/* Trainer thread, between batches: takes the snapshot when one is wanted and
 * every batch it must contain is applied. The copy runs without ck->mu held
 * (the loop thread may take it to queue a request). force: never "unchanged"
 * (offline callers apply clicks outside batches). Returns 1 when taken. */
static int ck_take(rc_engine *e, int force)
{
    struct ckpt *k = e->ck;
    rc_checkpoint_meta m;
    if (!k || !atomic_load(&k->wanted))
        return 0;
    pthread_mutex_lock(&k->mu);
    int go = k->state == CK_WANTED && k->trained >= k->after;
    pthread_mutex_unlock(&k->mu);
    if (!go)
        return 0;
    uint64_t t0 = rc_now_ns();
    int unchanged = !force && k->trained == atomic_load(&k->durable_trained), rc = 0;
    if (!unchanged) {
        ck_meta(e, &m);
        rc = rc_checkpoint_take(k->snap, e->table, &m);
    }
    uint64_t pause = rc_now_ns() - t0;
    if (!unchanged)
        ck_pause_record(k, pause);
    pthread_mutex_lock(&k->mu);
    k->unchanged = unchanged;
    k->covers = k->trained;
    k->take_pause = unchanged ? 0 : pause;
    k->take_rc = rc;
    k->state = CK_TAKEN;
    atomic_store(&k->wanted, 0);
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    return 1;
}

/* Writer thread: the result for the loop, from the snapshot's meta. Caller
 * holds mu. */
static void ck_result(struct ckpt *k, int rc, const rc_checkpoint_info *info, const char *err,
                      uint64_t covers)
{
    const rc_checkpoint_meta *m = rc_checkpoint_meta_of(k->snap);
    size_t n = rc == 0 && m ? m->noffsets : 0;
    if (n > k->res_cap) {
        int32_t *p = realloc(k->res_parts, n * sizeof *p);
        int64_t *o = realloc(k->res_offs, n * sizeof *o);
        if (p)
            k->res_parts = p;
        if (o)
            k->res_offs = o;
        if (!p || !o) {
            n = 0;
            rc = RC_ENOMEM;
            err = "out of memory for the result";
        } else {
            k->res_cap = n;
        }
    }
    for (size_t i = 0; i < n; i++) {
        k->res_parts[i] = m->offsets[i].partition;
        k->res_offs[i] = m->offsets[i].next;
    }
    snprintf(k->res_err, sizeof k->res_err, "%s", rc ? err : "");
    k->res.rc = rc;
    k->res.unchanged = rc == 0 && k->unchanged;
    k->res.covers = covers;
    k->res.seq = atomic_load(&k->last_seq);
    k->res.bytes = info && !k->unchanged ? info->bytes : 0;
    k->res.write_ns = info && !k->unchanged ? info->write_ns : 0;
    k->res.pause_ns = k->take_pause;
    k->res.applied = m ? rc_checkpoint_meta_counter(m, "applied", 0) : 0;
    k->res.n = n;
    k->have_result = 1;
}

/* Writer thread: writes what the trainer took. Returns 0 or RC_E*. */
static int ck_write(rc_engine *e, rc_checkpoint_info *info, char *err, size_t errlen)
{
    struct ckpt *k = e->ck;
    rc_checkpoint_write_opts o = {.dir = e->cfg.data_dir, .keep = atomic_load(&k->keep),
                                  .max_mb_s = atomic_load(&k->max_mb_s)};
    int rc = rc_checkpoint_write(k->snap, &o, info, err, errlen);
    if (rc) {
        atomic_fetch_add(&k->failures, 1);
        rc_log_error("engine", "checkpoint failed: the previous one stays in place", "error=\"%s\"",
                     err);
        return rc;
    }
    atomic_fetch_add(&k->written, 1);
    atomic_store(&k->last_seq, info->seq);
    atomic_store(&k->last_bytes, info->bytes);
    atomic_store(&k->last_write_ns, info->write_ns);
    rc_log_info("engine", "checkpoint written", "path=%s items=%u bytes=%llu write_ms=%.1f "
                "mb_s=%.1f pause_ms=%.2f", info->path, info->rows,
                (unsigned long long)info->bytes, info->write_ns / 1e6,
                info->bytes / 1e6 / RC_MAX(info->write_ns / 1e9, 1e-9),
                atomic_load(&k->last_pause_ns) / 1e6);
    return 0;
}

/* Writer thread: one request, RESERVE to IDLE. Called with mu held; returns
 * with it held. */
static void ck_serve(rc_engine *e)
{
    struct ckpt *k = e->ck;
    rc_checkpoint_info info = {0};
    char err[512] = "";
    uint32_t rows = rc_table_size(e->table);
    pthread_mutex_unlock(&k->mu);
    /* Room for the rows that arrive before the trainer takes the copy. */
    rc_checkpoint_reserve(k->snap, rows + rows / 8 + 1024, rc_table_dim(e->table));
    pthread_mutex_lock(&k->mu);
    k->state = CK_WANTED;
    atomic_store(&k->wanted, 1);
    while (k->state != CK_TAKEN && !k->stop)
        pthread_cond_wait(&k->cv, &k->mu);
    if (k->state != CK_TAKEN)
        return; /* stopping: the trainer is gone */
    int rc = k->take_rc;
    uint64_t covers = k->covers;
    pthread_mutex_unlock(&k->mu);
    if (rc)
        snprintf(err, sizeof err, "checkpoint: out of memory for the snapshot");
    else if (k->unchanged)
        atomic_fetch_add(&k->skipped, 1);
    else
        rc = ck_write(e, &info, err, sizeof err);
    if (rc == 0) {
        atomic_store(&k->durable_trained, covers);
        atomic_store(&k->current_ms, rc_wall_ms());
    }
    pthread_mutex_lock(&k->mu);
    if (rc)
        snprintf(k->last_error, sizeof k->last_error, "%s", err);
    ck_result(k, rc, &info, err, covers);
    k->state = CK_IDLE;
    if (k->again) {
        k->again = 0;
        k->after = k->again_after;
        k->state = CK_RESERVE;
    }
}

static void *ck_main(void *arg)
{
    rc_engine *e = arg;
    struct ckpt *k = e->ck;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (k->state != CK_RESERVE && !k->stop)
            pthread_cond_wait(&k->cv, &k->mu);
        if (k->stop)
            break;
        ck_serve(e);
        if (k->have_result && e->loop)
            uv_async_send(&e->async);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

static int ck_start(rc_engine *e, char *eb, size_t el)
{
    struct ckpt *k = e->ck;
    if (!k->enabled || !e->loop)
        return 0;
    if (pthread_create(&k->writer, NULL, ck_main, e))
        return rc_err(eb, el, RC_EIO, "engine: cannot start the checkpoint thread");
    k->writer_started = 1;
    return 0;
}

/* After the trainer stopped: ends the checkpoint thread (a write in progress
 * finishes first). */
static void ck_stop(rc_engine *e)
{
    struct ckpt *k = e->ck;
    if (!k || !k->writer_started)
        return;
    pthread_mutex_lock(&k->mu);
    k->stop = 1;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->writer, NULL);
    k->writer_started = 0;
}

static void ck_free(rc_engine *e)
{
    struct ckpt *k = e->ck;
    if (!k)
        return;
    rc_checkpoint_destroy(k->snap);
    rc_checkpoint_meta_free(&k->restored);
    rc_index_destroy(k->rx);
    free(k->next);
    free(k->offs);
    free(k->res_parts);
    free(k->res_offs);
    free(k->loop_parts);
    free(k->loop_offs);
    if (k->lock_fd >= 0)
        close(k->lock_fd);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k);
    e->ck = NULL;
}

/* Loop thread (from on_async): hands a finished result to the callback. */
static void ck_deliver(rc_engine *e)
{
    struct ckpt *k = e->ck;
    rc_engine_checkpoint_result r;
    if (!k || !k->enabled)
        return;
    pthread_mutex_lock(&k->mu);
    int have = k->have_result;
    k->have_result = 0;
    r = k->res;
    if (have && r.n > k->loop_cap) {
        int32_t *p = realloc(k->loop_parts, r.n * sizeof *p);
        int64_t *o = realloc(k->loop_offs, r.n * sizeof *o);
        if (p)
            k->loop_parts = p;
        if (o)
            k->loop_offs = o;
        if (p && o)
            k->loop_cap = r.n;
    }
    if (have && r.n > k->loop_cap) { /* no memory: report it, commit nothing */
        r.n = 0;
        r.rc = RC_ENOMEM;
        snprintf(k->res_err, sizeof k->res_err, "out of memory for the offsets");
    }
    /* Copied under mu: the writer may produce the next result meanwhile. */
    if (have && r.n) {
        memcpy(k->loop_parts, k->res_parts, r.n * sizeof *k->loop_parts);
        memcpy(k->loop_offs, k->res_offs, r.n * sizeof *k->loop_offs);
    }
    memcpy(k->loop_err, k->res_err, sizeof k->loop_err);
    pthread_mutex_unlock(&k->mu);
    if (!have || !k->cb)
        return;
    r.parts = k->loop_parts;
    r.offsets = k->loop_offs;
    r.error = k->loop_err;
    k->cb(k->cb_ud, &r);
}

void rc_engine_set_checkpoint_cb(rc_engine *e, rc_engine_checkpoint_cb cb, void *ud)
{
    e->ck->cb = cb;
    e->ck->cb_ud = ud;
}

int rc_engine_checkpoint(rc_engine *e, int everything, uint64_t *ticket)
{
    struct ckpt *k = e->ck;
    if (!k->enabled || !e->threads)
        return RC_EINVAL;
    pthread_mutex_lock(&e->sync_mu);
    uint64_t t = everything ? e->submitted : 0;
    pthread_mutex_unlock(&e->sync_mu);
    if (ticket)
        *ticket = t;
    pthread_mutex_lock(&k->mu);
    if (k->state == CK_IDLE) {
        k->state = CK_RESERVE;
        k->after = t;
        pthread_cond_broadcast(&k->cv);
    } else {
        k->again_after = k->again ? RC_MAX(k->again_after, t) : t;
        k->again = 1;
    }
    pthread_mutex_unlock(&k->mu);
    return 0;
}

int rc_engine_checkpoint_now(rc_engine *e, rc_engine_checkpoint_result *r, char *eb, size_t el)
{
    struct ckpt *k = e->ck;
    rc_checkpoint_info info = {0};
    char err[512] = "";
    if (!k->enabled || e->threads)
        return rc_err(eb, el, RC_EINVAL, "engine: checkpoint_now needs data_dir and no loop");
    maintain(e, 1);
    pthread_mutex_lock(&k->mu);
    k->state = CK_WANTED;
    k->after = 0;
    atomic_store(&k->wanted, 1);
    pthread_mutex_unlock(&k->mu);
    ck_take(e, 1);
    int rc = k->take_rc;
    if (rc == 0 && !k->unchanged)
        rc = ck_write(e, &info, err, sizeof err);
    if (rc == 0)
        atomic_store(&k->durable_trained, k->covers);
    pthread_mutex_lock(&k->mu);
    ck_result(k, rc, &info, err, k->covers);
    k->have_result = 0;
    k->state = CK_IDLE;
    if (r) {
        *r = k->res;
        r->parts = k->res_parts;
        r->offsets = k->res_offs;
        r->error = k->res_err;
    }
    pthread_mutex_unlock(&k->mu);
    return rc ? rc_err(eb, el, rc, "%s", err) : 0;
}

size_t rc_engine_restored_offsets(const rc_engine *e, int32_t *parts, int64_t *offsets,
                                  size_t cap)
{
    const rc_checkpoint_meta *m = &e->ck->restored;
    if (!e->ck->restored_ok || strcmp(m->topic, e->cfg.topic) != 0)
        return 0;
    for (size_t i = 0; i < m->noffsets && i < cap && parts && offsets; i++) {
        parts[i] = m->offsets[i].partition;
        offsets[i] = m->offsets[i].next;
    }
    return m->noffsets;
}

/* Loader's vector thread (rc_checkpoint_hooks): indexes rows as their input
 * vectors arrive, so that the index is rebuilt while the ids are still being
 * read (the two halves of a restore, each ~1 s at 1M rows, overlap). This
 * thread is the index's only writer until the load returns. A failure only
 * leaves the work to create_model. */
static void ck_on_rows(void *ud, rc_table *t, uint32_t first, uint32_t n)
{
    struct ckpt *k = ud;
    char err[256];
    if (k->rx_table != t) { /* a new attempt (an older checkpoint): start over */
        rc_index_destroy(k->rx);
        k->rx = NULL;
        k->rx_table = t;
        k->rx_pending = 0;
        k->rx_failed = rc_index_create(&k->rx_opts, t, &k->rx, err, sizeof err) != 0;
    }
    if (k->rx_failed)
        return;
    for (uint32_t r = first; r < first + n; r++)
        rc_index_touch(k->rx, r);
    if ((k->rx_pending += n) >= 65536) {
        k->rx_pending = 0;
        k->rx_failed = rc_index_flush(k->rx, 0, err, sizeof err) < 0;
    }
}

static rc_index *ck_prebuilt_index(rc_engine *e)
{
    struct ckpt *k = e->ck;
    rc_index *ix = NULL;
    if (k->rx && k->rx_table == e->table && !k->rx_failed)
        ix = k->rx;
    else
        rc_index_destroy(k->rx);
    k->rx = NULL;
    k->rx_table = NULL;
    k->prebuilt = ix != NULL;
    return ix;
}

/* create_model: the newest valid checkpoint under data_dir into e->table and
 * the counters. Returns 0, RC_ENOENT (none: start otherwise) or an error. */
static int ck_restore(rc_engine *e, const rc_table_opts *to, const rc_index_opts *io, char *eb,
                      size_t el)
{
    struct ckpt *k = e->ck;
    rc_checkpoint_meta *m = &k->restored;
    rc_checkpoint_hooks hooks = {.on_rows = ck_on_rows, .ud = k};
    char path[4200], name[64];
    if (!k->enabled)
        return RC_ENOENT;
    k->rx_opts = *io;
    uint64_t t0 = rc_now_ns();
    int rc = rc_checkpoint_restore_with(e->cfg.data_dir, to, &hooks, &e->table, m, path,
                                        sizeof path, eb, el);
    if (rc) {
        rc_index_destroy(k->rx); /* built for a table the loader dropped */
        k->rx = NULL;
        k->rx_table = NULL;
        int bad = rc == RC_ENOENT ? rc_checkpoint_count_invalid(e->cfg.data_dir) : 0;
        if (bad > 0) {
            k->invalid_only = 1;
            rc_log_warn("engine", "no valid checkpoint: the stream is replayed from the "
                        "beginning of the log (what retention removed is counted as lost)",
                        "data_dir=%s invalid_checkpoints=%d", e->cfg.data_dir, bad);
        }
        return rc;
    }
    k->load_ns = rc_now_ns() - t0;
    k->restored_ok = 1;
    atomic_store(&e->applied, rc_checkpoint_meta_counter(m, "applied", 0));
    atomic_store(&e->consumed, rc_checkpoint_meta_counter(m, "consumed", 0));
    atomic_store(&e->ignored, rc_checkpoint_meta_counter(m, "ignored", 0));
    atomic_store(&e->pairs, rc_checkpoint_meta_counter(m, "pairs", 0));
    atomic_store(&e->new_items, rc_checkpoint_meta_counter(m, "new_items", 0));
    atomic_store(&e->rejected_capacity, rc_checkpoint_meta_counter(m, "rejected_capacity", 0));
    atomic_store(&e->lost, rc_checkpoint_meta_counter(m, "lost", 0));
    e->max_ts = (int64_t)rc_checkpoint_meta_counter(m, "max_ts", (uint64_t)INT64_MIN);
    if (e->max_ts != INT64_MIN)
        atomic_store(&e->max_ts_pub, e->max_ts);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++) {
        snprintf(name, sizeof name, "invalid.%s", rc_event_reason_name((enum rc_event_reason)r));
        atomic_store(&e->invalid[r], rc_checkpoint_meta_counter(m, name, 0));
    }
    k->processed = atomic_load(&e->consumed);
    atomic_store(&k->last_seq, m->seq);
    atomic_store(&k->current_ms, m->created_ms);
    if (strcmp(m->topic, e->cfg.topic) != 0) {
        rc_log_warn("engine", "checkpoint of another topic: its offsets are not used",
                    "checkpoint_topic=%s topic=%s", m->topic, e->cfg.topic);
        return 0;
    }
    for (uint32_t i = 0; i < m->noffsets; i++)
        ck_note(k, m->offsets[i].partition, m->offsets[i].next);
    return 0;
}

static int ck_was_restored(const rc_engine *e) { return e->ck->restored_ok; }

int rc_engine_needs_replay(const rc_engine *e) { return e->ck->invalid_only; }

/* create_model, after the index is rebuilt. */
static void ck_restored(rc_engine *e, uint64_t t0)
{
    struct ckpt *k = e->ck;
    if (!k->restored_ok)
        return;
    k->restore_ns = rc_now_ns() - t0;
    rc_log_info("engine", "checkpoint restored", "seq=%llu items=%u applied=%llu partitions=%u "
                "restore_ms=%.1f load_ms=%.1f", (unsigned long long)k->restored.seq,
                rc_table_size(e->table), (unsigned long long)atomic_load(&e->applied),
                k->restored.noffsets, k->restore_ns / 1e6, k->load_ns / 1e6);
}

static int cmp_u32v(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Any thread: the "checkpoint" stats object. */
static void ck_stats_json(rc_engine *e, rc_buf *o)
{
    struct ckpt *k = e->ck;
    uint32_t p[CK_PAUSES], n;
    char err[256];
    pthread_mutex_lock(&k->mu);
    n = k->npause;
    memcpy(p, k->pause_us, n * sizeof *p);
    int busy = k->state != CK_IDLE;
    snprintf(err, sizeof err, "%s", k->last_error);
    pthread_mutex_unlock(&k->mu);
    qsort(p, n, sizeof *p, cmp_u32v);
    int64_t cur = atomic_load(&k->current_ms);
    uint64_t bytes = atomic_load(&k->last_bytes), wns = atomic_load(&k->last_write_ns);
    rc_buf_printf(o, "\"checkpoint\":{\"enabled\":%s,\"written\":%llu,\"failures\":%llu,"
                     "\"unchanged\":%llu,\"in_progress\":%s,\"seq\":%llu,\"age_ms\":%lld,",
                  k->enabled ? "true" : "false", (unsigned long long)atomic_load(&k->written),
                  (unsigned long long)atomic_load(&k->failures),
                  (unsigned long long)atomic_load(&k->skipped), busy ? "true" : "false",
                  (unsigned long long)atomic_load(&k->last_seq),
                  cur ? (long long)(rc_wall_ms() - cur) : -1LL);
    rc_buf_printf(o, "\"bytes\":%llu,\"duration_ms\":%.3f,\"mb_s\":%.1f,\"pause_ms\":%.3f,"
                     "\"pause_p99_ms\":%.3f,\"pause_max_ms\":%.3f,\"restored_seq\":%llu,"
                     "\"restore_ms\":%.1f,\"last_error\":",
                  (unsigned long long)bytes, wns / 1e6, wns ? bytes / 1e6 / (wns / 1e9) : 0.0,
                  atomic_load(&k->last_pause_ns) / 1e6,
                  n ? p[(size_t)((n - 1) * 0.99)] / 1e3 : 0.0, atomic_load(&k->max_pause_ns) / 1e6,
                  (unsigned long long)(k->restored_ok ? k->restored.seq : 0), k->restore_ns / 1e6);
    rc_buf_json_str(o, err, strlen(err));
    rc_buf_puts(o, "}");
}

void rc_engine_reload(rc_engine *e, const rc_config *c)
{
    __atomic_store_n(&e->cfg.tower_refresh_rows, c->tower_refresh_rows, __ATOMIC_RELAXED);
    __atomic_store_n(&e->cfg.tower_recompute, c->tower_recompute, __ATOMIC_RELAXED);
    tw_set_conf_path(e, c->tower_model);
    __atomic_store_n(&e->cfg.k_default, c->k_default, __ATOMIC_RELAXED);
    __atomic_store_n(&e->cfg.k_max, c->k_max, __ATOMIC_RELAXED);
    __atomic_store_n(&e->cfg.recall_window, c->recall_window, __ATOMIC_RELAXED);
    float of = c->overfetch;
    __atomic_store(&e->cfg.overfetch, &of, __ATOMIC_RELAXED);
    atomic_store(&e->ck->keep, c->ckpt_keep);
    atomic_store(&e->ck->max_mb_s, c->ckpt_max_mb_s);
}

void rc_engine_k_limits(const rc_engine *e, uint32_t *k_default, uint32_t *k_max)
{
    *k_default = __atomic_load_n(&e->cfg.k_default, __ATOMIC_RELAXED);
    *k_max = __atomic_load_n(&e->cfg.k_max, __ATOMIC_RELAXED);
}

/* ---- two-tower serving ----
 * Roles: a LOADER (a request's worker thread, the engine's own loader thread
 * for SIGHUP and the start, or the caller of an offline engine) reads the
 * file, builds a bundle for every existing row and hands it over (pending);
 * the TRAINER adopts it at its next batch boundary (mirrors the rows created
 * meanwhile, publishes it as cur, drops the old one's reference) and keeps
 * cur current after each batch. Readers take a reference to cur under mu.
 * Offline engines (no threads) adopt on the loading thread, their only one. */

#define TW_NEAR_ROWS   4096u  /* rows left for the trainer to mirror when adopting */
#define TW_STEP_ROWS   16384u /* rows per loader step (cancel check, progress) */
#define TW_FLUSH_ROWS  65536u /* loader flushes the index every this many rows */
#define TW_SWEEP_SEG   4096u  /* rows per sweep step */

struct tower {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu (the trainer reads cur bare: it is cur's only writer) */
    rc_tserve *cur, *pending;
    char path[RC_CONF_STR], pend_path[RC_CONF_STR], conf_path[RC_CONF_STR];
    struct stat st, pend_st; /* of the files at load: SIGHUP reloads when they change */
    uint64_t gen_handed, gen_adopted;
    int loading;
    double load_ms;
    char last_error[256];
    /* the engine's loader thread (start, SIGHUP) */
    pthread_t loader;
    int loader_started;
    rc_tt_model *async_model; /* preloaded at create, built by the loader */
    char async_path[RC_CONF_STR];
    atomic_int has_pending, cancel, track;
    _Atomic uint32_t load_done, load_total;
    _Atomic uint64_t loads, failures, refresh_pending;
    /* trainer only */
    uint8_t *dirty;       /* per w2v row: queued in dq */
    size_t dirty_cap;
    uint32_t *dq;         /* ring of rows whose w2v vector changed */
    uint32_t dq_cap, dq_head, dq_n;
    uint32_t sweep, sweep_end; /* after an adoption: every row is re-checked */
    uint32_t seg[TW_SWEEP_SEG];
    uint64_t last_maintain_ns, sync_errors, index_errors;
};

static int tw_init(rc_engine *e, char *eb, size_t el)
{
    struct tower *t = calloc(1, sizeof *t);
    if (!t)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    snprintf(t->conf_path, sizeof t->conf_path, "%s", e->cfg.tower_model);
    e->tw = t;
    return 0;
}

static void tw_set_conf_path(rc_engine *e, const char *path)
{
    pthread_mutex_lock(&e->tw->mu);
    snprintf(e->tw->conf_path, sizeof e->tw->conf_path, "%s", path);
    pthread_mutex_unlock(&e->tw->mu);
}

/* Trainer: row's word2vec vector changed. */
static void tw_dirty(rc_engine *e, uint32_t row)
{
    struct tower *t = e->tw;
    if (!atomic_load_explicit(&t->track, memory_order_relaxed))
        return;
    if (row >= t->dirty_cap) {
        size_t cap = t->dirty_cap ? t->dirty_cap : 4096;
        while (cap <= row)
            cap *= 2;
        uint8_t *d = realloc(t->dirty, cap);
        if (!d)
            return; /* the sweep after the next load re-checks every row */
        memset(d + t->dirty_cap, 0, cap - t->dirty_cap);
        t->dirty = d;
        t->dirty_cap = cap;
    }
    if (t->dirty[row])
        return;
    if (t->dq_n == t->dq_cap) { /* grow the ring, unwrapping it */
        uint32_t cap = t->dq_cap ? t->dq_cap * 2 : 4096;
        uint32_t *q = malloc(cap * sizeof *q);
        if (!q)
            return;
        for (uint32_t i = 0; i < t->dq_n; i++)
            q[i] = t->dq[(t->dq_head + i) & (t->dq_cap - 1)];
        free(t->dq);
        t->dq = q;
        t->dq_cap = cap;
        t->dq_head = 0;
    }
    t->dq[(t->dq_head + t->dq_n) & (t->dq_cap - 1)] = row;
    t->dq_n++;
    t->dirty[row] = 1;
}

/* Trainer (or an offline engine's only thread): publishes the pending bundle. */
static void tw_adopt(rc_engine *e)
{
    struct tower *t = e->tw;
    char err[256];
    pthread_mutex_lock(&t->mu);
    rc_tserve *b = t->pending;
    t->pending = NULL;
    atomic_store(&t->has_pending, 0);
    pthread_mutex_unlock(&t->mu);
    if (!b)
        return;
    int rc = rc_tserve_sync_rows(b, UINT32_MAX);
    if (rc >= 0)
        rc = rc_tserve_flush(b, err, sizeof err);
    else
        snprintf(err, sizeof err, "%s", rc_strerror(rc));
    if (rc < 0) /* serve it anyway: the rows it has are right, later ones retry */
        rc_log_warn("engine", "tower: catching up rows failed", "error=\"%s\"", err);
    pthread_mutex_lock(&t->mu);
    rc_tserve *old = t->cur;
    t->cur = b;
    memcpy(t->path, t->pend_path, sizeof t->path);
    t->st = t->pend_st;
    t->gen_adopted = t->gen_handed;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    rc_tserve_unref(old);
    t->sweep = 0;
    t->sweep_end = rc_tserve_rows(b);
}

/* Trainer, after every batch (and idle): keeps the served bundle current. */
static void tw_maintain(rc_engine *e, int force)
{
    struct tower *t = e->tw;
    char err[256];
    if (atomic_load(&t->has_pending))
        tw_adopt(e);
    rc_tserve *b = t->cur;
    if (!b)
        return;
    int rc = rc_tserve_sync_rows(b, UINT32_MAX); /* new items: vectors at once */
    if (rc < 0 && t->sync_errors++ % 10000 == 0)
        rc_log_warn("engine", "tower: new items cannot be vectorised", "error=\"%s\" rows=%u",
                    rc_strerror(rc), rc_tserve_rows(b));
    uint32_t budget = cfg_u32(&e->cfg.tower_refresh_rows), maxre = cfg_u32(&e->cfg.tower_recompute);
    uint32_t re_total = 0, re;
    while (budget && t->dq_n && re_total < maxre) {
        uint32_t seg = RC_MIN(RC_MIN(t->dq_n, t->dq_cap - t->dq_head), budget);
        uint32_t used = rc_tserve_refresh(b, t->dq + t->dq_head, seg, maxre - re_total, &re);
        for (uint32_t i = 0; i < used; i++)
            t->dirty[t->dq[t->dq_head + i]] = 0;
        t->dq_head = (t->dq_head + used) & (t->dq_cap - 1);
        t->dq_n -= used;
        budget -= used;
        re_total += re;
        if (used < seg)
            break;
    }
    if (budget && re_total < maxre && t->sweep < t->sweep_end) {
        uint32_t seg = RC_MIN(RC_MIN(budget, t->sweep_end - t->sweep), TW_SWEEP_SEG);
        for (uint32_t i = 0; i < seg; i++)
            t->seg[i] = t->sweep + i;
        t->sweep += rc_tserve_refresh(b, t->seg, seg, maxre - re_total, &re);
    }
    atomic_store_explicit(&t->refresh_pending, (uint64_t)t->dq_n + (t->sweep_end - t->sweep),
                          memory_order_relaxed);
    if (rc_tserve_flush(b, err, sizeof err) < 0 && t->index_errors++ % 1000 == 0)
        rc_log_error("engine", "tower: index flush failed", "error=\"%s\"", err);
    uint64_t now = rc_now_ns();
    if (force || now - t->last_maintain_ns > 50 * 1000000ull) {
        t->last_maintain_ns = now;
        if (rc_tserve_maintain(b, err, sizeof err) < 0)
            rc_log_error("engine", "tower: index maintenance failed", "error=\"%s\"", err);
    }
}

/* Trainer: the profile side of one applied (or refused as duplicate / late)
 * click: counters as the session store counted it, device and tags as the
 * event carries them (empty tags are no tags, as offline). */
static void tw_note(rc_engine *e, const rc_event *ev, uint32_t row, unsigned flags)
{
    uint64_t tags[RC_TAGS_MAX], dev = 0;
    uint32_t nt = 0;
    for (uint32_t i = 0; i < ev->ntags && i < RC_TAGS_MAX; i++)
        if (ev->tag_len[i])
            tags[nt++] = rc_tt_hash(ev->tags[i], ev->tag_len[i]);
    if (ev->device_len)
        dev = rc_tt_hash(ev->device, ev->device_len);
    int applied = !(flags & (RC_SESS_DUPLICATE | RC_SESS_LATE));
    rc_profile_note(e->prof, ev->user, ev->user_len, ev->ts_ms, dev, tags, nt, applied ? 1 : 0,
                    (flags & RC_SESS_NEW_SESSION) ? 1 : 0);
    rt_note(e, ev, row, dev, tags, nt, flags);
}

static double ms_since(uint64_t t0) { return (double)(rc_now_ns() - t0) / 1e6; }

/* Loader: builds a bundle of m (owned) for every row, hands it to the trainer
 * and waits until it is served. Caller set t->loading. */
static int tw_build(rc_engine *e, rc_tt_model *m, const char *path, const struct stat *st,
                    char *eb, size_t el)
{
    struct tower *t = e->tw;
    const rc_config *c = &e->cfg;
    uint64_t t0 = rc_now_ns(), last_log = t0;
    rc_tserve_opts o = {.index = {.ivf_min = c->ivf_min, .nprobe = c->nprobe, .drift = c->drift,
                                  .batch = c->index_batch},
                        .max_items = c->max_items,
                        .drift = c->drift};
    rc_tserve *b;
    int rc = rc_tserve_create(m, e->table, &o, &b, eb, el);
    if (rc)
        return rc;
    atomic_store(&t->track, 1); /* from now on changed rows are queued for re-checks */
    uint32_t flushed = 0;
    atomic_store(&t->load_done, 0);
    atomic_store(&t->load_total, rc_table_size(e->table));
    rc_log_info("engine", "tower: vectorising items", "path=%s items=%u dim=%u", path,
                rc_table_size(e->table), rc_tserve_dim(b));
    for (;;) {
        uint32_t have = rc_tserve_rows(b), size = rc_table_size(e->table);
        if (atomic_load(&t->cancel)) {
            rc_tserve_unref(b);
            return rc_err(eb, el, RC_EAGAIN, "tower: load of %s cancelled (shutting down)", path);
        }
        if (have == size || (e->threads && size - have <= TW_NEAR_ROWS))
            break; /* a threaded engine's trainer mirrors the last few at adoption */
        if ((rc = rc_tserve_sync_rows(b, have + TW_STEP_ROWS)) < 0) {
            rc_tserve_unref(b);
            return rc_err(eb, el, rc, "tower: cannot vectorise item row %u: %s", have,
                          rc_strerror(rc));
        }
        have = rc_tserve_rows(b);
        atomic_store(&t->load_done, have);
        atomic_store(&t->load_total, size);
        if (have - flushed >= TW_FLUSH_ROWS) {
            flushed = have;
            if ((rc = rc_tserve_flush(b, eb, el)) < 0 || (rc = rc_tserve_maintain(b, eb, el)) < 0) {
                rc_tserve_unref(b);
                return rc;
            }
        }
        if (rc_now_ns() - last_log > 2000000000ull) {
            last_log = rc_now_ns();
            rc_log_info("engine", "tower: vectorising items", "done=%u total=%u elapsed_ms=%.0f",
                        have, size, ms_since(t0));
        }
    }
    if ((rc = rc_tserve_flush(b, eb, el)) < 0) {
        rc_tserve_unref(b);
        return rc;
    }
    pthread_mutex_lock(&t->mu);
    rc_tserve_unref(t->pending); /* none in practice: one load at a time */
    t->pending = b;
    snprintf(t->pend_path, sizeof t->pend_path, "%s", path);
    t->pend_st = *st;
    uint64_t gen = ++t->gen_handed;
    atomic_store(&t->has_pending, 1);
    pthread_mutex_unlock(&t->mu);
    if (!e->threads) {
        tw_adopt(e);
    } else {
        pthread_mutex_lock(&t->mu);
        while (t->gen_adopted < gen && !(atomic_load(&t->cancel) && t->pending == b)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        }
        if (t->gen_adopted < gen) { /* cancelled before the trainer took it */
            t->pending = NULL;
            atomic_store(&t->has_pending, 0);
            pthread_mutex_unlock(&t->mu);
            rc_tserve_unref(b);
            return rc_err(eb, el, RC_EAGAIN, "tower: load of %s cancelled (shutting down)", path);
        }
        pthread_mutex_unlock(&t->mu);
    }
    double ms = ms_since(t0);
    pthread_mutex_lock(&t->mu);
    t->load_ms = ms;
    pthread_mutex_unlock(&t->mu);
    const rc_tt_config *tc = rc_tt_config_of(rc_tserve_model(b));
    rc_log_info("engine", "tower: model serving", "path=%s params=%zu dim=%u items=%u load_ms=%.1f",
                path, rc_tt_params(rc_tserve_model(b)), tc->dim, rc_tserve_rows(b), ms);
    if (tc->max_clicks > c->history)
        rc_log_warn("engine", "tower: the model uses more recent clicks than sessions.history "
                    "keeps: user inputs are cut to sessions.history clicks",
                    "max_clicks=%u history=%u", tc->max_clicks, c->history);
    return 0;
}

/* Loader: reads the file (or takes the preloaded model) and builds; records
 * the outcome and clears t->loading. */
static int tw_load(rc_engine *e, const char *path, rc_tt_model *pre, char *eb, size_t el)
{
    struct tower *t = e->tw;
    struct stat st;
    rc_tt_model *m = pre;
    char err[512];
    int rc = 0;
    if (!eb || el == 0) {
        eb = err;
        el = sizeof err;
    }
    eb[0] = '\0';
    if (stat(path, &st))
        rc = rc_err(eb, el, errno == ENOENT ? RC_ENOENT : RC_EIO, "tower model %s: %s", path,
                    strerror(errno));
    else if (!m)
        rc = rc_tt_load(path, &m, eb, el);
    else
        pre = NULL; /* ownership goes to tw_build */
    if (rc == 0)
        rc = tw_build(e, m, path, &st, eb, el);
    rc_tt_destroy(pre); /* not built (stat failed) */
    pthread_mutex_lock(&t->mu);
    t->loading = 0;
    if (rc)
        snprintf(t->last_error, sizeof t->last_error, "%s", eb);
    pthread_mutex_unlock(&t->mu);
    atomic_fetch_add(rc ? &t->failures : &t->loads, 1);
    if (rc)
        rc_log_error("engine", "tower: model load failed: the served model stays",
                     "error=\"%s\"", eb);
    return rc;
}

static int tw_begin(rc_engine *e, const char *path, char *out, char *eb, size_t el)
{
    struct tower *t = e->tw;
    pthread_mutex_lock(&t->mu);
    if (!path || !path[0])
        path = t->conf_path;
    snprintf(out, RC_CONF_STR, "%s", path);
    if (!out[0]) {
        pthread_mutex_unlock(&t->mu);
        return rc_err(eb, el, RC_EINVAL, "tower: no model file (tower.model, --model FILE.tower "
                      "or a \"path\")");
    }
    if (t->loading || atomic_load(&t->cancel)) {
        pthread_mutex_unlock(&t->mu);
        return rc_err(eb, el, RC_EAGAIN, atomic_load(&t->cancel)
                                             ? "tower: shutting down: no model load"
                                             : "tower: a model load is already in progress");
    }
    t->loading = 1;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

int rc_engine_tower_load(rc_engine *e, const char *path, rc_engine_tower_info *info, char *eb,
                         size_t el)
{
    char p[RC_CONF_STR];
    int rc = tw_begin(e, path, p, eb, el);
    if (rc == 0)
        rc = tw_load(e, p, NULL, eb, el);
    if (rc == 0 && info)
        rc_engine_tower_info_get(e, info);
    return rc;
}

static void *tw_loader_main(void *arg)
{
    rc_engine *e = arg;
    struct tower *t = e->tw;
    rc_tt_model *m = t->async_model;
    t->async_model = NULL;
    tw_load(e, t->async_path, m, NULL, 0);
    return NULL;
}

static int tw_spawn(rc_engine *e, char *eb, size_t el)
{
    struct tower *t = e->tw;
    if (t->loader_started) /* finished: loading was 0 */
        pthread_join(t->loader, NULL);
    t->loader_started = 0;
    if (pthread_create(&t->loader, NULL, tw_loader_main, e)) {
        rc_tt_destroy(t->async_model);
        t->async_model = NULL;
        pthread_mutex_lock(&t->mu);
        t->loading = 0;
        pthread_mutex_unlock(&t->mu);
        return rc_err(eb, el, RC_EIO, "tower: cannot start the loader thread");
    }
    t->loader_started = 1;
    return 0;
}

int rc_engine_tower_load_async(rc_engine *e, const char *path, char *eb, size_t el)
{
    int rc = tw_begin(e, path, e->tw->async_path, eb, el);
    return rc ? rc : tw_spawn(e, eb, el);
}

/* Create: the configured model. The file is read here (a bad file fails the
 * start, with its error); the bundle is built on the loader thread of a
 * threaded engine, or right here for an offline one. */
static int tw_start(rc_engine *e, char *eb, size_t el)
{
    struct tower *t = e->tw;
    rc_tt_model *m = NULL;
    if (!e->cfg.tower_model[0])
        return 0;
    int rc = rc_tt_load(e->cfg.tower_model, &m, eb, el);
    if (rc)
        return rc;
    if (rc_tt_config_of(m)->w2v_dim != rc_table_dim(e->table)) {
        uint32_t wd = rc_tt_config_of(m)->w2v_dim;
        rc_tt_destroy(m);
        return rc_err(eb, el, RC_EINVAL, "tower model %s: w2v_dim %u does not match model.dim %u",
                      e->cfg.tower_model, wd, rc_table_dim(e->table));
    }
    if ((rc = tw_begin(e, e->cfg.tower_model, t->async_path, eb, el))) {
        rc_tt_destroy(m);
        return rc;
    }
    if (!e->threads)
        return tw_load(e, t->async_path, m, eb, el);
    t->async_model = m;
    return tw_spawn(e, eb, el);
}

void rc_engine_tower_cancel(rc_engine *e)
{
    struct tower *t = e->tw;
    rt_cancel(e);
    atomic_store(&t->cancel, 1);
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void tw_stop(rc_engine *e)
{
    struct tower *t = e->tw;
    if (!t)
        return;
    atomic_store(&t->cancel, 1);
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->loader_started)
        pthread_join(t->loader, NULL);
    t->loader_started = 0;
}

static void tw_free(rc_engine *e)
{
    struct tower *t = e->tw;
    if (!t)
        return;
    rc_tserve_unref(t->cur);
    rc_tserve_unref(t->pending);
    rc_tt_destroy(t->async_model);
    free(t->dirty);
    free(t->dq);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
    e->tw = NULL;
}

/* Any thread: a reference to the served bundle, or NULL. */
static rc_tserve *tw_acquire(rc_engine *e)
{
    struct tower *t = e->tw;
    pthread_mutex_lock(&t->mu);
    rc_tserve *b = t->cur;
    if (b)
        rc_tserve_ref(b);
    pthread_mutex_unlock(&t->mu);
    return b;
}

int rc_engine_tower_file_changed(rc_engine *e, const char *path)
{
    struct tower *t = e->tw;
    struct stat st, cur;
    char p[RC_CONF_STR], served[RC_CONF_STR];
    pthread_mutex_lock(&t->mu);
    int loaded = t->cur != NULL;
    snprintf(served, sizeof served, "%s", t->path);
    snprintf(p, sizeof p, "%s", path && path[0] ? path : t->path);
    cur = t->st;
    pthread_mutex_unlock(&t->mu);
    if (!p[0] || stat(p, &st))
        return 0;
    if (!loaded || strcmp(p, served) != 0)
        return 1;
    return st.st_size != cur.st_size || st.st_mtim.tv_sec != cur.st_mtim.tv_sec ||
           st.st_mtim.tv_nsec != cur.st_mtim.tv_nsec || st.st_ino != cur.st_ino;
}

void rc_engine_tower_info_get(rc_engine *e, rc_engine_tower_info *info)
{
    struct tower *t = e->tw;
    memset(info, 0, sizeof *info);
    pthread_mutex_lock(&t->mu);
    rc_tserve *b = t->cur;
    if (b)
        rc_tserve_ref(b);
    info->loading = t->loading;
    snprintf(info->path, sizeof info->path, "%s", t->path);
    snprintf(info->last_error, sizeof info->last_error, "%s", t->last_error);
    info->load_ms = t->load_ms;
    pthread_mutex_unlock(&t->mu);
    info->load_done = atomic_load(&t->load_done);
    info->load_total = atomic_load(&t->load_total);
    info->loads = atomic_load(&t->loads);
    info->load_failures = atomic_load(&t->failures);
    info->refresh_pending = atomic_load(&t->refresh_pending);
    if (!b)
        return;
    rc_tserve_stats ts;
    rc_tserve_stats_get(b, &ts);
    const rc_tt_config *c = rc_tt_config_of(rc_tserve_model(b));
    info->loaded = 1;
    info->params = rc_tt_params(rc_tserve_model(b));
    info->dim = c->dim;
    info->max_clicks = c->max_clicks;
    info->items = ts.rows;
    info->checked = ts.checked;
    info->recomputed = ts.recomputed;
    info->bytes = ts.bytes;
    rc_index_stats_get(rc_tserve_index(b), &info->index);
    rc_tserve_unref(b);
}

/* A request's user input (tower.h rc_tt_user_in), built exactly as
 * rc_tt_history_user_in builds it offline. */
typedef struct tw_user {
    rc_click clicks[256]; /* recent clicks fetched, oldest first */
    uint32_t nclicks;
    rc_tt_item_in in[RC_TT_MAX_CLICKS];
    int64_t ts[RC_TT_MAX_CLICKS];
    rc_profile_rec prof;
    rc_tt_user_in u;
} tw_user;

static int tw_user_in(rc_engine *e, rc_tserve *b, const char *user, size_t ulen, int64_t now_ms,
                      uint32_t window, tw_user *w)
{
    uint32_t mc = rc_tt_config_of(rc_tserve_model(b))->max_clicks;
    uint32_t fetch = RC_MIN(RC_MAX(mc, window), (uint32_t)RC_ARRAY_LEN(w->clicks));
    int has_sess = rc_session_recent(e->sess, user, ulen, w->clicks, fetch, &w->nclicks) == 0;
    int has_prof = rc_profile_get(e->prof, user, ulen, &w->prof) == 0;
    if (!has_sess)
        w->nclicks = 0;
    if (!has_prof)
        memset(&w->prof, 0, sizeof w->prof);
    if (!has_sess && !has_prof)
        return RC_ENOENT;
    uint32_t use = RC_MIN(w->nclicks, RC_MIN(mc, RC_TT_MAX_CLICKS)), first = w->nclicks - use;
    for (uint32_t i = 0; i < use; i++) {
        rc_tserve_item_in(e->table, w->clicks[first + i].row, &w->in[i]);
        w->ts[i] = w->clicks[first + i].ts_ms;
    }
    if (!now_ms) {
        now_ms = atomic_load_explicit(&e->max_ts_pub, memory_order_relaxed);
        if (now_ms == INT64_MIN || now_ms == 0) /* nothing applied (restored models) */
            now_ms = w->nclicks ? w->clicks[w->nclicks - 1].ts_ms : rc_wall_ms();
    }
    w->u = (rc_tt_user_in){.clicks = w->in,
                           .click_ts = w->ts,
                           .nclicks = use,
                           .device_hash = w->prof.device_hash,
                           .tag_hashes = w->prof.tags,
                           .ntags = w->prof.ntags,
                           .total_clicks = RC_MAX(w->prof.clicks, (uint64_t)w->nclicks),
                           .sessions = RC_MAX(w->prof.sessions, (uint64_t)(w->nclicks > 0)),
                           .now_ms = now_ms};
    return 0;
}

int rc_engine_tower_user_vector(rc_engine *e, const char *user, size_t ulen, int64_t now_ms,
                                float *out, uint32_t cap, uint32_t *dim)
{
    rc_tserve *b = tw_acquire(e);
    if (!b)
        return RC_EAGAIN;
    *dim = rc_tserve_dim(b);
    tw_user *w = malloc(sizeof *w);
    int rc = !w ? RC_ENOMEM : *dim > cap ? RC_E2BIG : tw_user_in(e, b, user, ulen, now_ms, 0, w);
    if (rc == 0)
        rc = rc_tserve_user_vector(b, &w->u, out);
    free(w);
    rc_tserve_unref(b);
    return rc;
}

/* Filter f (w2v ids) in the mirror's ids; *empty when a named city/category
 * has no mirrored item yet. */
static void tw_filter(rc_engine *e, rc_tserve *b, const rc_index_filter *f, rc_index_filter *mf,
                      uint32_t *mcates, int *empty)
{
    const rc_table *m = rc_tserve_table(b);
    uint32_t id;
    *mf = (rc_index_filter){.city = -1, .cates = mcates, .ncates = 0};
    *empty = 0;
    if (f->city >= 0) {
        const char *name = rc_table_city_name(e->table, (uint32_t)f->city);
        if (!name || rc_table_find_city(m, name, strlen(name), &id))
            *empty = 1;
        else
            mf->city = id;
    }
    for (uint32_t i = 0; i < f->ncates; i++) {
        const char *name = rc_table_cate_name(e->table, f->cates[i]);
        if (name && rc_table_find_cate(m, name, strlen(name), &id) == 0)
            mcates[mf->ncates++] = id;
    }
    if (f->ncates && !mf->ncates)
        *empty = 1;
}

static int tw_recall(rc_engine *e, const rc_recall_req *req, rc_hit *out, uint32_t *n,
                     int *fallback)
{
    uint32_t cates[64], mcates[64], rows[256];
    int64_t ts[256];
    float w8[256];
    rc_index_filter f, mf;
    int empty;
    rc_tserve *b = tw_acquire(e);
    if (!b)
        return RC_EAGAIN;
    resolve_filter(e, req, &f, cates, &empty);
    tw_user *w = empty ? NULL : malloc(sizeof *w);
    float *q = empty ? NULL : malloc(rc_tserve_dim(b) * sizeof *q);
    int rc = 0;
    if (empty)
        goto out;
    if (!w || !q) {
        rc = RC_ENOMEM;
        goto out;
    }
    uint32_t window = cfg_u32(&e->cfg.recall_window);
    rc = tw_user_in(e, b, req->user, req->ulen, req->now_ms, window, w);
    uint32_t nwin = RC_MIN(w->nclicks, window), first = w->nclicks - nwin;
    for (uint32_t i = 0; i < w->nclicks; i++)
        rows[i] = w->clicks[i].row;
    for (uint32_t i = 0; i < nwin; i++)
        ts[i] = w->clicks[first + i].ts_ms;
    /* the avg mode's scope: the city of most of the (decayed) recent click weight */
    int64_t hl = req->half_life_ms ? req->half_life_ms : e->cfg.half_life_ms;
    rc_recall_decay_weights(ts, nwin, hl, w8);
    if (!req->city && !req->global && e->cfg.recall_user_city && nwin)
        f.city = user_city(e, rows + first, w8, nwin);
    if (rc == 0) {
        rc = rc_tserve_user_vector(b, &w->u, q);
        tw_filter(e, b, &f, &mf, mcates, &empty);
        if (rc == 0 && !empty && req->exact)
            rc = rc_recall_exact(rc_tserve_table(b), q, req->k, &mf, rows, w->nclicks, out, n);
        else if (rc == 0 && !empty)
            rc = rc_tserve_search(b, q, req->k, cfg_f32(&e->cfg.overfetch), &mf, rows, w->nclicks,
                                  out, n);
    }
    if (rc == RC_ENOENT || (rc == 0 && *n == 0)) { /* the avg mode's unknown-user answer */
        *fallback = 1;
        *n = popular(e, &f, rows, w->nclicks, req->k, out);
        rc = 0;
    }
out:
    free(q);
    free(w);
    rc_tserve_unref(b);
    return rc;
}

/* Any thread: the mirrored row of item in the bundle, or RC_ENOENT. */
static int tw_row(rc_engine *e, rc_tserve *b, const char *item, size_t len, uint32_t *row)
{
    if (rc_table_find(e->table, item, len, row) || *row >= rc_tserve_rows(b))
        return RC_ENOENT;
    return 0;
}

int rc_engine_tower_item_vector(rc_engine *e, const char *item, size_t len, float *out,
                                uint32_t cap, uint32_t *dim)
{
    uint32_t row;
    rc_tserve *b = tw_acquire(e);
    if (!b)
        return RC_EAGAIN;
    *dim = rc_tserve_dim(b);
    int rc = *dim > cap ? RC_E2BIG : tw_row(e, b, item, len, &row);
    if (rc == 0)
        memcpy(out, rc_table_in(rc_tserve_table(b), row), *dim * sizeof *out);
    rc_tserve_unref(b);
    return rc;
}

int rc_engine_tower_similar(rc_engine *e, const char *item, size_t len, uint32_t k, rc_hit *out,
                            uint32_t *n)
{
    uint32_t row;
    *n = 0;
    if (k == 0 || k > cfg_u32(&e->cfg.k_max))
        return RC_EINVAL;
    rc_tserve *b = tw_acquire(e);
    if (!b)
        return RC_EAGAIN;
    int rc = tw_row(e, b, item, len, &row);
    float *q = rc ? NULL : malloc(rc_tserve_dim(b) * sizeof *q);
    if (rc == 0 && !q)
        rc = RC_ENOMEM;
    if (rc == 0) {
        memcpy(q, rc_table_in(rc_tserve_table(b), row), rc_tserve_dim(b) * sizeof *q);
        rc = rc_tserve_search(b, q, k, cfg_f32(&e->cfg.overfetch), NULL, &row, 1, out, n);
    }
    free(q);
    rc_tserve_unref(b);
    return rc;
}

int rc_engine_tower_contains(rc_engine *e, uint32_t row)
{
    rc_tserve *b = tw_acquire(e);
    int in = b && rc_index_contains(rc_tserve_index(b), row);
    rc_tserve_unref(b);
    return in;
}

/* Any thread: the "tower" and "profiles" stats objects. */
static void tw_stats_json(rc_engine *e, rc_buf *o)
{
    rc_engine_tower_info ti;
    rc_profile_stats ps;
    rc_engine_tower_info_get(e, &ti);
    rc_profile_stats_get(e->prof, &ps);
    rc_buf_printf(o, "\"tower\":{\"loaded\":%s,\"loading\":%s,\"path\":", ti.loaded ? "true" : "false",
                  ti.loading ? "true" : "false");
    rc_buf_json_str(o, ti.path, strlen(ti.path));
    rc_buf_printf(o, ",\"params\":%zu,\"dim\":%u,\"max_clicks\":%u,\"items\":%u,"
                     "\"load_done\":%u,\"load_total\":%u,\"load_ms\":%.1f,\"loads\":%llu,"
                     "\"load_failures\":%llu,\"checked\":%llu,\"recomputed\":%llu,"
                     "\"refresh_pending\":%llu,\"bytes\":%zu,\"last_error\":",
                  ti.params, ti.dim, ti.max_clicks, ti.items, ti.load_done, ti.load_total,
                  ti.load_ms, (unsigned long long)ti.loads,
                  (unsigned long long)ti.load_failures, (unsigned long long)ti.checked,
                  (unsigned long long)ti.recomputed, (unsigned long long)ti.refresh_pending,
                  ti.bytes);
    rc_buf_json_str(o, ti.last_error, strlen(ti.last_error));
    const rc_index_stats *is = &ti.index;
    rc_buf_printf(o, ",\"index\":{\"size\":%llu,\"partitions\":%llu,\"ivf_partitions\":%llu,"
                     "\"pending\":%llu,\"staleness_ms\":%.3f,\"added\":%llu,\"reindexed\":%llu,"
                     "\"skipped_small_drift\":%llu,\"retrains\":%llu,\"new_item_p50_ms\":%.3f,"
                     "\"new_item_p99_ms\":%.3f,\"bytes\":%zu}",
                  (unsigned long long)is->size, (unsigned long long)is->partitions,
                  (unsigned long long)is->ivf_partitions, (unsigned long long)is->pending,
                  is->staleness_ms, (unsigned long long)is->added,
                  (unsigned long long)is->reindexed, (unsigned long long)is->skipped_small_drift,
                  (unsigned long long)is->retrains, is->fresh_p50_us / 1000.0,
                  is->fresh_p99_us / 1000.0, is->bytes);
    rt_stats_json(e, o); /* ,"retrain":{...}}, closing "tower" */
    rc_buf_printf(o, "\"profiles\":{\"users\":%llu,\"with_device\":%llu,\"with_tags\":%llu,"
                     "\"evicted_lru\":%llu,\"expired_ttl\":%llu,\"bytes\":%zu}",
                  (unsigned long long)ps.users, (unsigned long long)ps.with_device,
                  (unsigned long long)ps.with_tags, (unsigned long long)ps.evicted_lru,
                  (unsigned long long)ps.expired_ttl, ps.bytes);
}

/* ---- background retraining ----
 * The trainer adds every applied click to the replay buffer (rt_note). The
 * retrain thread sleeps on mu/cv until its interval passed or a request came
 * (requested > finished), then runs one retrain (rt_run) outside mu: snapshot,
 * train (retrain.h), save, serve through tw_build like a loader (it takes the
 * loading slot, so a retrain and a load never overlap). Outcomes go to info
 * under mu. Offline engines run rt_run on the caller's thread. */

#define RT_RETRAINED_FILE "tower.retrained"

struct retrain {
    rc_replay *ring;  /* NULL: off */
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t requested, finished; /* under mu: rc_engine_retrain_now tickets */
    atomic_int cancel;            /* shutdown; rc_tt_train's cancel flag */
    rc_engine_retrain_info info;  /* under mu, replay stats excepted */
};

static int rt_init(rc_engine *e, char *eb, size_t el)
{
    struct retrain *rt = calloc(1, sizeof *rt);
    if (!rt)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    pthread_mutex_init(&rt->mu, NULL);
    pthread_cond_init(&rt->cv, NULL);
    e->rt = rt;
    rt->info.interval_s = e->cfg.tower_retrain_interval_s;
    if (!e->cfg.tower_retrain_interval_s)
        return 0;
    rt->info.enabled = 1;
    int rc = rc_replay_create(e->cfg.tower_replay_clicks, &rt->ring, eb, el);
    if (rc == 0)
        rc_log_info("engine", "tower: retraining on", "interval_s=%u replay_clicks=%u "
                    "replay_bytes=%zu", e->cfg.tower_retrain_interval_s,
                    e->cfg.tower_replay_clicks, rc_replay_bytes_for(e->cfg.tower_replay_clicks));
    return rc;
}

/* Trainer: one click that reached the session store. Duplicates (a redelivered
 * event) are no new data; late clicks are (the offline log has them too). */
static void rt_note(rc_engine *e, const rc_event *ev, uint32_t row, uint64_t dev,
                    const uint64_t *tags, uint32_t ntags, unsigned flags)
{
    if (!e->rt->ring || (flags & RC_SESS_DUPLICATE))
        return;
    rc_replay_add(e->rt->ring, rc_tt_hash(ev->user, ev->user_len), row, ev->ts_ms, dev, tags,
                  ntags);
}

/* Loader role: serves m (owned) as the tower model labelled path. */
static int rt_serve(rc_engine *e, rc_tt_model *m, const char *path, const struct stat *st, char *eb,
                    size_t el)
{
    struct tower *t = e->tw;
    char p[RC_CONF_STR];
    int rc = tw_begin(e, path, p, eb, el);
    if (rc) {
        rc_tt_destroy(m);
        return rc;
    }
    rc = tw_build(e, m, p, st, eb, el);
    pthread_mutex_lock(&t->mu);
    t->loading = 0;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* Saves m to DATA_DIR/tower.retrained (atomic: rc_tt_save renames a synced
 * temp file). *path gets the file, or a label when not saved. Returns 1 when
 * saved. */
static int rt_save(rc_engine *e, const rc_tt_model *m, char *path, struct stat *st)
{
    char err[512];
    memset(st, 0, sizeof *st);
    snprintf(path, RC_CONF_STR, "(retrained, not saved: no data_dir)");
    if (!e->cfg.data_dir[0])
        return 0;
    char file[RC_CONF_STR];
    if (snprintf(file, sizeof file, "%s/%s", e->cfg.data_dir, RT_RETRAINED_FILE) >=
        (int)sizeof file) {
        rc_log_warn("engine", "tower: retrained model not saved: data_dir path too long", NULL);
        snprintf(path, RC_CONF_STR, "(retrained, not saved: path too long)");
        return 0;
    }
    if (rc_tt_save(m, file, err, sizeof err)) {
        rc_log_warn("engine", "tower: retrained model not saved (served anyway)", "error=\"%s\"",
                    err);
        snprintf(path, RC_CONF_STR, "(retrained, not saved: write failed)");
        return 0;
    }
    stat(file, st);
    snprintf(path, RC_CONF_STR, "%s", file);
    rc_log_info("engine", "tower: retrained model saved", "path=%s", file);
    return 1;
}

/* One retrain, start to end; records the outcome. Returns 0 (served),
 * RC_ENOENT (skipped), RC_EAGAIN (cancelled) or the failure's code. */
static int rt_run(rc_engine *e, char *eb, size_t el)
{
    struct retrain *rt = e->rt;
    const rc_config *c = &e->cfg;
    uint64_t t0 = rc_now_ns();
    rc_replay_snap snap = {0};
    rc_retrain_result res = {0};
    rc_tt_model *m = NULL;
    char err[512] = "", path[RC_CONF_STR] = "";
    struct stat st;
    int rc = 0, skipped = 0, saved = 0;
    uint64_t nrun;
    pthread_mutex_lock(&rt->mu);
    nrun = rt->info.done + rt->info.failed + rt->info.skipped;
    rt->info.running = 1;
    pthread_mutex_unlock(&rt->mu);
    rc_tserve *b = tw_acquire(e); /* its model is the base: held until trained */
    if (atomic_load(&rt->cancel)) {
        rc = rc_err(err, sizeof err, RC_EAGAIN, "retrain cancelled (shutting down)");
    } else if (!b) {
        skipped = 1;
        rc = rc_err(err, sizeof err, RC_ENOENT, "no tower model served to retrain (tower.model, "
                    "--model FILE.tower or reload_model)");
    } else if (rc_replay_snapshot(rt->ring, 0, &snap)) {
        rc = rc_err(err, sizeof err, RC_ENOMEM, "out of memory for the replay snapshot");
    } else {
        const rc_tt_model *base = rc_tserve_model(b);
        rc_retrain_opts o = {
            .gap_ms = c->gap_ms,
            .min_examples = c->tower_retrain_min_examples,
            .train = {.cfg = *rc_tt_config_of(base),
                      .epochs = c->tower_retrain_epochs,
                      .threads = c->tower_retrain_threads,
                      .max_seconds = c->tower_retrain_max_seconds,
                      .seed = c->seed + nrun + 1, /* another order each time */
                      .progress = -1,
                      .quiet = 1,
                      .init = c->tower_retrain_warm ? base : NULL,
                      .cancel = &rt->cancel}};
        rc_log_info("engine", "tower: retraining", "clicks=%zu warm_start=%d", snap.n,
                    c->tower_retrain_warm);
        rc = rc_retrain_run(&snap, e->table, &o, &m, &res, err, sizeof err);
        if (rc == 0 && res.skipped) {
            skipped = 1;
            rc = RC_ENOENT;
        }
    }
    rc_tserve_unref(b);
    rc_replay_snap_free(&snap);
    if (rc == 0) {
        saved = rt_save(e, m, path, &st);
        rc = rt_serve(e, m, path, &st, err, sizeof err); /* m is the bundle's now */
        m = NULL;
    }
    rc_tt_destroy(m);
    double secs = (double)(rc_now_ns() - t0) / 1e9;
    int cancelled = rc == RC_EAGAIN && atomic_load(&rt->cancel);
    pthread_mutex_lock(&rt->mu);
    rc_engine_retrain_info *in = &rt->info;
    in->running = 0;
    snprintf(in->last_status, sizeof in->last_status, "%s",
             rc == 0 ? "done" : skipped ? "skipped" : cancelled ? "cancelled" : "failed");
    snprintf(in->last_error, sizeof in->last_error, "%s", rc ? err : "");
    snprintf(in->last_path, sizeof in->last_path, "%s", rc == 0 && saved ? path : "");
    in->last_seconds = secs;
    in->last_train_seconds = res.train.seconds;
    in->last_clicks = res.clicks;
    in->last_users = res.users;
    in->last_sessions = res.sessions;
    in->last_examples = res.examples;
    in->last_trained = res.train.examples;
    in->last_loss = res.train.loss;
    in->last_first_loss = res.train.first_loss;
    in->last_end_ms = rc_wall_ms();
    if (rc == 0)
        in->done++;
    else if (skipped)
        in->skipped++;
    else
        in->failed++;
    pthread_mutex_unlock(&rt->mu);
    if (rc == 0)
        rc_log_info("engine", "tower: retrained model serving",
                    "path=\"%s\" clicks=%llu users=%llu examples=%llu trained=%llu loss=%.4f "
                    "first_loss=%.4f train_s=%.2f seconds=%.2f",
                    path, (unsigned long long)res.clicks, (unsigned long long)res.users,
                    (unsigned long long)res.examples, (unsigned long long)res.train.examples,
                    res.train.loss, res.train.first_loss, res.train.seconds, secs);
    else if (skipped)
        rc_log_info("engine", "tower: retrain skipped", "reason=\"%s\"", err);
    else
        rc_log_warn("engine", "tower: retrain failed: the served model stays", "error=\"%s\"",
                    err);
    if (eb && el)
        snprintf(eb, el, "%s", rc ? err : "");
    return rc;
}

static void *rt_main(void *arg)
{
    rc_engine *e = arg;
    struct retrain *rt = e->rt;
    /* Background work: Linux nice is per thread, inherited by the training
     * threads rc_tt_train starts. */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19))
        rc_log_warn("engine", "tower: retrain thread keeps its priority", "error=\"%s\"",
                    strerror(errno));
    uint64_t period = (uint64_t)e->cfg.tower_retrain_interval_s * 1000000000ull;
    uint64_t next = rc_now_ns() + period;
    pthread_mutex_lock(&rt->mu);
    for (;;) {
        while (!atomic_load(&rt->cancel) && rt->requested == rt->finished && rc_now_ns() < next) {
            uint64_t wait = RC_MIN(next - rc_now_ns(), 1000000000ull);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)wait;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&rt->cv, &rt->mu, &ts);
        }
        if (atomic_load(&rt->cancel))
            break;
        uint64_t ticket = rt->requested;
        pthread_mutex_unlock(&rt->mu);
        rt_run(e, NULL, 0);
        pthread_mutex_lock(&rt->mu);
        rt->finished = ticket;
        pthread_cond_broadcast(&rt->cv);
        next = rc_now_ns() + period; /* from the end: a long retrain never runs back to back */
    }
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    return NULL;
}

static int rt_start(rc_engine *e, char *eb, size_t el)
{
    struct retrain *rt = e->rt;
    if (!rt->ring || !e->threads)
        return 0;
    if (pthread_create(&rt->th, NULL, rt_main, e))
        return rc_err(eb, el, RC_EIO, "engine: cannot start the retrain thread");
    rt->started = 1;
    return 0;
}

static void rt_cancel(rc_engine *e)
{
    struct retrain *rt = e->rt;
    if (!rt)
        return;
    atomic_store(&rt->cancel, 1);
    pthread_mutex_lock(&rt->mu);
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
}

static void rt_stop(rc_engine *e)
{
    struct retrain *rt = e->rt;
    if (!rt || !rt->started)
        return;
    rc_engine_tower_cancel(e); /* also a bundle of it waiting for the trainer */
    pthread_join(rt->th, NULL);
    rt->started = 0;
}

static void rt_free(rc_engine *e)
{
    struct retrain *rt = e->rt;
    if (!rt)
        return;
    rc_replay_destroy(rt->ring);
    pthread_mutex_destroy(&rt->mu);
    pthread_cond_destroy(&rt->cv);
    free(rt);
    e->rt = NULL;
}

void rc_engine_retrain_info_get(rc_engine *e, rc_engine_retrain_info *info)
{
    struct retrain *rt = e->rt;
    pthread_mutex_lock(&rt->mu);
    *info = rt->info;
    pthread_mutex_unlock(&rt->mu);
    memset(&info->replay, 0, sizeof info->replay);
    if (rt->ring)
        rc_replay_stats_get(rt->ring, &info->replay);
}

int rc_engine_retrain_now(rc_engine *e, rc_engine_retrain_info *info, char *eb, size_t el)
{
    struct retrain *rt = e->rt;
    int rc;
    if (!rt->ring)
        rc = rc_err(eb, el, RC_EINVAL, "retraining is off (tower.retrain_interval_s = 0: no "
                    "replay buffer)");
    else if (atomic_load(&rt->cancel))
        rc = rc_err(eb, el, RC_EAGAIN, "shutting down: no retrain");
    else if (!rt->started)
        rc = rt_run(e, eb, el); /* offline engine: this thread is the writer */
    else {
        pthread_mutex_lock(&rt->mu);
        uint64_t ticket = ++rt->requested;
        pthread_cond_broadcast(&rt->cv);
        while (rt->finished < ticket && !atomic_load(&rt->cancel))
            pthread_cond_wait(&rt->cv, &rt->mu);
        int ok = rt->finished >= ticket;
        const char *st = rt->info.last_status;
        rc = !ok || strcmp(st, "cancelled") == 0 ? RC_EAGAIN
             : strcmp(st, "done") == 0           ? 0
             : strcmp(st, "skipped") == 0        ? RC_ENOENT
                                                 : RC_EIO;
        if (!ok)
            rc_err(eb, el, rc, "shutting down: retrain cancelled");
        else if (rc)
            rc_err(eb, el, rc, "%s", rt->info.last_error);
        pthread_mutex_unlock(&rt->mu);
    }
    if (info)
        rc_engine_retrain_info_get(e, info);
    return rc;
}

/* Any thread: ,"retrain":{...}} — the end of the "tower" stats object. */
static void rt_stats_json(rc_engine *e, rc_buf *o)
{
    rc_engine_retrain_info ri;
    rc_engine_retrain_info_get(e, &ri);
    rc_buf_printf(o, ",\"retrain\":{\"enabled\":%s,\"running\":%s,\"interval_s\":%u,"
                     "\"done\":%llu,\"failed\":%llu,\"skipped\":%llu,\"last_status\":\"%s\","
                     "\"last_error\":",
                  ri.enabled ? "true" : "false", ri.running ? "true" : "false", ri.interval_s,
                  (unsigned long long)ri.done, (unsigned long long)ri.failed,
                  (unsigned long long)ri.skipped, ri.last_status);
    rc_buf_json_str(o, ri.last_error, strlen(ri.last_error));
    rc_buf_puts(o, ",\"last_path\":");
    rc_buf_json_str(o, ri.last_path, strlen(ri.last_path));
    rc_buf_printf(o, ",\"last_seconds\":%.3f,\"last_train_seconds\":%.3f,\"last_clicks\":%llu,"
                     "\"last_users\":%llu,\"last_sessions\":%llu,\"last_examples\":%llu,"
                     "\"last_trained\":%llu,\"last_loss\":%.4f,\"last_first_loss\":%.4f,"
                     "\"last_end_ms\":%lld,\"replay\":{\"capacity\":%llu,\"fill\":%llu,"
                     "\"added\":%llu,\"tag_lists\":%llu,\"tags_lost\":%llu,\"bytes\":%zu}}},",
                  ri.last_seconds, ri.last_train_seconds, (unsigned long long)ri.last_clicks,
                  (unsigned long long)ri.last_users, (unsigned long long)ri.last_sessions,
                  (unsigned long long)ri.last_examples, (unsigned long long)ri.last_trained,
                  ri.last_loss, ri.last_first_loss, (long long)ri.last_end_ms,
                  (unsigned long long)ri.replay.capacity, (unsigned long long)ri.replay.fill,
                  (unsigned long long)ri.replay.added, (unsigned long long)ri.replay.tag_lists,
                  (unsigned long long)ri.replay.tags_lost, ri.replay.bytes);
}
