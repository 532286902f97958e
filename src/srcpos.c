/* srcpos — source positions of repartitioned messages (include/recalld/srcpos.h).
 * The filter is an open-addressing table of (partition, source partition) ->
 * highest source offset, grown at half full; a forget resets the
 * partition's entries in place. */
#include "recalld/srcpos.h"

#include <stdlib.h>
#include <string.h>

void rc_srcpos_encode(unsigned char out[RC_SRCPOS_LEN], int32_t partition, int64_t offset)
{
    uint32_t p = (uint32_t)partition;
    uint64_t o = (uint64_t)offset;
    for (int i = 0; i < 4; i++)
        out[i] = (unsigned char)(p >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        out[4 + i] = (unsigned char)(o >> (56 - 8 * i));
}

int rc_srcpos_decode(const void *v, size_t len, int32_t *partition, int64_t *offset)
{
    const unsigned char *b = v;
    uint32_t p = 0;
    uint64_t o = 0;
    if (!v || len != RC_SRCPOS_LEN)
        return -1;
    for (int i = 0; i < 4; i++)
        p = p << 8 | b[i];
    for (int i = 0; i < 8; i++)
        o = o << 8 | b[4 + i];
    if ((int32_t)p < 0 || (int64_t)o < 0)
        return -1;
    *partition = (int32_t)p;
    *offset = (int64_t)o;
    return 0;
}

struct entry {
    int32_t part, src; /* part < 0: empty */
    int64_t max;
};

struct rc_srcpos_seen {
    struct entry *e;
    size_t cap, n; /* cap: a power of two */
};

static size_t slot(const rc_srcpos_seen *s, int32_t part, int32_t src)
{
    uint64_t h = ((uint64_t)(uint32_t)part << 32 | (uint32_t)src) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (s->cap - 1);
}

static struct entry *find(rc_srcpos_seen *s, int32_t part, int32_t src)
{
    size_t i = slot(s, part, src);
    while (s->e[i].part >= 0 && (s->e[i].part != part || s->e[i].src != src))
        i = (i + 1) & (s->cap - 1);
    return &s->e[i];
}

static int rebuild(rc_srcpos_seen *s, size_t cap)
{
    struct entry *old = s->e;
    size_t ocap = s->cap;
    struct entry *e = malloc(cap * sizeof *e);
    if (!e)
        return -1;
    for (size_t i = 0; i < cap; i++)
        e[i].part = -1;
    s->e = e;
    s->cap = cap;
    s->n = 0;
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].part < 0)
            continue;
        *find(s, old[i].part, old[i].src) = old[i];
        s->n++;
    }
    free(old);
    return 0;
}

rc_srcpos_seen *rc_srcpos_seen_new(void)
{
    rc_srcpos_seen *s = calloc(1, sizeof *s);
    if (!s || rebuild(s, 64)) {
        free(s);
        return NULL;
    }
    return s;
}

void rc_srcpos_seen_free(rc_srcpos_seen *s)
{
    if (!s)
        return;
    free(s->e);
    free(s);
}

int rc_srcpos_seen_check(rc_srcpos_seen *s, int32_t part, int32_t src, int64_t off)
{
    if (part < 0)
        return 0;
    struct entry *e = find(s, part, src);
    if (e->part >= 0) {
        if (off <= e->max)
            return 1;
        e->max = off;
        return 0;
    }
    if (2 * (s->n + 1) > s->cap) {
        if (rebuild(s, 2 * s->cap))
            return 0;
        e = find(s, part, src);
    }
    *e = (struct entry){part, src, off};
    s->n++;
    return 0;
}

void rc_srcpos_seen_forget(rc_srcpos_seen *s, int32_t part)
{
    for (size_t i = 0; s && i < s->cap; i++)
        if (s->e[i].part == part)
            s->e[i].max = -1; /* kept (no allocation): the next offset is new */
}
