#include <pthread.h>
#include <sched.h>

#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/session.h"
#include "test.h"

#define MIN_MS (60 * 1000LL)

static rc_session *mk(uint32_t max_users, uint32_t history)
{
    rc_session_opts o = {.max_users = max_users, .history = history};
    rc_session *s = NULL;
    char err[128];
    ASSERT_EQ(rc_session_create(&o, &s, err, sizeof err), 0);
    ASSERT(s);
    return s;
}

/* Adds a click; returns its flags, ctx/nctx filled. */
static unsigned add(rc_session *s, const char *u, uint32_t row, int64_t ts, uint32_t *ctx,
                    uint32_t max_ctx, uint32_t *nctx)
{
    unsigned f = 0;
    uint32_t n = 99;
    ASSERT_EQ(rc_session_add(s, u, strlen(u), row, ts, ctx, max_ctx, &n, &f), 0);
    if (nctx)
        *nctx = n;
    return f;
}

TEST(session_create_rejects_bad_opts)
{
    rc_session *s = (rc_session *)1;
    char err[128] = "";
    rc_session_opts o = {.history = 256};
    ASSERT_EQ(rc_session_create(&o, &s, err, sizeof err), RC_EINVAL);
    ASSERT(s == NULL);
    ASSERT(strstr(err, "history"));
    o = (rc_session_opts){.gap_ms = -1};
    ASSERT_EQ(rc_session_create(&o, &s, NULL, 0), RC_EINVAL);
    ASSERT_EQ(rc_session_create(NULL, NULL, NULL, 0), RC_EINVAL);
    ASSERT_EQ(rc_session_create(NULL, &s, NULL, 0), 0);
    uint32_t n;
    ASSERT_EQ(rc_session_add(s, "", 0, 1, 1, NULL, 0, &n, NULL), RC_EINVAL);
    ASSERT_EQ(rc_session_add(s, "u", 1, 1, 1, NULL, 3, &n, NULL), RC_EINVAL);
    ASSERT_EQ(rc_session_add(s, "u", 1, 1, -1, NULL, 0, &n, NULL), RC_EINVAL);
    ASSERT_EQ(rc_session_recent(s, "nobody", 6, NULL, 0, &n), RC_ENOENT);
    rc_session_destroy(s);
    rc_session_destroy(NULL);
}

TEST(session_context_and_gap_split)
{
    rc_session *s = mk(0, 20);
    uint32_t ctx[8], n;
    int64_t t = 1000000;
    ASSERT_EQ(add(s, "u1", 10, t, ctx, 8, &n), RC_SESS_NEW_USER | RC_SESS_NEW_SESSION);
    ASSERT_EQ(n, 0);
    for (uint32_t i = 1; i < 12; i++) {
        ASSERT_EQ(add(s, "u1", 10 + i, t + i * MIN_MS, ctx, 4, &n), 0);
        ASSERT_EQ(n, RC_MIN(i, 4u));
        /* most recent last */
        for (uint32_t j = 0; j < n; j++)
            ASSERT_EQ(ctx[j], 10 + i - n + j);
    }
    /* exactly gap_ms later is still the same session; one ms more is not */
    int64_t last = t + 11 * MIN_MS;
    ASSERT_EQ(add(s, "u1", 50, last + 30 * MIN_MS, ctx, 8, &n), 0);
    ASSERT_EQ(n, 8);
    ASSERT_EQ(ctx[7], 21);
    last += 30 * MIN_MS;
    ASSERT_EQ(add(s, "u1", 60, last + 30 * MIN_MS + 1, ctx, 8, &n), RC_SESS_NEW_SESSION);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(add(s, "u1", 61, last + 31 * MIN_MS, ctx, 8, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ctx[0], 60);
    /* another user is independent */
    ASSERT_EQ(add(s, "u2", 5, last, ctx, 8, &n), RC_SESS_NEW_USER | RC_SESS_NEW_SESSION);
    rc_session_stats st;
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.users, 2);
    ASSERT_EQ(st.sessions, 3);
    rc_session_destroy(s);
}

