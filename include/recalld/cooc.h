/* cooc — live session co-occurrence (item-kNN) with bounded memory and
 * decayed counts, and the fusion of its candidates with embedding candidates.
 * The daemon (the engine's apply path and its itemknn / fused recall) and the
 * evaluator (recalld-eval's itemknn-live and fused methods) run this code.
 *
 * State, per item id (< max_items):
 *  - n(a): the decayed number of clicks on a;
 *  - a list of at most `neighbors` (M) co-occurring items b with a decayed
 *    pair count c(a,b).
 * rc_cooc_click(item x at ts, ctx = the previous clicks of x's session, most
 * recent last): n(x) += 1 and, for each distinct y among the last `window` of
 * ctx (y != x), c(x,y) += 1 and c(y,x) += 1. With half_life_ms > 0 every count
 * decays by 2^(-dt / half_life_ms) in event time (applied lazily to a whole
 * list when it is next written; a click older than the list's time adds
 * 2^(-age / half_life_ms) instead of 1); decayed entries below 1e-3 are
 * dropped.
 *
 * Bounds: a list grows by doubling from 4 entries up to M; the lists, the
 * retired ones waiting to be freed and the per-item slots (allocated by 4,096
 * ids) never exceed max_bytes together. A neighbour that finds its list full
 * (at M, or at a smaller size when max_bytes leaves no room to grow) replaces
 * the entry with the smallest count, taking that count plus its increment
 * (space-saving: frequent pairs stay, counted as `evictions`); an item whose
 * first list does not fit keeps its click count only (`dropped`).
 *
 * Query (rc_cooc_query): for query items a with weights w(a) (NULL = 1),
 * score(b) = sum_a w(a) c(a,b) / (n(a)^0.5 n(b)^pop_damping), counts taken at
 * one common instant (pop_damping 0.5 = cosine of the co-occurrence; larger
 * damps popular items more). Items of `exclude` are never returned.
 *
 * Fusion (rc_cooc_fuse): over the union of an embedding list and a
 * co-occurrence list, an item's fused score is weight * its co-occurrence
 * score / the co-occurrence list's best + (1 - weight) * its embedding score
 * min-max normalised over the embedding list (clamped to [0,1]; 0 when the
 * item has no embedding score).
 *
 * Thread model: one writer (rc_cooc_click) and any number of concurrent
 * readers (rc_cooc_query, rc_cooc_stats_get) that never block it: every list
 * is read under a per-item sequence counter (retried when the writer was
 * inside it) and replaced lists are freed only once no reader that could hold
 * them is left (two-epoch reclamation, checked by the writer). */
#ifndef RECALLD_COOC_H
#define RECALLD_COOC_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/recall.h" /* rc_hit */

#define RC_COOC_MAX_NEIGHBORS 1000u
#define RC_COOC_MAX_WINDOW    64u

typedef struct rc_cooc rc_cooc;

/* Zero = default for every field (the daemon's cooc.* keys). */
typedef struct rc_cooc_opts {
    uint32_t max_items;   /* ids are < max_items; 0 = 1,000,000 */
    uint32_t neighbors;   /* M, <= RC_COOC_MAX_NEIGHBORS; 0 = 100 */
    uint64_t max_bytes;   /* bound of all state; 0 = 128 MiB */
    uint32_t window;      /* previous session clicks paired, <= RC_COOC_MAX_WINDOW; 0 = 5 */
    int64_t half_life_ms; /* decay of counts in event time; 0 = none */
    float pop_damping;    /* exponent of n(b) in the score; 0 = 0.5 (cosine) */
} rc_cooc_opts;

typedef struct rc_cooc_stats {
    uint64_t items;     /* ids with a neighbour list */
    uint64_t entries;   /* neighbour entries held */
    uint64_t bytes;     /* lists + retired lists + slots */
    uint64_t max_bytes; /* the bound */
    uint64_t clicks;    /* rc_cooc_click calls */
    uint64_t pairs;     /* co-occurrence increments (both directions) */
    uint64_t evictions; /* entries replaced in a full list */
    uint64_t dropped;   /* lists that could not be created (max_bytes) */
    uint64_t retired;   /* lists replaced and waiting to be freed */
} rc_cooc_stats;

