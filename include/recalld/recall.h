/* recall — the query side shared by the server and the evaluator: a query
 * vector from a user's recent clicks, index search with over-fetch, exact
 * re-scoring with the table's current vectors, exclusion of already-clicked
 * items and filters.
 *
 * Thread-safe: any number of threads may query while the trainer writes (the
 * index has its own locks; table vectors are read without locks and may be
 * mid-update, which only perturbs a score). */
#ifndef RECALLD_RECALL_H
#define RECALLD_RECALL_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/index.h"
#include "recalld/table.h"

typedef struct rc_hit {
    uint32_t row;
    float score; /* rc_recall_score: the cosine between the query and the item's current
                    input vector, plus its popularity term when the table has a weight */
} rc_hit;

/* The order of every top-k list: a higher score first, then the lower row, so
 * ties come out the same on every run. */
static inline int rc_hit_better(rc_hit a, rc_hit b)
{
    return a.score > b.score || (a.score == b.score && a.row < b.row);
}

/* Offers x to top[0..*n), the best k so far in rc_hit_better order (k >= 1):
 * x is inserted at its place while fewer than k are held, else it replaces the
 * last one when it is better, and is dropped otherwise. */
static inline void rc_hit_offer(rc_hit *top, uint32_t *n, uint32_t k, rc_hit x)
{
    uint32_t i = *n;
    if (i == k) {
        if (!rc_hit_better(x, top[k - 1]))
            return;
        i = k - 1;
    } else {
        (*n)++;
    }
    while (i > 0 && rc_hit_better(x, top[i - 1])) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = x;
}

/* The score every recall ranks by: cos(q, row's input vector) + w * ln(1 +
 * row's clicks), w = rc_table_pop_weight(t) (recall.popularity_weight; 0 =
 * the cosine alone). The term is a prior for how likely an item is clicked at
 * all: between two items of clicks n1 and n2 it adds w * ln((1 + n1) / (1 +
 * n2)), whatever the corpus size. q is unit length. */
float rc_recall_score(const rc_table *t, uint32_t row, const float *q);

/* q[dim] = mean of the L2-normalised input vectors of rows[0..n), weighted by
 * w[i] when w is non-NULL; then normalised. Returns 0, or RC_ENOENT when n == 0
 * or every vector is zero. */
int rc_recall_query_vector(const rc_table *t, const uint32_t *rows, const float *w, uint32_t n,
                           float *q);

/* Top-k rows for query q: searches the index for ceil(k * overfetch) + nexclude
 * candidates (filter f may be NULL), re-scores each with rc_recall_score (the current table
 * vector), drops rows in exclude[0..nexclude) and rows failing the filter, sorts
 * by score and keeps k. out has room for k. Returns 0 or a negative RC_E*. */
int rc_recall_search(const rc_table *t, rc_index *ix, const float *q, uint32_t k, float overfetch,
                     const rc_index_filter *f, const uint32_t *exclude, uint32_t nexclude,
                     rc_hit *out, uint32_t *n);

/* Where one recall spent its time (ns, rc_now_ns clock), for the per-stage
 * latency histograms of the `stats` op. The *_timed functions add to the
 * fields, so one struct can cover several searches of a request. */
typedef struct rc_recall_timing {
    uint64_t query_ns;    /* session look-up, weights, scope and query vector(s) */
    uint64_t lock_ns;     /* index: acquiring the partitions (rc_index_timing) */
    uint64_t coarse_ns;   /* index: scoring IVF centroids, choosing lists */
    uint64_t scan_ns;     /* index: scanning the chosen lists and flat partitions */
    uint64_t rerank_ns;   /* re-scoring with the table's vectors, exclusion, sort */
    uint64_t fallback_ns; /* the popular-items fallback */
    uint64_t cooc_ns;     /* itemknn / fused: the co-occurrence query and the fusion */
    uint32_t parts, lists;
    uint64_t rows; /* index: rows scored (IVF lists' and flat partitions') */
} rc_recall_timing;

/* rc_recall_search that adds its stages to *tm (NULL: no timing). Up to
 * RC_RECALL_STACK_CAND candidates live on the caller's stack: no allocation on
 * the hot path for the usual k and overfetch. */