TEST(session_recent_oldest_first_bounded)
{
    rc_session *s = mk(0, 5);
    for (uint32_t i = 0; i < 9; i++)
        add(s, "user-with-a-key-longer-than-24-bytes", i, 1000 + i, NULL, 0, NULL);
    rc_click c[16];
    uint32_t n;
    const char *k = "user-with-a-key-longer-than-24-bytes";
    ASSERT_EQ(rc_session_recent(s, k, strlen(k), c, 16, &n), 0);
    ASSERT_EQ(n, 5); /* history bound */
    for (uint32_t i = 0; i < n; i++) {
        ASSERT_EQ(c[i].row, 4 + i);
        ASSERT_EQ(c[i].ts_ms, 1004 + i);
    }
    ASSERT_EQ(rc_session_recent(s, k, strlen(k), c, 2, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(c[0].row, 7);
    ASSERT_EQ(c[1].row, 8);
    ASSERT_EQ(rc_session_recent(s, k, 5, c, 2, &n), RC_ENOENT); /* prefix is another key */
    rc_session_destroy(s);
}

TEST(session_duplicate_reordered_late)
{
    rc_session *s = mk(0, 20);
    uint32_t ctx[8], n;
    rc_click c[20];
    int64_t t = 100 * MIN_MS;
    add(s, "u", 1, t, ctx, 8, &n);
    add(s, "u", 2, t + 2 * MIN_MS, ctx, 8, &n);
    add(s, "u", 3, t + 4 * MIN_MS, ctx, 8, &n);
    /* duplicate: same item, same ts -> not applied */
    ASSERT_EQ(add(s, "u", 2, t + 2 * MIN_MS, ctx, 8, &n), RC_SESS_DUPLICATE);
    ASSERT_EQ(n, 0);
    /* same ts, other item: a distinct click */
    ASSERT_EQ(add(s, "u", 9, t + 4 * MIN_MS, ctx, 8, &n), 0);
    ASSERT_EQ(n, 3);
    /* reordered: between clicks 1 and 2; context = clicks before it */
    ASSERT_EQ(add(s, "u", 7, t + MIN_MS, ctx, 8, &n), RC_SESS_REORDERED);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ctx[0], 1);
    ASSERT_EQ(rc_session_recent(s, "u", 1, c, 20, &n), 0);
    ASSERT_EQ(n, 5);
    static const uint32_t want[] = {1, 7, 2, 3, 9};
    for (uint32_t i = 0; i < n; i++) {
        ASSERT_EQ(c[i].row, want[i]);
        if (i)
            ASSERT_LE(c[i - 1].ts_ms, c[i].ts_ms);
    }
    /* slightly before the session start (within gap): joins the session, no context */
    ASSERT_EQ(add(s, "u", 8, t - 10 * MIN_MS, ctx, 8, &n), RC_SESS_REORDERED);
    ASSERT_EQ(n, 0);
    /* start a new session; a click from the previous one is now late */
    int64_t t2 = t + 120 * MIN_MS;
    ASSERT_EQ(add(s, "u", 20, t2, ctx, 8, &n), RC_SESS_NEW_SESSION);
    ASSERT_EQ(add(s, "u", 21, t + 5 * MIN_MS, ctx, 8, &n), RC_SESS_LATE);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(rc_session_recent(s, "u", 1, c, 20, &n), 0);
    ASSERT_EQ(n, 7);
    ASSERT_EQ(c[6].row, 20);
    /* the new session's context does not reach into the old one */
    ASSERT_EQ(add(s, "u", 22, t2 + 1000, ctx, 8, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ctx[0], 20);
    /* a reordered click inside the new session */
    ASSERT_EQ(add(s, "u", 23, t2 + 500, ctx, 8, &n), RC_SESS_REORDERED);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ctx[0], 20);
    rc_session_stats st;
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.duplicates, 1);
    ASSERT_EQ(st.reordered, 3);
    ASSERT_EQ(st.late, 1);
    ASSERT_EQ(st.sessions, 2);
    rc_session_destroy(s);
}

