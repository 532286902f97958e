/* profile — per-user device, tags and counters, bounded (LRU + TTL).
 *
 * Layout: fixed-size records (96 bytes) carved from chunks of CHUNK_RECS that
 * are never freed before destroy (freed records go on a free list); up to
 * TAGS_INLINE tags live in the record, more in their own heap array (a heap
 * array of 1-3 tags cost a 32-byte malloc chunk and a pointer per user, and a
 * malloc and free whenever a user's tags changed).
 * Users are found through SHARDS chained hash tables (bucket heads and chain
 * links are record indices + 1); each shard has a mutex. One global LRU list
 * (writer only) orders users by their last note.
 *
 * Concurrency: only the writer changes tables and records; it takes the
 * shard's mutex around every change to a shard's chains or to a record held
 * in it, so it may look up without the lock. Readers take the mutex around
 * lookup + copy. Statistics are relaxed atomics. */
#include "recalld/profile.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/buf.h"
#include "recalld/common.h"

#define SHARDS      64
#define CHUNK_SHIFT 10
#define CHUNK_RECS  (1u << CHUNK_SHIFT)
#define KEY_INLINE  24
#define KEY_MAX     128
#define NIL         UINT32_MAX
#define TAGS_INLINE 3 /* tags held in the record; more go to a heap array */

struct prec {
    uint64_t device;
    int64_t last_ts;
    uint32_t clicks, sessions; /* saturate at UINT32_MAX */
    union {
        uint64_t inl[TAGS_INLINE]; /* ntags <= TAGS_INLINE */
        uint64_t *ptr;             /* ntags > TAGS_INLINE: malloc'd */
    } tags;
    uint32_t prev, next; /* LRU links (writer); next links the free list */
    uint32_t hnext;      /* next record of the bucket chain, index + 1; 0 = end */
    uint32_t h32;        /* high hash bits */
    uint8_t klen;        /* 0 = record free */
    uint8_t ntags;
    uint8_t pad[6];
    union {
        char inl[KEY_INLINE];
        char *ptr; /* klen > KEY_INLINE: malloc'd copy */
    } key;
};

_Static_assert(sizeof(struct prec) == 96, "profile record: 96 bytes (docs/OPERATIONS.md)");

struct shard {
    pthread_mutex_t mu;
    uint32_t *heads; /* cap bucket heads (index + 1) */
    uint32_t mask;   /* cap - 1 */
    uint32_t n;
} __attribute__((aligned(64)));

struct rc_profile {
    struct shard shards[SHARDS];
    uint32_t max_users;
    int64_t ttl_ms;
    struct prec **chunks; /* max_users / CHUNK_RECS + 1 pointers, filled lazily */
    uint32_t nchunks, nrec;
    uint32_t free_head, lru_head, lru_tail, cursor;
    /* statistics: written by the writer, read anywhere (relaxed atomics) */
    uint64_t users, with_device, with_tags, evicted_lru, expired_ttl;
    size_t bytes;
};

#define LOAD(x)     __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define ADD(x, d)   STORE(x, LOAD(x) + (d))

static const uint64_t *tags_of(const struct prec *r)
{
    return r->ntags > TAGS_INLINE ? r->tags.ptr : r->tags.inl;
}

static uint32_t sat_add(uint32_t a, uint32_t b) { return a > UINT32_MAX - b ? UINT32_MAX : a + b; }

static struct prec *rec(const rc_profile *p, uint32_t idx)
{
    return &p->chunks[idx >> CHUNK_SHIFT][idx & (CHUNK_RECS - 1)];
}

static const char *key_of(const struct prec *r)
{
    return r->klen > KEY_INLINE ? r->key.ptr : r->key.inl;
}

/* Record index of the user, or NIL. Caller holds the shard lock or is the writer. */
static uint32_t find(const rc_profile *p, const struct shard *sh, uint32_t h32, const char *k,
                     size_t klen)
{
    if (!sh->heads)
        return NIL;
    for (uint32_t i1 = sh->heads[h32 & sh->mask]; i1;) {
        const struct prec *r = rec(p, i1 - 1);
        if (r->h32 == h32 && r->klen == klen && memcmp(key_of(r), k, klen) == 0)
            return i1 - 1;
        i1 = r->hnext;
    }
    return NIL;
}

