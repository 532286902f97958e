/* cooc — live session co-occurrence with bounded memory (see cooc.h). */
#include "recalld/cooc.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/buf.h"
#include "recalld/common.h"

#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#include <immintrin.h>
#define COOC_AVX2 1
#endif

static void find_init(void); /* picks the list search kernel once */

#define SEG_BITS     12u
#define SEG_SIZE     (1u << SEG_BITS)
#define FIRST_CAP    4u
#define PRUNE_BELOW  1e-3f
#define READ_RETRIES 64

/* A neighbour entry: id in the high 32 bits, the count's float bits low. */
typedef _Atomic uint64_t entry;

struct list {
    uint32_t cap;
    struct list *next_retired; /* writer only */
    entry e[];
};

struct slot {
    _Atomic uint32_t seq;        /* odd while the writer changes the slot */
    _Atomic uint32_t n;          /* entries used */
    _Atomic uint32_t count_bits; /* n(a) as float bits */
    _Atomic int64_t t_ms;        /* event time the counts are at */
    _Atomic(struct list *) l;
};

struct rc_cooc {
    rc_cooc_opts o;
    uint32_t nsegs;
    _Atomic(struct slot *) *segs;
    /* two-epoch reclamation */
    _Atomic uint64_t epoch;
    _Atomic uint32_t active[2];
    struct list *retired_cur, *retired_prev; /* writer only */
    /* counters (writer bumps, anyone reads) */
    _Atomic uint64_t items, entries, bytes, clicks, pairs, evictions, dropped, retired;
};

static inline uint64_t pack(uint32_t id, float c)
{
    uint32_t b;
    memcpy(&b, &c, sizeof b);
    return (uint64_t)id << 32 | b;
}
static inline uint32_t e_id(uint64_t v) { return (uint32_t)(v >> 32); }
static inline float e_cnt(uint64_t v)
{
    uint32_t b = (uint32_t)v;
    float c;
    memcpy(&c, &b, sizeof c);
    return c;
}
static inline float f_of(uint32_t b)
{
    float c;
    memcpy(&c, &b, sizeof c);
    return c;
}
static inline uint32_t bits_of(float c)
{
    uint32_t b;
    memcpy(&b, &c, sizeof b);
    return b;
}

static size_t list_bytes(uint32_t cap) { return sizeof(struct list) + (size_t)cap * sizeof(entry); }

int rc_cooc_create(const rc_cooc_opts *opts, rc_cooc **out, char *eb, size_t el)
{
    rc_cooc_opts o = opts ? *opts : (rc_cooc_opts){0};
    rc_cooc *c;
    *out = NULL;
    if (!o.max_items)
        o.max_items = 1000000;
    if (!o.neighbors)
        o.neighbors = 100;
    if (!o.max_bytes)
        o.max_bytes = 128ull << 20;
    if (!o.window)
        o.window = 5;
    if (o.pop_damping <= 0)
        o.pop_damping = 0.5f;
    if (o.neighbors > RC_COOC_MAX_NEIGHBORS)
        return rc_err(eb, el, RC_EINVAL, "cooc: neighbors %u over %u", o.neighbors,
                      RC_COOC_MAX_NEIGHBORS);
    if (o.window > RC_COOC_MAX_WINDOW)
        return rc_err(eb, el, RC_EINVAL, "cooc: window %u over %u", o.window, RC_COOC_MAX_WINDOW);
    if (o.half_life_ms < 0 || !(o.pop_damping <= 4))
        return rc_err(eb, el, RC_EINVAL, "cooc: half_life_ms < 0 or pop_damping out of (0,4]");
    find_init();
    if (!(c = calloc(1, sizeof *c)))
        return rc_err(eb, el, RC_ENOMEM, "cooc: out of memory");
    c->o = o;
    c->nsegs = (uint32_t)(((uint64_t)o.max_items + SEG_SIZE - 1) >> SEG_BITS);
    if (!(c->segs = calloc(c->nsegs, sizeof *c->segs))) {
        free(c);
        return rc_err(eb, el, RC_ENOMEM, "cooc: out of memory");
    }
    atomic_store(&c->bytes, (uint64_t)c->nsegs * sizeof *c->segs);
    *out = c;
    return 0;
}

