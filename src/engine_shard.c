/* engine_shard — the skip-gram updates of a batch on model.trainer_threads
 * threads (see "parallel SGNS" in engine_int.h for the three phases).
 *
 * Threads own cities for the length of one batch: the batch's examples are
 * grouped by their row's city, the cities sorted largest first, and each
 * thread claims the next unclaimed city (an atomic counter) until none is
 * left, so the work balances itself whatever the cities' sizes and however
 * the machine schedules the threads. An example's negatives are drawn from
 * its row's city (or the global distribution when the city is small); its
 * context rows may belong to any city, and are then written by two threads
 * without locks (Hogwild). Examples of one row stay in one thread, in batch
 * order.
 *
 * Helpers are started by the thread that first trains a batch wide enough
 * (the trainer thread, or an offline engine's caller), so they inherit its
 * nice value, and are named rc-shardN. They sleep on condition variables
 * between batches. A batch of fewer than SHARD_MIN_EXAMPLES events takes the
 * single writer's path, and one with fewer examples than that (duplicates,
 * first clicks of sessions) is trained by the trainer alone after phase 1:
 * waking the helpers would cost more than it saves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_int.h"
#include "recalld/log.h"

/* Below this many examples a batch is not fanned out: a wake-up and a join
 * cost tens of microseconds on a loaded machine, an example about 3 us. */
#define SHARD_MIN_EXAMPLES 64u
#define SHARD_MAX          64u
#define COOC_PUBLISH       32u /* notes handed to shard 1's thread at a time */

struct shard_ex {
    uint32_t row, nctx, ctx_off, pairs;
    float lr;
    uint64_t total;
};

struct shard {
    rc_engine *e;
    uint32_t id;
    pthread_t th;
    int started;
    rc_rng rng;
    rc_sgns_work work;
    rc_sgns_opts sg;
    rc_sampler_tally tally;
    uint64_t pairs0;                          /* work.pairs at the start of the batch */
    double loss0;                             /* work.loss_sum at the start of the batch */
    _Atomic uint64_t examples, pairs, cpu_ns; /* for stats */
};

struct cooc_ex {
    uint32_t row, nctx, ctx_off;
    int64_t ts_ms;
};

struct rc__engine_shards {
    uint32_t n;
    struct shard *sh;
    /* the batch's clicks for the co-occurrence channel (trainer) */
    struct cooc_ex *co;
    uint32_t nco, cocap;
    uint32_t *coctx;
    size_t ncoctx, coctxcap;
    uint32_t coctx_max; /* context rows a note may carry (reserved per event) */
    /* the notes on shard 1's thread while the trainer is in phase 1 (co_async):
     * notes [0, co_pub) are published, [0, co_done) done, under mu */
    int co_async, co_open, co_busy;
    uint32_t co_pub, co_done;
    uint64_t co_gen;
    pthread_cond_t co_cv;
    uint64_t co_ns; /* CPU of the notes (stats) */
    /* the batch's examples (trainer) */
    struct shard_ex *ex;
    uint32_t nex, excap;
    uint32_t *ctx;
    size_t nctx, ctxcap;
    uint32_t *order; /* example ids by city, city j's at cstart[j]..cstart[j+1] */
    uint32_t ordercap;
    uint32_t *cstart, nclaim; /* nclaim cities to claim, largest first */
    _Atomic uint32_t next;    /* the next city to claim */
    /* per city id: examples in this batch, where its examples go (trainer) */
    uint32_t *city_n, *cities, *city_pos;
    uint32_t city_cap;
    /* fan-out */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t gen;
    uint32_t running;
    int stop, helpers;
    _Atomic uint64_t fanouts, inline_batches;
};

static int city_room(struct rc__engine_shards *S, uint32_t ncity);

uint64_t rc__engine_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint32_t rc__engine_shard_count(const rc_config *c)
{
    uint32_t n = c->trainer_threads;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (uint32_t)cpus : 1;
    }
    return RC_MIN(n, SHARD_MAX);
}

