#include "recalld/recall.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/vec.h"

int rc_recall_query_vector(const rc_table *t, const uint32_t *rows, const float *w, uint32_t n,
                           float *q)
{
    uint32_t dim = rc_table_dim(t), used = 0;
    float vb[RC_TABLE_MAX_DIM];
    memset(q, 0, dim * sizeof *q);
    for (uint32_t i = 0; i < n; i++) {
        const float *v = rc_table_in_read(t, rows[i], vb);
        float norm = sqrtf(rc_vec_dot(v, v, dim));
        if (norm <= 0 || !isfinite(norm))
            continue;
        rc_vec_axpy((w ? w[i] : 1.0f) / norm, v, q, dim);
        used++;
    }
    if (!used || rc_vec_normalize(q, dim) <= 0)
        return RC_ENOENT;
    return 0;
}

/* The score of row from its cosine: cos + w * ln(1 + clicks) (w <= 0: cos). */
static float with_term(const rc_table *t, uint32_t row, float cos, float w)
{
    return w > 0 ? cos + w * log1pf((float)rc_table_count(t, row)) : cos;
}

static float score_w(const rc_table *t, uint32_t row, const float *q, float w)
{
    return with_term(t, row, rc_table_in_cos(t, row, q), w);
}

float rc_recall_score(const rc_table *t, uint32_t row, const float *q)
{
    return score_w(t, row, q, rc_table_pop_weight(t));
}