/* Writer, shard lock held. Rebuilds the bucket array with cap (a power of
 * two, above the current one) buckets. */
static int shard_grow(rc_profile *p, struct shard *sh, uint32_t cap)
{
    uint32_t *nh = calloc(cap, sizeof *nh);
    if (!nh)
        return RC_ENOMEM;
    for (uint32_t b = 0; sh->heads && b <= sh->mask; b++) {
        for (uint32_t i1 = sh->heads[b]; i1;) {
            struct prec *r = rec(p, i1 - 1);
            uint32_t next = r->hnext;
            r->hnext = nh[r->h32 & (cap - 1)];
            nh[r->h32 & (cap - 1)] = i1;
            i1 = next;
        }
    }
    ADD(p->bytes, (size_t)(cap - (sh->heads ? sh->mask + 1 : 0)) * sizeof *nh);
    free(sh->heads);
    sh->heads = nh;
    sh->mask = cap - 1;
    return 0;
}

/* Writer, shard lock held. Doubles the bucket array when the load passes 1. */
static int shard_insert(rc_profile *p, struct shard *sh, uint32_t idx)
{
    if (!sh->heads || sh->n + 1 > sh->mask + 1) {
        int rc = shard_grow(p, sh, sh->heads ? (sh->mask + 1) * 2 : 64);
        if (rc)
            return rc;
    }
    struct prec *r = rec(p, idx);
    r->hnext = sh->heads[r->h32 & sh->mask];
    sh->heads[r->h32 & sh->mask] = idx + 1;
    sh->n++;
    return 0;
}

/* Writer, shard lock held. */
static void shard_remove(rc_profile *p, struct shard *sh, uint32_t idx)
{
    struct prec *r = rec(p, idx);
    uint32_t *link = &sh->heads[r->h32 & sh->mask];
    while (*link && *link != idx + 1)
        link = &rec(p, *link - 1)->hnext;
    if (*link) {
        *link = r->hnext;
        sh->n--;
    }
}

static struct shard *shard_of(rc_profile *p, uint64_t h) { return &p->shards[h & (SHARDS - 1)]; }

static void lru_unlink(rc_profile *p, struct prec *r)
{
    if (r->prev != NIL)
        rec(p, r->prev)->next = r->next;
    else
        p->lru_head = r->next;
    if (r->next != NIL)
        rec(p, r->next)->prev = r->prev;
    else
        p->lru_tail = r->prev;
}

static void lru_push(rc_profile *p, uint32_t idx, struct prec *r)
{
    r->prev = NIL;
    r->next = p->lru_head;
    if (p->lru_head != NIL)
        rec(p, p->lru_head)->prev = idx;
    else
        p->lru_tail = idx;
    p->lru_head = idx;
}

/* Writer: removes a live user (table under its lock, heap parts, LRU). */
static void drop_idx(rc_profile *p, uint32_t idx)
{
    struct prec *r = rec(p, idx);
    struct shard *sh = shard_of(p, rc_hash(key_of(r), r->klen));
    pthread_mutex_lock(&sh->mu);
    shard_remove(p, sh, idx);
    if (r->klen > KEY_INLINE) {
        free(r->key.ptr);
        ADD(p->bytes, -(size_t)r->klen);
    }
    if (r->ntags > TAGS_INLINE) {
        free(r->tags.ptr);
        ADD(p->bytes, -(size_t)r->ntags * sizeof(uint64_t));
    }
    if (r->ntags)
        ADD(p->with_tags, -1);
    if (r->device)
        ADD(p->with_device, -1);
    r->ntags = 0;
    r->klen = 0;
    pthread_mutex_unlock(&sh->mu);
    lru_unlink(p, r);
    r->next = p->free_head;
    p->free_head = idx;
    ADD(p->users, -1);
}

