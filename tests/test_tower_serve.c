/* Two-tower serving: the profile store, the served user vector against the
 * offline builder, and the daemon's "mode":"two_tower", cold start, reloads
 * (socket op and SIGHUP) and concurrent recall + reload. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/clicklog.h"
#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/profile.h"
#include "recalld/tower.h"
#include "recalld/ufeat.h"
#include "test.h"
#include "tower_stream.h"

/* ---- helpers ------------------------------------------------------------ */

static rc_engine *offline_engine(uint32_t dim)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = dim;
    c.history = 64; /* >= the model's max_clicks: the served input is not cut */
    c.ivf_min = 4096;
    c.seed = 7;
    return e2e_engine_offline(&c);
}

/* ---- (6) profile store -------------------------------------------------- */

/* Up to 3 tags live in the profile record, more in a heap array: lists moving
 * between the two keep their values, the bytes count only heap tags (and come
 * back when a user drops to 3 or fewer, or leaves), counters saturate. */
TEST(profile_tags_inline_and_heap)
{
    rc_profile *p = NULL;
    rc_profile_opts o = {.max_users = 4};
    rc_profile_rec r;
    rc_profile_stats st;
    char err[128];
    uint64_t five[] = {1, 2, 3, 4, 5}, three[] = {7, 8, 9}, one[] = {6};
    ASSERT_EQ(rc_profile_create(&o, &p, err, sizeof err), 0);
    ASSERT_EQ(rc_profile_note(p, "u", 1, 10, 0, NULL, 0, 1, 1), 0);
    rc_profile_stats_get(p, &st);
    size_t base = st.bytes;
    ASSERT_EQ(rc_profile_note(p, "u", 1, 11, 0, three, 3, 1, 0), 0);
    rc_profile_stats_get(p, &st);
    ASSERT_EQ(st.bytes, base); /* inline */
    ASSERT_EQ(st.with_tags, 1);
    ASSERT_EQ(rc_profile_note(p, "u", 1, 12, 0, five, 5, 1, 0), 0);
    rc_profile_stats_get(p, &st);
    ASSERT_EQ(st.bytes, base + 5 * sizeof(uint64_t)); /* heap */
    ASSERT_EQ(rc_profile_get(p, "u", 1, &r), 0);
    ASSERT_EQ(r.ntags, 5);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(r.tags[i], five[i]);
    ASSERT_EQ(rc_profile_note(p, "u", 1, 13, 0, one, 1, 1, 0), 0);
    rc_profile_stats_get(p, &st);
    ASSERT_EQ(st.bytes, base); /* back inline, the heap array freed */
    ASSERT_EQ(st.with_tags, 1);
    ASSERT_EQ(rc_profile_get(p, "u", 1, &r), 0);
    ASSERT_EQ(r.ntags, 1);
    ASSERT_EQ(r.tags[0], 6);
    ASSERT_EQ(r.clicks, 4);
    ASSERT_EQ(rc_profile_note(p, "u", 1, 14, 0, five, 5, UINT32_MAX, UINT32_MAX), 0);
    ASSERT_EQ(rc_profile_get(p, "u", 1, &r), 0);
    ASSERT_EQ(r.clicks, UINT32_MAX); /* saturated, not wrapped */
    ASSERT_EQ(r.sessions, UINT32_MAX);
    ASSERT_EQ(r.ntags, 5);
    ASSERT_EQ(rc_profile_drop(p, "u", 1), 0);
    rc_profile_stats_get(p, &st);
    ASSERT_EQ(st.bytes, base);
    ASSERT_EQ(st.with_tags, 0);
    rc_profile_destroy(p);
}

/* What rc_profile_save writes, rc_profile_load gives back: device, tags
 * (inline and heap), counters, newest time of every user; a smaller bound
 * keeps the most recently noted; a truncated blob is refused. */