static void free_chain(struct list *l)
{
    while (l) {
        struct list *n = l->next_retired;
        free(l);
        l = n;
    }
}

void rc_cooc_destroy(rc_cooc *c)
{
    if (!c)
        return;
    for (uint32_t s = 0; s < c->nsegs; s++) {
        struct slot *seg = atomic_load(&c->segs[s]);
        for (uint32_t i = 0; seg && i < SEG_SIZE; i++)
            free(atomic_load(&seg[i].l));
        free(seg);
    }
    free_chain(c->retired_cur);
    free_chain(c->retired_prev);
    free(c->segs);
    free(c);
}

rc_cooc_opts rc_cooc_opts_get(const rc_cooc *c) { return c->o; }

/* ---- readers' epochs ---- */

static uint64_t reader_enter(rc_cooc *c)
{
    for (;;) {
        uint64_t e = atomic_load(&c->epoch);
        atomic_fetch_add(&c->active[e & 1], 1);
        if (atomic_load(&c->epoch) == e)
            return e;
        atomic_fetch_sub(&c->active[e & 1], 1);
    }
}

static void reader_exit(rc_cooc *c, uint64_t e) { atomic_fetch_sub(&c->active[e & 1], 1); }

/* Writer: lists retired during epoch E-1 are freed once no reader of E-1 is
 * left (readers of E entered after they were unlinked); then E+1 begins. */
static void reclaim(rc_cooc *c)
{
    if (!c->retired_cur && !c->retired_prev)
        return;
    uint64_t e = atomic_load(&c->epoch);
    if (atomic_load(&c->active[(e + 1) & 1]) != 0)
        return;
    for (struct list *l = c->retired_prev; l; l = l->next_retired) {
        atomic_fetch_sub(&c->bytes, list_bytes(l->cap));
        atomic_fetch_sub(&c->retired, 1);
    }
    free_chain(c->retired_prev);
    c->retired_prev = c->retired_cur;
    c->retired_cur = NULL;
    atomic_store(&c->epoch, e + 1);
}

/* ---- slots ---- */

static struct slot *slot_get(rc_cooc *c, uint32_t id)
{
    struct slot *seg = atomic_load_explicit(&c->segs[id >> SEG_BITS], memory_order_acquire);
    return seg ? &seg[id & (SEG_SIZE - 1)] : NULL;
}

/* Writer: the slot of id, its segment allocated when missing and in bounds. */
static struct slot *slot_make(rc_cooc *c, uint32_t id)
{
    struct slot *s = slot_get(c, id);
    if (s)
        return s;
    size_t sz = (size_t)SEG_SIZE * sizeof(struct slot);
    if (atomic_load(&c->bytes) + sz > c->o.max_bytes)
        return NULL;
    struct slot *seg = calloc(SEG_SIZE, sizeof *seg);
    if (!seg)
        return NULL;
    atomic_fetch_add(&c->bytes, sz);
    atomic_store_explicit(&c->segs[id >> SEG_BITS], seg, memory_order_release);
    return &seg[id & (SEG_SIZE - 1)];
}

static void w_begin(struct slot *s)
{
    uint32_t q = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, q + 1, memory_order_relaxed);
}

static void w_end(struct slot *s)
{
    uint32_t q = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, q + 1, memory_order_release);
}

#define RLX memory_order_relaxed
/* The sequence counters without fences (ThreadSanitizer does not model them):
 * the writer's stores inside a section are releases and the readers' loads
 * acquires, so a reader that sees any store of a section also sees the odd
 * counter before it and retries (plain moves on x86-64). */
#define REL memory_order_release
#define ACQ memory_order_acquire

/* Writer, inside w_begin/w_end: brings the slot's counts to event time t
 * (never backwards); returns the increment of an event at t (1, or less
 * when t is older than the slot). */
