#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/anchor.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/model.h"
#include "recalld/sampler.h"
#include "recalld/sgns.h"
#include "recalld/table.h"
#include "test.h"
#include "tower_stream.h"

#define DIM   16
#define NWARM 12

/* A table of NWARM "warm" items (w0..), all in one city, with counts. */
static rc_table *warm_table(void)
{
    rc_table_opts to = {.dim = DIM, .seed = 5};
    rc_table *t = NULL;
    uint32_t city, cate, row;
    int created;
    ASSERT_EQ(rc_table_create(&to, &t, NULL, 0), 0);
    ASSERT_EQ(rc_table_city_id(t, "c", 1, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k", 1, &cate), 0);
    for (uint32_t i = 0; i < NWARM; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%u", i);
        ASSERT_EQ(rc_table_upsert(t, id, strlen(id), city, cate, NULL, 0, &row, &created), 0);
        ASSERT_EQ(row, i);
        rc_table_count_add(t, row, 3 + i);
        float *v = rc_table_in(t, row), *o = rc_table_out(t, row);
        for (uint32_t d = 0; d < DIM; d++) { /* trained-looking: norms ~1 */
            v[d] = 0.25f * sinf((float)(i * DIM + d));
            o[d] = 0.25f * cosf((float)(i * DIM + 3 * d));
        }
    }
    return t;
}

static uint32_t add_new(rc_table *t, const char *id)
{
    uint32_t city, cate, row;
    int created;
    ASSERT_EQ(rc_table_city_id(t, "c", 1, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k", 1, &cate), 0);
    ASSERT_EQ(rc_table_upsert(t, id, strlen(id), city, cate, NULL, 0, &row, &created), 0);
    ASSERT_EQ(created, 1);
    return row;
}

static double dist(const float *a, const float *b)
{
    double s = 0;
    for (uint32_t d = 0; d < DIM; d++)
        s += ((double)a[d] - b[d]) * ((double)a[d] - b[d]);
    return sqrt(s);
}

/* The distance of warm row r of t to its anchor. */
static double to_anchor(const rc_anchor *a, const rc_table *t, uint32_t r)
{
    float v[DIM];
    rc_anchor_get(a, r, v);
    return dist(v, rc_table_in(t, r));
}

/* The snapshot is the table's input vectors to within the int8 rounding, and
 * covers the rows that existed when it was taken. */
TEST(anchor_snapshot_is_the_warm_table)
{
    rc_table *t = warm_table();
    rc_anchor *a = NULL;
    rc_anchor_opts ao = {.strength = 10, .fade_clicks = 0};
    char err[256];
    ASSERT_EQ(rc_anchor_create(t, &ao, &a, err, sizeof err), 0);
    ASSERT_EQ(rc_anchor_rows(a), NWARM);
    ASSERT_GT(rc_anchor_bytes(a), (size_t)NWARM * (DIM + 8) - 1);
    for (uint32_t r = 0; r < NWARM; r++) {
        float v[DIM];
        rc_anchor_get(a, r, v);
        for (uint32_t d = 0; d < DIM; d++)
            ASSERT_NEAR(v[d], rc_table_in(t, r)[d], 0.25 / 127 / 2 + 1e-6);
    }
    uint32_t n = add_new(t, "new");
    ASSERT_DBL_OP(rc_anchor_step(a, t, n, 0.01f), ==, 0.0);
    ASSERT_NEAR(rc_anchor_step(a, t, 0, 0.01f), 0.1, 1e-6);
    ASSERT_DBL_OP(rc_anchor_step(a, t, 0, 1.0f), ==, 1.0); /* a step never overshoots */
    /* bad options are refused, not crashed on */
    rc_anchor *b = NULL;
    rc_anchor_opts bad = {.strength = 0};
    ASSERT_EQ(rc_anchor_create(t, &bad, &b, err, sizeof err), RC_EINVAL);
    ASSERT(b == NULL);
    rc_anchor_destroy(a);
    rc_table_destroy(t);
}

/* The pull fades with the item's clicks since the snapshot:
 * h / (h + clicks), clicks before the snapshot not counted. */
TEST(anchor_pull_fades_with_clicks_since_the_snapshot)
{
    rc_table *t = warm_table();
    rc_anchor *a = NULL;
    rc_anchor_opts ao = {.strength = 10, .fade_clicks = 20};
    ASSERT_EQ(rc_anchor_create(t, &ao, &a, NULL, 0), 0);
    ASSERT_NEAR(rc_anchor_step(a, t, 5, 0.01f), 0.1, 1e-6);
    rc_table_count_add(t, 5, 20);
    ASSERT_NEAR(rc_anchor_step(a, t, 5, 0.01f), 0.05, 1e-6);
    rc_table_count_add(t, 5, 60);
    ASSERT_NEAR(rc_anchor_step(a, t, 5, 0.01f), 0.02, 1e-6);
    ASSERT_NEAR(rc_anchor_step(a, t, 6, 0.01f), 0.1, 1e-6); /* the others keep theirs */
    rc_anchor_destroy(a);
    rc_table_destroy(t);
}

/* Two identical tables, one trained with the anchor, one without, on the
 * same clicks and random draws: the click of a new item (no anchor) next to
 * warm ones leaves the new item's input vector exactly as without the
 * anchor, while its warm context rows end closer to their warm-start
 * vectors; over a stream, warm rows stay near their anchor and the new
 * item still learns (moves toward its neighbours). */
TEST(anchor_pulls_warm_rows_and_leaves_new_rows_free)
{
    rc_table *t[2] = {warm_table(), warm_table()};
    rc_sampler *s[2];
    rc_anchor *a = NULL;
    rc_anchor_opts ao = {.strength = 20, .fade_clicks = 0};
    ASSERT_EQ(rc_anchor_create(t[1], &ao, &a, NULL, 0), 0);
    uint32_t n[2];
    for (int k = 0; k < 2; k++) {
        n[k] = add_new(t[k], "new");
        ASSERT_EQ(rc_sampler_create(NULL, t[k], &s[k], NULL, 0), 0);
    }
    ASSERT_EQ(n[0], n[1]);
    ASSERT_EQ(memcmp(rc_table_in(t[0], n[0]), rc_table_in(t[1], n[1]), DIM * sizeof(float)), 0);
    float start[DIM];
    memcpy(start, rc_table_in(t[0], n[0]), sizeof start);
    rc_sgns_work w[2];
    rc_rng rng[2];
    for (int k = 0; k < 2; k++) {
        ASSERT_EQ(rc_sgns_work_init(&w[k], DIM), 0);
        rc_rng_seed(&rng[k], 77);
    }
    rc_sgns_opts o[2] = {{.window = 5, .negatives = 3, .lr = 0.05f},
                         {.window = 5, .negatives = 3, .lr = 0.05f, .anchor = a}};
    /* one click: the new item after w1, w2 */
    uint32_t ctx[2] = {1, 2};
    for (int k = 0; k < 2; k++) {
        rc_table_count_add(t[k], n[k], 1);
        ASSERT_EQ(rc_sgns_click(t[k], s[k], &rng[k], &o[k], 0.05f, n[k], ctx, 2,
                                rc_table_total_count(t[k]), &w[k]),
                  4);
    }
    ASSERT_EQ(memcmp(rc_table_in(t[0], n[0]), rc_table_in(t[1], n[1]), DIM * sizeof(float)), 0);
    for (int i = 0; i < 2; i++) {
        double off = to_anchor(a, t[0], ctx[i]), on = to_anchor(a, t[1], ctx[i]);
        ASSERT_DBL_OP(off, >, 1e-4);
        ASSERT_DBL_OP(on, <, 0.9 * off); /* one step of 1 - 0.05 * 20 = 0: back on the anchor */
    }
    /* a stream: sessions of the new item with w1..w4, and of warm items alone */
    for (int step = 0; step < 400; step++) {
        uint32_t c[3] = {1 + (uint32_t)step % 4, 5 + (uint32_t)step % 7, 0};
        for (int k = 0; k < 2; k++) {
            uint32_t center = step % 2 ? n[k] : (uint32_t)(step % NWARM);
            c[2] = center == 0 ? 11 : 0;
            rc_table_count_add(t[k], center, 1);
            rc_sgns_click(t[k], s[k], &rng[k], &o[k], 0.05f, center, c, 3,
                          rc_table_total_count(t[k]), &w[k]);
        }
    }
    double off = 0, on = 0;
    for (uint32_t r = 0; r < NWARM; r++) {
        off += to_anchor(a, t[0], r);
        on += to_anchor(a, t[1], r);
    }
    ASSERT_DBL_OP(off, >, 0.05);
    ASSERT_DBL_OP(on, <, 0.5 * off);
    /* the new item learnt with the anchor as it does without: it moved */
    ASSERT_DBL_OP(dist(start, rc_table_in(t[1], n[1])), >,
                  0.5 * dist(start, rc_table_in(t[0], n[0])));
    ASSERT_DBL_OP(dist(start, rc_table_in(t[1], n[1])), >, 0.05);
    for (int k = 0; k < 2; k++) {
        rc_sgns_work_free(&w[k]);
        rc_sampler_destroy(s[k]);
        rc_table_destroy(t[k]);
    }
    rc_anchor_destroy(a);
}

/* Session sess of the warm-start streams: user "u<sess>" clicks three warm
 * items, then `last` (its fourth click), a second apart from *ts on. */
static void warm_session(rc_engine *e, int sess, const char *last, int64_t *ts)
{
    char u[16], it[16];
    snprintf(u, sizeof u, "u%d", sess);
    for (int i = 0; i < 4; i++) {
        if (i == 3)
            snprintf(it, sizeof it, "%s", last);
        else
            snprintf(it, sizeof it, "w%d", (sess + i * 5) % NWARM);
        ASSERT_EQ(
            rc_engine_apply_click(e, u, strlen(u), it, strlen(it), "c", 1, "k", 1, *ts += 1000), 0);
    }
}

/* Through the engine (the path of the daemon and of recalld-eval's warm
 * stream): warm-started from a model file with train.anchor, the warm items
 * a stream keeps clicking stay on their model vectors (a pull of step 1),
 * while without it they move; an item the model did not have is trained
 * either way; a cold engine (no model) has nothing to anchor. */
TEST(anchor_engine_warm_start_is_the_anchor)
{
    char dir[64], path[128];
    tower_tmp_dir(dir, sizeof dir, "rc-anchor-");
    snprintf(path, sizeof path, "%s/warm.rcm", dir);
    rc_table *m = warm_table();
    ASSERT_EQ(rc_model_save(m, path, NULL, 0), 0);
    double moved[2] = {0, 0}, fresh[2] = {0, 0};
    for (int on = 0; on < 2; on++) {
        rc_config c;
        rc_config_defaults(&c);
        c.dim = DIM;
        c.seed = 3;
        c.replay_ratio = 0;
        c.anchor = on ? 1e6f : 0;
        snprintf(c.model_path, sizeof c.model_path, "%s", path);
        rc_engine *e = e2e_engine_offline(&c);
        int64_t ts = 1700000000000LL;
        float start[DIM];
        for (int sess = 0; sess < 60; sess++) {
            warm_session(e, sess, "fresh", &ts);
            if (sess == 0) /* fresh's vector after its first click */
                memcpy(start, rc_table_in(rc_engine_table(e), NWARM), sizeof start);
        }
        const rc_table *t = rc_engine_table(e);
        ASSERT_EQ(rc_table_size(t), NWARM + 1);
        json_t *st = e2e_engine_stats(e); /* the anchor's memory: NWARM rows of DIM + 8 */
        long long ab = e2e_int(st, "memory.anchor_bytes");
        json_decref(st);
        if (on)
            ASSERT_GE(ab, NWARM * (DIM + 8));
        else
            ASSERT_EQ(ab, 0);
        for (uint32_t r = 0; r < NWARM; r++)
            moved[on] += dist(rc_table_in(t, r), rc_table_in(m, r));
        fresh[on] = dist(rc_table_in(t, NWARM), start);
        rc_engine_destroy(e);
    }
    ASSERT_DBL_OP(moved[0], >, 0.05);
    /* each clicked row within its int8 rounding (sqrt(DIM) * scale / 2) of the model */
    ASSERT_DBL_OP(moved[1], <, NWARM * 4 * 0.25 / 127 / 2);
    ASSERT_DBL_OP(moved[1], <, 0.1 * moved[0]);
    ASSERT_DBL_OP(fresh[0], >, 0.01);
    ASSERT_DBL_OP(fresh[1], >, 0.01);
    /* cold: the key is accepted and there is nothing to anchor */
    rc_config c;
    rc_config_defaults(&c);
    c.dim = DIM;
    c.anchor = 10;
    rc_engine *e = e2e_engine_offline(&c);
    ASSERT_EQ(rc_engine_apply_click(e, "u", 1, "a", 1, "c", 1, "k", 1, 1700000000000LL), 0);
    ASSERT_EQ(rc_engine_apply_click(e, "u", 1, "b", 1, "c", 1, "k", 1, 1700000001000LL), 0);
    json_t *st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "memory.anchor_bytes"), 0);
    json_decref(st);
    rc_engine_destroy(e);
    rc_table_destroy(m);
    unlink(path);
    rmdir(dir);
}

/* An engine warm-started from a model m (anchor strength 1e6: a pull of
 * step 1), given src (m's items with other vectors, and a new item n0) by
 * install_model (replace 0) or install_model "replace" (1), then 60
 * sessions that keep clicking the warm items. The summed distance of the
 * warm rows to src's vectors and to m's; n0, new to the anchor, learns
 * freely in both. */
static void anchored_install(int replace, double *to_src, double *to_model)
{
    char dir[64], path[128], err[256];
    tower_tmp_dir(dir, sizeof dir, "rc-anchor-");
    snprintf(path, sizeof path, "%s/warm.rcm", dir);
    rc_table *m = warm_table(), *src = warm_table();
    ASSERT_EQ(rc_model_save(m, path, NULL, 0), 0);
    for (uint32_t r = 0; r < NWARM; r++) /* the rebuild: other vectors */
        for (uint32_t d = 0; d < DIM; d++)
            rc_table_in(src, r)[d] = 0.25f * cosf((float)(7 * r + 2 * d));
    uint32_t nr = add_new(src, "n0");
    for (uint32_t d = 0; d < DIM; d++)
        rc_table_in(src, nr)[d] = 0.2f * sinf((float)(3 * d + 1));
    rc_config c;
    rc_config_defaults(&c);
    c.dim = DIM;
    c.seed = 3;
    c.replay_ratio = 0;
    c.anchor = 1e6f;
    snprintf(c.model_path, sizeof c.model_path, "%s", path);
    rc_engine *e = e2e_engine_offline(&c);
    rc_engine_table_install res;
    ASSERT_EQ((replace ? rc_engine_replace_table : rc_engine_install_table)(e, src, &res, err,
                                                                            sizeof err),
              0);
    ASSERT_EQ(res.replaced, NWARM);
    ASSERT_EQ(res.created, 1);
    ASSERT_EQ(res.reset, 0);
    int64_t ts = 1700000000000LL;
    for (int sess = 0; sess < 60; sess++)
        warm_session(e, sess, "n0", &ts);
    const rc_table *t = rc_engine_table(e);
    *to_src = *to_model = 0;
    for (uint32_t r = 0; r < NWARM; r++) {
        *to_src += dist(rc_table_in(t, r), rc_table_in(src, r));
        *to_model += dist(rc_table_in(t, r), rc_table_in(m, r));
    }
    uint32_t row;
    ASSERT_EQ(rc_table_find(t, "n0", 2, &row), 0);
    ASSERT_DBL_OP(dist(rc_table_in(t, row), rc_table_in(src, nr)), >, 0.01);
    rc_engine_destroy(e);
    rc_table_destroy(m);
    rc_table_destroy(src);
    unlink(path);
    rmdir(dir);
}

/* install_model leaves the anchor on the model the engine started from
 * (moving it to each installed rebuild measured worse: BENCHMARKS.md, "The
 * daemon's daily rebuild as it runs"): after an install of other vectors
 * for the warm items, a stream that keeps clicking them pulls them back to
 * the start model; an item the install created has no anchor and learns
 * freely. */
TEST(anchor_engine_install_keeps_the_start_anchor)
{
    double to_src, to_model;
    anchored_install(0, &to_src, &to_model);
    /* each row within its int8 rounding (sqrt(DIM) * scale / 2) of the model */
    ASSERT_DBL_OP(to_model, <, NWARM * 4 * 0.25 / 127 / 2);
    ASSERT_DBL_OP(to_src, >, 1.0);
}

/* install_model "replace" (rc_engine_replace_table) puts a whole new table
 * in: the anchor moves to it, so the same pull now holds the rows on the
 * rebuild's vectors, not the old model's. */
TEST(anchor_engine_replace_moves_the_anchor_to_the_new_table)
{
    double to_src, to_model;
    anchored_install(1, &to_src, &to_model);
    ASSERT_DBL_OP(to_src, <, NWARM * 4 * 0.25 / 127 / 2);
    ASSERT_DBL_OP(to_model, >, 1.0);
}

/* The daemon's parallel path (model.trainer_threads 2: whole batches trained
 * by the shards, engine_shard.c) anchors as the single writer does: warm
 * items stay on their model vectors with a pull of step 1, move without. */
#define SH_WARM  60
#define SH_BATCH 256
TEST(anchor_engine_shards_anchor_too)
{
    char dir[64], path[128], line[256];
    tower_tmp_dir(dir, sizeof dir, "rc-anchor-");
    snprintf(path, sizeof path, "%s/warm.rcm", dir);
    rc_table_opts to = {.dim = DIM, .seed = 7};
    rc_table *m = NULL;
    ASSERT_EQ(rc_table_create(&to, &m, NULL, 0), 0);
    for (uint32_t i = 0; i < SH_WARM; i++) {
        char id[16], cn[4] = {'c', (char)('0' + i % 3), 0};
        uint32_t city, cate, row;
        int created;
        snprintf(id, sizeof id, "w%u", i);
        ASSERT_EQ(rc_table_city_id(m, cn, 2, &city), 0);
        ASSERT_EQ(rc_table_cate_id(m, "k", 1, &cate), 0);
        ASSERT_EQ(rc_table_upsert(m, id, strlen(id), city, cate, NULL, 0, &row, &created), 0);
        rc_table_count_add(m, row, 5);
        for (uint32_t d = 0; d < DIM; d++) {
            rc_table_in(m, row)[d] = 0.25f * sinf((float)(i * DIM + d));
            rc_table_out(m, row)[d] = 0.25f * cosf((float)(i * DIM + 3 * d));
        }
    }
    ASSERT_EQ(rc_model_save(m, path, NULL, 0), 0);
    double moved[2] = {0, 0};
    for (int on = 0; on < 2; on++) {
        rc_config c;
        rc_config_defaults(&c);
        c.dim = DIM;
        c.seed = 3;
        c.replay_clicks = 0;
        c.trainer_threads = 2;
        c.kafka_batch = SH_BATCH;
        c.min_city_items = 5;
        c.anchor = on ? 1e6f : 0;
        snprintf(c.model_path, sizeof c.model_path, "%s", path);
        rc_engine *e = e2e_engine_offline(&c);
        for (uint32_t k = 0; k < 8 * SH_BATCH; k += SH_BATCH) {
            rc_batch *b = rc_engine_batch_get(e);
            ASSERT(b != NULL);
            for (uint32_t j = k; j < k + SH_BATCH; j++) {
                uint32_t user = j % 97, city = user % 3, item = city + 3 * ((j * 7 + user) % 20);
                int n = j % 9 == 0
                            ? snprintf(line, sizeof line,
                                       "{\"user_id\":\"u%u\",\"item_id\":\"n%u\",\"city_id\":"
                                       "\"c%u\",\"cate_id\":\"k\",\"ts\":%lld}",
                                       user, j % 40, city, 1700000000000LL + j * 10LL)
                            : snprintf(line, sizeof line,
                                       "{\"user_id\":\"u%u\",\"item_id\":\"w%u\",\"city_id\":"
                                       "\"c%u\",\"cate_id\":\"k\",\"ts\":%lld}",
                                       user, item, city, 1700000000000LL + j * 10LL);
                ASSERT_EQ(rc_engine_batch_add(b, line, (size_t)n, 0, j), 0);
            }
            rc_engine_submit(e, b);
        }
        rc_engine_sync(e);
        json_t *st = e2e_engine_stats(e);
        ASSERT_GT(e2e_int(st, "training.fanouts"), 0); /* the shards trained */
        json_decref(st);
        const rc_table *t = rc_engine_table(e);
        ASSERT_GT(rc_table_size(t), SH_WARM);
        for (uint32_t r = 0; r < SH_WARM; r++)
            moved[on] += dist(rc_table_in(t, r), rc_table_in(m, r));
        rc_engine_destroy(e);
    }
    ASSERT_DBL_OP(moved[0], >, 0.5);
    ASSERT_DBL_OP(moved[1], <, SH_WARM * 4 * 0.25 / 127 / 2);
    rc_table_destroy(m);
    unlink(path);
    rmdir(dir);
}
