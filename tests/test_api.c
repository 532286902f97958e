/* api: the request handler (rc_api_handle, what the socket's worker threads
 * run) called directly on an offline engine: the forms and limits of ids,
 * every recall / similar / reload_model option refused with `bad_request`
 * naming it, batch replies, `no_model`, `load_failed`, the stats objects and
 * the two callbacks of rc_api, a reply over its buffer's limit, and the JSON
 * errors, as docs/PROTOCOL.md documents them.
 *
 * Already tested elsewhere and not repeated: the error line keeps the
 * connection (test_e2e.c), recall scope, exact and the batch limit, the user
 * op, retrain codes (test_promises.c), health states and latency histograms
 * (test_metrics.c), two-tower answers (test_tower_serve.c). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"
#include "recalld/api.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "test.h"

#define T0 1700000000000LL

/* ---- helpers ------------------------------------------------------------- */

static int is_ok(json_t *r) { return json_is_true(json_object_get(r, "ok")); }

static const char *err_field(json_t *r, const char *f)
{
    const char *v = json_string_value(json_object_get(json_object_get(r, "error"), f));
    return v ? v : "(none)";
}

/* req must fail with code; the message must contain in_msg (NULL: any). */
static void expect_error(rc_api *a, const char *req, const char *code, const char *in_msg)
{
    json_t *r = e2e_api(a, req);
    if (is_ok(r) || strcmp(err_field(r, "code"), code) != 0 ||
        (in_msg && !strstr(err_field(r, "message"), in_msg)))
        RC__FAIL("%.200s -> code %s message \"%s\" (want %s, \"%s\")", req, err_field(r, "code"),
                 err_field(r, "message"), code, in_msg ? in_msg : "");
    json_decref(r);
}

/* req must succeed; the reply is returned (caller decrefs). */
static json_t *expect_ok(rc_api *a, const char *req)
{
    json_t *r = e2e_api(a, req);
    if (!is_ok(r))
        RC__FAIL("%.200s -> %s: %s", req, err_field(r, "code"), err_field(r, "message"));
    return r;
}

/* Item ids of a reply's "items", comma-joined into out. */
static void item_list(json_t *r, char *out, size_t cap)
{
    size_t i, at = 0;
    json_t *it;
    out[0] = '\0';
    json_array_foreach(json_object_get(r, "items"), i, it)
        at += (size_t)snprintf(out + at, at < cap ? cap - at : 0, "%s%s", i ? "," : "",
                               json_string_value(json_object_get(it, "item_id")));
    ASSERT_LT(at, cap);
}

static int has_item(json_t *r, const char *id)
{
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(r, "items"), i, it)
        if (strcmp(json_string_value(json_object_get(it, "item_id")), id) == 0)
            return 1;
    return 0;
}

/* 30 items "0".."29" (integer ids in the events) over cities 0/1, clicked by
 * users "0".."9" and by user 7 (items 0, 2, 4, integer id), k_max 100. */
static rc_engine *api_engine(rc_api *a)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.seed = 3;
    c.k_max = 100;
    rc_engine *e = e2e_engine_offline(&c);
    char line[256];
    int64_t ts = T0;
    for (int i = 0; i < 30; i++)
        for (int r = 0; r < 3; r++) {
            int n = snprintf(line, sizeof line,
                             "{\"user_id\":%d,\"item_id\":%d,\"city_id\":%d,"
                             "\"cate_id\":%d,\"ts\":%lld}",
                             (i + r) % 10, i, i % 2, i % 3, (long long)(ts += 1000));
            ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
        }
    for (int i = 0; i <= 4; i += 2) {
        int n = snprintf(line, sizeof line,
                         "{\"user_id\":77,\"item_id\":%d,\"city_id\":0,"
                         "\"cate_id\":0,\"ts\":%lld}",
                         i, (long long)(ts += 1000));
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
    }
    rc_engine_sync(e);
    rc_api_init(a);
    a->engine = e;
    atomic_store(&a->model_ready, 1);
    atomic_store(&a->assigned, 1);
    return e;
}

