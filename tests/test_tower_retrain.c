/* Background retraining of the two-tower model: the replay buffer, the
 * in-memory click log, warm start and cancellation of rc_tower_train, the
 * tower.retrain_* keys, an offline engine retraining on request, and the
 * daemon retraining periodically, on the retrain_model op, and shutting down
 * promptly in the middle of a retrain. */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/buf.h"
#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/half.h"
#include "recalld/metrics.h"
#include "recalld/replay.h"
#include "recalld/retrain.h"
#include "recalld/tower.h"
#include "recalld/tower_serve.h"
#include "test.h"
#include "tower_stream.h"

/* ---- helpers ------------------------------------------------------------ */

/* Sessions of the stream's first n events (each user's clicks cut every 9). */
static uint32_t stream_sessions(uint32_t n, uint32_t nusers)
{
    uint32_t s = 0;
    for (uint32_t u = 0; u < nusers; u++) {
        uint32_t k = n / nusers + (u < n % nusers);
        s += (k + 8) / 9;
    }
    return s;
}

static void rm_rf(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ASSERT_EQ(system(cmd), 0);
}

static float max_abs_diff(const float *a, const float *b, uint32_t n)
{
    float d = 0;
    for (uint32_t i = 0; i < n; i++)
        d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

static rc_config retrain_config(uint32_t dim)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = dim;
    c.history = 64;
    c.seed = 7;
    c.tower_retrain_interval_s = 3600;
    c.tower_replay_clicks = 1000;
    c.tower_retrain_min_examples = 200;
    c.tower_retrain_epochs = 2;
    return c;
}

/* ---- replay buffer ------------------------------------------------------ */

TEST(tower_retrain_replay_ring_bounded_in_order)
{
    rc_replay *r = NULL;
    char err[256];
    ASSERT_EQ(rc_replay_create(0, &r, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "clicks = 0") != NULL);
    ASSERT_EQ(rc_replay_create(1000, &r, err, sizeof err), 0);
    rc_replay_stats st;
    rc_replay_stats_get(r, &st);
    ASSERT_EQ(st.capacity, 1000);
    ASSERT_EQ(st.fill, 0);
    ASSERT_EQ(st.bytes, rc_replay_bytes_for(1000));
    ASSERT_GE(st.bytes, 1000 * sizeof(rc_replay_rec) + 64 * sizeof(rc_replay_tags));
    ASSERT_EQ(sizeof(rc_replay_rec), 40);
    rc_replay_snap s;
    ASSERT_EQ(rc_replay_snapshot(r, 0, &s), 0); /* empty */
    ASSERT_EQ(s.n, 0);
    rc_replay_snap_free(&s);
    /* 2500 clicks, every third with tags (one hash 0: skipped) */
    for (uint64_t i = 0; i < 2500; i++) {
        uint64_t tags[3] = {1000 + i, 0, 2000 + i};
        rc_replay_add(r, 77 + i % 13, (uint32_t)i, (int64_t)(T0 + i), i % 5 ? 0 : 900 + i,
                      i % 3 ? NULL : tags, i % 3 ? 0 : 3);
    }
    rc_replay_stats_get(r, &st);
    ASSERT_EQ(st.fill, 1000);
    ASSERT_EQ(st.added, 2500);
    ASSERT_EQ(st.tag_lists, 834);
    ASSERT_EQ(rc_replay_snapshot(r, 0, &s), 0);
    ASSERT_EQ(s.n, 1000);
    ASSERT_EQ(s.first_seq, 1500);
    uint32_t with_tags = 0, lost = 0;
    for (size_t i = 0; i < s.n; i++) { /* the newest 1000, oldest first */
        uint64_t seq = 1500 + i;
        ASSERT_EQ(s.recs[i].row, seq);
        ASSERT_EQ(s.recs[i].ts_ms, T0 + (int64_t)seq);
        ASSERT_EQ(s.recs[i].user, 77 + seq % 13);
        ASSERT_EQ(s.recs[i].device, seq % 5 ? 0 : 900 + seq);
        const rc_replay_tags *t = rc_replay_snap_tags(&s, &s.recs[i]);
        ASSERT_EQ(s.recs[i].tags_ref != 0, seq % 3 == 0);
        if (t) {
            ASSERT_EQ(t->n, 2);
            ASSERT_EQ(t->h[0], 1000 + seq);
            ASSERT_EQ(t->h[1], 2000 + seq);
            with_tags++;
        } else if (s.recs[i].tags_ref) {
            lost++;
        }
    }
    /* the tag ring keeps the newest 64 lists; older references read as none */
    ASSERT_EQ(with_tags, 64);
    ASSERT_EQ(lost, 334 - 64);
    rc_replay_snap_free(&s);
    rc_replay_stats_get(r, &st);
    ASSERT_EQ(st.tags_lost, 334 - 64);
    ASSERT_EQ(rc_replay_snapshot(r, 10, &s), 0); /* the newest 10 */
    ASSERT_EQ(s.n, 10);
    ASSERT_EQ(s.recs[0].row, 2490);
    ASSERT_EQ(s.recs[9].row, 2499);
    rc_replay_snap_free(&s);
    rc_replay_destroy(r);
}

/* The buffer's saved form (a checkpoint's state section) loads back as it
 * was: the same clicks in the same order with their tags (a list the ring had
 * overwritten saves as none); a smaller buffer keeps the newest; a click on a
 * row beyond the table is dropped and counted; a malformed blob adds nothing. */