int rc__engine_shard_init(rc_engine *e, char *eb, size_t el)
{
    uint32_t n = rc__engine_shard_count(&e->cfg);
    e->sh = NULL;
    if (n <= 1)
        return 0;
    struct rc__engine_shards *S = calloc(1, sizeof *S);
    if (!S || !(S->sh = calloc(n, sizeof *S->sh))) {
        free(S);
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory for trainer shards");
    }
    S->n = n;
    pthread_mutex_init(&S->mu, NULL);
    pthread_cond_init(&S->go, NULL);
    pthread_cond_init(&S->done, NULL);
    pthread_cond_init(&S->co_cv, NULL);
    S->coctx_max = RC_MIN(RC_MAX(e->cfg.window, e->cfg.cooc_window), CTX_MAX);
    e->sh = S;
    if (city_room(S, 64))
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory for trainer shards");
    for (uint32_t k = 0; k < n; k++) {
        struct shard *sh = &S->sh[k];
        sh->e = e;
        sh->id = k;
        /* Own streams: shard k's generator is the single writer's seed moved
         * k + 1 streams on (rc_rng_seed mixes the seed). */
        rc_rng_seed(&sh->rng, e->cfg.seed + 0x9e3779b97f4a7c15ull * (k + 1));
        if (rc_sgns_work_init(&sh->work, e->cfg.dim))
            return rc_err(eb, el, RC_ENOMEM, "engine: out of memory for trainer shards");
    }
    return 0;
}

static void shard_stop(struct rc__engine_shards *S)
{
    pthread_mutex_lock(&S->mu);
    S->stop = 1;
    pthread_cond_broadcast(&S->go);
    pthread_cond_broadcast(&S->co_cv);
    pthread_mutex_unlock(&S->mu);
    for (uint32_t k = 1; k < S->n; k++)
        if (S->sh[k].started)
            pthread_join(S->sh[k].th, NULL);
}

void rc__engine_shard_free(rc_engine *e)
{
    struct rc__engine_shards *S = e->sh;
    if (!S)
        return;
    shard_stop(S);
    for (uint32_t k = 0; k < S->n; k++)
        rc_sgns_work_free(&S->sh[k].work);
    pthread_mutex_destroy(&S->mu);
    pthread_cond_destroy(&S->go);
    pthread_cond_destroy(&S->done);
    pthread_cond_destroy(&S->co_cv);
    free(S->sh);
    free(S->ex);
    free(S->ctx);
    free(S->co);
    free(S->coctx);
    free(S->order);
    free(S->city_n);
    free(S->cities);
    free(S->city_pos);
    free(S->cstart);
    free(S);
    e->sh = NULL;
}

static int grow(void **p, uint32_t *cap, size_t need, size_t elem);
static int shard_start(rc_engine *e);
static void cooc_consume(rc_engine *e, struct rc__engine_shards *S);

int rc__engine_shard_begin(rc_engine *e, uint32_t nevents)
{
    struct rc__engine_shards *S = e->sh;
    if (!S || nevents < SHARD_MIN_EXAMPLES)
        return 0;
    /* The co-occurrence notes go to shard 1's thread as they come: room for
     * the batch's worst case first, so that the arrays do not move under it. */
    uint32_t ccap = (uint32_t)RC_MIN(S->coctxcap, (size_t)UINT32_MAX);
    S->co_async =
        e->cooc && shard_start(e) == 0 &&
        !grow((void **)&S->co, &S->cocap, nevents, sizeof *S->co) &&
        !grow((void **)&S->coctx, &ccap, (size_t)nevents * S->coctx_max, sizeof *S->coctx);
    S->coctxcap = RC_MAX(S->coctxcap, ccap);
    if (S->co_async) {
        pthread_mutex_lock(&S->mu);
        S->co_open = S->co_busy = 1;
        S->co_pub = S->co_done = 0;
        S->co_gen++;
        pthread_cond_broadcast(&S->go);
        pthread_mutex_unlock(&S->mu);
    }
    return 1;
}

