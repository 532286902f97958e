/* relearn: the streaming trainer's replay buffer, and the engine's replay of
 * it (train.replay_*). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

/* rc_relearn_forget drops every held example: picks fail until one is added,
 * then draw only what came after, across the ring's wrap; once the ring has
 * turned over past the forgotten ones it is whole again. */
TEST(relearn_forget_drops_held_examples)
{
    rc_relearn *r = NULL;
    char err[256];
    ASSERT_EQ(rc_relearn_create(4, 1, &r, err, sizeof err), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 5);
    uint32_t center, ctx[1], n, c = 7;
    for (uint32_t i = 0; i < 6; i++) /* examples 0..5: slots hold 4 5 2 3 */
        rc_relearn_add(r, i, &c, 1);
    rc_relearn_forget(r);
    rc_relearn_stats st;
    rc_relearn_stats_get(r, &st);
    ASSERT_EQ(st.fill, 0);
    ASSERT_EQ(st.forgotten, 4);
    ASSERT_EQ(rc_relearn_pick(r, &rng, &center, ctx, &n), RC_ENOENT);
    rc_relearn_add(r, 6, &c, 1); /* slot 2 */
    rc_relearn_add(r, 7, &c, 1); /* slot 3 */
    rc_relearn_add(r, 8, &c, 1); /* slot 0: wraps */
    rc_relearn_stats_get(r, &st);
    ASSERT_EQ(st.fill, 3);
    int seen[10] = {0};
    for (int k = 0; k < 300; k++) {
        ASSERT_EQ(rc_relearn_pick(r, &rng, &center, ctx, &n), 0);
        ASSERT(center >= 6 && center <= 8);
        seen[center]++;
    }
    ASSERT(seen[6] && seen[7] && seen[8]);
    rc_relearn_add(r, 9, &c, 1); /* the ring holds 6..9 only: whole again */
    rc_relearn_stats_get(r, &st);
    ASSERT_EQ(st.fill, 4);
    memset(seen, 0, sizeof seen);
    for (int k = 0; k < 400; k++) {
        ASSERT_EQ(rc_relearn_pick(r, &rng, &center, ctx, &n), 0);
        ASSERT(center >= 6 && center <= 9);
        seen[center]++;
    }
    ASSERT(seen[6] && seen[7] && seen[8] && seen[9]);
    rc_relearn_forget(NULL); /* NULL-safe: replay off */
    rc_relearn_destroy(r);
}

/* 40 sessions of 4 clicks (120 with a context) over 30 items, offline. */
static void apply_sessions(rc_engine *e)
{
    char u[16], it[16];
    int64_t ts = 1700000000000LL;
    for (int s = 0; s < 40; s++) {
        snprintf(u, sizeof u, "u%d", s);
        for (int i = 0; i < 4; i++) {
            snprintf(it, sizeof it, "i%d", (s * 3 + i) % 30);
            ASSERT_EQ(
                rc_engine_apply_click(e, u, strlen(u), it, strlen(it), "c", 1, "k", 1, ts += 1000),
                0);
        }
    }
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
 * kept or replayed. train.replay_subsample thins the replays only: at 0.005 in
 * this stream of 30 items (each a share of about 1/30), fewer replays train
 * a pair, and the new clicks train the same pairs as without it. */
TEST(relearn_engine_replays_ratio_per_trained_click)
{
    json_int_t pairs1 = 0;
    for (int pass = 0; pass < 4; pass++) {
        rc_config c;
        rc_config_defaults(&c);
        c.dim = 16;
        c.replay_clicks = 50;
        c.replay_ratio = pass ? 2.5f : 0;
        c.replay_max_clicks = pass == 2 ? 4 : 0;
        c.replay_subsample = pass == 3 ? 0.005f : 0;
        c.replay_per_hour = 0; /* by clicks alone (the next test adds the hours) */
        rc_engine *e = e2e_engine_offline(&c);
        apply_sessions(e);
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
        } else if (pass == 2) { /* 30 items, 160 clicks: later examples hold items of > 4 */
            ASSERT_GT(replayed, 0);
            ASSERT_LT(replayed, 250);
        } else {
            ASSERT_EQ(fill, 50);
            ASSERT_EQ(pairs, pairs1);
            ASSERT_GT(replayed, 0);
            ASSERT_LT(replayed, 250);
        }
        if (pass == 1)
            pairs1 = pairs;
        json_decref(rp);
        rc_engine_destroy(e);
    }
}

