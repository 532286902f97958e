/* tower_train — training of the two-tower model (tower.h).
 *
 * Scheme: synchronous data parallelism. Every mini-batch is cut into one
 * shard per thread; each thread builds its shard's inputs, runs the forward
 * and backward passes (sgemm over the shard) into its own gradient, then,
 * after a barrier, thread t sums the dense gradients of all threads over its
 * slice of the dense parameters and applies the optimiser there, while thread
 * 0 merges the sparse embedding rows of all threads and updates them. A
 * second barrier ends the step. The result depends only on the seed and the
 * thread count (sums run in thread order): threads = 1 with a fixed seed is
 * bit-identical run to run.
 *
 * Negatives: EASY ones are shared by the mini-batch, drawn by count^power
 * over the trained items (those that are positives of some example) with
 * logQ correction log(n_easy * p_j); every thread draws the same ones from a
 * generator seeded by the batch number. HARD ones are per example: uniform
 * over the trained items of the positive's city with another category,
 * correction log(n_hard / candidates); without a candidate an easy draw with
 * the easy correction stands in. A negative equal to the positive is masked.
 *
 * Optimisers: Adam on the dense layers; LAZY Adam on the embedding rows (only
 * rows with a gradient in the step move their moments, bias correction by
 * the global step); Adagrad (accumulators start at 0.1) on both. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/tower.h"
#include "tower_impl.h"

#define MAX_THREADS  64u
#define MAX_BATCH    8192u
#define MAX_EASY     4096u
#define MAX_HARD     64u
#define ADAM_B1      0.9f
#define ADAM_B2      0.999f
#define ADAM_EPS     1e-8f
#define ADAGRAD_INIT 0.1f
#define PROGRESS_NS  500000000ull
#define EDGE_SHARE   0.1 /* first_loss / loss: the first / last 10% of examples */
/* Share of training items (positives and negatives) whose w2v part is
 * dropped: a brand-new item has no SGNS vector yet, and without this the item
 * tower never sees that input (cold start would be out of distribution). */
#define W2V_DROP 0.1f

typedef struct trained {
    uint32_t *items; /* trained log items, sorted by (city, cate, item) */
    uint32_t n;
    uint32_t *city_off; /* ncities + 1 into items */
    uint32_t ncities;
    double *cum;   /* easy distribution: cumulative count^power over items (same order) */
    uint32_t *cnt; /* per log item: examples with it as positive */
} trained;

typedef struct shared {
    rc_tower_train_opts o; /* defaults resolved */
    const rc_tower_history *h;
    const rc_clicklog *log;
    rc_tower_model *m;
    trained tr;
    uint32_t *ex, nex;  /* examples (log records) */
    uint32_t *order;    /* this epoch's order */
    uint32_t per_epoch; /* examples per epoch */
    uint32_t nthreads, shard;
    uint32_t ne, nh;
    float *s1, *s2; /* optimiser state: Adam m, v / Adagrad accumulator (s2 NULL) */
    pthread_barrier_t bar;
    struct worker *w;
    double *bloss;     /* per batch: loss sum */
    uint32_t *bn;      /* per batch: examples */
    uint32_t nbatches; /* recorded */
    uint64_t examples;
    uint64_t t0, last_print;
    int progress, stop, cancelled;
    pthread_mutex_t gate_lock;
    pthread_cond_t gate_cond;
    int gate; /* 0 wait, 1 run, -1 abort */
    double ema;
} shared;

typedef struct worker {
    shared *sh;
    uint32_t id;
    rc__tower_ws ws;
    rc__tower_grad g;
    rc_tower_user_in *users;
    rc_tower_item_in *clicks, *items;
    int64_t *ts;
    uint32_t *pos_id, *easy_id, *hard_id;
    float *easy_corr, *hard_corr, *logits;
    double loss;
    pthread_t th;
} worker;

/* ---- setup ---- */

