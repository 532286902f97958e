/* userq — the one definition of a user's query: which of the user's recent
 * clicks make the user vector, with which weights, and which city a recall
 * without one is scoped to. The daemon (rc_engine_recall) and the evaluator
 * (recalld-eval's embedding methods) both call it, so what recalld-eval
 * scores is what the socket answers (issue 14, item 3).
 *
 * Given the user's clicks oldest first (as the session store holds them,
 * across sessions), rc_userq_weigh keeps the newest `window` and weighs each
 *   w = 2^(-age / half_life_ms)   (age behind the newest click; 1 when 0)
 *     * past_session_weight       (only for clicks before the current session)
 * where the current session is the run of clicks back from the user's
 * newest click without a gap over gap_ms. past_session_weight 1 ignores sessions; 0 uses the
 * current session only. The user vector is the weighted mean of the kept clicks' vectors
 * (rc_recall_query_vector).
 *
 * Thread model: pure functions (the table is only read). */
#ifndef RECALLD_USERQ_H
#define RECALLD_USERQ_H

#include <stdint.h>

#include "recalld/config.h"
#include "recalld/table.h"

#define RC_USERQ_MAX 256u /* clicks considered at most */

typedef struct rc_userq_opts {
    uint32_t window;           /* newest clicks kept, 1..RC_USERQ_MAX (recall.window) */
    int64_t half_life_ms;      /* recall.half_life_ms, 0 = no decay */
    float past_session_weight; /* recall.past_session_weight, 0..1 */
    int64_t gap_ms;            /* sessions.gap_ms */
} rc_userq_opts;

/* The daemon configuration's settings. */
void rc_userq_opts_from_config(const rc_config *c, rc_userq_opts *o);

/* rows[0..n), ts[0..n): the user's clicks, oldest first. Keeps the newest
 * min(n, window, RC_USERQ_MAX) (moved to the front of rows and ts) and writes
 * their weights to w. last_ms: the time of the user's newest click, which
 * ages and sessions are measured from (the evaluator's history may leave out
 * clicks of items without a vector); INT64_MIN = the newest of ts. Returns
 * how many were kept. */
uint32_t rc_userq_weigh(const rc_userq_opts *o, uint32_t *rows, int64_t *ts, uint32_t n,
                        int64_t last_ms, float *w);

/* The city a recall without one is scoped to (recall.scope user_city): the
 * city of the largest total weight among rows[0..n), the first such on ties;
 * -1 when n is 0. */
int64_t rc_userq_city(const rc_table *t, const uint32_t *rows, const float *w, uint32_t n);

#endif
