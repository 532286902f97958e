/* sampler — per-city and global alias tables (Vose) over count^power weights.
 *
 * A distribution ("dist") has members[0..n): the first built_n are covered by
 * its alias table, the rest arrived since the last build ("recent"). A draw
 * picks the recent part with probability recent_w / (built_w + recent_w) and
 * then a recent member uniformly (new items mostly have similar small counts),
 * else the alias table: O(1), no allocation. Count changes adjust cur_w; a dist
 * whose items or weight moved by more than rebuild_ratio since its build is
 * queued, and rc_sampler_maintain rebuilds the queue. A city below
 * min_city_items is never built, so its draws (hard negatives only) are
 * uniform over its members; its ordinary negatives come from the global dist.
 *
 * Layout, for cache misses: a draw is one random read of a 16-byte alias slot
 * holding both candidate rows and their category tags, so the hard-negative
 * test needs no table access; the per-row state the sampler needs (weight,
 * position in its city, city, category tag) is one 16-byte record. */
#include "recalld/sampler.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define POW_TAB   4096u
#define MAX_TRIES 8
#define TAG_WIDE  0xffffu /* category tag of categories >= TAG_WIDE: ask the table */

/* Alias slot i: keep row `row` with probability prob, else take `alias_row`. */
struct slot {
    float prob;
    uint32_t row, alias_row;
    uint16_t tag, alias_tag;
};

/* Per row: what draws and count updates need, in one line. */
struct rowinfo {
    float w;      /* weight last seen */
    uint32_t pos; /* index in its city's members */
    uint32_t city;
    uint32_t tag; /* category tag */
};

struct dist {
    uint32_t *members; /* NULL for the global dist: member i is row i */
    uint32_t n, cap;
    uint32_t built_n;
    struct slot *slots;
    uint32_t slots_cap;
    double built_w, cur_w, recent_w;
    int queued;
};

struct rc_sampler {
    const rc_table *t;
    float power, ratio;
    uint32_t min_items;
    int global_only;
    uint32_t known;     /* rows 0..known-1 are in the dists */
    struct rowinfo *ri; /* per row */
    uint32_t rows_cap;
    struct dist global;
    struct dist *cities;
    uint32_t ncities;
    uint32_t *queue; /* city ids to rebuild */
    uint32_t nqueue, queue_cap;
    float pow_tab[POW_TAB];
    /* rc_sampler_stats' counters: written by the trainer only, read by
     * rc_sampler_stats_get from any thread (the stats op), hence atomics;
     * relaxed, and a load plus a store (one writer) rather than a locked add. */
    struct {
        _Atomic uint64_t rebuilds, draws, hard_draws, fallback_draws, bytes;
        _Atomic uint32_t cities;
    } st;
};

