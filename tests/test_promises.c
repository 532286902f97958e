/* Documented promises that had no test (issue 16, item 6): session policies
 * through the engine, the event-time clock cap, the counting invariant,
 * recall scope / exact / batch limit, SIGHUP and a second SIGTERM, IVF retrain
 * on imbalance, a failing dead-letter file, the retrain_* and busy codes.
 *
 * The unit of each test is the one the docs describe: the engine API
 * in-process for the pipeline's policies, the request handler (rc_api_handle,
 * what the socket's workers run) for the protocol, the index API for the
 * index, and the real daemon where signals, Kafka or the dead-letter file are
 * involved. Waits are for conditions, with a generous timeout that only
 * fails when the condition never holds. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/api.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/index.h"
#include "recalld/model.h"
#include "recalld/table.h"
#include "recalld/tower.h"
#include "recalld/vec.h"
#include "test.h"
#include "tower_stream.h"

#define WAIT_MS ((int)e2e_scaled_ms(120000)) /* RC_TEST_TIME_SCALE: longer under TSan */
#define MIN_MS  (60 * 1000LL)

/* ---- helpers ------------------------------------------------------------- */

static rc_engine *offline(const rc_config *c) { return e2e_engine_offline(c); }

static json_t *engine_stats(rc_engine *e) { return e2e_engine_stats(e); }

static long long engine_stat(rc_engine *e, const char *path)
{
    json_t *st = engine_stats(e);
    long long v = e2e_int(st, path);
    json_decref(st);
    return v;
}

static int user_held(rc_engine *e, const char *user)
{
    uint32_t rows[32], n = 0;
    int64_t ts[32];
    return rc_engine_user_clicks(e, user, strlen(user), rows, ts, 32, &n) == 0 && n > 0;
}

static uint32_t row_of(rc_engine *e, const char *item)
{
    uint32_t row;
    ASSERT_EQ(rc_table_find(rc_engine_table(e), item, strlen(item), &row), 0);
    return row;
}

/* One request through the protocol handler the socket workers run. */
static json_t *api(rc_api *a, const char *req) { return e2e_api(a, req); }

static int is_ok(json_t *r) { return json_is_true(json_object_get(r, "ok")); }

static const char *err_code(json_t *r)
{
    const char *c = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
    return c ? c : "(none)";
}

static const char *err_msg(json_t *r)
{
    const char *m = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
    return m ? m : "(none)";
}

/* The error code of a request that must fail, checked; message returned via strstr. */
static void expect_error(rc_api *a, const char *req, const char *code, const char *in_msg)
{
    json_t *r = api(a, req);
    if (is_ok(r) || strcmp(err_code(r), code) != 0 || (in_msg && !strstr(err_msg(r), in_msg)))
        RC__FAIL("%s -> code %s message \"%s\" (want %s, \"%s\")", req, err_code(r), err_msg(r),
                 code, in_msg ? in_msg : "");
    json_decref(r);
}

static void api_init(rc_api *a, rc_engine *e)
{
    rc_api_init(a);
    a->engine = e;
    atomic_store(&a->model_ready, 1);
    atomic_store(&a->assigned, 1);
}

/* ---- 1. session policies through the engine ------------------------------- */

typedef struct snap {
    uint32_t rows;
    float *in, *out;
    uint32_t *count;
} snap;

static void snap_take(rc_engine *e, snap *s)
{
    const rc_table *t = rc_engine_table(e);
    uint32_t dim = rc_table_dim(t);
    s->rows = rc_table_size(t);
    s->in = malloc((size_t)s->rows * dim * sizeof(float));
    s->out = malloc((size_t)s->rows * dim * sizeof(float));
    s->count = malloc(s->rows * sizeof(uint32_t));
    for (uint32_t r = 0; r < s->rows; r++) {
        memcpy(s->in + (size_t)r * dim, rc_table_in(t, r), dim * sizeof(float));
        memcpy(s->out + (size_t)r * dim, rc_table_out(t, r), dim * sizeof(float));
        s->count[r] = rc_table_count(t, r);
    }
}

/* Nothing trained since s: same rows, counts and vectors, bit for bit. */
static void snap_same(rc_engine *e, const snap *s)
{
    const rc_table *t = rc_engine_table(e);
    uint32_t dim = rc_table_dim(t);
    ASSERT_EQ(rc_table_size(t), s->rows);
    for (uint32_t r = 0; r < s->rows; r++) {
        ASSERT_EQ(rc_table_count(t, r), s->count[r]);
        ASSERT(memcmp(s->in + (size_t)r * dim, rc_table_in(t, r), dim * sizeof(float)) == 0);
        ASSERT(memcmp(s->out + (size_t)r * dim, rc_table_out(t, r), dim * sizeof(float)) == 0);
    }
}

static void snap_free(snap *s)
{
    free(s->in);
    free(s->out);
    free(s->count);
}

/* DESIGN.md "Sessions": a duplicate (same item, same ts) and a late click
 * (before the session's start minus one gap) enter the counters (applied,
 * duplicates, late) but are not trained; an out-of-order click inside the
 * session or at most one gap before it is inserted at its place and trained
 * against the clicks before it (reordered). */