static float decay_to(rc_cooc *c, struct slot *s, int64_t t)
{
    int64_t ts = atomic_load_explicit(&s->t_ms, RLX);
    if (c->o.half_life_ms <= 0)
        return 1.0f;
    if (ts == 0 && atomic_load_explicit(&s->count_bits, RLX) == 0) {
        atomic_store_explicit(&s->t_ms, t, REL);
        return 1.0f;
    }
    if (t <= ts)
        return (float)exp2(-(double)(ts - t) / (double)c->o.half_life_ms);
    float f = (float)exp2(-(double)(t - ts) / (double)c->o.half_life_ms);
    atomic_store_explicit(&s->t_ms, t, REL);
    atomic_store_explicit(&s->count_bits,
                          bits_of(f_of(atomic_load_explicit(&s->count_bits, RLX)) * f), REL);
    struct list *l = atomic_load_explicit(&s->l, RLX);
    uint32_t n = atomic_load_explicit(&s->n, RLX), j = 0;
    for (uint32_t i = 0; l && i < n; i++) {
        uint64_t v = atomic_load_explicit(&l->e[i], RLX);
        float x = e_cnt(v) * f;
        if (x >= PRUNE_BELOW)
            atomic_store_explicit(&l->e[j++], pack(e_id(v), x), REL);
    }
    if (l && j < n) {
        atomic_store_explicit(&s->n, j, REL);
        atomic_fetch_sub(&c->entries, n - j);
    }
    return 1.0f;
}

/* Writer, inside w_begin/w_end: a list with room for one more entry, or
 * NULL (full at the bound). */
static struct list *room(rc_cooc *c, struct slot *s, uint32_t n)
{
    struct list *l = atomic_load_explicit(&s->l, RLX);
    if (l && n < l->cap)
        return l;
    uint32_t cap = l ? RC_MIN(l->cap * 2, c->o.neighbors) : RC_MIN(FIRST_CAP, c->o.neighbors);
    if (l && cap <= l->cap)
        return NULL;
    size_t add = list_bytes(cap);
    if (atomic_load(&c->bytes) + add > c->o.max_bytes)
        return NULL;
    struct list *nl = malloc(add);
    if (!nl)
        return NULL;
    nl->cap = cap;
    nl->next_retired = NULL;
    for (uint32_t i = 0; i < n; i++)
        atomic_init(&nl->e[i], atomic_load_explicit(&l->e[i], RLX));
    atomic_fetch_add(&c->bytes, add);
    atomic_store_explicit(&s->l, nl, memory_order_release);
    if (l) {
        l->next_retired = c->retired_cur;
        c->retired_cur = l;
        atomic_fetch_add(&c->retired, 1);
    } else {
        atomic_fetch_add(&c->items, 1);
    }
    return nl;
}

/* Writer only: the index of the entry holding id want among e[0..n), or n.
 * The writer reads its own entries (readers never store), so plain loads are
 * race-free here; ThreadSanitizer builds keep the atomic loop. The search was
 * most of the live item-kNN's cost (half of slot_add's samples at 100k items,
 * lists of hundreds of entries searched once a pair). */
static uint32_t find_scalar(const entry *e, uint32_t n, uint32_t want)
{
    uint32_t i = 0;
    while (i < n && e_id(atomic_load_explicit(&e[i], memory_order_relaxed)) != want)
        i++;
    return i;
}

#ifdef COOC_AVX2
/* Eight entries an iteration: the ids are the odd 32-bit lanes (high halves). */
__attribute__((target("avx2"))) static uint32_t find_avx2(const entry *e, uint32_t n, uint32_t want)
{
    const uint64_t *u = (const uint64_t *)(const void *)e;
    const __m256i w = _mm256_set1_epi32((int)want);
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(u + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(u + i + 4));
        unsigned ma = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(a, w)));
        unsigned mb = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(b, w)));
        unsigned m = (ma & 0xAAu) | (mb & 0xAAu) << 8;
        if (m)
            return i + (uint32_t)__builtin_ctz(m) / 2;
    }
    for (; i < n && (uint32_t)(u[i] >> 32) != want; i++)
        ;
    return i;
}

static uint32_t (*find_fn)(const entry *, uint32_t, uint32_t);
static void find_choose(void)
{
    __builtin_cpu_init();
    find_fn = __builtin_cpu_supports("avx2") ? find_avx2 : find_scalar;
}
static pthread_once_t find_once = PTHREAD_ONCE_INIT;
#endif

