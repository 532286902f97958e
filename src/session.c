/* session — per-user recent clicks with session splitting, LRU and TTL bounds.
 *
 * Layout, chosen for memory (1M users at history 20 is ~230 MB):
 *  - Users live in fixed-size records carved from chunks of CHUNK_RECS records,
 *    allocated as the user count grows and never freed before destroy; freed
 *    records go on a free list. A record is a header (56 bytes) + room for
 *    INLINE_CLICKS clicks: row numbers (u32), then time offsets (u32 ms from the
 *    record's `base`). Most users hold few clicks (in the 1M-user benchmark
 *    stream 68% have at most 6), so a user who needs more "spills": the clicks
 *    move to a malloc'd block of `history` clicks (a larger history than
 *    SPILL_ONCE_MAX: twice the room, up to `history`), and the inline room
 *    holds its pointer (104 or 104 + 176 bytes a user instead of 216 for every
 *    user at history 20). Offsets keep a click at 8 bytes; a span
 *    over 2^32 ms (49 days) rebases and drops the clicks that fall out of
 *    range, which are long past any session.
 *  - Clicks are kept sorted by time, oldest first, in a plain array; the
 *    newest is at count-1. A full array shifts by one (<= 255 * 8 bytes).
 *  - Users are found through SHARDS open-addressing tables (linear probing,
 *    backward-shift deletion) of {hash tag, record index}; each shard has a
 *    mutex. The shard of a user is its hash's low bits.
 *  - One GLOBAL LRU list (doubly linked by record index) orders users by the
 *    last rc_session_add call that named them, applied or not: eviction at
 *    max_users drops the global least recently active user.
 *
 * Concurrency: only the writer modifies tables, records and the LRU. It takes
 * a shard's mutex around every change to that shard's table or to a record
 * held in it; readers (rc_session_recent) take the mutex around lookup + copy.
 * So the writer may look up without the lock. LRU links and the free list are
 * touched by the writer only and never read by readers. A record is reused for
 * another user only after it left its old table under the old shard's lock.
 * Statistics are relaxed atomics. */
#include "recalld/session.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/log.h"

#define SHARDS         64
#define CHUNK_SHIFT    10
#define CHUNK_RECS     (1u << CHUNK_SHIFT)
#define KEY_INLINE     24
#define NIL            UINT32_MAX
#define KEY_MAX        128
#define HISTORY_MAX    255
#define INLINE_CLICKS  6u  /* clicks held in the record before it spills */
#define SPILL_ONCE_MAX 32u /* up to this history, a record spills once, to history */

struct user {
    int64_t base;        /* click time = base + dts[i] */
    int64_t sess_start;  /* first click of the current session, ms */
    uint32_t prev, next; /* LRU links (writer only); next links the free list */
    uint32_t h32;        /* high hash bits: table position and tag */
    uint8_t count;       /* clicks held, >= 1 while the record is live */
    uint8_t klen;        /* key bytes; 0 = record free */
    uint8_t cap;         /* clicks the record has room for: s->inl inline, more spilled */
    uint8_t pad;
    union {
        char inl[KEY_INLINE];
        char *ptr; /* klen > KEY_INLINE: malloc'd copy */
    } key;
    /* then either uint32_t rows[inl], dts[inl] (cap == inl), or, spilled
     * (cap > inl), a pointer to malloc'd uint32_t rows[cap], dts[cap] */
};

struct slot {
    uint32_t h32;
    uint32_t idx1; /* record index + 1; 0 = empty */
};

struct shard {
    pthread_mutex_t mu;
    struct slot *slots;
    uint32_t mask; /* capacity - 1, capacity a power of two */
    uint32_t n;
} __attribute__((aligned(64)));

struct rc_session {
    struct shard shards[SHARDS];
    uint32_t max_users, history, inl; /* inl = min(history, INLINE_CLICKS) */
    int64_t gap_ms, ttl_ms;
    size_t recsize;
    char **chunks;          /* max_users / CHUNK_RECS + 1 pointers, filled lazily */
    uint32_t nchunks, nrec; /* chunks allocated, records ever handed out */
    uint32_t free_head;
    uint32_t lru_head, lru_tail; /* most / least recently active */
    uint32_t cursor;             /* rc_session_expire resumes here */
    /* statistics: written by the writer, read anywhere (relaxed atomics) */
    uint64_t users, evicted_lru, expired_ttl, sessions, duplicates, reordered, late;
    uint64_t spill_failures; /* clicks that found no memory to spill into (oldest dropped) */
    size_t bytes;
};