/* ---- ids ------------------------------------------------------------------ */

/* PROTOCOL.md "Identifiers": a string of 1..128 bytes (64 for city) without
 * NUL, or a non-negative integer meaning its decimal text: 77 and "77" are
 * one user, 3 and "3" one item. Anything else is bad_request naming the
 * field; a well-formed id nobody clicked is unknown_user / unknown_item. */
TEST(api_ids_integer_and_string_forms_and_limits)
{
    static rc_api a;
    rc_engine *e = api_engine(&a);
    char s1[512], s2[512], req[1024];
    json_t *r1 = expect_ok(&a, "{\"op\":\"user\",\"user_id\":77}");
    json_t *r2 = expect_ok(&a, "{\"op\":\"user\",\"user_id\":\"77\"}");
    ASSERT_EQ(json_array_size(json_object_get(r1, "clicks")), 3);
    ASSERT(json_equal(r1, r2));
    json_decref(r1);
    json_decref(r2);
    r1 = expect_ok(&a, "{\"op\":\"recall\",\"user_id\":77,\"k\":8}");
    r2 = expect_ok(&a, "{\"op\":\"recall\",\"user_id\":\"77\",\"k\":8}");
    ASSERT(!json_object_get(r1, "fallback"));
    item_list(r1, s1, sizeof s1);
    item_list(r2, s2, sizeof s2);
    ASSERT_STREQ(s1, s2);
    json_decref(r1);
    json_decref(r2);
    r1 = expect_ok(&a, "{\"op\":\"similar\",\"item_id\":3,\"k\":5}");
    r2 = expect_ok(&a, "{\"op\":\"similar\",\"item_id\":\"3\",\"k\":5}");
    item_list(r1, s1, sizeof s1);
    item_list(r2, s2, sizeof s2);
    ASSERT_STREQ(s1, s2);
    json_decref(r1);
    json_decref(r2);

    char id128[129], id129[130], city64[65], city65[66];
    memset(id128, 'x', 128);
    id128[128] = '\0';
    memset(id129, 'x', 129);
    id129[129] = '\0';
    memset(city64, 'c', 64);
    city64[64] = '\0';
    memset(city65, 'c', 65);
    city65[65] = '\0';
    snprintf(req, sizeof req, "{\"op\":\"user\",\"user_id\":\"%s\"}", id128);
    expect_error(&a, req, "unknown_user", NULL);
    snprintf(req, sizeof req, "{\"op\":\"user\",\"user_id\":\"%s\"}", id129);
    expect_error(&a, req, "bad_request", "user_id");
    snprintf(req, sizeof req, "{\"op\":\"similar\",\"item_id\":\"%s\"}", id128);
    expect_error(&a, req, "unknown_item", NULL);
    snprintf(req, sizeof req, "{\"op\":\"similar\",\"item_id\":\"%s\"}", id129);
    expect_error(&a, req, "bad_request", "item_id");
    snprintf(req, sizeof req, "{\"op\":\"recall\",\"user_id\":77,\"city\":\"%s\"}", city64);
    r1 = expect_ok(&a, req); /* a valid city without items: nothing */
    ASSERT_EQ(json_array_size(json_object_get(r1, "items")), 0);
    json_decref(r1);
    snprintf(req, sizeof req, "{\"op\":\"recall\",\"user_id\":77,\"city\":\"%s\"}", city65);
    expect_error(&a, req, "bad_request", "city");
    const char *bad_user[] = {"\"\"", "-1", "1.5", "true", "[77]", "{}", "null"};
    for (size_t i = 0; i < RC_ARRAY_LEN(bad_user); i++) {
        snprintf(req, sizeof req, "{\"op\":\"recall\",\"user_id\":%s}", bad_user[i]);
        expect_error(&a, req, "bad_request", "user_id");
        snprintf(req, sizeof req, "{\"op\":\"user\",\"user_id\":%s}", bad_user[i]);
        expect_error(&a, req, "bad_request", "user_id");
        snprintf(req, sizeof req, "{\"op\":\"similar\",\"item_id\":%s}", bad_user[i]);
        expect_error(&a, req, "bad_request", "item_id");
    }
    expect_error(&a, "{\"op\":\"similar\"}", "bad_request", "item_id");
    rc_engine_destroy(e);
}

