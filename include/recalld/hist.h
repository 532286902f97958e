/* hist — lock-free histograms with fixed bucket bounds.
 *
 * An rc_hist takes integer observations in a base unit (e.g. microseconds)
 * and is exported scaled (e.g. to seconds) by the Prometheus writer
 * (metrics.h, rc_prom_hist) as cumulative `_bucket{le=...}`, `_sum` and
 * `_count`. Observing is lock-free (atomics) from any thread. A leaf module:
 * it depends on nothing of recalld's, so that every owner of a latency can
 * embed one. */
#ifndef RECALLD_HIST_H
#define RECALLD_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define RC_HIST_MAX 24 /* finite buckets per histogram */

/* Plain struct so that owners can embed it; touch it only through rc_hist_*. */
typedef struct rc_hist {
    uint32_t nb;                         /* finite bucket bounds in le[] */
    double scale;                        /* exported value = observed value * scale */
    uint64_t le[RC_HIST_MAX];            /* upper bounds (inclusive), strictly increasing */
    _Atomic uint64_t n[RC_HIST_MAX + 1]; /* per bucket, not cumulative; n[nb] = above le[nb-1] */
    _Atomic uint64_t sum;                /* of observed values, base unit */
} rc_hist;

/* Bucket bounds in microseconds for request latencies (50 us .. 10 s) and for
 * event freshness (1 ms .. 120 s); use with scale 1e-6 to export seconds. */
extern const uint64_t rc_hist_latency_us[];
extern const uint32_t rc_hist_latency_us_n;
extern const uint64_t rc_hist_freshness_us[];
extern const uint32_t rc_hist_freshness_us_n;

/* A copy of a histogram's counts taken at one moment: plain data, so that
 * an owner can hand it out inside a stats struct. */
typedef struct rc_hist_snap {
    uint32_t nb;
    double scale;
    uint64_t le[RC_HIST_MAX];
    uint64_t n[RC_HIST_MAX + 1]; /* per bucket, not cumulative */
    uint64_t sum;                /* base unit */
} rc_hist_snap;

/* Sets bounds le[0..nb) (nb <= RC_HIST_MAX, strictly increasing; excess is
 * ignored) and zeroes the counts. Not thread-safe: before any observer runs. */
void rc_hist_init(rc_hist *h, const uint64_t *le, uint32_t nb, double scale);
/* Any thread, lock-free. */
void rc_hist_observe(rc_hist *h, uint64_t v);
/* Any thread. Total observations (consistent with a snapshot taken later or
 * earlier only up to concurrent observations). */
uint64_t rc_hist_count(const rc_hist *h);
/* Any thread. Copies bounds and counts (each bucket read once, relaxed). */
void rc_hist_snapshot(const rc_hist *h, rc_hist_snap *out);

#endif
