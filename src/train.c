/* train — batch SGNS over a click log's sessions, Hogwild threads.
 *
 * Setup (one thread): count clicks per item over the chosen sessions, drop
 * items under min_count, keep sessions that still have >= 2 clicks as the
 * corpus (a flat array of table rows), create the table (one row per item of
 * the corpus, word2vec's initialisation: input uniform in +-0.5/dim, output 0)
 * and the sampler over the rows' counts. Training: each thread owns a slice of
 * the corpus of about equal clicks, runs `epochs` passes over it, draws with
 * the sampler's read-only path and writes vectors without locks. Progress (a
 * shared click counter) is published every SYNC_CLICKS clicks and drives the
 * linear learning-rate decay, exactly as word2vec does. */
#include "recalld/train.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "recalld/sampler.h"
#include "recalld/vec.h"

#define DEFAULT_DIM    64u
#define DEFAULT_WINDOW 5u
#define DEFAULT_NEG    5u
#define DEFAULT_EPOCHS 5u
#define MAX_THREADS    256u
#define SYNC_CLICKS    4096u
#define LR_FLOOR       1e-4f
#define PROGRESS_NS    500000000ull
#define LOSS_SCALE     1000.0 /* loss is published as fixed-point thousandths */
#define LATE_SHARE     0.9    /* the final loss is measured past this share of work */

struct corpus {
    uint32_t *rows; /* clicks of the kept sessions, as table rows */
    size_t *off;    /* session j = rows[off[j] .. off[j+1]) */
    uint32_t nsess;
    uint64_t nclicks;
    float *keep; /* per row: subsampling keep probability */
};

struct shared {
    rc_train_opts o; /* defaults resolved */
    rc_sgns_opts sg;
    rc_table *t;
    rc_sampler *smp;
    struct corpus c;
    uint64_t total_work; /* epochs * nclicks */
    _Atomic uint64_t done;
    _Atomic uint64_t loss_milli, pairs;
    _Atomic int stop;
    uint64_t t0;
    int progress;
    uint64_t shown_loss, shown_pairs; /* at the last progress line (worker 0 only) */
};

struct worker {
    struct shared *sh;
    pthread_t th;
    uint32_t id, s_beg, s_end; /* corpus sessions [s_beg, s_end) */
    rc_rng rng;
    rc_sgns_work w;
    uint32_t *sent; /* the session after subsampling */
    uint64_t clicks, pairs, late_pairs;
    double late_loss;
    uint64_t last_print;
    double cpu_s; /* this thread's CPU time in training */
    int stopped;
};

/* ---- options ---- */

static int resolve(const rc_train_opts *in, rc_train_opts *o, char *eb, size_t el)
{
    *o = in ? *in : (rc_train_opts){0};
    if (!o->dim)
        o->dim = DEFAULT_DIM;
    if (!o->window)
        o->window = DEFAULT_WINDOW;
    if (!o->negatives)
        o->negatives = DEFAULT_NEG;
    if (!o->epochs)
        o->epochs = DEFAULT_EPOCHS;
    if (!o->threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->threads = n > 0 ? (uint32_t)RC_MIN(n, (long)MAX_THREADS) : 1;
    }
    if (!o->min_count)
        o->min_count = 1;
    if (!(o->lr > 0))
        o->lr = o->mode == RC_SGNS_CBOW ? 0.05f : 0.025f;
    if (!o->seed)
        o->seed = 1;
    if (o->mode != RC_SGNS_SKIPGRAM && o->mode != RC_SGNS_CBOW)
        return rc_err(eb, el, RC_EINVAL, "train: mode: expected skipgram or cbow");
    if (o->dim % 8 || o->dim > 1024)
        return rc_err(eb, el, RC_EINVAL, "train: dim: expected a multiple of 8 <= 1024");
    if (o->window > RC_SGNS_MAX_WINDOW / 2)
        return rc_err(eb, el, RC_EINVAL, "train: window: expected <= %d", RC_SGNS_MAX_WINDOW / 2);
    if (o->negatives > RC_SGNS_MAX_NEG)
        return rc_err(eb, el, RC_EINVAL, "train: negatives: expected <= %d", RC_SGNS_MAX_NEG);
    if (o->threads > MAX_THREADS || o->epochs > 100000)
        return rc_err(eb, el, RC_EINVAL, "train: threads <= %u, epochs <= 100000", MAX_THREADS);
    if (o->lr > 10 || o->subsample < 0 || o->subsample > 1 || o->power < 0 || o->power > 4 ||
        o->hard_share < 0 || o->hard_share > 1 || o->max_seconds < 0 || !(o->cate_prior >= 0) ||
        o->cate_prior > 1e6)
        return rc_err(eb, el, RC_EINVAL,
                      "train: expected lr <= 10, subsample in [0,1], power in [0,4], "
                      "hard_share in [0,1], max_seconds >= 0, cate_prior in [0,1e6]");
    return 0;
}

