/* table — item rows in fixed chunks that never move.
 *
 * Row r lives in chunk r >> shift at slot r & mask; the chunk pointer array is
 * sized from max_items at create, so readers index it without a lock once
 * they have acquire-loaded the size. Row ids are the item dict's ids. Cold
 * start keeps, per (city, cate) group, a ring of the last RING rows added,
 * whose current input vectors give the mean for a new item of a named
 * category that comes without a session context. */
#include "recalld/table.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/dict.h"
#include "recalld/half.h"
#include "recalld/vec.h"

#define RING        16u
#define DEFAULT_DIM 64u
#define MAX_DIM     RC_TABLE_MAX_DIM
#define DEFAULT_MAX (16u * 1024u * 1024u)
#define MAX_ATTRS   (1u << 24)
#define AUTO_FLOATS (1u << 20) /* input floats per chunk when chunk_rows = 0 */
#define ALIGN       64u

struct chunk {
    float *in, *out;
    uint16_t *hin; /* half tables: the input vectors in fp16 (in is NULL) */
    uint32_t *city, *cate, *count;
    void *mem; /* one aligned block holding all of the above */
};

struct ring {
    uint32_t rows[RING];
    uint32_t n, next;
};

struct group_map {  /* (city, cate) -> ring index, open addressing */
    uint64_t *keys; /* key + 1; 0 = empty */
    uint32_t *idx;
    uint32_t cap, n;
};

struct rc_table {
    uint32_t dim, max_items;
    uint32_t shift, mask, nchunks;
    int input_only;        /* no output vectors (opts.input_only) */
    int half;              /* input vectors in fp16 (opts.half) */
    struct chunk **chunks; /* nchunks pointers, fixed at create */
    size_t chunk_bytes;
    _Atomic uint32_t size;
    _Atomic uint32_t chunks_used;
    _Atomic uint64_t total;
    _Atomic size_t aux_bytes;    /* rings and group map, for rc_table_bytes from any thread */
    _Atomic uint32_t pop_weight; /* bits of the float rc_table_set_pop_weight set */
    rc_dict *ids, *cities, *cates;
    rc_rng rng;
    struct ring *group_rings; /* writer only, indexed by group_map.idx */
    uint32_t group_cap;
    struct group_map gmap;
};

static uint32_t floor_pow2(uint32_t x)
{
    uint32_t p = 1;
    while (p <= x / 2)
        p *= 2;
    return p;
}

static int check_opts(const rc_table_opts *o, uint32_t *dim, uint32_t *max, uint32_t *rows,
                      char *errbuf, size_t errlen)
{
    *dim = o && o->dim ? o->dim : DEFAULT_DIM;
    *max = o && o->max_items ? o->max_items : DEFAULT_MAX;
    *rows = o && o->chunk_rows ? o->chunk_rows : floor_pow2(AUTO_FLOATS / *dim);
    if (*dim % 8 || *dim > MAX_DIM)
        return rc_err(errbuf, errlen, RC_EINVAL, "table: dim: expected a multiple of 8 <= 1024");
    if (*max > (1u << 31))
        return rc_err(errbuf, errlen, RC_EINVAL, "table: max_items: expected <= 2^31");
    if (*rows < 64 || (*rows & (*rows - 1)))
        return rc_err(errbuf, errlen, RC_EINVAL, "table: chunk_rows: expected a power of 2 >= 64");
    if (o && o->half && !(o->input_only && o->no_ids))
        return rc_err(errbuf, errlen, RC_EINVAL, "table: half: needs input_only and no_ids");
    return 0;
}