/* train.replay_per_hour: each trained click also owes the replays of the event
 * time since the trained click before it. At 3,600 an hour (one a second) and
 * clicks 1 s apart, the 120 trained clicks (the 2nd at +2 s to the 160th at
 * +160 s) owe 158 for the time besides 120 for the ratio 1. A click back in
 * time (late) owes no time; a click 1,000 hours later owes 3.6M, of which all
 * but the ratio's bound (ratio x the replay window) is given up. The stats'
 * training.replay.owed_by_time counts what the event time owed, given up or
 * not. With the default (2,000 an hour) a busy stream gains under one replay
 * a click. */
TEST(relearn_engine_replays_per_hour_of_event_time)
{
    for (int pass = 0; pass < 2; pass++) {
        rc_config c;
        rc_config_defaults(&c);
        ASSERT_DBL_OP(c.replay_per_hour, >, 0); /* on by default */
        c.dim = 16;
        c.replay_clicks = 50;
        c.replay_ratio = 1;
        c.replay_subsample = 0;
        c.replay_per_hour = pass ? 3600 : 0;
        rc_engine *e = e2e_engine_offline(&c);
        apply_sessions(e);
        json_int_t pairs = 0;
        json_t *rp = replay_stats(e, &pairs);
        ASSERT_EQ(json_integer_value(json_object_get(rp, "replayed")), pass ? 120 + 158 : 120);
        ASSERT_EQ(json_integer_value(json_object_get(rp, "owed_by_time")), pass ? 158 : 0);
        json_decref(rp);
        if (pass) {
            int64_t t = 1700000000000LL + 160 * 1000;
            /* late: the session's second click, 100 s before the newest */
            ASSERT_EQ(rc_engine_apply_click(e, "late", 4, "i1", 2, "c", 1, "k", 1, t - 100000), 0);
            ASSERT_EQ(rc_engine_apply_click(e, "late", 4, "i2", 2, "c", 1, "k", 1, t - 99000), 0);
            rp = replay_stats(e, &pairs);
            ASSERT_EQ(json_integer_value(json_object_get(rp, "replayed")), 278 + 1);
            ASSERT_EQ(json_integer_value(json_object_get(rp, "skipped")), 0);
            json_decref(rp);
            /* 1,000 hours later (event time: the engine's clock allows up to
             * 5 minutes past the wall clock, so this lies in the past) */
            int64_t far = t + 1000LL * 3600 * 1000;
            ASSERT_LT(far, rc_wall_ms());
            ASSERT_EQ(rc_engine_apply_click(e, "far", 3, "i3", 2, "c", 1, "k", 1, far), 0);
            ASSERT_EQ(rc_engine_apply_click(e, "far", 3, "i4", 2, "c", 1, "k", 1, far + 1000), 0);
            double bound = (double)c.replay_ratio * c.queue_batches * c.kafka_batch;
            rp = replay_stats(e, &pairs);
            json_int_t replayed = json_integer_value(json_object_get(rp, "replayed"));
            json_int_t skipped = json_integer_value(json_object_get(rp, "skipped"));
            fprintf(stderr, "after 1,000 hours: %lld replayed, %lld given up (bound %.0f)\n",
                    (long long)(replayed - 279), (long long)skipped, bound);
            ASSERT_DBL_OP((double)(replayed - 279), <=, bound + 1);
            ASSERT_DBL_OP((double)(replayed - 279), >=, bound - 1);
            ASSERT_DBL_OP((double)skipped, >, 3.6e6 - bound - 10);
            /* the whole gap counts as owed, what was given up included */
            ASSERT_EQ(json_integer_value(json_object_get(rp, "owed_by_time")), 158 + 3600000 + 1);
            json_decref(rp);
        }
        rc_engine_destroy(e);
    }
}

/* A click is held for replay when it has a context, even when subsampling
 * kept none of its pairs as it arrived: its replays subsample again, and a
 * click left out then would never be trained. With a threshold so low that
 * most pairs are dropped, every one of the 120 clicks with a context is held
 * while the new clicks train far fewer pairs than the 2 x 3 x 120 they have. */
TEST(relearn_engine_holds_clicks_whose_pairs_were_subsampled)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.subsample = 1e-6f;
    c.replay_clicks = 500;
    c.replay_ratio = 0.001f; /* held, hardly replayed: the pairs are the new clicks' */
    rc_engine *e = e2e_engine_offline(&c);
    apply_sessions(e);
    json_int_t pairs = 0;
    json_t *rp = replay_stats(e, &pairs);
    ASSERT(rp != NULL);
    fprintf(stderr, "pairs trained by new clicks %lld of 720, clicks held %lld of 120\n",
            (long long)pairs, (long long)json_integer_value(json_object_get(rp, "fill")));
    ASSERT_LT(pairs, 360);
    ASSERT_EQ(json_integer_value(json_object_get(rp, "fill")), 120);
    json_decref(rp);
    rc_engine_destroy(e);
}