static void find_init(void)
{
#ifdef COOC_AVX2
    pthread_once(&find_once, find_choose);
#endif
}

/* Per pair on the training path: the kernel was chosen by rc_cooc_create. */
static uint32_t find_entry(const entry *e, uint32_t n, uint32_t want)
{
#ifdef COOC_AVX2
    return find_fn(e, n, want);
#else
    return find_scalar(e, n, want);
#endif
}

/* Writer: adds inc-weighted pairs (a, nb[i]) to a's list at time t; counts a
 * click on a when click. */
static void slot_add(rc_cooc *c, uint32_t a, const uint32_t *nb, uint32_t nn, int64_t t, int click)
{
    struct slot *s = slot_make(c, a);
    if (!s) {
        atomic_fetch_add(&c->dropped, 1);
        return;
    }
    w_begin(s);
    float inc = decay_to(c, s, t);
    if (click)
        atomic_store_explicit(&s->count_bits,
                              bits_of(f_of(atomic_load_explicit(&s->count_bits, RLX)) + inc), REL);
    for (uint32_t k = 0; k < nn; k++) {
        struct list *l = atomic_load_explicit(&s->l, RLX);
        uint32_t n = atomic_load_explicit(&s->n, RLX), lo = 0, want = nb[k];
        uint32_t i = l ? find_entry(l->e, n, want) : 0;
        atomic_fetch_add(&c->pairs, 1);
        if (l && i < n) {
            uint64_t v = atomic_load_explicit(&l->e[i], RLX);
            atomic_store_explicit(&l->e[i], pack(nb[k], e_cnt(v) + inc), REL);
        } else if ((l = room(c, s, n))) {
            atomic_store_explicit(&l->e[n], pack(nb[k], inc), REL);
            atomic_store_explicit(&s->n, n + 1, REL);
            atomic_fetch_add(&c->entries, 1);
        } else if ((l = atomic_load_explicit(&s->l, RLX)) && n) {
            float min = e_cnt(atomic_load_explicit(&l->e[0], RLX));
            for (i = 1; i < n; i++) { /* the weakest entry */
                float x = e_cnt(atomic_load_explicit(&l->e[i], RLX));
                if (x < min) {
                    min = x;
                    lo = i;
                }
            }
            if (min <= inc) { /* replaces the weakest; never inflated (measured better) */
                atomic_store_explicit(&l->e[lo], pack(nb[k], inc), REL);
                atomic_fetch_add(&c->evictions, 1);
            } else {
                atomic_fetch_add(&c->dropped, 1);
            }
        } else {
            atomic_fetch_add(&c->dropped, 1);
        }
    }
    w_end(s);
}

int rc_cooc_click(rc_cooc *c, uint32_t item, const uint32_t *ctx, uint32_t nctx, int64_t ts_ms)
{
    uint32_t nb[RC_COOC_MAX_WINDOW], nn = 0;
    if (item >= c->o.max_items)
        return RC_EINVAL;
    reclaim(c);
    atomic_fetch_add(&c->clicks, 1);
    /* The last `window` previous clicks, distinct, the item itself left out. */
    uint32_t from = nctx > c->o.window ? nctx - c->o.window : 0;
    for (uint32_t i = nctx; i-- > from;) {
        uint32_t y = ctx[i], j;
        if (y == item || y >= c->o.max_items)
            continue;
        for (j = 0; j < nn && nb[j] != y; j++)
            ;
        if (j == nn)
            nb[nn++] = y;
    }
    /* Each neighbour's slot and list head is a miss at a large catalog:
     * fetch the slots while the item's own list is updated, then the lists
     * (hundreds of bytes each, read front to back) before their turn. */
    struct slot *ns[RC_COOC_MAX_WINDOW];
    for (uint32_t i = 0; i < nn; i++)
        if ((ns[i] = slot_get(c, nb[i])))
            __builtin_prefetch(ns[i], 1);
    slot_add(c, item, nb, nn, ts_ms, 1);
    for (uint32_t i = 0; i < nn; i++) {
        struct list *l = ns[i] ? atomic_load_explicit(&ns[i]->l, RLX) : NULL;
        if (l) {
            __builtin_prefetch(l, 1);
            __builtin_prefetch((const char *)l + 64, 1);
        }
    }
    for (uint32_t i = 0; i < nn; i++)
        slot_add(c, nb[i], &item, 1, ts_ms, 0);
    return 0;
}