int rc_table_create(const rc_table_opts *opts, rc_table **out, char *errbuf, size_t errlen)
{
    uint32_t dim, max, rows;
    if (!out)
        return rc_err(errbuf, errlen, RC_EINVAL, "table: out is NULL");
    *out = NULL;
    int rc = check_opts(opts, &dim, &max, &rows, errbuf, errlen);
    if (rc)
        return rc;
    rc_table *t = calloc(1, sizeof(*t));
    if (!t)
        return rc_err(errbuf, errlen, RC_ENOMEM, "table: out of memory");
    t->dim = dim;
    t->max_items = max;
    t->shift = (uint32_t)__builtin_ctz(rows);
    t->mask = rows - 1;
    t->nchunks = (uint32_t)(((uint64_t)max + rows - 1) / rows);
    t->input_only = opts && opts->input_only;
    t->half = opts && opts->half;
    size_t vec = (size_t)rows * dim * (t->half ? sizeof(uint16_t) : sizeof(float));
    t->chunk_bytes =
        ((t->input_only ? 1 : 2) * vec + 3 * (size_t)rows * sizeof(uint32_t) + ALIGN - 1) / ALIGN *
        ALIGN;
    rc_rng_seed(&t->rng, opts && opts->seed ? opts->seed : 0x7ab1e5eedull);
    t->chunks = calloc(t->nchunks, sizeof(*t->chunks));
    if (!t->chunks)
        goto out_nomem;
    if ((!(opts && opts->no_ids) && (rc = rc_dict_create(max, &t->ids, errbuf, errlen))) ||
        (rc = rc_dict_create(MAX_ATTRS, &t->cities, errbuf, errlen)) ||
        (rc = rc_dict_create(MAX_ATTRS, &t->cates, errbuf, errlen)))
        goto out_destroy;
    *out = t;
    return 0;
out_nomem:
    rc = rc_err(errbuf, errlen, RC_ENOMEM, "table: out of memory");
out_destroy:
    rc_table_destroy(t);
    return rc;
}

void rc_table_destroy(rc_table *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; t->chunks && i < t->nchunks; i++) {
        if (t->chunks[i]) {
            free(t->chunks[i]->mem);
            free(t->chunks[i]);
        }
    }
    free(t->chunks);
    rc_dict_destroy(t->ids);
    rc_dict_destroy(t->cities);
    rc_dict_destroy(t->cates);
    free(t->group_rings);
    free(t->gmap.keys);
    free(t->gmap.idx);
    free(t);
}

uint32_t rc_table_dim(const rc_table *t) { return t->dim; }

uint32_t rc_table_size(const rc_table *t)
{
    return atomic_load_explicit(&((rc_table *)t)->size, memory_order_acquire);
}

/* Writer. Allocates chunk i; rows in it are written field by field at upsert. */
static int chunk_alloc(rc_table *t, uint32_t i)
{
    struct chunk *c = malloc(sizeof(*c));
    if (!c)
        return RC_ENOMEM;
    c->mem = rc_alloc_huge(t->chunk_bytes);
    if (!c->mem) {
        free(c);
        return RC_ENOMEM;
    }
    size_t rows = (size_t)t->mask + 1;
    c->hin = t->half ? c->mem : NULL;
    c->in = t->half ? NULL : c->mem;
    c->out = t->input_only ? NULL : c->in + rows * t->dim;
    c->city = t->half ? (uint32_t *)(c->hin + rows * t->dim)
                      : (uint32_t *)(c->in + (t->input_only ? 1 : 2) * rows * t->dim);
    c->cate = c->city + rows;
    c->count = c->cate + rows;
    t->chunks[i] = c;
    atomic_fetch_add_explicit(&t->chunks_used, 1, memory_order_relaxed);
    return 0;
}

static int attr_id(rc_dict *d, const char *s, size_t len, uint32_t *id)
{
    if (!s && len)
        return RC_EINVAL;
    return rc_dict_intern(d, s, len, id, NULL);
}

int rc_table_city_id(rc_table *t, const char *s, size_t len, uint32_t *id)
{
    return t && id ? attr_id(t->cities, s, len, id) : RC_EINVAL;
}

int rc_table_cate_id(rc_table *t, const char *s, size_t len, uint32_t *id)
{
    return t && id ? attr_id(t->cates, s, len, id) : RC_EINVAL;
}

int rc_table_find_city(const rc_table *t, const char *s, size_t len, uint32_t *id)
{
    return t ? rc_dict_find(t->cities, s, len, id) : RC_EINVAL;
}