TEST(profile_save_load_round_trip)
{
    rc_profile *p = NULL, *q = NULL;
    rc_profile_opts o = {.max_users = 100};
    char err[128], id[48];
    uint64_t five[] = {11, 12, 13, 14, 15}, two[] = {21, 22};
    ASSERT_EQ(rc_profile_create(&o, &p, err, sizeof err), 0);
    for (int u = 0; u < 10; u++) {
        snprintf(id, sizeof id, u == 7 ? "a-user-id-longer-than-the-inline-room-%d" : "u%d", u);
        ASSERT_EQ(rc_profile_note(p, id, strlen(id), 1000 + u, u % 3 ? 0xd0 + (uint64_t)u : 0,
                                  u % 2 ? five : two, u % 4 == 3 ? 0 : (u % 2 ? 5 : 2), 1 + u,
                                  u % 2),
                  0);
    }
    ASSERT_EQ(rc_profile_note(p, "u2", 2, 2000, 0, NULL, 0, 5, 1), 0); /* now the most recent */
    rc_buf b;
    rc_buf_init(&b, 0);
    ASSERT_EQ(rc_profile_save(p, &b), 0);
    ASSERT_EQ(rc_profile_create(&o, &q, err, sizeof err), 0);
    uint64_t users = 0;
    ASSERT_EQ(rc_profile_load(q, b.data, b.len, &users), 0);
    ASSERT_EQ(users, 10);
    rc_profile_stats s1, s2;
    rc_profile_stats_get(p, &s1);
    rc_profile_stats_get(q, &s2);
    ASSERT_EQ(s2.users, s1.users);
    ASSERT_EQ(s2.with_device, s1.with_device);
    ASSERT_EQ(s2.with_tags, s1.with_tags);
    for (int u = 0; u < 10; u++) {
        rc_profile_rec a, c;
        snprintf(id, sizeof id, u == 7 ? "a-user-id-longer-than-the-inline-room-%d" : "u%d", u);
        ASSERT_EQ(rc_profile_get(p, id, strlen(id), &a), 0);
        ASSERT_EQ(rc_profile_get(q, id, strlen(id), &c), 0);
        ASSERT_EQ(c.device_hash, a.device_hash);
        ASSERT_EQ(c.ntags, a.ntags);
        ASSERT_EQ(memcmp(c.tags, a.tags, a.ntags * sizeof *a.tags), 0);
        ASSERT_EQ(c.clicks, a.clicks);
        ASSERT_EQ(c.sessions, a.sessions);
        ASSERT_EQ(c.last_ts, a.last_ts);
    }
    rc_profile_destroy(q);
    /* saved in memory order (u0..u9), loaded by newest click (u2's 2000
     * last): a bound of 2 keeps u9 and u2 */
    o.max_users = 2;
    ASSERT_EQ(rc_profile_create(&o, &q, err, sizeof err), 0);
    ASSERT_EQ(rc_profile_load(q, b.data, b.len, NULL), 0);
    rc_profile_rec r;
    ASSERT_EQ(rc_profile_get(q, "u2", 2, &r), 0);
    ASSERT_EQ(r.clicks, 3 + 5);
    ASSERT_EQ(rc_profile_get(q, "u9", 2, &r), 0);
    ASSERT_EQ(rc_profile_get(q, "u8", 2, &r), RC_ENOENT);
    rc_profile_destroy(q);
    o.max_users = 100;
    for (size_t cut = 0; cut < b.len; cut += 5) { /* refused, and nobody added */
        ASSERT_EQ(rc_profile_create(&o, &q, err, sizeof err), 0);
        ASSERT_EQ(rc_profile_load(q, b.data, cut, NULL), RC_ECORRUPT);
        rc_profile_stats_get(q, &s2);
        ASSERT_EQ(s2.users, 0);
        rc_profile_destroy(q);
    }
    rc_buf_free(&b);
    rc_profile_destroy(p);
}

/* The prefetch is a hint: every step, for known users, unknown ones, an empty
 * store and a NULL store, reads within the store (ASan) and changes nothing a
 * later note or get sees. */
TEST(profile_prefetch_changes_nothing)
{
    rc_profile *p = NULL;
    rc_profile_opts o = {.max_users = 64};
    rc_profile_rec r;
    char err[128], u[16];
    ASSERT_EQ(rc_profile_create(&o, &p, err, sizeof err), 0);
    for (int step = -1; step < 4; step++)
        rc_profile_prefetch(p, rc_hash("nobody", 6), step); /* before any user: no buckets */
    rc_profile_prefetch(NULL, rc_hash("u", 1), 1);
    for (int i = 0; i < 100; i++) { /* 100 users in 64 slots: LRU links both ways */
        int n = snprintf(u, sizeof u, "u%d", i);
        for (int step = 0; step < 3; step++)
            rc_profile_prefetch(p, rc_hash(u, (size_t)n), step);
        ASSERT_EQ(rc_profile_note(p, u, (size_t)n, i, 0, NULL, 0, 1, 1), 0);
    }
    for (int i = 0; i < 100; i++) {
        int n = snprintf(u, sizeof u, "u%d", i);
        for (int step = 0; step < 3; step++)
            rc_profile_prefetch(p, rc_hash(u, (size_t)n), step);
        ASSERT_EQ(rc_profile_get(p, u, (size_t)n, &r), i < 36 ? RC_ENOENT : 0);
        if (i >= 36)
            ASSERT_EQ(r.clicks, 1);
    }
    rc_profile_destroy(p);
}