TEST(promises_engine_duplicate_late_reordered)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.seed = 5;
    c.gap_ms = MIN_MS; /* one minute */
    rc_engine *e = offline(&c);
    const int64_t T = 1700000000000LL;
    e2e_engine_click(e, "u1", "i1", "c0", "k0", T);
    e2e_engine_click(e, "u1", "i2", "c0", "k0", T + 1000);
    e2e_engine_click(e, "u1", "i3", "c0", "k0", T + 2000);
    ASSERT_EQ(engine_stat(e, "events.applied"), 3);
    long long pairs0 = engine_stat(e, "training.pairs");
    ASSERT_GT(pairs0, 0);

    snap s;
    snap_take(e, &s);
    e2e_engine_click(e, "u1", "i2", "c0", "k0", T + 1000); /* duplicate */
    snap_same(e, &s);
    ASSERT_EQ(engine_stat(e, "events.duplicates"), 1);
    ASSERT_EQ(engine_stat(e, "events.applied"), 4);
    e2e_engine_click(e, "u1", "i1", "c0", "k0", T - c.gap_ms - 1000); /* late: before start - gap */
    snap_same(e, &s);
    ASSERT_EQ(engine_stat(e, "events.late"), 1);
    ASSERT_EQ(engine_stat(e, "events.applied"), 5);
    ASSERT_EQ(engine_stat(e, "events.reordered"), 0);
    ASSERT_EQ(engine_stat(e, "training.pairs"), pairs0);
    snap_free(&s);

    /* Out of order inside the session: placed between i2 and i3, trained
     * against i1 and i2 (the clicks before it). */
    uint32_t i2 = row_of(e, "i2");
    uint32_t cnt2 = rc_table_count(rc_engine_table(e), i2);
    e2e_engine_click(e, "u1", "i4", "c0", "k0", T + 1500);
    ASSERT_EQ(engine_stat(e, "events.reordered"), 1);
    ASSERT_EQ(rc_table_count(rc_engine_table(e), row_of(e, "i4")), 1);
    ASSERT_GT(engine_stat(e, "training.pairs"), pairs0);
    ASSERT_EQ(rc_table_count(rc_engine_table(e), i2), cnt2);
    /* Half a gap before the session's start: still reordered, counted. */
    e2e_engine_click(e, "u1", "i5", "c0", "k0", T - c.gap_ms / 2);
    ASSERT_EQ(engine_stat(e, "events.reordered"), 2);
    ASSERT_EQ(engine_stat(e, "events.late"), 1);
    ASSERT_EQ(rc_table_count(rc_engine_table(e), row_of(e, "i5")), 1);
    ASSERT_EQ(engine_stat(e, "events.applied"), 7);

    uint32_t rows[16], n = 0;
    int64_t ts[16];
    ASSERT_EQ(rc_engine_user_clicks(e, "u1", 2, rows, ts, 16, &n), 0);
    const char *order[] = {"i5", "i1", "i2", "i4", "i3"};
    ASSERT_EQ(n, 5);
    for (uint32_t i = 0; i < n; i++) {
        ASSERT_EQ(rows[i], row_of(e, order[i]));
        if (i)
            ASSERT_LT(ts[i - 1], ts[i]);
    }
    rc_engine_destroy(e);
}

/* Flushes (what the trainer does between batches) until `path` reaches want;
 * expiry runs at most once a wall-clock second, so this may take a few. */
static void flush_until(rc_engine *e, const char *path, long long want)
{
    long long t0 = e2e_now_ms();
    for (;;) {
        rc_engine_flush_index(e);
        long long v = engine_stat(e, path);
        if (v >= want)
            return;
        if (e2e_now_ms() - t0 > WAIT_MS)
            RC__FAIL("%s stays %lld (want %lld)", path, v, want);
        usleep(20000);
    }
}

/* DESIGN.md "Sessions" / CONFIG.md sessions.max_users, sessions.ttl_ms: at
 * most max_users users, the least recently active evicted first
 * (users.evicted_lru); a user idle for ttl_ms of event time is dropped
 * (users.expired_ttl) and then recalls the popular fallback. */
TEST(promises_engine_users_lru_and_ttl)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.max_users = 2;
    rc_engine *e = offline(&c);
    const int64_t T = rc_wall_ms() - 3600 * 1000LL;
    e2e_engine_click(e, "ua", "i1", "c0", "k0", T);
    e2e_engine_click(e, "ub", "i2", "c0", "k0", T + 1);
    e2e_engine_click(e, "uc", "i3", "c0", "k0", T + 2); /* ua is the least recently active */
    ASSERT_EQ(engine_stat(e, "users.evicted_lru"), 1);
    ASSERT(!user_held(e, "ua"));
    ASSERT(user_held(e, "ub") && user_held(e, "uc"));
    e2e_engine_click(e, "ub", "i4", "c0", "k0", T + 3); /* now uc is */
    e2e_engine_click(e, "ud", "i5", "c0", "k0", T + 4);
    ASSERT_EQ(engine_stat(e, "users.evicted_lru"), 2);
    ASSERT(!user_held(e, "uc"));
    ASSERT(user_held(e, "ub") && user_held(e, "ud"));
    ASSERT_EQ(engine_stat(e, "users.active"), 2);
    ASSERT_EQ(engine_stat(e, "users.expired_ttl"), 0);
    rc_engine_destroy(e);

    rc_config_defaults(&c);
    c.dim = 16;
    c.ttl_ms = MIN_MS;
    e = offline(&c);
    e2e_engine_click(e, "ua", "i1", "c0", "k0", T);
    e2e_engine_click(e, "ub", "i2", "c0", "k0", T + 30000);
    e2e_engine_click(e, "uc", "i3", "c0", "k0", T + 90000); /* clock T+90s: ua idle 90 s, ub 60 s */
    flush_until(e, "users.expired_ttl", 1);
    ASSERT_EQ(engine_stat(e, "users.expired_ttl"), 1);
    ASSERT_EQ(engine_stat(e, "users.evicted_lru"), 0);
    ASSERT(!user_held(e, "ua"));
    ASSERT(user_held(e, "ub") && user_held(e, "uc"));
    rc_api a;
    api_init(&a, e);
    json_t *r = api(&a, "{\"op\":\"recall\",\"user_id\":\"ua\",\"k\":2}");
    ASSERT(is_ok(r));
    ASSERT_STREQ(json_string_value(json_object_get(r, "fallback")), "popular");
    json_decref(r);
    r = api(&a, "{\"op\":\"recall\",\"user_id\":\"ub\",\"k\":2}");
    ASSERT(is_ok(r) && !json_object_get(r, "fallback"));
    json_decref(r);
    rc_engine_destroy(e);
}