#define LOAD(x)     __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define INC(x)      STORE(x, LOAD(x) + 1)

static struct user *rec(const rc_session *s, uint32_t idx)
{
    return (struct user *)(s->chunks[idx >> CHUNK_SHIFT] +
                           (size_t)(idx & (CHUNK_RECS - 1)) * s->recsize);
}

static uint32_t *rows(const rc_session *s, struct user *u)
{
    return u->cap > s->inl ? *(uint32_t **)(void *)(u + 1) : (uint32_t *)(void *)(u + 1);
}
static uint32_t *dts(const rc_session *s, struct user *u) { return rows(s, u) + u->cap; }

/* Writer, u's shard lock held (or u in no table yet): room for `history`
 * clicks at once when that is at most SPILL_ONCE_MAX, else twice the clicks
 * (at most history). 0, or -1 without memory (u keeps its room).
 * Why at once: with steps of 12 then 20 the 12-blocks of users who went on
 * to 20 were freed long after newer blocks were carved next to them, and the
 * users who would reuse them had mostly spilled already - 50 MB of 1.6 KB
 * holes between live blocks at 707k users that malloc_trim cannot return
 * (bench/recall.sh MALLOC_INFO=1), where one block size costs 10 MB. */
static int spill(rc_session *s, struct user *u)
{
    unsigned cap = u->cap,
             nc = s->history <= SPILL_ONCE_MAX ? s->history : RC_MIN(2u * cap, s->history);
    uint32_t *old = rows(s, u), *nb = malloc(2 * (size_t)nc * sizeof *nb);
    if (!nb)
        return -1;
    memcpy(nb, old, u->count * sizeof *nb);
    memcpy(nb + nc, old + cap, u->count * sizeof *nb);
    size_t add = 2 * (size_t)nc * sizeof *nb;
    if (cap > s->inl) {
        free(old);
        add -= 2 * (size_t)cap * sizeof *nb;
    }
    *(uint32_t **)(void *)(u + 1) = nb;
    u->cap = (uint8_t)nc;
    STORE(s->bytes, LOAD(s->bytes) + add);
    return 0;
}

/* Frees u's spilled clicks (same locking as spill). */
static void unspill(rc_session *s, struct user *u)
{
    if (u->cap > s->inl) {
        free(rows(s, u));
        STORE(s->bytes, LOAD(s->bytes) - 2 * (size_t)u->cap * sizeof(uint32_t));
    }
    u->cap = (uint8_t)s->inl;
}

static const char *key_of(const struct user *u)
{
    return u->klen > KEY_INLINE ? u->key.ptr : u->key.inl;
}

static int64_t click_ts(const rc_session *s, struct user *u, unsigned i)
{
    return u->base + dts(s, u)[i];
}

/* ---- shard tables ------------------------------------------------------ */

/* Slot position of the user, or -1. Caller holds the lock or is the writer. */
static long find(const rc_session *s, const struct shard *sh, uint32_t h32, const char *k,
                 size_t klen)
{
    if (!sh->slots)
        return -1;
    for (uint32_t p = h32 & sh->mask;; p = (p + 1) & sh->mask) {
        const struct slot *e = &sh->slots[p];
        if (!e->idx1)
            return -1;
        if (e->h32 != h32)
            continue;
        struct user *u = rec(s, e->idx1 - 1);
        if (u->klen == klen && memcmp(key_of(u), k, klen) == 0)
            return (long)p;
    }
}

static void place(struct slot *slots, uint32_t mask, struct slot e)
{
    uint32_t p = e.h32 & mask;
    while (slots[p].idx1)
        p = (p + 1) & mask;
    slots[p] = e;
}

/* Writer, shard lock held. Grows at 3/4 load. */
static int table_insert(rc_session *s, struct shard *sh, uint32_t h32, uint32_t idx)
{
    if (!sh->slots || (sh->n + 1) * 4 > (sh->mask + 1) * 3) {
        uint32_t cap = sh->slots ? (sh->mask + 1) * 2 : 64;
        struct slot *ns = calloc(cap, sizeof *ns);
        if (!ns)
            return RC_ENOMEM;
        for (uint32_t i = 0; sh->slots && i <= sh->mask; i++)
            if (sh->slots[i].idx1)
                place(ns, cap - 1, sh->slots[i]);
        if (sh->slots)
            STORE(s->bytes, LOAD(s->bytes) - (size_t)(sh->mask + 1) * sizeof *ns);
        STORE(s->bytes, LOAD(s->bytes) + (size_t)cap * sizeof *ns);
        free(sh->slots);
        sh->slots = ns;
        sh->mask = cap - 1;
    }
    place(sh->slots, sh->mask, (struct slot){h32, idx + 1});
    sh->n++;
    return 0;
}

