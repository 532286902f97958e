/* tower_grad — backward passes of the two towers and the sampled-softmax loss
 * of one shard of a mini-batch (tower_impl.h). Dense layers go through
 * cblas_sgemm over the shard; embedding gradients are sparse rows. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/vec.h"
#include "tower_impl.h"

/* ---- layers ---- */

void rc__tt_dense_bwd(const float *W, const float *X, const float *Y, float *dY, uint32_t n,
                      uint32_t in, uint32_t out, float *dW, float *db, float *dX, int relu)
{
    if (n == 0)
        return;
    if (relu)
        for (size_t i = 0; i < (size_t)n * out; i++)
            if (!(Y[i] > 0))
                dY[i] = 0;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)n, 1.0f, dY,
                (int)out, X, (int)in, 1.0f, dW, (int)in);
    for (uint32_t i = 0; i < n; i++)
        rc_vec_axpy(1.0f, dY + (size_t)i * out, db, out);
    if (dX)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out, 1.0f, dY,
                    (int)out, W, (int)in, 0.0f, dX, (int)in);
}

void rc__tt_l2n_bwd(const float *V, const float *norms, const float *dV, uint32_t n, uint32_t d,
                    float *dZ)
{
    for (uint32_t i = 0; i < n; i++) {
        const float *v = V + (size_t)i * d, *dv = dV + (size_t)i * d;
        float *dz = dZ + (size_t)i * d;
        float dot = rc_vec_dot(v, dv, d), inv = 1.0f / norms[i];
        for (uint32_t j = 0; j < d; j++)
            dz[j] = (dv[j] - v[j] * dot) * inv;
    }
}

void rc__tt_attn_bwd(const float *q, const float *X, const float *a, uint32_t k, uint32_t d,
                     float scale, const float *dout, float *dq, float *dX)
{
    rc__tt_rattn_bwd(q, X, a, k, d, scale, dout, dq, dX, NULL);
}

void rc__tt_rattn_bwd(const float *q, const float *X, const float *a, uint32_t k, uint32_t d,
                      float scale, const float *dout, float *dq, float *dX, float *dr)
{
    float ds[RC_TOWER_MAX_CLICKS > RC_TOWER_MAX_TAGS ? RC_TOWER_MAX_CLICKS : RC_TOWER_MAX_TAGS];
    if (q)
        memset(dq, 0, d * sizeof(float));
    if (k == 0)
        return;
    /* out = sum a_j x_j, a = softmax(s), s_j = scale q . x_j + r[k - 1 - j] */
    float mean = 0;
    for (uint32_t j = 0; j < k; j++) {
        ds[j] = rc_vec_dot(dout, X + (size_t)j * d, d); /* dL/da_j */
        mean += a[j] * ds[j];
    }
    for (uint32_t j = 0; j < k; j++) {
        ds[j] = a[j] * (ds[j] - mean); /* dL/ds_j */
        if (dr)
            dr[k - 1 - j] += ds[j];
        if (q)
            rc_vec_axpy(scale * ds[j], X + (size_t)j * d, dq, d);
        if (dX) {
            rc_vec_axpy(a[j], dout, dX + (size_t)j * d, d);
            if (q)
                rc_vec_axpy(scale * ds[j], q, dX + (size_t)j * d, d);
        }
    }
}

void rc__tt_mean_bwd(uint32_t k, uint32_t d, const float *dout, float *dX)
{
    for (uint32_t j = 0; j < k; j++)
        rc_vec_axpy(1.0f / (float)k, dout, dX + (size_t)j * d, d);
}

/* ---- sparse gradients ---- */

int rc__tt_grad_init(const rc_tower_model *m, rc__tower_grad *g, uint32_t cap_rows)
{
    memset(g, 0, sizeof *g);
    for (int t = 0; t < TT_NTABLES; t++)
        g->maxdim = RC_MAX(g->maxdim, m->tab[t].dim);
    g->cap = RC_MIN(cap_rows, m->nrows);
    g->dense = calloc(m->ndense, sizeof(float));
    g->slot = malloc((size_t)m->nrows * sizeof(uint32_t));
    g->arena = malloc(((size_t)g->cap + 1) * g->maxdim * sizeof(float));
    g->touched = malloc(((size_t)g->cap + 1) * sizeof(uint32_t));
    if (!g->dense || !g->slot || !g->arena || !g->touched) {
        rc__tt_grad_free(g);
        return RC_ENOMEM;
    }
    memset(g->slot, 0xff, (size_t)m->nrows * sizeof(uint32_t));
    return 0;
}