static uint32_t rec_alloc(rc_profile *p)
{
    uint32_t idx = p->free_head;
    if (idx != NIL) {
        p->free_head = rec(p, idx)->next;
        return idx;
    }
    if ((p->nrec >> CHUNK_SHIFT) >= p->nchunks) {
        struct prec *c = malloc((size_t)CHUNK_RECS * sizeof *c);
        if (!c)
            return NIL;
        p->chunks[p->nchunks++] = c;
        ADD(p->bytes, (size_t)CHUNK_RECS * sizeof *c);
    }
    return p->nrec++;
}

int rc_profile_create(const rc_profile_opts *opts, rc_profile **out, char *errbuf, size_t errlen)
{
    rc_profile_opts o = opts ? *opts : (rc_profile_opts){0};
    if (!out)
        return rc_err(errbuf, errlen, RC_EINVAL, "profile: out is NULL");
    *out = NULL;
    if (o.ttl_ms < 0 || o.max_users == NIL)
        return rc_err(errbuf, errlen, RC_EINVAL,
                      "profile: ttl_ms: expected >= 0; max_users: expected < 2^32 - 1");
    rc_profile *p = calloc(1, sizeof *p);
    if (!p)
        return rc_err(errbuf, errlen, RC_ENOMEM, "profile: out of memory");
    p->max_users = o.max_users ? o.max_users : 1000000;
    p->ttl_ms = o.ttl_ms ? o.ttl_ms : 7LL * 24 * 3600 * 1000;
    size_t nch = p->max_users / CHUNK_RECS + 1;
    p->chunks = calloc(nch, sizeof *p->chunks);
    if (!p->chunks) {
        free(p);
        return rc_err(errbuf, errlen, RC_ENOMEM, "profile: out of memory");
    }
    for (int i = 0; i < SHARDS; i++)
        pthread_mutex_init(&p->shards[i].mu, NULL);
    p->free_head = p->lru_head = p->lru_tail = NIL;
    p->bytes = sizeof *p + nch * sizeof *p->chunks;
    *out = p;
    return 0;
}

void rc_profile_destroy(rc_profile *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < p->nrec; i++) {
        struct prec *r = rec(p, i);
        if (!r->klen)
            continue;
        if (r->klen > KEY_INLINE)
            free(r->key.ptr);
        if (r->ntags > TAGS_INLINE)
            free(r->tags.ptr);
    }
    for (uint32_t i = 0; i < p->nchunks; i++)
        free(p->chunks[i]);
    for (int i = 0; i < SHARDS; i++) {
        free(p->shards[i].heads);
        pthread_mutex_destroy(&p->shards[i].mu);
    }
    free(p->chunks);
    free(p);
}

/* Writer: a new record for user, in no table yet (no reader can see it). */
static int add_user(rc_profile *p, struct shard *sh, uint32_t h32, const char *user, size_t ulen,
                    uint32_t *idx_out)
{
    char *longkey = NULL;
    if (ulen > KEY_INLINE && !(longkey = malloc(ulen)))
        return RC_ENOMEM;
    if (longkey)
        memcpy(longkey, user, ulen);
    if (LOAD(p->users) >= p->max_users && p->lru_tail != NIL) {
        drop_idx(p, p->lru_tail);
        ADD(p->evicted_lru, 1);
    }
    uint32_t idx = rec_alloc(p);
    if (idx == NIL) {
        free(longkey);
        return RC_ENOMEM;
    }
    struct prec *r = rec(p, idx);
    memset(r, 0, sizeof *r);
    r->h32 = h32;
    r->klen = (uint8_t)ulen;
    r->last_ts = INT64_MIN;
    if (longkey)
        r->key.ptr = longkey;
    else
        memcpy(r->key.inl, user, ulen);
    pthread_mutex_lock(&sh->mu);
    int rc = shard_insert(p, sh, idx);
    pthread_mutex_unlock(&sh->mu);
    if (rc) {
        free(longkey);
        r->klen = 0;
        r->next = p->free_head;
        p->free_head = idx;
        return rc;
    }
    lru_push(p, idx, r);
    if (longkey)
        ADD(p->bytes, ulen);
    ADD(p->users, 1);
    *idx_out = idx;
    return 0;
}