/* ---- options ------------------------------------------------------------- */

/* PROTOCOL.md recall / similar / reload_model fields: a value of the wrong
 * type or out of range is bad_request and the message names the field; the
 * documented edges are accepted. */
TEST(api_bad_options_name_the_field)
{
    static rc_api a;
    rc_engine *e = api_engine(&a);
    char many[1024], req[4096];
    size_t at = 0;
    for (int i = 0; i < 65; i++)
        at += (size_t)snprintf(many + at, sizeof many - at, "%s\"k%d\"", i ? "," : "", i);
    const struct {
        const char *opts; /* after {"op":"recall","user_id":77, */
        const char *field;
    } bad[] = {
        {"\"k\":0", "k"},
        {"\"k\":101", "k"},
        {"\"k\":\"5\"", "k"},
        {"\"k\":2.5", "k"},
        {"\"categories\":\"k0\"", "categories"},
        {"\"categories\":[{}]", "categories[0]"},
        {"\"categories\":[\"k0\",-1]", "categories[1]"},
        {"\"half_life_ms\":-1", "half_life_ms"},
        {"\"half_life_ms\":\"1h\"", "half_life_ms"},
        {"\"exact\":1", "exact"},
        {"\"exact\":\"true\"", "exact"},
        {"\"mode\":\"bogus\"", "mode"},
        {"\"mode\":3", "mode"},
        {"\"now_ms\":0", "now_ms"},
        {"\"now_ms\":-5", "now_ms"},
        {"\"now_ms\":\"now\"", "now_ms"},
        {"\"city\":[\"0\"]", "city"},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(bad); i++) {
        snprintf(req, sizeof req, "{\"op\":\"recall\",\"user_id\":77,%s}", bad[i].opts);
        expect_error(&a, req, "bad_request", bad[i].field);
        /* the batch form parses the same options */
        snprintf(req, sizeof req, "{\"op\":\"recall\",\"users\":[77],%s}", bad[i].opts);
        expect_error(&a, req, "bad_request", bad[i].field);
    }
    snprintf(req, sizeof req, "{\"op\":\"recall\",\"user_id\":77,\"categories\":[%s]}", many);
    expect_error(&a, req, "bad_request", "categories");
    expect_error(&a, "{\"op\":\"recall\",\"users\":[]}", "bad_request", "users");
    expect_error(&a, "{\"op\":\"recall\",\"users\":\"77\"}", "bad_request", "users");
    expect_error(&a, "{\"op\":\"recall\",\"users\":[77,1.5]}", "bad_request", "users[1]");
    expect_error(&a, "{\"op\":\"recall\"}", "bad_request", "user_id");
    expect_error(&a, "{\"op\":\"similar\",\"item_id\":3,\"k\":0}", "bad_request", "k");
    expect_error(&a, "{\"op\":\"similar\",\"item_id\":3,\"k\":101}", "bad_request", "k");
    expect_error(&a, "{\"op\":\"similar\",\"item_id\":3,\"mode\":\"multi_category\"}",
                 "bad_request", "mode");
    expect_error(&a, "{\"op\":\"reload_model\",\"path\":3}", "bad_request", "path");
    expect_error(&a, "{\"op\":\"reload_model\",\"path\":\"\"}", "bad_request", "path");
    char longpath[RC_CONF_STR + 1];
    memset(longpath, 'p', RC_CONF_STR);
    longpath[RC_CONF_STR] = '\0';
    snprintf(req, sizeof req, "{\"op\":\"reload_model\",\"path\":\"/%s\"}", longpath);
    expect_error(&a, req, "bad_request", "path");

    /* the edges that are allowed */
    const char *good[] = {"\"k\":1",
                          "\"k\":100",
                          "\"half_life_ms\":0",
                          "\"exact\":false",
                          "\"mode\":\"avg\"",
                          "\"mode\":\"multi_category\"",
                          "\"categories\":[]",
                          "\"categories\":[0,\"1\"]",
                          "\"city\":\"*\"",
                          "\"city\":0",
                          "\"now_ms\":1"};
    for (size_t i = 0; i < RC_ARRAY_LEN(good); i++) {
        snprintf(req, sizeof req, "{\"op\":\"recall\",\"user_id\":77,%s}", good[i]);
        json_decref(expect_ok(&a, req));
    }
    json_t *r = expect_ok(&a, "{\"op\":\"recall\",\"user_id\":77,\"k\":100,\"city\":\"*\"}");
    ASSERT_EQ(json_array_size(json_object_get(r, "items")), 27); /* 30 items, 3 clicked */
    json_decref(r);
    r = expect_ok(&a, "{\"op\":\"similar\",\"item_id\":3}"); /* k defaults to 10 */
    ASSERT_EQ(json_array_size(json_object_get(r, "items")), 10);
    ASSERT(!has_item(r, "3")); /* not itself */
    json_decref(r);
    rc_engine_destroy(e);
}

