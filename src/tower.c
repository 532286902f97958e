/* tower — the two-tower model: layout, initialisation, layers, the batched
 * forward pass (training and inference share it: inference is a batch of
 * one), the inference API and the model file. Backward passes and the loss
 * are in tower_grad.c, the click-log history in tower_history.c, training in
 * tower_train.c. */
#include "recalld/tower.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/model.h"
#include "recalld/vec.h"
#include "tower_impl.h"

#define MAGIC          "RCTOWER1"
#define VERSION        2u  /* 2: the recency bias r joined the dense parameters */
#define NCFG           17u /* u32 config fields in the file */
#define MAX_BUCKETS    (1u << 24)
#define MAX_EMB_DIM    256u
#define MAX_HIDDEN     4096u
#define MAX_STATS_CATE 1024u
#define MAX_PARAMS     ((size_t)1 << 31) /* floats: 8 GiB; refuses absurd configs early */
#define EMB_INIT       0.1f              /* embedding rows start uniform in +-EMB_INIT */

/* ---- hash ---- */

uint64_t rc_tower_hash(const char *s, size_t len)
{
    if (!s || len == 0)
        return 0;
    /* FNV-1a with its own offset basis, then murmur3's fmix64 so that the low
     * bits (bucket = h % rows) depend on every byte. Frozen: part of the
     * model file's meaning. */
    uint64_t h = 0xcbf29ce484222325ull ^ 0x7477746f776572ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h ? h : 1;
}

/* ---- configuration and layout ---- */

static uint32_t def(uint32_t v, uint32_t d) { return v ? v : d; }

static int check_range(const char *name, uint32_t v, uint32_t lo, uint32_t hi, char *eb, size_t el)
{
    if (v < lo || v > hi)
        return rc_err(eb, el, RC_EINVAL, "tower config: %s = %u: expected %u..%u", name, v, lo, hi);
    return 0;
}

static void resolve(rc_tower_config *c)
{
    c->dim = def(c->dim, 64);
    c->hidden = def(c->hidden, 128);
    c->id_buckets = def(c->id_buckets, 262144);
    c->id_dim = def(c->id_dim, 16);
    c->city_buckets = def(c->city_buckets, 4096);
    c->city_dim = def(c->city_dim, 8);
    c->cate_buckets = def(c->cate_buckets, 4096);
    c->cate_dim = def(c->cate_dim, 8);
    c->device_buckets = def(c->device_buckets, 1024);
    c->device_dim = def(c->device_dim, 8);
    c->tag_buckets = def(c->tag_buckets, 16384);
    c->tag_dim = def(c->tag_dim, 16);
    c->stats_cates = def(c->stats_cates, 32);
    c->max_clicks = def(c->max_clicks, 50);
    if (c->temperature == 0)
        c->temperature = 0.05f;
}

static int check_config(const rc_tower_config *c, char *eb, size_t el)
{
    int rc;
    if ((rc = check_range("dim", c->dim, 8, 1024, eb, el)) ||
        (rc = check_range("w2v_dim", c->w2v_dim, 8, 1024, eb, el)) ||
        (rc = check_range("hidden", c->hidden, 1, MAX_HIDDEN, eb, el)) ||
        (rc = check_range("id_buckets", c->id_buckets, 2, MAX_BUCKETS, eb, el)) ||
        (rc = check_range("id_dim", c->id_dim, 1, MAX_EMB_DIM, eb, el)) ||
        (rc = check_range("city_buckets", c->city_buckets, 2, MAX_BUCKETS, eb, el)) ||
        (rc = check_range("city_dim", c->city_dim, 1, MAX_EMB_DIM, eb, el)) ||
        (rc = check_range("cate_buckets", c->cate_buckets, 2, MAX_BUCKETS, eb, el)) ||
        (rc = check_range("cate_dim", c->cate_dim, 1, MAX_EMB_DIM, eb, el)) ||
        (rc = check_range("device_buckets", c->device_buckets, 2, MAX_BUCKETS, eb, el)) ||
        (rc = check_range("device_dim", c->device_dim, 1, MAX_EMB_DIM, eb, el)) ||
        (rc = check_range("tag_buckets", c->tag_buckets, 2, MAX_BUCKETS, eb, el)) ||
        (rc = check_range("tag_dim", c->tag_dim, 1, MAX_EMB_DIM, eb, el)) ||
        (rc = check_range("stats_cates", c->stats_cates, 1, MAX_STATS_CATE, eb, el)) ||
        (rc = check_range("max_clicks", c->max_clicks, 1, RC_TOWER_MAX_CLICKS, eb, el)) ||
        (rc = check_range("features", c->features, 0, RC_TOWER_F_ALL, eb, el)))
        return rc;
    if (c->dim % 8)
        return rc_err(eb, el, RC_EINVAL, "tower config: dim = %u: expected a multiple of 8",
                      c->dim);
    if (c->w2v_dim % 8)
        return rc_err(eb, el, RC_EINVAL, "tower config: w2v_dim = %u: expected a multiple of 8",
                      c->w2v_dim);
    if (!(c->temperature >= 1e-3f && c->temperature <= 100.0f))
        return rc_err(eb, el, RC_EINVAL, "tower config: temperature = %g: expected 0.001..100",
                      (double)c->temperature);
    return 0;
}