/* Writer, shard lock held. Backward-shift deletion keeps probe chains whole
 * without tombstones. */
static void table_remove(struct shard *sh, uint32_t p)
{
    uint32_t mask = sh->mask;
    for (uint32_t q = (p + 1) & mask; sh->slots[q].idx1; q = (q + 1) & mask) {
        uint32_t home = sh->slots[q].h32 & mask;
        /* q's entry may move to p unless its home lies cyclically in (p, q] */
        if (((q - home) & mask) >= ((q - p) & mask)) {
            sh->slots[p] = sh->slots[q];
            p = q;
        }
    }
    sh->slots[p].idx1 = 0;
    sh->n--;
}

/* ---- LRU and records (writer only) ------------------------------------- */

static void lru_unlink(rc_session *s, struct user *u)
{
    if (u->prev != NIL)
        rec(s, u->prev)->next = u->next;
    else
        s->lru_head = u->next;
    if (u->next != NIL)
        rec(s, u->next)->prev = u->prev;
    else
        s->lru_tail = u->prev;
}

static void lru_push(rc_session *s, uint32_t idx, struct user *u)
{
    u->prev = NIL;
    u->next = s->lru_head;
    if (s->lru_head != NIL)
        rec(s, s->lru_head)->prev = idx;
    else
        s->lru_tail = idx;
    s->lru_head = idx;
}

static uint32_t rec_alloc(rc_session *s)
{
    uint32_t idx = s->free_head;
    if (idx != NIL) {
        s->free_head = rec(s, idx)->next;
        return idx;
    }
    if ((s->nrec >> CHUNK_SHIFT) >= s->nchunks) {
        size_t sz = (size_t)CHUNK_RECS * s->recsize;
        char *c = malloc(sz);
        if (!c)
            return NIL;
        s->chunks[s->nchunks++] = c;
        STORE(s->bytes, LOAD(s->bytes) + sz);
    }
    return s->nrec++;
}

/* Removes a live user: table (under its shard lock), key, LRU, free list. */
static void drop_user(rc_session *s, uint32_t idx)
{
    struct user *u = rec(s, idx);
    struct shard *sh = &s->shards[rc_hash(key_of(u), u->klen) & (SHARDS - 1)];
    long p = find(s, sh, u->h32, key_of(u), u->klen);

    pthread_mutex_lock(&sh->mu);
    if (p >= 0)
        table_remove(sh, (uint32_t)p);
    if (u->klen > KEY_INLINE) {
        free(u->key.ptr);
        STORE(s->bytes, LOAD(s->bytes) - u->klen);
    }
    u->klen = 0;
    unspill(s, u);
    pthread_mutex_unlock(&sh->mu);
    lru_unlink(s, u);
    u->next = s->free_head;
    s->free_head = idx;
    STORE(s->users, LOAD(s->users) - 1);
}

/* ---- clicks (writer, shard lock held) ----------------------------------- */

/* Makes ts representable as a u32 offset from u->base. Returns 0, or -1 when
 * ts is more than 2^32 ms older than the newest click (cannot be held). */
static int fit_base(const rc_session *s, struct user *u, int64_t ts)
{
    uint32_t *d = dts(s, u);
    if (ts < u->base) {
        int64_t shift = u->base - ts;
        if ((int64_t)d[u->count - 1] + shift > (int64_t)UINT32_MAX)
            return -1;
        for (unsigned i = 0; i < u->count; i++)
            d[i] += (uint32_t)shift;
        u->base = ts;
    } else if (ts - u->base > (int64_t)UINT32_MAX) {
        /* ts is the newest here; older clicks out of range are dropped */
        int64_t lo = ts - (int64_t)UINT32_MAX;
        unsigned k = 0;
        while (k < u->count && click_ts(s, u, k) < lo)
            k++;
        int64_t nb = k < u->count ? click_ts(s, u, k) : ts;
        uint32_t *r = rows(s, u);
        for (unsigned i = k; i < u->count; i++) {
            r[i - k] = r[i];
            d[i - k] = (uint32_t)(click_ts(s, u, i) - nb);
        }
        u->count = (uint8_t)(u->count - k);
        u->base = nb;
    }
    return 0;
}

