/* dict — append-only string interning.
 *
 * Layout: an open-addressing table of 64-bit slots (hash << 32 | id+1); the
 * id -> string directory is a fixed array of chunk pointers sized from max_ids
 * at create (directory rows never move), and the bytes live in an arena of
 * blocks that are never freed before destroy.
 *
 * Readers take no lock. A slot is published with a release store after its
 * entry and the size are written, so a reader that sees the slot sees both.
 * Growing builds a new table and publishes it with one pointer store; the old
 * table stays allocated (on a list freed at destroy) because a reader may still
 * be probing it. Its cost is bounded by the current table's size. A rwlock was
 * tried first: with busy readers, glibc's rwlock cost the writer ~10-40 us per
 * insert from cache-line and futex traffic, which the trainer cannot afford. */
#include "recalld/dict.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"

#define ENT_SHIFT   12u
#define ENT_PER     (1u << ENT_SHIFT)
#define ENT_MASK    (ENT_PER - 1u)
#define ARENA_BLOCK (64u * 1024u)
#define BIG_STRING  (ARENA_BLOCK / 4u)
#define MAX_LEN     65535u
#define INIT_SLOTS  64u

struct ent {
    const char *s;
    uint32_t len;
    uint32_t hash;
};

struct stab {
    struct stab *prev; /* retired tables, freed at destroy */
    uint32_t mask;
    _Atomic uint64_t slots[]; /* hash << 32 | (id + 1); 0 = empty */
};

struct ablock {
    struct ablock *next;
    char data[];
};

struct rc_dict {
    _Atomic(struct stab *) tab;
    uint32_t max_ids;
    struct ent **dir; /* ndir chunk pointers, fixed at create */
    uint32_t ndir;
    _Atomic uint32_t size;
    struct ablock *blocks; /* writer only */
    char *acur;
    size_t aleft;
    _Atomic size_t bytes;
};

static struct stab *stab_new(uint32_t cap)
{
    struct stab *t = calloc(1, sizeof(*t) + (size_t)cap * sizeof(uint64_t));
    if (t)
        t->mask = cap - 1;
    return t;
}

int rc_dict_create(uint32_t max_ids, rc_dict **out, char *errbuf, size_t errlen)
{
    if (!out)
        return rc_err(errbuf, errlen, RC_EINVAL, "dict: out is NULL");
    *out = NULL;
    if (max_ids == 0 || max_ids > (1u << 31))
        max_ids = 1u << 31;
    rc_dict *d = calloc(1, sizeof(*d));
    if (!d)
        return rc_err(errbuf, errlen, RC_ENOMEM, "dict: out of memory");
    d->max_ids = max_ids;
    d->ndir = (max_ids + ENT_MASK) >> ENT_SHIFT;
    /* Untouched pages of a large calloc stay virtual, so a big bound costs little. */
    d->dir = calloc(d->ndir, sizeof(*d->dir));
    struct stab *tab = stab_new(INIT_SLOTS);
    if (!d->dir || !tab) {
        free(d->dir);
        free(tab);
        free(d);
        return rc_err(errbuf, errlen, RC_ENOMEM, "dict: out of memory");
    }
    atomic_init(&d->tab, tab);
    atomic_init(&d->size, 0);
    atomic_init(&d->bytes,
                sizeof(*d) + INIT_SLOTS * sizeof(uint64_t) + (size_t)d->ndir * sizeof(*d->dir));
    *out = d;
    return 0;
}

void rc_dict_destroy(rc_dict *d)
{
    if (!d)
        return;
    for (uint32_t i = 0; i < d->ndir && d->dir[i]; i++)
        free(d->dir[i]);
    while (d->blocks) {
        struct ablock *b = d->blocks;
        d->blocks = b->next;
        free(b);
    }
    struct stab *t = atomic_load_explicit(&d->tab, memory_order_relaxed);
    while (t) {
        struct stab *prev = t->prev;
        free(t);
        t = prev;
    }
    free(d->dir);
    free(d);
}

static inline const struct ent *entry(const rc_dict *d, uint32_t id)
{
    return &d->dir[id >> ENT_SHIFT][id & ENT_MASK];
}

/* Any thread. Returns id+1 or 0. */
static uint32_t probe(const struct stab *t, const rc_dict *d, const char *s, size_t len, uint32_t h)
{
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        uint64_t v = atomic_load_explicit(&((struct stab *)t)->slots[i], memory_order_acquire);
        if (v == 0)
            return 0;
        if ((uint32_t)(v >> 32) != h)
            continue;
        const struct ent *e = entry(d, (uint32_t)v - 1);
        if (e->len == len && memcmp(e->s, s, len) == 0)
            return (uint32_t)v;
    }
}

/* Writer. The release store publishes the entry written before it. */
static void slot_put(struct stab *t, uint64_t v)
{
    uint32_t i = (uint32_t)(v >> 32) & t->mask;
    while (atomic_load_explicit(&t->slots[i], memory_order_relaxed))
        i = (i + 1) & t->mask;
    atomic_store_explicit(&t->slots[i], v, memory_order_release);
}