static void bump64(_Atomic uint64_t *c, uint64_t d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

static float weight_of(const rc_sampler *s, uint32_t count)
{
    return count < POW_TAB ? s->pow_tab[count] : powf((float)count, s->power);
}

static inline uint32_t member(const struct dist *d, uint32_t i)
{
    return d->members ? d->members[i] : i;
}

static inline uint32_t tag_of(uint32_t cate) { return cate < TAG_WIDE ? cate : TAG_WIDE; }

/* Trainer: room for need elements in *p, doubling; counted in st.bytes. */
static int grow(rc_sampler *s, void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t ncap = *cap ? *cap : 64;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(*p, (size_t)ncap * elem);
    if (!np)
        return RC_ENOMEM;
    bump64(&s->st.bytes, (uint64_t)(ncap - *cap) * elem);
    *p = np;
    *cap = ncap;
    return 0;
}

static int is_stale(const rc_sampler *s, const struct dist *d)
{
    return d->n - d->built_n > s->ratio * (double)d->built_n ||
           fabs(d->cur_w - d->built_w) > s->ratio * d->built_w;
}

static void check_city(rc_sampler *s, uint32_t city)
{
    struct dist *d = &s->cities[city];
    if (s->global_only || d->queued || d->n < s->min_items || !is_stale(s, d))
        return;
    uint32_t cap = s->queue_cap;
    if (grow(s, (void **)&s->queue, &cap, s->nqueue + 1, sizeof(uint32_t)))
        return; /* stays stale; retried on its next change */
    s->queue_cap = cap;
    s->queue[s->nqueue++] = city;
    d->queued = 1;
}

static void check_global(rc_sampler *s)
{
    if (!s->global.queued && is_stale(s, &s->global))
        s->global.queued = 1;
}

static int ensure_city(rc_sampler *s, uint32_t city)
{
    if (city < s->ncities)
        return 0;
    uint32_t ncap = s->ncities ? s->ncities : 16;
    while (ncap <= city)
        ncap *= 2;
    struct dist *nd = realloc(s->cities, ncap * sizeof(*nd));
    if (!nd)
        return RC_ENOMEM;
    memset(nd + s->ncities, 0, (ncap - s->ncities) * sizeof(*nd));
    bump64(&s->st.bytes, (uint64_t)(ncap - s->ncities) * sizeof(*nd));
    s->cities = nd;
    s->ncities = ncap;
    return 0;
}

/* Adds row `known` to its city and the global dist. */
static int ingest_one(rc_sampler *s)
{
    uint32_t row = s->known, city = rc_table_city(s->t, row);
    if (grow(s, (void **)&s->ri, &s->rows_cap, row + 1, sizeof(struct rowinfo)))
        return RC_ENOMEM;
    if (ensure_city(s, city))
        return RC_ENOMEM;
    struct dist *d = &s->cities[city];
    if (grow(s, (void **)&d->members, &d->cap, d->n + 1, sizeof(uint32_t)))
        return RC_ENOMEM;
    float w = weight_of(s, rc_table_count(s->t, row));
    s->ri[row] = (struct rowinfo){w, d->n, city, tag_of(rc_table_cate(s->t, row))};
    d->members[d->n++] = row;
    d->cur_w += w;
    d->recent_w += w;
    s->global.n++;
    s->global.cur_w += w;
    s->global.recent_w += w;
    s->known++;
    check_city(s, city);
    check_global(s);
    return 0;
}

static void catch_up(rc_sampler *s, uint32_t upto)
{
    while (s->known < upto && ingest_one(s) == 0)
        ;
}

/* Vose's alias method over members[0..n) with the rows' current weights,
 * built in the dist's own slots: prob in .prob, the alias's index in
 * .alias_row, and the two work lists in .row (small ones from the front, large
 * ones from the back: an index is in at most one, so they never meet) until
 * the last pass writes the rows. No scratch: four arrays of the largest
 * dist's size (16 bytes an item, 16.8 MB at 1M items) were kept for it. */
static int rebuild(rc_sampler *s, struct dist *d)
{
    uint32_t n = d->n, ns = 0, nl = 0;
    if (grow(s, (void **)&d->slots, &d->slots_cap, n, sizeof(struct slot)))
        return RC_ENOMEM;
    struct slot *sl = d->slots;
    /* One gather of the members' records (random rows: prefetched ahead);
     * every later pass is sequential. The tags wait in the slots. */
    for (uint32_t i = 0; i < n; i++) {
        if (d->members && i + 16 < n)
            __builtin_prefetch(&s->ri[d->members[i + 16]]);
        const struct rowinfo *ri = &s->ri[member(d, i)];
        sl[i].prob = ri->w;
        sl[i].tag = (uint16_t)ri->tag;
    }
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += sl[i].prob;
#define SMALL(k) sl[k].row
#define LARGE(k) sl[n - 1 - (k)].row
    for (uint32_t i = 0; i < n; i++) {
        sl[i].prob = (float)(sl[i].prob * (double)n / sum);
        sl[i].alias_row = i;
        if (sl[i].prob < 1.0f)
            SMALL(ns++) = i;
        else
            LARGE(nl++) = i;
    }
    while (ns && nl) {
        uint32_t l = SMALL(--ns), g = LARGE(nl - 1);
        sl[l].alias_row = g;
        sl[g].prob = (sl[g].prob + sl[l].prob) - 1.0f;
        if (sl[g].prob < 1.0f) {
            nl--;
            SMALL(ns++) = g;
        }
    }
    /* Leftovers are 1 up to rounding error. */
    while (nl)
        sl[LARGE(--nl)].prob = 1.0f;
    while (ns)
        sl[SMALL(--ns)].prob = 1.0f;
#undef SMALL
#undef LARGE
    for (uint32_t i = 0; i < n; i++) {
        uint32_t a = sl[i].alias_row;
        sl[i].row = member(d, i);
        sl[i].alias_row = member(d, a);
        sl[i].alias_tag = sl[a].tag;
    }
    if (d != &s->global && d->built_n == 0)
        atomic_store_explicit(&s->st.cities,
                              atomic_load_explicit(&s->st.cities, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    d->built_n = n;
    d->built_w = d->cur_w = sum;
    d->recent_w = 0;
    bump64(&s->st.rebuilds, 1);
    return 0;
}

int rc_sampler_create(const rc_sampler_opts *opts, const rc_table *table, rc_sampler **out,
                      char *errbuf, size_t errlen)
{
    if (!table || !out)
        return rc_err(errbuf, errlen, RC_EINVAL, "sampler: table and out are required");
    *out = NULL;
    rc_sampler_opts o = opts ? *opts : (rc_sampler_opts){0};
    if (o.power < 0 || o.power > 4 || o.rebuild_ratio < 0 || o.rebuild_ratio > 10)
        return rc_err(errbuf, errlen, RC_EINVAL,
                      "sampler: power in [0,4], rebuild_ratio in [0,10]");
    rc_sampler *s = calloc(1, sizeof(*s));
    if (!s)
        return rc_err(errbuf, errlen, RC_ENOMEM, "sampler: out of memory");
    s->t = table;
    s->power = o.power > 0 ? o.power : 0.75f;
    s->min_items = o.min_city_items ? o.min_city_items : 50;
    s->ratio = o.rebuild_ratio > 0 ? o.rebuild_ratio : 0.05f;
    s->global_only = o.global_only;
    s->pow_tab[0] = 1.0f; /* count 0: a new item still gets drawn */
    for (uint32_t c = 1; c < POW_TAB; c++)
        s->pow_tab[c] = powf((float)c, s->power);
    catch_up(s, rc_table_size(table));
    rc_sampler_maintain(s);
    *out = s;
    return 0;
}

void rc_sampler_destroy(rc_sampler *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->ncities; i++) {
        free(s->cities[i].members);
        free(s->cities[i].slots);
    }
    free(s->cities);
    free(s->global.slots);
    free(s->ri);
    free(s->queue);
    free(s);
}

void rc_sampler_note(rc_sampler *s, uint32_t row)
{
    if (!s)
        return;
    if (row >= s->known) {
        catch_up(s, RC_MIN(row + 1, rc_table_size(s->t)));
        return;
    }
    struct rowinfo *ri = &s->ri[row];
    float nw = weight_of(s, rc_table_count(s->t, row));
    double delta = (double)nw - ri->w;
    if (delta == 0)
        return;
    ri->w = nw;
    uint32_t city = ri->city;
    struct dist *d = &s->cities[city];
    d->cur_w += delta;
    if (ri->pos >= d->built_n)
        d->recent_w += delta;
    s->global.cur_w += delta;
    if (row >= s->global.built_n)
        s->global.recent_w += delta;
    check_city(s, city);
    check_global(s);
}

uint32_t rc_sampler_maintain(rc_sampler *s)
{
    if (!s)
        return 0;
    uint32_t done = 0;
    catch_up(s, rc_table_size(s->t));
    while (s->nqueue) {
        struct dist *d = &s->cities[s->queue[--s->nqueue]];
        d->queued = 0;
        done += rebuild(s, d) == 0;
    }
    if (s->global.queued) {
        s->global.queued = 0;
        done += rebuild(s, &s->global) == 0;
    }
    return done;
}

/* One draw from d (d->n > 0): a row, and its category tag in *tag. */
static inline uint32_t dist_draw(const rc_sampler *s, const struct dist *d, rc_rng *rng,
                                 uint32_t *tag)
{
    uint64_t r = rc_rng_next(rng);
    uint32_t recent = d->n - d->built_n;
    if (recent &&
        (d->built_n == 0 || rc_rng_float(rng) * (d->built_w + d->recent_w) < d->recent_w)) {
        uint32_t x = member(d, d->built_n + (uint32_t)(((r >> 32) * recent) >> 32));
        *tag = s->ri[x].tag;
        return x;
    }
    const struct slot *sl = &d->slots[((r >> 32) * d->built_n) >> 32];
    float u = (float)(r & 0xffffff) * (1.0f / 16777216.0f);
    if (u < sl->prob) {
        *tag = sl->tag;
        return sl->row;
    }
    *tag = sl->alias_tag;
    return sl->alias_row;
}

/* A draw from d that is not pos, unless pos is d's only member. */
static uint32_t draw_excl(const rc_sampler *s, const struct dist *d, rc_rng *rng, uint32_t pos)
{
    uint32_t tag;
    for (int i = 0; i < MAX_TRIES; i++) {
        uint32_t x = dist_draw(s, d, rng, &tag);
        if (x != pos)
            return x;
    }
    if (d->n <= 1)
        return member(d, 0);
    /* pos holds nearly all the weight: any other member, uniformly. */
    uint32_t x = member(d, rc_rng_below(rng, d->n - 1));
    return x == pos ? member(d, d->n - 1) : x;
}

static uint32_t draw_hard(const rc_sampler *s, const struct dist *src, rc_rng *rng, uint32_t pos,
                          uint32_t cate)
{
    uint32_t ptag = tag_of(cate), tag;
    for (int i = 0; i < MAX_TRIES; i++) {
        uint32_t x = dist_draw(s, src, rng, &tag);
        if (x != pos && (tag != ptag || (tag == TAG_WIDE && rc_table_cate(s->t, x) != cate)))
            return x;
    }
    return draw_excl(s, src, rng, pos);
}

/* What dist_draw(d) will read, fetched ahead; rng advances as dist_draw's. */
static inline void dist_peek(const rc_sampler *s, const struct dist *d, rc_rng *rng)
{
    uint64_t r = rc_rng_next(rng);
    uint32_t recent = d->n - d->built_n;
    if (recent &&
        (d->built_n == 0 || rc_rng_float(rng) * (d->built_w + d->recent_w) < d->recent_w)) {
        uint32_t i = d->built_n + (uint32_t)(((r >> 32) * recent) >> 32);
        if (d->members)
            __builtin_prefetch(&d->members[i]);
        else
            __builtin_prefetch(&s->ri[i]);
        return;
    }
    __builtin_prefetch(&d->slots[((r >> 32) * d->built_n) >> 32]);
}

void rc_sampler_prefetch(const rc_sampler *s, rc_rng *rng, const uint32_t *pos, uint32_t npos,
                         float hard_share, uint32_t k)
{
    if (!s || !rng || !pos || !s->global.n)
        return;
    /* The positives' records first: they decide the dists, and their misses
     * overlap when they are all in flight at once. */
    for (uint32_t p = 0; p < npos; p++)
        if (pos[p] < s->known)
            __builtin_prefetch(&s->ri[pos[p]]);
    float hs = hard_share > 0 ? (hard_share < 1 ? hard_share : 1) : 0;
    uint32_t nhard = (uint32_t)lrintf((float)k * hs);
    for (uint32_t p = 0; p < npos; p++) {
        if (pos[p] >= s->known)
            continue; /* draw_core returns at once: no rng used */
        const struct dist *cd = &s->cities[s->ri[pos[p]].city], *main = &s->global,
                          *hsrc = &s->global;
        if (!s->global_only) {
            if (cd->n >= s->min_items)
                main = cd;
            hsrc = cd->n > 1 ? cd : main;
        }
        for (uint32_t j = 0; j < k; j++)
            dist_peek(s, j < nhard ? hsrc : main, rng);
    }
}

/* The draw itself, read-only; *nhard and *fallback get what the stats count. */
static uint32_t draw_core(const rc_sampler *s, rc_rng *rng, uint32_t pos, float hard_share,
                          uint32_t k, uint32_t *out, uint32_t *nhard_out, uint32_t *fallback)
{
    if (pos >= s->known || !s->global.n)
        return 0;
    float hs = hard_share > 0 ? (hard_share < 1 ? hard_share : 1) : 0;
    uint32_t nhard = (uint32_t)lrintf((float)k * hs);
    const struct rowinfo *pi = &s->ri[pos];
    uint32_t city = pi->city, cate = pi->tag < TAG_WIDE ? pi->tag : rc_table_cate(s->t, pos);
    const struct dist *cd = &s->cities[city], *main = &s->global, *hsrc = &s->global;
    *fallback = 0;
    if (!s->global_only) {
        if (cd->n >= s->min_items)
            main = cd;
        else
            *fallback = k - nhard;
        /* A city of one item (pos) has no hard negatives: use the ordinary source. */
        hsrc = cd->n > 1 ? cd : main;
    }
    for (uint32_t j = 0; j < nhard; j++)
        out[j] = draw_hard(s, hsrc, rng, pos, cate);
    for (uint32_t j = nhard; j < k; j++)
        out[j] = draw_excl(s, main, rng, pos);
    *nhard_out = nhard;
    return k;
}

uint32_t rc_sampler_draw(rc_sampler *s, rc_rng *rng, uint32_t pos, float hard_share, uint32_t k,
                         uint32_t *out)
{
    if (!s || !rng || (k && !out))
        return 0;
    if (pos >= s->known)
        catch_up(s, rc_table_size(s->t));
    uint32_t nhard = 0, fallback = 0;
    uint32_t n = draw_core(s, rng, pos, hard_share, k, out, &nhard, &fallback);
    if (n) {
        bump64(&s->st.draws, k);
        bump64(&s->st.hard_draws, nhard);
        bump64(&s->st.fallback_draws, fallback);
    }
    return n;
}

uint32_t rc_sampler_draw_shared(const rc_sampler *s, rc_rng *rng, uint32_t pos, float hard_share,
                                uint32_t k, uint32_t *out)
{
    uint32_t nhard, fallback;
    if (!s || !rng || (k && !out))
        return 0;
    return draw_core(s, rng, pos, hard_share, k, out, &nhard, &fallback);
}

uint32_t rc_sampler_draw_tally(const rc_sampler *s, rc_rng *rng, uint32_t pos, float hard_share,
                               uint32_t k, uint32_t *out, rc_sampler_tally *tally)
{
    uint32_t nhard = 0, fallback = 0;
    if (!s || !rng || (k && !out))
        return 0;
    uint32_t n = draw_core(s, rng, pos, hard_share, k, out, &nhard, &fallback);
    if (n && tally) {
        tally->draws += k;
        tally->hard_draws += nhard;
        tally->fallback_draws += fallback;
    }
    return n;
}

void rc_sampler_add_tally(rc_sampler *s, const rc_sampler_tally *tally)
{
    if (!s || !tally)
        return;
    bump64(&s->st.draws, tally->draws);
    bump64(&s->st.hard_draws, tally->hard_draws);
    bump64(&s->st.fallback_draws, tally->fallback_draws);
}

void rc_sampler_stats_get(const rc_sampler *s, rc_sampler_stats *st)
{
    if (!s || !st)
        return;
    memset(st, 0, sizeof *st);
    st->rebuilds = atomic_load_explicit(&s->st.rebuilds, memory_order_relaxed);
    st->draws = atomic_load_explicit(&s->st.draws, memory_order_relaxed);
    st->hard_draws = atomic_load_explicit(&s->st.hard_draws, memory_order_relaxed);
    st->fallback_draws = atomic_load_explicit(&s->st.fallback_draws, memory_order_relaxed);
    st->cities = atomic_load_explicit(&s->st.cities, memory_order_relaxed);
    st->bytes = sizeof *s + atomic_load_explicit(&s->st.bytes, memory_order_relaxed);
}