/* Inserts (row, ts) at position pos (clicks at >= pos are newer). Returns the
 * position it landed at, or -1 when the array is full and the click is older
 * than everything held. A record short of history clicks spills first; without
 * memory for that it drops its oldest click as a full one does. */
static int insert_at(rc_session *s, struct user *u, unsigned pos, uint32_t row, int64_t ts)
{
    if (u->count == u->cap && u->cap < s->history && spill(s, u) < 0)
        INC(s->spill_failures);
    uint32_t *r = rows(s, u), *d = dts(s, u);
    if (u->count == u->cap) {
        if (pos == 0)
            return -1;
        memmove(r, r + 1, (u->count - 1) * sizeof *r);
        memmove(d, d + 1, (u->count - 1) * sizeof *d);
        u->count--;
        pos--;
    }
    memmove(r + pos + 1, r + pos, (u->count - pos) * sizeof *r);
    memmove(d + pos + 1, d + pos, (u->count - pos) * sizeof *d);
    r[pos] = row;
    d[pos] = (uint32_t)(ts - u->base);
    u->count++;
    return (int)pos;
}

/* Classifies and applies one click of a held user. Fills the context with the
 * same-session clicks before it (most recent last). */
static unsigned apply(rc_session *s, struct user *u, uint32_t row, int64_t ts, uint32_t *ctx,
                      uint32_t max_ctx, uint32_t *nctx)
{
    int64_t newest = click_ts(s, u, u->count - 1);
    unsigned flags = 0, pos = u->count;
    int at;

    while (pos > 0 && click_ts(s, u, pos - 1) > ts)
        pos--;
    for (unsigned i = pos; i-- > 0 && click_ts(s, u, i) == ts;)
        if (rows(s, u)[i] == row)
            return RC_SESS_DUPLICATE;
    if (ts >= newest) {
        if (ts - newest > s->gap_ms) {
            u->sess_start = ts;
            flags |= RC_SESS_NEW_SESSION;
        }
    } else if (ts >= u->sess_start - s->gap_ms) {
        flags |= RC_SESS_REORDERED;
        if (ts < u->sess_start) {
            /* extends the session backwards; it joins an older held session
             * when that one ended within gap_ms */
            int64_t start = ts;
            for (unsigned i = pos; i-- > 0 && click_ts(s, u, i) >= start - s->gap_ms;)
                start = click_ts(s, u, i);
            u->sess_start = start;
        }
    } else {
        return RC_SESS_LATE;
    }
    if (fit_base(s, u, ts) < 0)
        return RC_SESS_LATE;
    if (ts >= newest) /* fit_base may have dropped old clicks: append */
        pos = u->count;
    at = insert_at(s, u, pos, row, ts);
    uint32_t n = 0;
    for (int i = at - 1; i >= 0 && n < max_ctx && click_ts(s, u, (unsigned)i) >= u->sess_start; i--)
        n++;
    for (uint32_t j = 0; j < n; j++)
        ctx[j] = rows(s, u)[(unsigned)at - n + j];
    *nctx = n;
    return flags;
}

/* ---- public ------------------------------------------------------------- */