static int grow_slots(rc_dict *d)
{
    struct stab *old = atomic_load_explicit(&d->tab, memory_order_relaxed);
    uint32_t ncap = (old->mask + 1) * 2;
    struct stab *nt = stab_new(ncap);
    if (!nt)
        return RC_ENOMEM;
    for (uint32_t i = 0; i <= old->mask; i++) {
        uint64_t v = atomic_load_explicit(&old->slots[i], memory_order_relaxed);
        if (v)
            slot_put(nt, v);
    }
    nt->prev = old;
    atomic_store_explicit(&d->tab, nt, memory_order_release);
    atomic_fetch_add_explicit(&d->bytes, (size_t)ncap * sizeof(uint64_t), memory_order_relaxed);
    return 0;
}

/* Writer. Copies s into the arena; the copy never moves. */
static char *arena_copy(rc_dict *d, const char *s, size_t len)
{
    size_t need = len + 1;
    if (need > d->aleft) {
        size_t bsz = need > BIG_STRING ? need : ARENA_BLOCK;
        struct ablock *b = malloc(sizeof(*b) + bsz);
        if (!b)
            return NULL;
        b->next = d->blocks;
        d->blocks = b;
        atomic_fetch_add_explicit(&d->bytes, sizeof(*b) + bsz, memory_order_relaxed);
        if (need > BIG_STRING) {
            /* A big string gets its own block; keep filling the current one. */
            memcpy(b->data, s, len);
            b->data[len] = '\0';
            return b->data;
        }
        d->acur = b->data;
        d->aleft = bsz;
    }
    char *p = d->acur;
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    d->acur += need;
    d->aleft -= need;
    return p;
}

int rc_dict_intern(rc_dict *d, const char *s, size_t len, uint32_t *id, int *created)
{
    if (!d || (!s && len) || !id)
        return RC_EINVAL;
    if (len > MAX_LEN)
        return RC_E2BIG;
    if (created)
        *created = 0;
    uint32_t h = (uint32_t)rc_hash(s, len);
    struct stab *t = atomic_load_explicit(&d->tab, memory_order_relaxed);
    uint32_t idp1 = probe(t, d, s, len, h);
    if (idp1) {
        *id = idp1 - 1;
        return 0;
    }
    uint32_t n = atomic_load_explicit(&d->size, memory_order_relaxed);
    if (n >= d->max_ids)
        return RC_ENOMEM;
    if ((uint64_t)(n + 1) * 2 > (uint64_t)t->mask + 1 && grow_slots(d) != 0)
        return RC_ENOMEM;
    struct ent **chunk = &d->dir[n >> ENT_SHIFT];
    if (!*chunk) {
        *chunk = malloc(ENT_PER * sizeof(struct ent));
        if (!*chunk)
            return RC_ENOMEM;
        atomic_fetch_add_explicit(&d->bytes, ENT_PER * sizeof(struct ent), memory_order_relaxed);
    }
    char *copy = arena_copy(d, s ? s : "", len);
    if (!copy)
        return RC_ENOMEM;
    struct ent *e = &(*chunk)[n & ENT_MASK];
    e->s = copy;
    e->len = (uint32_t)len;
    e->hash = h;
    /* Size before the slot: a reader that finds the slot may call rc_dict_str at once. */
    atomic_store_explicit(&d->size, n + 1, memory_order_release);
    slot_put(atomic_load_explicit(&d->tab, memory_order_relaxed), ((uint64_t)h << 32) | (n + 1));
    *id = n;
    if (created)
        *created = 1;
    return 0;
}

int rc_dict_find(const rc_dict *d, const char *s, size_t len, uint32_t *id)
{
    if (!d || (!s && len) || !id)
        return RC_EINVAL;
    if (len > MAX_LEN)
        return RC_ENOENT;
    uint32_t h = (uint32_t)rc_hash(s, len);
    const struct stab *t = atomic_load_explicit(&((rc_dict *)d)->tab, memory_order_acquire);
    uint32_t idp1 = probe(t, d, s, len, h);
    if (!idp1)
        return RC_ENOENT;
    *id = idp1 - 1;
    return 0;
}

uint32_t rc_dict_prefetch(const rc_dict *d, const char *s, size_t len, int step)
{
    if (!d || (!s && len) || len > MAX_LEN)
        return UINT32_MAX;
    uint32_t h = (uint32_t)rc_hash(s, len);
    const struct stab *t = atomic_load_explicit(&((rc_dict *)d)->tab, memory_order_acquire);
    uint32_t i = h & t->mask;
    if (step <= 0) {
        __builtin_prefetch((const void *)&t->slots[i]);
        return UINT32_MAX;
    }
    for (;; i = (i + 1) & t->mask) {
        uint64_t v = atomic_load_explicit(&((struct stab *)t)->slots[i], memory_order_acquire);
        if (v == 0)
            return UINT32_MAX;
        if ((uint32_t)(v >> 32) == h) {
            const struct ent *e = entry(d, (uint32_t)v - 1);
            if (step == 1)
                __builtin_prefetch(e);
            else
                __builtin_prefetch(e->s);
            return (uint32_t)v - 1;
        }
    }
}

const char *rc_dict_str(const rc_dict *d, uint32_t id, size_t *len)
{
    if (!d || id >= rc_dict_size(d))
        return NULL;
    const struct ent *e = entry(d, id);
    if (len)
        *len = e->len;
    return e->s;
}

uint32_t rc_dict_size(const rc_dict *d)
{
    return d ? atomic_load_explicit(&((rc_dict *)d)->size, memory_order_acquire) : 0;
}

size_t rc_dict_bytes(const rc_dict *d)
{
    return d ? atomic_load_explicit(&((rc_dict *)d)->bytes, memory_order_relaxed) : 0;
}