TEST(tower_retrain_replay_save_load_round_trip)
{
    rc_replay *r = NULL, *back = NULL, *small = NULL;
    char err[256];
    ASSERT_EQ(rc_replay_create(1000, &r, err, sizeof err), 0);
    for (uint64_t i = 0; i < 2500; i++) {
        uint64_t tags[3] = {1000 + i, 0, 2000 + i};
        rc_replay_add(r, 77 + i % 13, (uint32_t)i, (int64_t)(T0 + i), i % 5 ? 0 : 900 + i,
                      i % 3 ? NULL : tags, i % 3 ? 0 : 3);
    }
    rc_buf b;
    rc_buf_init(&b, 0);
    ASSERT_EQ(rc_replay_save(r, &b), 0);
    /* 1000 clicks of 32 bytes, the 64 lists still held with 2 hashes each */
    ASSERT_EQ(b.len, 8 + 1000 * 32 + 64 * 2 * 8);
    uint64_t count = 0, dropped = 0;
    ASSERT_EQ(rc_replay_create(1000, &back, err, sizeof err), 0);
    ASSERT_EQ(rc_replay_load(back, b.data, b.len, 5000, &count, &dropped), 0);
    ASSERT_EQ(count, 1000);
    ASSERT_EQ(dropped, 0);
    rc_replay_snap s0, s1;
    ASSERT_EQ(rc_replay_snapshot(r, 0, &s0), 0);
    ASSERT_EQ(rc_replay_snapshot(back, 0, &s1), 0);
    ASSERT_EQ(s1.n, s0.n);
    uint32_t with_tags = 0;
    for (size_t i = 0; i < s0.n; i++) {
        ASSERT_EQ(s1.recs[i].row, s0.recs[i].row);
        ASSERT_EQ(s1.recs[i].user, s0.recs[i].user);
        ASSERT_EQ(s1.recs[i].ts_ms, s0.recs[i].ts_ms);
        ASSERT_EQ(s1.recs[i].device, s0.recs[i].device);
        const rc_replay_tags *t0 = rc_replay_snap_tags(&s0, &s0.recs[i]),
                             *t1 = rc_replay_snap_tags(&s1, &s1.recs[i]);
        ASSERT_EQ(t0 != NULL, t1 != NULL);
        if (t0) {
            ASSERT_EQ(t1->n, t0->n);
            ASSERT_EQ(t1->h[0], t0->h[0]);
            ASSERT_EQ(t1->h[1], t0->h[1]);
            with_tags++;
        }
    }
    ASSERT_EQ(with_tags, 64);
    rc_replay_snap_free(&s0);
    rc_replay_snap_free(&s1);
    /* saved again: the same bytes */
    rc_buf b2;
    rc_buf_init(&b2, 0);
    ASSERT_EQ(rc_replay_save(back, &b2), 0);
    ASSERT_EQ(b2.len, b.len);
    ASSERT(memcmp(b2.data, b.data, b.len) == 0);
    /* a smaller buffer and a smaller table: the newest 100 held, rows >= 2400 dropped */
    ASSERT_EQ(rc_replay_create(100, &small, err, sizeof err), 0);
    ASSERT_EQ(rc_replay_load(small, b.data, b.len, 2400, &count, &dropped), 0);
    ASSERT_EQ(count, 900);
    ASSERT_EQ(dropped, 100);
    ASSERT_EQ(rc_replay_snapshot(small, 0, &s1), 0);
    ASSERT_EQ(s1.n, 100);
    ASSERT_EQ(s1.recs[0].row, 2300);
    ASSERT_EQ(s1.recs[99].row, 2399);
    rc_replay_snap_free(&s1);
    /* malformed: truncated, trailing bytes, too many tags, a negative time */
    rc_replay_stats st;
    rc_replay_destroy(small);
    ASSERT_EQ(rc_replay_create(100, &small, err, sizeof err), 0);
    ASSERT_EQ(rc_replay_load(small, b.data, b.len - 1, 5000, &count, NULL), RC_ECORRUPT);
    ASSERT_EQ(rc_replay_load(small, b.data, 7, 5000, &count, NULL), RC_ECORRUPT);
    rc_buf_append(&b2, "x", 1);
    ASSERT_EQ(rc_replay_load(small, b2.data, b2.len, 5000, &count, NULL), RC_ECORRUPT);
    unsigned char *bad = malloc(b.len);
    memcpy(bad, b.data, b.len);
    uint32_t many = RC_REPLAY_MAX_TAGS + 1;
    memcpy(bad + 8 + 28, &many, 4); /* the first click's tag count */
    ASSERT_EQ(rc_replay_load(small, bad, b.len, 5000, &count, NULL), RC_ECORRUPT);
    memcpy(bad, b.data, b.len);
    int64_t neg = -1;
    memcpy(bad + 8 + 8, &neg, 8); /* the first click's time */
    ASSERT_EQ(rc_replay_load(small, bad, b.len, 5000, &count, NULL), RC_ECORRUPT);
    ASSERT_EQ(count, 0);
    rc_replay_stats_get(small, &st);
    ASSERT_EQ(st.added, 0);
    free(bad);
    rc_buf_free(&b);
    rc_buf_free(&b2);
    rc_replay_destroy(small);
    rc_replay_destroy(back);
    rc_replay_destroy(r);
}

struct ring_writer {
    rc_replay *r;
    atomic_int stop;
    _Atomic uint64_t n;
};

static void *ring_writer_main(void *arg)
{
    struct ring_writer *w = arg;
    uint64_t n = 0;
    while (!atomic_load(&w->stop)) {
        /* bursts of 1000 a millisecond: several times the daemon's ingest rate */
        for (int i = 0; i < 1000; i++) {
            rc_replay_add(w->r, 1, (uint32_t)n, (int64_t)n, 0, NULL, 0);
            atomic_store(&w->n, ++n);
        }
        usleep(1000);
    }
    return NULL;
}

