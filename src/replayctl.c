/* replayctl — the adaptive replay ratio (see replayctl.h). */
#include "recalld/replayctl.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/vec.h"

#define QUERY_ROWS 5u /* the query's last context rows (recall.window's default) */

struct held {
    rc_replayctl_probe p;
    uint32_t refs[RC_REPLAYCTL_REFS];
    double s0;
};

/* Sums of d of one side (A: more replay, B: less) over the open cycle. */
struct side {
    double sum, sum2;
    uint64_t n;
};

struct rc_replayctl {
    rc_replayctl_opts o;
    double ratio;       /* the centre */
    double phase_ratio; /* the running phase's */
    uint64_t fresh;     /* fresh clicks counted in the running phase */
    uint32_t phase_no;  /* 0..3 within the cycle: A B B A */
    struct held held[RC_REPLAYCTL_MAX_HELD];
    uint32_t nheld;
    struct side side[2];
    _Atomic double ratio_pub, phase_pub, last_diff, last_se;
    _Atomic uint64_t probes, decisions, raises, lowers;
};

static int phase_is_a(uint32_t phase_no) { return phase_no == 0 || phase_no == 3; }

static void phase_start(rc_replayctl *c)
{
    double r = phase_is_a(c->phase_no) ? c->ratio * c->o.step : c->ratio / c->o.step;
    c->phase_ratio = RC_MIN(RC_MAX(r, (double)c->o.min), (double)c->o.max);
    c->fresh = 0;
    atomic_store(&c->ratio_pub, c->ratio);
    atomic_store(&c->phase_pub, c->phase_ratio);
}

int rc_replayctl_create(const rc_replayctl_opts *o, rc_replayctl **out, char *eb, size_t el)
{
    if (!out || !o)
        return rc_err(eb, el, RC_EINVAL, "replayctl: options or out is NULL");
    *out = NULL;
    if (!(o->ratio >= 0))
        return rc_err(eb, el, RC_EINVAL, "replayctl: ratio %g: expected >= 0", (double)o->ratio);
    if (o->adaptive) {
        if (!(o->min > 0 && o->min <= o->max))
            return rc_err(eb, el, RC_EINVAL, "replayctl: bounds [%g, %g]: expected 0 < min <= max",
                          (double)o->min, (double)o->max);
        if (o->probe_every < 1 || o->phase < o->probe_every ||
            o->phase / o->probe_every > RC_REPLAYCTL_MAX_HELD || !(o->step > 1))
            return rc_err(
                eb, el, RC_EINVAL,
                "replayctl: probe_every %u, phase %u, step %g: expected probe_every >= 1, "
                "phase / probe_every in 1..%u, step > 1",
                o->probe_every, o->phase, (double)o->step, RC_REPLAYCTL_MAX_HELD);
    }
    rc_replayctl *c = calloc(1, sizeof *c);
    if (!c)
        return rc_err(eb, el, RC_ENOMEM, "replayctl: out of memory");
    c->o = *o;
    c->ratio = c->phase_ratio = o->ratio;
    if (o->adaptive) {
        c->ratio = RC_MIN(RC_MAX(c->ratio, (double)o->min), (double)o->max);
        phase_start(c);
    }
    atomic_store(&c->ratio_pub, c->ratio);
    atomic_store(&c->phase_pub, c->phase_ratio);
    *out = c;
    return 0;
}

void rc_replayctl_destroy(rc_replayctl *c) { free(c); }

double rc_replayctl_ratio(const rc_replayctl *c) { return c ? c->phase_ratio : 0; }

/* Cosine of the query q (|q| = 1) with row r. */
static double cos_row(const rc_table *t, const float *q, uint32_t r)
{
    uint32_t dim = rc_table_dim(t);
    const float *v = rc_table_in(t, r);
    double nv = sqrt((double)rc_vec_dot(v, v, dim));
    return nv > 0 ? (double)rc_vec_dot(q, v, dim) / nv : 0;
}

double rc_replayctl_score(const rc_table *t, uint32_t center, const uint32_t *ctx, uint32_t nctx,
                          const uint32_t *refs, uint32_t nrefs)
{
    float q[1024];
    uint32_t dim = rc_table_dim(t), size = rc_table_size(t);
    if (!nrefs || nctx == 0 || center >= size || dim > 1024)
        return 0.5;
    memset(q, 0, dim * sizeof *q);
    for (uint32_t i = nctx > QUERY_ROWS ? nctx - QUERY_ROWS : 0; i < nctx; i++) {
        if (ctx[i] >= size)
            continue;
        const float *v = rc_table_in(t, ctx[i]);
        double nv = sqrt((double)rc_vec_dot(v, v, dim));
        if (nv > 0)
            rc_vec_axpy((float)(1.0 / nv), v, q, dim);
    }
    if (rc_vec_normalize(q, dim) <= 0)
        return 0.5;
    double sc = cos_row(t, q, center), below = 0;
    for (uint32_t k = 0; k < nrefs; k++) {
        double sr = refs[k] < size ? cos_row(t, q, refs[k]) : 0;
        below += sr < sc ? 1.0 : sr == sc ? 0.5 : 0.0;
    }
    return below / nrefs;
}