/* src/engine.c apply_event / DESIGN.md "Sessions": "The event-time clock is
 * never allowed to run more than 5 minutes ahead of the wall clock". A click
 * ten years ahead moves the clock to wall + 5 min, no further: a user who
 * clicked now survives a 6-minute TTL and does not survive a 4-minute one.
 * A witness idle for a day shows that expiry ran. */
static long long clock_case(int64_t ttl_ms)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.ttl_ms = ttl_ms;
    rc_engine *e = offline(&c);
    int64_t now = rc_wall_ms();
    e2e_engine_click(e, "witness", "i0", "c0", "k0", now - 24 * 3600 * 1000LL);
    e2e_engine_click(e, "now", "i1", "c0", "k0", now);
    e2e_engine_click(e, "future", "i2", "c0", "k0", now + 10 * 365 * 24 * 3600 * 1000LL);
    ASSERT_EQ(engine_stat(e, "events.max_ts"), now + 10 * 365 * 24 * 3600 * 1000LL);
    flush_until(e, "users.expired_ttl", 1);
    ASSERT(!user_held(e, "witness"));
    ASSERT(user_held(e, "future"));
    long long expired = engine_stat(e, "users.expired_ttl");
    ASSERT_EQ(expired, 2 - user_held(e, "now"));
    rc_engine_destroy(e);
    return expired;
}

TEST(promises_engine_event_clock_capped_at_wall_plus_5_min)
{
    ASSERT_EQ(clock_case(6 * MIN_MS), 1); /* "now" idle <= 5 min + test time < 6 min */
    ASSERT_EQ(clock_case(4 * MIN_MS), 2); /* idle ~5 min > 4 min: the clock did move */
}

/* ---- 2. the counting invariant (daemon) ------------------------------------ */

/* DESIGN.md "Report": once the batches in flight are done, consumed = applied
 * + invalid + ignored + rejected_capacity; ignored = event types other than
 * click; rejected_capacity = valid clicks beyond model.max_items; duplicates
 * are part of applied. One key, so one partition, in order. */
TEST(promises_counting_invariant_exact_terms)
{
    char dir[64], conf[128], lines[128];
    tower_tmp_dir(dir, sizeof dir, "rc-prom-");
    snprintf(conf, sizeof conf, "%s/r.json", dir);
    snprintf(lines, sizeof lines, "%s/lines.tsv", dir);
    e2e_write_file(conf, "{\"model\":{\"max_items\":16,\"dim\":16}}");
    FILE *f = fopen(lines, "w");
    ASSERT(f != NULL);
    const long long T = 1700000000000LL;
    long long n = 0;
#define EV(...) (fprintf(f, "u0\t" __VA_ARGS__), fputc('\n', f), n++)
    for (int i = 0; i < 20; i++) /* 16 new items fit, 4 are beyond max_items */
        EV("{\"user_id\":\"u%d\",\"item_id\":\"i%d\",\"city_id\":\"c0\",\"cate_id\":\"k0\","
           "\"ts\":%lld}",
           i % 3, i, T + i * 1000);
    for (int i = 0; i < 5; i++) /* known items */
        EV("{\"user_id\":\"u9\",\"item_id\":\"i%d\",\"city_id\":\"c0\",\"cate_id\":\"k0\","
           "\"ts\":%lld}",
           i, T + 100000 + i * 1000);
    EV("{\"user_id\":\"u9\",\"item_id\":\"i4\",\"city_id\":\"c0\",\"cate_id\":\"k0\","
       "\"ts\":%lld}",
       T + 104000);             /* duplicate: applied, not trained */
    for (int i = 0; i < 3; i++) /* other event types, one on a new item */
        EV("{\"user_id\":\"u9\",\"item_id\":\"i%d\",\"city_id\":\"c0\",\"cate_id\":\"k0\","
           "\"ts\":%lld,\"event\":\"view\"}",
           i ? i : 99, T + 200000 + i);
    EV("not json");
    EV("[1]");
    EV("{\"user_id\":\"u1\",\"city_id\":\"c0\",\"cate_id\":\"k0\",\"ts\":1}");
    EV("{\"user_id\":\"u1\",\"item_id\":\"i1\",\"city_id\":\"c0\",\"cate_id\":\"k0\","
       "\"ts\":\"x\"}");
    EV("{\"user_id\":\"u1\",\"item_id\":\"i1\",\"city_id\":\"c0\",\"cate_id\":\"k0\",\"ts\":-5}");
#undef EV
    ASSERT_EQ(fclose(f), 0);
    ASSERT_EQ(n, 34);

    e2e_daemon d;
    const char *extra[] = {"--config", conf, NULL};
    e2e_start(&d, extra);
    e2e_kcat(&d, lines);
    long long t0 = e2e_now_ms(), sum = 0, consumed = 0;
    json_t *st = NULL;
    for (;;) {
        st = e2e_request(d.sock, "{\"op\":\"stats\"}");
        consumed = e2e_int(st, "events.consumed");
        sum = e2e_int(st, "events.applied") + e2e_int(st, "events.invalid") +
              e2e_int(st, "events.ignored") + e2e_int(st, "events.rejected_capacity");
        if (consumed >= n && sum >= n)
            break;
        if (e2e_now_ms() - t0 > WAIT_MS)
            RC__FAIL("consumed %lld, accounted %lld of %lld", consumed, sum, n);
        json_decref(st);
        usleep(50000);
    }
    ASSERT_EQ(consumed, n);
    ASSERT_EQ(sum, consumed);
    ASSERT_EQ(e2e_int(st, "events.applied"), 16 + 5 + 1);
    ASSERT_EQ(e2e_int(st, "events.duplicates"), 1);
    ASSERT_EQ(e2e_int(st, "events.rejected_capacity"), 4);
    ASSERT_EQ(e2e_int(st, "events.ignored"), 3);
    ASSERT_EQ(e2e_int(st, "events.invalid"), 5);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.bad_json"), 1);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.not_object"), 1);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.missing_field"), 1);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.wrong_type"), 1);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.bad_value"), 1);
    ASSERT_EQ(e2e_int(st, "items"), 16);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s %s", d.dir, dir);
}