/* ---- readers ---- */

/* Reads a's count and time (and its entries into buf, room for neighbors,
 * when buf != NULL) consistently; returns the entries read, or -1 when the
 * slot is empty or the writer kept changing it. */
static int slot_read(rc_cooc *c, uint32_t a, uint64_t *buf, float *count, int64_t *t)
{
    struct slot *s = a < c->o.max_items ? slot_get(c, a) : NULL;
    if (!s)
        return -1;
    for (int r = 0; r < READ_RETRIES; r++) {
        uint32_t q1 = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (q1 & 1)
            continue;
        uint32_t n = 0;
        *count = f_of(atomic_load_explicit(&s->count_bits, ACQ));
        *t = atomic_load_explicit(&s->t_ms, ACQ);
        if (buf) {
            struct list *l = atomic_load_explicit(&s->l, memory_order_acquire);
            n = l ? RC_MIN(atomic_load_explicit(&s->n, ACQ), l->cap) : 0;
            for (uint32_t i = 0; i < n; i++)
                buf[i] = atomic_load_explicit(&l->e[i], ACQ);
        }
        if (atomic_load_explicit(&s->seq, RLX) == q1)
            return *count > 0 ? (int)n : -1;
    }
    return -1;
}

/* A query's buffers, one set per querying thread, grown as needed and freed
 * when the thread ends: a recall allocates nothing once its thread has served
 * one as large (a heap allocation per request also fills ASan's quarantine).
 * The pointer lives in a _Thread_local (a root leak checkers scan); the key
 * only runs the destructor at thread exit. */
struct scratch {
    uint64_t *buf; /* one query item's entries */
    float *qc;
    int64_t *qt;
    uint32_t *id, *used; /* the accumulator's */
    float *v;
    size_t nbuf, nq, cap, nused;
};
static _Thread_local struct scratch *tls_scratch;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *p)
{
    struct scratch *s = p;
    if (!s)
        return;
    free(s->buf);
    free(s->qc);
    free(s->qt);
    free(s->id);
    free(s->used);
    free(s->v);
    free(s);
    tls_scratch = NULL;
}