static int resolve(const rc_tower_train_opts *in, const rc_tower_history *h, rc_tower_train_opts *o,
                   char *eb, size_t el)
{
    *o = *in;
    o->cfg.w2v_dim = rc_table_dim(rc__tt_history_w2v(h));
    o->batch = o->batch ? o->batch : 256;
    o->epochs = o->epochs ? o->epochs : 2;
    o->easy_negatives = o->easy_negatives ? o->easy_negatives : 128;
    o->hard_negatives = o->hard_negatives == UINT32_MAX ? 0
                        : o->hard_negatives             ? o->hard_negatives
                                                        : 4;
    o->power = o->power != 0 ? o->power : 0.75f;
    o->lr = o->lr != 0 ? o->lr : o->optimizer == RC_TOWER_ADAGRAD ? 0.05f : 0.002f;
    o->seed = o->seed ? o->seed : 1;
    if (!o->threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->threads = n > 0 ? (uint32_t)n : 1;
    }
    o->threads = RC_MIN(RC_MIN(o->threads, MAX_THREADS), o->batch);
    if (o->batch > MAX_BATCH)
        return rc_err(eb, el, RC_EINVAL, "tower train: batch = %u: expected 1..%u", o->batch,
                      MAX_BATCH);
    if (o->easy_negatives > MAX_EASY)
        return rc_err(eb, el, RC_EINVAL, "tower train: easy_negatives = %u: expected 1..%u",
                      o->easy_negatives, MAX_EASY);
    if (o->hard_negatives > MAX_HARD)
        return rc_err(eb, el, RC_EINVAL, "tower train: hard_negatives = %u: expected 0..%u",
                      o->hard_negatives, MAX_HARD);
    if (o->epochs > 10000)
        return rc_err(eb, el, RC_EINVAL, "tower train: epochs = %u: expected 1..10000", o->epochs);
    if (!(o->power > 0 && o->power <= 2))
        return rc_err(eb, el, RC_EINVAL, "tower train: power = %g: expected 0..2",
                      (double)o->power);
    if (!(o->lr > 0 && o->lr <= 10))
        return rc_err(eb, el, RC_EINVAL, "tower train: lr = %g: expected 0..10", (double)o->lr);
    if (o->optimizer != RC_TOWER_ADAM && o->optimizer != RC_TOWER_ADAGRAD)
        return rc_err(eb, el, RC_EINVAL, "tower train: optimizer = %d: expected adam or adagrad",
                      (int)o->optimizer);
    if (!(o->max_seconds >= 0))
        return rc_err(eb, el, RC_EINVAL, "tower train: max_seconds: expected >= 0");
    return 0;
}

/* Examples: clicks at position >= 1 of the chosen sessions whose item has a
 * w2v row. */
static int collect(shared *sh, const uint8_t *mask)
{
    const rc_clicklog *log = sh->log;
    const uint32_t *rows = rc__tt_history_item_rows(sh->h);
    uint32_t nitems = rc_dict_size(log->items);
    sh->ex = malloc((log->n ? log->n : 1) * sizeof(uint32_t));
    sh->tr.cnt = calloc(nitems ? nitems : 1, sizeof(uint32_t));
    if (!sh->ex || !sh->tr.cnt)
        return RC_ENOMEM;
    for (uint32_t s = 0; s < log->nsessions; s++) {
        if (mask && !mask[s])
            continue;
        for (size_t r = log->sess_off[s] + 1; r < log->sess_off[s + 1]; r++) {
            uint32_t it = log->recs[r].item;
            if (rows[it] == UINT32_MAX)
                continue;
            sh->ex[sh->nex++] = (uint32_t)r;
            sh->tr.cnt[it]++;
        }
    }
    return 0;
}

