/* Fuzz target: the loaders of a checkpoint's state section (rc_session_load,
 * rc_profile_load, rc_cooc_load, rc_replay_load). Byte 0 picks the loader
 * (mod 4); the rest
 * is its blob. Properties: never a crash; a refusal is RC_ECORRUPT (or
 * RC_ENOMEM); whatever was loaded, saved and loaded again into a fresh store,
 * loads whole and saves to as many bytes (the loaders keep only what they can
 * hold consistently), to the same bytes for the channel and the replay buffer,
 * and for sessions and profiles (saved in memory order, loaded by time) from
 * the next round on; the co-occurrence channel answers only ids of the table
 * (< NROWS). */
#include <string.h>

#include "fuzz.h"
#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/cooc.h"
#include "recalld/profile.h"
#include "recalld/recall.h"
#include "recalld/replay.h"
#include "recalld/session.h"

#define NROWS 64u

static void *mk(int kind)
{
    char err[128];
    void *s = NULL;
    int rc;
    if (kind == 0) {
        rc_session_opts o = {.max_users = 16, .history = 8};
        rc = rc_session_create(&o, (rc_session **)&s, err, sizeof err);
    } else if (kind == 1) {
        rc_profile_opts o = {.max_users = 16};
        rc = rc_profile_create(&o, (rc_profile **)&s, err, sizeof err);
    } else if (kind == 2) {
        rc_cooc_opts o = {.max_items = 128, .neighbors = 8, .window = 5, .half_life_ms = 60000};
        rc = rc_cooc_create(&o, (rc_cooc **)&s, err, sizeof err);
    } else {
        rc = rc_replay_create(32, (rc_replay **)&s, err, sizeof err);
    }
    FUZZ_CHECK(rc == 0 && s != NULL);
    return s;
}

static int load(int kind, void *s, const void *p, size_t n)
{
    if (kind == 0)
        return rc_session_load(s, p, n, NROWS, NULL, NULL);
    if (kind == 1)
        return rc_profile_load(s, p, n, NULL);
    if (kind == 2)
        return rc_cooc_load(s, p, n, NROWS, NULL);
    return rc_replay_load(s, p, n, NROWS, NULL, NULL);
}

static void save(int kind, void *s, rc_buf *b)
{
    int rc = kind == 0   ? rc_session_save(s, b)
             : kind == 1 ? rc_profile_save(s, b)
             : kind == 2 ? rc_cooc_save(s, b)
                         : rc_replay_save(s, b);
    FUZZ_CHECK(rc == 0);
}

static void destroy(int kind, void *s)
{
    if (kind == 0)
        rc_session_destroy(s);
    else if (kind == 1)
        rc_profile_destroy(s);
    else if (kind == 2)
        rc_cooc_destroy(s);
    else
        rc_replay_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1 << 16))
        return 0;
    int kind = data[0] % 4;
    void *s = mk(kind), *r = mk(kind);
    int rc = load(kind, s, data + 1, size - 1);
    FUZZ_CHECK(rc == 0 || rc == RC_ECORRUPT || rc == RC_ENOMEM);
    rc_buf a, b;
    rc_buf_init(&a, 0);
    rc_buf_init(&b, 0);
    save(kind, s, &a);
    FUZZ_CHECK(load(kind, r, a.data, a.len) == 0);
    save(kind, r, &b);
    FUZZ_CHECK(a.len == b.len);
    if (kind >= 2) {
        FUZZ_CHECK(memcmp(a.data, b.data, a.len) == 0);
    } else {
        /* sessions and profiles save in memory order and load by time: the
         * same users in b, in the order a load makes, which the next round
         * keeps to the byte */
        void *r2 = mk(kind);
        rc_buf c;
        rc_buf_init(&c, 0);
        FUZZ_CHECK(load(kind, r2, b.data, b.len) == 0);
        save(kind, r2, &c);
        FUZZ_CHECK(b.len == c.len && memcmp(b.data, c.data, b.len) == 0);
        rc_buf_free(&c);
        destroy(kind, r2);
    }
    if (kind == 2)
        for (uint32_t q = 0; q < NROWS; q++) {
            rc_hit h[16];
            uint32_t n = 0;
            FUZZ_CHECK(
                rc_cooc_query(s, &q, NULL, 1, NULL, 0, NULL, NULL, 16, h, &n, NULL, 0, NULL) == 0);
            for (uint32_t i = 0; i < n; i++)
                FUZZ_CHECK(h[i].row < NROWS);
        }
    rc_buf_free(&a);
    rc_buf_free(&b);
    destroy(kind, s);
    destroy(kind, r);
    return 0;
}
