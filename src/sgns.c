/* sgns — the word2vec negative-sampling update, on table rows in place.
 *
 * Per positive pair: g = lr * (label - sigmoid(in . out)) for the positive
 * (label 1) and each negative (label 0); the input's gradient is accumulated
 * in a scratch vector and applied once after all outputs, as word2vec does,
 * so every output sees the same input. Vectors are updated without locks
 * (Hogwild): the batch trainer's threads and the streaming trainer's shards
 * (model.trainer_threads > 1) race on rows they share, as word2vec's do. */
#include "recalld/sgns.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/vec.h"

#define DEFAULT_WINDOW 5u
#define DEFAULT_NEG    5u
#define DEFAULT_LR     0.025f
#define CLICK_NEG_MAX  1024u /* negatives of one click drawn ahead (skipgram_click) */
/* Pairs whose negatives' rows are prefetched ahead of the pair in training:
 * 1 and 2 measured alike; all of the click's at once was slower (the loads
 * queue behind each other and evict what is in use). */
#define PAIRS_AHEAD 2u

int rc_sgns_work_init(rc_sgns_work *w, uint32_t dim)
{
    if (!w || dim == 0)
        return RC_EINVAL;
    memset(w, 0, sizeof(*w));
    size_t bytes = ((size_t)dim * sizeof(float) + 63) / 64 * 64;
    w->grad = aligned_alloc(64, bytes);
    w->ctx_mean = aligned_alloc(64, bytes);
    w->neg = malloc(RC_SGNS_MAX_NEG * sizeof(uint32_t));
    w->kept = malloc(RC_SGNS_MAX_WINDOW * sizeof(uint32_t));
    if (!w->grad || !w->ctx_mean || !w->neg || !w->kept) {
        rc_sgns_work_free(w);
        return RC_ENOMEM;
    }
    return 0;
}

void rc_sgns_work_free(rc_sgns_work *w)
{
    if (!w)
        return;
    free(w->grad);
    free(w->ctx_mean);
    free(w->neg);
    free(w->kept);
    w->grad = w->ctx_mean = NULL;
    w->neg = w->kept = NULL;
}

/* One output row against in_vec; returns -log-likelihood of the label. */
static inline float update_out(float *out, const float *in_vec, float *in_grad, float lr, int label,
                               uint32_t dim)
{
    return rc_vec_sgns_out(out, in_vec, in_grad, lr, label, dim);
}

static inline void prefetch_row(const float *v, uint32_t dim)
{
    for (uint32_t i = 0; i < dim; i += 16)
        __builtin_prefetch(v + i, 1, 3);
}

float rc_sgns_pair(rc_table *t, rc_sampler *s, rc_rng *rng, const rc_sgns_opts *o, float lr,
                   const float *in_vec, float *in_grad, uint32_t pos, rc_sgns_work *w)
{
    uint32_t dim = rc_table_dim(t);
    uint32_t nneg = o->negatives ? RC_MIN(o->negatives, RC_SGNS_MAX_NEG) : DEFAULT_NEG;
    uint32_t k = 0;
    if (s && o->shared_sampler && o->tally)
        k = rc_sampler_draw_tally(s, rng, pos, o->hard_share, nneg, w->neg, o->tally);
    else if (s && o->shared_sampler)
        k = rc_sampler_draw_shared(s, rng, pos, o->hard_share, nneg, w->neg);
    else if (s)
        k = rc_sampler_draw(s, rng, pos, o->hard_share, nneg, w->neg);
    /* Negative rows are random, hence cold: start all their loads now so the
     * misses overlap instead of stalling each dot product in turn. */
    for (uint32_t i = 0; i < k; i++)
        prefetch_row(rc_table_out(t, w->neg[i]), dim);
    float loss = update_out(rc_table_out(t, pos), in_vec, in_grad, lr, 1, dim);
    for (uint32_t i = 0; i < k; i++)
        if (w->neg[i] != pos)
            loss += update_out(rc_table_out(t, w->neg[i]), in_vec, in_grad, lr, 0, dim);
    w->loss_sum += loss;
    w->pairs++;
    return loss;
}