/* Trains shard k's examples of the batch (any shard thread). */
static void shard_train(struct rc__engine_shards *S, uint32_t k)
{
    struct shard *sh = &S->sh[k];
    rc_engine *e = sh->e;
    uint64_t pairs = 0, examples = 0, c0 = rc__engine_thread_cpu_ns();
    for (;;) { /* the next unclaimed city, largest first */
        uint32_t j = atomic_fetch_add_explicit(&S->next, 1, memory_order_relaxed);
        if (j >= S->nclaim)
            break;
        for (uint32_t i = S->cstart[j]; i < S->cstart[j + 1]; i++) {
            struct shard_ex *x = &S->ex[S->order[i]];
            x->pairs = rc_sgns_click(e->table, e->sampler, &sh->rng, &sh->sg, x->lr, x->row,
                                     S->ctx + x->ctx_off, x->nctx, x->total, &sh->work);
            pairs += x->pairs;
        }
        examples += S->cstart[j + 1] - S->cstart[j];
    }
    atomic_fetch_add_explicit(&sh->examples, examples, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->pairs, pairs, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->cpu_ns, rc__engine_thread_cpu_ns() - c0, memory_order_relaxed);
}

static void *shard_main(void *arg)
{
    struct shard *sh = arg;
    struct rc__engine_shards *S = sh->e->sh;
    char name[16];
    /* Named only: started by the trainer, it has the trainer's nice value. */
    snprintf(name, sizeof name, "rc-shard%u", sh->id);
    pthread_setname_np(pthread_self(), name);
    uint64_t seen = 0, seen_co = 0;
    pthread_mutex_lock(&S->mu);
    for (;;) {
        while (S->gen == seen && (sh->id != 1 || S->co_gen == seen_co) && !S->stop)
            pthread_cond_wait(&S->go, &S->mu);
        if (S->stop)
            break;
        if (sh->id == 1 && S->co_gen != seen_co) { /* first the notes, as they come */
            seen_co = S->co_gen;
            cooc_consume(sh->e, S);
            continue;
        }
        seen = S->gen;
        pthread_mutex_unlock(&S->mu);
        shard_train(S, sh->id);
        pthread_mutex_lock(&S->mu);
        if (--S->running == 0)
            pthread_cond_signal(&S->done);
    }
    pthread_mutex_unlock(&S->mu);
    return NULL;
}

/* Starts the helpers once; 0 when they run (a failure is logged, and the
 * trainer then trains every batch alone). */
static int shard_start(rc_engine *e)
{
    struct rc__engine_shards *S = e->sh;
    if (S->helpers)
        return S->helpers > 0 ? 0 : -1;
    S->helpers = 1;
    for (uint32_t k = 1; k < S->n; k++) {
        if (pthread_create(&S->sh[k].th, NULL, shard_main, &S->sh[k])) {
            rc_log_error("engine", "cannot start trainer shard threads: one thread trains",
                         "started=%u wanted=%u", k - 1, S->n - 1);
            shard_stop(S);
            S->helpers = -1;
            return -1;
        }
        S->sh[k].started = 1;
    }
    return 0;
}

static int grow(void **p, uint32_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    if (n > UINT32_MAX)
        return RC_ENOMEM;
    void *q = realloc(*p, n * elem);
    if (!q)
        return RC_ENOMEM;
    *p = q;
    *cap = (uint32_t)n;
    return 0;
}