/* ---- through the threaded engine: replay yields to waiting events ---- */

#define YB_BATCH   256 /* kafka.batch */
#define YB_BATCHES 8   /* pipeline.queue_batches: the replay window is 2,048 clicks */
#define YB_RATIO   50

static json_int_t replay_count(rc_engine *e, const char *field)
{
    json_int_t pairs = 0;
    json_t *rp = replay_stats(e, &pairs);
    json_int_t v = json_integer_value(json_object_get(rp, field));
    json_decref(rp);
    return v;
}

static uint64_t applied_count(rc_engine *e)
{
    rc_engine_counters ec;
    rc_engine_counters_get(e, &ec);
    return ec.applied;
}

/* Fills b with YB_BATCH clicks: sessions of 8 clicks of one user, items from
 * a pool of 3,000 in 4 cities; *seq numbers the clicks. */
static void fill_batch(rc_batch *b, uint64_t *seq)
{
    char line[256];
    for (int i = 0; i < YB_BATCH; i++, (*seq)++) {
        uint64_t s = *seq / 8, k = *seq % 8;
        int n = snprintf(line, sizeof line,
                         "{\"user_id\":\"u%llu\",\"item_id\":\"i%llu\",\"city_id\":\"c%llu\","
                         "\"cate_id\":\"k0\",\"ts\":%lld}",
                         (unsigned long long)s, (unsigned long long)((s * 7 + k * 13) % 3000),
                         (unsigned long long)(s % 4), 1700000000000LL + (long long)*seq * 1000);
        ASSERT_EQ(rc_engine_batch_add(b, line, (size_t)n, 0, (int64_t)*seq), 0);
    }
}

/* A free batch, running the loop (which recycles done batches) until one is. */
static rc_batch *free_batch(rc_engine *e, uv_loop_t *loop)
{
    long long t0 = e2e_now_ms(), wait = e2e_scaled_ms(120000);
    rc_batch *b;
    while (!(b = rc_engine_batch_get(e))) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (e2e_now_ms() - t0 > wait)
            RC__FAIL("no batch came back in %lld ms", wait);
        usleep(200);
    }
    return b;
}

/* The daemon's trainer replays only in idle time (issue 14):
 * 1. behind a backlog reported upstream (the consumer's lag, as recalld's
 *    on_batch reports it), 40 batches are applied with no replay at all, and
 *    what is owed stays bounded by the ratio over the window (the rest is
 *    given up, `skipped`);
 * 2. once the stream is idle, the replays owed are trained;
 * 3. with no report, a batch waiting in the pipeline alone stops replay (8
 *    batches submitted back to back: a yield at least once), and every event
 *    is applied. */
