/* tower_serve — a served two-tower bundle: model + mirror table + tower index. */
#include "recalld/tower_serve.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"

#define Q8_SHIFT 14 /* rows per chunk of refresh references: 16384 */
#define Q8_ROWS  (1u << Q8_SHIFT)
#define POOL_MAX 64 /* idle inference scratches kept */

struct rc_tower_serve {
    atomic_int refs;
    rc_tower_model *model;
    const rc_table *w2v;
    rc_table *mirror;
    rc_index *index;
    uint32_t dim, wdim;
    float drift;
    const rc_index *gen_src; /* opts.w2v_index: refresh by its row generations */
    uint32_t refb;           /* bytes of a row's refresh reference: 2 (the w2v index's
                                generation when the row was computed) or wdim (an int8 copy
                                of the w2v vector it was computed from) */
    /* writer only */
    int8_t **q8;          /* per chunk of Q8_ROWS rows: refb bytes per row */
    uint32_t nq8, q8_cap; /* chunks allocated, pointer slots (nq8 stored atomically:
                           * the stats read it from any thread) */
    rc_tower_work *wwork; /* the writer's scratch */
    float *vbuf;          /* dim floats */
    /* inference scratches of other threads */
    pthread_mutex_t pool_mu;
    rc_tower_work *pool[POOL_MAX];
    uint32_t npool;
    /* statistics (relaxed atomics) */
    _Atomic uint32_t rows;
    _Atomic uint64_t checked, recomputed, sync_failures;
};

static uint64_t name_hash(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n ? rc_tower_hash(s, n) : 0;
}

void rc_tower_serve_item_in(const rc_table *w2v, uint32_t row, rc_tower_item_in *in)
{
    size_t len;
    const char *id = rc_table_item_id(w2v, row, &len);
    in->id_hash = id && len ? rc_tower_hash(id, len) : 0;
    in->city_hash = name_hash(rc_table_city_name(w2v, rc_table_city(w2v, row)));
    in->cate_hash = name_hash(rc_table_cate_name(w2v, rc_table_cate(w2v, row)));
    in->w2v = rc_table_in(w2v, row);
}

static void destroy(rc_tower_serve *b)
{
    rc_index_destroy(b->index);
    rc_table_destroy(b->mirror);
    for (uint32_t i = 0; i < b->nq8; i++)
        free(b->q8[i]);
    free(b->q8);
    for (uint32_t i = 0; i < b->npool; i++)
        rc_tower_work_destroy(b->pool[i]);
    rc_tower_work_destroy(b->wwork);
    free(b->vbuf);
    rc_tower_destroy(b->model);
    pthread_mutex_destroy(&b->pool_mu);
    free(b);
}

int rc_tower_serve_create(rc_tower_model *m, const rc_table *w2v, const rc_tower_serve_opts *opts,
                          rc_tower_serve **out, char *errbuf, size_t errlen)
{
    rc_tower_serve_opts o = opts ? *opts : (rc_tower_serve_opts){0};
    *out = NULL;
    if (!m || !w2v) {
        rc_tower_destroy(m);
        return rc_err(errbuf, errlen, RC_EINVAL, "tower: no model or no table");
    }
    const rc_tower_config *c = rc_tower_config_of(m);
    if (c->w2v_dim != rc_table_dim(w2v)) {
        uint32_t wd = c->w2v_dim;
        rc_tower_destroy(m);
        return rc_err(errbuf, errlen, RC_EINVAL,
                      "tower: model w2v_dim %u does not match the word2vec table's dim %u", wd,
                      rc_table_dim(w2v));
    }
    rc_tower_serve *b = calloc(1, sizeof *b);
    if (!b) {
        rc_tower_destroy(m);
        return rc_err(errbuf, errlen, RC_ENOMEM, "tower: out of memory");
    }
    pthread_mutex_init(&b->pool_mu, NULL);
    atomic_init(&b->refs, 1);
    b->model = m;
    b->w2v = w2v;
    b->dim = c->dim;
    b->wdim = c->w2v_dim;
    b->drift = o.drift > 0 ? o.drift : 0.01f;
    b->gen_src = o.w2v_index;
    b->refb = b->gen_src ? (uint32_t)sizeof(uint16_t) : b->wdim;
    rc_table_opts to = {.dim = b->dim,
                        .max_items = o.max_items,
                        .seed = 1,
                        .input_only = 1,
                        .no_ids = 1,
                        .half = !o.float_mirror};
    int rc;
    if ((rc = rc_table_create(&to, &b->mirror, errbuf, errlen)) ||
        (rc = rc_index_create(&o.index, b->mirror, &b->index, errbuf, errlen)))
        goto fail;
    if (rc_tower_work_create(m, &b->wwork) || !(b->vbuf = malloc(b->dim * sizeof *b->vbuf))) {
        rc = rc_err(errbuf, errlen, RC_ENOMEM, "tower: out of memory");
        goto fail;
    }
    *out = b;
    return 0;
fail:
    destroy(b);
    return rc;
}