void rc__engine_shard_defer(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx,
                            float lr, uint64_t total)
{
    struct rc__engine_shards *S = e->sh;
    uint32_t ccap = (uint32_t)RC_MIN(S->ctxcap, (size_t)UINT32_MAX), ocap = S->ordercap;
    if (grow((void **)&S->ex, &S->excap, (size_t)S->nex + 1, sizeof *S->ex) ||
        grow((void **)&S->order, &ocap, S->excap, sizeof *S->order) ||
        grow((void **)&S->ctx, &ccap, S->nctx + nctx, sizeof *S->ctx)) {
        S->ordercap = RC_MIN(ocap, S->ordercap);
        /* Out of memory: trained at once, as the single writer would. */
        uint32_t p = rc_sgns_click(e->table, e->sampler, &e->rng, &e->sg, lr, row, ctx, nctx, total,
                                   &e->work);
        atomic_fetch_add(&e->pairs, p);
        return;
    }
    S->ordercap = ocap;
    S->ctxcap = ccap;
    memcpy(S->ctx + S->nctx, ctx, nctx * sizeof *ctx);
    S->ex[S->nex++] = (struct shard_ex){
        .row = row, .nctx = nctx, .ctx_off = (uint32_t)S->nctx, .lr = lr, .total = total};
    S->nctx += nctx;
}

void rc__engine_shard_cooc(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx,
                           int64_t ts_ms)
{
    struct rc__engine_shards *S = e->sh;
    uint32_t ccap = (uint32_t)RC_MIN(S->coctxcap, (size_t)UINT32_MAX);
    if (S->co_async) { /* reserved by rc__engine_shard_begin */
        nctx = RC_MIN(nctx, S->coctx_max);
        memcpy(S->coctx + S->ncoctx, ctx, nctx * sizeof *ctx);
        S->co[S->nco++] = (struct cooc_ex){
            .row = row, .nctx = nctx, .ctx_off = (uint32_t)S->ncoctx, .ts_ms = ts_ms};
        S->ncoctx += nctx;
        if (S->nco % COOC_PUBLISH == 0) {
            pthread_mutex_lock(&S->mu);
            S->co_pub = S->nco;
            pthread_cond_signal(&S->co_cv);
            pthread_mutex_unlock(&S->mu);
        }
        return;
    }
    if (grow((void **)&S->co, &S->cocap, (size_t)S->nco + 1, sizeof *S->co) ||
        grow((void **)&S->coctx, &ccap, S->ncoctx + nctx, sizeof *S->coctx)) {
        rc__engine_cooc_note(e, row, ctx, nctx, ts_ms); /* out of memory: now */
        return;
    }
    S->coctxcap = ccap;
    memcpy(S->coctx + S->ncoctx, ctx, nctx * sizeof *ctx);
    S->co[S->nco++] =
        (struct cooc_ex){.row = row, .nctx = nctx, .ctx_off = (uint32_t)S->ncoctx, .ts_ms = ts_ms};
    S->ncoctx += nctx;
}

/* Shard 1's thread, mu held: notes the batch's co-occurrences as the
 * trainer publishes them, until it closes the batch's list. */
static void cooc_consume(rc_engine *e, struct rc__engine_shards *S)
{
    uint64_t c0 = rc__engine_thread_cpu_ns();
    for (;;) {
        while (S->co_done == S->co_pub && S->co_open && !S->stop)
            pthread_cond_wait(&S->co_cv, &S->mu);
        if (S->co_done == S->co_pub)
            break;
        uint32_t a = S->co_done, b = S->co_pub;
        pthread_mutex_unlock(&S->mu);
        for (uint32_t i = a; i < b; i++)
            rc__engine_cooc_note(e, S->co[i].row, S->coctx + S->co[i].ctx_off, S->co[i].nctx,
                                 S->co[i].ts_ms);
        pthread_mutex_lock(&S->mu);
        S->co_done = b;
    }
    __atomic_store_n(&S->co_ns, S->co_ns + (rc__engine_thread_cpu_ns() - c0), __ATOMIC_RELAXED);
    S->co_busy = 0;
    pthread_cond_signal(&S->done);
}

/* Trainer, end of phase 1: no more notes. */
static void cooc_close(struct rc__engine_shards *S)
{
    pthread_mutex_lock(&S->mu);
    S->co_pub = S->nco;
    S->co_open = 0;
    pthread_cond_signal(&S->co_cv);
    pthread_mutex_unlock(&S->mu);
}

