/* tower internals shared by src/tower.c, src/tower_history.c, src/tower_train.c
 * and the tests: the model layout, the batch workspace, the layers and the
 * batched forward/backward passes.
 *
 * Parameters live in ONE float block, dense layers first, then the embedding
 * tables, so saving, optimiser state and gradient reduction walk flat ranges.
 * Matrices are row-major [out x in]; a dense layer is y = W x + b. */
#ifndef RECALLD_TOWER_IMPL_H
#define RECALLD_TOWER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/tower.h"

/* Embedding tables, in block order. */
enum { TT_E_ID = 0, TT_E_CITY, TT_E_CATE, TT_E_DEV, TT_E_TAG, TT_NTABLES };

typedef struct rc__tower_table {
    size_t off;    /* first float in the parameter block */
    uint32_t rows; /* buckets */
    uint32_t dim;
    uint32_t base; /* first global row (rows of the tables before it) */
} rc__tower_table;

/* A dense layer's place in the block: W [out x in] then b [out]. */
typedef struct rc__tower_dense {
    size_t w, b;
    uint32_t in, out;
} rc__tower_dense;

struct rc_tower_model {
    rc_tower_config cfg;    /* resolved */
    uint32_t di;            /* item input: id_dim + city_dim + cate_dim + w2v_dim */
    uint32_t emb_di;        /* trainable part of it: id_dim + city_dim + cate_dim */
    uint32_t nstats;        /* stats_cates + RC_TOWER_NSTATS_SCALARS */
    uint32_t ctx;           /* dev_dim + nstats */
    uint32_t qin;           /* ctx + tag_dim: the click query's input [ctx, tagpool] */
    uint32_t uin;           /* di + tag_dim + ctx: [clickpool, tagpool, E_dev, stats] */
    rc__tower_dense i1, i2; /* item tower */
    rc__tower_dense u1, u2; /* user tower */
    rc__tower_dense q, tq;  /* click query (qin -> di), tag query (ctx -> tag_dim) */
    size_t rec;             /* recency bias r: max_clicks floats, the last dense parameters */
    rc__tower_table tab[TT_NTABLES];
    size_t ndense;  /* floats of the dense layers and r: block[0 .. ndense) */
    size_t nparams; /* all floats */
    uint32_t nrows; /* global embedding rows (all tables) */
    float *p;       /* the block */
};

/* Bucket of hash h in a table of `rows` buckets: 0 stays the absent row. */
static inline uint32_t rc__tt_bucket(uint64_t h, uint32_t rows)
{
    return h == 0 ? 0 : 1u + (uint32_t)(h % (uint64_t)(rows - 1));
}
static inline float *rc__tt_row(const rc_tower_model *m, int t, uint32_t bucket)
{
    return m->p + m->tab[t].off + (size_t)bucket * m->tab[t].dim;
}

/* Resolves defaults and checks bounds; fills the layout of m (not m->p). */
int rc__tt_layout(rc_tower_model *m, const rc_tower_config *cfg, char *errbuf, size_t errlen);
/* Allocates a model for cfg with zeroed weights (rc_tower_create = this + init). */
int rc__tt_alloc(const rc_tower_config *cfg, rc_tower_model **out, char *errbuf, size_t errlen);

/* ---- layers (exposed for the gradient tests) ---- */
/* Y[n x out] = X[n x in] W^T + b, then max(0, .) when relu. */
void rc__tt_dense_fwd(const float *W, const float *b, const float *X, uint32_t n, uint32_t in,
                      uint32_t out, float *Y, int relu);
/* Backward of the above given its output Y and dY (masked in place by Y > 0
 * when relu): dW += dY^T X, db += column sums of dY, dX = dY W (dX NULL: not
 * wanted). */
void rc__tt_dense_bwd(const float *W, const float *X, const float *Y, float *dY, uint32_t n,
                      uint32_t in, uint32_t out, float *dW, float *db, float *dX, int relu);
/* V = rows of Z over their norms (norms[n] kept for the backward). Z may be V. */
void rc__tt_l2n_fwd(const float *Z, uint32_t n, uint32_t d, float *V, float *norms);
/* dZ = (dV - V (V . dV)) / norm per row. dZ may be dV. */
void rc__tt_l2n_bwd(const float *V, const float *norms, const float *dV, uint32_t n, uint32_t d,
                    float *dZ);
/* Attention pooling of k rows X[k x d]: a = softmax(scale * X q), out = a^T X.
 * k == 0: out = 0. */
void rc__tt_attn_fwd(const float *q, const float *X, uint32_t k, uint32_t d, float scale, float *a,
                     float *out);
/* Backward: dq = (gradient w.r.t. q), dX += gradient w.r.t. X (dX NULL: not
 * wanted). */
void rc__tt_attn_bwd(const float *q, const float *X, const float *a, uint32_t k, uint32_t d,
                     float scale, const float *dout, float *dq, float *dX);
/* Click pooling with the recency bias: a = softmax_j(scale * q . x_j +
 * r[k - 1 - j]) (rows oldest first, so r[0] is the newest row's; q NULL: the
 * r term only, the recency-weighted mean), out = a^T X. k == 0: out = 0. */
void rc__tt_rattn_fwd(const float *q, const float *X, uint32_t k, uint32_t d, float scale,
                      const float *r, float *a, float *out);
/* Backward: dq = gradient w.r.t. q (q NULL: dq unused), dX += w.r.t. X, dr +=
 * w.r.t. r (its first k entries). */
