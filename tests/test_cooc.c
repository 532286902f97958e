/* cooc: the live session co-occurrence channel (src/cooc.c) — counts and
 * scores, the memory bound and eviction, decay, readers racing the writer,
 * fusion — and its daemon side: the engine's upkeep from applied clicks, the
 * "itemknn" / "fused" recall modes through the request handler, the stats
 * object, and the evaluator's itemknn-live / fused methods. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"
#include "recalld/api.h"
#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/cooc.h"
#include "recalld/engine.h"
#include "recalld/eval.h"
#include "recalld/gen.h"
#include "recalld/clicklog.h"
#include "test.h"

#define T0 1700000000000LL

static rc_cooc *make(uint32_t max_items, uint32_t m, uint64_t bytes, uint32_t w, int64_t hl)
{
    rc_cooc_opts o = {.max_items = max_items,
                      .neighbors = m,
                      .max_bytes = bytes,
                      .window = w,
                      .half_life_ms = hl};
    rc_cooc *c = NULL;
    char err[128];
    ASSERT_EQ(rc_cooc_create(&o, &c, err, sizeof err), 0);
    return c;
}

/* One session: clicks items[0..n) in order at t, t+1, ... */
static void session(rc_cooc *c, const uint32_t *items, uint32_t n, int64_t t)
{
    for (uint32_t i = 0; i < n; i++)
        ASSERT_EQ(rc_cooc_click(c, items[i], items, i, t + i), 0);
}

static float score_of(const rc_hit *h, uint32_t n, uint32_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (h[i].row == id)
            return h[i].score;
    return -1;
}