TEST(session_lru_evicts_least_recently_active)
{
    rc_session *s = mk(100, 4);
    char k[32];
    uint32_t n;
    rc_click c[4];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "user%d", i);
        add(s, k, (uint32_t)i, 1000 + i, NULL, 0, NULL);
    }
    /* touch users 0..9: now user10 is the least recently active */
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "user%d", i);
        ASSERT_EQ(add(s, k, 500, 2000 + i, NULL, 0, NULL), 0);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "new%d", i);
        ASSERT_EQ(add(s, k, 1, 3000, NULL, 0, NULL), RC_SESS_NEW_USER | RC_SESS_NEW_SESSION);
    }
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "user%d", i);
        int rc = rc_session_recent(s, k, strlen(k), c, 4, &n);
        ASSERT_EQ(rc, i >= 10 && i < 15 ? RC_ENOENT : 0);
    }
    rc_session_stats st;
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.users, 100);
    ASSERT_EQ(st.evicted_lru, 5);
    /* an evicted user comes back as new */
    ASSERT_EQ(add(s, "user10", 1, 4000, NULL, 0, NULL), RC_SESS_NEW_USER | RC_SESS_NEW_SESSION);
    ASSERT_EQ(rc_session_recent(s, "user10", 6, c, 4, &n), 0);
    ASSERT_EQ(n, 1);
    rc_session_destroy(s);
}

TEST(session_ttl_expire)
{
    rc_session_opts o = {.ttl_ms = 1000 * MIN_MS};
    rc_session *s = NULL;
    ASSERT_EQ(rc_session_create(&o, &s, NULL, 0), 0);
    char k[32];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "u%d", i);
        /* even users idle since t=0, odd ones active at 2000 min */
        add(s, k, 1, 0, NULL, 0, NULL);
        if (i % 2)
            add(s, k, 2, 2000 * MIN_MS, NULL, 0, NULL);
    }
    int64_t now = 2000 * MIN_MS;
    uint32_t total = 0, calls = 0, d;
    /* small steps: 50 users scanned per call */
    do {
        d = rc_session_expire(s, now, 50);
        total += d;
        calls++;
    } while (calls < 6);
    ASSERT_EQ(total, 150);
    ASSERT_EQ(rc_session_expire(s, now, 0), 0);
    rc_session_stats st;
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.users, 150);
    ASSERT_EQ(st.expired_ttl, 150);
    uint32_t n;
    rc_click c[2];
    ASSERT_EQ(rc_session_recent(s, "u2", 2, c, 2, &n), RC_ENOENT);
    ASSERT_EQ(rc_session_recent(s, "u3", 2, c, 2, &n), 0);
    /* everything expires much later; freed records are reused without growth */
    ASSERT_EQ(rc_session_expire(s, now + 2000 * MIN_MS, 0), 150);
    size_t before = st.bytes;
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "v%d", i);
        add(s, k, 1, now, NULL, 0, NULL);
    }
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.users, 300);
    ASSERT_LE(st.bytes, before + 64 * 1024); /* tables may grow, records not */
    rc_session_destroy(s);
}