TEST(tower_serve_profile_store)
{
    rc_profile *p = NULL;
    rc_profile_opts o = {.max_users = 3, .ttl_ms = 1000};
    rc_profile_rec r;
    char err[128];
    uint64_t t1[] = {11, 12}, t2[] = {21};
    ASSERT_EQ(rc_profile_create(&o, &p, err, sizeof err), 0);
    ASSERT_EQ(rc_profile_get(p, "a", 1, &r), RC_ENOENT);
    ASSERT_EQ(rc_profile_note(p, "a", 1, 100, 5, t1, 2, 1, 1), 0);
    ASSERT_EQ(rc_profile_note(p, "a", 1, 110, 0, NULL, 0, 1, 0), 0); /* no device/tags: kept */
    ASSERT_EQ(rc_profile_get(p, "a", 1, &r), 0);
    ASSERT_EQ(r.device_hash, 5);
    ASSERT_EQ(r.ntags, 2);
    ASSERT_EQ(r.tags[1], 12);
    ASSERT_EQ(r.clicks, 2);
    ASSERT_EQ(r.sessions, 1);
    ASSERT_EQ(r.last_ts, 110);
    /* the latest non-empty device and tag list win, independently */
    ASSERT_EQ(rc_profile_note(p, "a", 1, 120, 9, NULL, 0, 1, 1), 0);
    ASSERT_EQ(rc_profile_note(p, "a", 1, 130, 0, t2, 1, 0, 0), 0);
    ASSERT_EQ(rc_profile_get(p, "a", 1, &r), 0);
    ASSERT_EQ(r.device_hash, 9);
    ASSERT_EQ(r.ntags, 1);
    ASSERT_EQ(r.tags[0], 21);
    ASSERT_EQ(r.clicks, 3);
    ASSERT_EQ(r.sessions, 2);
    /* more tags than the bound: the first RC_PROFILE_MAX_TAGS */
    uint64_t many[40];
    for (int i = 0; i < 40; i++)
        many[i] = 100 + (uint64_t)i;
    const char *longname = "a-user-name-longer-than-the-inline-key-of-24";
    ASSERT_EQ(rc_profile_note(p, longname, strlen(longname), 140, 0, many, 40, 1, 1), 0);
    ASSERT_EQ(rc_profile_get(p, longname, strlen(longname), &r), 0);
    ASSERT_EQ(r.ntags, RC_PROFILE_MAX_TAGS);
    ASSERT_EQ(r.tags[RC_PROFILE_MAX_TAGS - 1], 100 + RC_PROFILE_MAX_TAGS - 1);
    rc_profile_stats st;
    rc_profile_stats_get(p, &st);
    ASSERT_EQ(st.users, 2);
    ASSERT_EQ(st.with_device, 1);
    ASSERT_EQ(st.with_tags, 2);
    ASSERT_GT(st.bytes, 0);
    /* bound: a 4th user evicts the least recently noted one */
    ASSERT_EQ(rc_profile_note(p, "b", 1, 150, 0, NULL, 0, 1, 1), 0);
    ASSERT_EQ(rc_profile_note(p, "a", 1, 160, 0, NULL, 0, 1, 0), 0);
    ASSERT_EQ(rc_profile_note(p, longname, strlen(longname), 165, 0, NULL, 0, 1, 0), 0);
    ASSERT_EQ(rc_profile_note(p, "c", 1, 170, 0, NULL, 0, 1, 1), 0); /* evicts b */
    ASSERT_EQ(rc_profile_get(p, "b", 1, &r), RC_ENOENT);
    ASSERT_EQ(rc_profile_get(p, longname, strlen(longname), &r), 0);
    ASSERT_EQ(r.ntags, RC_PROFILE_MAX_TAGS); /* kept: that note had no tags */
    ASSERT_EQ(r.clicks, 2);
    rc_profile_stats_get(p, &st);
    ASSERT_EQ(st.users, 3);
    ASSERT_EQ(st.evicted_lru, 1);
    ASSERT_EQ(st.with_tags, 2);
    /* drop, TTL expiry by event time */
    ASSERT_EQ(rc_profile_drop(p, "c", 1), 0);
    ASSERT_EQ(rc_profile_drop(p, "c", 1), RC_ENOENT);
    ASSERT_EQ(rc_profile_expire(p, 1162, 0), 1); /* a (160) is idle > 1000 ms; longname (165) not */
    ASSERT_EQ(rc_profile_get(p, "a", 1, &r), RC_ENOENT);
    ASSERT_EQ(rc_profile_get(p, longname, strlen(longname), &r), 0);
    rc_profile_stats_get(p, &st);
    ASSERT_EQ(st.users, 1);
    ASSERT_EQ(st.expired_ttl, 1);
    ASSERT_EQ(st.with_device, 0);
    ASSERT_EQ(st.with_tags, 1);
    /* bad arguments never crash */
    ASSERT_EQ(rc_profile_note(p, "", 0, 1, 0, NULL, 0, 1, 0), RC_EINVAL);
    ASSERT_EQ(rc_profile_note(p, "x", 1, 1, 0, NULL, 3, 1, 0), RC_EINVAL);
    /* many users through a bound of 3: memory stays bounded (records reused) */
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "user-%d", i);
        ASSERT_EQ(rc_profile_note(p, name, strlen(name), 2000 + i, 1, t1, 2, 1, 1), 0);
    }
    rc_profile_stats_get(p, &st);
    ASSERT_EQ(st.users, 3);
    ASSERT_EQ(st.with_tags, 3);
    ASSERT_EQ(st.evicted_lru, 1 + 5000 - 2);
    ASSERT_LT(st.bytes, 200000);
    rc_profile_destroy(p);
}

/* ---- (1) served user vector == offline builder ---------------------------- */