void rc_profile_prefetch(const rc_profile *p, uint64_t h, int step)
{
    if (!p)
        return;
    const struct shard *sh = &p->shards[h & (SHARDS - 1)];
    if (!sh->heads) /* writer: reads its own tables without the lock */
        return;
    const uint32_t *head = &sh->heads[(uint32_t)(h >> 32) & sh->mask];
    if (step <= 0) {
        __builtin_prefetch(head);
        return;
    }
    if (!*head)
        return;
    const struct prec *r = rec(p, *head - 1);
    if (step == 1) {
        __builtin_prefetch(r, 1);
        __builtin_prefetch((const char *)r + 64, 1);
        return;
    }
    if (r->prev != NIL)
        __builtin_prefetch(rec(p, r->prev), 1);
    if (r->next != NIL)
        __builtin_prefetch(rec(p, r->next), 1);
}

int rc_profile_note(rc_profile *p, const char *user, size_t ulen, int64_t ts_ms,
                    uint64_t device_hash, const uint64_t *tags, uint32_t ntags, uint32_t clicks_inc,
                    uint32_t sessions_inc)
{
    if (!p || !user || ulen == 0 || ulen > KEY_MAX || (ntags && !tags))
        return RC_EINVAL;
    uint64_t h = rc_hash(user, ulen);
    uint32_t h32 = (uint32_t)(h >> 32);
    struct shard *sh = shard_of(p, h);
    uint32_t idx = find(p, sh, h32, user, ulen); /* writer: no lock needed to read */
    if (idx == NIL) {
        int rc = add_user(p, sh, h32, user, ulen, &idx);
        if (rc)
            return rc;
    } else {
        lru_unlink(p, rec(p, idx));
        lru_push(p, idx, rec(p, idx));
    }
    struct prec *r = rec(p, idx);
    uint64_t *nt = NULL;
    int set = 0;
    ntags = RC_MIN(ntags, RC_PROFILE_MAX_TAGS);
    if (ntags && !(r->ntags == ntags && memcmp(tags_of(r), tags, ntags * sizeof *tags) == 0)) {
        set = 1; /* changed (unchanged tags cost nothing) */
        if (ntags > TAGS_INLINE) {
            if (!(nt = malloc(ntags * sizeof *nt)))
                return RC_ENOMEM; /* counters and device are not applied either: all or nothing */
            memcpy(nt, tags, ntags * sizeof *nt);
        }
    }
    uint64_t *old = NULL;
    uint32_t oldn = 0;
    pthread_mutex_lock(&sh->mu);
    r->clicks = sat_add(r->clicks, clicks_inc);
    r->sessions = sat_add(r->sessions, sessions_inc);
    if (ts_ms > r->last_ts)
        r->last_ts = ts_ms;
    if (device_hash) {
        if (!r->device)
            ADD(p->with_device, 1);
        r->device = device_hash;
    }
    if (set) {
        oldn = r->ntags;
        old = oldn > TAGS_INLINE ? r->tags.ptr : NULL;
        if (nt)
            r->tags.ptr = nt;
        else
            memcpy(r->tags.inl, tags, ntags * sizeof *tags);
        r->ntags = (uint8_t)ntags;
    }
    pthread_mutex_unlock(&sh->mu);
    if (set) {
        free(old);
        if (!oldn)
            ADD(p->with_tags, 1);
        ADD(p->bytes, (size_t)(nt ? ntags : 0) * sizeof(uint64_t) -
                          (size_t)(old ? oldn : 0) * sizeof(uint64_t));
    }
    return 0;
}