int rc_session_create(const rc_session_opts *opts, rc_session **out, char *errbuf, size_t errlen)
{
    rc_session_opts o = opts ? *opts : (rc_session_opts){0};
    rc_session *s;

    if (!out)
        return rc_err(errbuf, errlen, RC_EINVAL, "session: out is NULL");
    *out = NULL;
    if (o.history > HISTORY_MAX)
        return rc_err(errbuf, errlen, RC_EINVAL, "session: history: expected 1..%d, got %u",
                      HISTORY_MAX, o.history);
    if (o.gap_ms < 0 || o.ttl_ms < 0 || o.gap_ms > (int64_t)UINT32_MAX)
        return rc_err(errbuf, errlen, RC_EINVAL,
                      "session: gap_ms/ttl_ms: expected >= 0 (gap < 2^32 ms)");
    if (o.max_users == NIL)
        return rc_err(errbuf, errlen, RC_EINVAL, "session: max_users: too large");
    s = calloc(1, sizeof *s);
    if (!s)
        return rc_err(errbuf, errlen, RC_ENOMEM, "session: out of memory");
    s->max_users = o.max_users ? o.max_users : 1000000;
    s->history = o.history ? o.history : 20;
    s->inl = RC_MIN(s->history, INLINE_CLICKS);
    s->gap_ms = o.gap_ms ? o.gap_ms : 30 * 60 * 1000;
    s->ttl_ms = o.ttl_ms ? o.ttl_ms : 7LL * 24 * 3600 * 1000;
    s->recsize = (sizeof(struct user) + 2 * sizeof(uint32_t) * s->inl + 7) & ~(size_t)7;
    size_t nch = s->max_users / CHUNK_RECS + 1;
    s->chunks = calloc(nch, sizeof *s->chunks);
    if (!s->chunks) {
        free(s);
        return rc_err(errbuf, errlen, RC_ENOMEM, "session: out of memory");
    }
    for (int i = 0; i < SHARDS; i++)
        pthread_mutex_init(&s->shards[i].mu, NULL);
    s->free_head = s->lru_head = s->lru_tail = NIL;
    s->bytes = sizeof *s + nch * sizeof *s->chunks;
    *out = s;
    return 0;
}

void rc_session_destroy(rc_session *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->nrec; i++) {
        struct user *u = rec(s, i);
        if (u->klen > KEY_INLINE)
            free(u->key.ptr);
        if (u->klen && u->cap > s->inl)
            free(rows(s, u));
    }
    for (uint32_t i = 0; i < s->nchunks; i++)
        free(s->chunks[i]);
    for (int i = 0; i < SHARDS; i++) {
        free(s->shards[i].slots);
        pthread_mutex_destroy(&s->shards[i].mu);
    }
    free(s->chunks);
    free(s);
}

/* Writer. Creates a user holding one click; evicts the LRU user when full. */
static int add_new(rc_session *s, struct shard *sh, uint32_t h32, const char *user, size_t ulen,
                   uint32_t row, int64_t ts)
{
    char *longkey = NULL;
    uint32_t idx;
    struct user *u;

    if (ulen > KEY_INLINE) {
        longkey = malloc(ulen);
        if (!longkey)
            return RC_ENOMEM;
        memcpy(longkey, user, ulen);
    }
    if (LOAD(s->users) >= s->max_users) {
        drop_user(s, s->lru_tail);
        /* The bound is the policy, not a fault: said once per 100,000 evictions. */
        if (LOAD(s->evicted_lru) % 100000 == 0)
            rc_log_warn("session",
                        "sessions.max_users reached: least recently active users "
                        "are evicted",
                        "max_users=%u evicted_lru=%llu", s->max_users,
                        (unsigned long long)LOAD(s->evicted_lru) + 1);
        INC(s->evicted_lru);
    }
    idx = rec_alloc(s);
    if (idx == NIL) {
        free(longkey);
        return RC_ENOMEM;
    }
    u = rec(s, idx); /* in no table yet: no reader can see it */
    memset(u, 0, sizeof *u);
    u->base = u->sess_start = ts;
    u->h32 = h32;
    u->count = 1;
    u->cap = (uint8_t)s->inl;
    u->klen = (uint8_t)ulen;
    if (longkey)
        u->key.ptr = longkey;
    else
        memcpy(u->key.inl, user, ulen);
    rows(s, u)[0] = row;
    dts(s, u)[0] = 0;
    pthread_mutex_lock(&sh->mu);
    int rc = table_insert(s, sh, h32, idx);
    pthread_mutex_unlock(&sh->mu);
    if (rc) {
        free(longkey);
        u->klen = 0;
        u->next = s->free_head;
        s->free_head = idx;
        return rc;
    }
    lru_push(s, idx, u);
    if (longkey)
        STORE(s->bytes, LOAD(s->bytes) + ulen);
    STORE(s->users, LOAD(s->users) + 1);
    INC(s->sessions);
    return 0;
}