int rc_table_find_cate(const rc_table *t, const char *s, size_t len, uint32_t *id)
{
    return t ? rc_dict_find(t->cates, s, len, id) : RC_EINVAL;
}

const char *rc_table_city_name(const rc_table *t, uint32_t city)
{
    return t ? rc_dict_str(t->cities, city, NULL) : NULL;
}

const char *rc_table_cate_name(const rc_table *t, uint32_t cate)
{
    return t ? rc_dict_str(t->cates, cate, NULL) : NULL;
}

uint32_t rc_table_ncities(const rc_table *t) { return rc_dict_size(t->cities); }

uint32_t rc_table_ncates(const rc_table *t) { return rc_dict_size(t->cates); }

static inline struct chunk *chunk_of(const rc_table *t, uint32_t row)
{
    return t->chunks[row >> t->shift];
}

float *rc_table_in(const rc_table *t, uint32_t row)
{
    if (t->half)
        return NULL;
    return chunk_of(t, row)->in + (size_t)(row & t->mask) * t->dim;
}

int rc_table_half(const rc_table *t) { return t->half; }

const float *rc_table_in_read(const rc_table *t, uint32_t row, float *buf)
{
    if (!t->half)
        return chunk_of(t, row)->in + (size_t)(row & t->mask) * t->dim;
    rc_half_decode(buf, chunk_of(t, row)->hin + (size_t)(row & t->mask) * t->dim, t->dim);
    return buf;
}

float rc_table_in_cos(const rc_table *t, uint32_t row, const float *q)
{
    float vv, d;
    if (t->half) {
        d = rc_half_dot(q, chunk_of(t, row)->hin + (size_t)(row & t->mask) * t->dim, t->dim, &vv);
    } else {
        const float *v = chunk_of(t, row)->in + (size_t)(row & t->mask) * t->dim;
        vv = rc_vec_dot(v, v, t->dim);
        d = rc_vec_dot(q, v, t->dim);
    }
    float norm = sqrtf(vv);
    return norm > 0 ? d / norm : 0;
}

void rc_table_in_copy(const rc_table *t, uint32_t row, float *dst)
{
    const float *v = rc_table_in_read(t, row, dst);
    if (v != dst)
        rc_vec_copy(dst, v, t->dim);
}

void rc_table_in_write(rc_table *t, uint32_t row, const float *v)
{
    struct chunk *c = chunk_of(t, row);
    size_t off = (size_t)(row & t->mask) * t->dim;
    if (t->half)
        rc_half_encode(c->hin + off, v, t->dim);
    else
        memcpy(c->in + off, v, t->dim * sizeof *v);
}

float *rc_table_out(const rc_table *t, uint32_t row)
{
    if (t->input_only)
        return NULL;
    return chunk_of(t, row)->out + (size_t)(row & t->mask) * t->dim;
}

uint32_t rc_table_city(const rc_table *t, uint32_t row)
{
    return chunk_of(t, row)->city[row & t->mask];
}

uint32_t rc_table_cate(const rc_table *t, uint32_t row)
{
    return chunk_of(t, row)->cate[row & t->mask];
}

/* Counts are read from other threads (stats, popularity), hence relaxed atomics. */
uint32_t rc_table_count(const rc_table *t, uint32_t row)
{
    return __atomic_load_n(&chunk_of(t, row)->count[row & t->mask], __ATOMIC_RELAXED);
}

void rc_table_count_add(rc_table *t, uint32_t row, uint32_t inc)
{
    uint32_t *p = &chunk_of(t, row)->count[row & t->mask];
    uint32_t v = __atomic_load_n(p, __ATOMIC_RELAXED);
    uint32_t nv = inc > UINT32_MAX - v ? UINT32_MAX : v + inc;
    __atomic_store_n(p, nv, __ATOMIC_RELAXED);
    atomic_fetch_add_explicit(&t->total, inc, memory_order_relaxed);
}

uint64_t rc_table_total_count(const rc_table *t)
{
    return atomic_load_explicit(&((rc_table *)t)->total, memory_order_relaxed);
}