/* ---- corpus and table ---- */

/* count[item] over the chosen sessions; rows[item] = UINT32_MAX (dropped) or 0. */
static void count_items(const rc_clicklog *log, const uint8_t *mask, uint32_t *count)
{
    for (uint32_t s = 0; s < log->nsessions; s++) {
        if (mask && !mask[s])
            continue;
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
            if (count[log->recs[i].item] < UINT32_MAX)
                count[log->recs[i].item]++;
    }
}

/* Marks in `used` the items of sessions with >= 2 kept clicks. Returns the
 * number of corpus clicks and sets *nsess. */
static uint64_t mark_used(const rc_clicklog *log, const uint8_t *mask, const uint32_t *count,
                          uint32_t min_count, uint8_t *used, uint32_t *nsess)
{
    uint64_t clicks = 0;
    *nsess = 0;
    for (uint32_t s = 0; s < log->nsessions; s++) {
        if (mask && !mask[s])
            continue;
        uint32_t kept = 0;
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
            kept += count[log->recs[i].item] >= min_count;
        if (kept < 2)
            continue;
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
            if (count[log->recs[i].item] >= min_count)
                used[log->recs[i].item] = 1;
        clicks += kept;
        (*nsess)++;
    }
    return clicks;
}

/* Adds the used items as rows, in item id order; row_of[item] gets the row. */
static int add_rows(struct shared *sh, const rc_clicklog *log, const uint32_t *count,
                    const uint8_t *used, uint32_t *row_of, char *eb, size_t el)
{
    uint32_t nitems = rc_dict_size(log->items), dim = sh->o.dim;
    uint32_t *city = malloc(((size_t)nitems + 1) * sizeof(uint32_t) * 2), *cate;
    if (!city)
        return rc_err(eb, el, RC_ENOMEM, "train: out of memory");
    cate = city + nitems + 1;
    /* An item's city/cate: its first click's (in session order). */
    memset(city, 0xff, ((size_t)nitems + 1) * sizeof(uint32_t) * 2);
    for (size_t i = 0; i < log->n; i++)
        if (city[log->recs[i].item] == UINT32_MAX) {
            city[log->recs[i].item] = log->recs[i].city;
            cate[log->recs[i].item] = log->recs[i].cate;
        }
    rc_rng rng;
    rc_rng_seed(&rng, sh->o.seed ^ 0x5eedf00dull);
    int rc = 0;
    for (uint32_t it = 0; it < nitems && rc == 0; it++) {
        row_of[it] = UINT32_MAX;
        if (!used[it])
            continue;
        size_t len, clen, klen;
        const char *id = rc_dict_str(log->items, it, &len);
        const char *cs = rc_dict_str(log->cities, city[it], &clen);
        const char *ks = rc_dict_str(log->cates, cate[it], &klen);
        uint32_t cid = 0, kid = 0, row;
        if ((rc = rc_table_city_id(sh->t, cs, clen, &cid)) ||
            (rc = rc_table_cate_id(sh->t, ks, klen, &kid)) ||
            (rc = rc_table_upsert(sh->t, id, len, cid, kid, NULL, 0, &row, NULL)))
            break;
        float *in = rc_table_in(sh->t, row);
        for (uint32_t d = 0; d < dim; d++)
            in[d] = (rc_rng_float(&rng) - 0.5f) / (float)dim;
        uint32_t ir;
        if (sh->o.init && rc_table_dim(sh->o.init) == dim &&
            rc_table_find(sh->o.init, id, len, &ir) == 0) {
            memcpy(in, rc_table_in(sh->o.init, ir), dim * sizeof(float));
            const float *io = rc_table_out(sh->o.init, ir);
            float *out = rc_table_out(sh->t, row);
            if (io && out)
                memcpy(out, io, dim * sizeof(float));
        }
        rc_table_count_add(sh->t, row, count[it]);
        row_of[it] = row;
    }
    free(city);
    return rc ? rc_err(eb, el, rc, "train: item table: %s", rc_strerror(rc)) : 0;
}

