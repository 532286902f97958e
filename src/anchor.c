/* anchor — int8 snapshot of a warm-started table and the pull toward it
 * (include/recalld/anchor.h). */
#include "recalld/anchor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/vec.h"

struct rc_anchor {
    uint32_t rows, dim;
    float strength, fade;
    int8_t *code;   /* rows x dim */
    float *scale;   /* per row: max |x| / 127 */
    uint32_t *base; /* per row: its click count at the snapshot */
};

/* Rows [0, a->rows) of t into a: int8 codes, scales and counts. */
static void snap(rc_anchor *a, const rc_table *t)
{
    uint32_t dim = a->dim;
    for (uint32_t r = 0; r < a->rows; r++) {
        const float *v = rc_table_in(t, r);
        float m = 0;
        for (uint32_t i = 0; i < dim; i++)
            m = fmaxf(m, fabsf(v[i]));
        float s = m > 0 ? m / 127.0f : 0;
        int8_t *q = a->code + (size_t)r * dim;
        for (uint32_t i = 0; i < dim; i++)
            q[i] = s > 0 ? (int8_t)lrintf(v[i] / s) : 0;
        a->scale[r] = s;
        a->base[r] = rc_table_count(t, r);
    }
}

int rc_anchor_create(const rc_table *t, const rc_anchor_opts *o, rc_anchor **out, char *eb,
                     size_t el)
{
    if (!out)
        return rc_err(eb, el, RC_EINVAL, "anchor: out is NULL");
    *out = NULL;
    if (!t || !o || !(o->strength > 0) || !(o->fade_clicks >= 0))
        return rc_err(eb, el, RC_EINVAL, "anchor: expected a table, strength > 0, fade >= 0");
    uint32_t rows = rc_table_size(t), dim = rc_table_dim(t);
    if (rows == 0)
        return rc_err(eb, el, RC_EINVAL, "anchor: the table has no rows");
    rc_anchor *a = calloc(1, sizeof *a);
    if (!a)
        return rc_err(eb, el, RC_ENOMEM, "anchor: out of memory");
    *a = (rc_anchor){.rows = rows, .dim = dim, .strength = o->strength, .fade = o->fade_clicks};
    a->code = malloc((size_t)rows * dim);
    a->scale = malloc((size_t)rows * sizeof *a->scale);
    a->base = malloc((size_t)rows * sizeof *a->base);
    if (!a->code || !a->scale || !a->base) {
        rc_anchor_destroy(a);
        return rc_err(eb, el, RC_ENOMEM, "anchor: out of memory for %u rows", rows);
    }
    snap(a, t);
    *out = a;
    return 0;
}

void rc_anchor_rebase(rc_anchor *a, const rc_table *t)
{
    if (a && t && rc_table_dim(t) == a->dim && rc_table_size(t) >= a->rows)
        snap(a, t);
}

void rc_anchor_destroy(rc_anchor *a)
{
    if (!a)
        return;
    free(a->code);
    free(a->scale);
    free(a->base);
    free(a);
}

uint32_t rc_anchor_rows(const rc_anchor *a) { return a ? a->rows : 0; }

size_t rc_anchor_bytes(const rc_anchor *a)
{
    return a ? sizeof *a + (size_t)a->rows * (a->dim + sizeof *a->scale + sizeof *a->base) : 0;
}

float rc_anchor_step(const rc_anchor *a, const rc_table *t, uint32_t row, float lr)
{
    if (!a || row >= a->rows || !(lr > 0))
        return 0;
    float s = lr * a->strength;
    if (a->fade > 0) {
        uint32_t c = rc_table_count(t, row), b = a->base[row];
        float since = c > b ? (float)(c - b) : 0;
        s *= a->fade / (a->fade + since);
    }
    return s < 1 ? s : 1;
}

void rc_anchor_get(const rc_anchor *a, uint32_t row, float *out)
{
    const int8_t *q = a->code + (size_t)row * a->dim;
    float s = a->scale[row];
    for (uint32_t i = 0; i < a->dim; i++)
        out[i] = s * (float)q[i];
}

void rc_anchor_pull(const rc_anchor *a, rc_table *t, uint32_t row, float lr, float *scratch)
{
    float s = rc_anchor_step(a, t, row, lr);
    if (s <= 0)
        return;
    float *in = rc_table_in(t, row);
    rc_anchor_get(a, row, scratch);
    rc_vec_scale(1.0f - s, in, a->dim);
    rc_vec_axpy(s, scratch, in, a->dim);
}