static size_t add_dense(rc__tower_dense *d, size_t at, uint32_t in, uint32_t out)
{
    d->in = in;
    d->out = out;
    d->w = at;
    d->b = at + (size_t)in * out;
    return d->b + out;
}

int rc__tt_layout(rc_tower_model *m, const rc_tower_config *cfg, char *eb, size_t el)
{
    rc_tower_config c = *cfg;
    resolve(&c);
    int rc = check_config(&c, eb, el);
    if (rc)
        return rc;
    m->cfg = c;
    m->emb_di = c.id_dim + c.city_dim + c.cate_dim;
    m->di = m->emb_di + c.w2v_dim;
    m->nstats = c.stats_cates + RC_TOWER_NSTATS_SCALARS;
    m->ctx = c.device_dim + m->nstats;
    m->qin = m->ctx + c.tag_dim;
    m->uin = m->di + c.tag_dim + m->ctx;
    size_t at = 0;
    at = add_dense(&m->i1, at, m->di, c.hidden);
    at = add_dense(&m->i2, at, c.hidden, c.dim);
    at = add_dense(&m->u1, at, m->uin, c.hidden);
    at = add_dense(&m->u2, at, c.hidden, c.dim);
    at = add_dense(&m->q, at, m->qin, m->di);
    at = add_dense(&m->tq, at, m->ctx, c.tag_dim);
    m->rec = at;
    at += c.max_clicks;
    m->ndense = at;
    const uint32_t rows[TT_NTABLES] = {c.id_buckets, c.city_buckets, c.cate_buckets,
                                       c.device_buckets, c.tag_buckets};
    const uint32_t dims[TT_NTABLES] = {c.id_dim, c.city_dim, c.cate_dim, c.device_dim, c.tag_dim};
    uint64_t base = 0;
    for (int t = 0; t < TT_NTABLES; t++) {
        m->tab[t] =
            (rc__tower_table){.off = at, .rows = rows[t], .dim = dims[t], .base = (uint32_t)base};
        at += (size_t)rows[t] * dims[t];
        base += rows[t];
    }
    m->nrows = (uint32_t)base; /* <= 5 * 2^24 */
    m->nparams = at;
    if (at > MAX_PARAMS)
        return rc_err(eb, el, RC_EINVAL, "tower config: %zu parameters exceed the bound %zu", at,
                      MAX_PARAMS);
    return 0;
}

int rc__tt_alloc(const rc_tower_config *cfg, rc_tower_model **out, char *eb, size_t el)
{
    *out = NULL;
    rc_tower_model *m = calloc(1, sizeof *m);
    if (!m)
        return rc_err(eb, el, RC_ENOMEM, "tower: out of memory");
    int rc = rc__tt_layout(m, cfg, eb, el);
    if (rc) {
        free(m);
        return rc;
    }
    m->p = calloc(m->nparams, sizeof(float));
    if (!m->p) {
        size_t np = m->nparams;
        free(m);
        return rc_err(eb, el, RC_ENOMEM, "tower: out of memory (%zu parameters)", np);
    }
    *out = m;
    return 0;
}

static void init_uniform(float *p, size_t n, float lim, rc_rng *r)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (2.0f * rc_rng_float(r) - 1.0f) * lim;
}

