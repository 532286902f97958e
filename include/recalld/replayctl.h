/* replayctl — the streaming trainer's replay controller (train.replay_adaptive):
 * how many recent examples to replay per new click, chosen as the stream goes
 * by measuring what replay does to the prediction of clicks it has not learnt.
 *
 * Phases. The stream is cut into phases of `phase` fresh clicks, run in
 * cycles of four, A B B A: A replays ratio x step per click, B ratio / step
 * (ABBA cancels a linear trend of the stream). After a cycle the centre ratio
 * moves by `step` toward the side whose probes gained more, when the
 * difference of the means exceeds its standard error; always within
 * [min, max].
 *
 * Probes. One fresh click in `probe_every` (that trained at least one pair) is
 * held back from training: its score s0 is taken at once, it stays untrained
 * to the end of its phase, is scored again (s1) and handed back to the
 * trainer, which trains it then (its replays were owed at hold). d = s1 - s0
 * is what the phase's training did to the prediction of a click no model has
 * seen; the phases differ only in their replay, so d(A) - d(B) is the effect
 * of more replay on new data.
 *
 * Score. The query is the mean of the normalised input vectors of the
 * click's last <= 5 context rows (the shape of the daemon's user query); the
 * score is the share of RC_REPLAYCTL_REFS reference rows, drawn uniformly from
 * the table at hold time, whose cosine with the query is below the clicked
 * row's (a sampled AUC of its rank, ties counting half).
 *
 * Pinned (adaptive 0): nothing is held, the ratio stays the configured one.
 *
 * Thread model: one owner (the engine's trainer thread, or the offline
 * caller); rc_replayctl_stats_get may be called from any thread. */
#ifndef RECALLD_REPLAYCTL_H
#define RECALLD_REPLAYCTL_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/common.h"
#include "recalld/table.h"

#define RC_REPLAYCTL_REFS     64u  /* reference rows per probe */
#define RC_REPLAYCTL_MAX_CTX  64u  /* context rows a probe keeps */
#define RC_REPLAYCTL_MAX_HELD 256u /* probes waiting for their second score */

typedef struct rc_replayctl rc_replayctl;

typedef struct rc_replayctl_opts {
    int adaptive;         /* 0: the ratio is pinned to `ratio` */
    float ratio;          /* the pinned ratio, or the adaptive one's start */
    float min, max;       /* adaptive bounds, 0 < min <= ratio <= max */
    uint32_t probe_every; /* one fresh click in this many is a probe, >= 1 */
    uint32_t phase;       /* fresh clicks per phase, >= probe_every */
    float step;           /* multiplicative step, > 1 */
} rc_replayctl_opts;

/* A probe handed back for training (its context as at hold time). */
typedef struct rc_replayctl_probe {
    uint32_t center, nctx;
    uint32_t ctx[RC_REPLAYCTL_MAX_CTX];
} rc_replayctl_probe;

typedef struct rc_replayctl_stats {
    int adaptive;
    double ratio;       /* replays owed per new click now */
    double phase_ratio; /* the ratio of the running phase */
    uint64_t probes;    /* clicks held and scored twice */
    uint64_t decisions; /* cycles closed */
    uint64_t raises, lowers;
    double last_diff; /* the last cycle's mean d(A) - d(B) (AUC points) */
    double last_se;   /* and its standard error */
} rc_replayctl_stats;

/* Returns 0, RC_EINVAL (errbuf says why) or RC_ENOMEM. */
int rc_replayctl_create(const rc_replayctl_opts *o, rc_replayctl **out, char *errbuf,
                        size_t errlen);
void rc_replayctl_destroy(rc_replayctl *c); /* NULL-safe */

/* The ratio to credit the next click with (the running phase's). */
double rc_replayctl_ratio(const rc_replayctl *c);

/* A fresh click about to be trained (center after ctx[0..nctx), the rows
 * SGNS pairs it with); counts it toward the phase. Returns 1 when it is held
 * as a probe: the caller must not train it now; rc_replayctl_release hands it
 * back. Adaptive only. */
int rc_replayctl_hold(rc_replayctl *c, const rc_table *t, rc_rng *rng, uint32_t center,
                      const uint32_t *ctx, uint32_t nctx);
/* After a replay round: when the phase is over, scores every held probe
 * again, closes the phase (and the cycle: the ratio may move), and copies the
 * probes to out[0..max) for training; returns how many (0 while the phase
 * runs; all held ones when max >= RC_REPLAYCTL_MAX_HELD). */
uint32_t rc_replayctl_release(rc_replayctl *c, const rc_table *t, rc_replayctl_probe *out,
                              uint32_t max);
/* Held probes not yet released; rc_replayctl_phase_over: 1 when the phase's
 * clicks are all in (release would hand the probes back). */
uint32_t rc_replayctl_held(const rc_replayctl *c);
int rc_replayctl_phase_over(const rc_replayctl *c);

/* The score of a click (see above); refs[0..nrefs) are rows of t. Exposed for
 * tests. */
double rc_replayctl_score(const rc_table *t, uint32_t center, const uint32_t *ctx, uint32_t nctx,
                          const uint32_t *refs, uint32_t nrefs);

void rc_replayctl_stats_get(const rc_replayctl *c, rc_replayctl_stats *st);

#endif