TEST(tower_serve_user_vector_matches_offline)
{
    char dir[64], model[128], log_path[128], err[512];
    tower_tmp_dir(dir, sizeof dir, "rc-tt-");
    snprintf(model, sizeof model, "%s/m.tower", dir);
    snprintf(log_path, sizeof log_path, "%s/clicks.jsonl", dir);
    tower_write_model(model, 16, 3);
    rc_engine *e = offline_engine(16);
    float v[64], want[64];
    uint32_t dim = 0;
    /* no model yet: the clear error code */
    ASSERT_EQ(rc_engine_tower_user_vector(e, "u0", 2, 0, v, 64, &dim), RC_EAGAIN);
    rc_engine_tower_info ti;
    if (rc_engine_tower_load(e, model, &ti, err, sizeof err))
        RC__FAIL("load: %s", err);
    ASSERT_EQ(ti.loaded, 1);
    ASSERT_EQ(ti.dim, 16);
    ASSERT_EQ(ti.items, 0);

    const uint32_t nusers = 4, nev = 4 * 40;
    FILE *f = fopen(log_path, "w");
    ASSERT(f != NULL);
    char line[512];
    int64_t last_ts[4] = {0};
    for (uint32_t j = 0; j < nev; j++) {
        int64_t ts;
        uint32_t u;
        int n = tower_event_line(line, sizeof line, j, nusers, 1, &ts, &u);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
        fprintf(f, "%s\n", line);
        last_ts[u] = ts;
    }
    /* a probe click per user (only in the log): its record's user input is
     * what the server must serve just before it */
    for (uint32_t u = 0; u < nusers; u++)
        fprintf(f,
                "{\"user_id\":\"u%u\",\"item_id\":\"i%u\",\"city_id\":\"c%u\","
                "\"cate_id\":\"k%u\",\"ts\":%lld}\n",
                u, u, u % NCITIES, u % 4, (long long)(last_ts[u] + 5000));
    fclose(f);
    rc_engine_sync(e);

    rc_clicklog_opts lo = {.path = log_path, .quiet = 1};
    rc_clicklog *log = NULL;
    if (rc_clicklog_load(&lo, &log, err, sizeof err))
        RC__FAIL("clicklog: %s", err);
    const rc_table *t = rc_engine_table(e);
    uint32_t nitems = rc_dict_size(log->items);
    uint32_t *rows = malloc(nitems * sizeof *rows);
    for (uint32_t i = 0; i < nitems; i++) {
        size_t len;
        const char *id = rc_dict_str(log->items, i, &len);
        if (rc_table_find(t, id, len, &rows[i])) /* a probe's item, never applied */
            rows[i] = UINT32_MAX;
    }
    rc_ufeat *feats = NULL;
    ASSERT_EQ(rc_ufeat_from_log(log, &feats), 0);
    ASSERT_GT(feats->users_with_device, 0);
    ASSERT_GT(feats->users_with_tags, 0);
    rc_tower_history *h = NULL;
    ASSERT_EQ(rc_tower_history_create(log, t, rows, feats, &h), 0);
    rc_tower_model *m = NULL;
    ASSERT_EQ(rc_tower_load(model, &m, err, sizeof err), 0);
    rc_tower_work *w = NULL;
    ASSERT_EQ(rc_tower_work_create(m, &w), 0);
    uint32_t mc = rc_tower_config_of(m)->max_clicks, checked = 0;
    rc_tower_item_in clicks[RC_TOWER_MAX_CLICKS];
    int64_t cts[RC_TOWER_MAX_CLICKS];
    for (size_t r = 0; r < log->n; r++) {
        size_t ulen;
        const char *uname = rc_dict_str(log->users, log->recs[r].user, &ulen);
        uint32_t u = (uint32_t)atoi(uname + 1);
        if (log->recs[r].ts_ms != last_ts[u] + 5000)
            continue; /* not a probe */
        rc_tower_user_in in;
        uint32_t k = rc_tower_history_user_in(h, r, mc, clicks, cts, &in);
        ASSERT_EQ(k, mc);
        ASSERT_GT(in.sessions, 2);
        ASSERT_EQ(in.total_clicks, nev / nusers);
        rc_tower_user_vector(m, w, &in, want, NULL, NULL);
        ASSERT_EQ(rc_engine_tower_user_vector(e, uname, ulen, in.now_ms, v, 64, &dim), 0);
        ASSERT_EQ(dim, 16);
        for (uint32_t i = 0; i < dim; i++)
            ASSERT_NEAR(v[i], want[i], 1e-5);
        /* the comparison is sensitive to the profile part: one click more in
         * the counters, or no device, moves the vector past the tolerance */
        rc_tower_user_in alt = in;
        alt.total_clicks += 1;
        alt.sessions += 1;
        rc_tower_user_vector(m, w, &alt, want, NULL, NULL);
        float diff = 0;
        for (uint32_t i = 0; i < dim; i++)
            diff = RC_MAX(diff, fabsf(want[i] - v[i]));
        ASSERT_DBL_OP(diff, >, 1e-5);
        alt = in;
        alt.device_hash = 0;
        rc_tower_user_vector(m, w, &alt, want, NULL, NULL);
        diff = 0;
        for (uint32_t i = 0; i < dim; i++)
            diff = RC_MAX(diff, fabsf(want[i] - v[i]));
        ASSERT_DBL_OP(diff, >, 1e-5);
        checked++;
    }
    ASSERT_EQ(checked, nusers);
    /* unknown user (no clicks, no profile) */
    ASSERT_EQ(rc_engine_tower_user_vector(e, "nobody", 6, 0, v, 64, &dim), RC_ENOENT);
    /* the item tower: every item is mirrored with its tower vector */
    rc_engine_tower_info_get(e, &ti);
    ASSERT_EQ(ti.items, rc_table_size(t));
    ASSERT_EQ(ti.index.size, rc_table_size(t));
    for (uint32_t i = 0; i < nitems; i++) {
        size_t len;
        const char *id = rc_dict_str(log->items, i, &len);
        rc_tower_item_in ii;
        if (rows[i] == UINT32_MAX) {
            ASSERT_EQ(rc_engine_tower_item_vector(e, id, len, v, 64, &dim), RC_ENOENT);
            continue;
        }
        rc_tower_history_item_in(h, i, &ii);
        rc_tower_item_vector(m, w, &ii, want);
        ASSERT_EQ(rc_engine_tower_item_vector(e, id, len, v, 64, &dim), 0);
        /* the mirror holds the vector of the w2v vector it was computed from;
         * SGNS moved some since: those differ only until re-checked */
        float d = 0;
        for (uint32_t x = 0; x < dim; x++)
            d += v[x] * want[x];
        ASSERT_DBL_OP(d, >, 0.95);
    }
    rc_tower_work_destroy(w);
    rc_tower_destroy(m);
    rc_tower_history_destroy(h);
    rc_ufeat_free(feats);
    free(rows);
    rc_clicklog_free(log);
    rc_engine_destroy(e);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ASSERT_EQ(system(cmd), 0);
}