/* word2vec's subsampling: keeps an item of frequency f with probability
 * (sqrt(f/t) + 1) * t/f, i.e. always when f <= t. */
static int keep(const rc_table *t, rc_rng *rng, uint32_t row, float thr, uint64_t total)
{
    if (thr <= 0 || total == 0)
        return 1;
    uint32_t c = rc_table_count(t, row);
    if (c == 0)
        return 1;
    float f = (float)((double)c / (double)total);
    float p = (sqrtf(f / thr) + 1.0f) * thr / f;
    return p >= 1.0f || rc_rng_float(rng) < p;
}

/* Trains the pair (in = row `in`, out = `pos`) and applies the input gradient. */
static void sg_pair(rc_table *t, rc_sampler *s, rc_rng *rng, const rc_sgns_opts *o, float lr,
                    uint32_t in, uint32_t pos, rc_sgns_work *w)
{
    uint32_t dim = rc_table_dim(t);
    float *iv = rc_table_in(t, in);
    memset(w->grad, 0, dim * sizeof(float));
    rc_sgns_pair(t, s, rng, o, lr, iv, w->grad, pos, w);
    rc_vec_axpy(1.0f, w->grad, iv, dim);
}

static uint32_t cbow(rc_table *t, rc_sampler *s, rc_rng *rng, const rc_sgns_opts *o, float lr,
                     uint32_t center, uint32_t n, rc_sgns_work *w)
{
    uint32_t dim = rc_table_dim(t);
    memset(w->ctx_mean, 0, dim * sizeof(float));
    for (uint32_t i = 0; i < n; i++)
        rc_vec_axpy(1.0f, rc_table_in(t, w->kept[i]), w->ctx_mean, dim);
    rc_vec_scale(1.0f / (float)n, w->ctx_mean, dim);
    memset(w->grad, 0, dim * sizeof(float));
    rc_sgns_pair(t, s, rng, o, lr, w->ctx_mean, w->grad, center, w);
    /* As in word2vec, each context input gets the whole gradient of the mean. */
    for (uint32_t i = 0; i < n; i++)
        rc_vec_axpy(1.0f, w->grad, rc_table_in(t, w->kept[i]), dim);
    return 1;
}

/* Skip-gram over one click, pipelined for memory: all negatives of the click
 * are drawn first (the same draws, in the same order, as pair by pair: the
 * sampler does not depend on the vectors), then the output rows of pair p+2
 * are prefetched while pair p trains, so the random rows' cache misses
 * overlap with work instead of stalling each pair in turn. Pairs are
 * (kept[i] -> center), (center -> kept[i]) for each i, as in sg_pair. */