static int hit_cmp(const void *a, const void *b)
{
    const rc_hit *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static int excluded(uint32_t row, const uint32_t *ex, uint32_t nex)
{
    for (uint32_t i = 0; i < nex; i++)
        if (ex[i] == row)
            return 1;
    return 0;
}

static int passes(const rc_table *t, uint32_t row, const rc_index_filter *f)
{
    if (!f)
        return 1;
    if (f->city >= 0 && rc_table_city(t, row) != (uint32_t)f->city)
        return 0;
    if (!f->ncates)
        return 1;
    uint32_t c = rc_table_cate(t, row);
    for (uint32_t i = 0; i < f->ncates; i++)
        if (f->cates[i] == c)
            return 1;
    return 0;
}

int rc_recall_search(const rc_table *t, rc_index *ix, const float *q, uint32_t k, float overfetch,
                     const rc_index_filter *f, const uint32_t *exclude, uint32_t nexclude,
                     rc_hit *out, uint32_t *n)
{
    return rc_recall_search_timed(t, ix, q, k, overfetch, f, exclude, nexclude, out, n, NULL);
}

/* The search of rc_recall_search_timed; candidates ranked by the cosine plus
 * w * ln(1 + clicks) (rc_recall_score with weight w). */
static int search(const rc_table *t, rc_index *ix, const float *q, uint32_t k, float overfetch,
                  float w, const rc_index_filter *f, const uint32_t *exclude, uint32_t nexclude,
                  rc_hit *out, uint32_t *n, rc_recall_timing *tm)
{
    uint32_t want, got = 0, kept = 0;
    uint32_t srows[RC_RECALL_STACK_CAND];
    float sscores[RC_RECALL_STACK_CAND];
    rc_hit scand[RC_RECALL_STACK_CAND];
    *n = 0;
    if (k == 0)
        return 0;
    if (overfetch < 1)
        overfetch = 1;
    want = (uint32_t)ceilf((float)k * overfetch) + nexclude;
    /* With the popularity term the pool of `want` rows re-ranked by the whole
     * score must be the best `want` by cosine, as exact's is: any of them can
     * rise into the top k. The index's order is approximate (int8 scores), so
     * twice as many rows are fetched and the pool cut by their exact cosine. */
    uint32_t fetch = w > 0 ? 2 * want : want;
    /* Large k (up to recall.k_max x overfetch) falls back to the heap. */
    int heap = fetch > RC_RECALL_STACK_CAND;
    uint32_t *rows = heap ? malloc(fetch * sizeof *rows) : srows;
    float *scores = heap ? malloc(fetch * sizeof *scores) : sscores;
    rc_hit *cand = heap ? malloc(fetch * sizeof *cand) : scand;
    int rc = RC_ENOMEM;
    if (!rows || !scores || !cand)
        goto out;
    rc_index_timing it = {0};
    rc = rc_index_search_timed(ix, q, fetch, f, rows, scores, &got, tm ? &it : NULL);
    if (rc)
        goto out;
    uint64_t t0 = tm ? rc_now_ns() : 0;
    for (uint32_t i = 0; i < got; i++)
        cand[i] = (rc_hit){rows[i], rc_table_in_cos(t, rows[i], q)};
    if (got > want) { /* the pool: the best `want` by the exact cosine */
        qsort(cand, got, sizeof *cand, hit_cmp);
        got = want;
    }
    for (uint32_t i = 0; i < got; i++) { /* kept <= i: compacted in place */
        uint32_t r = cand[i].row;
        if (excluded(r, exclude, nexclude) || !passes(t, r, f))
            continue;
        cand[kept++] = (rc_hit){r, with_term(t, r, cand[i].score, w)};
    }
    qsort(cand, kept, sizeof *cand, hit_cmp);
    *n = RC_MIN(kept, k);
    memcpy(out, cand, *n * sizeof *out);
    if (tm) {
        tm->lock_ns += it.lock_ns;
        tm->coarse_ns += it.coarse_ns;
        tm->scan_ns += it.scan_ns;
        tm->parts += it.parts;
        tm->lists += it.lists;
        tm->rows += it.rows;
        tm->rerank_ns += rc_now_ns() - t0;
    }
out:
    if (heap) {
        free(rows);
        free(scores);
        free(cand);
    }
    return rc;
}

int rc_recall_search_timed(const rc_table *t, rc_index *ix, const float *q, uint32_t k,
                           float overfetch, const rc_index_filter *f, const uint32_t *exclude,
                           uint32_t nexclude, rc_hit *out, uint32_t *n, rc_recall_timing *tm)
{
    return search(t, ix, q, k, overfetch, rc_table_pop_weight(t), f, exclude, nexclude, out, n, tm);
}

int rc_recall_search_cos(const rc_table *t, rc_index *ix, const float *q, uint32_t k,
                         float overfetch, const rc_index_filter *f, const uint32_t *exclude,
                         uint32_t nexclude, rc_hit *out, uint32_t *n)
{
    return search(t, ix, q, k, overfetch, 0, f, exclude, nexclude, out, n, NULL);
}

void rc_recall_decay_weights(const int64_t *ts, uint32_t n, int64_t half_life_ms, float *w)
{
    int64_t newest = INT64_MIN;
    for (uint32_t i = 0; i < n; i++)
        newest = ts[i] > newest ? ts[i] : newest;
    for (uint32_t i = 0; i < n; i++)
        w[i] = half_life_ms > 0 ? exp2f(-(float)(newest - ts[i]) / (float)half_life_ms) : 1.0f;
}

#define MC_MAX 64

struct mc_job {
    const rc_table *t;
    rc_index *ix;
    float *q;
    uint32_t want;
    float overfetch;
    rc_index_filter f;
    uint32_t cate;
    const uint32_t *exclude;
    uint32_t nexclude;
    rc_hit *hits;
    uint32_t n;
    int rc;
    rc_recall_timing tm;
};

static void *mc_run(void *arg)
{
    struct mc_job *j = arg;
    j->f.cates = &j->cate;
    j->f.ncates = 1;
    j->rc = rc_recall_search_timed(j->t, j->ix, j->q, j->want, j->overfetch, &j->f, j->exclude,
                                   j->nexclude, j->hits, &j->n, &j->tm);
    return NULL;
}

/* Largest-remainder apportionment of k slots by share, min_quota each. */
static void apportion(rc_mc_quota *q, uint32_t nq, uint32_t k, uint32_t min_quota)
{
    uint32_t used = 0;
    float rem[MC_MAX];
    if (min_quota * nq > k)
        min_quota = k / nq;
    for (uint32_t i = 0; i < nq; i++) {
        float exact = q[i].share * (float)(k - min_quota * nq);
        q[i].quota = min_quota + (uint32_t)exact;
        rem[i] = exact - floorf(exact);
        used += q[i].quota;
    }
    while (used < k) {
        uint32_t best = 0;
        for (uint32_t i = 1; i < nq; i++)
            if (rem[i] > rem[best])
                best = i;
        q[best].quota++;
        rem[best] = -1;
        used++;
    }
}

/* Groups clicks by category: quotas[] gets the top max_cats by weight. */
static uint32_t mc_plan(const rc_table *t, const uint32_t *rows, const float *w, uint32_t n,
                        uint32_t max_cats, rc_mc_quota *q)
{
    rc_mc_quota all[MC_MAX];
    uint32_t na = 0;
    float total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = rc_table_cate(t, rows[i]), j;
        float wi = w ? w[i] : 1.0f;
        for (j = 0; j < na && all[j].cate != c; j++)
            ;
        if (j == na) {
            if (na == MC_MAX)
                continue;
            all[na++] = (rc_mc_quota){.cate = c};
        }
        all[j].share += wi;
        total += wi;
    }
    if (total <= 0)
        return 0;
    /* Sort by weight, keep the top max_cats, renormalise their shares. */
    for (uint32_t i = 1; i < na; i++)
        for (uint32_t j = i; j > 0 && all[j].share > all[j - 1].share; j--) {
            rc_mc_quota tmp = all[j];
            all[j] = all[j - 1];
            all[j - 1] = tmp;
        }
    uint32_t nq = RC_MIN(na, max_cats);
    float kept = 0;
    for (uint32_t i = 0; i < nq; i++)
        kept += all[i].share;
    for (uint32_t i = 0; i < nq; i++) {
        q[i] = all[i];
        q[i].share /= kept;
    }
    return nq;
}