/* PROTOCOL.md recall, batch form: one entry per user in request order, each
 * with its user_id as text and the single form's fields (fallback only for
 * the user without clicks). */
TEST(api_batch_results_in_request_order)
{
    static rc_api a;
    rc_engine *e = api_engine(&a);
    json_t *r = expect_ok(&a, "{\"op\":\"recall\",\"users\":[\"77\",\"nobody\",3,77],\"k\":4}");
    json_t *res = json_object_get(r, "results");
    ASSERT_EQ(json_array_size(res), 4);
    const char *want[] = {"77", "nobody", "3", "77"};
    for (size_t i = 0; i < 4; i++) {
        json_t *x = json_array_get(res, i);
        ASSERT_STREQ(json_string_value(json_object_get(x, "user_id")), want[i]);
        ASSERT_EQ(json_array_size(json_object_get(x, "items")), 4);
        ASSERT_EQ(json_object_get(x, "fallback") != NULL, i == 1);
    }
    ASSERT(json_equal(json_object_get(json_array_get(res, 0), "items"),
                      json_object_get(json_array_get(res, 3), "items")));
    json_t *one = expect_ok(&a, "{\"op\":\"recall\",\"user_id\":\"nobody\",\"k\":4}");
    ASSERT_STREQ(json_string_value(json_object_get(one, "fallback")), "popular");
    ASSERT(json_equal(json_object_get(one, "items"),
                      json_object_get(json_array_get(res, 1), "items")));
    json_decref(one);
    json_decref(r);
    rc_engine_destroy(e);
}

/* ---- two-tower model codes ---------------------------------------------- */

/* PROTOCOL.md: "mode":"two_tower" without a served model is no_model (recall,
 * batch recall, similar), counted in the two_tower stats; reload_model of a
 * path outside tower.model_dir is not_allowed, of a missing tower.model
 * load_failed, and nothing is served. */