void rc__tt_rattn_bwd(const float *q, const float *X, const float *a, uint32_t k, uint32_t d,
                      float scale, const float *dout, float *dq, float *dX, float *dr);
/* Mean pooling: out = mean of the k rows (k == 0: 0); backward adds dout / k. */
void rc__tt_mean_fwd(const float *X, uint32_t k, uint32_t d, float *out);
void rc__tt_mean_bwd(uint32_t k, uint32_t d, const float *dout, float *dX);

/* ---- batch workspace ---- */
typedef struct rc__tower_ws {
    uint32_t cap_u, cap_i, C, MT; /* users, items, clicks per user, tags per user */
    int train;                    /* backward buffers present */
    /* item side */
    float *ix, *ih, *iv, *inorm;
    uint32_t *irow; /* 3 buckets per item (id, city, cate) */
    /* user side */
    float *cx;                     /* [cap_u][C][di] click inputs */
    uint32_t *crow;                /* [cap_u][C][3] */
    uint32_t *ncl, *ntg, *dev_row; /* dev_row UINT32_MAX: device disabled */
    float *tg;                     /* [cap_u][MT][tag_dim] */
    uint32_t *tgrow;
    float *qt, *ta, *qin, *q, *ca, *uin, *uh, *uv, *unorm;
    /* backward */
    float *div, *dih, *dix;
    float *duv, *duh, *duin, *dq, *dqin, *dcx, *dqt, *dtg;
} rc__tower_ws;

int rc__tt_ws_init(const rc_tower_model *m, rc__tower_ws *ws, uint32_t cap_u, uint32_t cap_i,
                   int train);
void rc__tt_ws_free(rc__tower_ws *ws);
/* Fill slot i / b of the workspace from an input (embedding rows copied). */
void rc__tt_item_gather(const rc_tower_model *m, rc__tower_ws *ws, uint32_t i,
                        const rc_tower_item_in *in);
void rc__tt_user_gather(const rc_tower_model *m, rc__tower_ws *ws, uint32_t b,
                        const rc_tower_user_in *in);
/* Forward of items [0, n) / users [0, n): iv / uv get unit vectors. */
void rc__tt_item_fwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n);
void rc__tt_user_fwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n);

/* ---- gradients ---- */
/* One thread's gradient: dense part flat, embedding rows sparse through a
 * slot map (global row -> slot in the arena). */
typedef struct rc__tower_grad {
    float *dense;      /* ndense */
    uint32_t *slot;    /* nrows, UINT32_MAX = untouched */
    float *arena;      /* cap rows of maxdim */
    uint32_t *touched; /* global rows, in first-touch order */
    uint32_t ntouched, cap, maxdim;
} rc__tower_grad;
int rc__tt_grad_init(const rc_tower_model *m, rc__tower_grad *g, uint32_t cap_rows);
void rc__tt_grad_free(rc__tower_grad *g);
/* Zeroes the dense part and forgets the touched rows. */
void rc__tt_grad_clear(const rc_tower_model *m, rc__tower_grad *g);
/* The gradient row of table t's bucket (zeroed on first touch). NULL when the
 * arena is full (cannot happen when cap_rows bounds the batch's rows). */
float *rc__tt_grad_row(const rc_tower_model *m, rc__tower_grad *g, int t, uint32_t bucket);
/* Global row -> (table, bucket). */
void rc__tt_row_of(const rc_tower_model *m, uint32_t grow, int *t, uint32_t *bucket);

/* Backward of items [0, n) from ws->div (dL/dv), users [0, n) from ws->duv;
 * accumulates into g. ws->div / duv are consumed. */
void rc__tt_item_bwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n, rc__tower_grad *g);
void rc__tt_user_bwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n, rc__tower_grad *g);

/* ---- the sampled-softmax loss of one shard ---- */
/* Items in ws: [0, n) positives, [n, n + ne) the shared easy negatives,
 * [n + ne, n + ne + n * nh) the hard ones, example b's at n + ne + b * nh.
 * Users [0, n). Ids (any integer naming the item) mask a negative equal to the
 * positive. corr: the logQ correction subtracted from each negative's logit
 * (easy: ne, hard: n * nh). */
typedef struct rc__tower_shard {
    uint32_t n, ne, nh;
    const uint32_t *pos_id, *easy_id, *hard_id;
    const float *easy_corr, *hard_corr;
    float scale;   /* gradient scale (1 / examples of the whole mini-batch) */
    float *logits; /* scratch: n * (1 + ne + nh) */
} rc__tower_shard;
/* Forward both towers (inputs already gathered), the loss, and the backward
 * into g (scaled by sh->scale). Returns the SUM of the n example losses. */
double rc__tt_shard_step(const rc_tower_model *m, rc__tower_ws *ws, const rc__tower_shard *sh,
                         rc__tower_grad *g);

/* History internals for the trainer. */
uint32_t rc__tt_history_nusers(const rc_tower_history *h);
const rc_clicklog *rc__tt_history_log(const rc_tower_history *h);
const uint32_t *rc__tt_history_item_rows(const rc_tower_history *h);
const rc_table *rc__tt_history_w2v(const rc_tower_history *h);
/* Canonical city / category (log dense ids) of log item `item`: its first record's. */
uint32_t rc__tt_history_item_city(const rc_tower_history *h, uint32_t item);
uint32_t rc__tt_history_item_cate(const rc_tower_history *h, uint32_t item);

#endif