void rc_table_set_pop_weight(rc_table *t, float w)
{
    uint32_t bits;
    memcpy(&bits, &w, sizeof bits);
    atomic_store_explicit(&t->pop_weight, bits, memory_order_relaxed);
}

float rc_table_pop_weight(const rc_table *t)
{
    uint32_t bits = atomic_load_explicit(&((rc_table *)t)->pop_weight, memory_order_relaxed);
    float w;
    memcpy(&w, &bits, sizeof w);
    return w;
}

const char *rc_table_item_id(const rc_table *t, uint32_t row, size_t *len)
{
    if (!t || !t->ids) {
        if (len)
            *len = 0;
        return NULL;
    }
    return rc_dict_str(t->ids, row, len);
}

int rc_table_find(const rc_table *t, const char *id, size_t len, uint32_t *row)
{
    if (!t || !row)
        return RC_EINVAL;
    if (!t->ids)
        return RC_ENOENT;
    uint32_t r;
    int rc = rc_dict_find(t->ids, id, len, &r);
    if (rc)
        return rc;
    /* The dict publishes the id before the row is initialised. */
    if (r >= rc_table_size(t))
        return RC_ENOENT;
    *row = r;
    return 0;
}

void rc_table_prefetch(const rc_table *t, const char *id, size_t len, int step)
{
    if (!t || !t->ids)
        return;
    uint32_t r = rc_dict_prefetch(t->ids, id, len, step);
    if (step != 1 || r >= rc_table_size(t))
        return;
    const struct chunk *c = chunk_of(t, r);
    uint32_t slot = r & t->mask;
    __builtin_prefetch(&c->count[slot], 1);
    const float *in = c->in + (size_t)slot * t->dim;
    const float *out = c->out ? c->out + (size_t)slot * t->dim : in;
    for (uint32_t k = 0; k < t->dim; k += 16) {
        __builtin_prefetch(in + k, 1);
        __builtin_prefetch(out + k, 1);
    }
}

/* ---- cold start ---- */

static int gmap_grow(rc_table *t)
{
    struct group_map *g = &t->gmap;
    uint32_t ncap = g->cap ? g->cap * 2 : 64;
    uint64_t *nk = calloc(ncap, sizeof(*nk));
    uint32_t *ni = malloc(ncap * sizeof(*ni));
    if (!nk || !ni) {
        free(nk);
        free(ni);
        return RC_ENOMEM;
    }
    for (uint32_t i = 0; i < g->cap; i++) {
        if (!g->keys[i])
            continue;
        uint32_t j = (uint32_t)rc_hash(&g->keys[i], sizeof(uint64_t)) & (ncap - 1);
        while (nk[j])
            j = (j + 1) & (ncap - 1);
        nk[j] = g->keys[i];
        ni[j] = g->idx[i];
    }
    free(g->keys);
    free(g->idx);
    g->keys = nk;
    g->idx = ni;
    atomic_fetch_add_explicit(&t->aux_bytes,
                              (ncap - g->cap) * (sizeof(uint64_t) + sizeof(uint32_t)),
                              memory_order_relaxed);
    g->cap = ncap;
    return 0;
}

/* Named categories known (the unnamed one, "", not counted). */
static uint32_t named_cates(const rc_table *t)
{
    uint32_t n = rc_dict_size(t->cates), unnamed;
    return n - (rc_dict_find(t->cates, "", 0, &unnamed) == 0);
}

/* Returns the ring of (city, cate), creating it when `create`; NULL if absent,
 * out of memory (cold start then starts the item at random) or the category
 * unnamed (no such ring is kept: its mean would be of unrelated items). */