TEST(api_two_tower_without_model)
{
    static rc_api a;
    rc_engine *e = api_engine(&a);
    expect_error(&a, "{\"op\":\"recall\",\"user_id\":77,\"mode\":\"two_tower\"}", "no_model",
                 "no tower model");
    expect_error(&a, "{\"op\":\"recall\",\"users\":[77,3],\"mode\":\"two_tower\"}", "no_model",
                 NULL);
    expect_error(&a, "{\"op\":\"similar\",\"item_id\":3,\"mode\":\"two_tower\"}", "no_model", NULL);
    /* a path outside tower.model_dir: refused before any file access, with
     * a message that says nothing of the file */
    expect_error(&a, "{\"op\":\"reload_model\",\"path\":\"/nonexistent/m.tower\"}", "not_allowed",
                 "not an allowed model");
    expect_error(&a, "{\"op\":\"reload_model\"}", "load_failed", NULL); /* no tower.model */
    json_t *st = expect_ok(&a, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(st, "two_tower.requests"), 2); /* the recalls */
    ASSERT_EQ(e2e_int(st, "two_tower.errors"), 2);
    ASSERT(json_is_false(json_object_get(json_object_get(st, "tower"), "loaded")));
    json_decref(st);
    rc_engine_destroy(e);
}

/* ---- stats, health callbacks, limits, JSON ---------------------------------- */

static void kafka_stats(void *arg, rc_buf *out)
{
    (void)arg;
    rc_buf_puts(out, "\"topic\":\"clicks\",\"lag\":12");
}

static int nwarn;
static void warnings(void *arg, rc_buf *out)
{
    (void)arg;
    if (nwarn)
        rc_buf_puts(out, "\"events lost to retention\"");
}

/* PROTOCOL.md stats and health: every documented object is there; kafka only
 * from the kafka_stats callback; server.requests / errors count what the
 * handler answered; health adds "warnings" only when the callback has some
 * and stays ready. */
TEST(api_stats_objects_and_callbacks)
{
    static rc_api a;
    rc_engine *e = api_engine(&a);
    const char *objects[] = {"events",       "users",  "index",      "training",
                             "freshness_ms", "memory", "checkpoint", "tower",
                             "profiles",     "server", "two_tower"};
    const char *events[] = {"consumed",   "applied",   "invalid", "invalid_by_reason", "ignored",
                            "duplicates", "reordered", "late",    "rejected_capacity", "max_ts"};
    expect_error(&a, "{\"op\":\"nope\"}", "unknown_op", "nope");
    json_t *st = expect_ok(&a, "{\"op\":\"stats\"}");
    for (size_t i = 0; i < RC_ARRAY_LEN(objects); i++)
        if (!json_is_object(json_object_get(st, objects[i])))
            RC__FAIL("stats has no object \"%s\"", objects[i]);
    for (size_t i = 0; i < RC_ARRAY_LEN(events); i++)
        if (!json_object_get(json_object_get(st, "events"), events[i]))
            RC__FAIL("stats.events has no \"%s\"", events[i]);
    ASSERT_EQ(e2e_int(st, "items"), 30);
    ASSERT_EQ(e2e_int(st, "cities"), 2);
    ASSERT_EQ(e2e_int(st, "categories"), 3);
    ASSERT_EQ(e2e_int(st, "events.applied"), 93);
    ASSERT_EQ(e2e_int(st, "server.requests"), 2); /* unknown_op, this one */
    ASSERT_EQ(e2e_int(st, "server.errors"), 1);
    ASSERT(!json_object_get(st, "kafka"));
    json_decref(st);
    a.kafka_stats = kafka_stats;
    st = expect_ok(&a, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(st, "kafka.lag"), 12);
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(st, "kafka"), "topic")),
                 "clicks");
    json_decref(st);

    a.warnings = warnings;
    nwarn = 0;
    json_t *h = expect_ok(&a, "{\"op\":\"health\"}");
    ASSERT_STREQ(json_string_value(json_object_get(h, "status")), "ready");
    ASSERT(!json_object_get(h, "warnings"));
    ASSERT_EQ(e2e_int(h, "items"), 30);
    ASSERT_EQ(e2e_int(h, "applied"), 93);
    json_decref(h);
    nwarn = 1;
    h = expect_ok(&a, "{\"op\":\"health\"}");
    ASSERT_STREQ(json_string_value(json_object_get(h, "status")), "ready");
    json_t *w = json_object_get(h, "warnings");
    ASSERT_EQ(json_array_size(w), 1);
    ASSERT_STREQ(json_string_value(json_array_get(w, 0)), "events lost to retention");
    json_decref(h);
    rc_engine_destroy(e);
}