TEST(relearn_engine_replay_yields_to_backlog)
{
    char err[256];
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.replay_clicks = 20000;
    c.replay_ratio = YB_RATIO;
    c.kafka_batch = YB_BATCH;
    c.queue_batches = YB_BATCHES;
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    rc_engine *e = NULL;
    if (rc_engine_create(&c, &loop, NULL, NULL, &e, err, sizeof err))
        RC__FAIL("rc_engine_create: %s", err);
    long long wait = e2e_scaled_ms(120000);
    uint64_t seq = 0;
    const uint64_t backlog = 1000000; /* events behind, far beyond the window */

    /* 1. A backlog: the producer reports it before every batch, like on_batch,
     * and leaves the pipeline empty between batches (a fetch gap), so only
     * the report keeps the trainer from replaying there. */
    for (int i = 0; i < 40; i++) {
        rc_engine_set_backlog(e, backlog);
        rc_batch *b = free_batch(e, &loop);
        fill_batch(b, &seq);
        rc_engine_submit(e, b);
        usleep(1000);
    }
    const json_int_t window = YB_RATIO * YB_BATCH * YB_BATCHES;
    json_int_t pending = 0;
    long long t0 = e2e_now_ms();
    /* until every event is applied and the owed replays are cut to the window
     * (after each batch); the consumer keeps reporting its lag meanwhile */
    while (applied_count(e) < seq || (pending = replay_count(e, "pending")) > window) {
        rc_engine_set_backlog(e, backlog);
        if (e2e_now_ms() - t0 > wait)
            RC__FAIL("%llu of %llu events applied after %lld ms",
                     (unsigned long long)applied_count(e), (unsigned long long)seq, wait);
        usleep(500);
    }
    rc_engine_set_backlog(e, backlog);
    rc_engine_sync(e);
    ASSERT_EQ(applied_count(e), 40 * YB_BATCH);
    json_int_t replayed = replay_count(e, "replayed"), skipped = replay_count(e, "skipped");
    json_int_t yields = replay_count(e, "yields");
    ASSERT_EQ(replayed, 0); /* none while the backlog drained */
    ASSERT_GE(yields, 1);
    /* 40 x 256 clicks, 7 of every 8 with a context, owe 50 replays each: one
     * window's worth (50 x 2,048) is kept, the rest given up. */
    ASSERT_GE(pending, window - 1);
    ASSERT_GT(skipped, 0);
    ASSERT_GE(skipped + pending, YB_RATIO * 35 * YB_BATCH / 2);

    /* 2. Idle: the owed replays are trained. */
    rc_engine_set_backlog(e, 0);
    t0 = e2e_now_ms();
    while ((pending = replay_count(e, "pending")) > 0) {
        if (e2e_now_ms() - t0 > wait)
            RC__FAIL("idle for %lld ms: %lld replays still owed, %lld done", wait,
                     (long long)pending, (long long)replay_count(e, "replayed"));
        usleep(2000);
    }
    replayed = replay_count(e, "replayed");
    ASSERT_GT(replayed, YB_RATIO * YB_BATCH); /* most of the window: some picks are skipped */
    ASSERT_LE(replayed, YB_RATIO * YB_BATCH * YB_BATCHES);

    /* 3. No report: batches in the pipeline alone make replay yield. */
    rc_batch *bs[YB_BATCHES];
    for (int i = 0; i < YB_BATCHES; i++) {
        bs[i] = free_batch(e, &loop);
        fill_batch(bs[i], &seq);
    }
    yields = replay_count(e, "yields");
    for (int i = 0; i < YB_BATCHES; i++)
        rc_engine_submit(e, bs[i]);
    rc_engine_sync(e);
    ASSERT_EQ(applied_count(e), seq);
    ASSERT_GT(replay_count(e, "yields"), yields);

    rc_engine_destroy(e);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* A checkpoint asked for while replays are owed is taken at once: replay
 * yields to it (a deferred revoke waits for that checkpoint), and the replays
 * go on after it. */
TEST(relearn_engine_replay_yields_to_a_checkpoint)
{
    char err[256], dir[64];
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.replay_clicks = 20000;
    c.replay_ratio = 1000; /* a window of 1000 x 2,048 replays */
    c.kafka_batch = YB_BATCH;
    c.queue_batches = YB_BATCHES;
    c.ckpt_interval_ms = 0; /* only when asked */
    snprintf(dir, sizeof dir, "/tmp/rc-relearn-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(c.data_dir, sizeof c.data_dir, "%s", dir);
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    rc_engine *e = NULL;
    if (rc_engine_create(&c, &loop, NULL, NULL, &e, err, sizeof err))
        RC__FAIL("rc_engine_create: %s", err);
    uint64_t seq = 0;
    for (int i = 0; i < YB_BATCHES; i++) {
        rc_batch *b = free_batch(e, &loop);
        fill_batch(b, &seq);
        rc_engine_submit(e, b);
    }
    rc_engine_sync(e);
    json_int_t owed = replay_count(e, "pending");
    ASSERT_GT(owed, 100000);
    ASSERT_EQ(rc_engine_checkpoint(e, 1, NULL), 0);
    long long t0 = e2e_now_ms(), wait = e2e_scaled_ms(120000);
    json_int_t written = 0;
    while (written < 1) {
        uv_run(&loop, UV_RUN_NOWAIT);
        json_t *st = e2e_engine_stats(e);
        written = e2e_int(st, "checkpoint.written");
        json_decref(st);
        if (e2e_now_ms() - t0 > wait)
            RC__FAIL("no checkpoint after %lld ms", wait);
        usleep(1000);
    }
    json_int_t left = replay_count(e, "pending");
    printf("replays owed %lld at the request, %lld when the checkpoint was written\n",
           (long long)owed, (long long)left);
    ASSERT_GT(left, 0); /* it did not wait for them */
    ASSERT_GE(replay_count(e, "yields"), 1);
    rc_engine_destroy(e);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    e2e_sh(NULL, "rm -rf %s", dir);
}