/* ---- 3. recall scope, exact, batch limit (protocol handler) ---------------- */

/* Items a0..a9 in city c0 and b0..b9 in c1 (one category); user u clicked
 * a0, a1, a2 and b0: most of its click weight is in c0. */
static rc_engine *scope_engine(rc_config *c)
{
    rc_engine *e = offline(c);
    char item[16];
    const int64_t T = 1700000000000LL;
    for (int i = 0; i < 10; i++) {
        snprintf(item, sizeof item, "a%d", i);
        e2e_engine_click(e, "xa", item, "c0", "k0", T + i * 1000);
        snprintf(item, sizeof item, "b%d", i);
        e2e_engine_click(e, "xb", item, "c1", "k0", T + i * 1000);
    }
    e2e_engine_click(e, "u", "a0", "c0", "k0", T + 20000);
    e2e_engine_click(e, "u", "a1", "c0", "k0", T + 21000);
    e2e_engine_click(e, "u", "b0", "c1", "k0", T + 22000);
    e2e_engine_click(e, "u", "a2", "c0", "k0", T + 23000);
    rc_engine_flush_index(e);
    return e;
}

/* Items of a recall reply by city; fails on a clicked item. */
static void city_counts(json_t *r, int *c0, int *c1)
{
    size_t i;
    json_t *it;
    *c0 = *c1 = 0;
    ASSERT(is_ok(r));
    ASSERT(!json_object_get(r, "fallback"));
    json_array_foreach(json_object_get(r, "items"), i, it) {
        const char *id = json_string_value(json_object_get(it, "item_id"));
        const char *city = json_string_value(json_object_get(it, "city"));
        ASSERT(strcmp(id, "a0") && strcmp(id, "a1") && strcmp(id, "a2") && strcmp(id, "b0"));
        ASSERT_EQ(id[0], city[1] == '0' ? 'a' : 'b');
        *c0 += strcmp(city, "c0") == 0;
        *c1 += strcmp(city, "c1") == 0;
    }
}

/* PROTOCOL.md recall: without city, results only from the city holding most
 * of the user's click weight (recall.scope = user_city, the default);
 * "city":"*" or recall.scope = global search every city; a city restricts to
 * it. recall.max_batch_users bounds "users": at the limit it works, one more
 * is bad_request naming the field. */
TEST(promises_recall_scope_city_star_global_and_batch_limit)
{
    rc_config c;
    char err[256];
    int c0, c1;
    rc_config_defaults(&c);
    c.dim = 16;
    c.max_batch_users = 3;
    rc_engine *e = scope_engine(&c);
    rc_api a;
    api_init(&a, e);
    json_t *r = api(&a, "{\"op\":\"recall\",\"user_id\":\"u\",\"k\":20}");
    city_counts(r, &c0, &c1);
    ASSERT_EQ(c0, 7); /* every unclicked c0 item, nothing from c1 */
    ASSERT_EQ(c1, 0);
    json_decref(r);
    r = api(&a, "{\"op\":\"recall\",\"user_id\":\"u\",\"k\":20,\"city\":\"*\"}");
    city_counts(r, &c0, &c1);
    ASSERT_EQ(c0, 7);
    ASSERT_EQ(c1, 9);
    json_decref(r);
    r = api(&a, "{\"op\":\"recall\",\"user_id\":\"u\",\"k\":20,\"city\":\"c1\"}");
    city_counts(r, &c0, &c1);
    ASSERT_EQ(c0, 0);
    ASSERT_EQ(c1, 9);
    json_decref(r);

    r = api(&a, "{\"op\":\"recall\",\"users\":[\"u\",\"xa\",\"nobody\"],\"k\":3}");
    ASSERT(is_ok(r));
    ASSERT_EQ(json_array_size(json_object_get(r, "results")), 3);
    json_decref(r);
    expect_error(&a, "{\"op\":\"recall\",\"users\":[\"u\",\"xa\",\"xb\",\"nobody\"],\"k\":3}",
                 "bad_request", "users");
    rc_engine_destroy(e);

    rc_config_defaults(&c);
    if (rc_config_load_str(&c, "{\"recall\":{\"scope\":\"global\"},\"model\":{\"dim\":16}}", err,
                           sizeof err))
        RC__FAIL("config: %s", err);
    e = scope_engine(&c);
    api_init(&a, e);
    r = api(&a, "{\"op\":\"recall\",\"user_id\":\"u\",\"k\":20}");
    city_counts(r, &c0, &c1);
    ASSERT_EQ(c0, 7);
    ASSERT_EQ(c1, 9);
    json_decref(r);
    rc_engine_destroy(e);
}

#define XDIM   16
#define XITEMS 3000