static int cmp_item(const void *a, const void *b, void *ctx)
{
    const rc_tower_history *h = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint32_t cx = rc__tt_history_item_city(h, x), cy = rc__tt_history_item_city(h, y);
    if (cx != cy)
        return cx < cy ? -1 : 1;
    uint32_t kx = rc__tt_history_item_cate(h, x), ky = rc__tt_history_item_cate(h, y);
    if (kx != ky)
        return kx < ky ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int build_trained(shared *sh)
{
    trained *t = &sh->tr;
    uint32_t nitems = rc_dict_size(sh->log->items);
    t->ncities = rc_dict_size(sh->log->cities);
    t->items = malloc((nitems ? nitems : 1) * sizeof(uint32_t));
    t->cum = malloc((nitems ? nitems : 1) * sizeof(double));
    t->city_off = calloc((size_t)t->ncities + 2, sizeof(uint32_t));
    if (!t->items || !t->cum || !t->city_off)
        return RC_ENOMEM;
    for (uint32_t i = 0; i < nitems; i++)
        if (t->cnt[i])
            t->items[t->n++] = i;
    qsort_r(t->items, t->n, sizeof(uint32_t), cmp_item, (void *)sh->h);
    double c = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        c += pow((double)t->cnt[t->items[i]], (double)sh->o.power);
        t->cum[i] = c;
        uint32_t city = rc__tt_history_item_city(sh->h, t->items[i]);
        if (city < t->ncities)
            t->city_off[city + 1]++;
    }
    for (uint32_t k = 0; k < t->ncities; k++)
        t->city_off[k + 1] += t->city_off[k];
    return 0;
}

static void free_trained(trained *t)
{
    free(t->items);
    free(t->cum);
    free(t->city_off);
    free(t->cnt);
}

/* ---- sampling ---- */

/* An easy draw: index into tr.items; *corr = log(ne * p). */
static uint32_t draw_easy(const shared *sh, rc_rng *r, float *corr)
{
    const trained *t = &sh->tr;
    double total = t->cum[t->n - 1], x = (double)rc_rng_float(r) * total;
    uint32_t lo = 0, hi = t->n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->cum[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    double w = t->cum[lo] - (lo ? t->cum[lo - 1] : 0);
    *corr = (float)log((double)sh->ne * w / total);
    return t->items[lo];
}

/* First index in items[lo, hi) whose cate is >= cate (city range fixed). */
static uint32_t cate_bound(const shared *sh, uint32_t lo, uint32_t hi, uint32_t cate, int upper)
{
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t k = rc__tt_history_item_cate(sh->h, sh->tr.items[mid]);
        if (upper ? k <= cate : k < cate)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void draw_hard(const shared *sh, rc_rng *r, uint32_t pos, uint32_t *ids, float *corr)
{
    const trained *t = &sh->tr;
    uint32_t city = rc__tt_history_item_city(sh->h, pos),
             cate = rc__tt_history_item_cate(sh->h, pos);
    uint32_t a = 0, b = 0, ka = 0, kb = 0;
    if (city < t->ncities) {
        a = t->city_off[city];
        b = t->city_off[city + 1];
        ka = cate_bound(sh, a, b, cate, 0);
        kb = cate_bound(sh, ka, b, cate, 1);
    }
    uint32_t ncand = (b - a) - (kb - ka);
    for (uint32_t k = 0; k < sh->nh; k++) {
        if (ncand == 0) {
            ids[k] = draw_easy(sh, r, &corr[k]);
            continue;
        }
        uint32_t x = rc_rng_below(r, ncand);
        ids[k] = t->items[x < ka - a ? a + x : kb + (x - (ka - a))];
        corr[k] = (float)log((double)sh->nh / (double)ncand);
    }
}

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t x = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 29);
}

/* ---- one step ---- */

/* Builds this worker's shard of batch (positions [lo, hi) of the order) and
 * runs it; returns the example count. */