static int fill_corpus(struct shared *sh, const rc_clicklog *log, const uint8_t *mask,
                       const uint32_t *row_of)
{
    struct corpus *c = &sh->c;
    uint32_t j = 0;
    size_t w = 0;
    for (uint32_t s = 0; s < log->nsessions; s++) {
        if (mask && !mask[s])
            continue;
        uint32_t kept = 0;
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
            kept += row_of[log->recs[i].item] != UINT32_MAX;
        if (kept < 2)
            continue;
        c->off[j++] = w;
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
            if (row_of[log->recs[i].item] != UINT32_MAX)
                c->rows[w++] = row_of[log->recs[i].item];
    }
    c->off[j] = w;
    return j == c->nsess && w == c->nclicks ? 0 : RC_EINVAL;
}

/* word2vec's subsampling: an item of frequency f is kept with probability
 * (sqrt(f/t) + 1) * t / f (always when f <= t). */
static void fill_keep(struct shared *sh)
{
    uint32_t n = rc_table_size(sh->t);
    double total = (double)rc_table_total_count(sh->t), t = sh->o.subsample;
    for (uint32_t r = 0; r < n; r++) {
        double f = (double)rc_table_count(sh->t, r) / total;
        sh->c.keep[r] = t > 0 && f > 0 ? (float)RC_MIN(1.0, (sqrt(f / t) + 1) * t / f) : 1.0f;
    }
}

static int build(struct shared *sh, const rc_clicklog *log, const uint8_t *mask, char *eb,
                 size_t el)
{
    uint32_t nitems = rc_dict_size(log->items), used_n = 0;
    uint32_t *count = calloc((size_t)nitems + 1, sizeof(uint32_t));
    uint32_t *row_of = malloc(((size_t)nitems + 1) * sizeof(uint32_t));
    uint8_t *used = calloc((size_t)nitems + 1, 1);
    int rc = RC_ENOMEM;
    if (!count || !row_of || !used)
        goto out_free;
    count_items(log, mask, count);
    sh->c.nclicks = mark_used(log, mask, count, sh->o.min_count, used, &sh->c.nsess);
    for (uint32_t i = 0; i < nitems; i++)
        used_n += used[i];
    if (used_n == 0) {
        rc = rc_err(eb, el, RC_EINVAL, "train: no session with 2 clicks on items of min-count %u",
                    sh->o.min_count);
        goto out_free;
    }
    rc_table_opts to = {.dim = sh->o.dim, .max_items = RC_MAX(used_n, 64u), .seed = sh->o.seed};
    if ((rc = rc_table_create(&to, &sh->t, eb, el)) ||
        (rc = add_rows(sh, log, count, used, row_of, eb, el)))
        goto out_free;
    rc = RC_ENOMEM;
    sh->c.rows = malloc(sh->c.nclicks * sizeof(uint32_t));
    sh->c.off = malloc(((size_t)sh->c.nsess + 1) * sizeof(size_t));
    sh->c.keep = malloc((size_t)used_n * sizeof(float));
    if (!sh->c.rows || !sh->c.off || !sh->c.keep)
        goto out_free;
    if ((rc = fill_corpus(sh, log, mask, row_of)))
        goto out_free;
    fill_keep(sh);
    rc_sampler_opts so = {.power = sh->o.power,
                          .global_only = !log->has_city || sh->o.global_negatives};
    rc = rc_sampler_create(&so, sh->t, &sh->smp, eb, el);
out_free:
    free(count);
    free(row_of);
    free(used);
    return rc == RC_ENOMEM ? rc_err(eb, el, rc, "train: out of memory") : rc;
}