int rc_tower_create(const rc_tower_config *cfg, uint64_t seed, rc_tower_model **out, char *eb,
                    size_t el)
{
    if (!out)
        return rc_err(eb, el, RC_EINVAL, "tower: out is NULL");
    *out = NULL;
    if (!cfg)
        return rc_err(eb, el, RC_EINVAL, "tower: cfg is NULL");
    rc_tower_model *m;
    int rc = rc__tt_alloc(cfg, &m, eb, el);
    if (rc)
        return rc;
    rc_rng r;
    rc_rng_seed(&r, seed ? seed : 1);
    /* Xavier-uniform dense weights, zero biases (calloc). */
    const rc__tower_dense *ds[] = {&m->i1, &m->i2, &m->u1, &m->u2, &m->q, &m->tq};
    for (size_t i = 0; i < RC_ARRAY_LEN(ds); i++)
        init_uniform(m->p + ds[i]->w, (size_t)ds[i]->in * ds[i]->out,
                     sqrtf(6.0f / (float)(ds[i]->in + ds[i]->out)), &r);
    init_uniform(m->p + m->ndense, m->nparams - m->ndense, EMB_INIT, &r);
    *out = m;
    return 0;
}

void rc_tower_destroy(rc_tower_model *m)
{
    if (!m)
        return;
    free(m->p);
    free(m);
}

const rc_tower_config *rc_tower_config_of(const rc_tower_model *m) { return m ? &m->cfg : NULL; }

size_t rc_tower_params(const rc_tower_model *m) { return m ? m->nparams : 0; }

size_t rc_tower_bytes(const rc_tower_model *m)
{
    return m ? sizeof *m + m->nparams * sizeof(float) : 0;
}

/* ---- layers ---- */

void rc__tt_dense_fwd(const float *W, const float *b, const float *X, uint32_t n, uint32_t in,
                      uint32_t out, float *Y, int relu)
{
    if (n == 0)
        return;
    for (uint32_t i = 0; i < n; i++)
        memcpy(Y + (size_t)i * out, b, out * sizeof(float));
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)out, (int)in, 1.0f, W, (int)in, X, 1, 1.0f, Y,
                    1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f, X,
                    (int)in, W, (int)in, 1.0f, Y, (int)out);
    if (relu)
        for (size_t i = 0; i < (size_t)n * out; i++)
            Y[i] = Y[i] > 0 ? Y[i] : 0;
}

void rc__tt_l2n_fwd(const float *Z, uint32_t n, uint32_t d, float *V, float *norms)
{
    for (uint32_t i = 0; i < n; i++) {
        const float *z = Z + (size_t)i * d;
        float *v = V + (size_t)i * d;
        float s = sqrtf(rc_vec_dot(z, z, d));
        /* A zero z (all ReLUs off and zero bias) has no direction: keep the
         * floor so the result stays finite; training moves it away. */
        if (s < 1e-12f)
            s = 1e-12f;
        norms[i] = s;
        float inv = 1.0f / s;
        for (uint32_t j = 0; j < d; j++)
            v[j] = z[j] * inv;
    }
}

void rc__tt_attn_fwd(const float *q, const float *X, uint32_t k, uint32_t d, float scale, float *a,
                     float *out)
{
    rc__tt_rattn_fwd(q, X, k, d, scale, NULL, a, out);
}

void rc__tt_rattn_fwd(const float *q, const float *X, uint32_t k, uint32_t d, float scale,
                      const float *r, float *a, float *out)
{
    memset(out, 0, d * sizeof(float));
    if (k == 0)
        return;
    float mx = -INFINITY;
    for (uint32_t j = 0; j < k; j++) {
        a[j] = q ? scale * rc_vec_dot(q, X + (size_t)j * d, d) : 0.0f;
        if (r)
            a[j] += r[k - 1 - j];
        if (a[j] > mx)
            mx = a[j];
    }
    float s = 0;
    for (uint32_t j = 0; j < k; j++) {
        a[j] = expf(a[j] - mx);
        s += a[j];
    }
    float inv = 1.0f / s;
    for (uint32_t j = 0; j < k; j++) {
        a[j] *= inv;
        rc_vec_axpy(a[j], X + (size_t)j * d, out, d);
    }
}

void rc__tt_mean_fwd(const float *X, uint32_t k, uint32_t d, float *out)
{
    memset(out, 0, d * sizeof(float));
    for (uint32_t j = 0; j < k; j++)
        rc_vec_axpy(1.0f / (float)k, X + (size_t)j * d, out, d);
}

/* ---- workspace ---- */

static int alloc_f(float **p, size_t n, int *fail)
{
    *p = calloc(n ? n : 1, sizeof(float));
    if (!*p)
        *fail = 1;
    return *fail;
}

static int alloc_u(uint32_t **p, size_t n, int *fail)
{
    *p = calloc(n ? n : 1, sizeof(uint32_t));
    if (!*p)
        *fail = 1;
    return *fail;
}