static int mc_search_all(struct mc_job *jobs, uint32_t nq, int serial)
{
    pthread_t th[MC_MAX];
    int started[MC_MAX] = {0};
    for (uint32_t i = 1; i < nq; i++)
        started[i] = !serial && pthread_create(&th[i], NULL, mc_run, &jobs[i]) == 0;
    mc_run(&jobs[0]);
    for (uint32_t i = 1; i < nq; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            mc_run(&jobs[i]);
    }
    for (uint32_t i = 0; i < nq; i++)
        if (jobs[i].rc)
            return jobs[i].rc;
    return 0;
}

/* Takes each category's quota in score order, then fills leftover slots with
 * the best remaining candidates of any category. */
static uint32_t mc_merge(struct mc_job *jobs, rc_mc_quota *q, uint32_t nq, uint32_t k, rc_hit *out)
{
    uint32_t n = 0, pos[MC_MAX] = {0};
    for (uint32_t i = 0; i < nq; i++) {
        while (q[i].filled < q[i].quota && pos[i] < jobs[i].n && n < k) {
            out[n++] = jobs[i].hits[pos[i]++];
            q[i].filled++;
        }
    }
    while (n < k) {
        int best = -1;
        for (uint32_t i = 0; i < nq; i++)
            if (pos[i] < jobs[i].n &&
                (best < 0 || jobs[i].hits[pos[i]].score > jobs[best].hits[pos[best]].score))
                best = (int)i;
        if (best < 0)
            break;
        out[n++] = jobs[best].hits[pos[best]++];
        q[best].filled++;
    }
    qsort(out, n, sizeof *out, hit_cmp);
    return n;
}

int rc_recall_multi_category(const rc_table *t, rc_index *ix, const uint32_t *rows, const float *w,
                             uint32_t n, uint32_t k, float overfetch, const rc_index_filter *base,
                             const uint32_t *exclude, uint32_t nexclude, const rc_mc_opts *opts,
                             rc_hit *out, uint32_t *nout, rc_mc_quota *quotas, uint32_t *nq)
{
    return rc_recall_multi_category_timed(t, ix, rows, w, n, k, overfetch, base, exclude, nexclude,
                                          opts, out, nout, quotas, nq, NULL);
}

/* Serial: the sum of the category searches; parallel: the one with the
 * longest index + re-rank time (the critical path). */
static void mc_critical_path(const struct mc_job *jobs, uint32_t nq, int serial,
                             rc_recall_timing *tm)
{
    if (serial) {
        for (uint32_t i = 0; i < nq; i++) {
            tm->lock_ns += jobs[i].tm.lock_ns;
            tm->coarse_ns += jobs[i].tm.coarse_ns;
            tm->scan_ns += jobs[i].tm.scan_ns;
            tm->rerank_ns += jobs[i].tm.rerank_ns;
            tm->parts += jobs[i].tm.parts;
            tm->lists += jobs[i].tm.lists;
            tm->rows += jobs[i].tm.rows;
        }
        return;
    }
    const rc_recall_timing *best = NULL;
    uint64_t best_ns = 0;
    for (uint32_t i = 0; i < nq; i++) {
        const rc_recall_timing *x = &jobs[i].tm;
        uint64_t ns = x->lock_ns + x->coarse_ns + x->scan_ns + x->rerank_ns;
        if (!best || ns > best_ns) {
            best = x;
            best_ns = ns;
        }
        tm->parts += x->parts;
        tm->lists += x->lists;
        tm->rows += x->rows;
    }
    if (!best)
        return;
    tm->lock_ns += best->lock_ns;
    tm->coarse_ns += best->coarse_ns;
    tm->scan_ns += best->scan_ns;
    tm->rerank_ns += best->rerank_ns;
}