int rc_profile_get(rc_profile *p, const char *user, size_t ulen, rc_profile_rec *out)
{
    if (!p || !user || ulen == 0 || ulen > KEY_MAX || !out)
        return RC_EINVAL;
    uint64_t h = rc_hash(user, ulen);
    struct shard *sh = shard_of(p, h);
    pthread_mutex_lock(&sh->mu);
    uint32_t idx = find(p, sh, (uint32_t)(h >> 32), user, ulen);
    if (idx == NIL) {
        pthread_mutex_unlock(&sh->mu);
        return RC_ENOENT;
    }
    const struct prec *r = rec(p, idx);
    out->device_hash = r->device;
    out->ntags = r->ntags;
    if (r->ntags)
        memcpy(out->tags, tags_of(r), r->ntags * sizeof *out->tags);
    out->clicks = r->clicks;
    out->sessions = r->sessions;
    out->last_ts = r->last_ts;
    pthread_mutex_unlock(&sh->mu);
    return 0;
}

int rc_profile_drop(rc_profile *p, const char *user, size_t ulen)
{
    if (!p || !user || ulen == 0 || ulen > KEY_MAX)
        return RC_EINVAL;
    uint64_t h = rc_hash(user, ulen);
    uint32_t idx = find(p, shard_of(p, h), (uint32_t)(h >> 32), user, ulen);
    if (idx == NIL)
        return RC_ENOENT;
    drop_idx(p, idx);
    return 0;
}

uint32_t rc_profile_expire(rc_profile *p, int64_t now_ms, uint32_t max_scanned)
{
    uint32_t dropped = 0;
    if (!p || p->nrec == 0)
        return 0;
    uint32_t todo = max_scanned && max_scanned < p->nrec ? max_scanned : p->nrec;
    for (; todo > 0; todo--) {
        if (p->cursor >= p->nrec)
            p->cursor = 0;
        uint32_t idx = p->cursor++;
        struct prec *r = rec(p, idx);
        if (r->klen && r->last_ts < now_ms - p->ttl_ms) {
            drop_idx(p, idx);
            dropped++;
        }
    }
    ADD(p->expired_ttl, dropped);
    return dropped;
}

void rc_profile_stats_get(rc_profile *p, rc_profile_stats *st)
{
    if (!p || !st)
        return;
    st->users = LOAD(p->users);
    st->with_device = LOAD(p->with_device);
    st->with_tags = LOAD(p->with_tags);
    st->evicted_lru = LOAD(p->evicted_lru);
    st->expired_ttl = LOAD(p->expired_ttl);
    st->bytes = LOAD(p->bytes);
}

/* ---- persistence ---- */

/* The users in memory order (chunk after chunk, free records skipped): a
 * walk of the activity list took a cache miss a user inside the trainer's
 * pause (0.38 s against 0.09 s at 1M users whose clicks interleave,
 * docs/BENCHMARKS.md). The loader restores the activity order from each
 * user's newest click time. */
int rc_profile_save(rc_profile *p, rc_buf *b)
{
    if (!p || !b)
        return RC_EINVAL;
    size_t at = b->len;
    uint32_t users = 0;
    int rc = rc_buf_append(b, &users, 4);
    unsigned char one[1 + KEY_MAX + 8 + 8 + 4 + 4 + 1 + RC_PROFILE_MAX_TAGS * 8];
    for (uint32_t idx = 0; !rc && idx < p->nrec; idx++) {
        const struct prec *r = rec(p, idx);
        if (!r->klen)
            continue;
        size_t n = 0;
        one[n++] = r->klen;
        memcpy(one + n, key_of(r), r->klen);
        n += r->klen;
        memcpy(one + n, &r->device, 8);
        memcpy(one + n + 8, &r->last_ts, 8);
        memcpy(one + n + 16, &r->clicks, 4);
        memcpy(one + n + 20, &r->sessions, 4);
        n += 24;
        one[n++] = r->ntags;
        memcpy(one + n, tags_of(r), (size_t)r->ntags * 8);
        n += (size_t)r->ntags * 8;
        rc = rc_buf_append(b, one, n);
        users++;
    }
    if (!rc)
        memcpy(b->data + at, &users, 4);
    return rc ? RC_ENOMEM : 0;
}

