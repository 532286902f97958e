/* sgns — skip-gram / CBOW with negative sampling, the update step shared by the
 * streaming trainer and the batch trainer (recalld-train).
 *
 * Streaming: rc_sgns_click trains one new click `center` against its session
 * context ctx[0..nctx) (most recent last; the last `window` are used). Skip-gram
 * pairs are (input = context item, output = center) and (input = center,
 * output = context item) — both directions, so a new item clicked next to a known
 * one moves toward it at once. CBOW: input = mean of the context, output = center.
 * Negatives come from rc_sampler_draw (same city, hard share).
 *
 * Thread model: no shared state of its own; callers serialise writes per table
 * row or accept Hogwild races (batch training). */
#ifndef RECALLD_SGNS_H
#define RECALLD_SGNS_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/anchor.h"
#include "recalld/common.h"
#include "recalld/sampler.h"
#include "recalld/table.h"

enum rc_sgns_mode { RC_SGNS_SKIPGRAM = 0, RC_SGNS_CBOW = 1 };

#define RC_SGNS_MAX_WINDOW 64
#define RC_SGNS_MAX_NEG    64

typedef struct rc_sgns_opts {
    enum rc_sgns_mode mode;
    uint32_t window;         /* context clicks used, 0 = 5, at most RC_SGNS_MAX_WINDOW */
    uint32_t negatives;      /* per positive, 0 = 5, max 64 */
    float hard_share;        /* share of negatives that are hard (same city, other cate), 0..1 */
    float lr;                /* learning rate, 0 = 0.025 */
    float subsample;         /* frequent-item subsampling threshold t (word2vec), 0 = off */
    int shared_sampler;      /* 1: draw with rc_sampler_draw_shared (read-only), so that
                              * several threads may train at once (batch Hogwild) */
    rc_sampler_tally *tally; /* with shared_sampler: rc_sgns_click draws with
                              * rc_sampler_draw_tally into it, through the same
                              * pipelined path as the single writer (the
                              * parallel streaming trainer's shards) */
    const rc_anchor *anchor; /* non-NULL: after a click's pairs, rc_sgns_click pulls the
                              * input vectors it changed toward their warm-start
                              * anchor at rate lr (anchor.h; train.anchor) */
} rc_sgns_opts;

typedef struct rc_sgns_work {
    float *grad;     /* dim floats scratch */
    float *ctx_mean; /* dim floats scratch (CBOW) */
    uint32_t *neg;   /* negatives scratch, RC_SGNS_MAX_NEG */
    uint32_t *kept;  /* context rows kept by subsampling, RC_SGNS_MAX_WINDOW */
    double loss_sum; /* sum of -log-likelihood of trained pairs */
    uint64_t pairs;  /* positive pairs trained */
} rc_sgns_work;

/* Allocates scratch for dim; returns 0 or RC_ENOMEM. rc_sgns_work_free frees it. */
int rc_sgns_work_init(rc_sgns_work *w, uint32_t dim);
void rc_sgns_work_free(rc_sgns_work *w);

/* One SGNS update: input vector row `in_row` against output vector of `pos` and
 * its negatives. lr: step. Returns the pair's loss. */
float rc_sgns_pair(rc_table *t, rc_sampler *s, rc_rng *rng, const rc_sgns_opts *o, float lr,
                   const float *in_vec, float *in_grad, uint32_t pos, rc_sgns_work *w);

/* Trains click `center` against ctx (see above) with learning rate lr.
 * Returns the number of positive pairs trained. Subsampling (if o->subsample > 0)
 * may skip a frequent context item using the table's counts and total_count.
 * With o->anchor, once the pairs are trained, each input vector they changed
 * (skip-gram: the center and the kept context rows; CBOW: the context rows)
 * is pulled toward its anchor (rc_anchor_pull at lr); rows without one are
 * left as trained. */
uint32_t rc_sgns_click(rc_table *t, rc_sampler *s, rc_rng *rng, const rc_sgns_opts *o, float lr,
                       uint32_t center, const uint32_t *ctx, uint32_t nctx, uint64_t total_count,
                       rc_sgns_work *w);

#endif