TEST(cooc_counts_and_scores)
{
    rc_cooc *c = make(100, 10, 0, 5, 0);
    /* sessions: 1 2 3 | 1 2 | 4 1: n(1)=3 n(2)=2 n(3)=1 n(4)=1;
     * c(1,2)=2 c(1,3)=1 c(1,4)=1 c(2,3)=1 */
    session(c, (uint32_t[]){1, 2, 3}, 3, T0);
    session(c, (uint32_t[]){1, 2}, 2, T0 + 100);
    session(c, (uint32_t[]){4, 1}, 2, T0 + 200);
    rc_hit h[10];
    uint32_t n = 0;
    float cs[3];
    ASSERT_EQ(rc_cooc_query(c, (uint32_t[]){1}, NULL, 1, NULL, 0, NULL, NULL, 10, h, &n,
                            (uint32_t[]){2, 3, 9}, 3, cs),
              0);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(h[0].row, 2); /* 2/sqrt(3*2) */
    ASSERT_NEAR(h[0].score, 2 / sqrt(6.0), 1e-5);
    ASSERT_NEAR(score_of(h, n, 3), 1 / sqrt(3.0), 1e-5);
    ASSERT_NEAR(score_of(h, n, 4), 1 / sqrt(3.0), 1e-5);
    ASSERT_EQ(h[1].row, 3); /* tie with 4: lower id first */
    ASSERT_NEAR(cs[0], h[0].score, 1e-6);
    ASSERT_NEAR(cs[1], 1 / sqrt(3.0), 1e-5);
    ASSERT_NEAR(cs[2], 0, 0);
    /* two query items with weights; exclusion; k */
    ASSERT_EQ(rc_cooc_query(c, (uint32_t[]){1, 3}, (float[]){1, 2}, 2, (uint32_t[]){4}, 1, NULL,
                            NULL, 1, h, &n, NULL, 0, NULL),
              0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(h[0].row, 2); /* 2/sqrt(6) + 2 * 1/sqrt(1*2) */
    ASSERT_NEAR(h[0].score, 2 / sqrt(6.0) + 2 / sqrt(2.0), 1e-5);
    /* an excluded item is never returned, yet a candidate still gets its score */
    ASSERT_EQ(rc_cooc_query(c, (uint32_t[]){1}, NULL, 1, (uint32_t[]){2, 77}, 2, NULL, NULL, 10, h,
                            &n, (uint32_t[]){2}, 1, cs),
              0);
    ASSERT_EQ(n, 2);
    ASSERT_NEAR(score_of(h, n, 2), -1, 0);
    ASSERT_NEAR(cs[0], 2 / sqrt(6.0), 1e-5);
    /* unknown and out-of-range ids */
    ASSERT_EQ(rc_cooc_query(c, (uint32_t[]){50, 500}, NULL, 2, NULL, 0, NULL, NULL, 5, h, &n, NULL,
                            0, NULL),
              0);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(rc_cooc_click(c, 100, NULL, 0, T0), RC_EINVAL);
    rc_cooc_stats st;
    rc_cooc_stats_get(c, &st);
    ASSERT_EQ(st.clicks, 7);
    ASSERT_EQ(st.entries, 8); /* 1:{2,3,4} 2:{1,3} 3:{1,2} 4:{1} */
    rc_cooc_destroy(c);
}

/* A list longer than one search block: every pair found again is counted on
 * its own entry, wherever it sits (blocks of eight and the tail). An id equal
 * to the bits of a count (1.0f = 0x3f800000) must not match that count: the
 * search compares ids only. */
TEST(cooc_long_lists_count_each_pair_once)
{
    const uint32_t X = 0x3f800000u, A = 5, nb = 37;
    rc_cooc *c = make(X + 1, 64, 0, 1, 0);
    uint32_t ids[37];
    for (uint32_t j = 0; j + 1 < nb; j++)
        ids[j] = 100 + j;
    ids[nb - 1] = X;
    for (int round = 0; round < 2; round++)
        for (uint32_t j = 0; j < nb; j++)
            session(c, (uint32_t[]){ids[j], A}, 2, T0 + round * 1000 + j * 2);
    rc_cooc_stats st;
    rc_cooc_stats_get(c, &st);
    ASSERT_EQ(st.entries, 2 * nb); /* A: 37 neighbours; each neighbour: {A} */
    rc_hit h[64];
    uint32_t n = 0;
    ASSERT_EQ(
        rc_cooc_query(c, (uint32_t[]){A}, NULL, 1, NULL, 0, NULL, NULL, 64, h, &n, NULL, 0, NULL),
        0);
    ASSERT_EQ(n, nb);
    /* c(A,b) = 2, n(A) = 74, n(b) = 2 for every b */
    for (uint32_t i = 0; i < n; i++)
        ASSERT_NEAR(h[i].score, 2 / sqrt(74.0 * 2), 1e-5);
    ASSERT_NEAR(score_of(h, n, X), 2 / sqrt(74.0 * 2), 1e-5);
    rc_cooc_destroy(c);
}

/* The window: only the last W previous clicks are paired; repeats once. */
TEST(cooc_window_and_repeats)
{
    rc_cooc *c = make(100, 10, 0, 2, 0);
    session(c, (uint32_t[]){1, 2, 3, 3, 4}, 5, T0);
    rc_hit h[10];
    uint32_t n = 0;
    ASSERT_EQ(
        rc_cooc_query(c, (uint32_t[]){4}, NULL, 1, NULL, 0, NULL, NULL, 10, h, &n, NULL, 0, NULL),
        0);
    /* 4's previous two clicks are 3, 3: one distinct neighbour */
    ASSERT_EQ(n, 1);
    ASSERT_EQ(h[0].row, 3);
    ASSERT_EQ(
        rc_cooc_query(c, (uint32_t[]){1}, NULL, 1, NULL, 0, NULL, NULL, 10, h, &n, NULL, 0, NULL),
        0);
    ASSERT_EQ(n, 2); /* 2 and 3 (3 is within two clicks of 1) */
    rc_cooc_destroy(c);
}

/* A heavy pair survives a flood of one-off pairs in a list of 8, and the
 * whole state stays within max_bytes. */
TEST(cooc_bounded_memory_keeps_heavy_pairs)
{
    const uint64_t bound = 256u << 10;
    rc_cooc *c = make(200000, 8, bound, 1, 0);
    for (uint32_t i = 0; i < 5; i++)
        session(c, (uint32_t[]){1, 2}, 2, T0 + i);
    for (uint32_t i = 0; i < 50000; i++) {
        session(c, (uint32_t[]){1, 10 + i}, 2, T0 + 10 + i);
        session(c, (uint32_t[]){100000 + i, 150000 - i}, 2, T0 + 10 + i);
    }
    rc_cooc_stats st;
    rc_cooc_stats_get(c, &st);
    ASSERT_LE(st.bytes, bound);
    ASSERT_GT(st.evictions, 0);
    ASSERT_GT(st.dropped, 0); /* some lists found no room */
    rc_hit h[8];
    uint32_t n = 0;
    ASSERT_EQ(
        rc_cooc_query(c, (uint32_t[]){1}, NULL, 1, NULL, 0, NULL, NULL, 8, h, &n, NULL, 0, NULL),
        0);
    ASSERT_GT(n, 0);
    ASSERT_EQ(h[0].row, 2);
    rc_cooc_destroy(c);
}

/* With a half-life, a recent pair outranks an older, more frequent one. */
TEST(cooc_decay)
{
    for (int decay = 0; decay <= 1; decay++) {
        rc_cooc *c = make(100, 10, 0, 5, decay ? 1000 : 0);
        for (int i = 0; i < 3; i++)
            session(c, (uint32_t[]){1, 2}, 2, T0 + i * 10);
        session(c, (uint32_t[]){1, 3}, 2, T0 + 10000);
        session(c, (uint32_t[]){5, 3}, 2, T0 + 10000);
        session(c, (uint32_t[]){5, 2}, 2, T0 + 10000);
        rc_hit h[10];
        uint32_t n = 0;
        ASSERT_EQ(rc_cooc_query(c, (uint32_t[]){1}, NULL, 1, NULL, 0, NULL, NULL, 10, h, &n, NULL,
                                0, NULL),
                  0);
        ASSERT_EQ(n, 2);
        ASSERT_EQ(h[0].row, decay ? 3u : 2u);
        rc_cooc_destroy(c);
    }
}

/* Readers query while the writer adds clicks, growing and replacing lists:
 * every answer is well formed, and the retired lists are freed. */
struct race {
    rc_cooc *c;
    atomic_int stop;
    atomic_ulong queries;
};

static void *reader(void *arg)
{
    struct race *r = arg;
    rc_hit h[20];
    while (!atomic_load(&r->stop)) {
        uint32_t n = 0, q[3] = {1, 2, (uint32_t)atomic_load(&r->queries) % 500};
        ASSERT_EQ(rc_cooc_query(r->c, q, NULL, 3, NULL, 0, NULL, NULL, 20, h, &n, NULL, 0, NULL),
                  0);
        ASSERT_LE(n, 20);
        for (uint32_t i = 0; i < n; i++) {
            ASSERT_LT(h[i].row, 500);
            ASSERT(isfinite(h[i].score) && h[i].score > 0);
            ASSERT(i == 0 || h[i].score <= h[i - 1].score);
        }
        atomic_fetch_add(&r->queries, 1);
    }
    return NULL;
}

TEST(cooc_readers_race_writer)
{
    struct race r = {.c = make(500, 64, 0, 5, 60000)};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, reader, &r), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 7);
    uint32_t s[6];
    for (uint32_t i = 0; i < 40000 || atomic_load(&r.queries) < 200; i++) {
        for (int j = 0; j < 6; j++)
            s[j] = (uint32_t)(rc_rng_next(&rng) % 500);
        session(r.c, s, 6, T0 + i * 100);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    /* No reader left: the next clicks free what was retired. */
    session(r.c, (uint32_t[]){1, 2}, 2, T0 + 100000000LL);
    session(r.c, (uint32_t[]){1, 2}, 2, T0 + 100000000LL);
    rc_cooc_stats st;
    rc_cooc_stats_get(r.c, &st);
    ASSERT_EQ(st.retired, 0);
    ASSERT_GT(st.items, 400);
    rc_cooc_destroy(r.c);
}