void rc_tower_serve_ref(rc_tower_serve *b) { atomic_fetch_add(&b->refs, 1); }

void rc_tower_serve_unref(rc_tower_serve *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        destroy(b);
}

/* ---- int8 copies of the w2v vectors the tower vectors were computed from ---- */

static int8_t *q8_row(rc_tower_serve *b, uint32_t row)
{
    uint32_t c = row >> Q8_SHIFT;
    if (c >= b->nq8) {
        if (c >= b->q8_cap) {
            uint32_t cap = b->q8_cap ? b->q8_cap * 2 : 64;
            while (cap <= c)
                cap *= 2;
            int8_t **p = realloc(b->q8, cap * sizeof *p);
            if (!p)
                return NULL;
            b->q8 = p;
            b->q8_cap = cap;
        }
        while (b->nq8 <= c) {
            if (!(b->q8[b->nq8] = malloc((size_t)Q8_ROWS * b->refb)))
                return NULL;
            /* stored atomically: rc_tower_serve_stats_get reads it on another thread */
            __atomic_store_n(&b->nq8, b->nq8 + 1, __ATOMIC_RELAXED);
        }
    }
    return b->q8[c] + (size_t)(row & (Q8_ROWS - 1)) * b->refb;
}

static void q8_store(int8_t *q, const float *v, uint32_t d)
{
    double nn = 0;
    for (uint32_t i = 0; i < d; i++)
        nn += (double)v[i] * v[i];
    float s = nn > 0 ? (float)(127.0 / sqrt(nn)) : 0.f;
    for (uint32_t i = 0; i < d; i++) {
        float x = v[i] * s;
        q[i] = (int8_t)lrintf(x > 127.f ? 127.f : x < -127.f ? -127.f : x);
    }
}

/* 1 - cos(q, v); 0 when both are zero, 1 when only one is. */
static float q8_drift(const int8_t *q, const float *v, uint32_t d)
{
    float dot = 0, qq = 0, vv = 0;
    for (uint32_t i = 0; i < d; i++) {
        dot += q[i] * v[i];
        qq += (float)(q[i] * q[i]);
        vv += v[i] * v[i];
    }
    if (qq == 0 || vv == 0)
        return qq == 0 && vv == 0 ? 0.f : 1.f;
    return 1.f - dot / sqrtf(qq * vv);
}

/* Writer: computes row's tower vector into the mirror and its refresh
 * reference. The generation is read before the vector: a re-index between the
 * two leaves an older generation, so the row is recomputed once more. */
static int compute_row(rc_tower_serve *b, uint32_t row, int8_t *q)
{
    rc_tower_item_in in;
    uint16_t gen = b->gen_src ? rc_index_row_gen(b->gen_src, row) : 0;
    rc_tower_serve_item_in(b->w2v, row, &in);
    rc_tower_item_vector(b->model, b->wwork, &in, b->vbuf);
    rc_table_in_write(b->mirror, row, b->vbuf);
    if (b->gen_src)
        memcpy(q, &gen, sizeof gen);
    else
        q8_store(q, in.w2v, b->wdim);
    return 0;
}

/* Writer: has row's w2v vector moved since its tower vector was computed? */
static int stale(const rc_tower_serve *b, uint32_t row, const int8_t *q)
{
    if (b->gen_src) {
        uint16_t then;
        memcpy(&then, q, sizeof then);
        return then != rc_index_row_gen(b->gen_src, row);
    }
    return q8_drift(q, rc_table_in(b->w2v, row), b->wdim) > b->drift;
}

int rc_tower_serve_sync_rows(rc_tower_serve *b, uint32_t upto)
{
    uint32_t have = rc_table_size(b->mirror), lim = RC_MIN(upto, rc_table_size(b->w2v));
    int added = 0;
    for (uint32_t row = have; row < lim; row++) {
        const char *city = rc_table_city_name(b->w2v, rc_table_city(b->w2v, row));
        const char *cate = rc_table_cate_name(b->w2v, rc_table_cate(b->w2v, row));
        uint32_t mc, mk, mrow;
        int8_t *q = q8_row(b, row);
        int rc = !q ? RC_ENOMEM
                    : rc_table_city_id(b->mirror, city ? city : "", city ? strlen(city) : 0, &mc);
        if (!rc)
            rc = rc_table_cate_id(b->mirror, cate ? cate : "", cate ? strlen(cate) : 0, &mk);
        if (!rc)
            rc = rc_table_append(b->mirror, NULL, 0, mc, mk, 0, &mrow);
        /* the mirror's rows are the table's rows, or nothing: it has no ids of
         * its own (no_ids), the table's ids name its rows */
        if (!rc && mrow != row)
            rc = RC_EINVAL;
        if (rc) {
            atomic_fetch_add_explicit(&b->sync_failures, 1, memory_order_relaxed);
            return rc;
        }
        /* The new row is below the mirror's size already: its vector is
         * written before the index can return it (touch -> flush). A reader
         * iterating the mirror would see a transient vector, which recall
         * tolerates (it only perturbs one score). */
        compute_row(b, row, q);
        rc_index_touch(b->index, row);
        atomic_store_explicit(&b->rows, row + 1, memory_order_release);
        added++;
    }
    return added;
}