void rc__tt_grad_free(rc__tower_grad *g)
{
    free(g->dense);
    free(g->slot);
    free(g->arena);
    free(g->touched);
    memset(g, 0, sizeof *g);
}

void rc__tt_grad_clear(const rc_tower_model *m, rc__tower_grad *g)
{
    memset(g->dense, 0, m->ndense * sizeof(float));
    for (uint32_t i = 0; i < g->ntouched; i++)
        g->slot[g->touched[i]] = UINT32_MAX;
    g->ntouched = 0;
}

float *rc__tt_grad_row(const rc_tower_model *m, rc__tower_grad *g, int t, uint32_t bucket)
{
    uint32_t r = m->tab[t].base + bucket, s = g->slot[r];
    if (s == UINT32_MAX) {
        if (g->ntouched == g->cap)
            return NULL;
        s = g->ntouched++;
        g->slot[r] = s;
        g->touched[s] = r;
        memset(g->arena + (size_t)s * g->maxdim, 0, g->maxdim * sizeof(float));
    }
    return g->arena + (size_t)s * g->maxdim;
}

void rc__tt_row_of(const rc_tower_model *m, uint32_t grow, int *t, uint32_t *bucket)
{
    int k = 0;
    while (k + 1 < TT_NTABLES && grow >= m->tab[k + 1].base)
        k++;
    *t = k;
    *bucket = grow - m->tab[k].base;
}

static void add_row(const rc_tower_model *m, rc__tower_grad *g, int t, uint32_t bucket,
                    const float *d)
{
    float *r = rc__tt_grad_row(m, g, t, bucket);
    if (r)
        rc_vec_axpy(1.0f, d, r, m->tab[t].dim);
}

/* dx of one item input -> its id / city / cate rows (the w2v part is frozen). */
static void scatter_item(const rc_tower_model *m, rc__tower_grad *g, const uint32_t *rows,
                         const float *dx)
{
    const rc_tower_config *c = &m->cfg;
    add_row(m, g, TT_E_ID, rows[0], dx);
    add_row(m, g, TT_E_CITY, rows[1], dx + c->id_dim);
    add_row(m, g, TT_E_CATE, rows[2], dx + c->id_dim + c->city_dim);
}

/* ---- tower backward ---- */

void rc__tt_item_bwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n, rc__tower_grad *g)
{
    const rc_tower_config *c = &m->cfg;
    float *gd = g->dense;
    rc__tt_l2n_bwd(ws->iv, ws->inorm, ws->div, n, c->dim, ws->div);
    rc__tt_dense_bwd(m->p + m->i2.w, ws->ih, NULL, ws->div, n, m->i2.in, m->i2.out, gd + m->i2.w,
                     gd + m->i2.b, ws->dih, 0);
    rc__tt_dense_bwd(m->p + m->i1.w, ws->ix, ws->ih, ws->dih, n, m->i1.in, m->i1.out, gd + m->i1.w,
                     gd + m->i1.b, ws->dix, 1);
    for (uint32_t i = 0; i < n; i++)
        scatter_item(m, g, ws->irow + (size_t)i * 3, ws->dix + (size_t)i * m->di);
}

/* Click pooling backward: dcx, and the query's gradient into duin's ctx and
 * tagpool parts. */