static long long stage_val(json_t *st, const char *what, const char *stage)
{
    json_t *v = json_object_get(json_object_get(json_object_get(st, "recall_stages"), what), stage);
    if (!json_is_number(v))
        RC__FAIL("stats.recall_stages.%s.%s missing", what, stage);
    return (long long)json_number_value(v);
}

/* PROTOCOL.md "Recall stages": every recall (single, batch, multi_category,
 * fallback) is observed once in every stage, other ops are not, and the
 * stages are disjoint parts of total. Outside the socket server (handler
 * called directly) queue_wait is 0. */
TEST(api_recall_stages_recorded)
{
    static rc_api a;
    rc_engine *e = api_engine(&a);
    static const char *stages[] = {"queue_wait", "parse", "query",  "index_lock",
                                   "coarse",     "scan",  "rerank", "cooc",
                                   "fallback",   "reply", "total"};
    json_t *st = expect_ok(&a, "{\"op\":\"stats\"}");
    ASSERT_EQ(stage_val(st, "count", "off_cpu"), 0);
    for (size_t i = 0; i < RC_ARRAY_LEN(stages); i++)
        ASSERT_EQ(stage_val(st, "count", stages[i]), 0);
    json_decref(st);
    const char *reqs[] = {
        "{\"op\":\"recall\",\"user_id\":77,\"k\":5}",
        "{\"op\":\"recall\",\"user_id\":77,\"k\":5,\"city\":\"*\"}",
        "{\"op\":\"recall\",\"user_id\":3,\"k\":5,\"mode\":\"multi_category\"}",
        "{\"op\":\"recall\",\"user_id\":\"nobody\",\"k\":5}", /* popular fallback */
        "{\"op\":\"recall\",\"users\":[1,2,77],\"k\":5}",
    };
    int rounds = 20;
    for (int r = 0; r < rounds; r++)
        for (size_t i = 0; i < RC_ARRAY_LEN(reqs); i++)
            json_decref(expect_ok(&a, reqs[i]));
    json_decref(expect_ok(&a, "{\"op\":\"similar\",\"item_id\":3}"));
    expect_error(&a, "{\"op\":\"recall\",\"user_id\":77,\"k\":0}", "bad_request", "k");
    st = expect_ok(&a, "{\"op\":\"stats\"}");
    long long n = rounds * (long long)RC_ARRAY_LEN(reqs), sum = 0;
    for (size_t i = 0; i < RC_ARRAY_LEN(stages); i++)
        if (stage_val(st, "count", stages[i]) != n)
            RC__FAIL("stage %s observed %lld times, want %lld", stages[i],
                     stage_val(st, "count", stages[i]), n);
    for (size_t i = 0; i + 1 < RC_ARRAY_LEN(stages); i++)
        sum += stage_val(st, "sum_us", stages[i]);
    ASSERT_LE(sum, stage_val(st, "sum_us", "total"));
    ASSERT_EQ(stage_val(st, "sum_us", "queue_wait"), 0);
    /* off_cpu: observed with every recall, a part of the run it overlaps */
    ASSERT_EQ(stage_val(st, "count", "off_cpu"), n);
    ASSERT_LE(stage_val(st, "sum_us", "off_cpu"), stage_val(st, "sum_us", "total"));
    ASSERT(stage_val(st, "p99_us", "total") >= stage_val(st, "p50_us", "total"));
    /* bucket counts add up to the count */
    json_t *bk =
        json_object_get(json_object_get(json_object_get(st, "recall_stages"), "buckets"), "total");
    size_t j;
    json_t *x;
    long long nb = 0;
    json_array_foreach(bk, j, x)
        nb += json_integer_value(x);
    ASSERT_EQ(nb, n);
    /* "work": the index work summed over requests. One recall over every
     * city of this small (all flat) index searches every partition and
     * scores every indexed row, no IVF list. */
    json_t *w0 = json_incref(json_object_get(json_object_get(st, "recall_stages"), "work"));
    long long size = json_integer_value(json_object_get(json_object_get(st, "index"), "size"));
    long long parts =
        json_integer_value(json_object_get(json_object_get(st, "index"), "partitions"));
    ASSERT(size > 0 && parts > 0);
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(st, "index"), "ivf_partitions")),
              0);
    json_decref(st);
    json_decref(expect_ok(&a, "{\"op\":\"recall\",\"user_id\":77,\"k\":5,\"city\":\"*\"}"));
    st = expect_ok(&a, "{\"op\":\"stats\"}");
    json_t *w1 = json_object_get(json_object_get(st, "recall_stages"), "work");
