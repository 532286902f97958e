/* replay — the daemon's bounded replay buffer of recent clicks, the training
 * data of background two-tower retraining (engine.h, tower.retrain_*).
 *
 * A ring of the newest `clicks` applied clicks, oldest overwritten first,
 * kept in the order they were added. A click is a fixed 40-byte record: the
 * user (rc_tower_hash of its id: the user's identity in the buffer), the item's
 * word2vec table row (its id, city and category are the table's), the event
 * time, the event's device hash and a reference to its interest tags. Tag
 * lists (<= RC_REPLAY_MAX_TAGS hashes) only come with some events, so they go
 * to a second, smaller ring of max(64, clicks / 16) lists: a record whose
 * list was overwritten since reads as "no tags" (counted: tags_lost).
 * Memory: clicks * 40 + max(64, clicks / 16) * 144 bytes (49 MB at 1,000,000
 * clicks), allocated at create; adding never allocates.
 *
 * Thread model: one writer (rc_replay_add, the engine's trainer), any other
 * thread snapshots (rc_replay_snapshot) and reads stats. Both take one mutex;
 * a snapshot copies in chunks of ~320 KB (RC_REPLAY_CHUNK records, a quarter
 * of that in tag lists), releasing it between chunks and letting a waiting
 * writer in first, so the writer waits for one chunk's copy at most (tens of
 * microseconds). A snapshot restarts at the oldest record still held when
 * the writer laps it (the writer is far slower than the copy). */
#ifndef RECALLD_REPLAY_H
#define RECALLD_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#define RC_REPLAY_MAX_TAGS 16u   /* = RC_TAGS_MAX of event.h: tags per event */
#define RC_REPLAY_CHUNK    8192u /* records copied per lock hold (tag lists: / 4) */

typedef struct rc_replay rc_replay;

typedef struct rc_replay_rec {
    uint64_t user;     /* rc_tower_hash of the user id */
    int64_t ts_ms;     /* event time */
    uint64_t device;   /* rc_tower_hash of the event's device, 0 = none */
    uint64_t tags_ref; /* 1 + sequence number of its tag list, 0 = none */
    uint32_t row;      /* the item's word2vec table row */
    uint32_t reserved;
} rc_replay_rec;

typedef struct rc_replay_tags {
    uint64_t seq; /* sequence number (tags_ref - 1 of its record) */
    uint32_t n;
    uint32_t reserved;
    uint64_t h[RC_REPLAY_MAX_TAGS];
} rc_replay_tags;

/* A copy of the buffer: records oldest first, and the tag lists they may
 * refer to (rc_replay_snap_tags resolves a reference). Caller frees with
 * rc_replay_snap_free. */
typedef struct rc_replay_snap {
    rc_replay_rec *recs;
    size_t n;
    rc_replay_tags *tags; /* tags[i].seq == tags_first + i */
    size_t ntags;
    uint64_t tags_first;
    uint64_t first_seq; /* sequence number of recs[0] (clicks added before it) */
} rc_replay_snap;

typedef struct rc_replay_stats {
    uint64_t capacity;  /* clicks */
    uint64_t fill;      /* clicks held now (<= capacity) */
    uint64_t added;     /* clicks ever added */
    uint64_t tag_lists; /* tag lists ever added */
    uint64_t tags_lost; /* references found overwritten by snapshots */
    size_t bytes;       /* heap bytes (both rings) */
} rc_replay_stats;

/* clicks: the bound, 1..2^31. Returns 0, RC_EINVAL, RC_ENOMEM (errbuf says
 * how many bytes were wanted). */
int rc_replay_create(uint64_t clicks, rc_replay **out, char *errbuf, size_t errlen);
void rc_replay_destroy(rc_replay *r); /* NULL-safe */

/* Writer. Adds one click; tags[0..ntags) (the first RC_REPLAY_MAX_TAGS; hashes
 * of 0 are skipped) are stored when ntags > 0. */
void rc_replay_add(rc_replay *r, uint64_t user, uint32_t row, int64_t ts_ms, uint64_t device,
                   const uint64_t *tags, uint32_t ntags);

/* Any thread. Copies the at most max_clicks newest clicks (0 = all) held now.
 * Returns 0 or RC_ENOMEM. */
int rc_replay_snapshot(rc_replay *r, uint64_t max_clicks, rc_replay_snap *out);
/* The tag list a record refers to, NULL when none or overwritten. */
const rc_replay_tags *rc_replay_snap_tags(const rc_replay_snap *s, const rc_replay_rec *rec);
void rc_replay_snap_free(rc_replay_snap *s); /* NULL-safe, zeroes *s */

struct rc_buf;

/* Writer thread (or with the writer paused: the engine saves it in its
 * checkpoint pause). Appends the held clicks to b, oldest first: u64 count,
 * then per click u64 user, i64 event time, u64 device, u32 row, u32 tags and
 * that many u64 tag hashes (0 when the list was overwritten). Returns 0 or
 * RC_ENOMEM (b could not grow). */
int rc_replay_save(rc_replay *r, struct rc_buf *b);
/* Writer thread, before the stream: adds the clicks of an rc_replay_save blob
 * in their order (the newest `clicks` stay when the buffer is smaller now).
 * A click on a row >= nrows (not in the table restored with it) is dropped
 * and counted in *dropped. The blob is checked whole before anything is
 * added. *count (NULL ok): clicks added. Returns 0 or RC_ECORRUPT (malformed:
 * truncated, trailing bytes, more than RC_REPLAY_MAX_TAGS tags, a negative
 * event time; nothing added). */
int rc_replay_load(rc_replay *r, const void *p, size_t n, uint32_t nrows, uint64_t *count,
                   uint64_t *dropped);

/* Any thread. */
void rc_replay_stats_get(rc_replay *r, rc_replay_stats *st);
/* Heap bytes a buffer of `clicks` takes (for reports before creating it). */
size_t rc_replay_bytes_for(uint64_t clicks);

#endif
