/* userq: the user query shared by the daemon and the evaluator; the
 * engine's recall builds its user vector through it. */
#include <string.h>

#include "e2e.h"
#include "recalld/engine.h"
#include "recalld/userq.h"
#include "test.h"

#define T0   1700000000000LL
#define HOUR (3600 * 1000LL)

/* window keeps the newest clicks; decay by age behind the newest; clicks
 * before the current session (a gap over gap_ms) are scaled by
 * past_session_weight. */
TEST(userq_weigh_window_decay_and_sessions)
{
    uint32_t rows[6] = {10, 11, 12, 13, 14, 15};
    int64_t ts[6] = {
        T0, T0 + 1000, T0 + 2000, T0 + 2 * HOUR, T0 + 2 * HOUR + 60000, T0 + 2 * HOUR + 120000};
    float w[6];
    rc_userq_opts o = {
        .window = 4, .half_life_ms = 0, .past_session_weight = 0.25f, .gap_ms = 30 * 60 * 1000};
    uint32_t n = rc_userq_weigh(&o, rows, ts, 6, INT64_MIN, w);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(rows[0], 12);
    ASSERT_EQ(rows[3], 15);
    ASSERT_EQ(ts[0], T0 + 2000);
    ASSERT_NEAR(w[0], 0.25, 1e-6); /* the earlier session */
    ASSERT_NEAR(w[1], 1, 1e-6);
    ASSERT_NEAR(w[3], 1, 1e-6);

    uint32_t r2[3] = {1, 2, 3};
    int64_t t2[3] = {T0, T0 + 60000, T0 + 120000};
    o = (rc_userq_opts){
        .window = 20, .half_life_ms = 60000, .past_session_weight = 1, .gap_ms = 1000};
    ASSERT_EQ(rc_userq_weigh(&o, r2, t2, 3, INT64_MIN, w), 3);
    /* a gap of 60 s > gap_ms: clicks 0 and 1 are earlier sessions, weight 1 */
    ASSERT_NEAR(w[0], 0.25, 1e-6);
    ASSERT_NEAR(w[1], 0.5, 1e-6);
    ASSERT_NEAR(w[2], 1, 1e-6);
    o.past_session_weight = 0;
    ASSERT_EQ(rc_userq_weigh(&o, r2, t2, 3, INT64_MIN, w), 3);
    ASSERT_NEAR(w[0], 0, 1e-9);
    ASSERT_NEAR(w[1], 0, 1e-9);
    ASSERT_NEAR(w[2], 1, 1e-6);
    ASSERT_EQ(rc_userq_weigh(&o, r2, t2, 0, INT64_MIN, w), 0);
    /* ages and the session from the user's newest click, here one without
     * a vector 2 h after the kept ones: all are an earlier session */
    o = (rc_userq_opts){
        .window = 20, .half_life_ms = 0, .past_session_weight = 0.5f, .gap_ms = 30 * 60 * 1000};
    ASSERT_EQ(rc_userq_weigh(&o, r2, t2, 3, T0 + 2 * HOUR, w), 3);
    ASSERT_NEAR(w[0], 0.5, 1e-6);
    ASSERT_NEAR(w[2], 0.5, 1e-6);
}

/* Trains two groups of items, then recalls for a user whose earlier session
 * was in group a and whose current one is in group b. */
static rc_engine *two_group_engine(float past_weight)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.seed = 3;
    c.past_session_weight = past_weight;
    rc_engine *e = e2e_engine_offline(&c);
    char u[32], it[32];
    int64_t ts = T0;
    for (int s = 0; s < 200; s++) {
        snprintf(u, sizeof u, "t%d", s);
        for (int i = 0; i < 5; i++) {
            snprintf(it, sizeof it, "%c%d", s % 2 ? 'a' : 'b', (s * 7 + i * 3) % 20);
            e2e_engine_click(e, u, it, "c0", "k", ts += 1000);
        }
    }
    ts += 3 * HOUR;
    e2e_engine_click(e, "u1", "a1", "c0", "k", ts);
    e2e_engine_click(e, "u1", "a2", "c0", "k", ts + 1000);
    ts += 3 * HOUR; /* a new session for u1; u2 starts here */
    e2e_engine_click(e, "u1", "b3", "c0", "k", ts);
    e2e_engine_click(e, "u1", "b4", "c0", "k", ts + 1000);
    e2e_engine_click(e, "u2", "b3", "c0", "k", ts);
    e2e_engine_click(e, "u2", "b4", "c0", "k", ts + 1000);
    rc_engine_flush_index(e);
    return e;
}

/* recall.past_session_weight 0: the user vector is the current session's
 * alone, so u1 (earlier session in group a) gets exactly u2's answer (only
 * the current session), a1 and a2 aside (excluded for u1 as clicked); with
 * weight 1 the earlier session moves the answer. */
TEST(userq_engine_recall_uses_past_session_weight)
{
    rc_hit h1[12], h2[14];
    uint32_t n1 = 0, n2 = 0;
    int fb = 0;
    for (int pass = 0; pass < 2; pass++) {
        rc_engine *e = two_group_engine(pass ? 1.0f : 0.0f);
        rc_recall_req q1 = {.user = "u1", .ulen = 2, .k = 12, .exact = 1};
        rc_recall_req q2 = {.user = "u2", .ulen = 2, .k = 14, .exact = 1};
        ASSERT_EQ(rc_engine_recall(e, &q1, h1, &n1, &fb), 0);
        ASSERT_EQ(fb, 0);
        ASSERT_EQ(rc_engine_recall(e, &q2, h2, &n2, &fb), 0);
        ASSERT_EQ(n1, 12);
        uint32_t j = 0, same = 0;
        for (uint32_t i = 0; i < n2 && j < n1; i++) {
            const char *id = e2e_engine_item(e, h2[i].row);
            if (!strcmp(id, "a1") || !strcmp(id, "a2"))
                continue;
            same += h1[j].row == h2[i].row && h1[j].score == h2[i].score;
            j++;
        }
        if (pass == 0)
            ASSERT_EQ(same, n1);
        else
            ASSERT_LT(same, n1);
        rc_engine_destroy(e);
    }
}