TEST(session_history_wrap_and_big_time_jump)
{
    rc_session *s = mk(0, 3);
    uint32_t ctx[8], n;
    rc_click c[3];
    add(s, "u", 1, 100, ctx, 8, &n);
    add(s, "u", 2, 110, ctx, 8, &n);
    add(s, "u", 3, 120, ctx, 8, &n);
    /* older than everything held in a full array: flagged, not stored */
    ASSERT_EQ(add(s, "u", 4, 50, ctx, 8, &n), RC_SESS_REORDERED);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(rc_session_recent(s, "u", 1, c, 3, &n), 0);
    ASSERT_EQ(c[0].row, 1);
    /* newer than the oldest: the oldest falls out */
    ASSERT_EQ(add(s, "u", 7, 105, ctx, 8, &n), RC_SESS_REORDERED);
    ASSERT_EQ(n, 0); /* the click before it is no longer held */
    ASSERT_EQ(rc_session_recent(s, "u", 1, c, 3, &n), 0);
    ASSERT_EQ(c[0].row, 7);
    ASSERT_EQ(c[1].row, 2);
    /* 100 days later: beyond the u32 offset range, held clicks are rebased */
    int64_t far = 100LL * 24 * 3600 * 1000;
    ASSERT_EQ(add(s, "u", 5, far, ctx, 8, &n), RC_SESS_NEW_SESSION);
    ASSERT_EQ(add(s, "u", 6, far + 1, ctx, 8, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(rc_session_recent(s, "u", 1, c, 3, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(c[0].ts_ms, far);
    ASSERT_EQ(c[1].ts_ms, far + 1);
    rc_session_destroy(s);
}

struct reader_arg {
    rc_session *s;
    volatile int stop;
    uint64_t reads;
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    rc_click c[20];
    char k[32];
    uint32_t n, i = 0;
    while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
        snprintf(k, sizeof k, "user%u", i++ % 2000);
        if (rc_session_recent(a->s, k, strlen(k), c, 20, &n) == 0) {
            ASSERT_LE(n, 20);
            ASSERT_GE(n, 1);
            for (uint32_t j = 1; j < n; j++)
                ASSERT_LE(c[j - 1].ts_ms, c[j].ts_ms);
            __atomic_fetch_add(&a->reads, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

TEST(session_concurrent_recent_while_adding)
{
    /* max_users below the key space: eviction and reuse run under the reader */
    rc_session *s = mk(1500, 20);
    struct reader_arg a = {.s = s};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, reader, &a), 0);
    rc_rng r;
    rc_rng_seed(&r, 7);
    char k[32];
    uint32_t ctx[10], n;
    uint64_t reads = 0;
    for (int64_t i = 0; i < 300000; i++) {
        snprintf(k, sizeof k, "user%u", rc_rng_below(&r, 2000));
        int64_t ts = 10000 + i * 1000 - (int64_t)rc_rng_below(&r, 5000); /* some reordering */
        unsigned f;
        ASSERT_EQ(rc_session_add(s, k, strlen(k), (uint32_t)i, ts, ctx, 10, &n, &f), 0);
        ASSERT_LE(n, 10);
        if (i % 50000 == 0)
            rc_session_expire(s, ts, 100);
        /* Every 30000 adds the writer waits for 10 more reads: the reader
         * runs during the adds however the threads are scheduled. */
        if (i % 30000 == 29999) {
            while (__atomic_load_n(&a.reads, __ATOMIC_RELAXED) < reads + 10)
                sched_yield();
            reads = __atomic_load_n(&a.reads, __ATOMIC_RELAXED);
        }
    }
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_GE(a.reads, 100);
    rc_session_stats st;
    rc_session_stats_get(s, &st);
    ASSERT_LE(st.users, 1500);
    ASSERT_GT(st.evicted_lru, 0);
    ASSERT_GT(st.reordered, 0);
    rc_session_destroy(s);
}

TEST(session_memory_linear_and_bounded)
{
    rc_session *s = mk(0, 20); /* defaults: 1M users */
    rc_session_stats st;
    char k[32];
    size_t at[4] = {0};
    uint32_t users = 1000000;
    for (uint32_t i = 0; i < users; i++) {
        int l = snprintf(k, sizeof k, "u%u", i);
        for (int j = 0; j < 20; j++)
            if (i % 20 == 0 || j == 0) /* a few full users, most with one click */
                ASSERT_EQ(
                    rc_session_add(s, k, (size_t)l, (uint32_t)j, 1000 * j, NULL, 0, NULL, NULL), 0);
        if ((i + 1) % (users / 4) == 0) {
            rc_session_stats_get(s, &st);
            at[(i + 1) / (users / 4) - 1] = st.bytes;
        }
    }
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.users, users);
    /* a one-click user takes the record's inline room only (104 B; 216 B when
     * every record held the full history): 1M such users and 50,000 full
     * ones stay under 160 MB, where full-history records took ~230 MB */
    ASSERT_LT(st.bytes, 160u * 1024 * 1024);
    fprintf(stderr, "session: %zu bytes for %u users (%.1f B/user)\n", st.bytes, users,
            (double)st.bytes / users);
    /* roughly linear: each quarter adds about the same */
    for (int q = 1; q < 4; q++) {
        double step = (double)(at[q] - at[q - 1]), first = (double)at[0];
        ASSERT_GT(step, first * 0.7);
        ASSERT_LT(step, first * 1.4);
    }
    rc_session_destroy(s);
}

/* A user with more clicks than the record's inline room (6) spills them to a
 * block that grows to the history (20): every click is kept in time order with
 * its time, the session context runs across the spill, the bytes grow with the
 * spilled users only and come back when they are evicted or expire, and a
 * reordered click lands at its place inside a spilled array. */
/* A history over SPILL_ONCE_MAX (32) grows by doubling (a block of 64
 * clicks for every user past 6 would be 512 bytes): 6 inline, then 12, 24,
 * 48, 64, every click kept in order. */
TEST(session_large_history_spills_by_doubling)
{
    rc_session *s = mk(4, 64);
    rc_session_stats st;
    rc_click c[64];
    uint32_t n;
    add(s, "u", 1000, 0, NULL, 0, NULL);
    rc_session_stats_get(s, &st);
    size_t base = st.bytes;
    for (uint32_t i = 1; i < 80; i++) {
        add(s, "u", 1000 + i, 10 * (int64_t)i, NULL, 0, NULL);
        uint32_t held = RC_MIN(i + 1, 64u);
        size_t room = held > 48 ? 64 : held > 24 ? 48 : held > 12 ? 24 : held > 6 ? 12 : 0;
        rc_session_stats_get(s, &st);
        ASSERT_EQ(st.bytes, base + room * 2 * sizeof(uint32_t));
        ASSERT_EQ(rc_session_recent(s, "u", 1, c, 64, &n), 0);
        ASSERT_EQ(n, held);
        ASSERT_EQ(c[0].row, 1000 + i + 1 - held);
        ASSERT_EQ(c[n - 1].row, 1000 + i);
    }
    ASSERT_EQ(st.spill_failures, 0);
    rc_session_destroy(s);
}

TEST(session_spill_keeps_history_and_bytes)
{
    rc_session *s = mk(4, 20);
    rc_session_stats st;
    uint32_t ctx[32], n;
    rc_click c[32];
    char k[16];
    /* every shard's table allocated first, so that bytes move with records only */
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "w%d", i);
        add(s, k, 1, 0, NULL, 0, NULL);
    }
    ASSERT_EQ(rc_session_expire(s, 8 * 24 * 3600 * 1000LL, 0), 4);
    rc_session_stats_get(s, &st);
    uint64_t ev0 = st.evicted_lru;
    add(s, "small", 1, 1000, NULL, 0, NULL);
    add(s, "mid", 200, 5000, NULL, 0, NULL);
    add(s, "big", 100, 1000, NULL, 0, NULL);
    rc_session_stats_get(s, &st);
    size_t base = st.bytes; /* three users in the tables, all inline */
    for (uint32_t i = 1; i < 25; i++) {
        ASSERT_EQ(add(s, "big", 100 + i, 1000 + 10 * (int64_t)i, ctx, 32, &n) &
                      ~(unsigned)(RC_SESS_NEW_USER | RC_SESS_NEW_SESSION),
                  0);
        ASSERT_EQ(n, RC_MIN(i, 19u)); /* every earlier click held is context */
        for (uint32_t j = 0; j < n; j++)
            ASSERT_EQ(ctx[j], 100 + i - n + j);
        rc_session_stats_get(s, &st);
        /* inline up to 6 clicks, then one block of history (20) */
        size_t want = base + (i >= 6 ? 160 : 0);
        ASSERT_EQ(st.bytes, want);
    }
    ASSERT_EQ(rc_session_recent(s, "big", 3, c, 32, &n), 0);
    ASSERT_EQ(n, 20);
    for (uint32_t j = 0; j < n; j++) {
        ASSERT_EQ(c[j].row, 105 + j);
        ASSERT_EQ(c[j].ts_ms, 1000 + 10 * (int64_t)(5 + j));
    }
    /* reordered into the middle of the spilled array: the oldest falls out */
    ASSERT_EQ(add(s, "big", 999, 1000 + 10 * 14 + 5, ctx, 32, &n), RC_SESS_REORDERED);
    ASSERT_EQ(rc_session_recent(s, "big", 3, c, 32, &n), 0);
    ASSERT_EQ(n, 20);
    ASSERT_EQ(c[0].row, 106);
    ASSERT_EQ(c[8].row, 114);
    ASSERT_EQ(c[9].row, 999);
    ASSERT_EQ(c[10].row, 115);
    ASSERT_EQ(c[19].row, 124);
    /* a second spilled user, then evictions: the spilled blocks are freed */
    for (uint32_t i = 1; i < 8; i++)
        add(s, "mid", 200 + i, 5000 + (int64_t)i, NULL, 0, NULL);
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.bytes, base + 160 + 160);
    add(s, "x1", 1, 6000, NULL, 0, NULL); /* 4 users: full */
    add(s, "x2", 1, 6001, NULL, 0, NULL); /* evicts "small" */
    add(s, "x3", 1, 6002, NULL, 0, NULL); /* evicts "big" */
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.bytes, base + 160);
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.evicted_lru - ev0, 2);
    ASSERT_EQ(rc_session_recent(s, "big", 3, c, 32, &n), RC_ENOENT);
    ASSERT_EQ(rc_session_recent(s, "mid", 3, c, 32, &n), 0);
    ASSERT_EQ(n, 8);
    ASSERT_EQ(c[7].row, 207);
    /* its record reused by a new user starts inline again */
    add(s, "x4", 1, 6003, NULL, 0, NULL); /* evicts "mid" */
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.bytes, base); /* its spilled block freed */
    ASSERT_EQ(rc_session_expire(s, 6003 + 8 * 24 * 3600 * 1000LL, 0), 4);
    rc_session_stats_get(s, &st);
    ASSERT_EQ(st.users, 0);
    ASSERT_EQ(st.spill_failures, 0);
    rc_session_destroy(s);
}