/* Returns 0, RC_EINVAL (errbuf names the option), RC_ENOMEM. */
int rc_cooc_create(const rc_cooc_opts *opts, rc_cooc **out, char *errbuf, size_t errlen);
void rc_cooc_destroy(rc_cooc *c); /* NULL-safe; no reader may be inside */
/* The options with defaults resolved. */
rc_cooc_opts rc_cooc_opts_get(const rc_cooc *c);

/* Writer. One click on item at ts_ms; ctx[0..nctx): the previous clicks of
 * its session, most recent last (only the last `window` are used). Ids at or
 * beyond max_items are ignored (returns RC_EINVAL). Returns 0. */
int rc_cooc_click(rc_cooc *c, uint32_t item, const uint32_t *ctx, uint32_t nctx, int64_t ts_ms);

/* Any thread. Top-k (k >= 1) items by score for query items q[0..nq) with
 * weights w (NULL = 1), best first (ties: lower id first), none of
 * exclude[0..nex), into out (room for k); *n their count (0 when no query
 * item has a neighbour). keep (NULL = all) filters candidates: a candidate b
 * is returned only when keep(ud, b) != 0. cand[0..ncand) (may be NULL):
 * receives in cscores[i] the score of cand[i] (0 when none), excluded or
 * filtered or not. Returns 0 or RC_ENOMEM. */
typedef int (*rc_cooc_keep_fn)(void *ud, uint32_t id);
int rc_cooc_query(rc_cooc *c, const uint32_t *q, const float *w, uint32_t nq,
                  const uint32_t *exclude, uint32_t nex, rc_cooc_keep_fn keep, void *ud, uint32_t k,
                  rc_hit *out, uint32_t *n, const uint32_t *cand, uint32_t ncand, float *cscores);

/* Any thread. */
void rc_cooc_stats_get(rc_cooc *c, rc_cooc_stats *st);

/* ---- persistence (a checkpoint's co-occurrence counts) ---- */

struct rc_buf;

/* Writer. Appends the state to b: u32 ids held, then per id (ascending) with
 * a click count or a list: u32 id, f32 n(id), i64 the event time the counts
 * are at, u32 entries and per entry a u64: the neighbour's id in the high 32
 * bits, the bits of the f32 c(id, neighbour) in the low 32 (as held).
 * Returns 0 or RC_ENOMEM (b could not grow). */
int rc_cooc_save(rc_cooc *c, struct rc_buf *b);

/* Writer, before any click or reader: the state of an rc_cooc_save blob
 * p[0..n) (an empty channel expected). An id or neighbour >= nrows (or
 * max_items) is dropped; a list longer than `neighbors` keeps its strongest
 * entries; what max_bytes leaves no room for is dropped. *dropped (NULL ok)
 * counts the ids and entries dropped. Returns 0, RC_ECORRUPT (malformed;
 * what was read stays) or RC_ENOMEM. */
int rc_cooc_load(rc_cooc *c, const void *p, size_t n, uint32_t nrows, uint64_t *dropped);

/* ---- fusion (pure functions) ---- */

/* The normalisers of one fusion: from the embedding list emb[0..ne) and the
 * co-occurrence list co[0..nc), each best first. */
typedef struct rc_cooc_norm {
    float cmax;       /* best co-occurrence score (0: none) */
    float emin, emax; /* embedding list's lowest and highest score */
    int has_emb;
} rc_cooc_norm;
void rc_cooc_fuse_norm(const rc_hit *emb, uint32_t ne, const rc_hit *co, uint32_t nc,
                       rc_cooc_norm *nm);
/* Fused score of an item with co-occurrence score cs (0 when none) and
 * embedding score es (has_es = 0: not scored by the embedding). */
float rc_cooc_fused_score(const rc_cooc_norm *nm, float weight, float cs, float es, int has_es);
/* The union of emb and co ranked by fused score (weight in [0,1]; ties:
 * lower id first), the top k into out (room for k); *n their count.
 * emb_cs[i] (NULL = 0): the co-occurrence score of emb[i]; co_es[i] (NULL =
 * not scored): the embedding score of co[i]. The embedding part is clamped to
 * [0,1]. */
void rc_cooc_fuse(const rc_hit *emb, const float *emb_cs, uint32_t ne, const rc_hit *co,
                  const float *co_es, uint32_t nc, float weight, uint32_t k, rc_hit *out,
                  uint32_t *n);

#endif