static void clicks_bwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n, rc__tower_grad *g)
{
    const rc_tower_config *c = &m->cfg;
    int attn = (c->features & RC_TOWER_F_ATTN) != 0;
    float scale = 1.0f / sqrtf((float)m->di);
    for (uint32_t b = 0; b < n; b++) {
        float *dX = ws->dcx + (size_t)b * ws->C * m->di;
        const float *du = ws->duin + (size_t)b * m->uin;
        memset(dX, 0, (size_t)ws->ncl[b] * m->di * sizeof(float));
        rc__tt_rattn_bwd(attn ? ws->q + (size_t)b * m->di : NULL,
                         ws->cx + (size_t)b * ws->C * m->di, ws->ca + (size_t)b * ws->C, ws->ncl[b],
                         m->di, scale, du, ws->dq + (size_t)b * m->di, dX, g->dense + m->rec);
        for (uint32_t j = 0; j < ws->ncl[b]; j++)
            scatter_item(m, g, ws->crow + ((size_t)b * ws->C + j) * 3, dX + (size_t)j * m->di);
    }
    if (!attn)
        return;
    rc__tt_dense_bwd(m->p + m->q.w, ws->qin, NULL, ws->dq, n, m->qin, m->di, g->dense + m->q.w,
                     g->dense + m->q.b, ws->dqin, 0);
    for (uint32_t b = 0; b < n; b++) {
        float *du = ws->duin + (size_t)b * m->uin;
        const float *dqi = ws->dqin + (size_t)b * m->qin;
        rc_vec_axpy(1.0f, dqi, du + m->di + c->tag_dim, m->ctx); /* ctx */
        rc_vec_axpy(1.0f, dqi + m->ctx, du + m->di, c->tag_dim); /* tagpool */
    }
}

static void tags_bwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n, rc__tower_grad *g)
{
    const rc_tower_config *c = &m->cfg;
    if (!(c->features & RC_TOWER_F_TAGS))
        return;
    int attn = (c->features & RC_TOWER_F_ATTN) != 0;
    float scale = 1.0f / sqrtf((float)c->tag_dim);
    for (uint32_t b = 0; b < n; b++) {
        uint32_t nt = ws->ntg[b];
        float *du = ws->duin + (size_t)b * m->uin, *dT = ws->dtg + (size_t)b * ws->MT * c->tag_dim;
        float *dqt = ws->dqt + (size_t)b * c->tag_dim;
        if (nt == 0)
            continue;
        memset(dT, 0, (size_t)nt * c->tag_dim * sizeof(float));
        if (attn) {
            rc__tt_attn_bwd(ws->qt + (size_t)b * c->tag_dim,
                            ws->tg + (size_t)b * ws->MT * c->tag_dim, ws->ta + (size_t)b * ws->MT,
                            nt, c->tag_dim, scale, du + m->di, dqt, dT);
            /* qt = Wtq ctx + btq, ctx = the first m->ctx floats of qin */
            float *dctx = ws->dqin + (size_t)b * m->qin;
            rc__tt_dense_bwd(m->p + m->tq.w, ws->qin + (size_t)b * m->qin, NULL, dqt, 1, m->ctx,
                             c->tag_dim, g->dense + m->tq.w, g->dense + m->tq.b, dctx, 0);
            rc_vec_axpy(1.0f, dctx, du + m->di + c->tag_dim, m->ctx);
        } else {
            rc__tt_mean_bwd(nt, c->tag_dim, du + m->di, dT);
        }
        for (uint32_t j = 0; j < nt; j++)
            add_row(m, g, TT_E_TAG, ws->tgrow[(size_t)b * ws->MT + j], dT + (size_t)j * c->tag_dim);
    }
}

void rc__tt_user_bwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n, rc__tower_grad *g)
{
    const rc_tower_config *c = &m->cfg;
    float *gd = g->dense;
    rc__tt_l2n_bwd(ws->uv, ws->unorm, ws->duv, n, c->dim, ws->duv);
    rc__tt_dense_bwd(m->p + m->u2.w, ws->uh, NULL, ws->duv, n, m->u2.in, m->u2.out, gd + m->u2.w,
                     gd + m->u2.b, ws->duh, 0);
    rc__tt_dense_bwd(m->p + m->u1.w, ws->uin, ws->uh, ws->duh, n, m->u1.in, m->u1.out, gd + m->u1.w,
                     gd + m->u1.b, ws->duin, 1);
    /* Order matters: the click query feeds ctx and tagpool, the tag query
     * feeds ctx, so their gradients are complete only after both. */
    clicks_bwd(m, ws, n, g);
    tags_bwd(m, ws, n, g);
    for (uint32_t b = 0; b < n; b++)
        if (ws->dev_row[b] != UINT32_MAX)
            add_row(m, g, TT_E_DEV, ws->dev_row[b],
                    ws->duin + (size_t)b * m->uin + m->di + c->tag_dim);
}