/* ---- training ---- */

static void train_sg(struct worker *wk, const uint32_t *s, uint32_t n, uint32_t i, uint32_t b,
                     float lr)
{
    struct shared *sh = wk->sh;
    uint32_t dim = sh->o.dim, lo = i > b ? i - b : 0, hi = RC_MIN(n, i + b + 1);
    for (uint32_t j = lo; j < hi; j++) {
        if (j == i || s[j] == s[i])
            continue;
        float *in = rc_table_in(sh->t, s[j]);
        memset(wk->w.grad, 0, dim * sizeof(float));
        rc_sgns_pair(sh->t, sh->smp, &wk->rng, &sh->sg, lr, in, wk->w.grad, s[i], &wk->w);
        rc_vec_axpy(1.0f, wk->w.grad, in, dim);
    }
}

static void train_cbow(struct worker *wk, const uint32_t *s, uint32_t n, uint32_t i, uint32_t b,
                       float lr)
{
    struct shared *sh = wk->sh;
    uint32_t dim = sh->o.dim, lo = i > b ? i - b : 0, hi = RC_MIN(n, i + b + 1), k = 0;
    for (uint32_t j = lo; j < hi; j++)
        if (j != i && s[j] != s[i])
            wk->w.kept[k++] = s[j];
    if (k == 0)
        return;
    memset(wk->w.ctx_mean, 0, dim * sizeof(float));
    for (uint32_t j = 0; j < k; j++)
        rc_vec_axpy(1.0f, rc_table_in(sh->t, wk->w.kept[j]), wk->w.ctx_mean, dim);
    rc_vec_scale(1.0f / (float)k, wk->w.ctx_mean, dim);
    memset(wk->w.grad, 0, dim * sizeof(float));
    rc_sgns_pair(sh->t, sh->smp, &wk->rng, &sh->sg, lr, wk->w.ctx_mean, wk->w.grad, s[i], &wk->w);
    /* word2vec: every context input takes the whole gradient of the mean. */
    for (uint32_t j = 0; j < k; j++)
        rc_vec_axpy(1.0f, wk->w.grad, rc_table_in(sh->t, wk->w.kept[j]), dim);
}

static void print_progress(struct shared *sh, uint64_t done, uint64_t now)
{
    uint64_t loss = atomic_load(&sh->loss_milli), pairs = atomic_load(&sh->pairs);
    double el = (double)(now - sh->t0) / 1e9, frac = (double)done / (double)sh->total_work;
    double rate = el > 0 ? (double)done / el : 0;
    double recent = pairs > sh->shown_pairs ? (double)(loss - sh->shown_loss) / LOSS_SCALE /
                                                  (double)(pairs - sh->shown_pairs)
                                            : 0;
    sh->shown_loss = loss;
    sh->shown_pairs = pairs;
    fprintf(stderr, "\rtrain: %5.1f%%  %.3fM clicks/s  loss %.4f  ETA %.0f s   ", 100 * frac,
            rate / 1e6, recent, rate > 0 ? (double)(sh->total_work - done) / rate : 0);
}