int rc_session_add(rc_session *s, const char *user, size_t ulen, uint32_t row, int64_t ts_ms,
                   uint32_t *ctx, uint32_t max_ctx, uint32_t *nctx, unsigned *flags)
{
    uint32_t n = 0;
    unsigned f;

    if (!s || !user || ulen == 0 || ulen > KEY_MAX || (max_ctx && !ctx) || ts_ms < 0)
        return RC_EINVAL;
    uint64_t h = rc_hash(user, ulen);
    uint32_t h32 = (uint32_t)(h >> 32);
    struct shard *sh = &s->shards[h & (SHARDS - 1)];
    long p = find(s, sh, h32, user, ulen); /* writer: no lock needed to read */
    if (p < 0) {
        int rc = add_new(s, sh, h32, user, ulen, row, ts_ms);
        if (rc)
            return rc;
        f = RC_SESS_NEW_USER | RC_SESS_NEW_SESSION;
    } else {
        uint32_t idx = sh->slots[p].idx1 - 1;
        struct user *u = rec(s, idx);
        pthread_mutex_lock(&sh->mu);
        f = apply(s, u, row, ts_ms, ctx, max_ctx, &n);
        pthread_mutex_unlock(&sh->mu);
        lru_unlink(s, u);
        lru_push(s, idx, u);
        if (f & RC_SESS_NEW_SESSION)
            INC(s->sessions);
        if (f & RC_SESS_DUPLICATE)
            INC(s->duplicates);
        if (f & RC_SESS_REORDERED)
            INC(s->reordered);
        if (f & RC_SESS_LATE)
            INC(s->late);
    }
    if (nctx)
        *nctx = n;
    if (flags)
        *flags = f;
    return 0;
}

void rc_session_prefetch(const rc_session *s, uint64_t h, int step)
{
    if (!s)
        return;
    uint32_t h32 = (uint32_t)(h >> 32);
    const struct shard *sh = &s->shards[h & (SHARDS - 1)];
    if (!sh->slots)
        return;
    uint32_t p = h32 & sh->mask;
    if (step <= 0) {
        __builtin_prefetch(&sh->slots[p]);
        return;
    }
    /* Writer: reads its own tables without the lock, as rc_session_add does. */
    for (;; p = (p + 1) & sh->mask) {
        const struct slot *e = &sh->slots[p];
        if (!e->idx1)
            return;
        if (e->h32 != h32)
            continue;
        struct user *u = rec(s, e->idx1 - 1);
        if (step == 1) {
            for (size_t o = 0; o < s->recsize; o += 64)
                __builtin_prefetch((const char *)u + o, 1);
        } else {
            if (u->prev != NIL)
                __builtin_prefetch(rec(s, u->prev), 1);
            if (u->next != NIL)
                __builtin_prefetch(rec(s, u->next), 1);
        }
        return;
    }
}

int rc_session_recent(rc_session *s, const char *user, size_t ulen, rc_click *out, uint32_t max,
                      uint32_t *n)
{
    if (!s || !user || ulen == 0 || ulen > KEY_MAX || (max && !out) || !n)
        return RC_EINVAL;
    uint64_t h = rc_hash(user, ulen);
    struct shard *sh = &s->shards[h & (SHARDS - 1)];
    pthread_mutex_lock(&sh->mu);
    long p = find(s, sh, (uint32_t)(h >> 32), user, ulen);
    if (p < 0) {
        pthread_mutex_unlock(&sh->mu);
        *n = 0;
        return RC_ENOENT;
    }
    struct user *u = rec(s, sh->slots[p].idx1 - 1);
    uint32_t k = RC_MIN(max, (uint32_t)u->count), first = u->count - k;
    for (uint32_t i = 0; i < k; i++) {
        out[i].row = rows(s, u)[first + i];
        out[i].ts_ms = click_ts(s, u, first + i);
    }
    pthread_mutex_unlock(&sh->mu);
    *n = k;
    return 0;
}

uint32_t rc_session_expire(rc_session *s, int64_t now_ms, uint32_t max_users_scanned)
{
    uint32_t dropped = 0, todo;

    if (!s || s->nrec == 0)
        return 0;
    todo = max_users_scanned && max_users_scanned < s->nrec ? max_users_scanned : s->nrec;
    for (; todo > 0; todo--) {
        if (s->cursor >= s->nrec)
            s->cursor = 0;
        uint32_t idx = s->cursor++;
        struct user *u = rec(s, idx);
        if (u->klen && click_ts(s, u, u->count - 1) < now_ms - s->ttl_ms) {
            drop_user(s, idx);
            dropped++;
        }
    }
    STORE(s->expired_ttl, LOAD(s->expired_ttl) + dropped);
    return dropped;
}