/* ---- loss ---- */

/* Softmax cross-entropy of row l[0..k) with the label at 0; l becomes
 * (p - y) * gscale. Returns the loss. */
static double xent(float *l, uint32_t k, float gscale)
{
    float mx = l[0];
    for (uint32_t j = 1; j < k; j++)
        if (l[j] > mx)
            mx = l[j];
    double s = 0;
    for (uint32_t j = 0; j < k; j++)
        s += exp((double)(l[j] - mx));
    double lse = (double)mx + log(s), loss = lse - (double)l[0];
    for (uint32_t j = 0; j < k; j++)
        l[j] = (float)(exp((double)l[j] - lse)) * gscale;
    l[0] -= gscale;
    return loss;
}

double rc__tt_shard_step(const rc_tower_model *m, rc__tower_ws *ws, const rc__tower_shard *sh,
                         rc__tower_grad *g)
{
    const uint32_t n = sh->n, ne = sh->ne, nh = sh->nh, d = m->cfg.dim, ld = 1 + ne + nh;
    const uint32_t ni = n + ne + n * nh;
    const float invT = 1.0f / m->cfg.temperature;
    const float *U = ws->uv, *Ve = ws->iv + (size_t)n * d, *Vh = Ve + (size_t)ne * d;
    float *L = sh->logits;
    if (n == 0)
        return 0;
    rc__tt_item_fwd(m, ws, ni);
    rc__tt_user_fwd(m, ws, n);
    if (ne)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)ne, (int)d, invT, U,
                    (int)d, Ve, (int)d, 0.0f, L + 1, (int)ld);
    double loss = 0;
    for (uint32_t b = 0; b < n; b++) {
        float *l = L + (size_t)b * ld;
        const float *u = U + (size_t)b * d;
        l[0] = rc_vec_dot(u, ws->iv + (size_t)b * d, d) * invT;
        for (uint32_t e = 0; e < ne; e++)
            l[1 + e] = sh->easy_id[e] == sh->pos_id[b] ? -INFINITY : l[1 + e] - sh->easy_corr[e];
        for (uint32_t k = 0; k < nh; k++) {
            size_t h = (size_t)b * nh + k;
            l[1 + ne + k] = sh->hard_id[h] == sh->pos_id[b]
                                ? -INFINITY
                                : rc_vec_dot(u, Vh + h * d, d) * invT - sh->hard_corr[h];
        }
        loss += xent(l, ld, sh->scale * invT);
    }
    /* l now holds dL/dcos per logit: dU = G V, dV = G^T U. */
    memset(ws->div, 0, (size_t)ni * d * sizeof(float));
    for (uint32_t b = 0; b < n; b++) {
        const float *l = L + (size_t)b * ld, *u = U + (size_t)b * d;
        float *du = ws->duv + (size_t)b * d;
        for (uint32_t j = 0; j < d; j++)
            du[j] = l[0] * ws->iv[(size_t)b * d + j];
        rc_vec_axpy(l[0], u, ws->div + (size_t)b * d, d);
        for (uint32_t k = 0; k < nh; k++) {
            size_t h = (size_t)b * nh + k;
            rc_vec_axpy(l[1 + ne + k], Vh + h * d, du, d);
            rc_vec_axpy(l[1 + ne + k], u, ws->div + ((size_t)n + ne + h) * d, d);
        }
    }
    if (ne) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)ne, 1.0f, L + 1,
                    (int)ld, Ve, (int)d, 1.0f, ws->duv, (int)d);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ne, (int)d, (int)n, 1.0f, L + 1,
                    (int)ld, U, (int)d, 0.0f, ws->div + (size_t)n * d, (int)d);
    }
    rc__tt_item_bwd(m, ws, ni, g);
    rc__tt_user_bwd(m, ws, n, g);
    return loss;
}