static void scratch_key_init(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* *p with room for n elements of size sz (*have: its room now); 0 or -1. */
static int room_for(void **p, size_t *have, size_t n, size_t sz)
{
    if (*have >= n)
        return 0;
    void *q = realloc(*p, n * sz);
    if (!q)
        return -1;
    *p = q;
    *have = n;
    return 0;
}

static struct scratch *scratch_get(size_t nbuf, size_t nq, size_t cap, size_t nused)
{
    struct scratch *s = tls_scratch;
    if (!s) {
        pthread_once(&scratch_once, scratch_key_init);
        if (!(s = calloc(1, sizeof *s)))
            return NULL;
        tls_scratch = s;
        if (scratch_key_ok)
            pthread_setspecific(scratch_key, s);
    }
    size_t hq = s->nq, hc = s->cap;
    if (room_for((void **)&s->buf, &s->nbuf, nbuf, sizeof *s->buf) ||
        room_for((void **)&s->qc, &hq, nq, sizeof *s->qc) ||
        room_for((void **)&s->qt, &s->nq, nq, sizeof *s->qt) ||
        room_for((void **)&s->id, &hc, cap, sizeof *s->id) ||
        room_for((void **)&s->v, &s->cap, cap, sizeof *s->v) ||
        room_for((void **)&s->used, &s->nused, nused, sizeof *s->used))
        return NULL;
    return s;
}

/* Open-addressing accumulator id -> score; used[] lists the taken slots in
 * insertion order, so that the passes after the sums visit only those. */
struct acc {
    uint32_t *id, *used;
    float *v;
    uint32_t mask, n;
};

static float *acc_slot(struct acc *h, uint32_t id, int insert)
{
    uint32_t i = (id * 2654435761u) & h->mask;
    while (h->id[i] != UINT32_MAX) {
        if (h->id[i] == id)
            return &h->v[i];
        i = (i + 1) & h->mask;
    }
    if (!insert)
        return NULL;
    h->id[i] = id;
    h->v[i] = 0;
    h->used[h->n++] = i;
    return &h->v[i];
}

int rc_cooc_query(rc_cooc *c, const uint32_t *q, const float *w, uint32_t nq,
                  const uint32_t *exclude, uint32_t nex, rc_cooc_keep_fn keep, void *ud, uint32_t k,
                  rc_hit *out, uint32_t *n, const uint32_t *cand, uint32_t ncand, float *cscores)
{
    uint32_t m = c->o.neighbors, cap = 1;
    struct acc h = {0};
    *n = 0;
    for (uint32_t i = 0; i < ncand; i++)
        cscores[i] = 0;
    while (cap < 2 * (uint64_t)nq * m + 16)
        cap <<= 1;
    /* at most nq * m inserts */
    struct scratch *sc = scratch_get(m, nq ? nq : 1, cap, (size_t)nq * m + 1);
    if (!sc)
        return RC_ENOMEM;
    uint64_t *buf = sc->buf;
    float *qc = sc->qc;
    int64_t *qt = sc->qt;
    h.mask = cap - 1;
    h.id = sc->id;
    h.v = sc->v;
    h.used = sc->used;
    memset(h.id, 0xff, (size_t)cap * sizeof *h.id);
    double hl = (double)c->o.half_life_ms, beta = c->o.pop_damping;
    uint64_t ep = reader_enter(c);
    /* Counts are compared at the newest time of the query items' lists. */
    int64_t tmax = INT64_MIN;
    for (uint32_t i = 0; i < nq; i++) {
        qc[i] = 0;
        if (slot_read(c, q[i], NULL, &qc[i], &qt[i]) >= 0 && qt[i] > tmax)
            tmax = qt[i];
    }
    for (uint32_t i = 0; i < nq; i++) {
        float ca;
        int64_t ta;
        int got = slot_read(c, q[i], buf, &ca, &ta);
        if (got <= 0)
            continue;
        double fa = hl > 0 ? exp2((double)(ta - tmax) / hl) : 1.0;
        double wa = (w ? w[i] : 1.0f) * sqrt(fa) / sqrt((double)ca); /* c fa / sqrt(n fa) */
        for (int j = 0; j < got; j++) {
            float *v = acc_slot(&h, e_id(buf[j]), 1);
            *v += (float)(wa * e_cnt(buf[j]));
        }
    }
    /* Divide by n(b)^beta at the same instant (sqrt for the default 0.5). */
    for (uint32_t u = 0; u < h.n; u++) {
        uint32_t i = h.used[u];
        float cb;
        int64_t tb;
        if (slot_read(c, h.id[i], NULL, &cb, &tb) < 0) {
            h.v[i] = 0;
            continue;
        }
        double nb = cb * (hl > 0 ? exp2((double)(tb - tmax) / hl) : 1.0);
        double d = beta == 0.5 ? sqrt(nb) : beta == 1 ? nb : pow(nb, beta);
        h.v[i] = nb > 1e-12 ? (float)(h.v[i] / d) : 0;
    }
    reader_exit(c, ep);
    for (uint32_t i = 0; i < ncand; i++) { /* before the exclusions: scored all the same */
        float *v = acc_slot(&h, cand[i], 0);
        cscores[i] = v ? *v : 0;
    }
    for (uint32_t x = 0; x < nex; x++) { /* one lookup each, not a scan per entry */
        float *v = acc_slot(&h, exclude[x], 0);
        if (v)
            *v = 0;
    }
    for (uint32_t u = 0; k && u < h.n; u++) {
        uint32_t i = h.used[u], id = h.id[i];
        if (!(h.v[i] > 0) || (keep && !keep(ud, id)))
            continue;
        rc_hit_offer(out, n, k, (rc_hit){id, h.v[i]});
    }
    return 0;
}

void rc_cooc_stats_get(rc_cooc *c, rc_cooc_stats *st)
{
    *st = (rc_cooc_stats){.items = atomic_load(&c->items),
                          .entries = atomic_load(&c->entries),
                          .bytes = atomic_load(&c->bytes),
                          .max_bytes = c->o.max_bytes,
                          .clicks = atomic_load(&c->clicks),
                          .pairs = atomic_load(&c->pairs),
                          .evictions = atomic_load(&c->evictions),
                          .dropped = atomic_load(&c->dropped),
                          .retired = atomic_load(&c->retired)};
}

/* ---- persistence ---- */

int rc_cooc_save(rc_cooc *c, rc_buf *b)
{
    uint32_t held = 0;
    size_t at = b->len;
    int rc = rc_buf_append(b, &held, 4);
    for (uint32_t sg = 0; !rc && sg < c->nsegs; sg++) {
        struct slot *seg = atomic_load_explicit(&c->segs[sg], RLX);
        for (uint32_t i = 0; !rc && seg && i < SEG_SIZE; i++) {
            struct slot *s = &seg[i];
            uint32_t n = atomic_load_explicit(&s->n, RLX),
                     cb = atomic_load_explicit(&s->count_bits, RLX);
            struct list *l = atomic_load_explicit(&s->l, RLX);
            if (!cb && !n)
                continue;
            uint32_t id = sg << SEG_BITS | i;
            int64_t t = atomic_load_explicit(&s->t_ms, RLX);
            rc = rc_buf_append(b, &id, 4) || rc_buf_append(b, &cb, 4) || rc_buf_append(b, &t, 8) ||
                 rc_buf_append(b, &n, 4);
            if (!rc && n) /* the writer's own entries, as they are packed */
                rc = rc_buf_append(b, (const void *)l->e, (size_t)n * sizeof(uint64_t));
            held++;
        }
    }
    if (rc)
        return RC_ENOMEM;
    memcpy(b->data + at, &held, 4);
    return 0;
}

static int by_count_desc(const void *a, const void *b)
{
    float x = e_cnt(*(const uint64_t *)a), y = e_cnt(*(const uint64_t *)b);
    return (x < y) - (x > y);
}

int rc_cooc_load(rc_cooc *c, const void *p, size_t n, uint32_t nrows, uint64_t *dropped)
{
    const unsigned char *q = p;
    size_t pos = 4;
    uint32_t held;
    uint64_t drop = 0, *tmp = NULL;
    int rc = 0;
    uint32_t lim = RC_MIN(nrows, c->o.max_items);
    if (!p || n < 4)
        return RC_ECORRUPT;
    memcpy(&held, q, 4);
    if (!(tmp = malloc(RC_COOC_MAX_NEIGHBORS * 2 * sizeof *tmp)))
        return RC_ENOMEM;
    for (uint32_t it = 0; it < held; it++) {
        uint32_t id, cb, ne, m = 0;
        int64_t t;
        if (n - pos < 20) {
            rc = RC_ECORRUPT;
            break;
        }
        memcpy(&id, q + pos, 4);
        memcpy(&cb, q + pos + 4, 4);
        memcpy(&t, q + pos + 8, 8);
        memcpy(&ne, q + pos + 16, 4);
        pos += 20;
        if ((uint64_t)ne * 8 > n - pos || !isfinite(f_of(cb)) || f_of(cb) < 0 || t < 0) {
            rc = RC_ECORRUPT;
            break;
        }
        /* the entries kept: neighbours in the table, the strongest M */
        for (uint32_t k = 0; k < ne; k++) {
            uint64_t v;
            memcpy(&v, q + pos + (size_t)k * 8, 8);
            if (e_id(v) >= lim || e_id(v) == id || !(e_cnt(v) > 0) || !isfinite(e_cnt(v)) ||
                m == 2 * RC_COOC_MAX_NEIGHBORS) {
                drop++;
                continue;
            }
            tmp[m++] = v;
        }
        pos += (size_t)ne * 8;
        if (id >= lim) {
            drop += 1 + m;
            continue;
        }
        if (m > c->o.neighbors) {
            qsort(tmp, m, sizeof *tmp, by_count_desc);
            drop += m - c->o.neighbors;
            m = c->o.neighbors;
        }
        struct slot *s = slot_make(c, id);
        if (!s || atomic_load_explicit(&s->count_bits, RLX) || atomic_load_explicit(&s->n, RLX)) {
            drop += 1 + m; /* no room, or the id twice */
            continue;
        }
        w_begin(s);
        atomic_store_explicit(&s->count_bits, cb, REL);
        atomic_store_explicit(&s->t_ms, t, REL);
        uint32_t cap = RC_MIN(FIRST_CAP, c->o.neighbors);
        while (cap < m)
            cap = RC_MIN(cap * 2, c->o.neighbors);
        struct list *l = NULL;
        if (m && atomic_load(&c->bytes) + list_bytes(cap) <= c->o.max_bytes)
            l = malloc(list_bytes(cap));
        if (l) {
            l->cap = cap;
            l->next_retired = NULL;
            for (uint32_t k = 0; k < m; k++)
                atomic_init(&l->e[k], tmp[k]);
            atomic_fetch_add(&c->bytes, list_bytes(cap));
            atomic_fetch_add(&c->items, 1);
            atomic_fetch_add(&c->entries, m);
            atomic_store_explicit(&s->l, l, memory_order_release);
            atomic_store_explicit(&s->n, m, REL);
        } else {
            drop += m;
        }
        w_end(s);
    }
    free(tmp);
    if (dropped)
        *dropped = drop;
    return rc;
}

/* ---- fusion ---- */

void rc_cooc_fuse_norm(const rc_hit *emb, uint32_t ne, const rc_hit *co, uint32_t nc,
                       rc_cooc_norm *nm)
{
    *nm = (rc_cooc_norm){0};
    for (uint32_t i = 0; i < nc; i++)
        nm->cmax = RC_MAX(nm->cmax, co[i].score);
    for (uint32_t i = 0; i < ne; i++) {
        if (!nm->has_emb || emb[i].score < nm->emin)
            nm->emin = emb[i].score;
        if (!nm->has_emb || emb[i].score > nm->emax)
            nm->emax = emb[i].score;
        nm->has_emb = 1;
    }
}

float rc_cooc_fused_score(const rc_cooc_norm *nm, float weight, float cs, float es, int has_es)
{
    float cp = nm->cmax > 0 ? cs / nm->cmax : 0, ep = 0;
    if (has_es && nm->has_emb) {
        ep = nm->emax > nm->emin ? (es - nm->emin) / (nm->emax - nm->emin) : 1.0f;
        ep = ep < 0 ? 0 : ep > 1 ? 1 : ep;
    }
    return weight * cp + (1 - weight) * ep;
}

void rc_cooc_fuse(const rc_hit *emb, const float *emb_cs, uint32_t ne, const rc_hit *co,
                  const float *co_es, uint32_t nc, float weight, uint32_t k, rc_hit *out,
                  uint32_t *n)
{
    rc_cooc_norm nm;
    rc_cooc_fuse_norm(emb, ne, co, nc, &nm);
    *n = 0;
    if (!k)
        return;
    for (uint32_t i = 0; i < ne; i++) {
        float cs = 0;
        if (emb_cs)
            cs = emb_cs[i];
        else
            for (uint32_t j = 0; j < nc; j++)
                if (co[j].row == emb[i].row)
                    cs = co[j].score;
        rc_hit_offer(out, n, k,
                     (rc_hit){emb[i].row, rc_cooc_fused_score(&nm, weight, cs, emb[i].score, 1)});
    }
    for (uint32_t i = 0; i < nc; i++) {
        uint32_t j;
        for (j = 0; j < ne && emb[j].row != co[i].row; j++)
            ;
        if (j < ne)
            continue; /* scored above, with its own co-occurrence score */
        rc_hit_offer(out, n, k,
                     (rc_hit){co[i].row, rc_cooc_fused_score(&nm, weight, co[i].score,
                                                             co_es ? co_es[i] : 0, co_es != NULL)});
    }
}
