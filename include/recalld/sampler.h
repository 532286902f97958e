/* sampler — negative sampling for SGNS: per-city unigram^power distributions
 * (58.com: negatives from the SAME CITY as the positive), with a share of hard
 * negatives (same city, other category), and a global distribution as the
 * fallback for cities with fewer than min_city_items items.
 *
 * Each city (and the global set) has an alias table over its items weighted by
 * count^power, giving O(1) draws. Tables are kept up to date as counts change:
 * rc_sampler_note records a count change or a new item; rc_sampler_maintain
 * rebuilds the tables whose weight or item count changed by more than
 * rebuild_ratio since their last build (rebuild cost O(items of that city)).
 * Items added since the last build are drawn from a small "recent" list so new
 * items take part at once.
 *
 * Thread model: single thread (the trainer) for all calls except stats and
 * rc_sampler_draw_shared (read-only, any number of threads, see there). */
#ifndef RECALLD_SAMPLER_H
#define RECALLD_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/common.h"
#include "recalld/table.h"

typedef struct rc_sampler rc_sampler;

typedef struct rc_sampler_opts {
    float power;             /* unigram exponent, 0 = 0.75 */
    uint32_t min_city_items; /* below: use the global table, 0 = 50 */
    float rebuild_ratio;     /* 0 = 0.05 (5% change of weight or items) */
    int global_only;         /* 1: ignore cities (plain word2vec sampling) */
} rc_sampler_opts;

typedef struct rc_sampler_stats {
    uint64_t rebuilds; /* table rebuilds so far */
    uint64_t draws, hard_draws, fallback_draws;
    uint32_t cities; /* cities with their own table */
    uint64_t bytes;  /* per-row records, members, alias tables, queue (capacities) */
} rc_sampler_stats;

/* The sampler reads rows' city/cate/count from `table` (borrowed; must outlive it). */
int rc_sampler_create(const rc_sampler_opts *opts, const rc_table *table, rc_sampler **out,
                      char *errbuf, size_t errlen);
void rc_sampler_destroy(rc_sampler *s);

/* Row's count changed or the row is new (call after rc_table_count_add/upsert). */
void rc_sampler_note(rc_sampler *s, uint32_t row);

/* Rebuilds stale tables. Returns the number rebuilt. Also safe to call often. */
uint32_t rc_sampler_maintain(rc_sampler *s);

/* Draws k negatives for positive item `pos` into out[0..k): round(k*hard_share)
 * of them hard (same city as pos, different category; falls back to same city
 * when the city has one category), the rest from pos's city distribution
 * (global when the city is small). Never returns pos itself unless the whole
 * candidate set is {pos}. Returns the number written (k, or 0 when the table
 * is empty). */
uint32_t rc_sampler_draw(rc_sampler *s, rc_rng *rng, uint32_t pos, float hard_share, uint32_t k,
                         uint32_t *out);

/* rc_sampler_draw without any write: no stats, no catch-up of rows added to
 * the table since the last call. For several threads drawing at once (batch
 * Hogwild training) while no thread calls a writing sampler function; call
 * rc_sampler_maintain first (rows it does not know yet give 0 draws). */
uint32_t rc_sampler_draw_shared(const rc_sampler *s, rc_rng *rng, uint32_t pos, float hard_share,
                                uint32_t k, uint32_t *out);

/* What the draws of one thread would have counted in rc_sampler_stats. */
typedef struct rc_sampler_tally {
    uint64_t draws, hard_draws, fallback_draws;
} rc_sampler_tally;

/* rc_sampler_draw_shared that counts its draws in *tally (the caller's, one
 * per thread): the parallel streaming trainer's shards draw this way while
 * the trainer thread writes nothing, then hand the tallies to
 * rc_sampler_add_tally (trainer thread). */
uint32_t rc_sampler_draw_tally(const rc_sampler *s, rc_rng *rng, uint32_t pos, float hard_share,
                               uint32_t k, uint32_t *out, rc_sampler_tally *tally);
void rc_sampler_add_tally(rc_sampler *s, const rc_sampler_tally *tally);

/* Read-only, for latency: starts the memory loads of the rc_sampler_draw
 * calls that would be made for pos[0..npos) in that order, each with the same
 * hard_share and k, with a generator in rng's state; advances *rng as those
 * calls do when no candidate is refused. Pass a COPY of the generator that
 * will draw: a trainer peeks at the draws of several pairs first, then draws
 * them for real, so their cache misses overlap instead of stalling each draw
 * in turn. */
void rc_sampler_prefetch(const rc_sampler *s, rc_rng *rng, const uint32_t *pos, uint32_t npos,
                         float hard_share, uint32_t k);

void rc_sampler_stats_get(const rc_sampler *s, rc_sampler_stats *st);

#endif