TEST(cooc_fuse)
{
    rc_hit emb[3] = {{10, 0.9f}, {11, 0.7f}, {12, 0.5f}};
    rc_hit co[2] = {{12, 4.0f}, {13, 2.0f}};
    rc_hit out[5];
    uint32_t n = 0;
    /* weight 0: the embedding order, then the co-occurrence-only item (e part 0) */
    rc_cooc_fuse(emb, NULL, 3, co, NULL, 2, 0, 5, out, &n);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(out[0].row, 10);
    ASSERT_EQ(out[1].row, 11);
    /* weight 1: the co-occurrence order */
    rc_cooc_fuse(emb, NULL, 3, co, NULL, 2, 1, 2, out, &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(out[0].row, 12);
    ASSERT_EQ(out[1].row, 13);
    ASSERT_NEAR(out[0].score, 1, 1e-6);
    /* 0.5: 12 = .5*1 + .5*0 = .5, 10 = .5*1 = .5 (tie, lower id), 11 = .25, 13 = .25 */
    rc_cooc_fuse(emb, NULL, 3, co, NULL, 2, 0.5f, 5, out, &n);
    ASSERT_EQ(out[0].row, 10);
    ASSERT_EQ(out[1].row, 12);
    ASSERT_NEAR(out[1].score, 0.5, 1e-6);
    /* cross scores: 13's embedding score .8 -> (.8-.5)/.4 = .75 */
    rc_cooc_fuse(emb, (float[]){0, 0, 4}, 3, co, (float[]){0.5f, 0.8f}, 2, 0.5f, 5, out, &n);
    ASSERT_EQ(out[0].row, 13); /* .5*.5 + .5*.75 = .625 */
    ASSERT_NEAR(out[0].score, 0.625, 1e-6);
    /* the embedding part is clamped to [0,1]: 13 at 1.3 counts as the best, 1 */
    rc_cooc_fuse(emb, (float[]){0, 0, 4}, 3, co, (float[]){0.5f, 1.3f}, 2, 0.5f, 5, out, &n);
    ASSERT_EQ(out[0].row, 13);
    ASSERT_NEAR(out[0].score, 0.75, 1e-6);
}

/* ---- the daemon: engine upkeep, recall modes, stats ---- */

static void click(rc_engine *e, const char *user, int item, int city, int64_t ts)
{
    char line[256];
    int n = snprintf(line, sizeof line,
                     "{\"user_id\":\"%s\",\"item_id\":\"i%d\",\"city_id\":%d,\"cate_id\":0,"
                     "\"ts\":%lld}",
                     user, item, city, (long long)ts);
    ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
}

static int first_items(json_t *r, char *out, size_t cap)
{
    json_t *items = json_object_get(r, "items"), *it;
    size_t i, at = 0;
    out[0] = '\0';
    json_array_foreach(items, i, it)
        at += (size_t)snprintf(out + at, at < cap ? cap - at : 0, "%s%s", i ? "," : "",
                               json_string_value(json_object_get(it, "item_id")));
    return (int)json_array_size(items);
}

/* The "items" of the answer to req, as JSON text (caller frees). */
static char *answer_items(rc_api *a, const char *req)
{
    json_t *r = e2e_api(a, req);
    ASSERT(json_is_true(json_object_get(r, "ok")));
    char *s = json_dumps(json_object_get(r, "items"), JSON_COMPACT);
    ASSERT(s != NULL);
    json_decref(r);
    return s;
}

TEST(cooc_engine_modes)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.seed = 5;
    rc_engine *e = e2e_engine_offline(&c);
    int64_t ts = T0;
    /* 40 sessions of "i1 i2" and 40 of "i3 i4 i5", plus noise items 10..59, city 0 */
    for (int s = 0; s < 40; s++) {
        char u[16];
        snprintf(u, sizeof u, "a%d", s);
        click(e, u, 1, 0, ts += 1000);
        click(e, u, 2, 0, ts += 1000);
        snprintf(u, sizeof u, "b%d", s);
        click(e, u, 3, 0, ts += 1000);
        click(e, u, 4, 0, ts += 1000);
        click(e, u, 5, 0, ts += 1000);
        snprintf(u, sizeof u, "n%d", s);
        click(e, u, 10 + s, 0, ts += 1000);
        click(e, u, 11 + s, 0, ts += 1000);
    }
    click(e, "q", 3, 0, ts += 1000);
    rc_engine_sync(e);
    rc_api a;
    rc_api_init(&a);
    a.engine = e;
    atomic_store(&a.model_ready, 1);
    atomic_store(&a.assigned, 1);
    char list[256];
    json_t *r = e2e_api(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"k\":2,\"mode\":\"itemknn\"}");
    ASSERT(json_is_true(json_object_get(r, "ok")));
    ASSERT_EQ(first_items(r, list, sizeof list), 2);
    ASSERT(strcmp(list, "i4,i5") == 0 || strcmp(list, "i5,i4") == 0);
    ASSERT(!json_object_get(r, "fallback"));
    json_decref(r);
    r = e2e_api(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"k\":5,\"mode\":\"fused\"}");
    ASSERT(json_is_true(json_object_get(r, "ok")));
    ASSERT_GE(first_items(r, list, sizeof list), 2);
    ASSERT(strncmp(list, "i4,i5", 5) == 0 || strncmp(list, "i5,i4", 5) == 0);
    json_decref(r);
    /* a user without clicks falls back to popularity, as the other modes */
    r = e2e_api(&a, "{\"op\":\"recall\",\"user_id\":\"nobody\",\"k\":3,\"mode\":\"itemknn\"}");
    ASSERT(json_string_value(json_object_get(r, "fallback")) &&
           strcmp(json_string_value(json_object_get(r, "fallback")), "popular") == 0);
    json_decref(r);
    r = e2e_api(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"mode\":\"knn\"}");
    ASSERT(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                  "\"itemknn\" or \"fused\""));
    json_decref(r);
    /* recall.mode (default fused): a request that names no mode gets it;
     * reloaded, it moves. The answers compared whole: items and scores (a
     * fused score is not avg's cosine plus popularity term) */
    ASSERT_EQ(rc_engine_recall_mode(e), RC_RECALL_MODE_FUSED);
    char *fused = answer_items(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"k\":5}");
    char *avg = answer_items(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"k\":5,\"mode\":\"avg\"}");
    ASSERT(strcmp(avg, fused) != 0);
    rc_config rl = c;
    rl.recall_mode = RC_RECALL_MODE_AVG;
    rc_engine_reload(e, &rl);
    char *dflt = answer_items(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"k\":5}");
    ASSERT_STREQ(dflt, avg);
    free(dflt);
    dflt = answer_items(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"k\":5,\"mode\":\"fused\"}");
    ASSERT_STREQ(dflt, fused); /* a named mode wins */
    free(dflt);
    free(avg);
    free(fused);
    rl.recall_mode = RC_RECALL_MODE_FUSED;
    rc_engine_reload(e, &rl);
    /* stats */
    rc_buf b = {0};
    rc_engine_stats_json(e, &b);
    ASSERT(strstr(b.data, "\"cooc\":{\"enabled\":true,\"items\":"));
    ASSERT(strstr(b.data, "\"clicks\":281,"));
    rc_buf_free(&b);
    rc_engine_destroy(e);

    /* channel off: the modes are refused, naming the key */
    c.cooc_max_bytes = 0;
    e = e2e_engine_offline(&c);
    for (int i = 1; i <= 8; i++)
        click(e, "o", i, 0, T0 + i);
    click(e, "q", 3, 0, T0 + 100);
    rc_engine_sync(e);
    a.engine = e;
    r = e2e_api(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"mode\":\"fused\"}");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                 "bad_request");
    ASSERT(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                  "cooc.max_bytes"));
    json_decref(r);
    /* ... while the default mode (fused) answers as avg: the embedding alone */
    ASSERT_EQ(c.recall_mode, RC_RECALL_MODE_FUSED);
    ASSERT_EQ(rc_engine_recall_mode(e), RC_RECALL_MODE_AVG);
    r = e2e_api(&a, "{\"op\":\"recall\",\"user_id\":\"q\",\"k\":3}");
    ASSERT(json_is_true(json_object_get(r, "ok")));
    ASSERT_EQ(json_array_size(json_object_get(r, "items")), 3);
    json_decref(r);
    rc_engine_destroy(e);
}