TEST(tower_retrain_replay_snapshot_while_writing)
{
    rc_replay *r = NULL;
    char err[256];
    ASSERT_EQ(rc_replay_create(50000, &r, err, sizeof err), 0);
    struct ring_writer w = {.r = r};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, ring_writer_main, &w), 0);
    int full = 0, k = 0;
    /* until the writer lapped the ring several times under the snapshots
     * (however slowly a loaded machine runs either thread: no time limit but
     * the runner's); the full ring is checked once the writer stopped */
    for (; k < 50 || atomic_load(&w.n) < 200000; k++) {
        rc_replay_snap s;
        ASSERT_EQ(rc_replay_snapshot(r, 0, &s), 0);
        ASSERT_LE(s.n, 50000);
        /* contiguous, in order, each record the one of its sequence number */
        for (size_t i = 0; i < s.n; i++)
            if (s.recs[i].ts_ms != (int64_t)(s.first_seq + i) ||
                s.recs[i].row != (uint32_t)(s.first_seq + i))
                RC__FAIL("snapshot %d: record %zu is seq %lld, want %llu", k, i,
                         (long long)s.recs[i].ts_ms, (unsigned long long)(s.first_seq + i));
        full += s.n == 50000;
        rc_replay_snap_free(&s);
    }
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    ASSERT_GE(atomic_load(&w.n), 200000);
    /* A snapshot the writer laps restarts at the oldest record still held and
     * holds less than the ring; how many do depends on the copy's speed (under
     * a sanitizer on a loaded machine, all of them may). Writer stopped, one
     * holds the whole ring, the newest records. */
    printf("%d of %d snapshots under writing held the whole ring\n", full, k);
    rc_replay_snap s;
    ASSERT_EQ(rc_replay_snapshot(r, 0, &s), 0);
    ASSERT_EQ(s.n, 50000);
    ASSERT_EQ(s.first_seq, atomic_load(&w.n) - 50000);
    for (size_t i = 0; i < s.n; i++)
        ASSERT_EQ(s.recs[i].ts_ms, (int64_t)(s.first_seq + i));
    rc_replay_snap_free(&s);
    rc_replay_stats st;
    rc_replay_stats_get(r, &st);
    ASSERT_EQ(st.added, atomic_load(&w.n));
    ASSERT_EQ(st.fill, 50000);
    rc_replay_destroy(r);
}

/* ---- click log from memory ------------------------------------------------ */

TEST(tower_retrain_clicklog_from_memory)
{
    rc_clicklog *log = NULL;
    char err[256];
    ASSERT_EQ(rc_clicklog_create(5, &log), 0);
    /* two users, u1's clicks out of order; a 31-minute gap cuts u1's session */
    ASSERT_EQ(rc_clicklog_add(log, "u1", 2, "a", 1, "c1", 2, "k1", 2, 1000), 0);
    ASSERT_EQ(rc_clicklog_add(log, "u2", 2, "b", 1, "", 0, "", 0, 500), 0);
    ASSERT_EQ(rc_clicklog_add(log, "u1", 2, "b", 1, "c1", 2, "k2", 2, 900), 0);
    ASSERT_EQ(rc_clicklog_add(log, "u1", 2, "c", 1, "c2", 2, "k1", 2, 1000 + 31 * 60000), 0);
    ASSERT_EQ(rc_clicklog_add(log, "u2", 2, "a", 1, "c1", 2, "k1", 2, 600), 0);
    ASSERT_EQ(rc_clicklog_add(log, "u2", 2, "a", 1, "c1", 2, "k1", 2, 700), RC_E2BIG);
    ASSERT_EQ(rc_clicklog_add(log, "", 0, "a", 1, "c1", 2, "k1", 2, 700), RC_EINVAL);
    ASSERT_EQ(rc_clicklog_sessionize(log, -1, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "gap_ms") != NULL);
    ASSERT_EQ(rc_clicklog_sessionize(log, 30 * 60000, err, sizeof err), 0);
    ASSERT_EQ(rc_clicklog_sessionize(log, 0, err, sizeof err), RC_EINVAL); /* once */
    ASSERT_EQ(rc_clicklog_add(log, "u3", 2, "a", 1, "", 0, "", 0, 1), RC_EINVAL);
    ASSERT_EQ(log->n, 5);
    ASSERT_EQ(log->nsessions, 3);
    ASSERT_EQ(rc_dict_size(log->users), 2);
    ASSERT_EQ(rc_dict_size(log->items), 3);
    /* sessions by start time: u2 (500), u1 (900), u1 (1000 + 31 min) */
    ASSERT_EQ(log->sess_off[0], 0);
    ASSERT_EQ(log->sess_off[1], 2);
    ASSERT_EQ(log->sess_off[2], 4);
    ASSERT_EQ(log->sess_off[3], 5);
    ASSERT_EQ(log->recs[0].ts_ms, 500);
    ASSERT_EQ(log->recs[1].ts_ms, 600);
    ASSERT_EQ(log->recs[2].ts_ms, 900);
    ASSERT_EQ(log->recs[3].ts_ms, 1000);
    ASSERT_EQ(log->recs[4].ts_ms, 1000 + 31 * 60000);
    ASSERT_EQ(log->recs[0].city, 0); /* "" */
    ASSERT_STREQ(rc_dict_str(log->cities, log->recs[1].city, NULL), "c1");
    rc_clicklog_free(log);
}

/* ---- config ---------------------------------------------------------------- */

static void bad_config(const char *json, const char *want)
{
    rc_config c;
    char err[512];
    rc_config_defaults(&c);
    int rc = rc_config_load_str(&c, json, err, sizeof err);
    if (rc == 0)
        rc = rc_config_validate(&c, err, sizeof err);
    if (rc != RC_EINVAL || !strstr(err, want))
        RC__FAIL("config %s: rc %d, error \"%s\", want \"%s\"", json, rc, err, want);
}