/* Publishes this worker's progress; returns the learning rate for what follows. */
static float sync_point(struct worker *wk, uint64_t *unsynced)
{
    struct shared *sh = wk->sh;
    uint64_t done = atomic_fetch_add(&sh->done, *unsynced) + *unsynced;
    atomic_fetch_add(&sh->loss_milli, (uint64_t)llround(wk->w.loss_sum * LOSS_SCALE));
    atomic_fetch_add(&sh->pairs, wk->w.pairs);
    if ((double)done >= LATE_SHARE * (double)sh->total_work) {
        wk->late_loss += wk->w.loss_sum;
        wk->late_pairs += wk->w.pairs;
    }
    wk->pairs += wk->w.pairs;
    wk->w.loss_sum = 0;
    wk->w.pairs = 0;
    *unsynced = 0;
    uint64_t now = rc_now_ns();
    if (sh->o.max_seconds > 0 && (double)(now - sh->t0) / 1e9 > sh->o.max_seconds)
        atomic_store(&sh->stop, 1);
    if (sh->progress && wk->id == 0 && now - wk->last_print > PROGRESS_NS) {
        wk->last_print = now;
        print_progress(sh, done, now);
    }
    float lr = sh->o.lr * (1.0f - (float)((double)done / (double)sh->total_work));
    return RC_MAX(lr, sh->o.lr * LR_FLOOR);
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void epochs(struct worker *wk);

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    double c0 = thread_cpu_s();
    epochs(wk);
    wk->cpu_s = thread_cpu_s() - c0;
    return NULL;
}

static void epochs(struct worker *wk)
{
    struct shared *sh = wk->sh;
    uint64_t unsynced = 0;
    float lr = sync_point(wk, &unsynced);
    uint32_t win = sh->o.window;
    for (uint32_t ep = 0; ep < sh->o.epochs; ep++) {
        for (uint32_t sj = wk->s_beg; sj < wk->s_end; sj++) {
            const uint32_t *src = sh->c.rows + sh->c.off[sj];
            uint32_t len = (uint32_t)(sh->c.off[sj + 1] - sh->c.off[sj]), n = 0;
            for (uint32_t i = 0; i < len; i++)
                if (sh->c.keep[src[i]] >= 1.0f || rc_rng_float(&wk->rng) < sh->c.keep[src[i]])
                    wk->sent[n++] = src[i];
            for (uint32_t i = 0; i < n; i++) {
                uint32_t b = 1 + rc_rng_below(&wk->rng, win); /* reduced window, as word2vec */
                if (sh->o.mode == RC_SGNS_CBOW)
                    train_cbow(wk, wk->sent, n, i, b, lr);
                else
                    train_sg(wk, wk->sent, n, i, b, lr);
            }
            unsynced += len;
            wk->clicks += len;
            if (unsynced >= SYNC_CLICKS) {
                lr = sync_point(wk, &unsynced);
                if (atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
                    wk->stopped = 1;
                    return;
                }
            }
        }
    }
    sync_point(wk, &unsynced);
}

/* Slices the corpus into n runs of sessions of about equal clicks. */
static void slice(const struct corpus *c, struct worker *wk, uint32_t n)
{
    uint32_t s = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t goal = c->nclicks * (i + 1) / n;
        wk[i].s_beg = s;
        while (s < c->nsess && (i == n - 1 || c->off[s + 1] <= goal))
            s++;
        wk[i].s_end = s;
    }
}

static size_t longest_session(const struct corpus *c)
{
    size_t m = 0;
    for (uint32_t j = 0; j < c->nsess; j++)
        m = RC_MAX(m, c->off[j + 1] - c->off[j]);
    return m;
}

