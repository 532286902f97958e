/* session — per-user recent clicks, in event-time order, with session splitting.
 *
 * Each user keeps the last `history` clicks (item row + event time). A click
 * more than `gap_ms` after the user's previous click starts a new session; the
 * training context of a click is only the clicks of its own session.
 *
 * Policies (deliberate, documented in the README):
 *  - duplicate: same item with the same ts as a click already held -> not
 *    applied, RC_SESS_DUPLICATE.
 *  - out of order: ts older than the user's newest click but not older than
 *    the start of the current session -> inserted at its place in time; its
 *    context is the clicks before it in the same session; RC_SESS_REORDERED.
 *  - late: ts before the current session's first click minus gap_ms (its
 *    session is over) -> not applied to history or training, RC_SESS_LATE.
 *  - memory: at most max_users users; inserting beyond it evicts the least
 *    recently active user (LRU). rc_session_expire drops users idle for ttl_ms
 *    (by event time).
 *
 * Thread model: one writer thread calls rc_session_add / rc_session_expire;
 * rc_session_recent and rc_session_stats are safe from any thread (users are
 * sharded over mutexes; each lock is held for a copy of <= history clicks). */
#ifndef RECALLD_SESSION_H
#define RECALLD_SESSION_H

#include <stddef.h>
#include <stdint.h>

typedef struct rc_session rc_session;

typedef struct rc_session_opts {
    uint32_t max_users; /* 0 = 1,000,000 */
    uint32_t history;   /* clicks kept per user, 0 = 20, max 255 */
    int64_t gap_ms;     /* session gap, 0 = 30 min */
    int64_t ttl_ms;     /* idle eviction by event time, 0 = 7 days */
} rc_session_opts;

typedef struct rc_click {
    uint32_t row;  /* item table row */
    int64_t ts_ms; /* event time */
} rc_click;

enum {
    RC_SESS_NEW_USER = 1 << 0,    /* user was not held before (or was evicted) */
    RC_SESS_NEW_SESSION = 1 << 1, /* click starts a new session */
    RC_SESS_DUPLICATE = 1 << 2,   /* not applied */
    RC_SESS_REORDERED = 1 << 3,   /* applied, out of order */
    RC_SESS_LATE = 1 << 4         /* not applied */
};

typedef struct rc_session_stats {
    uint64_t users; /* currently held */
    uint64_t evicted_lru, expired_ttl;
    uint64_t sessions; /* sessions started */
    uint64_t duplicates, reordered, late;
    uint64_t spill_failures; /* clicks of a user past the record's inline room that found no
                                memory for more: that user's oldest click was dropped */
    size_t bytes;            /* approximate heap bytes */
} rc_session_stats;

int rc_session_create(const rc_session_opts *opts, rc_session **out, char *errbuf, size_t errlen);
void rc_session_destroy(rc_session *s); /* NULL-safe */

/* Writer thread. Records a click of `user` (len <= 128 bytes) on item `row` at
 * ts_ms. ctx receives up to max_ctx previous clicks of the same session that
 * precede it in time, most recent LAST; *nctx their count (0 when the click
 * starts a session or is not applied). *flags gets RC_SESS_* bits. Returns 0,
 * or RC_EINVAL for a bad argument. Allocates only when a user is new. */
int rc_session_add(rc_session *s, const char *user, size_t ulen, uint32_t row, int64_t ts_ms,
                   uint32_t *ctx, uint32_t max_ctx, uint32_t *nctx, unsigned *flags);

/* Writer thread; a cache hint for a later rc_session_add of the user whose id
 * hashes to h (rc_hash of the id's bytes: the caller hashes once for this and
 * rc_profile_prefetch). Finding a user reads its hash slot, then its record,
 * then its LRU neighbours: call with step 0, later 1, later 2 (e.g. one event
 * apart), each step loading what the next one reads. */
void rc_session_prefetch(const rc_session *s, uint64_t h, int step);

/* Any thread. Copies the user's up-to-max most recent clicks (any session),
 * oldest first, into out; *n their count. Returns 0 or RC_ENOENT (unknown user). */
int rc_session_recent(rc_session *s, const char *user, size_t ulen, rc_click *out, uint32_t max,
                      uint32_t *n);

/* Writer thread. Drops users whose newest click is older than now_ms - ttl_ms;
 * works through at most max_users_scanned users per call (0 = all) so it can run
 * in small steps. Returns the number dropped. */
uint32_t rc_session_expire(rc_session *s, int64_t now_ms, uint32_t max_users_scanned);

/* Any thread. */
void rc_session_stats_get(rc_session *s, rc_session_stats *st);

/* ---- persistence (a checkpoint's sessions) ---- */

struct rc_buf;

/* Writer thread. Appends every held user to b, least recently active first:
 * u32 users, then per user u8 id length, the id, i64 start of its current
 * session, u8 clicks and per click (oldest first) u32 row, i64 event time.
 * Returns 0 or RC_ENOMEM (b could not grow). */
int rc_session_save(rc_session *s, struct rc_buf *b);

/* Writer thread, before the stream: adds the users of an rc_session_save
 * blob p[0..n) in its order (so the least recently active are evicted first
 * if max_users is smaller now), each by its clicks in time order plus its
 * session's start, as the stream had left them. A click on a row >= nrows
 * (not in the table restored with it) is dropped, and counted in *dropped.
 * The statistics count nothing of it but `users`. *users (NULL ok): users
 * added. Returns 0, RC_ECORRUPT (malformed; users added so far stay) or
 * RC_ENOMEM. */
int rc_session_load(rc_session *s, const void *p, size_t n, uint32_t nrows, uint64_t *users,
                    uint64_t *dropped);

#endif