TEST(tower_retrain_config_keys)
{
    rc_config c;
    char err[512];
    rc_config_defaults(&c);
    ASSERT_EQ(c.tower_retrain_interval_s, 0); /* off by default */
    ASSERT_EQ(c.tower_replay_clicks, 1000000);
    ASSERT_EQ(c.tower_retrain_min_examples, 10000);
    ASSERT_EQ(c.tower_retrain_epochs, 1);
    ASSERT_EQ(c.tower_retrain_max_seconds, 600);
    ASSERT_EQ(c.tower_retrain_threads, 1);
    ASSERT_EQ(c.tower_retrain_warm, 1);
    ASSERT_EQ(rc_config_load_str(&c,
                                 "{\"tower\":{\"retrain_interval_s\":1,\"replay_clicks\":5000,"
                                 "\"retrain_min_examples\":100,\"retrain_epochs\":3,"
                                 "\"retrain_max_seconds\":0,\"retrain_threads\":2,"
                                 "\"retrain_warm_start\":false}}",
                                 err, sizeof err),
              0);
    ASSERT_EQ(rc_config_validate(&c, err, sizeof err), 0);
    ASSERT_EQ(c.tower_retrain_interval_s, 1);
    ASSERT_EQ(c.tower_replay_clicks, 5000);
    ASSERT_EQ(c.tower_retrain_min_examples, 100);
    ASSERT_EQ(c.tower_retrain_epochs, 3);
    ASSERT_EQ(c.tower_retrain_max_seconds, 0);
    ASSERT_EQ(c.tower_retrain_threads, 2);
    ASSERT_EQ(c.tower_retrain_warm, 0);
    rc_config d;
    rc_config_defaults(&d);
    const char *names[16];
    ASSERT_EQ(rc_config_diff(&d, &c, names, 16), 7);
    ASSERT_STREQ(names[0], "tower.retrain_interval_s");
    /* the shipped file documents every key with its default */
    rc_config f;
    rc_config_defaults(&f);
    ASSERT_EQ(rc_config_load(&f, RC_SOURCE_DIR "/conf/recalld.json", err, sizeof err), 0);
    ASSERT_EQ(f.tower_retrain_interval_s, 0);
    ASSERT_EQ(f.tower_replay_clicks, d.tower_replay_clicks);
    ASSERT_EQ(f.tower_retrain_min_examples, d.tower_retrain_min_examples);
    ASSERT_EQ(f.tower_retrain_max_seconds, d.tower_retrain_max_seconds);
    bad_config("{\"tower\":{\"retrain_interval_s\":-1}}",
               "tower.retrain_interval_s: -1 is out of range");
    bad_config("{\"tower\":{\"retrain_interval_s\":\"60\"}}",
               "tower.retrain_interval_s: expected integer");
    bad_config("{\"tower\":{\"retrain_interval_s\":604801}}", "tower.retrain_interval_s");
    bad_config("{\"tower\":{\"replay_clicks\":10}}", "tower.replay_clicks: 10 is out of range");
    bad_config("{\"tower\":{\"replay_clicks\":1.5}}", "tower.replay_clicks: expected integer");
    bad_config("{\"tower\":{\"retrain_min_examples\":0}}", "tower.retrain_min_examples");
    bad_config("{\"tower\":{\"retrain_epochs\":0}}", "tower.retrain_epochs");
    bad_config("{\"tower\":{\"retrain_epochs\":101}}", "tower.retrain_epochs");
    bad_config("{\"tower\":{\"retrain_max_seconds\":-5}}", "tower.retrain_max_seconds");
    bad_config("{\"tower\":{\"retrain_threads\":0}}", "tower.retrain_threads");
    bad_config("{\"tower\":{\"retrain_threads\":65}}", "tower.retrain_threads");
    bad_config("{\"tower\":{\"retrain_warm_start\":1}}",
               "tower.retrain_warm_start: expected true or false");
    bad_config("{\"tower\":{\"retrain_interval\":60}}", "tower.retrain_interval: unknown key");
    bad_config("{\"tower\":{\"replay_clicks\":1000,\"retrain_min_examples\":1001}}",
               "tower.retrain_min_examples: must not exceed tower.replay_clicks");
}

/* ---- rc_retrain_run, warm start, cancel ---------------------------------- */

/* An offline engine fed n events of the stream (w2v dim 16). */
static rc_engine *fed_engine(const rc_config *c, uint32_t n, uint32_t nusers)
{
    char line[512];
    rc_engine *e = e2e_engine_offline(c);
    for (uint32_t j = 0; j < n; j++) {
        int len = tower_event_line(line, sizeof line, j, nusers, 0, NULL, NULL);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)len), RC_EV_OK);
    }
    rc_engine_sync(e);
    return e;
}

/* A fresh directory with a tower model of dim 16 (model) and retrain_config's
 * settings with data_dir = dir/data (created). */
static rc_config retrain_dirs(char *dir, size_t dcap, char *model, size_t mcap)
{
    tower_tmp_dir(dir, dcap, "rc-rt-");
    snprintf(model, mcap, "%s/m.tower", dir);
    tower_write_model(model, 16, 3);
    rc_config c = retrain_config(16);
    snprintf(c.data_dir, sizeof c.data_dir, "%s/data", dir);
    ASSERT_EQ(mkdir(c.data_dir, 0700), 0);
    return c;
}

static float item_cos(const rc_tower_model *a, const rc_tower_model *b, const rc_tower_item_in *in)
{
    rc_tower_work *wa = NULL, *wb = NULL;
    float va[64], vb[64], d = 0;
    ASSERT_EQ(rc_tower_work_create(a, &wa), 0);
    ASSERT_EQ(rc_tower_work_create(b, &wb), 0);
    rc_tower_item_vector(a, wa, in, va);
    rc_tower_item_vector(b, wb, in, vb);
    for (uint32_t i = 0; i < rc_tower_config_of(a)->dim; i++)
        d += va[i] * vb[i];
    rc_tower_work_destroy(wa);
    rc_tower_work_destroy(wb);
    return d;
}

