#include "recalld/engine.h"

#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine_int.h"
#include "recalld/cpus.h"
#include "recalld/log.h"
#include "recalld/slice.h"
#include "recalld/userq.h"
#include "recalld/vec.h"

/* ---- queues ---- */

static void q_init(struct rc__engine_queue *q)
{
    q->head = q->tail = NULL;
    pthread_mutex_init(&q->mu, NULL);
    rc_cond_init_mono(&q->cv);
}

static void q_fini(struct rc__engine_queue *q)
{
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

static void q_push(struct rc__engine_queue *q, rc_batch *b)
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
static rc_batch *q_pop(struct rc__engine_queue *q, int timeout_ms, atomic_int *stop)
{
    pthread_mutex_lock(&q->mu);
    if (!q->head && !atomic_load(stop) && timeout_ms != 0) {
        if (timeout_ms < 0) {
            while (!q->head && !atomic_load(stop))
                pthread_cond_wait(&q->cv, &q->mu);
        } else {
            rc_cond_wait_ns(&q->cv, &q->mu, (uint64_t)timeout_ms * 1000000u);
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

static void q_wake(struct rc__engine_queue *q)
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
        b->vectors = 0;
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

void rc_engine_batch_set_vectors(rc_batch *b) { b->vectors = 1; }

/* ---- decode stage ---- */

static void decode_batch(rc_batch *b)
{
    if (b->vectors) { /* vector records: the trainer decodes them (engine_replica.c) */
        memset(b->reason, RC_EV_OK, b->n);
        return;
    }
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

void rc__engine_pop_note(rc_engine *e, uint32_t row) { pop_update(e, row); }

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

/* The learning rate of a click on row: per item, model.lr while the item is
 * new, slower as its clicks accumulate (train.lr_decay_clicks), never below
 * train.lr_min; new items learn fast, well-trained ones move slowly. */
static float click_lr(const rc_engine *e, uint32_t row)
{
    float d = e->cfg.lr_decay_clicks;
    if (d <= 0)
        return e->sg.lr;
    float lr = e->sg.lr * d / (d + (float)rc_table_count(e->table, row));
    return RC_MAX(lr, RC_MIN(e->cfg.lr_min, e->sg.lr));
}

/* The replays owed to one new click: train.replay_ratio, or the adaptive
 * controller's current ratio (replayctl.h), and train.replay_per_hour for
 * the event time since the clicks before it. A daemon's idle trainer time
 * grows with the hours, not with the clicks: on a slow stream (a few clicks
 * an hour) the ratio alone leaves the held clicks far less trained than a
 * daily rebuild's passes (docs/BENCHMARKS.md, "Replay by event time"). The
 * clock is the engine's max_ts (never ahead of the wall clock by more than
 * 5 minutes); the first click after a start owes no hours. */
static void replay_owe(rc_engine *e)
{
    if (e->cfg.replay_per_hour > 0 && e->max_ts != INT64_MIN) {
        if (e->replay_ts != INT64_MIN && e->max_ts > e->replay_ts) {
            double owed =
                (double)e->cfg.replay_per_hour * (double)(e->max_ts - e->replay_ts) / 3.6e6;
            e->replay_credit += owed;
            e->replay_time_owed += owed;
            atomic_store_explicit(&e->replay_time_pub, (uint64_t)e->replay_time_owed,
                                  memory_order_relaxed);
        }
        if (e->replay_ts == INT64_MIN || e->max_ts > e->replay_ts)
            e->replay_ts = e->max_ts;
    }
    e->replay_credit += rc_replayctl_ratio(e->rctl);
    atomic_store_explicit(&e->replay_pending, (uint64_t)e->replay_credit, memory_order_relaxed);
}

/* A click trained into p pairs: counted, and handed to replay (trainer).
 * owed 0: its replays were owed when it was held as a probe. A click with a
 * context is held even when subsampling kept none of its pairs this time
 * (p == 0): a replay subsamples again, and a click dropped here would never
 * be trained (docs/BENCHMARKS.md, "A popularity term in the score"). */
static void click_trained_owed(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx,
                               uint32_t p, int owe)
{
    atomic_fetch_add(&e->pairs, p);
    if (nctx && e->relearn) {
        rc_relearn_add(e->relearn, row, ctx, nctx);
        if (owe)
            replay_owe(e);
    }
}

static void click_trained(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx,
                          uint32_t p)
{
    click_trained_owed(e, row, ctx, nctx, p, 1);
}

/* A fresh click held back by the replay controller as a probe: it is
 * trained after the replays that follow it (replay_spend), which it owes now. */
static int probe_hold(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx)
{
    if (!e->rctl || !rc_replayctl_hold(e->rctl, e->table, &e->rng, row, ctx, nctx))
        return 0;
    replay_owe(e);
    return 1;
}

/* defer: record the click's SGNS update for the shards instead of training
 * it here (model.trainer_threads > 1, inside train_batch). */
static void apply_event(rc_engine *e, const rc_event *ev, int defer)
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
        if (!e->replica) { /* a replica indexes the trainers' vector (engine_replica.c) */
            rc_index_touch(e->index, row);
            rc__engine_vec_note(e, row);
        }
    }
    /* The event-time clock drives idle-user expiry. A producer with a wrong
     * clock must not push it into the future and expire everyone: it never
     * runs ahead of the wall clock by more than 5 minutes. */
    if (ev->ts_ms > e->max_ts) {
        int64_t cap = rc_wall_ms() + 5 * 60 * 1000;
        e->max_ts = ev->ts_ms < cap ? ev->ts_ms : RC_MAX(e->max_ts, cap);
    }
    rc_session_add(e->sess, ev->user, ev->user_len, row, ev->ts_ms, ctx,
                   RC_MIN(RC_MAX(e->sg.window, e->cooc ? e->cfg.cooc_window : 0), CTX_MAX), &nctx,
                   &flags);
    rc__engine_tower_note(e, ev, row, flags);
    atomic_fetch_add(&e->applied, 1);
    if (ev->ts_ms > atomic_load_explicit(&e->max_ts_pub, memory_order_relaxed))
        atomic_store_explicit(&e->max_ts_pub, ev->ts_ms, memory_order_relaxed);
    if (flags & (RC_SESS_DUPLICATE | RC_SESS_LATE))
        return;
    if (defer && e->cooc) /* noted in batch order beside the shards' SGNS (engine_shard.c) */
        rc__engine_shard_cooc(e, row, ctx, nctx, ev->ts_ms);
    else /* a replica too: its co-occurrence channel is its own, from the same clicks */
        rc__engine_cooc_note(e, row, ctx, nctx, ev->ts_ms);
    if (e->replica) /* sessions and the channel only: the trainers train (engine_replica.c) */
        return;
    if (nctx > e->sg.window) { /* SGNS pairs the last model.window of them */
        memmove(ctx, ctx + nctx - e->sg.window, e->sg.window * sizeof *ctx);
        nctx = e->sg.window;
    }
    rc_table_count_add(e->table, row, 1);
    rc__engine_vec_note(e, row); /* the record carries the count (replicas' popularity) */
    uint64_t total = atomic_fetch_add(&e->total_count, 1) + 1;
    rc_sampler_note(e->sampler, row);
    pop_update(e, row);
    if (nctx) {
        if (probe_hold(e, row, ctx, nctx))
            ;           /* trained after the next replays (replay_spend) */
        else if (defer) /* trained by the shards after the batch's other work (engine_shard.c) */
            rc__engine_shard_defer(e, row, ctx, nctx, click_lr(e, row), total);
        else
            click_trained(e, row, ctx, nctx,
                          rc_sgns_click(e->table, e->sampler, &e->rng, &e->sg, click_lr(e, row),
                                        row, ctx, nctx, total, &e->work));
        rc_index_touch(e->index, row);
        rc__engine_vec_note(e, row);
        for (uint32_t i = 0; i < nctx; i++) {
            rc_index_touch(e->index, ctx[i]);
            rc__engine_vec_note(e, ctx[i]);
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

#define REPLAY_CHUNK   64u                    /* replays between two index flushes / 16 */
#define REPLAY_STEP    1.25f                  /* the adaptive ratio's step (replayctl.h) */
#define BACKLOG_FOR_NS (2000ull * 1000000ull) /* a backlog report holds this long */

/* Replay's window, in clicks: one pipeline's worth of events
 * (pipeline.queue_batches x kafka.batch). At most train.replay_ratio replays
 * per trained click are owed over it, and a reported backlog of at most that
 * many events does not count as one. */
static double replay_window(const rc_engine *e)
{
    return (double)e->cfg.queue_batches * (double)e->cfg.kafka_batch;
}

/* 1 when events wait for the trainer: a batch submitted and not yet trained
 * (being decoded included), or more than replay_window events reported
 * waiting upstream (rc_engine_set_backlog: the consumer's lag) less than
 * BACKLOG_FOR_NS ago. Never for the offline engine: the evaluator has no
 * backlog, so every click's replays follow it at once. */
static int replay_must_yield(rc_engine *e)
{
    if (!e->threads)
        return 0;
    if (atomic_load_explicit(&e->inflight, memory_order_acquire) || atomic_load(&e->stop))
        return 1; /* (and a shutdown does not wait for the replays owed) */
    /* nor a checkpoint (a deferred revoke waits for it): under ThreadSanitizer
     * one waited 73 s behind 137k replays owed, and the member lost its place
     * in the group */
    if (e->ck && atomic_load_explicit(&e->ck->wanted, memory_order_relaxed))
        return 1;
    uint64_t waiting = atomic_load_explicit(&e->backlog, memory_order_relaxed);
    if ((double)waiting <= replay_window(e))
        return 0;
    return rc_now_ns() - atomic_load_explicit(&e->backlog_ns, memory_order_relaxed) <
           BACKLOG_FOR_NS;
}

void rc_engine_set_backlog(rc_engine *e, uint64_t events)
{
    atomic_store_explicit(&e->backlog_ns, rc_now_ns(), memory_order_relaxed);
    atomic_store_explicit(&e->backlog, events, memory_order_relaxed);
}

/* 1 when no row of the example has more than train.replay_max_clicks clicks. */
static int replay_sparse(const rc_engine *e, uint32_t center, const uint32_t *ctx, uint32_t nctx)
{
    uint32_t max = e->cfg.replay_max_clicks, size = rc_table_size(e->table);
    if (!max)
        return 1;
    if (center < size && rc_table_count(e->table, center) > max)
        return 0;
    for (uint32_t i = 0; i < nctx; i++)
        if (ctx[i] < size && rc_table_count(e->table, ctx[i]) > max)
            return 0;
    return 1;
}

/* Trains the replays owed to the clicks trained so far (train.replay_ratio
 * per click), each a random example of the replay buffer trained again as
 * when it was new; an example with an item of more than
 * train.replay_max_clicks clicks (the center or a context row) uses its
 * credit untrained: frequent items learn from their own clicks, and a replay
 * at a rare item's rate would shake them; sparse neighbourhoods need the
 * passes.
 *
 * A replay subsamples frequent context items with train.replay_subsample
 * (model.subsample when 0): new clicks train every pair, old ones are
 * thinned where they would over-train frequent items.
 *
 * Replay only fills otherwise idle trainer time: before every replay the
 * trainer looks for waiting events (replay_must_yield) and stops at once when
 * there are some (counted in `yields`). What is owed is bounded by the ratio
 * over replay_window clicks: credit beyond it is given up (`skipped`), so a
 * drained backlog is not followed by a burst of its replays. The offline
 * path (rc_engine_apply_click, the evaluator) never yields: it measures what
 * an idle daemon does. */
static void replay_train(rc_engine *e)
{
    uint32_t center, ctx[CTX_MAX], nctx;
    uint64_t done = 0, skipped = 0, yields = 0;
    if (!e->relearn || e->replay_credit < 1.0)
        return;
    double cap = RC_MAX(rc_replayctl_ratio(e->rctl) * replay_window(e), 1.0);
    if (e->replay_credit > cap) {
        skipped = (uint64_t)(e->replay_credit - cap);
        e->replay_credit -= (double)skipped;
    }
    uint64_t total = atomic_load(&e->total_count);
    rc_sgns_opts rsg = e->sg; /* replays subsample with train.replay_subsample */
    if (e->cfg.replay_subsample > 0)
        rsg.subsample = e->cfg.replay_subsample;
    for (uint32_t k = 0; e->replay_credit >= 1.0; k++) {
        if (replay_must_yield(e)) {
            yields = 1;
            break;
        }
        e->replay_credit -= 1.0;
        if (rc_relearn_pick(e->relearn, &e->rng, &center, ctx, &nctx))
            break;
        if (!replay_sparse(e, center, ctx, nctx))
            continue;
        uint32_t p = rc_sgns_click(e->table, e->sampler, &e->rng, &rsg, click_lr(e, center), center,
                                   ctx, nctx, total, &e->work);
        if (!p)
            continue;
        done++;
        rc_index_touch(e->index, center);
        rc__engine_vec_note(e, center);
        for (uint32_t i = 0; i < nctx; i++) {
            rc_index_touch(e->index, ctx[i]);
            rc__engine_vec_note(e, ctx[i]);
        }
        if (e->threads && k % (16 * REPLAY_CHUNK) == 16 * REPLAY_CHUNK - 1)
            rc__engine_maintain(e, 0); /* replayed rows become searchable meanwhile */
    }
    rc_relearn_count(e->relearn, done, skipped, yields);
    atomic_store_explicit(&e->replay_pending, (uint64_t)e->replay_credit, memory_order_relaxed);
    /* the table changed outside a batch: the next checkpoint is written, not
     * skipped as unchanged (a quiet daemon's replays were lost at a restart) */
    if (done && e->ck)
        rc__engine_ck_note_edit(e);
}

/* At the end of a controller phase, the probes held during it: scored again
 * and trained, as apply_event would have trained them (their replays were
 * owed at hold). */
static void probes_train(rc_engine *e)
{
    rc_replayctl_probe *pr = e->probes;
    uint32_t n = rc_replayctl_release(e->rctl, e->table, pr, RC_REPLAYCTL_MAX_HELD);
    uint64_t total = atomic_load(&e->total_count);
    for (uint32_t k = 0; k < n; k++) {
        const rc_replayctl_probe *p = &pr[k];
        uint32_t np = rc_sgns_click(e->table, e->sampler, &e->rng, &e->sg, click_lr(e, p->center),
                                    p->center, p->ctx, p->nctx, total, &e->work);
        click_trained_owed(e, p->center, p->ctx, p->nctx, np, 0);
        rc_index_touch(e->index, p->center);
        rc__engine_vec_note(e, p->center);
        for (uint32_t i = 0; i < p->nctx; i++) {
            rc_index_touch(e->index, p->ctx[i]);
            rc__engine_vec_note(e, p->ctx[i]);
        }
    }
}

/* Replays owed, then the probes of a finished controller phase. */
static void replay_spend(rc_engine *e)
{
    replay_train(e);
    if (rc_replayctl_phase_over(e->rctl))
        probes_train(e);
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

void rc__engine_maintain(rc_engine *e, int force)
{
    char err[256];
    uint64_t now = rc_now_ns();
    int rc = rc_index_flush(e->index, 0, err, sizeof err);
    if (rc < 0 && atomic_fetch_add(&e->index_errors, 1) % 1000 == 0)
        rc_log_error("engine", "index flush failed", "error=\"%s\"", err);
    rc__engine_vec_handoff(e); /* after the writes: the rows changed go to the publisher */
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
    rc__engine_tower_maintain(e, force);
#ifdef __GLIBC__
    /* Freed memory stays in malloc's arenas (one per thread that allocates:
     * the trainer, index retrains, librdkafka's threads, request workers)
     * until it is trimmed; without checkpoints nothing trimmed it. A trim
     * walks the arenas' free chunks and gives their whole pages back
     * (madvise), holding one arena's lock at a time. */
    uint64_t trim_ns = (uint64_t)e->cfg.trim_interval_ms * 1000000ull;
    if (trim_ns && now - e->last_trim_ns > trim_ns) {
        e->last_trim_ns = now;
        malloc_trim(0);
        atomic_fetch_add_explicit(&e->trims, 1, memory_order_relaxed);
        atomic_store_explicit(&e->trim_last_us, (rc_now_ns() - now) / 1000, memory_order_relaxed);
    }
#endif
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
            uint64_t uh = rc_hash(b->ev[j].user, b->ev[j].user_len); /* once for both */
            rc_session_prefetch(e->sess, uh, step);
            if (e->prof)
                rc_profile_prefetch(e->prof, uh, step);
        }
    }
}

static void train_batch(rc_engine *e, rc_batch *b)
{
    uint64_t pairs0 = e->work.pairs, dp = 0, c0 = rc__engine_thread_cpu_ns();
    double loss0 = e->work.loss_sum, dl = 0;
    if (b->vectors) { /* a replica's vector records */
        rc__engine_replica_batch(e, b);
        rc__engine_maintain(e, 0);
        fresh_record(e, rc_now_ns() - b->recv_ns);
        return;
    }
    int defer = rc__engine_shard_begin(e, b->n);
    for (uint32_t i = 0; i < b->n; i++) {
        prefetch_ahead(e, b, i);
        if (b->reason[i] == RC_EV_OK) /* refused here, dead-lettered like a decode failure */
            b->reason[i] =
                (uint8_t)rc_event_check_time(b->ev[i].ts_ms, e->max_ts, e->cfg.max_future_ms,
                                             e->cfg.max_past_ms, b->err[i], ERR_TEXT);
        if (b->reason[i] == RC_EV_OK)
            apply_event(e, &b->ev[i], defer);
        else /* here, not when reported: a checkpoint's counters match its offsets */
            atomic_fetch_add(&e->invalid[b->reason[i]], 1);
    }
    if (defer)
        rc__engine_shard_run(e, click_trained, &dp, &dl);
    rc__engine_ck_note_batch(e, b);
    rc__engine_maintain(e, 0);
    fresh_record(e, rc_now_ns() - b->recv_ns);
    dp += e->work.pairs - pairs0;
    dl += e->work.loss_sum - loss0;
    atomic_fetch_add_explicit(&e->train_cpu_ns, rc__engine_thread_cpu_ns() - c0,
                              memory_order_relaxed);
    if (dp) {
        double l = dl / (double)dp;
        double old = atomic_load(&e->loss_avg);
        atomic_store(&e->loss_avg, old == 0 ? l : 0.95 * old + 0.05 * l);
    }
}

static void finish_batch(rc_engine *e, rc_batch *b)
{
    atomic_fetch_sub_explicit(&e->inflight, 1, memory_order_release);
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
        inv[ninv] = (rc_invalid){b->arena + b->aoff[i],
                                 b->len[i],
                                 b->part[i],
                                 b->koff[i],
                                 (enum rc_event_reason)b->reason[i],
                                 b->err[i]};
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

void rc__engine_background(rc_engine *e, const char *thread)
{
    id_t tid = (id_t)syscall(SYS_gettid);
    char name[16];
    snprintf(name, sizeof name, "rc-%s", thread);
    if (e->cfg.background_nice) {
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, tid); /* -1 is a valid nice value: errno tells */
        int want = errno ? 19 : RC_MIN(cur + (int)e->cfg.background_nice, 19);
        if (setpriority(PRIO_PROCESS, tid, want))
            rc_log_warn("engine", "background thread keeps its priority", "thread=%s error=\"%s\"",
                        thread, strerror(errno));
    }
    if (e->cfg.background_idle && rc__thread_idle())
        rc_log_warn("engine", "background thread keeps its scheduling policy",
                    "thread=%s error=\"%s\"", thread, strerror(errno));
    rc__engine_pin_background(e, thread);
    /* The kernel's default slice: a background thread started from the loop
     * thread would inherit the request path's short one (slice.h). */
    if (e->cfg.request_slice_us)
        rc_slice_set(0);
    /* Named last: a thread called rc-... runs at its background priority. */
    pthread_setname_np(pthread_self(), name); /* for top -H, perf and renice */
}

void rc__engine_pin_background(rc_engine *e, const char *thread)
{
    if (!e->bg_pin)
        return;
    int r = pthread_setaffinity_np(pthread_self(), sizeof e->bg_cpus, &e->bg_cpus);
    if (r)
        rc_log_warn("engine", "background thread keeps its cores", "thread=%s error=\"%s\"", thread,
                    strerror(r));
}

int rc_engine_cpus(const rc_engine *e, cpu_set_t *bg, cpu_set_t *rest)
{
    if (!e || !e->bg_pin)
        return 0;
    *bg = e->bg_cpus;
    *rest = e->rest_cpus;
    return 1;
}

int rc__thread_idle(void)
{
    /* Any thread may lower itself to SCHED_IDLE; the threads it starts
     * inherit it (pthread_create's default is PTHREAD_INHERIT_SCHED). */
    struct sched_param sp = {.sched_priority = 0};
    return sched_setscheduler(0, SCHED_IDLE, &sp) ? -1 : 0;
}

static void *decoder_main(void *arg)
{
    rc_engine *e = arg;
    rc__engine_background(e, "decoder");
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
    rc__engine_background(e, "trainer");
    for (;;) {
        rc_batch *b = q_pop(&e->q_train, (int)e->cfg.flush_interval_ms, &e->stop);
        if (!b) {
            replay_spend(e); /* what a busy moment left over */
            rc__engine_tinst_step(e);
            rc__engine_maintain(e, 0);
            rc__engine_ck_take(e, 0);
            if (atomic_load(&e->stop) == 2)
                break;
            continue;
        }
        train_batch(e, b);
        q_push(&e->q_done, b);
        uv_async_send(&e->async);
        finish_batch(e, b);
        rc__engine_tinst_step(e);
        rc__engine_ck_take(e, 0); /* a batch boundary */
        replay_spend(e);          /* after the batch is done: never delays its report */
    }
    return NULL;
}

static void on_async(uv_async_t *h)
{
    rc_engine *e = h->data;
    rc_batch *b;
    while ((b = q_pop(&e->q_done, 0, &e->stop)))
        report_and_recycle(e, b);
    rc__engine_ck_deliver(e);
}

void rc_engine_submit(rc_engine *e, rc_batch *b)
{
    b->recv_ns = rc_now_ns();
    atomic_fetch_add_explicit(&e->inflight, 1, memory_order_release);
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
    replay_spend(e);
}

void rc_engine_sync(rc_engine *e)
{
    pthread_mutex_lock(&e->sync_mu);
    while (e->finished < e->submitted)
        pthread_cond_wait(&e->sync_cv, &e->sync_mu);
    pthread_mutex_unlock(&e->sync_mu);
    if (!e->threads)
        rc__engine_maintain(e, 1);
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
    atomic_fetch_add_explicit(&e->inflight, 1, memory_order_release);
    pthread_mutex_lock(&e->sync_mu);
    e->submitted++;
    pthread_mutex_unlock(&e->sync_mu);
    decode_batch(b);
    train_batch(e, b); /* may refuse it too: the event-time window */
    r = (enum rc_event_reason)b->reason[0];
    finish_batch(e, b);
    report_and_recycle(e, b);
    replay_spend(e);
    return r;
}

int rc_engine_apply_click(rc_engine *e, const char *user, size_t ulen, const char *item,
                          size_t ilen, const char *city, size_t clen, const char *cate, size_t klen,
                          int64_t ts_ms)
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
    apply_event(e, ev, 0);
    replay_spend(e);
    return 0;
}

void rc_engine_flush_index(rc_engine *e) { rc__engine_maintain(e, 1); }

rc_index *rc_engine_index(rc_engine *e) { return e->index; }

/* ---- create / destroy ---- */

void rc_engine_index_opts(const rc_config *c, rc_index_opts *io)
{
    *io = (rc_index_opts){.ivf_min = c->ivf_min,
                          .nprobe = c->nprobe,
                          .drift = c->drift,
                          .retrain_fit = c->retrain_fit > 0 ? c->retrain_fit : -1.0f,
                          .batch = c->index_batch,
                          .max_partitions = c->max_partitions,
                          .storage = c->index_storage};
}

/* Trainer (the index's writer), inside rc_index_flush. */
static void index_stored(void *arg, uint32_t row) { rc__engine_tower_dirty(arg, row); }

static int create_model(rc_engine *e, char *eb, size_t el)
{
    const rc_config *c = &e->cfg;
    rc_table_opts to = {.dim = c->dim, .max_items = c->max_items, .seed = c->seed};
    rc_session_opts so = {
        .max_users = c->max_users, .history = c->history, .gap_ms = c->gap_ms, .ttl_ms = c->ttl_ms};
    rc_sampler_opts sa = {.power = c->power, .min_city_items = c->min_city_items};
    rc_index_opts io;
    rc_engine_index_opts(c, &io);
    uint64_t t0 = rc_now_ns();
    int rc = rc__engine_ck_restore(e, &to, &io, eb, el); /* a checkpoint wins over model.path */
    if (rc == RC_ENOENT && c->model_path[0])
        rc = rc_model_load(c->model_path, &to, &e->table, eb, el);
    else if (rc == RC_ENOENT)
        rc = rc_table_create(&to, &e->table, eb, el);
    if (!rc) {
        e->index = rc__engine_ck_prebuilt_index(e); /* filled while the checkpoint loaded */
        rc_table_set_pop_weight(e->table, c->popularity_weight);
    }
    int prebuilt = e->index != NULL;
    rc_profile_opts po = {.max_users = c->max_users, .ttl_ms = c->ttl_ms};
    if (rc || (rc = rc_session_create(&so, &e->sess, eb, el)) ||
        (rc = rc_profile_create(&po, &e->prof, eb, el)) ||
        (rc = rc_sampler_create(&sa, e->table, &e->sampler, eb, el)) ||
        (!prebuilt && (rc = rc_index_create(&io, e->table, &e->index, eb, el))))
        return rc;
    /* The served tower vectors follow the word2vec index: a row the index
     * stores again is queued for the tower's refresh (engine_tower.c). */
    rc_index_set_on_store(e->index, index_stored, e);
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
        if (!rc__engine_ck_was_restored(e))
            rc_log_info("engine", "model loaded", "path=%s items=%u dim=%u", c->model_path, rows,
                        rc_table_dim(e->table));
    }
    rc__engine_ck_restored(e, t0);
    e->sg = (rc_sgns_opts){.mode = c->cbow ? RC_SGNS_CBOW : RC_SGNS_SKIPGRAM,
                           .window = c->window,
                           .negatives = c->negatives,
                           .hard_share = c->hard_share,
                           .lr = c->lr,
                           .subsample = c->subsample};
    if (rc_sgns_work_init(&e->work, c->dim))
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    /* A warm start (model.path or a restored checkpoint) is the anchor of
     * train.anchor; a replica trains nothing and needs none. */
    if (c->anchor > 0 && rows && c->role != RC_ROLE_REPLICA) {
        rc_anchor_opts ao = {.strength = c->anchor, .fade_clicks = c->anchor_fade_clicks};
        if ((rc = rc_anchor_create(e->table, &ao, &e->anchor, eb, el)))
            return rc;
        e->sg.anchor = e->anchor;
        rc_log_info("engine", "warm-start anchor", "rows=%u bytes=%zu strength=%g fade_clicks=%g",
                    rows, rc_anchor_bytes(e->anchor), (double)c->anchor,
                    (double)c->anchor_fade_clicks);
    }
    rc_rng_seed(&e->rng, c->seed);
    if (c->replay_clicks && c->replay_ratio > 0 &&
        (rc = rc_relearn_create(c->replay_clicks, RC_MIN(RC_MAX(c->window, 1u), CTX_MAX),
                                &e->relearn, eb, el)))
        return rc;
    rc_replayctl_opts ro = {.adaptive = c->replay_adaptive,
                            .ratio = c->replay_ratio,
                            .min = c->replay_ratio_min,
                            .max = c->replay_ratio_max,
                            .probe_every = c->replay_probe_every,
                            .phase = c->replay_phase_clicks,
                            .step = REPLAY_STEP};
    if (e->relearn && (rc = rc_replayctl_create(&ro, &e->rctl, eb, el)))
        return rc;
    if (e->rctl && c->replay_adaptive &&
        !(e->probes = malloc(RC_REPLAYCTL_MAX_HELD * sizeof *e->probes)))
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
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
    pthread_mutex_init(&e->tinst.mu, NULL);
    pthread_cond_init(&e->tinst.cv, NULL);
    rc_hist_init(&e->fresh_hist, rc_hist_freshness_us, rc_hist_freshness_us_n, 1e-6);
    q_init(&e->q_decode);
    q_init(&e->q_train);
    q_init(&e->q_done);
    e->max_ts = INT64_MIN;
    e->replay_ts = INT64_MIN;
    if (loop) { /* the threaded engine only: the eval's engine runs on its caller */
        char why[160];
        int pin = rc_cpus_plan(cfg->background_cpus, &e->bg_cpus, &e->rest_cpus, why, sizeof why);
        e->bg_pin = pin == 1;
        if (pin == 0 && why[0])
            rc_log_warn("engine", "pipeline.background_cpus: background threads not pinned",
                        "why=\"%s\"", why);
    }
    if ((rc = rc__engine_ck_init(e, eb, el)) || (rc = rc__engine_tower_init(e, eb, el)) ||
        (rc = rc__engine_rt_init(e, eb, el)) || (rc = rc__engine_cooc_init(e, eb, el)) ||
        (rc = create_model(e, eb, el)) || (rc = rc__engine_shard_init(e, eb, el)) ||
        (rc = rc__engine_replica_init(e, eb, el)) || (rc = create_batches(e, eb, el)))
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
        if ((rc = rc__engine_ck_start(e, eb, el)))
            goto fail;
    }
    /* after the threads: a threaded engine loads in the background */
    if ((rc = rc__engine_tower_start(e, eb, el)) || (rc = rc__engine_rt_start(e, eb, el)))
        goto fail;
    *out = e;
    return 0;
fail:
    rc_engine_destroy(e);
    return rc;
}

static void free_engine(rc_engine *e)
{
    rc__engine_shard_free(e); /* joins the shard threads (the trainer has stopped) */
    rc__engine_replica_free(e);
    rc__engine_rt_free(e);
    rc__engine_tower_free(e); /* its bundles read the table */
    rc_profile_destroy(e->prof);
    rc__engine_cooc_free(e);
    rc_index_destroy(e->index);
    rc_sampler_destroy(e->sampler);
    rc_session_destroy(e->sess);
    rc_table_destroy(e->table);
    rc_sgns_work_free(&e->work);
    rc_relearn_destroy(e->relearn);
    rc_anchor_destroy(e->anchor);
    rc_replayctl_destroy(e->rctl);
    free(e->probes);
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
    pthread_mutex_destroy(&e->tinst.mu);
    pthread_cond_destroy(&e->tinst.cv);
    rc__engine_ck_free(e);
    free(e);
}

static void on_async_closed(uv_handle_t *h) { free_engine(h->data); }

void rc_engine_destroy(rc_engine *e)
{
    if (!e)
        return;
    rc__engine_rt_stop(e);    /* a retrain (its bundle waiting for the trainer) gives up first */
    rc__engine_tower_stop(e); /* a load waiting for the trainer gives up first */
    if (e->threads) {
        rc_engine_sync(e);
        atomic_store(&e->stop, 1);
        q_wake(&e->q_decode);
        pthread_join(e->decoder, NULL);
        atomic_store(&e->stop, 2);
        q_wake(&e->q_train);
        pthread_join(e->trainer, NULL);
        rc__engine_tinst_stop(e);
        rc__engine_ck_stop(e);
        on_async(&e->async); /* report what is left */
    }
    if (e->loop && uv_is_active((uv_handle_t *)&e->async)) {
        uv_close((uv_handle_t *)&e->async, on_async_closed);
        return;
    }
    free_engine(e);
}

/* ---- queries ---- */

int rc__engine_resolve_filter(rc_engine *e, const rc_recall_req *r, rc_index_filter *f,
                              uint32_t *cates, int *empty)
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

uint32_t rc__engine_popular(rc_engine *e, const rc_index_filter *f, const uint32_t *ex,
                            uint32_t nex, uint32_t k, rc_hit *out)
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
int64_t rc__engine_user_city(rc_engine *e, const uint32_t *rows, const float *w, uint32_t n)
{
    return rc_userq_city(e->table, rows, w, n);
}

/* t0: when the request's query stage began (0 = no timing). */
/* rows/w/nclicks: the query's clicks; excl/nexcl: every recent click of the
 * user, left out of the answer (the query may use only the newest few). */
static int recall_clicks(rc_engine *e, const rc_recall_req *req, const rc_index_filter *f,
                         const uint32_t *rows, const float *w, uint32_t nclicks,
                         const uint32_t *excl, uint32_t nexcl, rc_hit *out, uint32_t *n,
                         uint64_t t0)
{
    rc_mc_quota plan[64];
    uint32_t nplan = 0;
    rc_recall_timing *tm = req->timing;
    if (!nclicks)
        return RC_ENOENT;
    if (req->multi_category) {
        if (tm)
            tm->query_ns += rc_now_ns() - t0;
        rc_mc_opts mo = {.max_cats = e->cfg.mc_max_categories,
                         .min_quota = e->cfg.mc_min_quota,
                         .serial = !e->cfg.mc_parallel};
        int rc = rc_recall_multi_category_timed(e->table, e->index, rows, w, nclicks, req->k,
                                                cfg_f32(&e->cfg.overfetch), f, excl, nexcl, &mo,
                                                out, n, req->quotas ? req->quotas : plan,
                                                req->nquotas ? req->nquotas : &nplan, tm);
        return rc;
    }
    float q[1024]; /* model.dim <= 1024 (config.c): no allocation per request */
    if (e->cfg.dim > RC_ARRAY_LEN(q))
        return RC_EINVAL;
    int rc = rc_recall_query_vector(e->table, rows, w, nclicks, q);
    if (tm)
        tm->query_ns += rc_now_ns() - t0;
    if (rc == 0 && req->exact)
        rc = rc_recall_exact(e->table, q, req->k, cfg_f32(&e->cfg.overfetch), f, excl, nexcl, out,
                             n);
    else if (rc == 0)
        rc = rc_recall_search_timed(e->table, e->index, q, req->k, cfg_f32(&e->cfg.overfetch), f,
                                    excl, nexcl, out, n, tm);
    return rc;
}

/* The user's query (userq.h, the evaluator's definition too): the clicks
 * kept, their weights, and the user-city scope into f. excl[] gets every
 * recent click the session store holds (up to RC_USERQ_MAX), *nexcl their
 * count: what the answer leaves out, whatever the query's window. */
static uint32_t user_query(rc_engine *e, const rc_recall_req *req, rc_click *clicks, uint32_t *rows,
                           int64_t *ts, float *w, rc_index_filter *f, uint32_t *excl,
                           uint32_t *nexcl)
{
    rc_userq_opts uo = {.window = cfg_u32(&e->cfg.recall_window),
                        .half_life_ms = req->half_life_ms ? req->half_life_ms : e->cfg.half_life_ms,
                        .past_session_weight = e->cfg.past_session_weight,
                        .gap_ms = e->cfg.gap_ms};
    uint32_t n = 0;
    if (rc_session_recent(e->sess, req->user, req->ulen, clicks, RC_USERQ_MAX, &n))
        n = 0;
    for (uint32_t i = 0; i < n; i++) {
        rows[i] = excl[i] = clicks[i].row;
        ts[i] = clicks[i].ts_ms;
    }
    *nexcl = n;
    n = rc_userq_weigh(&uo, rows, ts, n, INT64_MIN, w);
    if (!req->city && !req->global && e->cfg.recall_user_city && n)
        f->city = rc_userq_city(e->table, rows, w, n);
    return n;
}

int rc_engine_recall(rc_engine *e, const rc_recall_req *req, rc_hit *out, uint32_t *n,
                     int *fallback)
{
    rc_click clicks[256];
    uint32_t rows[256], excl[256], nclicks = 0, nexcl = 0, cates[64];
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
        return rc__engine_tower_recall(e, req, out, n, fallback);
    uint64_t t0 = req->timing ? rc_now_ns() : 0;
    rc__engine_resolve_filter(e, req, &f, cates, &empty);
    if (empty)
        return 0;
    nclicks = user_query(e, req, clicks, rows, ts, w, &f, excl, &nexcl);
    int rc = req->itemknn || req->fused
                 ? rc__engine_cooc_recall(e, req, &f, rows, w, nclicks, excl, nexcl, out, n, t0)
                 : recall_clicks(e, req, &f, rows, w, nclicks, excl, nexcl, out, n, t0);
    if (rc == RC_ENOENT || (rc == 0 && *n == 0)) {
        uint64_t t1 = req->timing ? rc_now_ns() : 0;
        *fallback = 1;
        *n = rc__engine_popular(e, &f, excl, nexcl, req->k, out);
        if (req->timing)
            req->timing->fallback_ns += rc_now_ns() - t1;
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
        rc = rc_recall_search_cos(e->table, e->index, q, k, cfg_f32(&e->cfg.overfetch), NULL, &row,
                                  1, out, n);
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
    const double q[2] = {0.5, 0.99};
    uint32_t pq[2];
    rc_quantiles_u32(tmp, *n, q, 2, pq);
    *p50 = pq[0] / 1000.0;
    *p99 = pq[1] / 1000.0;
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
    rc_buf_printf(o,
                  "\"events\":{\"consumed\":%llu,\"applied\":%llu,\"invalid\":%llu,"
                  "\"invalid_by_reason\":{",
                  (unsigned long long)atomic_load(&e->consumed),
                  (unsigned long long)atomic_load(&e->applied), (unsigned long long)invalid);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++)
        rc_buf_printf(o, "%s\"%s\":%llu", r > 1 ? "," : "",
                      rc_event_reason_name((enum rc_event_reason)r),
                      (unsigned long long)atomic_load(&e->invalid[r]));
    rc_buf_printf(o,
                  "},\"ignored\":%llu,\"duplicates\":%llu,\"reordered\":%llu,\"late\":%llu,"
                  "\"rejected_capacity\":%llu,\"lost\":%llu,\"max_ts\":%lld},",
                  (unsigned long long)atomic_load(&e->ignored), (unsigned long long)ss.duplicates,
                  (unsigned long long)ss.reordered, (unsigned long long)ss.late,
                  (unsigned long long)atomic_load(&e->rejected_capacity),
                  (unsigned long long)atomic_load(&e->lost),
                  (long long)atomic_load(&e->max_ts_pub));
    rc_buf_printf(o, "\"items\":%u,\"cities\":%u,\"categories\":%u,", rc_table_size(e->table),
                  rc_table_ncities(e->table), rc_table_ncates(e->table));
    rc_buf_printf(o,
                  "\"users\":{\"active\":%llu,\"evicted_lru\":%llu,\"expired_ttl\":%llu,"
                  "\"sessions\":%llu,\"spill_failures\":%llu},",
                  (unsigned long long)ss.users, (unsigned long long)ss.evicted_lru,
                  (unsigned long long)ss.expired_ttl, (unsigned long long)ss.sessions,
                  (unsigned long long)ss.spill_failures);
    rc_buf_printf(o,
                  "\"index\":{\"size\":%llu,\"partitions\":%llu,\"ivf_partitions\":%llu,"
                  "\"pending\":%llu,\"staleness_ms\":%.3f,\"added\":%llu,\"reindexed\":%llu,"
                  "\"skipped_small_drift\":%llu,\"retrains\":%llu,\"retrains_fit\":%llu,"
                  "\"fit\":%.3f,\"overflow_rows\":%llu,\"partition_errors\":%llu,"
                  "\"write_lock_p50_ms\":%.3f,\"write_lock_p99_ms\":%.3f,"
                  "\"write_lock_max_ms\":%.3f},",
                  (unsigned long long)is.size, (unsigned long long)is.partitions,
                  (unsigned long long)is.ivf_partitions, (unsigned long long)is.pending,
                  is.staleness_ms, (unsigned long long)is.added, (unsigned long long)is.reindexed,
                  (unsigned long long)is.skipped_small_drift, (unsigned long long)is.retrains,
                  (unsigned long long)is.retrains_fit, is.fit_worst,
                  (unsigned long long)is.overflow_rows, (unsigned long long)is.partition_errors,
                  is.write_hold_p50_us / 1000.0, is.write_hold_p99_us / 1000.0,
                  is.write_hold_max_us / 1000.0);
    rc_relearn_stats rs;
    rc_relearn_stats_get(e->relearn, &rs);
    rc_replayctl_stats cs;
    rc_replayctl_stats_get(e->rctl, &cs);
    rc_buf_printf(
        o,
        "\"training\":{\"mode\":\"%s\",\"pairs\":%llu,\"loss\":%.4f,"
        "\"sampler_rebuilds\":%llu,\"hard_negatives\":%llu,\"kernel\":\"%s\","
        "\"replay\":{\"capacity\":%llu,\"fill\":%llu,\"replayed\":%llu,"
        "\"skipped\":%llu,\"yields\":%llu,\"forgotten\":%llu,\"owed_by_time\":%llu,"
        "\"pending\":%llu,\"bytes\":%zu,"
        "\"adaptive\":%s,\"ratio\":%.3f,\"phase_ratio\":%.3f,\"probes\":%llu,"
        "\"decisions\":%llu,\"raises\":%llu,\"lowers\":%llu}",
        e->cfg.cbow ? "cbow" : "skipgram", (unsigned long long)atomic_load(&e->pairs),
        atomic_load(&e->loss_avg), (unsigned long long)sa.rebuilds,
        (unsigned long long)sa.hard_draws, rc_vec_impl(), (unsigned long long)rs.capacity,
        (unsigned long long)rs.fill, (unsigned long long)rs.replayed,
        (unsigned long long)rs.skipped, (unsigned long long)rs.yields,
        (unsigned long long)rs.forgotten,
        (unsigned long long)atomic_load_explicit(&e->replay_time_pub, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&e->replay_pending, memory_order_relaxed),
        rs.bytes, cs.adaptive ? "true" : "false", cs.ratio, cs.phase_ratio,
        (unsigned long long)cs.probes, (unsigned long long)cs.decisions,
        (unsigned long long)cs.raises, (unsigned long long)cs.lowers);
    uint64_t tinst_n, tinst_rows;
    rc_engine_install_table_stats(e, &tinst_n, &tinst_rows);
    rc_buf_printf(o, ",\"cpu_ms\":%.1f,\"installs\":%llu,\"installed_rows\":%llu,",
                  (double)atomic_load_explicit(&e->train_cpu_ns, memory_order_relaxed) / 1e6,
                  (unsigned long long)tinst_n, (unsigned long long)tinst_rows);
    rc__engine_shard_stats_json(e, o);
    rc_buf_puts(o, "},");
    rc_buf_printf(o,
                  "\"freshness_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"samples\":%u,"
                  "\"new_item_p50\":%.3f,\"new_item_p99\":%.3f},",
                  p50, p99, nf, is.fresh_p50_us / 1000.0, is.fresh_p99_us / 1000.0);
    size_t heap = 0, heap_free = 0;
    rc_heap_bytes(&heap, &heap_free);
    rc_buf_printf(o,
                  "\"memory\":{\"rss_bytes\":%zu,\"table_bytes\":%zu,\"session_bytes\":%zu,"
                  "\"index_bytes\":%zu,\"snapshot_bytes\":%zu,\"heap_bytes\":%zu,"
                  "\"heap_free_bytes\":%zu,\"trims\":%llu,\"trim_last_us\":%llu,"
                  "\"anchor_bytes\":%zu,\"sampler_bytes\":%llu}",
                  rc_rss_bytes(), rc_table_bytes(e->table), ss.bytes, is.bytes,
                  rc_checkpoint_bytes(e->ck->snap), heap, heap_free,
                  (unsigned long long)atomic_load_explicit(&e->trims, memory_order_relaxed),
                  (unsigned long long)atomic_load_explicit(&e->trim_last_us, memory_order_relaxed),
                  rc_anchor_bytes(e->anchor), (unsigned long long)sa.bytes);
    rc_buf_puts(o, ",");
    rc__engine_ck_stats_json(e, o);
    rc_buf_puts(o, ",");
    rc__engine_tower_stats_json(e, o);
    rc_buf_puts(o, ",");
    rc__engine_cooc_stats_json(e, o);
    rc__engine_replica_stats_json(e, o);
}

void rc_engine_session_stats(rc_engine *e, rc_session_stats *st)
{
    rc_session_stats_get(e->sess, st);
}

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

void rc_engine_reload(rc_engine *e, const rc_config *c)
{
    __atomic_store_n(&e->cfg.tower_refresh_rows, c->tower_refresh_rows, __ATOMIC_RELAXED);
    __atomic_store_n(&e->cfg.tower_recompute, c->tower_recompute, __ATOMIC_RELAXED);
    rc__engine_tower_set_conf_path(e, c->tower_model);
    __atomic_store_n(&e->cfg.k_default, c->k_default, __ATOMIC_RELAXED);
    __atomic_store_n(&e->cfg.k_max, c->k_max, __ATOMIC_RELAXED);
    __atomic_store_n(&e->cfg.recall_window, c->recall_window, __ATOMIC_RELAXED);
    float of = c->overfetch;
    __atomic_store(&e->cfg.overfetch, &of, __ATOMIC_RELAXED);
    rc_table_set_pop_weight(e->table, c->popularity_weight);
    __atomic_store_n(&e->cfg.recall_mode, c->recall_mode, __ATOMIC_RELAXED);
    atomic_store(&e->ck->keep, c->ckpt_keep);
    atomic_store(&e->ck->max_mb_s, c->ckpt_max_mb_s);
}

int rc_engine_recall_mode(const rc_engine *e)
{
    int m = __atomic_load_n(&e->cfg.recall_mode, __ATOMIC_RELAXED);
    /* the default fused mode with the channel off (cooc.max_bytes 0) is the embedding alone */
    return m == RC_RECALL_MODE_FUSED && !e->cooc ? RC_RECALL_MODE_AVG : m;
}

void rc_engine_k_limits(const rc_engine *e, uint32_t *k_default, uint32_t *k_max)
{
    *k_default = __atomic_load_n(&e->cfg.k_default, __ATOMIC_RELAXED);
    *k_max = __atomic_load_n(&e->cfg.k_max, __ATOMIC_RELAXED);
}