static struct ring *group_ring(rc_table *t, uint32_t city, uint32_t cate, int create)
{
    struct group_map *g = &t->gmap;
    size_t named = 0;
    rc_dict_str(t->cates, cate, &named);
    if (!named)
        return NULL;
    if (!create && named_cates(t) < 2)
        return NULL; /* one category for every item separates nothing */
    if (create && (g->n + 1) * 2 > g->cap && gmap_grow(t) != 0)
        return NULL;
    if (!g->cap)
        return NULL;
    uint64_t key = (((uint64_t)city << 32) | cate) + 1;
    uint32_t j = (uint32_t)rc_hash(&key, sizeof(key)) & (g->cap - 1);
    for (; g->keys[j]; j = (j + 1) & (g->cap - 1))
        if (g->keys[j] == key)
            return &t->group_rings[g->idx[j]];
    if (!create)
        return NULL;
    if (g->n >= t->group_cap) {
        uint32_t ncap = t->group_cap ? t->group_cap * 2 : 64;
        struct ring *nr = realloc(t->group_rings, ncap * sizeof(*nr));
        if (!nr)
            return NULL;
        t->group_rings = nr;
        atomic_fetch_add_explicit(&t->aux_bytes, (ncap - t->group_cap) * sizeof(*nr),
                                  memory_order_relaxed);
        t->group_cap = ncap;
    }
    memset(&t->group_rings[g->n], 0, sizeof(struct ring));
    g->keys[j] = key;
    g->idx[j] = g->n;
    return &t->group_rings[g->n++];
}

static void ring_push(struct ring *r, uint32_t row)
{
    if (!r)
        return;
    r->rows[r->next] = row;
    r->next = (r->next + 1) % RING;
    if (r->n < RING)
        r->n++;
}

/* dst = mean of the input vectors of rows[0..n); n > 0. The rows are cold
 * (ring members, a session's clicks): their loads are all started first.
 * axpy with 1 and scale are exact adds and multiplies, as a plain loop. */
static void mean_of(const rc_table *t, const uint32_t *rows, uint32_t n, float *dst)
{
    for (uint32_t i = 0; i < n; i++) {
        const float *v = rc_table_in(t, rows[i]);
        for (uint32_t k = 0; k < t->dim; k += 16)
            __builtin_prefetch(v + k);
    }
    memset(dst, 0, t->dim * sizeof(float));
    for (uint32_t i = 0; i < n; i++)
        rc_vec_axpy(1.0f, rc_table_in(t, rows[i]), dst, t->dim);
    rc_vec_scale(1.0f / (float)n, dst, t->dim);
}

/* dst = a small random vector: the start of a row nothing is known of. */
static void random_start(rc_table *t, float *dst)
{
    float scale = 1.0f / (float)t->dim;
    for (uint32_t k = 0; k < t->dim; k++)
        dst[k] = (rc_rng_float(&t->rng) - 0.5f) * scale;
}

/* A new item's input vector: the mean of its session context (the clicks
 * before it), else, when it has a named category and the table knows at
 * least two, the mean of the last RING items of its (city, category), plus
 * RC_TABLE_COLD_NOISE; else word2vec's random start. A mean of unrelated
 * items (the city's, the group of an unnamed category, i.e. every item of a
 * log without categories, or of the one category a producer gives every
 * item) is no
 * prior: it lies near the centroid of the table, where its cosine is high for
 * every user, and such items crowded the top 50 (docs/BENCHMARKS.md, "A new
 * item's start without a session"). */
static void cold_start(rc_table *t, uint32_t city, uint32_t cate, const uint32_t *ctx,
                       uint32_t nctx, float *dst)
{
    float scale = 1.0f / (float)t->dim;
    struct ring *g = nctx ? NULL : group_ring(t, city, cate, 0); /* named categories only */
    if (nctx) {
        mean_of(t, ctx, nctx, dst);
    } else if (g && g->n) {
        mean_of(t, g->rows, g->n, dst);
    } else {
        random_start(t, dst);
        return;
    }
    for (uint32_t k = 0; k < t->dim; k++)
        dst[k] += (rc_rng_float(&t->rng) - 0.5f) * 2.0f * RC_TABLE_COLD_NOISE * scale;
}

static int upsert_check(const rc_table *t, uint32_t city, uint32_t cate, const uint32_t *ctx,
                        uint32_t nctx, uint32_t n)
{
    if (city >= rc_dict_size(t->cities) || cate >= rc_dict_size(t->cates) || (nctx && !ctx))
        return RC_EINVAL;
    for (uint32_t i = 0; i < nctx; i++)
        if (ctx[i] >= n)
            return RC_EINVAL;
    return 0;
}