static float gauss(rc_rng *r)
{
    float u = rc_rng_float(r) + 1e-7f, v = rc_rng_float(r);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* PROTOCOL.md recall "exact": brute force over every item instead of the
 * index. Random vectors in one IVF partition probed with nprobe 1 make the
 * index answer differ from the true ranking; the exact answer must be the
 * true top-k computed here from the table (the user vector as documented:
 * the mean of the clicked items' unit vectors, clicked items left out). */
TEST(promises_recall_exact_is_brute_force_top_k)
{
    char dir[64], model[128], err[512];
    tower_tmp_dir(dir, sizeof dir, "rc-prom-");
    snprintf(model, sizeof model, "%s/m.rcm", dir);
    rc_table_opts to = {.dim = XDIM, .max_items = 1u << 20, .seed = 3};
    rc_table *t = NULL;
    ASSERT_EQ(rc_table_create(&to, &t, err, sizeof err), 0);
    uint32_t city, cate, row;
    ASSERT_EQ(rc_table_city_id(t, "c0", 2, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k0", 2, &cate), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 17);
    for (int i = 0; i < XITEMS; i++) {
        char id[16];
        int n = snprintf(id, sizeof id, "i%d", i), created = 0;
        ASSERT_EQ(rc_table_upsert(t, id, (size_t)n, city, cate, NULL, 0, &row, &created), 0);
        float *v = rc_table_in(t, row);
        for (int j = 0; j < XDIM; j++)
            v[j] = gauss(&rng);
        rc_table_count_add(t, row, 1);
    }
    if (rc_model_save(t, model, err, sizeof err))
        RC__FAIL("save: %s", err);
    rc_table_destroy(t);

    rc_config c;
    rc_config_defaults(&c);
    c.dim = XDIM;
    c.ivf_min = 64;
    c.nprobe = 1;
    c.half_life_ms = 0;                 /* the plain mean the reference below computes */
    ASSERT(c.popularity_weight > 0);    /* the default: its term is in the scores checked */
    c.recall_mode = RC_RECALL_MODE_AVG; /* the embedding's score (fused: test_cooc.c) */
    snprintf(c.model_path, sizeof c.model_path, "%s", model);
    rc_engine *e = offline(&c);
    flush_until(e, "index.ivf_partitions", 1);
    const int64_t T = 1700000000000LL;
    e2e_engine_click(e, "u", "i10", "c0", "k0", T);
    e2e_engine_click(e, "u", "i20", "c0", "k0", T + 1000);
    e2e_engine_click(e, "u", "i30", "c0", "k0", T + 2000);
    rc_engine_flush_index(e);
    rc_api a;
    api_init(&a, e);
    json_t *ex = api(&a, "{\"op\":\"recall\",\"user_id\":\"u\",\"k\":20,\"exact\":true}");
    json_t *ix = api(&a, "{\"op\":\"recall\",\"user_id\":\"u\",\"k\":20}");
    ASSERT(is_ok(ex) && is_ok(ix));

    /* The truth, from the table as it is now. */
    const rc_table *tt = rc_engine_table(e);
    uint32_t rows = rc_table_size(tt),
             clicked[3] = {row_of(e, "i10"), row_of(e, "i20"), row_of(e, "i30")};
    double q[XDIM] = {0}, qn = 0;
    for (int i = 0; i < 3; i++) {
        const float *v = rc_table_in(tt, clicked[i]);
        double nv = 0;
        for (int j = 0; j < XDIM; j++)
            nv += (double)v[j] * v[j];
        for (int j = 0; j < XDIM; j++)
            q[j] += v[j] / sqrt(nv);
    }
    for (int j = 0; j < XDIM; j++)
        qn += q[j] * q[j];
    double *score = malloc(rows * sizeof *score), top[20];
    for (uint32_t r = 0; r < rows; r++) {
        const float *v = rc_table_in(tt, r);
        double d = 0, nv = 0;
        for (int j = 0; j < XDIM; j++) {
            d += q[j] * v[j];
            nv += (double)v[j] * v[j];
        }
        /* the served score: the cosine plus recall.popularity_weight x
         * ln(1 + clicks), the same for every item not clicked here */
        score[r] = d / sqrt(qn) / sqrt(nv) + c.popularity_weight * log1p(rc_table_count(tt, r));
    }
    for (int i = 0; i < 3; i++)
        score[clicked[i]] = -10;
    for (int k = 0; k < 20; k++) { /* k-th best */
        uint32_t best = 0;
        for (uint32_t r = 1; r < rows; r++)
            if (score[r] > score[best])
                best = r;
        top[k] = score[best];
        score[best] = -score[best] - 20; /* taken; restorable */
    }
    for (uint32_t r = 0; r < rows; r++)
        if (score[r] < -15)
            score[r] = -(score[r] + 20);
    json_t *items = json_object_get(ex, "items"), *it;
    size_t i;
    ASSERT_EQ(json_array_size(items), 20);
    int differs = 0;
    json_array_foreach(items, i, it) {
        const char *id = json_string_value(json_object_get(it, "item_id"));
        uint32_t r = row_of(e, id);
        double s = json_number_value(json_object_get(it, "score"));
        ASSERT_NEAR(s, score[r], 1e-4); /* the reported score is the true score */
        ASSERT_NEAR(s, top[i], 1e-4);   /* at the true rank */
        const char *other = json_string_value(
            json_object_get(json_array_get(json_object_get(ix, "items"), i), "item_id"));
        differs |= !other || strcmp(other, id) != 0;
    }
    ASSERT(differs); /* the index alone is approximate here: the check above has teeth */
    json_decref(ex);
    json_decref(ix);
    free(score);
    rc_engine_destroy(e);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* ---- 5. IVF retrain on imbalance (index API) -------------------------------- */

static void put_row(rc_table *t, uint32_t city, uint32_t cate, const float *v, rc_index *ix)
{
    char id[32];
    int n = snprintf(id, sizeof id, "r%u", rc_table_size(t)), created = 0;
    uint32_t row;
    ASSERT_EQ(rc_table_upsert(t, id, (size_t)n, city, cate, NULL, 0, &row, &created), 0);
    ASSERT_EQ(created, 1);
    memcpy(rc_table_in(t, row), v, XDIM * sizeof(float));
    rc_index_touch(ix, row);
}

static void rand_unit(rc_rng *r, float *v)
{
    for (int j = 0; j < XDIM; j++)
        v[j] = gauss(r);
    rc_vec_normalize(v, XDIM);
}

/* index.h / DESIGN.md "Index": an IVF partition is retrained when its lists
 * are unbalanced (imbalance factor > max_imbalance, 3 by default), checked
 * at most once per 10% growth; growth alone (below retrain_growth) does not
 * retrain. After the retrain every row still finds itself. */
TEST(promises_index_ivf_retrain_on_imbalance)
{
    rc_table_opts to = {.dim = XDIM, .seed = 3};
    rc_table *t = NULL;
    char err[256] = "";
    ASSERT_EQ(rc_table_create(&to, &t, err, sizeof err), 0);
    uint32_t city, cate;
    ASSERT_EQ(rc_table_city_id(t, "c0", 2, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k0", 2, &cate), 0);
    rc_index_opts o = {.ivf_min = 400, .nprobe = 4, .retrain_growth = 100.0f, .no_background = 1};
    rc_index *ix = NULL;
    ASSERT_EQ(rc_index_create(&o, t, &ix, err, sizeof err), 0);
    rc_rng r;
    rc_rng_seed(&r, 23);
    float v[XDIM], hot[XDIM];
    for (int i = 0; i < 400; i++) {
        rand_unit(&r, v);
        put_row(t, city, cate, v, ix);
    }
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof err), 400);
    ASSERT_EQ(rc_index_maintain(ix, err, sizeof err), 0);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.ivf_partitions, 1);
    ASSERT_EQ(st.retrains, 1);

    /* Balanced growth by 50%: lists stay even, no retrain. */
    for (int i = 0; i < 200; i++) {
        rand_unit(&r, v);
        put_row(t, city, cate, v, ix);
    }
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof err), 200);
    ASSERT_EQ(rc_index_maintain(ix, err, sizeof err), 0);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.retrains, 1);

    /* 300 rows around one point all land in one list: unbalanced. */
    rand_unit(&r, hot);
    for (int i = 0; i < 300; i++) {
        for (int j = 0; j < XDIM; j++)
            v[j] = hot[j] + 0.01f * gauss(&r);
        rc_vec_normalize(v, XDIM);
        put_row(t, city, cate, v, ix);
    }
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof err), 300);
    ASSERT_EQ(rc_index_maintain(ix, err, sizeof err), 0);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.retrains, 2);
    ASSERT_EQ(st.size, 900);
    uint32_t got[1], n;
    float gs[1];
    for (uint32_t row = 0; row < 600; row++) { /* the spread rows: each its own nearest */
        memcpy(v, rc_table_in(t, row), sizeof v);
        ASSERT_EQ(rc_index_search(ix, v, 1, NULL, got, gs, &n), 0);
        ASSERT_EQ(n, 1);
        ASSERT_EQ(got[0], row);
        ASSERT_NEAR(gs[0], 1.0, 1e-3);
    }
    ASSERT_EQ(rc_index_search(ix, hot, 1, NULL, got, gs, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_GE(got[0], 600);
    rc_index_destroy(ix);
    rc_table_destroy(t);
}

/* ---- 4. signals (daemon) ----------------------------------------------------- */

static int log_has(const char *log, const char *needle)
{
    return e2e_sh(NULL, "grep -F -q -- '%s' %s", needle, log) == 0;
}

static void wait_log(const char *log, const char *needle)
{
    long long t0 = e2e_now_ms();
    while (!log_has(log, needle)) {
        if (e2e_now_ms() - t0 > WAIT_MS)
            RC__FAIL("no \"%s\" in %s", needle, log);
        usleep(50000);
    }
}

/* OPERATIONS.md "Signals" / CONFIG.md recall.k_max (SIGHUP yes): a changed
 * k_max is applied: k above the old limit works, above the new one is
 * bad_request naming k and the new range. */
TEST(promises_sighup_applies_k_max)
{
    char dir[64], conf[128];
    tower_tmp_dir(dir, sizeof dir, "rc-prom-");
    snprintf(conf, sizeof conf, "%s/r.json", dir);
    e2e_write_file(conf, "{\"recall\":{\"k_max\":100}}");
    e2e_daemon d;
    const char *extra[] = {"--config", conf, NULL};
    e2e_start(&d, extra);
    json_t *r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":150}");
    ASSERT_STREQ(err_code(r), "bad_request");
    ASSERT(strstr(err_msg(r), "k: expected integer 1..100") != NULL);
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"similar\",\"item_id\":\"i1\",\"k\":150}");
    ASSERT_STREQ(err_code(r), "bad_request");
    json_decref(r);

    e2e_write_file(conf, "{\"recall\":{\"k_max\":200}}");
    ASSERT_EQ(kill(d.pid, SIGHUP), 0);
    long long t0 = e2e_now_ms();
    for (;;) {
        r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":150}");
        int ok = is_ok(r);
        json_decref(r);
        if (ok)
            break;
        if (e2e_now_ms() - t0 > WAIT_MS)
            RC__FAIL("k 150 still refused after SIGHUP with k_max 200");
        usleep(50000);
    }
    r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":200}");
    ASSERT(is_ok(r));
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":201}");
    ASSERT_STREQ(err_code(r), "bad_request");
    ASSERT(strstr(err_msg(r), "k: expected integer 1..200") != NULL);
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"similar\",\"item_id\":\"i1\",\"k\":201}");
    ASSERT_STREQ(err_code(r), "bad_request");
    json_decref(r);
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s %s", d.dir, dir);
}

