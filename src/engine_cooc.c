/* engine_cooc — the session co-occurrence channel in the engine (cooc.h):
 * upkeep from every applied click and the "itemknn" / "fused" recalls. */
#include <math.h>
#include <stdlib.h>

#include "engine_int.h"
#include "recalld/cooc.h"
#include "recalld/vec.h"

int rc__engine_cooc_init(rc_engine *e, char *eb, size_t el)
{
    const rc_config *c = &e->cfg;
    if (!c->cooc_max_bytes)
        return 0; /* channel off */
    rc_cooc_opts o = {.max_items = c->max_items,
                      .neighbors = c->cooc_neighbors,
                      .max_bytes = c->cooc_max_bytes,
                      .window = c->cooc_window,
                      .half_life_ms = c->cooc_half_life_ms,
                      .pop_damping = c->cooc_pop_damping};
    return rc_cooc_create(&o, &e->cooc, eb, el);
}

void rc__engine_cooc_free(rc_engine *e)
{
    rc_cooc_destroy(e->cooc);
    e->cooc = NULL;
}

void rc__engine_cooc_note(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx,
                          int64_t ts_ms)
{
    if (e->cooc)
        rc_cooc_click(e->cooc, row, ctx, nctx, ts_ms);
}

struct keep {
    const rc_table *t;
    const rc_index_filter *f;
    uint32_t size;
};

static int keep_row(void *ud, uint32_t row)
{
    const struct keep *k = ud;
    if (row >= k->size)
        return 0;
    if (k->f->city >= 0 && rc_table_city(k->t, row) != (uint32_t)k->f->city)
        return 0;
    if (!k->f->ncates)
        return 1;
    for (uint32_t j = 0; j < k->f->ncates; j++)
        if (k->f->cates[j] == rc_table_cate(k->t, row))
            return 1;
    return 0;
}

/* t0: when the request's query stage began (0 = no timing, req->timing). */
int rc__engine_cooc_recall(rc_engine *e, const rc_recall_req *req, const rc_index_filter *f,
                           const uint32_t *rows, const float *w, uint32_t nclicks,
                           const uint32_t *excl, uint32_t nexcl, rc_hit *out, uint32_t *n,
                           uint64_t t0)
{
    struct keep kp = {.t = e->table, .f = f, .size = rc_table_size(e->table)};
    uint32_t k = req->k, dim = e->cfg.dim, ne = 0, nc = 0;
    rc_recall_timing *tm = req->timing;
    uint64_t t1;
    *n = 0;
    if (!e->cooc)
        return RC_EINVAL;
    if (!nclicks)
        return RC_ENOENT;
    if (req->itemknn) {
        t1 = tm ? rc_now_ns() : 0;
        if (tm)
            tm->query_ns += t1 - t0;
        int rc = rc_cooc_query(e->cooc, rows, w, nclicks, excl, nexcl, keep_row, &kp, k, out, n,
                               NULL, 0, NULL);
        if (tm)
            tm->cooc_ns += rc_now_ns() - t1;
        return rc;
    }
    /* fused: k candidates of each channel, ranked together (rc_cooc_fuse) */
    rc_hit *emb = malloc(2 * (size_t)k * sizeof *emb), *co = emb ? emb + k : NULL;
    float *q = malloc(dim * sizeof *q), *ecs = malloc(2 * (size_t)k * sizeof *ecs);
    uint32_t *erows = malloc((size_t)k * sizeof *erows);
    int rc = RC_ENOMEM;
    if (!emb || !q || !ecs || !erows)
        goto out;
    rc = rc_recall_query_vector(e->table, rows, w, nclicks, q);
    if (tm)
        tm->query_ns += rc_now_ns() - t0;
    if (rc == 0 && req->exact) /* the reference: the embedding side by brute force */
        rc = rc_recall_exact(e->table, q, k, cfg_f32(&e->cfg.overfetch), f, excl, nexcl, emb, &ne);
    else if (rc == 0)
        rc = rc_recall_search_timed(e->table, e->index, q, k, cfg_f32(&e->cfg.overfetch), f, excl,
                                    nexcl, emb, &ne, tm);
    if (rc && rc != RC_ENOENT)
        goto out;
    t1 = tm ? rc_now_ns() : 0;
    for (uint32_t i = 0; i < ne; i++)
        erows[i] = emb[i].row;
    if ((rc = rc_cooc_query(e->cooc, rows, w, nclicks, excl, nexcl, keep_row, &kp, k, co, &nc,
                            erows, ne, ecs)))
        goto out;
    float *ces = ecs + k;
    for (uint32_t i = 0; i < nc; i++)
        ces[i] = ne ? rc_recall_score(e->table, co[i].row, q) : 0; /* as the list's scores */
    rc_cooc_fuse(emb, ecs, ne, co, ne ? ces : NULL, nc, cfg_f32(&e->cfg.cooc_fuse_weight), k, out,
                 n);
    if (tm)
        tm->cooc_ns += rc_now_ns() - t1;
    rc = *n ? 0 : RC_ENOENT;
out:
    free(emb);
    free(q);
    free(ecs);
    free(erows);
    return rc;
}

void rc__engine_cooc_stats_json(rc_engine *e, rc_buf *o)
{
    rc_cooc_stats st = {0};
    if (e->cooc)
        rc_cooc_stats_get(e->cooc, &st);
    rc_buf_printf(o,
                  "\"cooc\":{\"enabled\":%s,\"items\":%llu,\"entries\":%llu,\"bytes\":%llu,"
                  "\"max_bytes\":%llu,\"clicks\":%llu,\"pairs\":%llu,\"evictions\":%llu,"
                  "\"dropped\":%llu,\"retired\":%llu}",
                  e->cooc ? "true" : "false", (unsigned long long)st.items,
                  (unsigned long long)st.entries, (unsigned long long)st.bytes,
                  (unsigned long long)st.max_bytes, (unsigned long long)st.clicks,
                  (unsigned long long)st.pairs, (unsigned long long)st.evictions,
                  (unsigned long long)st.dropped, (unsigned long long)st.retired);
}