int rc_table_upsert(rc_table *t, const char *id, size_t len, uint32_t city, uint32_t cate,
                    const uint32_t *ctx, uint32_t nctx, uint32_t *row, int *created)
{
    if (!t || !row || (!id && len) || !t->ids)
        return RC_EINVAL;
    if (created)
        *created = 0;
    uint32_t n = atomic_load_explicit(&t->size, memory_order_relaxed), r;
    int rc = upsert_check(t, city, cate, ctx, nctx, n), made = 0;
    if (rc)
        return rc;
    /* The chunk must exist before the id is interned: a failure after interning
     * would leave an id without a row. */
    if (n < t->max_items && !t->chunks[n >> t->shift] && chunk_alloc(t, n >> t->shift))
        return RC_ENOMEM;
    if ((rc = rc_dict_intern(t->ids, id, len, &r, &made)))
        return rc;
    *row = r;
    if (!made)
        return 0;
    struct chunk *c = chunk_of(t, r);
    uint32_t slot = r & t->mask;
    cold_start(t, city, cate, ctx, nctx, c->in + (size_t)slot * t->dim);
    if (!t->input_only)
        memset(c->out + (size_t)slot * t->dim, 0, t->dim * sizeof(float));
    c->city[slot] = city;
    c->cate[slot] = cate;
    c->count[slot] = 0;
    ring_push(group_ring(t, city, cate, 1), r);
    atomic_store_explicit(&t->size, r + 1, memory_order_release);
    if (created)
        *created = 1;
    return 0;
}

int rc_table_reset_row(rc_table *t, uint32_t row)
{
    if (!t || row >= atomic_load_explicit(&t->size, memory_order_relaxed))
        return RC_EINVAL;
    struct chunk *c = chunk_of(t, row);
    uint32_t slot = row & t->mask;
    float v[RC_TABLE_MAX_DIM];
    random_start(t, v);
    rc_table_in_write(t, row, v);
    if (!t->input_only)
        memset(c->out + (size_t)slot * t->dim, 0, t->dim * sizeof(float));
    return 0;
}

int rc_table_append(rc_table *t, const char *id, size_t len, uint32_t city, uint32_t cate,
                    uint32_t count, uint32_t *row)
{
    if (!t || !row || (t->ids && (!id || !len)))
        return RC_EINVAL;
    uint32_t n = atomic_load_explicit(&t->size, memory_order_relaxed), r = n;
    int rc = upsert_check(t, city, cate, NULL, 0, n), made = 1;
    if (rc)
        return rc;
    if (n >= t->max_items)
        return RC_ENOMEM; /* the bound, as rc_dict_intern reports it */
    if (!t->chunks[n >> t->shift] && chunk_alloc(t, n >> t->shift))
        return RC_ENOMEM;
    if (t->ids && (rc = rc_dict_intern(t->ids, id, len, &r, &made)))
        return rc;
    if (!made)
        return RC_EINVAL;
    struct chunk *c = chunk_of(t, r);
    uint32_t slot = r & t->mask;
    c->city[slot] = city;
    c->cate[slot] = cate;
    c->count[slot] = count;
    atomic_fetch_add_explicit(&t->total, count, memory_order_relaxed);
    ring_push(group_ring(t, city, cate, 1), r);
    atomic_store_explicit(&t->size, r + 1, memory_order_release);
    *row = r;
    return 0;
}

size_t rc_table_bytes(const rc_table *t)
{
    if (!t)
        return 0;
    size_t chunks = atomic_load_explicit(&((rc_table *)t)->chunks_used, memory_order_relaxed);
    return sizeof(*t) + (size_t)t->nchunks * sizeof(*t->chunks) +
           chunks * (t->chunk_bytes + sizeof(struct chunk)) + rc_dict_bytes(t->ids) +
           rc_dict_bytes(t->cities) + rc_dict_bytes(t->cates) +
           atomic_load_explicit(&((rc_table *)t)->aux_bytes, memory_order_relaxed);
}