int rc_recall_multi_category_timed(const rc_table *t, rc_index *ix, const uint32_t *rows,
                                   const float *w, uint32_t n, uint32_t k, float overfetch,
                                   const rc_index_filter *base, const uint32_t *exclude,
                                   uint32_t nexclude, const rc_mc_opts *opts, rc_hit *out,
                                   uint32_t *nout, rc_mc_quota *quotas, uint32_t *nq,
                                   rc_recall_timing *tm)
{
    uint64_t t0 = tm ? rc_now_ns() : 0;
    uint32_t max_cats = opts && opts->max_cats ? RC_MIN(opts->max_cats, MC_MAX) : 5;
    uint32_t min_quota = opts && opts->min_quota ? opts->min_quota : 1;
    uint32_t dim = rc_table_dim(t), crow[256];
    float cw[256];
    struct mc_job jobs[MC_MAX];
    int rc = 0;
    *nout = 0;
    *nq = mc_plan(t, rows, w, RC_MIN(n, 256u), max_cats, quotas);
    if (!*nq)
        return RC_ENOENT;
    apportion(quotas, *nq, k, min_quota);
    float *qv = malloc((size_t)*nq * dim * sizeof *qv);
    rc_hit *hits = malloc((size_t)*nq * k * sizeof *hits);
    if (!qv || !hits) {
        rc = RC_ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < *nq; i++) {
        uint32_t m = 0;
        for (uint32_t j = 0; j < n && j < 256; j++)
            if (rc_table_cate(t, rows[j]) == quotas[i].cate) {
                crow[m] = rows[j];
                cw[m++] = w ? w[j] : 1.0f;
            }
        /* Each list is searched for k so that a short list can be refilled. */
        jobs[i] = (struct mc_job){.t = t,
                                  .ix = ix,
                                  .q = qv + (size_t)i * dim,
                                  .want = k,
                                  .overfetch = overfetch,
                                  .cate = quotas[i].cate,
                                  .exclude = exclude,
                                  .nexclude = nexclude,
                                  .hits = hits + (size_t)i * k};
        jobs[i].f.city = base ? base->city : -1;
        if (rc_recall_query_vector(t, crow, cw, m, jobs[i].q) != 0)
            jobs[i].want = 0; /* only zero vectors: contributes nothing */
    }
    if (tm)
        tm->query_ns += rc_now_ns() - t0;
    if ((rc = mc_search_all(jobs, *nq, opts && opts->serial)) == 0) {
        uint64_t t1 = tm ? rc_now_ns() : 0;
        *nout = mc_merge(jobs, quotas, *nq, k, out);
        if (tm) {
            mc_critical_path(jobs, *nq, opts && opts->serial, tm);
            tm->rerank_ns += rc_now_ns() - t1;
        }
    }
out:
    free(qv);
    free(hits);
    return rc;
}

/* The best cap rows by cosine that pass f and are not in exclude[0..nex)
 * into top[] (best first); returns their count. */
static uint32_t exact_top(const rc_table *t, const float *q, uint32_t cap, const rc_index_filter *f,
                          const uint32_t *exclude, uint32_t nex, rc_hit *top)
{
    uint32_t rows = rc_table_size(t), have = 0;
    for (uint32_t r = 0; r < rows; r++) {
        if (!passes(t, r, f) || excluded(r, exclude, nex))
            continue;
        float s = rc_table_in_cos(t, r, q);
        if (have == cap && s <= top[cap - 1].score)
            continue;
        uint32_t pos = have < cap ? have++ : cap - 1;
        while (pos > 0 && top[pos - 1].score < s) {
            top[pos] = top[pos - 1];
            pos--;
        }
        top[pos] = (rc_hit){r, s};
    }
    return have;
}

int rc_recall_exact(const rc_table *t, const float *q, uint32_t k, float overfetch,
                    const rc_index_filter *f, const uint32_t *exclude, uint32_t nexclude,
                    rc_hit *out, uint32_t *n)
{
    float w = rc_table_pop_weight(t);
    *n = 0;
    if (k == 0)
        return 0;
    if (w <= 0) { /* the score is the cosine: its exact top-k */
        *n = exact_top(t, q, k, f, exclude, nexclude, out);
        return 0;
    }
    /* As rc_recall_search: the candidates the index would return were it
     * exact, the excluded ones dropped, the rest re-ranked by their score. */
    uint32_t want = (uint32_t)ceilf((float)k * RC_MAX(overfetch, 1.0f)) + nexclude, kept = 0;
    rc_hit *cand = malloc(want * sizeof *cand);
    if (!cand)
        return RC_ENOMEM;
    uint32_t got = exact_top(t, q, want, f, NULL, 0, cand);
    for (uint32_t i = 0; i < got; i++)
        if (!excluded(cand[i].row, exclude, nexclude))
            cand[kept++] = (rc_hit){cand[i].row, score_w(t, cand[i].row, q, w)};
    qsort(cand, kept, sizeof *cand, hit_cmp);
    *n = RC_MIN(kept, k);
    memcpy(out, cand, *n * sizeof *out);
    free(cand);
    return 0;
}