#define WORK(k)                                                                                    \
    (json_integer_value(json_object_get(w1, k)) - json_integer_value(json_object_get(w0, k)))
    ASSERT_EQ(WORK("rows"), size);
    ASSERT_EQ(WORK("parts"), parts);
    ASSERT_EQ(WORK("lists"), 0);
#undef WORK
    json_decref(w0);
    json_decref(st);
    rc_engine_destroy(e);
}

/* PROTOCOL.md "reply_too_large": a reply larger than the worker's buffer
 * limit (socket.max_outbuf in the server) becomes a `reply_too_large` error
 * line, not a truncated reply; the error is counted. */
TEST(api_reply_over_limit_is_reply_too_large)
{
    static rc_api a;
    rc_engine *e = api_engine(&a);
    rc_buf r;
    const char *req = "{\"op\":\"stats\"}";
    rc_buf_init(&r, 256); /* stats is several KiB */
    rc_api_handle(&a, req, strlen(req), &r);
    ASSERT(!r.overflow);
    json_t *j = json_loads(r.data, 0, NULL);
    ASSERT(j != NULL);
    ASSERT(!is_ok(j));
    ASSERT_STREQ(err_field(j, "code"), "reply_too_large");
    json_decref(j);
    ASSERT_EQ(atomic_load(&a.errors), 1);
    rc_buf_free(&r);
    rc_buf_init(&r, 1 << 20); /* the same request fits a normal buffer */
    rc_api_handle(&a, req, strlen(req), &r);
    ASSERT(strncmp(r.data, "{\"ok\":true", 10) == 0);
    rc_buf_free(&r);
    rc_engine_destroy(e);
}

/* PROTOCOL.md "Error codes": bad_json gives line:column and refuses duplicate
 * keys; a JSON value that is not an object, or an op that is not a string, is
 * bad_request; an unknown op is unknown_op naming it. */
TEST(api_json_and_op_errors)
{
    static rc_api a;
    rc_engine *e = api_engine(&a);
    expect_error(&a, "{\"op\":\"stats\",\n \"op\":\"health\"}", "bad_json", "2:");
    expect_error(&a, "{\"op\":\"recall\",\"user_id\":77,\"k\":5,\"k\":6}", "bad_json", NULL);
    expect_error(&a, "{\"op\":\"stats\"", "bad_json", "1:");
    expect_error(&a, "[{\"op\":\"stats\"}]", "bad_request", "object");
    expect_error(&a, "{\"op\":7}", "bad_request", "op");
    expect_error(&a, "{\"op\":\"Stats\"}", "unknown_op", "Stats");
    expect_error(&a, "{\"op\":\"\"}", "unknown_op", NULL);
    json_decref(expect_ok(&a, " {\"op\":\"health\"} ")); /* white space around is fine */
    rc_engine_destroy(e);
}