/* ---- the daemon: (2) recall, (3) cold start, (4) reloads -------------- */

static void produce_line(const e2e_daemon *d, const char *key, const char *json)
{
    char path[400];
    snprintf(path, sizeof path, "%s/kcat1.in", d->dir);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fprintf(f, "%s\t%s\n", key, json);
    fclose(f);
    e2e_kcat(d, path);
}

static int is_ok(json_t *r) { return json_is_true(json_object_get(r, "ok")); }

static const char *err_code(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "code"));
}

static const char *err_msg(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "message"));
}

/* Lines of the daemon log that contain needle. */
static long log_count(const char *log, const char *needle)
{
    char *out = NULL;
    e2e_sh(&out, "grep -F -c -- '%s' %s", needle, log);
    long n = out ? atol(out) : 0;
    free(out);
    return n;
}

static int tower_loaded(const char *sock)
{
    json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
    int l = json_is_true(json_object_get(json_object_get(st, "tower"), "loaded"));
    json_decref(st);
    return l;
}

static int has_item(json_t *r, const char *id)
{
    json_t *it;
    size_t i;
    json_array_foreach(json_object_get(r, "items"), i, it) {
        const char *s = json_string_value(json_object_get(it, "item_id"));
        if (s && strcmp(s, id) == 0)
            return 1;
    }
    return 0;
}

