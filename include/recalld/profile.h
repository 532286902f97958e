/* profile — per-user profile store of the daemon, the live counterpart of the
 * offline user features (ufeat.h) for the two-tower user tower (tower.h):
 * per user a device hash, a bag of interest-tag hashes, the clicks and the
 * sessions ever seen (rc_tower_user_in's device_hash, tag_hashes, total_clicks,
 * sessions) and the newest event time.
 *
 * Update rule (the offline one): the user's LAST event with a non-empty device
 * gives the device, the last with a non-empty tag list gives the tags (the
 * whole list is replaced, order kept, at most RC_PROFILE_MAX_TAGS); events
 * without them leave them as they are.
 *
 * Bounds: at most max_users users; a new user beyond it evicts the least
 * recently noted one (LRU, like the session store, which is noted on the same
 * calls so both keep the same users); rc_profile_expire drops users idle for
 * ttl_ms of event time. Tags cost heap only for users that have them.
 *
 * Thread model: one writer thread (rc_profile_note, rc_profile_drop,
 * rc_profile_expire); rc_profile_get and rc_profile_stats_get from any thread
 * (users are sharded over mutexes; a lock is held for one lookup + copy). */
#ifndef RECALLD_PROFILE_H
#define RECALLD_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#define RC_PROFILE_MAX_TAGS 32u /* = RC_TOWER_MAX_TAGS: tags the user tower uses */

typedef struct rc_profile rc_profile;

typedef struct rc_profile_opts {
    uint32_t max_users; /* 0 = 1,000,000 */
    int64_t ttl_ms;     /* idle eviction by event time, 0 = 7 days */
} rc_profile_opts;

typedef struct rc_profile_rec {
    uint64_t device_hash;               /* 0 = none seen */
    uint64_t tags[RC_PROFILE_MAX_TAGS]; /* tag hashes, ntags of them */
    uint32_t ntags;
    uint64_t clicks;   /* clicks noted (clicks_inc summed) */
    uint64_t sessions; /* sessions noted (sessions_inc summed) */
    int64_t last_ts;   /* newest event time noted, ms */
} rc_profile_rec;

typedef struct rc_profile_stats {
    uint64_t users;                    /* held now */
    uint64_t with_device, with_tags;   /* of them, with a device / with tags */
    uint64_t evicted_lru, expired_ttl; /* dropped so far */
    size_t bytes;                      /* approximate heap bytes */
} rc_profile_stats;

int rc_profile_create(const rc_profile_opts *opts, rc_profile **out, char *errbuf, size_t errlen);
void rc_profile_destroy(rc_profile *p); /* NULL-safe */

/* Writer. Notes one event of `user` (1..128 bytes) at ts_ms: adds clicks_inc
 * and sessions_inc to its counters, sets the device when device_hash != 0 and
 * the tags when ntags > 0 (the first RC_PROFILE_MAX_TAGS), creates the user
 * when new (evicting the LRU one at max_users) and makes it the most recent.
 * Returns 0, RC_EINVAL (bad argument), RC_ENOMEM (the user is not held). */
int rc_profile_note(rc_profile *p, const char *user, size_t ulen, int64_t ts_ms,
                    uint64_t device_hash, const uint64_t *tags, uint32_t ntags, uint32_t clicks_inc,
                    uint32_t sessions_inc);

/* Writer thread; a cache hint for a later rc_profile_note of the user whose
 * id hashes to h (rc_hash of the id's bytes, as for rc_session_prefetch), in
 * steps: 0 the bucket head, 1 the chain's first record, 2 that record's LRU
 * neighbours (each step loads what the next one reads). */
void rc_profile_prefetch(const rc_profile *p, uint64_t h, int step);

/* Any thread. Copies the user's profile. Returns 0 or RC_ENOENT. */
int rc_profile_get(rc_profile *p, const char *user, size_t ulen, rc_profile_rec *out);

/* Writer. Forgets the user. Returns 0 or RC_ENOENT. */
int rc_profile_drop(rc_profile *p, const char *user, size_t ulen);

/* Writer. Drops users whose newest event is older than now_ms - ttl_ms,
 * scanning at most max_scanned records per call (0 = all) from where the last
 * call stopped. Returns the number dropped. */
uint32_t rc_profile_expire(rc_profile *p, int64_t now_ms, uint32_t max_scanned);

/* Any thread. */
void rc_profile_stats_get(rc_profile *p, rc_profile_stats *st);

/* ---- persistence (a checkpoint's profiles) ---- */

struct rc_buf;

/* Writer. Appends every held user to b, least recently noted first: u32
 * users, then per user u8 id length, the id, u64 device hash, i64 newest
 * event time, u32 clicks, u32 sessions, u8 tags and the tag hashes (u64).
 * Returns 0 or RC_ENOMEM. */
int rc_profile_save(rc_profile *p, struct rc_buf *b);

/* Writer, before the stream: notes every user of an rc_profile_save blob
 * p[0..n) in its order (a smaller max_users keeps the most recent).
 * *users (NULL ok): users noted. Returns 0, RC_ECORRUPT (malformed; the users
 * before stay) or RC_ENOMEM. */
int rc_profile_load(rc_profile *p, const void *buf, size_t n, uint64_t *users);

#endif
