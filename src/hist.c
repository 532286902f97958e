/* hist — see include/recalld/hist.h. */
#include "recalld/hist.h"

#include <string.h>

/* A leaf: nothing of recalld but its own header (not even common.h). */
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const uint64_t rc_hist_latency_us[] = {50,     100,     250,     500,     1000,    2500,
                                       5000,   10000,   25000,   50000,   100000,  250000,
                                       500000, 1000000, 2500000, 5000000, 10000000};
const uint32_t rc_hist_latency_us_n = NELEM(rc_hist_latency_us);
const uint64_t rc_hist_freshness_us[] = {1000,     2500,     5000,     10000,    25000,   50000,
                                         100000,   250000,   500000,   1000000,  2500000, 5000000,
                                         10000000, 30000000, 60000000, 120000000};
const uint32_t rc_hist_freshness_us_n = NELEM(rc_hist_freshness_us);

void rc_hist_init(rc_hist *h, const uint64_t *le, uint32_t nb, double scale)
{
    memset(h, 0, sizeof *h);
    h->scale = scale > 0 ? scale : 1;
    for (uint32_t i = 0; i < nb && h->nb < RC_HIST_MAX; i++)
        if (h->nb == 0 || le[i] > h->le[h->nb - 1])
            h->le[h->nb++] = le[i];
}

void rc_hist_observe(rc_hist *h, uint64_t v)
{
    uint32_t lo = 0, hi = h->nb; /* first bound >= v, or nb */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (h->le[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    atomic_fetch_add_explicit(&h->n[lo], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

uint64_t rc_hist_count(const rc_hist *h)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i <= h->nb; i++)
        n += atomic_load_explicit(&h->n[i], memory_order_relaxed);
    return n;
}

void rc_hist_snapshot(const rc_hist *h, rc_hist_snap *out)
{
    out->nb = h->nb;
    out->scale = h->scale;
    memcpy(out->le, h->le, sizeof out->le);
    for (uint32_t i = 0; i <= RC_HIST_MAX; i++)
        out->n[i] = i <= h->nb ? atomic_load_explicit(&h->n[i], memory_order_relaxed) : 0;
    out->sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
}