TEST(tower_serve_socket_recall_and_cold_start)
{
    char dir[64], model[128];
    tower_tmp_dir(dir, sizeof dir, "rc-tt-");
    snprintf(model, sizeof model, "%s/a.tower", dir);
    tower_write_model(model, 64, 1);
    /* reload_model reads only from tower.model_dir (modelpath.h) */
    char conf[128], text[256];
    snprintf(conf, sizeof conf, "%s/c.json", dir);
    snprintf(text, sizeof text, "{\"tower\":{\"model_dir\":\"%s\"}}", dir);
    e2e_write_file(conf, text);
    const char *extra[] = {"--config", conf, NULL};
    e2e_daemon d;
    e2e_start(&d, extra);
    const uint32_t nusers = 10, nev = 400;
    tower_produce(&d, 0, nev, nusers, 1);
    json_decref(e2e_wait_done(d.sock, nev, 120000));

    /* no model: the clear error */
    json_t *r =
        e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"mode\":\"two_tower\"}");
    ASSERT(!is_ok(r));
    ASSERT_STREQ(err_code(r), "no_model");
    ASSERT_STREQ(err_msg(r), "two_tower: no tower model loaded (start with --model FILE.tower "
                             "or use reload_model)");
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"mode\":\"tower\"}");
    ASSERT_STREQ(err_code(r), "bad_request");
    json_decref(r);

    r = e2e_request(d.sock, "{\"op\":\"reload_model\",\"path\":\"%s\"}", model);
    if (!is_ok(r))
        RC__FAIL("reload_model: %s", err_msg(r));
    json_t *st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(r, "items"), e2e_int(st, "items"));
    ASSERT_EQ(e2e_int(r, "dim"), 16);
    ASSERT_GT(e2e_int(r, "params"), 1000);
    ASSERT_STREQ(json_string_value(json_object_get(r, "path")), model);
    json_decref(r);
    json_decref(st);

    /* (2) k hits of the user's city, none of its recent clicks */
    json_t *clicks = e2e_request(d.sock, "{\"op\":\"user\",\"user_id\":\"u1\"}");
    ASSERT(is_ok(clicks));
    r = e2e_request(d.sock,
                    "{\"op\":\"recall\",\"user_id\":\"u1\",\"mode\":\"two_tower\",\"k\":5}");
    ASSERT(is_ok(r));
    ASSERT_STREQ(json_string_value(json_object_get(r, "mode")), "two_tower");
    if (json_object_get(r, "fallback")) {
        char *dump = json_dumps(r, 0);
        json_t *st2 = e2e_request(d.sock, "{\"op\":\"stats\"}");
        char *sd = json_dumps(st2, 0);
        RC__FAIL("fallback: %s\nstats: %s", dump, sd);
    }
    json_t *items = json_object_get(r, "items"), *it, *c;
    size_t i, j;
    ASSERT_EQ(json_array_size(items), 5);
    double prev = 2;
    json_array_foreach(items, i, it) {
        ASSERT_STREQ(json_string_value(json_object_get(it, "city")), "c1");
        double s = json_real_value(json_object_get(it, "score"));
        ASSERT(s <= prev + 1e-6);
        prev = s;
        json_array_foreach(json_object_get(clicks, "clicks"), j, c)
            ASSERT(strcmp(json_string_value(json_object_get(c, "item_id")),
                          json_string_value(json_object_get(it, "item_id"))) != 0);
    }
    json_decref(r);
    json_decref(clicks);
    /* every city; a category filter; a batch; an unknown user falls back like avg.
     * Every city: an exhaustive recall (k above the item count) holds other
     * cities' items exactly when the city filter is off; a top 30 depends on
     * the scores (the items' word2vec features train as the stream runs). */
    r = e2e_request(d.sock,
                    "{\"op\":\"recall\",\"user_id\":\"u1\",\"mode\":\"two_tower\",\"k\":1000,"
                    "\"city\":\"*\"}");
    ASSERT(is_ok(r));
    int other_city = 0;
    json_array_foreach(json_object_get(r, "items"), i, it)
        other_city |= strcmp(json_string_value(json_object_get(it, "city")), "c1") != 0;
    ASSERT(other_city);
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u2\",\"mode\":\"two_tower\",\"k\":3,"
                            "\"categories\":[\"k1\"]}");
    ASSERT(is_ok(r));
    ASSERT_EQ(json_array_size(json_object_get(r, "items")), 3); /* k1 has more than 3 items */
    json_array_foreach(json_object_get(r, "items"), i, it)
        ASSERT_STREQ(json_string_value(json_object_get(it, "cate")), "k1");
    json_decref(r);
    r = e2e_request(d.sock,
                    "{\"op\":\"recall\",\"users\":[\"u1\",\"u2\"],\"mode\":\"two_tower\","
                    "\"k\":2,\"now_ms\":%lld}",
                    T0 + 86400000LL);
    ASSERT(is_ok(r));
    ASSERT_EQ(json_array_size(json_object_get(r, "results")), 2);
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"stranger\",\"mode\":\"two_tower\"}");
    ASSERT(is_ok(r));
    ASSERT_STREQ(json_string_value(json_object_get(r, "fallback")), "popular");
    json_decref(r);

    /* Profiles of every user, read before the cold-start event below: its time
     * (30 days on) lets the once-a-second expiry drop the others' profiles. */
    st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_GE(e2e_int(st, "profiles.users"), nusers);
    ASSERT_GE(e2e_int(st, "profiles.with_device"), nusers);
    json_decref(st);

    /* (3) cold start: a brand-new item is vectorised and searchable at once */
    char ev[512];
    snprintf(ev, sizeof ev,
             "{\"user_id\":\"u1\",\"item_id\":\"brand-new\",\"city_id\":\"c1\","
             "\"cate_id\":\"k0\",\"ts\":%lld}",
             T0 + 30 * 86400000LL);
    produce_line(&d, "u1", ev);
    long long t0 = e2e_now_ms();
    int found = 0;
    while (!found && e2e_now_ms() - t0 < e2e_scaled_ms(120000)) {
        r = e2e_request(d.sock,
                        "{\"op\":\"similar\",\"item_id\":\"brand-new\",\"mode\":\"two_tower\","
                        "\"k\":3}");
        found = is_ok(r);
        json_decref(r);
        if (found) { /* vectorised (similar answers) and flushed into the index */
            st = e2e_request(d.sock, "{\"op\":\"stats\"}");
            found = e2e_int(st, "tower.index.size") == e2e_int(st, "items");
            json_decref(st);
        }
        if (!found)
            usleep(5000);
    }
    ASSERT(found);
    printf("brand-new item vectorised and in the tower index %lld ms after its produce call\n",
           e2e_now_ms() - t0);
    /* u4 browses c1 too and never clicked it: an exhaustive two_tower recall
     * of its city returns it (the city partition is flat: exact search) */
    r = e2e_request(d.sock,
                    "{\"op\":\"recall\",\"user_id\":\"u4\",\"mode\":\"two_tower\",\"k\":1000}");
    ASSERT(is_ok(r));
    ASSERT(has_item(r, "brand-new"));
    json_decref(r);
    st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(st, "tower.items"), e2e_int(st, "items"));
    ASSERT_EQ(e2e_int(st, "tower.index.size"), e2e_int(st, "items"));
    ASSERT_EQ(e2e_int(st, "two_tower.requests"), 7);
    ASSERT_EQ(e2e_int(st, "two_tower.errors"), 1);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&d), 0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", dir, d.dir);
    ASSERT_EQ(system(cmd), 0);
}

/* Scores of a two_tower recall, in order. */
static size_t tt_scores(const char *sock, const char *user, double *s, size_t cap)
{
    json_t *r = e2e_request(sock,
                            "{\"op\":\"recall\",\"user_id\":\"%s\",\"mode\":\"two_tower\","
                            "\"k\":10}",
                            user);
    if (!is_ok(r))
        RC__FAIL("recall: %s", err_msg(r));
    json_t *it;
    size_t i, n = 0;
    json_array_foreach(json_object_get(r, "items"), i, it)
        if (n < cap)
            s[n++] = json_real_value(json_object_get(it, "score"));
    json_decref(r);
    return n;
}

