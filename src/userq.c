/* userq — the user's query: clicks kept, their weights, the user's city
 * (see userq.h). */
#include "recalld/userq.h"

#include <math.h>
#include <string.h>

#include "recalld/common.h"

void rc_userq_opts_from_config(const rc_config *c, rc_userq_opts *o)
{
    *o = (rc_userq_opts){.window = c->recall_window,
                         .half_life_ms = c->half_life_ms,
                         .past_session_weight = c->past_session_weight,
                         .gap_ms = c->gap_ms};
}

uint32_t rc_userq_weigh(const rc_userq_opts *o, uint32_t *rows, int64_t *ts, uint32_t n,
                        int64_t last_ms, float *w)
{
    uint32_t keep = RC_MIN(n, RC_MIN(o->window ? o->window : 1u, RC_USERQ_MAX));
    uint32_t first = n - keep;
    if (first) {
        memmove(rows, rows + first, keep * sizeof *rows);
        memmove(ts, ts + first, keep * sizeof *ts);
    }
    if (!keep)
        return 0;
    int64_t newest = last_ms;
    for (uint32_t i = 0; i < keep; i++)
        newest = RC_MAX(newest, ts[i]);
    /* The current session: back from the newest click while no gap. */
    uint32_t start = keep;
    int64_t prev = newest;
    while (start > 0 && (o->gap_ms <= 0 || prev - ts[start - 1] <= o->gap_ms))
        prev = ts[--start];
    float past = o->past_session_weight < 0 ? 0 : RC_MIN(o->past_session_weight, 1.0f);
    for (uint32_t i = 0; i < keep; i++) {
        float d =
            o->half_life_ms > 0 ? exp2f(-(float)(newest - ts[i]) / (float)o->half_life_ms) : 1.0f;
        w[i] = i < start ? d * past : d;
    }
    return keep;
}

int64_t rc_userq_city(const rc_table *t, const uint32_t *rows, const float *w, uint32_t n)
{
    uint32_t city[64];
    float weight[64];
    uint32_t nc = 0, best = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = rc_table_city(t, rows[i]), j;
        for (j = 0; j < nc && city[j] != c; j++)
            ;
        if (j == nc) {
            if (nc == 64)
                continue;
            city[nc] = c;
            weight[nc++] = 0;
        }
        weight[j] += w ? w[i] : 1.0f;
        if (weight[j] > weight[best])
            best = j;
    }
    return nc ? (int64_t)city[best] : -1;
}