void rc_session_stats_get(rc_session *s, rc_session_stats *st)
{
    if (!s || !st)
        return;
    st->users = LOAD(s->users);
    st->evicted_lru = LOAD(s->evicted_lru);
    st->expired_ttl = LOAD(s->expired_ttl);
    st->sessions = LOAD(s->sessions);
    st->duplicates = LOAD(s->duplicates);
    st->reordered = LOAD(s->reordered);
    st->late = LOAD(s->late);
    st->spill_failures = LOAD(s->spill_failures);
    st->bytes = LOAD(s->bytes);
}

/* ---- persistence ---- */

int rc_session_save(rc_session *s, rc_buf *b)
{
    if (!s || !b)
        return RC_EINVAL;
    /* In memory order (chunk after chunk, free records skipped): a walk of
     * the activity list took a cache miss a user inside the trainer's pause
     * (0.38 s against 0.1 s at 1M users whose clicks interleave,
     * docs/BENCHMARKS.md). The loader restores the activity order from each
     * user's newest click. */
    size_t at = b->len;
    uint32_t users = 0;
    int rc = rc_buf_append(b, &users, 4);
    /* one user's record at most: its length byte, id, start, count, clicks */
    unsigned char one[1 + KEY_MAX + 8 + 1 + HISTORY_MAX * 12];
    for (uint32_t idx = 0; !rc && idx < s->nrec; idx++) {
        struct user *u = rec(s, idx);
        if (!u->klen)
            continue;
        size_t n = 0;
        one[n++] = u->klen;
        memcpy(one + n, key_of(u), u->klen);
        n += u->klen;
        memcpy(one + n, &u->sess_start, 8);
        n += 8;
        one[n++] = u->count;
        for (unsigned i = 0; i < u->count; i++) {
            int64_t ts = click_ts(s, u, i);
            memcpy(one + n, &rows(s, u)[i], 4);
            memcpy(one + n + 4, &ts, 8);
            n += 12;
        }
        rc = rc_buf_append(b, one, n);
        users++;
    }
    if (!rc)
        memcpy(b->data + at, &users, 4);
    return rc ? RC_ENOMEM : 0;
}

struct rd {
    const unsigned char *p;
    size_t n, pos;
};

static int rd_get(struct rd *r, void *dst, size_t k)
{
    if (k > r->n - r->pos)
        return -1;
    memcpy(dst, r->p + r->pos, k);
    r->pos += k;
    return 0;
}

/* One saved user: its clicks (oldest first) into a new record at once, its
 * session's start set as saved. A user already held (named twice) gets its
 * clicks one by one, as the stream would. Returns 0, RC_ENOMEM, RC_ECORRUPT. */
static int restore_user(rc_session *s, const char *key, size_t klen, int64_t start,
                        const uint32_t *rws, const int64_t *tss, uint32_t n)
{
    uint64_t h = rc_hash(key, klen);
    uint32_t h32 = (uint32_t)(h >> 32);
    struct shard *sh = &s->shards[h & (SHARDS - 1)];
    if (find(s, sh, h32, key, klen) >= 0) {
        for (uint32_t k = 0; k < n; k++) {
            int e = rc_session_add(s, key, klen, rws[k], tss[k], NULL, 0, NULL, NULL);
            if (e)
                return e == RC_ENOMEM ? RC_ENOMEM : RC_ECORRUPT;
        }
        return 0;
    }
    int e = add_new(s, sh, h32, key, klen, rws[0], tss[0]);
    if (e)
        return e == RC_ENOMEM ? RC_ENOMEM : RC_ECORRUPT;
    struct user *u = rec(s, s->lru_head); /* add_new put it there */
    pthread_mutex_lock(&sh->mu);
    for (uint32_t k = 1; k < n; k++)
        if (!(tss[k] == tss[k - 1] && rws[k] == rws[k - 1]) && /* a duplicate, as the stream's */
            fit_base(s, u, tss[k]) == 0)
            insert_at(s, u, u->count, rws[k], tss[k]);
    int64_t newest = click_ts(s, u, u->count - 1), begin = newest;
    for (unsigned i = u->count - 1; i-- > 0 && begin - click_ts(s, u, i) <= s->gap_ms;)
        begin = click_ts(s, u, i); /* where the gaps put the current session's start */
    u->sess_start = start >= 0 && start <= begin ? start : begin;
    pthread_mutex_unlock(&sh->mu);
    return 0;
}

/* One saved user at r->pos, checked: its id, its session's start and its
 * clicks (times ascending, none negative) into the arrays; r->pos moves past it. */