TEST(tower_retrain_run_warm_start_and_cancel)
{
    rc_config c = retrain_config(16);
    c.tower_retrain_interval_s = 0;
    const uint32_t nusers = 10, nev = 600;
    rc_engine *e = fed_engine(&c, nev, nusers);
    const rc_table *t = rc_engine_table(e);
    /* the replay buffer as the engine would fill it, tags on some users */
    rc_replay *r = NULL;
    char err[512];
    ASSERT_EQ(rc_replay_create(1000, &r, err, sizeof err), 0);
    for (uint32_t j = 0; j < nev; j++) {
        char line[512], uname[16];
        uint32_t u, row;
        tower_event_line(line, sizeof line, j, nusers, 0, NULL, &u);
        json_t *ev = json_loads(line, 0, NULL);
        const char *item = json_string_value(json_object_get(ev, "item_id"));
        ASSERT_EQ(rc_table_find(t, item, strlen(item), &row), 0);
        snprintf(uname, sizeof uname, "u%u", u);
        uint64_t tag = rc_tower_hash("t1", 2), dev = u % 2 ? rc_tower_hash("ios", 3) : 0;
        rc_replay_add(r, rc_tower_hash(uname, strlen(uname)), row,
                      json_integer_value(json_object_get(ev, "ts")), dev, u < 3 ? &tag : NULL,
                      u < 3);
        json_decref(ev);
    }
    rc_replay_snap s;
    ASSERT_EQ(rc_replay_snapshot(r, 0, &s), 0);
    rc_tower_config cfg = tower_small_cfg(16);
    rc_tower_model *base = NULL, *m = NULL;
    ASSERT_EQ(rc_tower_create(&cfg, 5, &base, err, sizeof err), 0);
    rc_retrain_opts o = {.gap_ms = c.gap_ms,
                         .min_examples = 10,
                         .train = {.cfg = *rc_tower_config_of(base),
                                   .epochs = 1,
                                   .threads = 1,
                                   .progress = -1,
                                   .quiet = 1,
                                   .init = base,
                                   .lr = 1e-7f}};
    rc_retrain_result res;
    ASSERT_EQ(rc_retrain_run(&s, t, &o, &m, &res, err, sizeof err), 0);
    ASSERT(m != NULL);
    ASSERT_EQ(res.skipped, 0);
    ASSERT_EQ(res.clicks, nev);
    ASSERT_EQ(res.users, nusers);
    ASSERT_EQ(res.sessions, stream_sessions(nev, nusers));
    ASSERT_EQ(res.examples, nev - stream_sessions(nev, nusers));
    ASSERT_EQ(res.train.examples, res.examples);
    ASSERT_EQ(res.users_with_device, 5);
    ASSERT_EQ(res.users_with_tags, 3);
    ASSERT(isfinite(res.train.loss) && res.train.loss > 0);
    rc_tower_item_in in;
    rc_tower_serve_item_in(t, 7, &in);
    /* warm start with a vanishing learning rate: the base model, nearly */
    ASSERT_DBL_OP(item_cos(base, m, &in), >, 0.999);
    rc_tower_destroy(m);
    /* fresh weights (another seed): another model */
    o.train.init = NULL;
    o.train.seed = 99;
    ASSERT_EQ(rc_retrain_run(&s, t, &o, &m, &res, err, sizeof err), 0);
    ASSERT_DBL_OP(item_cos(base, m, &in), <, 0.99);
    rc_tower_destroy(m);
    m = NULL;
    /* an init model of another shape is refused */
    rc_tower_config other = cfg;
    other.hidden = 64;
    rc_tower_model *wrong = NULL;
    ASSERT_EQ(rc_tower_create(&other, 5, &wrong, err, sizeof err), 0);
    o.train.init = wrong;
    ASSERT_EQ(rc_retrain_run(&s, t, &o, &m, &res, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "init model") != NULL);
    ASSERT(m == NULL);
    rc_tower_destroy(wrong);
    /* a raised cancel flag stops at the first step, no model */
    atomic_int cancel = 1;
    o.train.init = base;
    o.train.cancel = &cancel;
    ASSERT_EQ(rc_retrain_run(&s, t, &o, &m, &res, err, sizeof err), RC_EAGAIN);
    ASSERT(strstr(err, "cancelled") != NULL);
    ASSERT(m == NULL);
    /* too few examples: skipped, the reason names the key */
    o.train.cancel = NULL;
    o.min_examples = 100000;
    ASSERT_EQ(rc_retrain_run(&s, t, &o, &m, &res, err, sizeof err), 0);
    ASSERT_EQ(res.skipped, 1);
    ASSERT(m == NULL);
    ASSERT(strstr(err, "fewer than tower.retrain_min_examples = 100000") != NULL);
    rc_tower_destroy(base);
    rc_replay_snap_free(&s);
    rc_replay_destroy(r);
    rc_engine_destroy(e);
}

/* ---- engines ----------------------------------------------------------- */

