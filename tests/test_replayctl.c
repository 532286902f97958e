/* replayctl: the adaptive replay ratio (train.replay_adaptive) — its probe
 * score, its controller on planted effects, and the engine's use of it. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "e2e.h"
#include "recalld/engine.h"
#include "recalld/replayctl.h"
#include "recalld/table.h"
#include "test.h"

#define DIM   16
#define ROWS  200
#define PHASE 8

static rc_table *random_table(void)
{
    rc_table_opts to = {.dim = DIM, .seed = 3};
    rc_table *t = NULL;
    char err[256], id[16];
    uint32_t row, city = 0, cate = 0;
    int created;
    ASSERT_EQ(rc_table_create(&to, &t, err, sizeof err), 0);
    ASSERT_EQ(rc_table_city_id(t, "c", 1, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k", 1, &cate), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 5);
    for (int i = 0; i < ROWS; i++) {
        snprintf(id, sizeof id, "i%d", i);
        ASSERT_EQ(rc_table_upsert(t, id, strlen(id), city, cate, NULL, 0, &row, &created), 0);
        float *v = rc_table_in(t, row);
        for (int d = 0; d < DIM; d++)
            v[d] = rc_rng_float(&rng) * 2 - 1;
    }
    return t;
}

/* The score is the share of reference rows the clicked row beats: a row
 * equal to the query beats every other row; the query's opposite none. */
TEST(replayctl_score_ranks_the_clicked_row)
{
    rc_table *t = random_table();
    uint32_t refs[50], ctx[1] = {7};
    for (uint32_t k = 0; k < 50; k++)
        refs[k] = 10 + k;
    float *c = rc_table_in(t, 3), *q = rc_table_in(t, 7);
    for (int d = 0; d < DIM; d++)
        c[d] = 2 * q[d];
    ASSERT_NEAR(rc_replayctl_score(t, 3, ctx, 1, refs, 50), 1.0, 1e-9);
    for (int d = 0; d < DIM; d++)
        c[d] = -q[d];
    ASSERT_NEAR(rc_replayctl_score(t, 3, ctx, 1, refs, 50), 0.0, 1e-9);
    ASSERT_NEAR(rc_replayctl_score(t, 3, ctx, 0, refs, 50), 0.5, 1e-9); /* no query */
    rc_table_destroy(t);
}

/* Drives a controller through `cycles` A B B A cycles of PHASE clicks, each
 * click a probe (probe_every 1). `helps`: +1, the phases of more replay (A)
 * make their probes' rows match their queries (as replay that helps new
 * clicks would); -1, the phases of less replay (B) do; 0, none does. */
static rc_replayctl_stats drive(rc_replayctl *c, int helps, int cycles)
{
    rc_table *t = random_table();
    rc_rng rng;
    rc_rng_seed(&rng, 11);
    rc_replayctl_probe out[RC_REPLAYCTL_MAX_HELD];
    rc_replayctl_stats st;
    uint32_t next = 0;
    for (int ph = 0; ph < 4 * cycles; ph++) {
        rc_replayctl_stats_get(c, &st);
        /* A replays more than the centre; at the upper bound, as much */
        double r = rc_replayctl_ratio(c);
        int a = r > st.ratio || (r == st.ratio && r >= 200.0);
        uint32_t held[PHASE];
        for (int i = 0; i < PHASE; i++) {
            uint32_t center = next++ % ROWS, ctx[2] = {(center + 1) % ROWS, (center + 2) % ROWS};
            ASSERT_EQ(rc_replayctl_phase_over(c), 0);
            ASSERT_EQ(rc_replayctl_hold(c, t, &rng, center, ctx, 2), 1);
            held[i] = center;
        }
        ASSERT_EQ(rc_replayctl_phase_over(c), 1);
        if ((helps > 0 && a) || (helps < 0 && !a))
            for (int i = 0; i < PHASE; i++) { /* the row moves onto its query */
                float *v = rc_table_in(t, held[i]);
                const float *x = rc_table_in(t, (held[i] + 1) % ROWS);
                const float *y = rc_table_in(t, (held[i] + 2) % ROWS);
                float nx = 0, ny = 0;
                for (int d = 0; d < DIM; d++) {
                    nx += x[d] * x[d];
                    ny += y[d] * y[d];
                }
                for (int d = 0; d < DIM; d++)
                    v[d] = x[d] / sqrtf(nx) + y[d] / sqrtf(ny);
            }
        ASSERT_EQ(rc_replayctl_release(c, t, out, RC_REPLAYCTL_MAX_HELD), PHASE);
        ASSERT_EQ(rc_replayctl_held(c), 0);
        for (int i = 0; i < PHASE; i++) { /* handed back as held, for training */
            ASSERT_EQ(out[i].center, held[i]);
            ASSERT_EQ(out[i].nctx, 2);
        }
    }
    rc_table_destroy(t);
    rc_replayctl_stats_get(c, &st);
    return st;
}

static rc_replayctl *ctl(int adaptive)
{
    rc_replayctl_opts o = {.adaptive = adaptive,
                           .ratio = 20,
                           .min = 5,
                           .max = 200,
                           .probe_every = 1,
                           .phase = PHASE,
                           .step = 2};
    rc_replayctl *c = NULL;
    char err[256];
    ASSERT_EQ(rc_replayctl_create(&o, &c, err, sizeof err), 0);
    return c;
}

