#include "recalld/recall.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/vec.h"

int rc_recall_query_vector(const rc_table *t, const uint32_t *rows, const float *w, uint32_t n,
                           float *q)
{
    uint32_t dim = rc_table_dim(t), used = 0;
    memset(q, 0, dim * sizeof *q);
    for (uint32_t i = 0; i < n; i++) {
        const float *v = rc_table_in(t, rows[i]);
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
    uint32_t dim = rc_table_dim(t), want, got = 0, kept = 0;
    *n = 0;
    if (k == 0)
        return 0;
    if (overfetch < 1)
        overfetch = 1;
    want = (uint32_t)ceilf((float)k * overfetch) + nexclude;
    uint32_t *rows = malloc(want * sizeof *rows);
    float *scores = malloc(want * sizeof *scores);
    rc_hit *cand = malloc(want * sizeof *cand);
    int rc = RC_ENOMEM;
    if (!rows || !scores || !cand)
        goto out;
    rc = rc_index_search(ix, q, want, f, rows, scores, &got);
    if (rc)
        goto out;
    for (uint32_t i = 0; i < got; i++) {
        uint32_t r = rows[i];
        if (excluded(r, exclude, nexclude) || !passes(t, r, f))
            continue;
        const float *v = rc_table_in(t, r);
        float norm = sqrtf(rc_vec_dot(v, v, dim));
        cand[kept].row = r;
        cand[kept].score = norm > 0 ? rc_vec_dot(q, v, dim) / norm : 0;
        kept++;
    }
    qsort(cand, kept, sizeof *cand, hit_cmp);
    *n = RC_MIN(kept, k);
    memcpy(out, cand, *n * sizeof *out);
out:
    free(rows);
    free(scores);
    free(cand);
    return rc;
}