static int task_count(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void on_done(void *ud, const rc_invalid *inv, size_t n)
{
    (void)ud;
    (void)inv;
    (void)n;
}

/* Threads a threaded engine adds over the test's own. */
static int engine_threads(const rc_config *c)
{
    uv_loop_t loop;
    rc_engine *e = NULL;
    char err[512];
    ASSERT_EQ(uv_loop_init(&loop), 0);
    int before = task_count();
    if (rc_engine_create(c, &loop, on_done, NULL, &e, err, sizeof err))
        RC__FAIL("engine: %s", err);
    int n = task_count() - before;
    rc_engine_retrain_info ri;
    rc_engine_retrain_info_get(e, &ri);
    ASSERT_EQ(ri.enabled, c->tower_retrain_interval_s > 0);
    ASSERT_EQ(ri.replay.capacity, c->tower_retrain_interval_s ? c->tower_replay_clicks : 0);
    rc_engine_destroy(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    return n;
}

TEST(tower_retrain_off_by_default)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    rc_engine *e = fed_engine(&c, 50, 5);
    rc_engine_retrain_info ri;
    char err[512];
    ASSERT_EQ(rc_engine_retrain_now(e, &ri, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "tower.retrain_interval_s = 0") != NULL);
    ASSERT_EQ(ri.enabled, 0);
    ASSERT_EQ(ri.replay.capacity, 0);
    ASSERT_EQ(ri.replay.added, 0);
    ASSERT_EQ(ri.replay.bytes, 0);
    json_t *st = e2e_engine_stats(e);
    json_t *rt = json_object_get(json_object_get(st, "tower"), "retrain");
    ASSERT(json_is_false(json_object_get(rt, "enabled")));
    ASSERT_EQ(e2e_int(st, "tower.retrain.replay.capacity"), 0);
    ASSERT_EQ(e2e_int(st, "tower.retrain.done"), 0);
    ASSERT(json_object_get(st, "profiles") != NULL); /* the objects after it are intact */
    json_decref(st);
    rc_engine_destroy(e);
    /* no thread either: on adds exactly one */
    int off = engine_threads(&c);
    c.tower_retrain_interval_s = 3600;
    c.tower_replay_clicks = 1000;
    c.tower_retrain_min_examples = 10;
    int on = engine_threads(&c);
    ASSERT_EQ(on, off + 1);
}

TEST(tower_retrain_offline_engine_serves_new_model)
{
    char dir[64], model[128], saved[160], err[512], line[512];
    rc_config c = retrain_dirs(dir, sizeof dir, model, sizeof model);
    snprintf(saved, sizeof saved, "%s/data/tower.retrained", dir);
    rc_engine *e = e2e_engine_offline(&c);
    rc_engine_retrain_info ri;
    rc_engine_retrain_info_get(e, &ri);
    ASSERT_EQ(ri.enabled, 1);
    ASSERT_EQ(ri.interval_s, 3600);
    ASSERT_EQ(ri.replay.capacity, 1000);
    ASSERT_EQ(ri.replay.bytes, rc_replay_bytes_for(1000));
    /* no model served: skipped */
    ASSERT_EQ(rc_engine_retrain_now(e, &ri, err, sizeof err), RC_ENOENT);
    ASSERT(strstr(err, "no tower model served") != NULL);
    if (rc_engine_tower_load(e, model, NULL, err, sizeof err))
        RC__FAIL("load: %s", err);
    /* an empty buffer: skipped */
    ASSERT_EQ(rc_engine_retrain_now(e, &ri, err, sizeof err), RC_ENOENT);
    ASSERT(strstr(err, "0 examples") != NULL);
    ASSERT(strstr(err, "fewer than tower.retrain_min_examples = 200") != NULL);
    ASSERT_EQ(ri.skipped, 2);
    ASSERT_STREQ(ri.last_status, "skipped");
    const uint32_t nusers = 10, nev = 600;
    for (uint32_t j = 0; j < nev; j++) {
        int len = tower_event_line(line, sizeof line, j, nusers, 0, NULL, NULL);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)len), RC_EV_OK);
    }
    ASSERT_EQ(rc_engine_apply_line(e, line, strlen(line)), RC_EV_OK); /* a duplicate: not kept */
    rc_engine_sync(e);
    rc_engine_retrain_info_get(e, &ri);
    ASSERT_EQ(ri.replay.fill, nev);
    ASSERT_EQ(ri.replay.added, nev);
    float u0[64], u1[64], i0[64], i1[64];
    uint32_t dim;
    ASSERT_EQ(rc_engine_tower_user_vector(e, "u2", 2, 0, u0, 64, &dim), 0);
    ASSERT_EQ(rc_engine_tower_item_vector(e, "i5", 2, i0, 64, &dim), 0);
    ASSERT_EQ(dim, 16);

    ASSERT_EQ(rc_engine_retrain_now(e, &ri, err, sizeof err), 0);
    ASSERT_EQ(ri.done, 1);
    ASSERT_EQ(ri.skipped, 2);
    ASSERT_EQ(ri.failed, 0);
    ASSERT_STREQ(ri.last_status, "done");
    ASSERT_STREQ(ri.last_error, "");
    ASSERT_STREQ(ri.last_path, saved);
    ASSERT_EQ(ri.last_clicks, nev);
    ASSERT_EQ(ri.last_users, nusers);
    ASSERT_EQ(ri.last_examples, nev - stream_sessions(nev, nusers));
    ASSERT_EQ(ri.last_trained, 2 * ri.last_examples); /* 2 epochs */
    ASSERT(isfinite(ri.last_loss) && ri.last_loss > 0);
    ASSERT_GT(ri.last_end_ms, 0);
    rc_engine_tower_info ti;
    rc_engine_tower_info_get(e, &ti);
    ASSERT_STREQ(ti.path, saved);
    ASSERT_EQ(ti.items, rc_table_size(rc_engine_table(e)));
    /* the served model changed */
    ASSERT_EQ(rc_engine_tower_user_vector(e, "u2", 2, 0, u1, 64, &dim), 0);
    ASSERT_EQ(rc_engine_tower_item_vector(e, "i5", 2, i1, 64, &dim), 0);
    ASSERT_DBL_OP(max_abs_diff(u0, u1, dim), >, 1e-3);
    ASSERT_DBL_OP(max_abs_diff(i0, i1, dim), >, 1e-3);
    /* the saved file is the served model */
    rc_tower_model *m = NULL;
    if (rc_tower_load(saved, &m, err, sizeof err))
        RC__FAIL("load %s: %s", saved, err);
    ASSERT_EQ(rc_tower_params(m), ti.params);
    rc_tower_work *w = NULL;
    ASSERT_EQ(rc_tower_work_create(m, &w), 0);
    uint32_t row;
    ASSERT_EQ(rc_table_find(rc_engine_table(e), "i5", 2, &row), 0);
    rc_tower_item_in in;
    float want[64];
    rc_tower_serve_item_in(rc_engine_table(e), row, &in);
    rc_tower_item_vector(m, w, &in, want);
    /* served from the mirror, in fp16 by default (tower.mirror_fp16): the
     * model's vector rounded to fp16, bit for bit */
    uint16_t h[64];
    rc_half_encode(h, want, dim);
    rc_half_decode(want, h, dim);
    ASSERT_DBL_OP(max_abs_diff(want, i1, dim), <, 1e-7);
    rc_tower_work_destroy(w);
    rc_tower_destroy(m);
    /* two_tower recall answers from the new model */
    rc_hit hits[5];
    uint32_t n = 0;
    int fb = 0;
    rc_recall_req q = {.user = "u2", .ulen = 2, .k = 5, .two_tower = 1};
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), 0);
    ASSERT_EQ(n, 5);
    ASSERT_EQ(fb, 0);
    /* /metrics */
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_metrics_sources src = {.engine = e};
    rc_metrics_render(&src, &b);
    ASSERT(strstr(b.data, "recalld_tower_retrains_total{result=\"done\"} 1\n") != NULL);
    ASSERT(strstr(b.data, "recalld_tower_retrains_total{result=\"skipped\"} 2\n") != NULL);
    ASSERT(strstr(b.data, "recalld_tower_replay_clicks 600\n") != NULL);
    ASSERT(strstr(b.data, "recalld_tower_replay_capacity_clicks 1000\n") != NULL);
    ASSERT(strstr(b.data, "recalld_tower_retrain_last_examples ") != NULL);
    rc_buf_free(&b);
    rc_engine_destroy(e);
    rm_rf(dir);
}