/* Where more replay helps new clicks, the ratio rises to its bound; where
 * less does, it falls to its bound; where neither, it stays; a phase replays
 * the centre x or / step. */
TEST(replayctl_moves_toward_the_replay_that_helps)
{
    rc_replayctl *c = ctl(1);
    ASSERT_NEAR(rc_replayctl_ratio(c), 40.0, 1e-9); /* the first phase: A */
    rc_replayctl_stats st = drive(c, 1, 5);
    ASSERT_EQ(st.decisions, 5);
    ASSERT_EQ(st.raises, 5);
    ASSERT_NEAR(st.ratio, 200.0, 1e-9); /* 20 x 2^5, bounded */
    ASSERT(st.last_diff > 0.1);
    rc_replayctl_destroy(c);

    c = ctl(1);
    st = drive(c, -1, 5);
    ASSERT_EQ(st.lowers, 5);
    ASSERT_NEAR(st.ratio, 5.0, 1e-9);
    ASSERT_NEAR(rc_replayctl_ratio(c), 10.0, 1e-9); /* A again: 5 x 2 */
    rc_replayctl_destroy(c);

    c = ctl(1);
    st = drive(c, 0, 3);
    ASSERT_EQ(st.decisions, 3);
    ASSERT_EQ(st.raises + st.lowers, 0);
    ASSERT_NEAR(st.ratio, 20.0, 1e-9);
    ASSERT_EQ(st.probes, 3 * 4 * PHASE);
    rc_replayctl_destroy(c);
}

/* Pinned (adaptive 0): no click is held and the ratio is the configured one. */
TEST(replayctl_pinned_ratio_stays)
{
    rc_replayctl *c = ctl(0);
    rc_table *t = random_table();
    rc_rng rng;
    rc_rng_seed(&rng, 1);
    uint32_t ctx[1] = {1};
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(rc_replayctl_hold(c, t, &rng, 2, ctx, 1), 0);
    ASSERT_EQ(rc_replayctl_phase_over(c), 0);
    ASSERT_NEAR(rc_replayctl_ratio(c), 20.0, 1e-9);
    rc_replayctl_destroy(c);
    rc_table_destroy(t);
    rc_replayctl_opts bad = {
        .adaptive = 1, .ratio = 20, .min = 50, .max = 10, .probe_every = 1, .phase = 8, .step = 2};
    char err[256];
    ASSERT_EQ(rc_replayctl_create(&bad, &c, err, sizeof err), RC_EINVAL);
    bad.min = 5;
    bad.phase = 1000; /* 1000 probes a phase: more than can be held */
    ASSERT_EQ(rc_replayctl_create(&bad, &c, err, sizeof err), RC_EINVAL);
}

static json_t *replay_json(rc_engine *e)
{
    json_t *st = e2e_engine_stats(e);
    json_t *rp = json_incref(json_object_get(json_object_get(st, "training"), "replay"));
    json_decref(st);
    return rp;
}

/* Through the engine (offline, as the evaluator drives it): pinned, the
 * stats show the configured ratio and no probe; adaptive, probes are held,
 * scored and trained, cycles close and the ratio stays within its bounds. */
TEST(replayctl_engine_pinned_and_adaptive)
{
    for (int adaptive = 0; adaptive < 2; adaptive++) {
        rc_config c;
        rc_config_defaults(&c);
        c.dim = 16;
        c.replay_ratio = 10;
        c.replay_adaptive = adaptive;
        c.replay_probe_every = 4;
        c.replay_phase_clicks = 64;
        rc_engine *e = e2e_engine_offline(&c);
        char u[16], it[16];
        int64_t ts = 1700000000000LL;
        for (int s = 0; s < 300; s++) {
            snprintf(u, sizeof u, "u%d", s);
            for (int i = 0; i < 5; i++) {
                snprintf(it, sizeof it, "i%d", (s * 3 + i) % 60);
                ASSERT_EQ(rc_engine_apply_click(e, u, strlen(u), it, strlen(it), "c", 1, "k", 1,
                                                ts += 1000),
                          0);
            }
        }
        json_t *rp = replay_json(e);
        ASSERT(rp != NULL);
        double ratio = json_real_value(json_object_get(rp, "ratio"));
        json_int_t probes = json_integer_value(json_object_get(rp, "probes"));
        json_int_t decisions = json_integer_value(json_object_get(rp, "decisions"));
        ASSERT_EQ(json_is_true(json_object_get(rp, "adaptive")), adaptive);
        if (!adaptive) {
            ASSERT_NEAR(ratio, 10.0, 1e-9);
            ASSERT_NEAR(json_real_value(json_object_get(rp, "phase_ratio")), 10.0, 1e-9);
            ASSERT_EQ(probes, 0);
            ASSERT_EQ(decisions, 0);
        } else {
            /* 300 sessions x 4 clicks with a context = 1,200: 18 phases of 64 */
            ASSERT_EQ(probes, 18 * 16);
            ASSERT_EQ(decisions, 4);
            ASSERT(ratio >= 5.0 && ratio <= 200.0);
        }
        /* every trained click (probes too, once released) entered the buffer */
        ASSERT_EQ(json_integer_value(json_object_get(rp, "fill")), adaptive ? 1200 - 12 : 1200);
        json_decref(rp);
        rc_engine_destroy(e);
    }
}