/* OPERATIONS.md "Signals": during the shutdown of a first SIGTERM, a second
 * one exits at once with status 1. The final checkpoint is paced to 1 KB/s
 * (checkpoint.max_mb_s) so the shutdown lasts far longer than the wait. */
TEST(promises_second_sigterm_exits_at_once_with_1)
{
    char dir[64], conf[128], data[128];
    tower_tmp_dir(dir, sizeof dir, "rc-prom-");
    snprintf(conf, sizeof conf, "%s/r.json", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    ASSERT_EQ(mkdir(data, 0700), 0);
    e2e_write_file(conf, "{\"checkpoint\":{\"max_mb_s\":0.001,\"interval_ms\":0}}");
    e2e_daemon d;
    const char *extra[] = {"--config", conf, "--data-dir", data, NULL};
    e2e_start(&d, extra);
    pid_t g = e2e_gen_start(d.bootstrap, 3, 3000, 0, 0);
    ASSERT_EQ(e2e_gen_wait(g), 0);
    json_t *st = e2e_wait_done(d.sock, 3000, WAIT_MS);
    ASSERT_EQ(e2e_int(st, "events.applied"), 3000);
    ASSERT_GT(e2e_int(st, "items"), 1000); /* > 1 MB of checkpoint: > 1000 s at 1 KB/s */
    json_decref(st);

    pid_t pid = d.pid;
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    wait_log(d.log, "shutting down: draining requests");
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    long long t0 = e2e_now_ms();
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (e2e_now_ms() - t0 > WAIT_MS) {
            e2e_kill(&d);
            RC__FAIL("still running %d s after the second SIGTERM", WAIT_MS / 1000);
        }
        usleep(20000);
    }
    d.pid = 0;
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 1);
    ASSERT(log_has(d.log, "second signal: exiting now"));
    ASSERT(!log_has(d.log, "final checkpoint durable")); /* it did not wait for it */
    e2e_sh(NULL, "rm -rf %s %s", d.dir, dir);
}

