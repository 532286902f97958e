/* replay — the bounded replay buffer of recent clicks (see replay.h).
 *
 * Both rings are addressed by sequence numbers: record s (the s-th click
 * ever added) lives at slot s % cap while s >= added - cap. A snapshot fixes
 * its newest end at the start and copies forward from its oldest end, chunk
 * by chunk; before each chunk it moves its start past what the writer has
 * overwritten since, so every copied record is one that was held. */
#include "recalld/replay.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/buf.h"
#include "recalld/common.h"

#define MIN_TAG_LISTS 64u
#define TAG_SHARE     16u /* one tag list slot per this many click slots */
#define MAX_CLICKS    (1ull << 31)

struct rc_replay {
    pthread_mutex_t mu;
    rc_replay_rec *recs;
    uint64_t cap, added; /* under mu */
    rc_replay_tags *tags;
    uint64_t tcap, tadded;     /* under mu */
    uint64_t tags_lost;        /* under mu */
    atomic_int writer_waiting; /* the writer is blocked on mu: a snapshot lets it in */
};

static uint64_t tag_slots(uint64_t clicks) { return RC_MAX(MIN_TAG_LISTS, clicks / TAG_SHARE); }

size_t rc_replay_bytes_for(uint64_t clicks)
{
    return (size_t)clicks * sizeof(rc_replay_rec) +
           (size_t)tag_slots(clicks) * sizeof(rc_replay_tags) + sizeof(struct rc_replay);
}

int rc_replay_create(uint64_t clicks, rc_replay **out, char *eb, size_t el)
{
    if (!out)
        return rc_err(eb, el, RC_EINVAL, "replay: out is NULL");
    *out = NULL;
    if (clicks == 0 || clicks > MAX_CLICKS)
        return rc_err(eb, el, RC_EINVAL, "replay: clicks = %llu: expected 1..%llu",
                      (unsigned long long)clicks, (unsigned long long)MAX_CLICKS);
    rc_replay *r = calloc(1, sizeof *r);
    if (r) {
        r->cap = clicks;
        r->tcap = tag_slots(clicks);
        r->recs = calloc(r->cap, sizeof *r->recs);
        r->tags = calloc(r->tcap, sizeof *r->tags);
    }
    if (!r || !r->recs || !r->tags) {
        if (r) {
            free(r->recs);
            free(r->tags);
            free(r);
        }
        return rc_err(eb, el, RC_ENOMEM, "replay: out of memory for %llu clicks (%zu bytes)",
                      (unsigned long long)clicks, rc_replay_bytes_for(clicks));
    }
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

void rc_replay_destroy(rc_replay *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->mu);
    free(r->recs);
    free(r->tags);
    free(r);
}

void rc_replay_add(rc_replay *r, uint64_t user, uint32_t row, int64_t ts_ms, uint64_t device,
                   const uint64_t *tags, uint32_t ntags)
{
    rc_replay_rec rec = {.user = user, .ts_ms = ts_ms, .device = device, .row = row};
    rc_replay_tags tl;
    tl.n = 0;
    for (uint32_t i = 0; tags && i < ntags && tl.n < RC_REPLAY_MAX_TAGS; i++)
        if (tags[i])
            tl.h[tl.n++] = tags[i];
    /* glibc mutexes are not fair: a snapshot relocking right after each chunk
     * could starve the writer for its whole copy. It waits for the flag. */
    if (pthread_mutex_trylock(&r->mu)) {
        atomic_store(&r->writer_waiting, 1);
        pthread_mutex_lock(&r->mu);
        atomic_store(&r->writer_waiting, 0);
    }
    if (tl.n) {
        rc_replay_tags *slot = &r->tags[r->tadded % r->tcap];
        slot->seq = r->tadded;
        slot->n = tl.n;
        memcpy(slot->h, tl.h, tl.n * sizeof *tl.h);
        rec.tags_ref = ++r->tadded; /* = seq + 1 */
    }
    r->recs[r->added % r->cap] = rec;
    r->added++;
    pthread_mutex_unlock(&r->mu);
}