uint32_t rc_tower_serve_refresh(rc_tower_serve *b, const uint32_t *rows, uint32_t n,
                                uint32_t max_recompute, uint32_t *recomputed)
{
    uint32_t have = rc_table_size(b->mirror), done = 0, i;
    for (i = 0; i < n; i++) {
        uint32_t row = rows[i];
        if (row >= have)
            continue;
        int8_t *q = q8_row(b, row);
        if (!stale(b, row, q))
            continue;
        if (max_recompute && done == max_recompute)
            break;
        compute_row(b, row, q);
        rc_index_touch(b->index, row);
        done++;
    }
    atomic_fetch_add_explicit(&b->checked, i, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->recomputed, done, memory_order_relaxed);
    if (recomputed)
        *recomputed = done;
    return i;
}

int rc_tower_serve_flush(rc_tower_serve *b, char *errbuf, size_t errlen)
{
    return rc_index_flush(b->index, 0, errbuf, errlen);
}

int rc_tower_serve_maintain(rc_tower_serve *b, char *errbuf, size_t errlen)
{
    return rc_index_maintain(b->index, errbuf, errlen);
}

static rc_tower_work *work_get(rc_tower_serve *b)
{
    rc_tower_work *w = NULL;
    pthread_mutex_lock(&b->pool_mu);
    if (b->npool)
        w = b->pool[--b->npool];
    pthread_mutex_unlock(&b->pool_mu);
    if (!w && rc_tower_work_create(b->model, &w))
        return NULL;
    return w;
}

static void work_put(rc_tower_serve *b, rc_tower_work *w)
{
    pthread_mutex_lock(&b->pool_mu);
    if (b->npool < POOL_MAX) {
        b->pool[b->npool++] = w;
        w = NULL;
    }
    pthread_mutex_unlock(&b->pool_mu);
    rc_tower_work_destroy(w);
}

int rc_tower_serve_user_vector(rc_tower_serve *b, const rc_tower_user_in *in, float *out)
{
    rc_tower_work *w = work_get(b);
    if (!w)
        return RC_ENOMEM;
    rc_tower_user_vector(b->model, w, in, out, NULL, NULL);
    work_put(b, w);
    return 0;
}

int rc_tower_serve_item_vector(rc_tower_serve *b, const rc_tower_item_in *in, float *out)
{
    rc_tower_work *w = work_get(b);
    if (!w)
        return RC_ENOMEM;
    rc_tower_item_vector(b->model, w, in, out);
    work_put(b, w);
    return 0;
}

int rc_tower_serve_search(rc_tower_serve *b, const float *q, uint32_t k, float overfetch,
                          const rc_index_filter *f, const uint32_t *exclude, uint32_t nexclude,
                          rc_hit *out, uint32_t *n)
{
    return rc_recall_search(b->mirror, b->index, q, k, overfetch, f, exclude, nexclude, out, n);
}

const rc_tower_model *rc_tower_serve_model(const rc_tower_serve *b) { return b->model; }
const rc_table *rc_tower_serve_table(const rc_tower_serve *b) { return b->mirror; }
rc_index *rc_tower_serve_index(rc_tower_serve *b) { return b->index; }
uint32_t rc_tower_serve_dim(const rc_tower_serve *b) { return b->dim; }

uint32_t rc_tower_serve_rows(const rc_tower_serve *b)
{
    return atomic_load_explicit(&((rc_tower_serve *)b)->rows, memory_order_acquire);
}

void rc_tower_serve_stats_get(rc_tower_serve *b, rc_tower_serve_stats *st)
{
    st->rows = rc_tower_serve_rows(b);
    st->checked = atomic_load_explicit(&b->checked, memory_order_relaxed);
    st->recomputed = atomic_load_explicit(&b->recomputed, memory_order_relaxed);
    st->sync_failures = atomic_load_explicit(&b->sync_failures, memory_order_relaxed);
    /* reference chunks: count read racily (a statistic); each is Q8_ROWS * refb bytes */
    size_t q8 = (size_t)__atomic_load_n(&b->nq8, __ATOMIC_RELAXED) * Q8_ROWS * b->refb;
    st->bytes = rc_table_bytes(b->mirror) + q8 + rc_tower_params(b->model) * sizeof(float);
}