static double max_diff(const double *a, size_t na, const double *b, size_t nb)
{
    double d = na == nb ? 0 : 1;
    for (size_t i = 0; i < na && i < nb; i++)
        d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

TEST(tower_serve_reload_swaps_and_refuses_corrupt)
{
    char dir[64], m1[128], m2[128], bad[160], cmd[600];
    tower_tmp_dir(dir, sizeof dir, "rc-tt-");
    snprintf(m1, sizeof m1, "%s/a.tower", dir);
    snprintf(m2, sizeof m2, "%s/b.tower", dir);
    snprintf(bad, sizeof bad, "%s/bad.tower", dir);
    tower_write_model(m1, 64, 1);
    tower_write_model(m2, 64, 2);
    /* --model takes either kind: this one is read as a tower model;
     * reload_model reads only from tower.model_dir (modelpath.h) */
    char conf[128], text[256];
    snprintf(conf, sizeof conf, "%s/c.json", dir);
    snprintf(text, sizeof text, "{\"tower\":{\"model_dir\":\"%s\"}}", dir);
    e2e_write_file(conf, text);
    const char *extra[] = {"--config", conf, "--model", m1, NULL};
    e2e_daemon d;
    e2e_start(&d, extra);
    long long t0 = e2e_now_ms();
    while (!tower_loaded(d.sock) && e2e_now_ms() - t0 < e2e_scaled_ms(120000))
        usleep(10000);
    ASSERT(tower_loaded(d.sock));
    tower_produce(&d, 0, 400, 10, 1);
    json_decref(e2e_wait_done(d.sock, 400, 120000));
    e2e_wait_model_still(d.sock); /* replays done: the word2vec inputs stopped moving */
    double s1[10], s2[10], s3[10], s4[10];
    size_t n1 = tt_scores(d.sock, "u2", s1, 10);
    /* every drift re-check done: none pending and the scores stopped moving */
    for (long long t1 = e2e_now_ms();; n1 = tt_scores(d.sock, "u2", s1, 10)) {
        json_t *st = e2e_request(d.sock, "{\"op\":\"stats\"}");
        long long pending = e2e_int(st, "tower.refresh_pending");
        json_decref(st);
        if (pending == 0 && max_diff(s1, n1, s4, tt_scores(d.sock, "u2", s4, 10)) == 0)
            break;
        if (e2e_now_ms() - t1 > e2e_scaled_ms(120000))
            RC__FAIL("tower scores still changing after 120 s x RC_TEST_TIME_SCALE (pending %lld)",
                     pending);
        usleep(10000);
    }
    ASSERT_EQ(n1, 10);

    json_t *r = e2e_request(d.sock, "{\"op\":\"reload_model\",\"path\":\"%s\"}", m2);
    if (!is_ok(r))
        RC__FAIL("reload_model: %s", err_msg(r));
    ASSERT_EQ(e2e_int(r, "dim"), 16);
    ASSERT_GT(e2e_int(r, "items"), 10);
    json_decref(r);
    size_t n2 = tt_scores(d.sock, "u2", s2, 10);
    ASSERT_DBL_OP(max_diff(s1, n1, s2, n2), >, 1e-3); /* another model: other vectors */

    /* a corrupt file and a missing one are refused, the served model stays */
    snprintf(cmd, sizeof cmd,
             "cp %s %s && printf '\\377' | dd of=%s bs=1 seek=200 conv=notrunc "
             "2>/dev/null",
             m2, bad, bad);
    ASSERT_EQ(system(cmd), 0);
    r = e2e_request(d.sock, "{\"op\":\"reload_model\",\"path\":\"%s\"}", bad);
    ASSERT(!is_ok(r));
    ASSERT_STREQ(err_code(r), "load_failed");
    ASSERT(strstr(err_msg(r), "checksum mismatch") != NULL);
    ASSERT(strstr(err_msg(r), bad) != NULL);
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"reload_model\",\"path\":\"%s/none.tower\"}", dir);
    ASSERT_STREQ(err_code(r), "load_failed");
    ASSERT(strstr(err_msg(r), "none.tower") != NULL);
    json_decref(r);
    size_t n3 = tt_scores(d.sock, "u2", s3, 10);
    ASSERT_DBL_OP(max_diff(s2, n2, s3, n3), <, 1e-5);
    json_t *st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(st, "tower.loads"), 2);
    /* the missing file was refused before any load began (modelpath.h) */
    ASSERT_EQ(e2e_int(st, "tower.load_failures"), 1);
    ASSERT(strstr(json_string_value(json_object_get(json_object_get(st, "tower"), "path")),
                  "b.tower") != NULL);
    json_decref(st);

    /* SIGHUP: the configured file (--model a.tower) was replaced: reloaded */
    tower_write_model(m1, 64, 3);
    ASSERT_EQ(kill(d.pid, SIGHUP), 0);
    t0 = e2e_now_ms();
    long long loads = 0;
    while ((loads = e2e_int(st = e2e_request(d.sock, "{\"op\":\"stats\"}"), "tower.loads")) < 3 &&
           e2e_now_ms() - t0 < e2e_scaled_ms(120000)) {
        json_decref(st);
        usleep(10000);
    }
    json_decref(st);
    ASSERT_EQ(loads, 3);
    size_t n4 = tt_scores(d.sock, "u2", s4, 10);
    ASSERT_DBL_OP(max_diff(s3, n3, s4, n4), >, 1e-3);
    /* an unchanged file: SIGHUP does not reload it. First proof that the
     * SIGHUP was handled: its "config reloaded" line; the handler decides on
     * the model in the same loop callback, and a request answered after that
     * line was read by the loop after the callback returned. */
    long reloads = log_count(d.log, "config reloaded");
    long reloading = log_count(d.log, "tower model reloading");
    ASSERT_EQ(reloading, 1);
    ASSERT_EQ(kill(d.pid, SIGHUP), 0);
    t0 = e2e_now_ms();
    while (log_count(d.log, "config reloaded") == reloads) {
        if (e2e_now_ms() - t0 > e2e_scaled_ms(120000))
            RC__FAIL("SIGHUP not handled after 120 s x RC_TEST_TIME_SCALE (log %s)", d.log);
        usleep(10000);
    }
    st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(st, "tower.loads"), 3);
    json_decref(st);
    ASSERT_EQ(log_count(d.log, "tower model reloading"), reloading); /* no load started */
    ASSERT_EQ(e2e_stop(&d), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", dir, d.dir);
    ASSERT_EQ(system(cmd), 0);
}