static uint32_t run_shard(worker *w, uint64_t gbatch, uint32_t lo, uint32_t hi, float scale)
{
    shared *sh = w->sh;
    const rc_tower_model *m = sh->m;
    uint32_t C = m->cfg.max_clicks, n = hi > lo ? hi - lo : 0;
    rc_rng r;
    rc_rng_seed(&r, mix(sh->o.seed, gbatch));
    for (uint32_t e = 0; e < sh->ne; e++) {
        w->easy_id[e] = draw_easy(sh, &r, &w->easy_corr[e]);
        rc_tower_item_in in;
        rc_tower_history_item_in(sh->h, w->easy_id[e], &in);
        if (rc_rng_float(&r) < W2V_DROP)
            in.w2v = NULL;
        rc__tt_item_gather(m, &w->ws, n + e, &in);
    }
    for (uint32_t b = 0; b < n; b++) {
        uint32_t rec = sh->order[lo + b], it = sh->log->recs[rec].item;
        rc_tower_history_user_in(sh->h, rec, C, w->clicks + (size_t)b * C, w->ts + (size_t)b * C,
                                 &w->users[b]);
        rc__tt_user_gather(m, &w->ws, b, &w->users[b]);
        rc_rng er;
        rc_rng_seed(&er, mix(mix(sh->o.seed, gbatch), lo + b));
        rc_tower_item_in in;
        rc_tower_history_item_in(sh->h, it, &in);
        if (rc_rng_float(&er) < W2V_DROP)
            in.w2v = NULL;
        rc__tt_item_gather(m, &w->ws, b, &in);
        w->pos_id[b] = it;
        draw_hard(sh, &er, it, w->hard_id + (size_t)b * sh->nh, w->hard_corr + (size_t)b * sh->nh);
        for (uint32_t k = 0; k < sh->nh; k++) {
            rc_tower_history_item_in(sh->h, w->hard_id[(size_t)b * sh->nh + k], &in);
            if (rc_rng_float(&er) < W2V_DROP)
                in.w2v = NULL;
            rc__tt_item_gather(m, &w->ws, n + sh->ne + b * sh->nh + k, &in);
        }
    }
    rc__tower_shard s = {.n = n,
                         .ne = sh->ne,
                         .nh = sh->nh,
                         .pos_id = w->pos_id,
                         .easy_id = w->easy_id,
                         .hard_id = w->hard_id,
                         .easy_corr = w->easy_corr,
                         .hard_corr = w->hard_corr,
                         .scale = scale,
                         .logits = w->logits};
    w->loss = rc__tt_shard_step(m, &w->ws, &s, &w->g);
    return n;
}

static void adam(float *p, float *m1, float *m2, const float *g, size_t n, float lr, float c1,
                 float c2)
{
    for (size_t i = 0; i < n; i++) {
        m1[i] = ADAM_B1 * m1[i] + (1 - ADAM_B1) * g[i];
        m2[i] = ADAM_B2 * m2[i] + (1 - ADAM_B2) * g[i] * g[i];
        p[i] -= lr * (m1[i] / c1) / (sqrtf(m2[i] / c2) + ADAM_EPS);
    }
}

static void adagrad(float *p, float *acc, const float *g, size_t n, float lr)
{
    for (size_t i = 0; i < n; i++) {
        acc[i] += g[i] * g[i];
        p[i] -= lr * g[i] / sqrtf(acc[i]);
    }
}

static void apply(shared *sh, float *p, size_t off, const float *g, size_t n, uint64_t step)
{
    if (sh->o.optimizer == RC_TOWER_ADAGRAD) {
        adagrad(p + off, sh->s1 + off, g, n, sh->o.lr);
        return;
    }
    float c1 = 1.0f - powf(ADAM_B1, (float)step), c2 = 1.0f - powf(ADAM_B2, (float)step);
    adam(p + off, sh->s1 + off, sh->s2 + off, g, n, sh->o.lr, c1, c2);
}

/* Sums the dense gradients of all workers over this worker's slice and
 * updates it. */
static void update_dense(worker *w, uint64_t step)
{
    shared *sh = w->sh;
    size_t nd = sh->m->ndense, lo = nd * w->id / sh->nthreads, hi = nd * (w->id + 1) / sh->nthreads;
    float *g0 = sh->w[0].g.dense;
    for (uint32_t t = 1; t < sh->nthreads; t++)
        for (size_t i = lo; i < hi; i++)
            g0[i] += sh->w[t].g.dense[i];
    apply(sh, sh->m->p, lo, g0 + lo, hi - lo, step);
}