/* One saved user at *pos, checked against the blob's end; *pos moves past it. */
struct pentry {
    const char *key;
    unsigned klen, nt;
    uint64_t device;
    int64_t ts;
    uint32_t clicks, sessions;
    const unsigned char *tags;
};

#define PENTRY_MIN     27u /* length byte, a 1-byte id, 25 bytes of fields */
#define PREFETCH_AHEAD 8u

static int pentry_at(const unsigned char *q, size_t n, size_t *pos, struct pentry *e)
{
    size_t at = *pos;
    e->klen = at < n ? q[at] : 0;
    if (e->klen == 0 || e->klen > KEY_MAX || n - at < 1 + (size_t)e->klen + 25)
        return RC_ECORRUPT;
    e->key = (const char *)q + at + 1;
    at += 1 + e->klen;
    memcpy(&e->device, q + at, 8);
    memcpy(&e->ts, q + at + 8, 8);
    memcpy(&e->clicks, q + at + 16, 4);
    memcpy(&e->sessions, q + at + 20, 4);
    e->nt = q[at + 24];
    at += 25;
    if (e->nt > RC_PROFILE_MAX_TAGS || (size_t)e->nt * 8 > n - at || e->ts < 0)
        return RC_ECORRUPT;
    e->tags = q + at;
    *pos = at + (size_t)e->nt * 8;
    return 0;
}

/* The whole blob is checked before a user is added; then they are added
 * oldest first (by their newest click, saved order among equal times), so the
 * activity order follows the users' newest clicks and a smaller bound keeps
 * the most recent. */
int rc_profile_load(rc_profile *p, const void *buf, size_t n, uint64_t *users)
{
    const unsigned char *q = buf;
    uint64_t added = 0;
    uint32_t nu;
    int rc = 0;
    if (!p || !buf || n < 4)
        return RC_ECORRUPT;
    memcpy(&nu, q, 4);
    if (nu > (n - 4) / PENTRY_MIN)
        return RC_ECORRUPT;
    rc_timed_ref *ord = malloc((nu ? nu : 1) * sizeof *ord);
    if (!ord)
        return RC_ENOMEM;
    struct pentry e;
    size_t pos = 4;
    for (uint32_t i = 0; !rc && i < nu; i++) {
        ord[i].ref = pos;
        rc = pentry_at(q, n, &pos, &e);
        ord[i].ts = rc ? 0 : e.ts; /* e is not filled past a refusal */
    }
    if (!rc)
        rc_timed_ref_sort(ord, nu);
    /* The buckets for every user at once: doubling them on the way re-links
     * each record it passes, a cache miss a record at a million users. A
     * shard gets its share and a quarter (hashes are not even). */
    uint64_t want = RC_MIN((uint64_t)nu + LOAD(p->users), (uint64_t)p->max_users) / SHARDS;
    want += want / 4;
    for (int i = 0; !rc && want > 64 && i < SHARDS; i++) {
        struct shard *sh = &p->shards[i];
        uint32_t cap = 64;
        while (cap < want && cap < (1u << 31))
            cap *= 2;
        if (!sh->heads || cap > sh->mask + 1) {
            pthread_mutex_lock(&sh->mu);
            rc = shard_grow(p, sh, cap);
            pthread_mutex_unlock(&sh->mu);
        }
    }
    for (uint32_t i = 0; !rc && i < nu; i++) {
        uint64_t tags[RC_PROFILE_MAX_TAGS];
        if (i + PREFETCH_AHEAD < nu) /* the blob is read out of order now */
            __builtin_prefetch(q + ord[i + PREFETCH_AHEAD].ref);
        pos = ord[i].ref;
        pentry_at(q, n, &pos, &e); /* checked above */
        memcpy(tags, e.tags, (size_t)e.nt * 8);
        if ((rc = rc_profile_note(p, e.key, e.klen, e.ts, e.device, tags, e.nt, e.clicks,
                                  e.sessions)))
            rc = rc == RC_ENOMEM ? RC_ENOMEM : RC_ECORRUPT;
        else
            added++;
    }
    free(ord);
    if (users)
        *users = added;
    return rc;
}