/* ---- the evaluator's methods ---- */

static void gen_log(const char *path)
{
    rc_gen_opts go = {.seed = 9,
                      .events = 20000,
                      .users = 1000,
                      .items = 1000,
                      .cities = 4,
                      .cates = 4,
                      .communities = 20,
                      .flags = RC_GEN_NO_DEVICE | RC_GEN_NO_TAGS};
    e2e_gen_file(path, &go);
}

/* itemknn-live and fused run like every method: every prediction made, the
 * planted co-click communities found (HR@50 well above popularity). */
TEST(cooc_eval_methods)
{
    char dir[] = "/tmp/rc_cooc_XXXXXX", path[64], err[256] = "";
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    gen_log(path);
    rc_clicklog_opts lo = {.path = path, .format = RC_LOG_JSONL, .quiet = 1};
    rc_clicklog *log = NULL;
    ASSERT_EQ(rc_clicklog_load(&lo, &log, err, sizeof err), 0);
    rc_eval_split *s = NULL;
    rc_eval_opts o = {0};
    if (rc_eval_split_create(log, NULL, &o, &s, err, sizeof err))
        RC__FAIL("split: %s", err);
    rc_eval_env env = {.log = log,
                       .split = s,
                       .quiet = 1,
                       .train = {.dim = 16, .epochs = 3, .threads = 1, .seed = 3}};
    const char *names[] = {"popularity", "itemknn-live", "fused"};
    rc_eval_report rep[3];
    for (int i = 0; i < 3; i++) {
        const rc_eval_method *m = rc_eval_method_find(names[i]);
        ASSERT(m != NULL);
        if (rc_eval_method_run(m, &env, &rep[i], err, sizeof err))
            RC__FAIL("%s: %s", names[i], err);
        ASSERT_EQ(rep[i].m.predictions, s->npos);
        fprintf(stderr, "%-12s hr@50 %.4f auc %.4f fallbacks %llu\n", names[i], rep[i].m.hr50,
                rep[i].m.auc, (unsigned long long)rep[i].m.fallbacks);
    }
    for (int i = 1; i < 3; i++) {
        ASSERT_DBL_OP(rep[i].m.hr50, >, rep[0].m.hr50 * 1.4);
        ASSERT_DBL_OP(rep[i].m.auc, >, 0.6);
    }
    rc_eval_split_destroy(s);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

/* What rc_cooc_save writes, rc_cooc_load gives back: every item's scores at
 * the same instant (with decay, the counts' times too), the stats' items and
 * entries; shorter lists keep their strongest entries; ids outside the
 * restored table are dropped and counted; a truncated blob is refused. */
TEST(cooc_save_load_round_trip)
{
    rc_cooc *c = make(1000, 8, 0, 5, 3600 * 1000);
    rc_rng rng;
    rc_rng_seed(&rng, 5);
    for (uint32_t s = 0; s < 400; s++) {
        uint32_t items[6];
        for (uint32_t i = 0; i < 6; i++) /* neighbourhoods of ten ids */
            items[i] = (s % 30) * 10 + rc_rng_below(&rng, 10) + (i == 5 ? 300 : 0);
        session(c, items, 6, T0 + (int64_t)s * 60000);
    }
    rc_buf b;
    rc_buf_init(&b, 0);
    ASSERT_EQ(rc_cooc_save(c, &b), 0);
    rc_cooc *r = make(1000, 8, 0, 5, 3600 * 1000);
    uint64_t dropped = 7;
    ASSERT_EQ(rc_cooc_load(r, b.data, b.len, 1000, &dropped), 0);
    ASSERT_EQ(dropped, 0);
    rc_cooc_stats s1, s2;
    rc_cooc_stats_get(c, &s1);
    rc_cooc_stats_get(r, &s2);
    ASSERT_EQ(s2.items, s1.items);
    ASSERT_EQ(s2.entries, s1.entries);
    ASSERT_EQ(s2.clicks, 0);
    ASSERT(s1.items > 100);
    for (uint32_t q = 0; q < 600; q += 7) {
        rc_hit h1[20], h2[20];
        uint32_t n1 = 0, n2 = 0;
        ASSERT_EQ(rc_cooc_query(c, &q, NULL, 1, NULL, 0, NULL, NULL, 20, h1, &n1, NULL, 0, NULL),
                  0);
        ASSERT_EQ(rc_cooc_query(r, &q, NULL, 1, NULL, 0, NULL, NULL, 20, h2, &n2, NULL, 0, NULL),
                  0);
        ASSERT_EQ(n1, n2);
        for (uint32_t i = 0; i < n1; i++) {
            ASSERT_EQ(h1[i].row, h2[i].row);
            ASSERT_NEAR(h1[i].score, h2[i].score, 1e-6);
        }
    }
    /* both go on alike: the same later session on each */
    session(c, (uint32_t[]){1, 2, 3}, 3, T0 + 400 * 60000);
    session(r, (uint32_t[]){1, 2, 3}, 3, T0 + 400 * 60000);
    rc_hit h1[20], h2[20];
    uint32_t n1, n2, one = 1;
    rc_cooc_query(c, &one, NULL, 1, NULL, 0, NULL, NULL, 20, h1, &n1, NULL, 0, NULL);
    rc_cooc_query(r, &one, NULL, 1, NULL, 0, NULL, NULL, 20, h2, &n2, NULL, 0, NULL);
    ASSERT_EQ(n1, n2);
    for (uint32_t i = 0; i < n1; i++)
        ASSERT_NEAR(h1[i].score, h2[i].score, 1e-6);
    rc_cooc_destroy(r);

    /* two neighbours a list: at most 2 entries each, the strongest by count */
    r = make(1000, 2, 0, 5, 3600 * 1000);
    ASSERT_EQ(rc_cooc_load(r, b.data, b.len, 1000, &dropped), 0);
    rc_cooc_stats_get(r, &s2);
    ASSERT(s2.entries <= 2 * s2.items);
    ASSERT_EQ(dropped, s1.entries - s2.entries);
    rc_cooc_destroy(r);

    /* a table of 100 rows: no id of 100 or more, in or out of a list */
    r = make(1000, 8, 0, 5, 3600 * 1000);
    ASSERT_EQ(rc_cooc_load(r, b.data, b.len, 100, &dropped), 0);
    ASSERT(dropped > 0);
    for (uint32_t q = 0; q < 100; q++) {
        ASSERT_EQ(rc_cooc_query(r, &q, NULL, 1, NULL, 0, NULL, NULL, 20, h2, &n2, NULL, 0, NULL),
                  0);
        for (uint32_t i = 0; i < n2; i++)
            ASSERT_LT(h2[i].row, 100);
    }
    rc_cooc_destroy(r);

    for (size_t cut = 0; cut < b.len; cut += 13) {
        r = make(1000, 8, 0, 5, 3600 * 1000);
        ASSERT_EQ(rc_cooc_load(r, b.data, cut, 1000, NULL), RC_ECORRUPT);
        rc_cooc_destroy(r);
    }
    rc_buf_free(&b);
    rc_cooc_destroy(c);
}