/* Worker 0: merges every worker's rows into its own, updates them. */
static void update_sparse(shared *sh, uint64_t step)
{
    const rc_tower_model *m = sh->m;
    rc__tower_grad *g0 = &sh->w[0].g;
    for (uint32_t t = 1; t < sh->nthreads; t++) {
        rc__tower_grad *g = &sh->w[t].g;
        for (uint32_t i = 0; i < g->ntouched; i++) {
            int tab;
            uint32_t bucket;
            rc__tt_row_of(m, g->touched[i], &tab, &bucket);
            float *dst = rc__tt_grad_row(m, g0, tab, bucket);
            const float *src = g->arena + (size_t)i * g->maxdim;
            for (uint32_t j = 0; dst && j < m->tab[tab].dim; j++)
                dst[j] += src[j];
        }
    }
    for (uint32_t i = 0; i < g0->ntouched; i++) {
        int tab;
        uint32_t bucket;
        rc__tt_row_of(m, g0->touched[i], &tab, &bucket);
        size_t off = m->tab[tab].off + (size_t)bucket * m->tab[tab].dim;
        apply(sh, m->p, off, g0->arena + (size_t)i * g0->maxdim, m->tab[tab].dim, step);
    }
}

static void print_progress(shared *sh, uint32_t epoch, double frac, int final)
{
    double s = (double)(rc_now_ns() - sh->t0) / 1e9;
    fprintf(stderr, "\rtower: epoch %u/%u %5.1f%%  %.0f examples/s  loss %.4f%s", epoch + 1,
            sh->o.epochs, 100.0 * frac, s > 0 ? (double)sh->examples / s : 0.0, sh->ema,
            final ? "\n" : "   ");
    fflush(stderr);
}

/* Worker 0, between the barriers: bookkeeping of the step. */
static void after_step(shared *sh, uint32_t n, uint32_t epoch, double frac)
{
    double loss = 0;
    for (uint32_t t = 0; t < sh->nthreads; t++)
        loss += sh->w[t].loss;
    sh->bloss[sh->nbatches] = loss;
    sh->bn[sh->nbatches++] = n;
    sh->examples += n;
    sh->ema = sh->nbatches == 1 ? loss / n : 0.98 * sh->ema + 0.02 * loss / n;
    uint64_t now = rc_now_ns();
    if (sh->o.max_seconds > 0 && (double)(now - sh->t0) / 1e9 >= sh->o.max_seconds)
        sh->stop = 1;
    if (sh->o.cancel && atomic_load(sh->o.cancel))
        sh->stop = sh->cancelled = 1;
    if (sh->progress && now - sh->last_print > PROGRESS_NS) {
        sh->last_print = now;
        print_progress(sh, epoch, frac, 0);
    }
}