int rc_replayctl_hold(rc_replayctl *c, const rc_table *t, rc_rng *rng, uint32_t center,
                      const uint32_t *ctx, uint32_t nctx)
{
    if (!c || !c->o.adaptive || nctx == 0)
        return 0;
    if (c->fresh++ % c->o.probe_every != 0 || c->nheld == RC_REPLAYCTL_MAX_HELD)
        return 0;
    uint32_t size = rc_table_size(t);
    if (size < 2 || center >= size)
        return 0;
    struct held *h = &c->held[c->nheld];
    uint32_t first = nctx > RC_REPLAYCTL_MAX_CTX ? nctx - RC_REPLAYCTL_MAX_CTX : 0;
    h->p.center = center;
    h->p.nctx = nctx - first;
    memcpy(h->p.ctx, ctx + first, h->p.nctx * sizeof *ctx);
    for (uint32_t k = 0; k < RC_REPLAYCTL_REFS;) {
        uint32_t r = rc_rng_below(rng, size);
        if (r != center)
            h->refs[k++] = r;
    }
    h->s0 = rc_replayctl_score(t, center, h->p.ctx, h->p.nctx, h->refs, RC_REPLAYCTL_REFS);
    c->nheld++;
    return 1;
}

int rc_replayctl_phase_over(const rc_replayctl *c)
{
    return c && c->o.adaptive && c->fresh >= c->o.phase;
}

/* A cycle is over: move the centre by step toward the side that gained more,
 * when the difference of the means exceeds its standard error. */
static void decide(rc_replayctl *c)
{
    double mean[2], var[2];
    for (int k = 0; k < 2; k++) {
        double n = (double)c->side[k].n;
        mean[k] = n ? c->side[k].sum / n : 0;
        double v = n > 1 ? (c->side[k].sum2 - n * mean[k] * mean[k]) / (n - 1) : 0;
        var[k] = n ? RC_MAX(v, 0) / n : 0;
    }
    double diff = mean[0] - mean[1], se = sqrt(var[0] + var[1]);
    if (c->side[0].n > 1 && c->side[1].n > 1) {
        if (diff > se) {
            c->ratio = RC_MIN(c->ratio * c->o.step, (double)c->o.max);
            atomic_fetch_add(&c->raises, 1);
        } else if (diff < -se) {
            c->ratio = RC_MAX(c->ratio / c->o.step, (double)c->o.min);
            atomic_fetch_add(&c->lowers, 1);
        }
        atomic_fetch_add(&c->decisions, 1);
    }
    atomic_store(&c->last_diff, diff);
    atomic_store(&c->last_se, se);
    memset(c->side, 0, sizeof c->side);
}

uint32_t rc_replayctl_release(rc_replayctl *c, const rc_table *t, rc_replayctl_probe *out,
                              uint32_t max)
{
    if (!rc_replayctl_phase_over(c))
        return 0;
    struct side *sd = &c->side[phase_is_a(c->phase_no) ? 0 : 1];
    uint32_t k = 0;
    for (; k < c->nheld && k < max; k++) {
        struct held *h = &c->held[k];
        double d =
            rc_replayctl_score(t, h->p.center, h->p.ctx, h->p.nctx, h->refs, RC_REPLAYCTL_REFS) -
            h->s0;
        sd->sum += d;
        sd->sum2 += d * d;
        sd->n++;
        out[k] = h->p;
    }
    atomic_fetch_add(&c->probes, k);
    memmove(c->held, c->held + k, (c->nheld - k) * sizeof *c->held);
    c->nheld -= k;
    c->phase_no = (c->phase_no + 1) % 4;
    if (c->phase_no == 0)
        decide(c);
    phase_start(c);
    return k;
}

uint32_t rc_replayctl_held(const rc_replayctl *c) { return c ? c->nheld : 0; }

void rc_replayctl_stats_get(const rc_replayctl *c, rc_replayctl_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!c)
        return;
    rc_replayctl *m = (rc_replayctl *)c;
    st->adaptive = c->o.adaptive;
    st->ratio = atomic_load(&m->ratio_pub);
    st->phase_ratio = atomic_load(&m->phase_pub);
    st->probes = atomic_load(&m->probes);
    st->decisions = atomic_load(&m->decisions);
    st->raises = atomic_load(&m->raises);
    st->lowers = atomic_load(&m->lowers);
    st->last_diff = atomic_load(&m->last_diff);
    st->last_se = atomic_load(&m->last_se);
}