static int run_workers(struct shared *sh, struct worker *wk, uint32_t n, char *eb, size_t el)
{
    size_t longest = longest_session(&sh->c);
    int rc = 0;
    uint32_t started = 0;
    slice(&sh->c, wk, n);
    for (uint32_t i = 0; i < n; i++) {
        wk[i].sh = sh;
        wk[i].id = i;
        rc_rng_seed(&wk[i].rng, sh->o.seed * 0x9e3779b97f4a7c15ull + i + 1);
        if (rc_sgns_work_init(&wk[i].w, sh->o.dim) ||
            !(wk[i].sent = malloc(RC_MAX(longest, 1) * sizeof(uint32_t))))
            return rc_err(eb, el, RC_ENOMEM, "train: out of memory");
    }
    sh->t0 = rc_now_ns();
    for (; started < n; started++) {
        if (n == 1)
            break;
        if (pthread_create(&wk[started].th, NULL, worker_main, &wk[started])) {
            rc = rc_err(eb, el, RC_EIO, "train: cannot start thread %u", started);
            atomic_store(&sh->stop, 1);
            break;
        }
    }
    if (n == 1)
        worker_main(&wk[0]);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(wk[i].th, NULL);
    if (sh->progress)
        fputc('\n', stderr);
    return rc;
}

static void collect(const struct shared *sh, const struct worker *wk, uint32_t n,
                    rc_train_result *res)
{
    double late_loss = 0;
    uint64_t late_pairs = 0;
    memset(res, 0, sizeof(*res));
    for (uint32_t i = 0; i < n; i++) {
        res->clicks += wk[i].clicks;
        res->pairs += wk[i].pairs;
        late_loss += wk[i].late_loss;
        late_pairs += wk[i].late_pairs;
        res->stopped |= wk[i].stopped;
        res->cpu_seconds += wk[i].cpu_s;
    }
    res->seconds = (double)(rc_now_ns() - sh->t0) / 1e9;
    res->clicks_per_s = res->seconds > 0 ? (double)res->clicks / res->seconds : 0;
    res->loss = late_pairs ? late_loss / (double)late_pairs : 0;
    res->items = rc_table_size(sh->t);
    res->sessions = sh->c.nsess;
    res->threads = n;
}

/* cate_prior: an item seen n times keeps n / (n + k) of its trained input
 * vector and takes the rest from its category's mean, weighted by clicks (all
 * cities). An item clicked once or twice is placed mostly by its category,
 * as the stream's cold start places a new item (table.c); the output vectors
 * are left as trained. */
static int apply_cate_prior(rc_table *t, float k)
{
    uint32_t n = rc_table_size(t), nc = rc_table_ncates(t), dim = rc_table_dim(t);
    double *mean = calloc((size_t)nc * dim + nc, sizeof *mean), *w = mean + (size_t)nc * dim;
    float *v = malloc(2 * (size_t)dim * sizeof *v), *buf = v ? v + dim : NULL;
    if (!mean || !v) {
        free(mean);
        free(v);
        return RC_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = rc_table_cate(t, i), cnt = rc_table_count(t, i);
        const float *x = rc_table_in_read(t, i, buf);
        for (uint32_t d = 0; d < dim; d++)
            mean[(size_t)c * dim + d] += (double)cnt * x[d];
        w[c] += cnt;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = rc_table_cate(t, i);
        double cnt = rc_table_count(t, i);
        if (w[c] <= 0)
            continue;
        const float *x = rc_table_in_read(t, i, buf);
        for (uint32_t d = 0; d < dim; d++)
            v[d] = (float)((cnt * x[d] + k * mean[(size_t)c * dim + d] / w[c]) / (cnt + k));
        rc_table_in_write(t, i, v);
    }
    free(mean);
    free(v);
    return 0;
}