/* A checkpoint holds the retrainer's replay buffer (checkpoint.tower_replay):
 * a restarted engine holds the same clicks and retrains on them before any
 * new click arrives; with the key off on the restoring side it starts empty. */
TEST(tower_retrain_checkpoint_keeps_replay)
{
    char dir[64], model[128], err[512];
    rc_config c = retrain_dirs(dir, sizeof dir, model, sizeof model);
    const uint32_t nusers = 10, nev = 600;
    rc_engine *e = fed_engine(&c, nev, nusers);
    rc_engine_checkpoint_result cr;
    ASSERT_EQ(rc_engine_checkpoint_now(e, &cr, err, sizeof err), 0);
    ASSERT_EQ(cr.rc, 0);
    /* the retrain this engine would run now (the buffer is its input) */
    rc_engine_retrain_info ri;
    float u0[64], u1[64], i0[64], i1[64];
    uint32_t dim;
    if (rc_engine_tower_load(e, model, NULL, err, sizeof err))
        RC__FAIL("load: %s", err);
    ASSERT_EQ(rc_engine_retrain_now(e, &ri, err, sizeof err), 0);
    ASSERT_EQ(ri.last_clicks, nev);
    ASSERT_EQ(rc_engine_tower_user_vector(e, "u2", 2, 0, u0, 64, &dim), 0);
    ASSERT_EQ(rc_engine_tower_item_vector(e, "i5", 2, i0, 64, &dim), 0);
    rc_engine_destroy(e);

    e = e2e_engine_offline(&c);
    rc_engine_retrain_info_get(e, &ri);
    ASSERT_EQ(ri.replay.fill, nev);
    json_t *st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_tower_clicks"), nev);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_dropped"), 0);
    ASSERT(json_is_true(json_object_get(json_object_get(st, "checkpoint"), "restored_state_ok")));
    json_decref(st);
    /* a retrain right after the restart learns from the same clicks, in the
     * same order with the same users, devices and tags: the same model */
    if (rc_engine_tower_load(e, model, NULL, err, sizeof err))
        RC__FAIL("load: %s", err);
    ASSERT_EQ(rc_engine_retrain_now(e, &ri, err, sizeof err), 0);
    ASSERT_EQ(ri.last_clicks, nev);
    ASSERT_EQ(ri.last_examples, nev - stream_sessions(nev, nusers));
    ASSERT_EQ(rc_engine_tower_user_vector(e, "u2", 2, 0, u1, 64, &dim), 0);
    ASSERT_EQ(rc_engine_tower_item_vector(e, "i5", 2, i1, 64, &dim), 0);
    ASSERT_DBL_OP(max_abs_diff(u0, u1, dim), <, 1e-6);
    ASSERT_DBL_OP(max_abs_diff(i0, i1, dim), <, 1e-6);
    rc_engine_destroy(e);

    rc_config off = c;
    off.ckpt_tower_replay = 0;
    e = e2e_engine_offline(&off);
    rc_engine_retrain_info_get(e, &ri);
    ASSERT_EQ(ri.replay.fill, 0);
    st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_tower_clicks"), 0);
    ASSERT_GT(e2e_int(st, "checkpoint.restored_users"), 0); /* the rest is restored */
    json_decref(st);
    rc_engine_destroy(e);
    rm_rf(dir);
}

/* ---- the daemon ------------------------------------------------------------ */

static int is_ok(json_t *r) { return json_is_true(json_object_get(r, "ok")); }

static const char *err_msg(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "message"));
}

static long long stat_int(const char *sock, const char *path)
{
    json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
    long long v = e2e_int(st, path);
    json_decref(st);
    return v;
}

static long long wait_stat(const char *sock, const char *path, long long atleast, int timeout_ms)
{
    long long t0 = e2e_now_ms(), v;
    while ((v = stat_int(sock, path)) < atleast && e2e_now_ms() - t0 < e2e_scaled_ms(timeout_ms))
        usleep(20000);
    return v;
}

static int wait_loaded(const char *sock)
{
    long long t0 = e2e_now_ms();
    int l = 0;
    while (!l && e2e_now_ms() - t0 < e2e_scaled_ms(120000)) {
        json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
        l = json_is_true(json_object_get(json_object_get(st, "tower"), "loaded"));
        json_decref(st);
        if (!l)
            usleep(10000);
    }
    return l;
}

