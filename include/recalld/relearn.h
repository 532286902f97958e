/* relearn — the streaming trainer's bounded buffer of recent training
 * examples, replayed between new clicks so that one pass over the stream
 * learns like several batch epochs (issue 14, item 2).
 *
 * An example is what the trainer trained for one new click: the clicked row
 * (the center) and the session context it was paired with (at most `window`
 * rows, most recent last). The buffer is a ring of the newest `clicks`
 * examples, oldest overwritten first. rc_relearn_pick draws one held example
 * uniformly at random, so every recent click is trained again about
 * train.replay_ratio times while it is held.
 *
 * Memory: clicks * (4 * window + 8) bytes, allocated at create; adding and
 * picking never allocate. Rows are the item table's; the trainer checks them
 * against the table's size before training (rc_sgns_click does).
 *
 * Thread model: one owner (the engine's trainer thread, or the offline
 * caller of rc_engine_apply_click); stats may be read by any thread (counters
 * are atomics). */
#ifndef RECALLD_RELEARN_H
#define RECALLD_RELEARN_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/common.h"

#define RC_RELEARN_MAX_CLICKS (1u << 26) /* 64M examples */

typedef struct rc_relearn rc_relearn;

typedef struct rc_relearn_stats {
    uint64_t capacity;  /* examples */
    uint64_t fill;      /* examples held now */
    uint64_t added;     /* examples ever added */
    uint64_t replayed;  /* examples trained again */
    uint64_t skipped;   /* replays given up: owed beyond the window while events waited */
    uint64_t yields;    /* times replay stopped (or did not start) because events waited */
    uint64_t forgotten; /* examples dropped unreplayed by rc_relearn_forget */
    size_t bytes;
} rc_relearn_stats;

/* clicks 1..RC_RELEARN_MAX_CLICKS, window 1..64. Returns 0, RC_EINVAL (errbuf
 * says why) or RC_ENOMEM. */
int rc_relearn_create(uint32_t clicks, uint32_t window, rc_relearn **out, char *errbuf,
                      size_t errlen);
void rc_relearn_destroy(rc_relearn *r); /* NULL-safe */
/* Heap bytes of a buffer of `clicks` examples of `window` context rows. */
size_t rc_relearn_bytes_for(uint32_t clicks, uint32_t window);

/* Adds one example; ctx[0..nctx) keeps its last `window` rows. nctx 0 adds
 * nothing (no pair was trained). */
void rc_relearn_add(rc_relearn *r, uint32_t center, const uint32_t *ctx, uint32_t nctx);
/* Draws a held example: *center, ctx[0..*nctx) (room for `window` rows).
 * Returns 0, or RC_ENOENT when the buffer is empty. */
int rc_relearn_pick(rc_relearn *r, rc_rng *rng, uint32_t *center, uint32_t *ctx, uint32_t *nctx);
/* Forgets every example held: later picks draw only examples added after
 * this call (RC_ENOENT until one is). For when the table has learnt them
 * otherwise: an installed rebuild trained on those clicks already. */
void rc_relearn_forget(rc_relearn *r);
/* Bookkeeping of the caller's spending (for stats only). */
void rc_relearn_count(rc_relearn *r, uint64_t replayed, uint64_t skipped, uint64_t yields);
void rc_relearn_stats_get(const rc_relearn *r, rc_relearn_stats *st);

#endif