/* Copies elements [from, to) of a ring (sequence numbers) into dst, chunk by
 * chunk under mu, contiguous; returns the first sequence number copied (what
 * the writer overwrote meanwhile is skipped) and *n the count. */
static uint64_t copy_ring(rc_replay *r, int tagring, uint64_t from, uint64_t to, void *dst,
                          size_t *n)
{
    size_t esz = tagring ? sizeof(rc_replay_tags) : sizeof(rc_replay_rec);
    const char *base = tagring ? (const char *)r->tags : (const char *)r->recs;
    uint64_t first = from, s = from;
    *n = 0;
    while (s < to) {
        pthread_mutex_lock(&r->mu);
        uint64_t added = tagring ? r->tadded : r->added, cap = tagring ? r->tcap : r->cap;
        uint64_t lo = added > cap ? added - cap : 0;
        if (s < lo) { /* the writer lapped the copy: restart at the oldest held */
            *n = 0;
            first = s = lo;
        }
        uint64_t end = RC_MIN(to, s + (tagring ? RC_REPLAY_CHUNK / 4 : RC_REPLAY_CHUNK));
        while (s < end) { /* contiguous runs: up to the ring's end, then from 0 */
            uint64_t slot = s % cap, run = RC_MIN(end - s, cap - slot);
            memcpy((char *)dst + (*n) * esz, base + slot * esz, run * esz);
            *n += run;
            s += run;
        }
        pthread_mutex_unlock(&r->mu);
        while (atomic_load(&r->writer_waiting)) /* the writer goes first */
            sched_yield();
    }
    return first;
}

int rc_replay_snapshot(rc_replay *r, uint64_t max_clicks, rc_replay_snap *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    uint64_t to = r->added, held = RC_MIN(r->added, r->cap);
    uint64_t tto = r->tadded, theld = RC_MIN(r->tadded, r->tcap);
    pthread_mutex_unlock(&r->mu);
    if (max_clicks && held > max_clicks)
        held = max_clicks;
    out->recs = malloc((held ? held : 1) * sizeof *out->recs);
    out->tags = malloc((theld ? theld : 1) * sizeof *out->tags);
    if (!out->recs || !out->tags) {
        rc_replay_snap_free(out);
        return RC_ENOMEM;
    }
    /* Page faults on the fresh buffers would happen under the lock: take
     * them now. */
    for (size_t off = 0; off < held * sizeof *out->recs; off += 4096)
        ((volatile char *)out->recs)[off] = 0;
    for (size_t off = 0; off < theld * sizeof *out->tags; off += 4096)
        ((volatile char *)out->tags)[off] = 0;
    /* Tags first: the records copied afterwards refer to lists up to tto at
     * most, and a list overwritten in between only reads as "no tags". */
    out->tags_first = copy_ring(r, 1, tto - theld, tto, out->tags, &out->ntags);
    out->first_seq = copy_ring(r, 0, to - held, to, out->recs, &out->n);
    uint64_t lost = 0;
    for (size_t i = 0; i < out->n; i++)
        lost += out->recs[i].tags_ref && !rc_replay_snap_tags(out, &out->recs[i]);
    if (lost) {
        pthread_mutex_lock(&r->mu);
        r->tags_lost += lost;
        pthread_mutex_unlock(&r->mu);
    }
    return 0;
}

const rc_replay_tags *rc_replay_snap_tags(const rc_replay_snap *s, const rc_replay_rec *rec)
{
    if (!rec->tags_ref)
        return NULL;
    uint64_t seq = rec->tags_ref - 1;
    if (seq < s->tags_first || seq - s->tags_first >= s->ntags)
        return NULL;
    const rc_replay_tags *t = &s->tags[seq - s->tags_first];
    return t->seq == seq ? t : NULL;
}

void rc_replay_snap_free(rc_replay_snap *s)
{
    if (!s)
        return;
    free(s->recs);
    free(s->tags);
    memset(s, 0, sizeof *s);
}