/* The batch's co-occurrence notes, in order (the trainer thread). */
static void shard_cooc(rc_engine *e, struct rc__engine_shards *S)
{
    if (!S->nco)
        return;
    uint64_t c0 = rc__engine_thread_cpu_ns();
    for (uint32_t i = 0; i < S->nco; i++)
        rc__engine_cooc_note(e, S->co[i].row, S->coctx + S->co[i].ctx_off, S->co[i].nctx,
                             S->co[i].ts_ms);
    __atomic_store_n(&S->co_ns, S->co_ns + (rc__engine_thread_cpu_ns() - c0),
                     __ATOMIC_RELAXED); /* stats read it */
    S->nco = 0;
    S->ncoctx = 0;
}

/* Per-city arrays for ncity cities, city_n zero beyond what was there. */
static int city_room(struct rc__engine_shards *S, uint32_t ncity)
{
    if (ncity < S->city_cap)
        return 0;
    uint32_t n = S->city_cap ? S->city_cap : 64;
    while (n <= ncity)
        n *= 2;
    uint32_t *cn = realloc(S->city_n, (size_t)n * sizeof *cn);
    if (!cn)
        return RC_ENOMEM;
    S->city_n = cn;
    memset(cn + S->city_cap, 0, (size_t)(n - S->city_cap) * sizeof *cn);
    uint32_t *cs = realloc(S->cities, (size_t)n * sizeof *cs);
    if (!cs)
        return RC_ENOMEM;
    S->cities = cs;
    uint32_t *cp = realloc(S->city_pos, (size_t)n * sizeof *cp);
    if (!cp)
        return RC_ENOMEM;
    S->city_pos = cp;
    uint32_t *st = realloc(S->cstart, ((size_t)n + 1) * sizeof *st);
    if (!st)
        return RC_ENOMEM;
    S->cstart = st;
    S->city_cap = n;
    return 0;
}