/* What rc_session_save writes, rc_session_load gives back: every user's
 * clicks, its session's start (the next click's context and flags are the
 * same), the activity order (a smaller max_users keeps the most recent),
 * rows outside the restored table dropped and counted, the stream's
 * counters untouched; a truncated blob is refused. */
TEST(session_save_load_round_trip)
{
    rc_session *s = mk(100, 8);
    uint32_t ctx[16], n1, n2;
    add(s, "a", 1, 0, ctx, 16, NULL);
    add(s, "a", 2, MIN_MS, ctx, 16, NULL);
    add(s, "a", 3, 2 * MIN_MS, ctx, 16, NULL);
    add(s, "a", 4, 90 * MIN_MS, ctx, 16, NULL); /* a new session */
    const char *lng = "a-user-id-longer-than-the-inline-key-room";
    add(s, lng, 5, 10, ctx, 16, NULL);
    add(s, lng, 6, 20, ctx, 16, NULL);
    for (uint32_t i = 0; i < 12; i++) /* past the history of 8 */
        add(s, "d", 10 + i, (200 + (int64_t)i) * MIN_MS, ctx, 16, NULL);
    add(s, "c", 7, 100 * MIN_MS, ctx, 16, NULL);
    /* out of order, before the session's start: extends it backwards */
    ASSERT(add(s, "c", 8, 99 * MIN_MS, ctx, 16, NULL) & RC_SESS_REORDERED);
    rc_buf b;
    rc_buf_init(&b, 0);
    ASSERT_EQ(rc_session_save(s, &b), 0);

    rc_session *r = mk(100, 8);
    uint64_t users = 0, dropped = 9;
    ASSERT_EQ(rc_session_load(r, b.data, b.len, 100, &users, &dropped), 0);
    ASSERT_EQ(users, 4);
    ASSERT_EQ(dropped, 0);
    rc_session_stats st;
    rc_session_stats_get(r, &st);
    ASSERT_EQ(st.users, 4);
    ASSERT_EQ(st.sessions, 0);
    const char *ids[] = {"a", lng, "d", "c"};
    for (size_t u = 0; u < 4; u++) {
        rc_click x[20], y[20];
        ASSERT_EQ(rc_session_recent(s, ids[u], strlen(ids[u]), x, 20, &n1), 0);
        ASSERT_EQ(rc_session_recent(r, ids[u], strlen(ids[u]), y, 20, &n2), 0);
        ASSERT_EQ(n1, n2);
        for (uint32_t i = 0; i < n1; i++) {
            ASSERT_EQ(x[i].row, y[i].row);
            ASSERT_EQ(x[i].ts_ms, y[i].ts_ms);
        }
    }
    /* the next clicks continue the same sessions */
    static const struct {
        const char *u;
        uint32_t row;
        int64_t ts;
    } next[] = {{"a", 9, 91 * MIN_MS},
                {"c", 11, 101 * MIN_MS},
                {"c", 12, 70 * MIN_MS},
                /* d's session began at 200 min, before its oldest held click
                 * (204): 171 min is within a gap of it, so reordered, not late */
                {"d", 30, 171 * MIN_MS}};
    for (size_t i = 0; i < RC_ARRAY_LEN(next); i++) {
        uint32_t c1[16], c2[16];
        unsigned f1 = add(s, next[i].u, next[i].row, next[i].ts, c1, 16, &n1);
        unsigned f2 = add(r, next[i].u, next[i].row, next[i].ts, c2, 16, &n2);
        ASSERT_EQ(f1, f2);
        ASSERT_EQ(n1, n2);
        ASSERT_EQ(memcmp(c1, c2, n1 * sizeof *c1), 0);
    }
    rc_session_destroy(r);

    /* The users are saved in memory order (a, lng, d, c) and loaded in the
     * order of their newest clicks (lng 20 ms, a 90 min, c 100, d 211): a
     * smaller bound keeps the users of the newest clicks, d then c, and with
     * room for one, d, though c was saved (and touched) last. */
    r = mk(2, 8);
    ASSERT_EQ(rc_session_load(r, b.data, b.len, 100, &users, NULL), 0);
    rc_click tmp[20];
    ASSERT_EQ(rc_session_recent(r, "c", 1, tmp, 20, &n1), 0);
    ASSERT_EQ(rc_session_recent(r, "d", 1, tmp, 20, &n1), 0);
    ASSERT_EQ(rc_session_recent(r, "a", 1, tmp, 20, &n1), RC_ENOENT);
    rc_session_destroy(r);
    r = mk(1, 8);
    ASSERT_EQ(rc_session_load(r, b.data, b.len, 100, &users, NULL), 0);
    ASSERT_EQ(rc_session_recent(r, "d", 1, tmp, 20, &n1), 0);
    ASSERT_EQ(rc_session_recent(r, "c", 1, tmp, 20, &n1), RC_ENOENT);
    rc_session_destroy(r);
    /* a blob damaged past its first user adds nobody (the whole is checked first) */
    r = mk(100, 8);
    ASSERT_EQ(rc_session_load(r, b.data, b.len - 3, 100, &users, NULL), RC_ECORRUPT);
    rc_session_stats_get(r, &st);
    ASSERT_EQ(st.users, 0);
    rc_session_destroy(r);

    /* a table of 6 rows: d's rows (14..21 held) and c's (7, 8) go, lng keeps 5 */
    r = mk(100, 8);
    ASSERT_EQ(rc_session_load(r, b.data, b.len, 6, &users, &dropped), 0);
    ASSERT_EQ(users, 2);
    ASSERT_EQ(dropped, 8 + 2 + 1);
    rc_click y[20];
    ASSERT_EQ(rc_session_recent(r, lng, strlen(lng), y, 20, &n2), 0);
    ASSERT_EQ(n2, 1);
    ASSERT_EQ(y[0].row, 5);
    ASSERT_EQ(rc_session_recent(r, "d", 1, y, 20, &n2), RC_ENOENT);
    rc_session_destroy(r);

    /* truncated anywhere: refused, never read past the end */
    for (size_t cut = 0; cut < b.len; cut += 7) {
        r = mk(100, 8);
        int rc = rc_session_load(r, b.data, cut, 100, NULL, NULL);
        ASSERT_EQ(rc, RC_ECORRUPT);
        rc_session_destroy(r);
    }
    rc_buf_free(&b);
    rc_session_destroy(s);
}