int rc__tt_ws_init(const rc_tower_model *m, rc__tower_ws *ws, uint32_t cap_u, uint32_t cap_i,
                   int train)
{
    memset(ws, 0, sizeof *ws);
    const rc_tower_config *c = &m->cfg;
    size_t NU = cap_u, NI = cap_i, NC = c->max_clicks, MT = RC_TOWER_MAX_TAGS;
    int f = 0;
    ws->cap_u = cap_u;
    ws->cap_i = cap_i;
    ws->C = (uint32_t)NC;
    ws->MT = (uint32_t)MT;
    ws->train = train;
    alloc_f(&ws->ix, NI * m->di, &f);
    alloc_f(&ws->ih, NI * c->hidden, &f);
    alloc_f(&ws->iv, NI * c->dim, &f);
    alloc_f(&ws->inorm, NI, &f);
    alloc_u(&ws->irow, NI * 3, &f);
    alloc_f(&ws->cx, NU * NC * m->di, &f);
    alloc_u(&ws->crow, NU * NC * 3, &f);
    alloc_u(&ws->ncl, NU, &f);
    alloc_u(&ws->ntg, NU, &f);
    alloc_u(&ws->dev_row, NU, &f);
    alloc_f(&ws->tg, NU * MT * c->tag_dim, &f);
    alloc_u(&ws->tgrow, NU * MT, &f);
    alloc_f(&ws->qt, NU * c->tag_dim, &f);
    alloc_f(&ws->ta, NU * MT, &f);
    alloc_f(&ws->qin, NU * m->qin, &f);
    alloc_f(&ws->q, NU * m->di, &f);
    alloc_f(&ws->ca, NU * NC, &f);
    alloc_f(&ws->uin, NU * m->uin, &f);
    alloc_f(&ws->uh, NU * c->hidden, &f);
    alloc_f(&ws->uv, NU * c->dim, &f);
    alloc_f(&ws->unorm, NU, &f);
    if (train) {
        alloc_f(&ws->div, NI * c->dim, &f);
        alloc_f(&ws->dih, NI * c->hidden, &f);
        alloc_f(&ws->dix, NI * m->di, &f);
        alloc_f(&ws->duv, NU * c->dim, &f);
        alloc_f(&ws->duh, NU * c->hidden, &f);
        alloc_f(&ws->duin, NU * m->uin, &f);
        alloc_f(&ws->dq, NU * m->di, &f);
        alloc_f(&ws->dqin, NU * m->qin, &f);
        alloc_f(&ws->dcx, NU * NC * m->di, &f);
        alloc_f(&ws->dqt, NU * c->tag_dim, &f);
        alloc_f(&ws->dtg, NU * MT * c->tag_dim, &f);
    }
    if (f) {
        rc__tt_ws_free(ws);
        return RC_ENOMEM;
    }
    return 0;
}

void rc__tt_ws_free(rc__tower_ws *ws)
{
    float *fs[] = {ws->ix,    ws->ih,   ws->iv,  ws->inorm, ws->cx,  ws->tg,  ws->qt,
                   ws->ta,    ws->qin,  ws->q,   ws->ca,    ws->uin, ws->uh,  ws->uv,
                   ws->unorm, ws->div,  ws->dih, ws->dix,   ws->duv, ws->duh, ws->duin,
                   ws->dq,    ws->dqin, ws->dcx, ws->dqt,   ws->dtg};
    uint32_t *us[] = {ws->irow, ws->crow, ws->ncl, ws->ntg, ws->dev_row, ws->tgrow};
    for (size_t i = 0; i < RC_ARRAY_LEN(fs); i++)
        free(fs[i]);
    for (size_t i = 0; i < RC_ARRAY_LEN(us); i++)
        free(us[i]);
    memset(ws, 0, sizeof *ws);
}

/* ---- gathering inputs ---- */