/* ---- saved form (a checkpoint's state section) ---- */

#define SAVED_FIXED 32u /* user, ts, device, row, tags: bytes before the tag hashes */

int rc_replay_save(rc_replay *r, rc_buf *b)
{
    pthread_mutex_lock(&r->mu);
    uint64_t held = RC_MIN(r->added, r->cap), tlo = r->tadded > r->tcap ? r->tadded - r->tcap : 0;
    int rc = rc_buf_append(b, &held, 8);
    for (uint64_t s = r->added - held; !rc && s < r->added; s++) {
        const rc_replay_rec *rec = &r->recs[s % r->cap];
        const rc_replay_tags *t = NULL;
        if (rec->tags_ref && rec->tags_ref - 1 >= tlo && rec->tags_ref - 1 < r->tadded)
            t = &r->tags[(rec->tags_ref - 1) % r->tcap];
        uint32_t ntags = t ? t->n : 0;
        unsigned char fixed[SAVED_FIXED];
        memcpy(fixed, &rec->user, 8);
        memcpy(fixed + 8, &rec->ts_ms, 8);
        memcpy(fixed + 16, &rec->device, 8);
        memcpy(fixed + 24, &rec->row, 4);
        memcpy(fixed + 28, &ntags, 4);
        rc = rc_buf_append(b, fixed, sizeof fixed);
        if (!rc && ntags)
            rc = rc_buf_append(b, t->h, ntags * sizeof *t->h);
    }
    pthread_mutex_unlock(&r->mu);
    return rc ? RC_ENOMEM : 0;
}

int rc_replay_load(rc_replay *r, const void *p, size_t n, uint32_t nrows, uint64_t *count,
                   uint64_t *dropped)
{
    const unsigned char *c = p;
    uint64_t held, added = 0;
    if (count)
        *count = 0;
    if (n < 8)
        return RC_ECORRUPT;
    memcpy(&held, c, 8);
    /* checked whole first: a malformed blob adds nothing */
    size_t pos = 8;
    for (uint64_t i = 0; i < held; i++) {
        int64_t ts;
        uint32_t ntags;
        if (n - pos < SAVED_FIXED)
            return RC_ECORRUPT;
        memcpy(&ts, c + pos + 8, 8);
        memcpy(&ntags, c + pos + 28, 4);
        if (ts < 0 || ntags > RC_REPLAY_MAX_TAGS || n - pos - SAVED_FIXED < ntags * 8ull)
            return RC_ECORRUPT;
        pos += SAVED_FIXED + ntags * 8ull;
    }
    if (pos != n)
        return RC_ECORRUPT;
    pos = 8;
    for (uint64_t i = 0; i < held; i++) {
        uint64_t user, device, tags[RC_REPLAY_MAX_TAGS];
        int64_t ts;
        uint32_t row, ntags;
        memcpy(&user, c + pos, 8);
        memcpy(&ts, c + pos + 8, 8);
        memcpy(&device, c + pos + 16, 8);
        memcpy(&row, c + pos + 24, 4);
        memcpy(&ntags, c + pos + 28, 4);
        memcpy(tags, c + pos + SAVED_FIXED, ntags * 8ull);
        pos += SAVED_FIXED + ntags * 8ull;
        if (row >= nrows) {
            if (dropped)
                (*dropped)++;
            continue;
        }
        rc_replay_add(r, user, row, ts, device, tags, ntags);
        added++;
    }
    if (count)
        *count = added;
    return 0;
}

void rc_replay_stats_get(rc_replay *r, rc_replay_stats *st)
{
    pthread_mutex_lock(&r->mu);
    st->capacity = r->cap;
    st->fill = RC_MIN(r->added, r->cap);
    st->added = r->added;
    st->tag_lists = r->tadded;
    st->tags_lost = r->tags_lost;
    pthread_mutex_unlock(&r->mu);
    st->bytes = rc_replay_bytes_for(st->capacity);
}