#define RC_RECALL_STACK_CAND 1024
int rc_recall_search_timed(const rc_table *t, rc_index *ix, const float *q, uint32_t k,
                           float overfetch, const rc_index_filter *f, const uint32_t *exclude,
                           uint32_t nexclude, rc_hit *out, uint32_t *n, rc_recall_timing *tm);

/* rc_recall_search ranked by the cosine alone, whatever the table's
 * popularity weight: the items most like an item (the `similar` op), where a
 * new item belongs beside its neighbours from its first click. */
int rc_recall_search_cos(const rc_table *t, rc_index *ix, const float *q, uint32_t k,
                         float overfetch, const rc_index_filter *f, const uint32_t *exclude,
                         uint32_t nexclude, rc_hit *out, uint32_t *n);

/* ---- multi-category parallel recall (58.com) ----
 * The user's recent clicks are split by category (business line); each
 * category's clicks give a vector (weighted mean), searched restricted to that
 * category (its own index partitions: exact partition filter), all categories
 * in parallel (one thread each beyond the first); the lists are merged with
 * per-category quotas proportional to the category's share of the click
 * weights (largest remainder; at least min_quota each for the top max_cats
 * categories). Slots a category cannot fill go to the best remaining
 * candidates of the others. The merged list is ordered by score. */
typedef struct rc_mc_opts {
    uint32_t max_cats;  /* categories searched, by weight, 0 = 5 */
    uint32_t min_quota; /* slots guaranteed per searched category, 0 = 1 */
    int serial;         /* 1: search categories one after another (tests, eval) */
} rc_mc_opts;

typedef struct rc_mc_quota {
    uint32_t cate;   /* category id */
    float share;     /* of the click weight */
    uint32_t quota;  /* slots assigned */
    uint32_t filled; /* slots taken by this category's items */
} rc_mc_quota;

/* rows/w: the user's clicks and weights (w NULL = 1 each); base: city filter
 * (its cates part is ignored); exclude: rows to drop (usually rows itself).
 * quotas (room for max_cats) receive the plan; *nq its length. out has room
 * for k. Returns 0, RC_ENOENT (no usable click) or a negative RC_E*. */
int rc_recall_multi_category(const rc_table *t, rc_index *ix, const uint32_t *rows, const float *w,
                             uint32_t n, uint32_t k, float overfetch, const rc_index_filter *base,
                             const uint32_t *exclude, uint32_t nexclude, const rc_mc_opts *opts,
                             rc_hit *out, uint32_t *nout, rc_mc_quota *quotas, uint32_t *nq);
/* The same, adding to *tm (NULL: no timing): query_ns covers the plan and the
 * vectors; the index and re-rank stages are the sum of the category searches
 * when serial, else those of the slowest one (the critical path). */
int rc_recall_multi_category_timed(const rc_table *t, rc_index *ix, const uint32_t *rows,
                                   const float *w, uint32_t n, uint32_t k, float overfetch,
                                   const rc_index_filter *base, const uint32_t *exclude,
                                   uint32_t nexclude, const rc_mc_opts *opts, rc_hit *out,
                                   uint32_t *nout, rc_mc_quota *quotas, uint32_t *nq,
                                   rc_recall_timing *tm);

/* Time-decay weights: w[i] = 2^-((ts_newest - ts[i]) / half_life_ms); all 1
 * when half_life_ms <= 0. */
void rc_recall_decay_weights(const int64_t *ts, uint32_t n, int64_t half_life_ms, float *w);

/* rc_recall_search with a brute-force scan of every table row in place of the
 * index: the reference for what the index loses, and a debugging aid. Its
 * candidates are the exact top ceil(k * overfetch) + nexclude by cosine, then
 * re-ranked by rc_recall_score as the index's are; without a popularity
 * weight that is the exact top-k by cosine. Returns 0, or RC_ENOMEM.
 * O(rows * dim). */
int rc_recall_exact(const rc_table *t, const float *q, uint32_t k, float overfetch,
                    const rc_index_filter *f, const uint32_t *exclude, uint32_t nexclude,
                    rc_hit *out, uint32_t *n);

#endif
