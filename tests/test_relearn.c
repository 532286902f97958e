/* relearn: the streaming trainer's replay buffer, and the engine's replay of
 * it (train.replay_*). */
#include <jansson.h>
#include <string.h>

#include "e2e.h"
#include "recalld/engine.h"
#include "recalld/relearn.h"
#include "test.h"

/* A ring of the newest `clicks` examples, each keeping the last `window`
 * context rows; picks draw only held examples; bounds refused. */
TEST(relearn_ring_keeps_newest_examples)
{
    rc_relearn *r = NULL;
    char err[256];
    ASSERT_EQ(rc_relearn_create(0, 2, &r, err, sizeof err), RC_EINVAL);
    ASSERT_EQ(rc_relearn_create(3, 0, &r, err, sizeof err), RC_EINVAL);
    ASSERT_EQ(rc_relearn_create(3, 65, &r, err, sizeof err), RC_EINVAL);
    ASSERT_EQ(rc_relearn_create(RC_RELEARN_MAX_CLICKS + 1, 2, &r, err, sizeof err), RC_EINVAL);
    ASSERT_EQ(rc_relearn_create(3, 2, &r, err, sizeof err), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 9);
    uint32_t center, ctx[2], n;
    ASSERT_EQ(rc_relearn_pick(r, &rng, &center, ctx, &n), RC_ENOENT);
    rc_relearn_add(r, 99, ctx, 0); /* no context: nothing trained, nothing kept */
    ASSERT_EQ(rc_relearn_pick(r, &rng, &center, ctx, &n), RC_ENOENT);
    for (uint32_t i = 0; i < 5; i++) {
        uint32_t c[3] = {100 + i, 200 + i, 300 + i};
        rc_relearn_add(r, i, c, i == 4 ? 1 : 3);
    }
    rc_relearn_stats st;
    rc_relearn_stats_get(r, &st);
    ASSERT_EQ(st.capacity, 3);
    ASSERT_EQ(st.fill, 3);
    ASSERT_EQ(st.added, 5);
    int seen[5] = {0};
    for (int k = 0; k < 300; k++) {
        ASSERT_EQ(rc_relearn_pick(r, &rng, &center, ctx, &n), 0);
        ASSERT(center >= 2 && center <= 4);
        seen[center]++;
        if (center == 4) {
            ASSERT_EQ(n, 1);
            ASSERT_EQ(ctx[0], 104);
        } else {
            ASSERT_EQ(n, 2); /* the last `window` of 3 */
            ASSERT_EQ(ctx[0], 200 + center);
            ASSERT_EQ(ctx[1], 300 + center);
        }
    }
    ASSERT(seen[2] && seen[3] && seen[4]);
    rc_relearn_destroy(r);
}

static json_t *replay_stats(rc_engine *e, json_int_t *pairs)
{
    json_t *st = e2e_engine_stats(e);
    json_t *tr = json_object_get(st, "training");
    *pairs = json_integer_value(json_object_get(tr, "pairs"));
    json_t *rp = json_incref(json_object_get(tr, "replay"));
    json_decref(st);
    return rp;
}

/* Offline (never backlogged), each trained click owes train.replay_ratio
 * replays, all trained without train.replay_max_clicks, fewer with it (an
 * example with a frequent item is not trained); with the ratio 0 nothing is
 * kept or replayed. */
TEST(relearn_engine_replays_ratio_per_trained_click)
{
    for (int pass = 0; pass < 3; pass++) {
        rc_config c;
        rc_config_defaults(&c);
        c.dim = 16;
        c.replay_clicks = 50;
        c.replay_ratio = pass ? 2.5f : 0;
        c.replay_max_clicks = pass == 2 ? 4 : 0;
        rc_engine *e = e2e_engine_offline(&c);
        char u[16], it[16];
        int64_t ts = 1700000000000LL;
        for (int s = 0; s < 40; s++) {
            snprintf(u, sizeof u, "u%d", s);
            for (int i = 0; i < 4; i++) {
                snprintf(it, sizeof it, "i%d", (s * 3 + i) % 30);
                ASSERT_EQ(rc_engine_apply_click(e, u, strlen(u), it, strlen(it), "c", 1, "k", 1,
                                                ts += 1000),
                          0);
            }
        }
        json_int_t pairs = 0;
        json_t *rp = replay_stats(e, &pairs);
        ASSERT(rp != NULL);
        ASSERT_GT(pairs, 0);
        json_int_t replayed = json_integer_value(json_object_get(rp, "replayed"));
        json_int_t fill = json_integer_value(json_object_get(rp, "fill"));
        if (pass == 0) {
            ASSERT_EQ(replayed, 0);
            ASSERT_EQ(fill, 0);
        } else if (pass == 1) {
            /* 40 sessions x 3 clicks with a context = 120 trained clicks */
            ASSERT_EQ(fill, 50);
            ASSERT_EQ(replayed, 300);
            ASSERT_EQ(json_integer_value(json_object_get(rp, "skipped")), 0);
        } else { /* 30 items, 160 clicks: later examples hold items of > 4 */
            ASSERT_GT(replayed, 0);
            ASSERT_LT(replayed, 250);
        }
        json_decref(rp);
        rc_engine_destroy(e);
    }
}