/* ---- (5) concurrent recall + reload ------------------------------------- */

struct conc {
    rc_engine *e;
    atomic_int stop;
    atomic_long calls, errors;
    uint32_t seed;
};

static void *conc_reader(void *arg)
{
    struct conc *c = arg;
    rc_hit hits[20];
    float v[64];
    uint32_t n, dim, x = c->seed;
    char user[16];
    while (!atomic_load(&c->stop)) {
        x = x * 1103515245u + 12345u;
        snprintf(user, sizeof user, "u%u", (x >> 8) % 12);
        rc_recall_req q = {.user = user, .ulen = strlen(user), .k = 10, .two_tower = 1};
        int fb, rc = rc_engine_recall(c->e, &q, hits, &n, &fb);
        rc |= rc_engine_tower_similar(c->e, "i0", 2, 5, hits, &n);
        int rv = rc_engine_tower_user_vector(c->e, user, strlen(user), 0, v, 64, &dim);
        if (rc || (rv && rv != RC_ENOENT))
            atomic_fetch_add(&c->errors, 1);
        atomic_fetch_add(&c->calls, 1);
    }
    return NULL;
}

/* Waits until every reader has completed a call that started after this
 * point (two more calls: the one under way may have started before): each
 * model swap is raced by every reader, however the threads are scheduled. */
static void conc_wait_progress(struct conc *c, int n)
{
    long base[8];
    for (int i = 0; i < n; i++)
        base[i] = atomic_load(&c[i].calls);
    for (int i = 0; i < n; i++)
        while (atomic_load(&c[i].calls) < base[i] + 2)
            sched_yield();
}

TEST(tower_serve_concurrent_recall_and_reload)
{
    char dir[64], m[2][128], err[512], line[512];
    tower_tmp_dir(dir, sizeof dir, "rc-tt-");
    for (int i = 0; i < 2; i++) {
        snprintf(m[i], sizeof m[i], "%s/%d.tower", dir, i);
        tower_write_model(m[i], 16, (uint64_t)i + 10);
    }
    rc_engine *e = offline_engine(16);
    uint32_t j = 0;
    for (; j < 120; j++) {
        int len = tower_event_line(line, sizeof line, j, 12, 1, NULL, NULL);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)len), RC_EV_OK);
    }
    if (rc_engine_tower_load(e, m[0], NULL, err, sizeof err))
        RC__FAIL("load: %s", err);
    struct conc c[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        c[i] = (struct conc){.e = e, .seed = (uint32_t)i + 1};
        ASSERT_EQ(pthread_create(&th[i], NULL, conc_reader, &c[i]), 0);
    }
    /* the writer goes on (new items, SGNS drift) while models swap */
    for (int round = 0; round < 12; round++) {
        for (int x = 0; x < 40; x++, j++) {
            int len = tower_event_line(line, sizeof line, j, 12, 1, NULL, NULL);
            ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)len), RC_EV_OK);
        }
        snprintf(line, sizeof line,
                 "{\"user_id\":\"u%d\",\"item_id\":\"new%d\",\"city_id\":\"c0\","
                 "\"cate_id\":\"k0\",\"ts\":%lld}",
                 round % 12, round, T0 + 40 * 86400000LL + round);
        ASSERT_EQ(rc_engine_apply_line(e, line, strlen(line)), RC_EV_OK);
        if (rc_engine_tower_load(e, m[(round + 1) % 2], NULL, err, sizeof err))
            RC__FAIL("reload: %s", err);
        conc_wait_progress(c, 3);
    }
    /* a refused file while readers run */
    ASSERT_EQ(rc_engine_tower_load(e, "/nonexistent/x.tower", NULL, err, sizeof err), RC_ENOENT);
    ASSERT(strstr(err, "/nonexistent/x.tower") != NULL);
    conc_wait_progress(c, 3);
    long calls = 0;
    for (int i = 0; i < 3; i++) {
        atomic_store(&c[i].stop, 1);
        pthread_join(th[i], NULL);
        calls += atomic_load(&c[i].calls);
        ASSERT_EQ(atomic_load(&c[i].errors), 0);
    }
    ASSERT_GE(calls, 3 * 13 * 2); /* each reader: two calls after every swap and the refusal */
    rc_engine_tower_info ti;
    rc_engine_tower_info_get(e, &ti);
    ASSERT_EQ(ti.loads, 13);
    ASSERT_EQ(ti.load_failures, 1);
    ASSERT_EQ(ti.items, rc_table_size(rc_engine_table(e)));
    ASSERT(rc_engine_tower_contains(e, rc_table_size(rc_engine_table(e)) - 1));
    rc_engine_destroy(e);
    snprintf(line, sizeof line, "rm -rf %s", dir);
    ASSERT_EQ(system(line), 0);
}