TEST(tower_retrain_daemon_periodic_and_op)
{
    char dir[64], model[128], conf[128], data[128], saved[160];
    tower_tmp_dir(dir, sizeof dir, "rc-rt-");
    snprintf(model, sizeof model, "%s/a.tower", dir);
    snprintf(conf, sizeof conf, "%s/recalld.json", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(saved, sizeof saved, "%s/tower.retrained", data);
    ASSERT_EQ(mkdir(data, 0700), 0);
    tower_write_model(model, 64, 1);
    char text[1024];
    snprintf(text, sizeof text,
             "{\"data_dir\":\"%s\",\"tower\":{\"model\":\"%s\",\"retrain_interval_s\":1,"
             "\"replay_clicks\":2000,\"retrain_min_examples\":300,\"retrain_epochs\":1}}",
             data, model);
    e2e_write_file(conf, text);
    const char *extra[] = {"--config", conf, NULL};
    e2e_daemon d;
    e2e_start(&d, extra);
    ASSERT(wait_loaded(d.sock));
    /* periodic: too few examples first (skipped), then a retrain */
    tower_produce(&d, 0, 100, 10, 0);
    ASSERT_GE(wait_stat(d.sock, "tower.retrain.skipped", 1, 120000), 1);
    tower_produce(&d, 100, 500, 10, 0);
    json_decref(e2e_wait_done(d.sock, 600, 120000));
    ASSERT_GE(wait_stat(d.sock, "tower.retrain.done", 1, 120000), 1);
    json_t *st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    json_t *tw = json_object_get(st, "tower");
    ASSERT_STREQ(json_string_value(json_object_get(tw, "path")), saved);
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(tw, "retrain"), "last_path")),
                 saved);
    ASSERT_EQ(e2e_int(st, "tower.retrain.replay.fill"), 600);
    ASSERT_EQ(e2e_int(st, "tower.retrain.replay.capacity"), 2000);
    ASSERT_GT(e2e_int(st, "tower.retrain.last_examples"), 300);
    json_decref(st);
    /* the saved file loads and differs from the one loaded at start */
    rc_tower_model *m0 = NULL, *m1 = NULL;
    char err[512];
    ASSERT_EQ(rc_tower_load(model, &m0, err, sizeof err), 0);
    if (rc_tower_load(saved, &m1, err, sizeof err))
        RC__FAIL("load %s: %s", saved, err);
    float w2v[64];
    for (int i = 0; i < 64; i++)
        w2v[i] = (float)((i * 37) % 11) - 5.0f;
    rc_tower_item_in in = {.id_hash = rc_tower_hash("i5", 2),
                           .city_hash = rc_tower_hash("c2", 2),
                           .cate_hash = rc_tower_hash("k1", 2),
                           .w2v = w2v};
    ASSERT_DBL_OP(item_cos(m0, m1, &in), <, 0.9999);
    rc_tower_destroy(m0);
    rc_tower_destroy(m1);
    /* two_tower recall answers */
    json_t *r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"mode\":\"two_tower\","
                                    "\"k\":5}");
    if (!is_ok(r))
        RC__FAIL("recall: %s", err_msg(r));
    ASSERT_EQ(json_array_size(json_object_get(r, "items")), 5);
    ASSERT(json_object_get(r, "fallback") == NULL);
    json_decref(r);
    /* the operator's op: a retrain now, its figures */
    long long done = stat_int(d.sock, "tower.retrain.done");
    r = e2e_request(d.sock, "{\"op\":\"retrain_model\"}");
    if (!is_ok(r))
        RC__FAIL("retrain_model: %s", err_msg(r));
    ASSERT_STREQ(json_string_value(json_object_get(r, "path")), saved);
    ASSERT(json_is_true(json_object_get(r, "saved")));
    ASSERT_EQ(e2e_int(r, "clicks"), 600);
    ASSERT_EQ(e2e_int(r, "users"), 10);
    ASSERT_EQ(e2e_int(r, "examples"), 600 - stream_sessions(600, 10));
    ASSERT_GT(e2e_int(r, "params"), 1000);
    json_decref(r);
    ASSERT_GE(stat_int(d.sock, "tower.retrain.done"), done + 1);
    ASSERT_EQ(stat_int(d.sock, "tower.retrain.failed"), 0);
    ASSERT_EQ(e2e_stop(&d), 0);
    rm_rf(dir);
    rm_rf(d.dir);
}

TEST(tower_retrain_daemon_sigterm_cancels)
{
    char dir[64], model[128], conf[128];
    tower_tmp_dir(dir, sizeof dir, "rc-rt-");
    snprintf(model, sizeof model, "%s/a.tower", dir);
    snprintf(conf, sizeof conf, "%s/recalld.json", dir);
    tower_write_model(model, 64, 1);
    char text[1024];
    /* a retrain of many epochs: seconds of work at least */
    snprintf(text, sizeof text,
             "{\"tower\":{\"model\":\"%s\",\"retrain_interval_s\":1,\"replay_clicks\":5000,"
             "\"retrain_min_examples\":100,\"retrain_epochs\":100,\"retrain_max_seconds\":0}}",
             model);
    e2e_write_file(conf, text);
    const char *extra[] = {"--config", conf, NULL};
    e2e_daemon d;
    e2e_start(&d, extra);
    ASSERT(wait_loaded(d.sock));
    tower_produce(&d, 0, 2000, 20, 0);
    json_decref(e2e_wait_done(d.sock, 2000, 120000));
    long long t0 = e2e_now_ms();
    json_t *st = NULL;
    int running = 0;
    while (!running && e2e_now_ms() - t0 < e2e_scaled_ms(120000)) {
        st = e2e_request(d.sock, "{\"op\":\"stats\"}");
        running = json_is_true(json_object_get(
                      json_object_get(json_object_get(st, "tower"), "retrain"), "running")) &&
                  e2e_int(st, "tower.retrain.replay.fill") == 2000;
        json_decref(st);
        if (!running)
            usleep(10000);
    }
    ASSERT(running);
    /* into the training proper: a run on a filled replay (the attempts
     * before the stream saw an empty one and were skipped) is logged just
     * before it trains; it may have started before the last clicks arrived
     * (clicks=1996: seen under TSan), and runs long enough either way. A run
     * that started on a partly filled replay (a few hundred clicks) can end
     * before the SIGTERM, with the next one not started yet (seen under TSan
     * in a CI rehearsal): only a run over at least 1,000 clicks counts. */
    char *out = NULL;
    for (t0 = e2e_now_ms();
         e2e_sh(&out, "grep -cE 'msg=\"tower: retraining\" clicks=[1-9][0-9]{3,} ' %s", d.log) != 0;
         usleep(10000)) {
        free(out);
        out = NULL;
        if (e2e_now_ms() - t0 > e2e_scaled_ms(120000))
            RC__FAIL("no retrain started after %lld s (log %s)", e2e_scaled_ms(120000) / 1000,
                     d.log);
    }
    free(out);
    /* the exit time is reported, not bounded: the proof that the retrain was
     * cancelled (not waited for) is its "cancelled" failure in the log */
    long long ts = e2e_now_ms();
    ASSERT_EQ(e2e_stop(&d), 0);
    long long took = e2e_now_ms() - ts;
    printf("SIGTERM during a retrain: exited in %lld ms\n", took);
    out = NULL;
    e2e_sh(&out, "grep -c 'retrain failed.*cancelled' %s", d.log);
    ASSERT(out && atoi(out) >= 1);
    free(out);
    rm_rf(dir);
    rm_rf(d.dir);
}