static void shuffle(shared *sh, uint32_t epoch)
{
    rc_rng r;
    rc_rng_seed(&r, mix(sh->o.seed ^ 0x5eed, epoch));
    memcpy(sh->order, sh->ex, sh->nex * sizeof(uint32_t));
    for (uint32_t i = sh->nex; i > 1; i--) {
        uint32_t j = rc_rng_below(&r, i), t = sh->order[i - 1];
        sh->order[i - 1] = sh->order[j];
        sh->order[j] = t;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;
    uint32_t B = sh->o.batch, nb = (sh->per_epoch + B - 1) / B;
    uint64_t step = 0;
    for (uint32_t ep = 0; ep < sh->o.epochs && !sh->stop; ep++) {
        if (w->id == 0)
            shuffle(sh, ep);
        pthread_barrier_wait(&sh->bar);
        for (uint32_t bi = 0; bi < nb; bi++) {
            uint32_t lo = bi * B, hi = RC_MIN(lo + B, sh->per_epoch);
            uint32_t slo = RC_MIN(lo + w->id * sh->shard, hi);
            uint32_t shi = RC_MIN(slo + sh->shard, hi);
            run_shard(w, (uint64_t)ep * nb + bi, slo, shi, 1.0f / (float)(hi - lo));
            step++;
            pthread_barrier_wait(&sh->bar);
            update_dense(w, step);
            if (w->id == 0) {
                update_sparse(sh, step);
                after_step(sh, hi - lo, ep,
                           (double)(ep * nb + bi + 1) / ((double)nb * sh->o.epochs));
            }
            pthread_barrier_wait(&sh->bar);
            rc__tt_grad_clear(sh->m, &w->g);
            if (sh->stop)
                break;
        }
    }
    return NULL;
}

/* ---- workers ---- */

static int worker_init(shared *sh, worker *w, uint32_t id)
{
    const rc_tower_model *m = sh->m;
    uint32_t S = sh->shard, C = m->cfg.max_clicks, ni = S + sh->ne + S * sh->nh;
    w->sh = sh;
    w->id = id;
    uint64_t rows = (uint64_t)ni * 3 + (uint64_t)S * C * 3 + S + (uint64_t)S * RC_TOWER_MAX_TAGS;
    if (id == 0) /* merges every worker's rows */
        rows *= sh->nthreads;
    if (rc__tt_ws_init(m, &w->ws, S, ni, 1) ||
        rc__tt_grad_init(m, &w->g, (uint32_t)RC_MIN(rows, (uint64_t)m->nrows)))
        return RC_ENOMEM;
    w->users = calloc(S, sizeof *w->users);
    w->clicks = calloc((size_t)S * C, sizeof *w->clicks);
    w->ts = calloc((size_t)S * C, sizeof *w->ts);
    w->pos_id = calloc(S, sizeof(uint32_t));
    w->easy_id = calloc(sh->ne, sizeof(uint32_t));
    w->hard_id = calloc((size_t)S * sh->nh + 1, sizeof(uint32_t));
    w->easy_corr = calloc(sh->ne, sizeof(float));
    w->hard_corr = calloc((size_t)S * sh->nh + 1, sizeof(float));
    w->logits = calloc((size_t)S * (1 + sh->ne + sh->nh), sizeof(float));
    if (!w->users || !w->clicks || !w->ts || !w->pos_id || !w->easy_id || !w->hard_id ||
        !w->easy_corr || !w->hard_corr || !w->logits)
        return RC_ENOMEM;
    return 0;
}

static void worker_free(worker *w)
{
    rc__tt_ws_free(&w->ws);
    rc__tt_grad_free(&w->g);
    free(w->users);
    free(w->clicks);
    free(w->ts);
    free(w->pos_id);
    free(w->easy_id);
    free(w->hard_id);
    free(w->easy_corr);
    free(w->hard_corr);
    free(w->logits);
}

/* Mean loss of the batches covering the first / last EDGE_SHARE of examples. */
static void edge_losses(const shared *sh, rc_tower_train_result *res)
{
    double edge = EDGE_SHARE * (double)sh->examples, s = 0;
    uint64_t n = 0;
    for (uint32_t i = 0; i < sh->nbatches && (n == 0 || (double)n < edge); i++) {
        s += sh->bloss[i];
        n += sh->bn[i];
    }
    res->first_loss = n ? s / (double)n : 0;
    s = 0;
    n = 0;
    for (uint32_t i = sh->nbatches; i > 0 && (n == 0 || (double)n < edge); i--) {
        s += sh->bloss[i - 1];
        n += sh->bn[i - 1];
    }
    res->loss = n ? s / (double)n : 0;
}

/* Workers wait at a gate until every thread exists: a failed pthread_create
 * must not leave the others stuck at a barrier sized for all. */
static void *gated_main(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;
    pthread_mutex_lock(&sh->gate_lock);
    while (sh->gate == 0)
        pthread_cond_wait(&sh->gate_cond, &sh->gate_lock);
    int go = sh->gate > 0;
    pthread_mutex_unlock(&sh->gate_lock);
    return go ? worker_main(w) : NULL;
}

static int run_threads(shared *sh)
{
    uint32_t started = 1;
    if (pthread_barrier_init(&sh->bar, NULL, sh->nthreads))
        return RC_ENOMEM;
    pthread_mutex_init(&sh->gate_lock, NULL);
    pthread_cond_init(&sh->gate_cond, NULL);
    for (; started < sh->nthreads; started++)
        if (pthread_create(&sh->w[started].th, NULL, gated_main, &sh->w[started]))
            break;
    pthread_mutex_lock(&sh->gate_lock);
    sh->gate = started == sh->nthreads ? 1 : -1;
    pthread_cond_broadcast(&sh->gate_cond);
    pthread_mutex_unlock(&sh->gate_lock);
    if (sh->gate > 0)
        worker_main(&sh->w[0]);
    for (uint32_t t = 1; t < started; t++)
        pthread_join(sh->w[t].th, NULL);
    pthread_barrier_destroy(&sh->bar);
    pthread_mutex_destroy(&sh->gate_lock);
    pthread_cond_destroy(&sh->gate_cond);
    return sh->gate > 0 ? 0 : RC_ENOMEM;
}

static int setup(shared *sh, const uint8_t *mask, char *eb, size_t el)
{
    int rc;
    if ((rc = collect(sh, mask)))
        return rc_err(eb, el, rc, "tower train: out of memory");
    if (sh->nex == 0)
        return rc_err(eb, el, RC_EINVAL,
                      "tower train: no example (no click at position >= 1 of a chosen session "
                      "whose item has a w2v row)");
    if ((rc = build_trained(sh)))
        return rc_err(eb, el, rc, "tower train: out of memory");
    sh->per_epoch = sh->o.max_examples ? RC_MIN(sh->o.max_examples, sh->nex) : sh->nex;
    sh->ne = sh->o.easy_negatives;
    sh->nh = sh->o.hard_negatives;
    sh->nthreads = RC_MIN(sh->o.threads, sh->per_epoch);
    sh->shard = (sh->o.batch + sh->nthreads - 1) / sh->nthreads;
    if ((rc = rc_tower_create(&sh->o.cfg, sh->o.seed, &sh->m, eb, el)))
        return rc;
    size_t np = sh->m->nparams;
    if (sh->o.init) { /* warm start: same layout, so the flat blocks line up */
        if (memcmp(&sh->o.init->cfg, &sh->m->cfg, sizeof sh->m->cfg) != 0 ||
            sh->o.init->nparams != np)
            return rc_err(eb, el, RC_EINVAL,
                          "tower train: init model: its configuration "
                          "differs from the one trained (sizes, features or w2v_dim)");
        memcpy(sh->m->p, sh->o.init->p, np * sizeof(float));
    }
    uint64_t maxb = (uint64_t)sh->o.epochs * ((sh->per_epoch + sh->o.batch - 1) / sh->o.batch);
    sh->s1 = malloc(np * sizeof(float));
    sh->s2 = sh->o.optimizer == RC_TOWER_ADAM ? calloc(np, sizeof(float)) : NULL;
    sh->order = malloc(sh->nex * sizeof(uint32_t));
    sh->bloss = malloc(maxb * sizeof(double));
    sh->bn = malloc(maxb * sizeof(uint32_t));
    sh->w = calloc(sh->nthreads, sizeof(worker));
    if (!sh->s1 || (sh->o.optimizer == RC_TOWER_ADAM && !sh->s2) || !sh->order || !sh->bloss ||
        !sh->bn || !sh->w)
        return rc_err(eb, el, RC_ENOMEM, "tower train: out of memory (%zu parameters)", np);
    float s0 = sh->o.optimizer == RC_TOWER_ADAM ? 0.0f : ADAGRAD_INIT;
    for (size_t i = 0; i < np; i++)
        sh->s1[i] = s0;
    for (uint32_t t = 0; t < sh->nthreads; t++)
        if (worker_init(sh, &sh->w[t], t))
            return rc_err(eb, el, RC_ENOMEM, "tower train: out of memory (thread %u buffers)", t);
    return 0;
}

static void teardown(shared *sh)
{
    for (uint32_t t = 0; sh->w && t < sh->nthreads; t++)
        worker_free(&sh->w[t]);
    free(sh->w);
    free(sh->s1);
    free(sh->s2);
    free(sh->order);
    free(sh->bloss);
    free(sh->bn);
    free(sh->ex);
    free_trained(&sh->tr);
}

int rc_tower_train(const rc_tower_train_opts *opts, const rc_tower_history *h, const uint8_t *mask,
                   rc_tower_model **out, rc_tower_train_result *res, char *eb, size_t el)
{
    if (!out)
        return rc_err(eb, el, RC_EINVAL, "tower train: out is NULL");
    *out = NULL;
    if (!opts || !h)
        return rc_err(eb, el, RC_EINVAL, "tower train: NULL argument");
    shared *sh = calloc(1, sizeof *sh);
    if (!sh)
        return rc_err(eb, el, RC_ENOMEM, "tower train: out of memory");
    sh->h = h;
    sh->log = rc__tt_history_log(h);
    int rc = resolve(opts, h, &sh->o, eb, el);
    if (!rc)
        rc = setup(sh, mask, eb, el);
    if (!rc) {
        /* Each thread runs its own sgemm; OpenBLAS threads would oversubscribe. */
        openblas_set_num_threads(1);
        sh->progress = sh->o.progress > 0 || (sh->o.progress == 0 && isatty(STDERR_FILENO));
        sh->t0 = sh->last_print = rc_now_ns();
        if ((rc = run_threads(sh)))
            rc_err(eb, el, rc, "tower train: cannot start %u threads", sh->nthreads);
        else if (sh->cancelled)
            rc = rc_err(eb, el, RC_EAGAIN, "tower train: cancelled");
    }
    if (!rc) {
        double secs = (double)(rc_now_ns() - sh->t0) / 1e9;
        rc_tower_train_result r = {.examples = sh->examples,
                                   .seconds = secs,
                                   .examples_per_s = secs > 0 ? (double)sh->examples / secs : 0,
                                   .threads = sh->nthreads,
                                   .stopped = sh->stop};
        edge_losses(sh, &r);
        if (sh->progress)
            print_progress(sh, sh->o.epochs - 1, 1.0, 1);
        if (res)
            *res = r;
        if (!sh->o.quiet) {
            char line[512];
            rc_tower_train_summary(&sh->o, &r, line, sizeof line);
            fprintf(stderr, "%s\n", line);
        }
        *out = sh->m;
        sh->m = NULL;
    }
    rc_tower_destroy(sh->m);
    teardown(sh);
    free(sh);
    return rc;
}

void rc_tower_train_summary(const rc_tower_train_opts *opts, const rc_tower_train_result *res,
                            char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return;
    if (!opts || !res) {
        buf[0] = 0;
        return;
    }
    /* opts may be the caller's (zeros = defaults): show the defaults. */
    uint32_t nh = opts->hard_negatives == UINT32_MAX ? 0
                  : opts->hard_negatives             ? opts->hard_negatives
                                                     : 4;
    uint32_t epochs = opts->epochs ? opts->epochs : 2, batch = opts->batch ? opts->batch : 256;
    uint32_t ne = opts->easy_negatives ? opts->easy_negatives : 128;
    snprintf(buf, cap,
             "tower: %s, %u epochs, %u threads, batch %u, %u easy + %u hard negatives: "
             "%.3fM examples in %.2f s, %.0f examples/s, loss %.4f -> %.4f%s",
             opts->optimizer == RC_TOWER_ADAGRAD ? "adagrad" : "adam", epochs, res->threads, batch,
             ne, nh, (double)res->examples / 1e6, res->seconds, res->examples_per_s,
             res->first_loss, res->loss, res->stopped ? " (stopped at max_seconds)" : "");
}