/* x = [E_id, E_city, E_cate, w2v / |w2v|]; rows[3] get the buckets. */
static void item_x(const rc_tower_model *m, const rc_tower_item_in *in, float *x, uint32_t *rows)
{
    const rc_tower_config *c = &m->cfg;
    rows[0] = rc__tt_bucket(in->id_hash, c->id_buckets);
    rows[1] = rc__tt_bucket(in->city_hash, c->city_buckets);
    rows[2] = rc__tt_bucket(in->cate_hash, c->cate_buckets);
    memcpy(x, rc__tt_row(m, TT_E_ID, rows[0]), c->id_dim * sizeof(float));
    x += c->id_dim;
    memcpy(x, rc__tt_row(m, TT_E_CITY, rows[1]), c->city_dim * sizeof(float));
    x += c->city_dim;
    memcpy(x, rc__tt_row(m, TT_E_CATE, rows[2]), c->cate_dim * sizeof(float));
    x += c->cate_dim;
    float nn = in->w2v ? rc_vec_dot(in->w2v, in->w2v, c->w2v_dim) : 0;
    if (!(nn > 0) || !isfinite(nn)) {
        memset(x, 0, c->w2v_dim * sizeof(float));
        return;
    }
    float inv = 1.0f / sqrtf(nn);
    /* w2v may be a row of the live item table, which the trainer updates in
     * place while this runs on a worker thread (Hogwild): copied with
     * rc_vec_copy, the one way to read such a vector outside the kernels. */
    rc_vec_copy(x, in->w2v, c->w2v_dim);
    for (uint32_t j = 0; j < c->w2v_dim; j++)
        x[j] *= inv;
}

void rc__tt_item_gather(const rc_tower_model *m, rc__tower_ws *ws, uint32_t i,
                        const rc_tower_item_in *in)
{
    item_x(m, in, ws->ix + (size_t)i * m->di, ws->irow + (size_t)i * 3);
}

void rc__tt_user_gather(const rc_tower_model *m, rc__tower_ws *ws, uint32_t b,
                        const rc_tower_user_in *in)
{
    const rc_tower_config *c = &m->cfg;
    uint32_t k = in->clicks ? RC_MIN(in->nclicks, c->max_clicks) : 0;
    uint32_t first = in->nclicks - k;
    ws->ncl[b] = k;
    for (uint32_t j = 0; j < k; j++)
        item_x(m, &in->clicks[first + j], ws->cx + ((size_t)b * ws->C + j) * m->di,
               ws->crow + ((size_t)b * ws->C + j) * 3);
    /* ctx = [E_dev, stats] at the start of qin. */
    float *ctx = ws->qin + (size_t)b * m->qin;
    if (c->features & RC_TOWER_F_DEVICE) {
        uint32_t r = rc__tt_bucket(in->device_hash, c->device_buckets);
        ws->dev_row[b] = r;
        memcpy(ctx, rc__tt_row(m, TT_E_DEV, r), c->device_dim * sizeof(float));
    } else {
        ws->dev_row[b] = UINT32_MAX;
        memset(ctx, 0, c->device_dim * sizeof(float));
    }
    if (c->features & RC_TOWER_F_STATS)
        rc_tower_user_stats(c, in, ctx + c->device_dim);
    else
        memset(ctx + c->device_dim, 0, m->nstats * sizeof(float));
    uint32_t nt = 0;
    if ((c->features & RC_TOWER_F_TAGS) && in->tag_hashes)
        nt = RC_MIN(in->ntags, RC_TOWER_MAX_TAGS);
    ws->ntg[b] = nt;
    for (uint32_t j = 0; j < nt; j++) {
        uint32_t r = rc__tt_bucket(in->tag_hashes[j], c->tag_buckets);
        ws->tgrow[(size_t)b * ws->MT + j] = r;
        memcpy(ws->tg + ((size_t)b * ws->MT + j) * c->tag_dim, rc__tt_row(m, TT_E_TAG, r),
               c->tag_dim * sizeof(float));
    }
}

void rc_tower_user_stats(const rc_tower_config *cfg, const rc_tower_user_in *in, float *out)
{
    uint32_t sc = cfg->stats_cates ? cfg->stats_cates : 32;
    uint32_t maxc = cfg->max_clicks ? cfg->max_clicks : 50;
    uint32_t k = in->clicks ? RC_MIN(in->nclicks, maxc) : 0;
    uint32_t first = in->nclicks - k;
    memset(out, 0, (sc + RC_TOWER_NSTATS_SCALARS) * sizeof(float));
    for (uint32_t j = 0; j < k; j++)
        out[in->clicks[first + j].cate_hash % sc] += 1.0f / (float)k;
    float *s = out + sc;
    s[0] = (float)(log1p((double)in->total_clicks) / 10.0);
    s[1] = (float)(log1p((double)k) / 5.0);
    s[2] = (float)(log1p((double)in->sessions) / 10.0);
    if (k > 0 && in->click_ts) {
        int64_t age = in->now_ms - in->click_ts[in->nclicks - 1];
        s[3] = (float)(log1p((double)(age > 0 ? age : 0) / 1000.0) / 20.0);
    }
}