/* ---- 6. a failing dead-letter file (daemon) ---------------------------------- */

#define DLQ_LIMIT (256 << 10)

static void write_lines(const char *path, int first, int nvalid, int ninvalid)
{
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    for (int i = 0; i < ninvalid; i++)
        fprintf(f, "u0\t{\"broken\":%d\n", first + i);
    for (int i = 0; i < nvalid; i++)
        fprintf(f,
                "u0\t{\"user_id\":\"u0\",\"item_id\":\"i%d\",\"city_id\":\"c0\","
                "\"cate_id\":\"k0\",\"ts\":%lld}\n",
                first + i, 1700000000000LL + (first + i) * 1000LL);
    ASSERT_EQ(fclose(f), 0);
}

static json_t *wait_accounted(const char *sock, long long total)
{
    long long t0 = e2e_now_ms();
    for (;;) {
        json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
        long long done = e2e_int(st, "events.applied") + e2e_int(st, "events.invalid");
        long long reported =
            e2e_int(st, "kafka.dead_letters") + e2e_int(st, "kafka.dead_letter_errors");
        if (done >= total && reported >= e2e_int(st, "events.invalid"))
            return st;
        if (e2e_now_ms() - t0 > WAIT_MS)
            RC__FAIL("%lld of %lld events accounted", done, total);
        json_decref(st);
        usleep(50000);
    }
}

/* OPERATIONS.md "Dead-letter queue": dead_letter_errors counts dead letters
 * that could not be written; the stream goes on. The --dlq-file is already at
 * the daemon's file size limit (RLIMIT_FSIZE: a full disk), so every append
 * fails. */
TEST(promises_dead_letter_write_failure_counted_stream_goes_on)
{
    char dir[64], dlq[128], lines[128];
    tower_tmp_dir(dir, sizeof dir, "rc-prom-");
    snprintf(dlq, sizeof dlq, "%s/dlq.jsonl", dir);
    snprintf(lines, sizeof lines, "%s/lines.tsv", dir);
    FILE *f = fopen(dlq, "w");
    ASSERT(f != NULL);
    for (int i = 0; i < DLQ_LIMIT / 64; i++)
        fprintf(f, "{\"pad\":\"%053d\"}\n", i); /* 64 bytes a line */
    ASSERT_EQ(fclose(f), 0);
    struct stat sb;
    ASSERT_EQ(stat(dlq, &sb), 0);
    ASSERT_EQ(sb.st_size, DLQ_LIMIT);

    e2e_daemon d;
    const char *extra[] = {"--dlq-file", dlq, NULL};
    e2e_opts o = {.extra = extra, .fsize_limit = DLQ_LIMIT};
    e2e_start_opts(&d, &o);
    write_lines(lines, 0, 5, 3);
    e2e_kcat(&d, lines);
    write_lines(lines, 100, 5, 2);
    e2e_kcat(&d, lines);
    json_t *st = wait_accounted(d.sock, 15);
    ASSERT_EQ(e2e_int(st, "events.applied"), 10);
    ASSERT_EQ(e2e_int(st, "events.invalid"), 5);
    ASSERT_EQ(e2e_int(st, "kafka.dead_letter_errors"), 5);
    ASSERT_EQ(e2e_int(st, "kafka.dead_letters"), 0);
    json_decref(st);
    /* the stream goes on after the failures */
    write_lines(lines, 200, 5, 1);
    e2e_kcat(&d, lines);
    st = wait_accounted(d.sock, 21);
    ASSERT_EQ(e2e_int(st, "events.applied"), 15);
    ASSERT_EQ(e2e_int(st, "kafka.dead_letter_errors"), 6);
    ASSERT_EQ(e2e_int(st, "kafka.dead_letters"), 0);
    json_decref(st);
    json_t *h = e2e_request(d.sock, "{\"op\":\"health\"}");
    ASSERT(is_ok(h));
    json_decref(h);
    ASSERT_EQ(stat(dlq, &sb), 0);
    ASSERT_EQ(sb.st_size, DLQ_LIMIT);
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s %s", d.dir, dir);
}

/* ---- 7. retrain_* and busy (protocol handler) ------------------------------- */

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
static long vm_size_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    ASSERT(f != NULL);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}
#endif

/* PROTOCOL.md retrain_model / reload_model error codes: retrain_off
 * (tower.retrain_interval_s = 0), retrain_skipped (no model served; too few
 * examples), retrain_failed (training failed: here out of memory under an
 * address-space limit), busy (shutting down: a retrain or a load is refused).
 * A model that cannot be saved is still served ("saved":false). */