static uint32_t skipgram_click(rc_table *t, rc_sampler *s, rc_rng *rng, float lr, uint32_t center,
                               uint32_t n, uint32_t k, float hard_share, rc_sampler_tally *tally,
                               rc_sgns_work *w)
{
    uint32_t dim = rc_table_dim(t), np = 2 * n, cnt[2 * RC_SGNS_MAX_WINDOW];
    uint32_t neg[CLICK_NEG_MAX];
    float *cin = rc_table_in(t, center), *cout = rc_table_out(t, center);
    /* The session's rows are not hot either (clicked a while ago): their
     * loads start now and overlap with the draws. */
    prefetch_row(cin, dim);
    prefetch_row(cout, dim);
    for (uint32_t i = 0; i < n; i++) {
        prefetch_row(rc_table_in(t, w->kept[i]), dim);
        prefetch_row(rc_table_out(t, w->kept[i]), dim);
    }
    uint32_t pos[2 * RC_SGNS_MAX_WINDOW];
    for (uint32_t p = 0; p < np; p++)
        pos[p] = p & 1 ? w->kept[p >> 1] : center;
    rc_rng peek = *rng;
    rc_sampler_prefetch(s, &peek, pos, np, hard_share, k);
    for (uint32_t p = 0; p < np; p++)
        cnt[p] = tally ? rc_sampler_draw_tally(s, rng, pos[p], hard_share, k, neg + p * k, tally)
                       : rc_sampler_draw(s, rng, pos[p], hard_share, k, neg + p * k);
    for (uint32_t p = 0; p < np && p < PAIRS_AHEAD; p++)
        for (uint32_t j = 0; j < cnt[p]; j++)
            prefetch_row(rc_table_out(t, neg[p * k + j]), dim);
    for (uint32_t p = 0; p < np; p++) {
        if (p + PAIRS_AHEAD < np) {
            for (uint32_t j = 0; j < cnt[p + PAIRS_AHEAD]; j++)
                prefetch_row(rc_table_out(t, neg[(p + PAIRS_AHEAD) * k + j]), dim);
        }
        uint32_t other = w->kept[p >> 1];
        float *iv = p & 1 ? cin : rc_table_in(t, other);
        float *po = p & 1 ? rc_table_out(t, other) : cout;
        memset(w->grad, 0, dim * sizeof(float));
        float loss = update_out(po, iv, w->grad, lr, 1, dim);
        for (uint32_t j = 0; j < cnt[p]; j++) {
            uint32_t x = neg[p * k + j];
            if (x != pos[p])
                loss += update_out(rc_table_out(t, x), iv, w->grad, lr, 0, dim);
        }
        w->loss_sum += loss;
        w->pairs++;
        rc_vec_axpy(1.0f, w->grad, iv, dim);
    }
    return np;
}

uint32_t rc_sgns_click(rc_table *t, rc_sampler *s, rc_rng *rng, const rc_sgns_opts *o, float lr,
                       uint32_t center, const uint32_t *ctx, uint32_t nctx, uint64_t total_count,
                       rc_sgns_work *w)
{
    if (!t || !rng || !o || !w || (nctx && !ctx) || center >= rc_table_size(t))
        return 0;
    uint32_t win = o->window ? RC_MIN(o->window, RC_SGNS_MAX_WINDOW) : DEFAULT_WINDOW;
    uint32_t first = nctx > win ? nctx - win : 0, n = 0, size = rc_table_size(t);
    if (lr <= 0)
        lr = o->lr > 0 ? o->lr : DEFAULT_LR;
    /* A repeated click on the same item is no co-occurrence evidence. */
    for (uint32_t i = first; i < nctx; i++)
        if (ctx[i] != center && ctx[i] < size && keep(t, rng, ctx[i], o->subsample, total_count))
            w->kept[n++] = ctx[i];
    if (n == 0)
        return 0;
    uint32_t np;
    if (o->mode == RC_SGNS_CBOW) {
        np = cbow(t, s, rng, o, lr, center, n, w);
    } else {
        uint32_t nneg = o->negatives ? RC_MIN(o->negatives, RC_SGNS_MAX_NEG) : DEFAULT_NEG;
        rc_sampler_tally *tally = o->shared_sampler ? o->tally : NULL;
        if (s && (!o->shared_sampler || tally) && 2 * n * nneg <= CLICK_NEG_MAX) {
            np = skipgram_click(t, s, rng, lr, center, n, nneg, o->hard_share, tally, w);
        } else {
            for (uint32_t i = 0; i < n; i++) {
                sg_pair(t, s, rng, o, lr, w->kept[i], center, w);
                sg_pair(t, s, rng, o, lr, center, w->kept[i], w);
            }
            np = 2 * n;
        }
    }
    if (o->anchor) { /* w->grad is free again: the anchor's decode buffer */
        if (o->mode != RC_SGNS_CBOW)
            rc_anchor_pull(o->anchor, t, center, lr, w->grad);
        for (uint32_t i = 0; i < n; i++)
            rc_anchor_pull(o->anchor, t, w->kept[i], lr, w->grad);
    }
    return np;
}