/* ---- forward ---- */

void rc__tt_item_fwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n)
{
    const float *p = m->p;
    rc__tt_dense_fwd(p + m->i1.w, p + m->i1.b, ws->ix, n, m->i1.in, m->i1.out, ws->ih, 1);
    rc__tt_dense_fwd(p + m->i2.w, p + m->i2.b, ws->ih, n, m->i2.in, m->i2.out, ws->iv, 0);
    rc__tt_l2n_fwd(ws->iv, n, m->cfg.dim, ws->iv, ws->inorm);
}

/* Tag pooling of every user into qin's tagpool part (after ctx). */
static void tags_fwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n)
{
    const rc_tower_config *c = &m->cfg;
    if (!(c->features & RC_TOWER_F_TAGS)) {
        for (uint32_t b = 0; b < n; b++)
            memset(ws->qin + (size_t)b * m->qin + m->ctx, 0, c->tag_dim * sizeof(float));
        return;
    }
    int attn = (c->features & RC_TOWER_F_ATTN) != 0;
    if (attn) /* Qt = ctx Wtq^T + btq; ctx rows sit in qin with stride qin */
        for (uint32_t b = 0; b < n; b++)
            rc__tt_dense_fwd(m->p + m->tq.w, m->p + m->tq.b, ws->qin + (size_t)b * m->qin, 1,
                             m->ctx, c->tag_dim, ws->qt + (size_t)b * c->tag_dim, 0);
    float scale = 1.0f / sqrtf((float)c->tag_dim);
    for (uint32_t b = 0; b < n; b++) {
        const float *T = ws->tg + (size_t)b * ws->MT * c->tag_dim;
        float *pool = ws->qin + (size_t)b * m->qin + m->ctx;
        if (attn)
            rc__tt_attn_fwd(ws->qt + (size_t)b * c->tag_dim, T, ws->ntg[b], c->tag_dim, scale,
                            ws->ta + (size_t)b * ws->MT, pool);
        else
            rc__tt_mean_fwd(T, ws->ntg[b], c->tag_dim, pool);
    }
}

void rc__tt_user_fwd(const rc_tower_model *m, rc__tower_ws *ws, uint32_t n)
{
    const rc_tower_config *c = &m->cfg;
    const float *p = m->p;
    tags_fwd(m, ws, n);
    int attn = (c->features & RC_TOWER_F_ATTN) != 0;
    if (attn)
        rc__tt_dense_fwd(p + m->q.w, p + m->q.b, ws->qin, n, m->qin, m->di, ws->q, 0);
    float scale = 1.0f / sqrtf((float)m->di);
    for (uint32_t b = 0; b < n; b++) {
        const float *X = ws->cx + (size_t)b * ws->C * m->di;
        float *u = ws->uin + (size_t)b * m->uin;
        /* Without ATTN only the recency term: the mean while r = 0. */
        rc__tt_rattn_fwd(attn ? ws->q + (size_t)b * m->di : NULL, X, ws->ncl[b], m->di, scale,
                         p + m->rec, ws->ca + (size_t)b * ws->C, u);
        /* u_in = [clickpool, tagpool, ctx]; qin = [ctx, tagpool] */
        const float *qi = ws->qin + (size_t)b * m->qin;
        memcpy(u + m->di, qi + m->ctx, c->tag_dim * sizeof(float));
        memcpy(u + m->di + c->tag_dim, qi, m->ctx * sizeof(float));
    }
    rc__tt_dense_fwd(p + m->u1.w, p + m->u1.b, ws->uin, n, m->u1.in, m->u1.out, ws->uh, 1);
    rc__tt_dense_fwd(p + m->u2.w, p + m->u2.b, ws->uh, n, m->u2.in, m->u2.out, ws->uv, 0);
    rc__tt_l2n_fwd(ws->uv, n, c->dim, ws->uv, ws->unorm);
}

/* ---- inference ---- */

struct rc_tower_work {
    rc__tower_ws ws;
};

int rc_tower_work_create(const rc_tower_model *m, rc_tower_work **out)
{
    if (!m || !out)
        return RC_EINVAL;
    *out = NULL;
    rc_tower_work *w = calloc(1, sizeof *w);
    if (!w)
        return RC_ENOMEM;
    if (rc__tt_ws_init(m, &w->ws, 1, 1, 0)) {
        free(w);
        return RC_ENOMEM;
    }
    *out = w;
    return 0;
}