static int cmp_city_desc(const void *a, const void *b, void *arg)
{
    const uint32_t *n = arg, x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (n[x] != n[y])
        return n[x] > n[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Every example in shard 0, in batch order. */
static void shard_all_in_one(struct rc__engine_shards *S)
{
    for (uint32_t i = 0; i < S->nex; i++)
        S->order[i] = i;
    S->cstart[0] = 0;
    S->cstart[1] = S->nex;
    S->nclaim = 1;
    atomic_store_explicit(&S->next, 0, memory_order_relaxed);
}

/* Deals the batch's cities to the shards and groups the examples by shard
 * (order, start), each shard's in batch order; 0, or RC_ENOMEM. left:
 * co-occurrence notes still to do. */
static int shard_split(rc_engine *e)
{
    struct rc__engine_shards *S = e->sh;
    uint32_t ncity = rc_table_ncities(e->table), nc = 0;
    if (city_room(S, ncity))
        return RC_ENOMEM;
    for (uint32_t i = 0; i < S->nex; i++) {
        uint32_t c = rc_table_city(e->table, S->ex[i].row);
        if (c >= ncity) { /* cannot happen (the city is named before its rows) */
            for (uint32_t j = 0; j < nc; j++)
                S->city_n[S->cities[j]] = 0;
            return RC_EINVAL;
        }
        if (S->city_n[c]++ == 0)
            S->cities[nc++] = c;
    }
    qsort_r(S->cities, nc, sizeof *S->cities, cmp_city_desc, S->city_n);
    uint32_t at = 0;
    for (uint32_t j = 0; j < nc; j++) { /* city j's examples at cstart[j] */
        uint32_t c = S->cities[j];
        S->cstart[j] = at;
        S->city_pos[c] = at;
        at += S->city_n[c];
        S->city_n[c] = 0;
    }
    S->cstart[nc] = at;
    for (uint32_t i = 0; i < S->nex; i++) /* in batch order within a city */
        S->order[S->city_pos[rc_table_city(e->table, S->ex[i].row)]++] = i;
    S->nclaim = nc;
    atomic_store_explicit(&S->next, 0, memory_order_relaxed);
    return 0;
}

/* Trainer: waits until shard 1's thread has done the batch's notes. */
static void cooc_wait(struct rc__engine_shards *S)
{
    pthread_mutex_lock(&S->mu);
    while (S->co_busy)
        pthread_cond_wait(&S->done, &S->mu);
    pthread_mutex_unlock(&S->mu);
    S->nco = 0;
    S->ncoctx = 0;
    S->co_async = 0;
}

void rc__engine_shard_run(rc_engine *e,
                          void (*done)(rc_engine *, uint32_t, const uint32_t *, uint32_t, uint32_t),
                          uint64_t *pairs, double *loss)
{
    struct rc__engine_shards *S = e->sh;
    int async = S->co_async;
    if (async)
        cooc_close(S);
    *pairs = 0;
    *loss = 0;
    if (!S->nex) {
        if (async)
            cooc_wait(S);
        else
            shard_cooc(e, S);
        return;
    }
    for (uint32_t k = 0; k < S->n; k++) {
        struct shard *sh = &S->sh[k];
        sh->sg = e->sg;
        sh->sg.shared_sampler = 1; /* the sampler is only read until the barrier */
        sh->sg.tally = &sh->tally;
        sh->pairs0 = sh->work.pairs;
        sh->loss0 = sh->work.loss_sum;
    }
    int wide = S->nex >= SHARD_MIN_EXAMPLES && shard_start(e) == 0 && shard_split(e) == 0;
    if (!wide)
        shard_all_in_one(S);
    if (wide) {
        pthread_mutex_lock(&S->mu);
        S->running = S->n - 1;
        S->gen++;
        pthread_cond_broadcast(&S->go);
        pthread_mutex_unlock(&S->mu);
        if (!async)
            shard_cooc(e, S);
        shard_train(S, 0);
        pthread_mutex_lock(&S->mu);
        while (S->running)
            pthread_cond_wait(&S->done, &S->mu);
        pthread_mutex_unlock(&S->mu);
        atomic_fetch_add_explicit(&S->fanouts, 1, memory_order_relaxed);
    } else {
        if (!async)
            shard_cooc(e, S);
        shard_train(S, 0);
        atomic_fetch_add_explicit(&S->inline_batches, 1, memory_order_relaxed);
    }
    if (async)
        cooc_wait(S);
    /* phase 3: back to one thread */
    for (uint32_t k = 0; k < S->n; k++) {
        struct shard *sh = &S->sh[k];
        *pairs += sh->work.pairs - sh->pairs0;
        *loss += sh->work.loss_sum - sh->loss0;
        rc_sampler_add_tally(e->sampler, &sh->tally);
        memset(&sh->tally, 0, sizeof sh->tally);
    }
    for (uint32_t i = 0; i < S->nex; i++) {
        const struct shard_ex *x = &S->ex[i];
        done(e, x->row, S->ctx + x->ctx_off, x->nctx, x->pairs);
    }
    S->nex = 0;
    S->nctx = 0;
}

void rc__engine_shard_stats_json(rc_engine *e, rc_buf *o)
{
    struct rc__engine_shards *S = e->sh;
    if (!S) {
        rc_buf_puts(o, "\"threads\":1,\"shards\":[]");
        return;
    }
    rc_buf_printf(
        o,
        "\"threads\":%u,\"cooc_cpu_ms\":%.1f,\"fanouts\":%llu,\"inline_batches\":%llu,\"shards\":[",
        S->n, (double)__atomic_load_n(&S->co_ns, __ATOMIC_RELAXED) / 1e6,
        (unsigned long long)atomic_load(&S->fanouts),
        (unsigned long long)atomic_load(&S->inline_batches));
    for (uint32_t k = 0; k < S->n; k++)
        rc_buf_printf(o, "%s{\"examples\":%llu,\"pairs\":%llu,\"cpu_ms\":%.1f}", k ? "," : "",
                      (unsigned long long)atomic_load(&S->sh[k].examples),
                      (unsigned long long)atomic_load(&S->sh[k].pairs),
                      (double)atomic_load(&S->sh[k].cpu_ns) / 1e6);
    rc_buf_puts(o, "]");
}