TEST(promises_retrain_and_busy_codes)
{
    char dir[64], small[128], big[160], data[128], blocker[192], line[512];
    tower_tmp_dir(dir, sizeof dir, "rc-prom-");
    snprintf(small, sizeof small, "%s/small.tower", dir);
    snprintf(big, sizeof big, "%s/big.tower", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    ASSERT_EQ(mkdir(data, 0700), 0);
    tower_write_model(small, 16, 3);

    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    rc_engine *e = offline(&c);
    rc_api a;
    api_init(&a, e);
    expect_error(&a, "{\"op\":\"retrain_model\"}", "retrain_off", "tower.retrain_interval_s = 0");
    rc_engine_destroy(e);

    c.history = 64;
    c.seed = 7;
    c.tower_retrain_interval_s = 3600;
    c.tower_replay_clicks = 1000;
    c.tower_retrain_min_examples = 200;
    c.tower_retrain_epochs = 1;
    snprintf(c.data_dir, sizeof c.data_dir, "%s", data);
    snprintf(c.tower_model_dir, sizeof c.tower_model_dir, "%s", dir); /* reload_model reads here */
    e = offline(&c);
    api_init(&a, e);
    expect_error(&a, "{\"op\":\"retrain_model\"}", "retrain_skipped", "no tower model served");
    snprintf(line, sizeof line, "{\"op\":\"reload_model\",\"path\":\"%s\"}", small);
    json_t *r = api(&a, line);
    ASSERT(is_ok(r));
    json_decref(r);
    expect_error(&a, "{\"op\":\"retrain_model\"}", "retrain_skipped",
                 "fewer than tower.retrain_min_examples = 200");
    for (uint32_t j = 0; j < 600; j++) {
        int len = tower_event_line(line, sizeof line, j, 10, 0, NULL, NULL);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)len), RC_EV_OK);
    }
    rc_engine_sync(e);

    /* tower.retrained cannot be written (a directory is in the way): the
     * retrained model serves anyway, unsaved. */
    snprintf(blocker, sizeof blocker, "%s/tower.retrained", data);
    ASSERT_EQ(mkdir(blocker, 0700), 0);
    r = api(&a, "{\"op\":\"retrain_model\"}");
    if (!is_ok(r))
        RC__FAIL("retrain with an unwritable file: %s %s", err_code(r), err_msg(r));
    ASSERT(json_is_false(json_object_get(r, "saved")));
    json_decref(r);

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    /* retrain_failed: a big model (32 MB of id embeddings) served, then an
     * address-space limit 16 MB above what the process uses: the retrain
     * cannot allocate its model and fails; the served model stays. (ASan's
     * allocator reserves its address space at start, hence not there.) */
    char err[512];
    rc_tower_config tc = tower_small_cfg(16);
    tc.id_buckets = 1u << 19;
    rc_tower_model *m = NULL;
    ASSERT_EQ(rc_tower_create(&tc, 5, &m, err, sizeof err), 0);
    if (rc_tower_save(m, big, err, sizeof err))
        RC__FAIL("save: %s", err);
    rc_tower_destroy(m);
    snprintf(line, sizeof line, "{\"op\":\"reload_model\",\"path\":\"%s\"}", big);
    r = api(&a, line);
    ASSERT(is_ok(r));
    json_decref(r);
    struct rlimit old, lim;
    ASSERT_EQ(getrlimit(RLIMIT_AS, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)(vm_size_kb() + (16 << 10)) * 1024;
    ASSERT_EQ(setrlimit(RLIMIT_AS, &lim), 0);
    r = api(&a, "{\"op\":\"retrain_model\"}");
    ASSERT_EQ(setrlimit(RLIMIT_AS, &old), 0);
    if (is_ok(r) || strcmp(err_code(r), "retrain_failed") != 0)
        RC__FAIL("retrain under a memory limit: %s %s", err_code(r), err_msg(r));
    json_decref(r);
    rc_engine_tower_info ti;
    rc_engine_tower_info_get(e, &ti);
    ASSERT_STREQ(ti.path, big); /* the served model stays */
#endif

    /* shutting down (what SIGTERM does first): busy */
    rc_engine_tower_cancel(e);
    expect_error(&a, "{\"op\":\"retrain_model\"}", "busy", "shutting down");
    snprintf(line, sizeof line, "{\"op\":\"reload_model\",\"path\":\"%s\"}", small);
    expect_error(&a, line, "busy", "shutting down");
    rc_engine_destroy(e);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* PROTOCOL.md user / health: the user op lists the clicks the session store
 * holds, oldest first, at most sessions.history; an unknown user is
 * unknown_user. health says not_ready "shutting down" once stopping. */
TEST(promises_user_op_and_health_shutting_down)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.history = 5;
    c.window = 5;
    c.recall_window = 5;
    rc_engine *e = offline(&c);
    char item[16];
    for (int i = 0; i < 8; i++) {
        snprintf(item, sizeof item, "i%d", i);
        e2e_engine_click(e, "u1", item, "c0", "k0", 1700000000000LL + i * 1000);
    }
    rc_api a;
    api_init(&a, e);
    json_t *r = api(&a, "{\"op\":\"user\",\"user_id\":\"u1\"}");
    ASSERT(is_ok(r));
    json_t *clicks = json_object_get(r, "clicks");
    ASSERT_EQ(json_array_size(clicks), 5);
    for (size_t i = 0; i < 5; i++) {
        snprintf(item, sizeof item, "i%zu", i + 3);
        json_t *ck = json_array_get(clicks, i);
        ASSERT_STREQ(json_string_value(json_object_get(ck, "item_id")), item);
        ASSERT_EQ(json_integer_value(json_object_get(ck, "ts")),
                  1700000000000LL + (long long)(i + 3) * 1000);
        ASSERT_STREQ(json_string_value(json_object_get(ck, "city")), "c0");
        ASSERT_STREQ(json_string_value(json_object_get(ck, "cate")), "k0");
    }
    json_decref(r);
    expect_error(&a, "{\"op\":\"user\",\"user_id\":\"nobody\"}", "unknown_user", "nobody");
    r = api(&a, "{\"op\":\"health\"}");
    ASSERT(is_ok(r));
    ASSERT_STREQ(json_string_value(json_object_get(r, "status")), "ready");
    json_decref(r);
    atomic_store(&a.stopping, 1);
    expect_error(&a, "{\"op\":\"health\"}", "not_ready", "shutting down");
    rc_engine_destroy(e);
}