void rc_tower_work_destroy(rc_tower_work *w)
{
    if (!w)
        return;
    rc__tt_ws_free(&w->ws);
    free(w);
}

void rc_tower_item_vector(const rc_tower_model *m, rc_tower_work *w, const rc_tower_item_in *in,
                          float *out)
{
    rc__tt_item_gather(m, &w->ws, 0, in);
    rc__tt_item_fwd(m, &w->ws, 1);
    memcpy(out, w->ws.iv, m->cfg.dim * sizeof(float));
}

void rc_tower_user_vector(const rc_tower_model *m, rc_tower_work *w, const rc_tower_user_in *in,
                          float *out, float *att, uint32_t *natt)
{
    rc__tower_ws *ws = &w->ws;
    rc__tt_user_gather(m, ws, 0, in);
    rc__tt_user_fwd(m, ws, 1);
    memcpy(out, ws->uv, m->cfg.dim * sizeof(float));
    uint32_t k = ws->ncl[0];
    if (att)
        memcpy(att, ws->ca, k * sizeof(float));
    if (natt)
        *natt = k;
}

/* ---- file ---- */

static void cfg_fields(const rc_tower_config *c, uint32_t f[NCFG])
{
    uint32_t t;
    memcpy(&t, &c->temperature, 4);
    const uint32_t v[NCFG] = {c->dim,
                              c->w2v_dim,
                              c->hidden,
                              c->id_buckets,
                              c->id_dim,
                              c->city_buckets,
                              c->city_dim,
                              c->cate_buckets,
                              c->cate_dim,
                              c->device_buckets,
                              c->device_dim,
                              c->tag_buckets,
                              c->tag_dim,
                              c->stats_cates,
                              c->max_clicks,
                              t,
                              (uint32_t)c->features};
    memcpy(f, v, sizeof v);
}

static void cfg_from_fields(const uint32_t f[NCFG], rc_tower_config *c)
{
    memset(c, 0, sizeof *c);
    c->dim = f[0];
    c->w2v_dim = f[1];
    c->hidden = f[2];
    c->id_buckets = f[3];
    c->id_dim = f[4];
    c->city_buckets = f[5];
    c->city_dim = f[6];
    c->cate_buckets = f[7];
    c->cate_dim = f[8];
    c->device_buckets = f[9];
    c->device_dim = f[10];
    c->tag_buckets = f[11];
    c->tag_dim = f[12];
    c->stats_cates = f[13];
    c->max_clicks = f[14];
    memcpy(&c->temperature, &f[15], 4);
    c->features = f[16];
}

#define HEADER_BYTES (8 + 4 + NCFG * 4 + 8)