int rc_train_run(const rc_train_opts *opts, const rc_clicklog *log, const uint8_t *mask,
                 rc_table **out, rc_train_result *res, char *eb, size_t el)
{
    if (!log || !out)
        return rc_err(eb, el, RC_EINVAL, "train: log and out are required");
    *out = NULL;
    struct shared *sh = calloc(1, sizeof(*sh));
    struct worker *wk = NULL;
    rc_train_result r;
    uint32_t n = 0;
    int rc = sh ? resolve(opts, &sh->o, eb, el) : rc_err(eb, el, RC_ENOMEM, "train: out of memory");
    if (rc || (rc = build(sh, log, mask, eb, el)))
        goto out_free;
    n = RC_MAX(RC_MIN(sh->o.threads, sh->c.nsess), 1u);
    sh->total_work = RC_MAX((uint64_t)sh->o.epochs * sh->c.nclicks, 1u);
    sh->progress = sh->o.progress > 0 || (sh->o.progress == 0 && isatty(STDERR_FILENO));
    sh->sg = (rc_sgns_opts){.mode = sh->o.mode,
                            .window = sh->o.window,
                            .negatives = sh->o.negatives,
                            .hard_share = log->has_cate ? sh->o.hard_share : 0,
                            .lr = sh->o.lr,
                            .shared_sampler = 1};
    if (!(wk = calloc(n, sizeof(*wk)))) {
        rc = rc_err(eb, el, RC_ENOMEM, "train: out of memory");
        goto out_free;
    }
    if ((rc = run_workers(sh, wk, n, eb, el)))
        goto out_free;
    collect(sh, wk, n, &r);
    if (sh->o.cate_prior > 0 && log->has_cate && (rc = apply_cate_prior(sh->t, sh->o.cate_prior))) {
        rc = rc_err(eb, el, rc, "train: out of memory");
        goto out_free;
    }
    if (!sh->o.quiet) {
        char line[256];
        rc_train_summary(&sh->o, &r, line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
    if (res)
        *res = r;
    *out = sh->t;
    sh->t = NULL;
out_free:
    for (uint32_t i = 0; wk && i < n; i++) {
        rc_sgns_work_free(&wk[i].w);
        free(wk[i].sent);
    }
    free(wk);
    if (sh) {
        rc_sampler_destroy(sh->smp);
        rc_table_destroy(sh->t);
        free(sh->c.rows);
        free(sh->c.off);
        free(sh->c.keep);
        free(sh);
    }
    return rc;
}

void rc_train_item_rows(const rc_clicklog *log, const rc_table *t, uint32_t *rows)
{
    if (!log || !t || !rows)
        return;
    uint32_t n = rc_dict_size(log->items);
    for (uint32_t i = 0; i < n; i++) {
        size_t len;
        const char *id = rc_dict_str(log->items, i, &len);
        if (rc_table_find(t, id, len, &rows[i]))
            rows[i] = UINT32_MAX;
    }
}

void rc_train_summary(const rc_train_opts *opts, const rc_train_result *res, char *buf, size_t cap)
{
    if (!buf || !cap)
        return;
    rc_train_opts o = opts ? *opts : (rc_train_opts){0};
    rc_train_result r = res ? *res : (rc_train_result){0};
    uint32_t th = r.threads ? r.threads : 1;
    snprintf(buf, cap,
             "train: %s, %u epochs, %u threads: %.3fM clicks in %.2f s, %.3fM clicks/s, "
             "%.3fM clicks per CPU-second, %llu pairs, loss %.4f, %u items, %u sessions%s",
             o.mode == RC_SGNS_CBOW ? "cbow" : "skipgram", o.epochs ? o.epochs : DEFAULT_EPOCHS, th,
             (double)r.clicks / 1e6, r.seconds, r.clicks_per_s / 1e6,
             r.cpu_seconds > 0 ? (double)r.clicks / r.cpu_seconds / 1e6 : 0,
             (unsigned long long)r.pairs, r.loss, r.items, r.sessions,
             r.stopped ? " (stopped at the time limit)" : "");
}
