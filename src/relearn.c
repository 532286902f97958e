/* relearn — the streaming trainer's replay buffer of training examples (see
 * relearn.h). Slot s holds example number s % cap: its center, its context
 * count and `window` context rows. */
#include "recalld/relearn.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WINDOW 64u

struct rc_relearn {
    uint32_t cap, window;
    uint32_t *center;
    uint8_t *nctx;
    uint32_t *ctx; /* cap * window */
    uint64_t added;
    uint64_t base; /* examples before it were forgotten (rc_relearn_forget) */
    _Atomic uint64_t added_pub, base_pub, replayed, skipped, yields, forgotten;
};

size_t rc_relearn_bytes_for(uint32_t clicks, uint32_t window)
{
    return (size_t)clicks * ((size_t)window * 4 + 5) + sizeof(struct rc_relearn);
}

int rc_relearn_create(uint32_t clicks, uint32_t window, rc_relearn **out, char *eb, size_t el)
{
    if (!out)
        return rc_err(eb, el, RC_EINVAL, "relearn: out is NULL");
    *out = NULL;
    if (clicks == 0 || clicks > RC_RELEARN_MAX_CLICKS)
        return rc_err(eb, el, RC_EINVAL, "relearn: clicks = %u: expected 1..%u", clicks,
                      RC_RELEARN_MAX_CLICKS);
    if (window == 0 || window > MAX_WINDOW)
        return rc_err(eb, el, RC_EINVAL, "relearn: window = %u: expected 1..%u", window,
                      MAX_WINDOW);
    rc_relearn *r = calloc(1, sizeof *r);
    if (r) {
        r->cap = clicks;
        r->window = window;
        r->center = malloc((size_t)clicks * sizeof *r->center);
        r->nctx = malloc(clicks);
        r->ctx = malloc((size_t)clicks * window * sizeof *r->ctx);
    }
    if (!r || !r->center || !r->nctx || !r->ctx) {
        rc_relearn_destroy(r);
        return rc_err(eb, el, RC_ENOMEM, "relearn: out of memory for %u examples (%zu bytes)",
                      clicks, rc_relearn_bytes_for(clicks, window));
    }
    *out = r;
    return 0;
}

void rc_relearn_destroy(rc_relearn *r)
{
    if (!r)
        return;
    free(r->center);
    free(r->nctx);
    free(r->ctx);
    free(r);
}

void rc_relearn_add(rc_relearn *r, uint32_t center, const uint32_t *ctx, uint32_t nctx)
{
    if (!r || nctx == 0 || !ctx)
        return;
    uint32_t first = nctx > r->window ? nctx - r->window : 0, n = nctx - first;
    uint32_t slot = (uint32_t)(r->added % r->cap);
    r->center[slot] = center;
    r->nctx[slot] = (uint8_t)n;
    memcpy(r->ctx + (size_t)slot * r->window, ctx + first, n * sizeof *ctx);
    r->added++;
    atomic_store_explicit(&r->added_pub, r->added, memory_order_relaxed);
}

/* Examples held: the newest cap, less those forgotten (a stats reader may
 * see a base newer than its added: none then). */
static uint64_t held_of(uint64_t added, uint64_t base, uint32_t cap)
{
    uint64_t ring = added < cap ? added : cap;
    return base >= added ? 0 : RC_MIN(ring, added - base);
}

int rc_relearn_pick(rc_relearn *r, rc_rng *rng, uint32_t *center, uint32_t *ctx, uint32_t *nctx)
{
    if (!r)
        return RC_ENOENT;
    uint64_t held = held_of(r->added, r->base, r->cap);
    if (held == 0)
        return RC_ENOENT;
    uint32_t slot;
    if (held == (r->added < r->cap ? r->added : r->cap))
        slot = rc_rng_below(rng, (uint32_t)held); /* every slot in use is held */
    else /* the newest `held` examples: numbers added - held .. added - 1 */
        slot = (uint32_t)((r->added - held + rc_rng_below(rng, (uint32_t)held)) % r->cap);
    *center = r->center[slot];
    *nctx = r->nctx[slot];
    memcpy(ctx, r->ctx + (size_t)slot * r->window, *nctx * sizeof *ctx);
    return 0;
}

void rc_relearn_forget(rc_relearn *r)
{
    if (!r)
        return;
    uint64_t held = held_of(r->added, r->base, r->cap);
    r->base = r->added;
    atomic_store_explicit(&r->base_pub, r->base, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->forgotten, held, memory_order_relaxed);
}

void rc_relearn_count(rc_relearn *r, uint64_t replayed, uint64_t skipped, uint64_t yields)
{
    if (!r)
        return;
    atomic_fetch_add_explicit(&r->replayed, replayed, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->skipped, skipped, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->yields, yields, memory_order_relaxed);
}

void rc_relearn_stats_get(const rc_relearn *r, rc_relearn_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!r)
        return;
    uint64_t added = atomic_load_explicit(&r->added_pub, memory_order_relaxed);
    st->capacity = r->cap;
    st->added = added;
    st->fill = held_of(added, atomic_load_explicit(&r->base_pub, memory_order_relaxed), r->cap);
    st->forgotten = atomic_load_explicit(&((rc_relearn *)r)->forgotten, memory_order_relaxed);
    st->replayed = atomic_load_explicit(&((rc_relearn *)r)->replayed, memory_order_relaxed);
    st->skipped = atomic_load_explicit(&((rc_relearn *)r)->skipped, memory_order_relaxed);
    st->yields = atomic_load_explicit(&((rc_relearn *)r)->yields, memory_order_relaxed);
    st->bytes = rc_relearn_bytes_for(r->cap, r->window);
}