static int write_all(FILE *f, const void *p, size_t n, uint32_t *crc)
{
    *crc = rc_crc32c(*crc, p, n);
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

int rc_tower_save(const rc_tower_model *m, const char *path, char *eb, size_t el)
{
    if (!m || !path)
        return rc_err(eb, el, RC_EINVAL, "tower model: NULL argument");
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return rc_err(eb, el, RC_EINVAL, "tower model %s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return rc_err(eb, el, RC_EIO, "tower model %s: %s", tmp, strerror(errno));
    uint32_t crc = 0, ver = VERSION, cf[NCFG];
    uint64_t np = m->nparams;
    cfg_fields(&m->cfg, cf);
    int err = write_all(f, MAGIC, 8, &crc) || write_all(f, &ver, 4, &crc) ||
              write_all(f, cf, sizeof cf, &crc) || write_all(f, &np, 8, &crc) ||
              write_all(f, m->p, m->nparams * sizeof(float), &crc);
    uint32_t c = crc;
    if (!err)
        err = write_all(f, &c, 4, &crc);
    int e = err ? (errno ? errno : EIO) : 0;
    if (!e && (fflush(f) || fsync(fileno(f))))
        e = errno;
    if (fclose(f) && !e)
        e = errno;
    if (!e && rename(tmp, path))
        e = errno;
    if (e) {
        unlink(tmp);
        return rc_err(eb, el, RC_EIO, "tower model %s: %s", path, strerror(e));
    }
    return 0;
}

static int read_file(const char *path, unsigned char **buf, size_t *len, char *eb, size_t el)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return rc_err(eb, el, errno == ENOENT ? RC_ENOENT : RC_EIO, "tower model %s: %s", path,
                      strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        fclose(f);
        return rc_err(eb, el, RC_EIO, "tower model %s: not a regular file", path);
    }
    size_t want = HEADER_BYTES + MAX_PARAMS * sizeof(float) + 4;
    if ((uint64_t)st.st_size > want) {
        fclose(f);
        return rc_err(eb, el, RC_ECORRUPT, "tower model %s: %lld bytes: too large", path,
                      (long long)st.st_size);
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len ? *len : 1);
    if (!*buf) {
        fclose(f);
        return rc_err(eb, el, RC_ENOMEM, "tower model %s: out of memory (%zu bytes)", path, *len);
    }
    size_t got = fread(*buf, 1, *len, f);
    fclose(f);
    if (got != *len) {
        free(*buf);
        return rc_err(eb, el, RC_EIO, "tower model %s: short read", path);
    }
    return 0;
}

static int parse(const unsigned char *buf, size_t len, const char *path, rc_tower_model **out,
                 char *eb, size_t el)
{
    uint32_t ver, cf[NCFG];
    uint64_t np;
    memcpy(&ver, buf + 8, 4);
    if (ver != VERSION && ver != 1)
        return rc_err(eb, el, RC_ECORRUPT,
                      "tower model %s: unsupported version %u (this build reads 1..%u)", path, ver,
                      VERSION);
    memcpy(cf, buf + 12, sizeof cf);
    memcpy(&np, buf + 12 + sizeof cf, 8);
    rc_tower_config c;
    cfg_from_fields(cf, &c);
    char why[256];
    rc_tower_model *m;
    int rc = rc__tt_alloc(&c, &m, why, sizeof why);
    if (rc == RC_EINVAL)
        return rc_err(eb, el, RC_ECORRUPT, "tower model %s: bad config (%s)", path, why);
    if (rc)
        return rc_err(eb, el, rc, "tower model %s: %s", path, why);
    /* Version 1 files lack r (max_clicks floats at m->rec): loaded as r = 0,
     * the model they were trained as. */
    size_t nr = ver == 1 ? m->cfg.max_clicks : 0, want = m->nparams - nr;
    if (np != want || len != HEADER_BYTES + np * sizeof(float) + 4) {
        rc_tower_destroy(m);
        return rc_err(eb, el, RC_ECORRUPT,
                      "tower model %s: %llu parameters for a config of %zu (inconsistent size)",
                      path, (unsigned long long)np, want);
    }
    const unsigned char *w = buf + HEADER_BYTES;
    memcpy(m->p, w, m->rec * sizeof(float));
    memcpy(m->p + m->rec + nr, w + m->rec * sizeof(float),
           (m->nparams - m->rec - nr) * sizeof(float));
    for (size_t i = 0; i < m->nparams; i++)
        if (!isfinite(m->p[i])) {
            rc_tower_destroy(m);
            return rc_err(eb, el, RC_ECORRUPT, "tower model %s: non-finite weight %zu", path, i);
        }
    *out = m;
    return 0;
}

int rc_tower_load(const char *path, rc_tower_model **out, char *eb, size_t el)
{
    if (!out || !path)
        return rc_err(eb, el, RC_EINVAL, "tower model: NULL argument");
    *out = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = read_file(path, &buf, &len, eb, el);
    if (rc)
        return rc;
    if (len < 8 || memcmp(buf, MAGIC, 8)) {
        int prefix = len < 8 && memcmp(buf, MAGIC, len) == 0;
        free(buf);
        if (prefix)
            return rc_err(eb, el, RC_ECORRUPT, "tower model %s: truncated (%zu bytes)", path, len);
        return rc_err(eb, el, RC_ECORRUPT, "tower model %s: bad magic (not a tower model)", path);
    }
    if (len < HEADER_BYTES + 4) {
        free(buf);
        return rc_err(eb, el, RC_ECORRUPT, "tower model %s: truncated (%zu bytes)", path, len);
    }
    uint32_t want;
    memcpy(&want, buf + len - 4, 4);
    if (rc_crc32c(0, buf, len - 4) != want) {
        free(buf);
        return rc_err(eb, el, RC_ECORRUPT,
                      "tower model %s: checksum mismatch (truncated or corrupt)", path);
    }
    rc = parse(buf, len, path, out, eb, el);
    free(buf);
    return rc;
}

int rc_tower_probe(const char *path)
{
    if (!path)
        return 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char m[8];
    size_t got = fread(m, 1, 8, f);
    fclose(f);
    return got == 8 && memcmp(m, MAGIC, 8) == 0;
}