static int sentry_at(struct rd *r, char *key, unsigned char *klen, int64_t *start,
                     unsigned char *cnt, uint32_t *rws, int64_t *tss)
{
    *klen = *cnt = 0;
    if (rd_get(r, klen, 1) || *klen == 0 || *klen > KEY_MAX || rd_get(r, key, *klen) ||
        rd_get(r, start, 8) || rd_get(r, cnt, 1) || *cnt == 0 || (size_t)*cnt * 12 > r->n - r->pos)
        return RC_ECORRUPT;
    for (unsigned k = 0; k < *cnt; k++) {
        rd_get(r, &rws[k], 4);
        rd_get(r, &tss[k], 8);
        if (tss[k] < 0 || (k && tss[k] < tss[k - 1]))
            return RC_ECORRUPT;
    }
    return 0;
}

#define SENTRY_MIN     23u /* length byte, a 1-byte id, start, count, one click */
#define PREFETCH_AHEAD 8u

/* The whole blob is checked before a user is added; then they are added
 * oldest first (by their newest click, saved order among equal times), so the
 * activity order follows the users' newest clicks and a smaller bound keeps
 * the most recent. */
int rc_session_load(rc_session *s, const void *p, size_t n, uint32_t nrows, uint64_t *users,
                    uint64_t *dropped)
{
    struct rd r = {p, n, 0};
    uint32_t nu = 0;
    uint64_t added = 0, drop = 0;
    int rc = 0;
    if (!s || (!p && n))
        return RC_EINVAL;
    if (rd_get(&r, &nu, 4) || nu > (n - 4) / SENTRY_MIN)
        return RC_ECORRUPT;
    rc_timed_ref *ord = malloc((nu ? nu : 1) * sizeof *ord);
    if (!ord)
        return RC_ENOMEM;
    char key[256];
    unsigned char klen, cnt;
    int64_t start, tss[HISTORY_MAX];
    uint32_t rws[HISTORY_MAX];
    for (uint32_t i = 0; !rc && i < nu; i++) {
        ord[i].ref = r.pos;
        rc = sentry_at(&r, key, &klen, &start, &cnt, rws, tss);
        ord[i].ts = rc ? 0 : tss[cnt - 1];
    }
    if (!rc)
        rc_timed_ref_sort(ord, nu);
    /* the stream's counters go on from what they were: the load is no click */
    uint64_t sessions = LOAD(s->sessions), dups = LOAD(s->duplicates), reord = LOAD(s->reordered),
             late = LOAD(s->late);
    uint64_t hs[2 * PREFETCH_AHEAD]; /* ids' hashes, PREFETCH_AHEAD ahead */
    for (uint32_t i = 0; !rc && i < nu; i++) {
        /* the blob is read out of order now, and so are the hash slots: each
         * a cache miss at a million users, loaded ahead as the engine does */
        if (i + 2 * PREFETCH_AHEAD < nu)
            __builtin_prefetch(r.p + ord[i + 2 * PREFETCH_AHEAD].ref);
        if (i + PREFETCH_AHEAD < nu) {
            const unsigned char *at = r.p + ord[i + PREFETCH_AHEAD].ref; /* [klen][id] */
            uint64_t h = rc_hash(at + 1, at[0]);
            hs[(i + PREFETCH_AHEAD) % (2 * PREFETCH_AHEAD)] = h;
            rc_session_prefetch(s, h, 0);
        }
        if (i >= PREFETCH_AHEAD / 2 && i + PREFETCH_AHEAD / 2 < nu)
            rc_session_prefetch(s, hs[(i + PREFETCH_AHEAD / 2) % (2 * PREFETCH_AHEAD)], 1);
        r.pos = ord[i].ref;
        sentry_at(&r, key, &klen, &start, &cnt, rws, tss); /* checked above */
        uint32_t kept = 0;
        for (unsigned k = 0; k < cnt; k++) {
            if (rws[k] >= nrows) {
                drop++;
                continue;
            }
            rws[kept] = rws[k];
            tss[kept++] = tss[k];
        }
        if (!kept)
            continue;
        if ((rc = restore_user(s, key, klen, start, rws, tss, kept)))
            break;
        added++;
    }
    free(ord);
    STORE(s->sessions, sessions);
    STORE(s->duplicates, dups);
    STORE(s->reordered, reord);
    STORE(s->late, late);
    if (users)
        *users = added;
    if (dropped)
        *dropped = drop;
    return rc;
}
