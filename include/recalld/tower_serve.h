/* tower_serve — one served two-tower model (tower.h) as the daemon holds it: a
 * "bundle" of the immutable model, a MIRROR item table whose row r is row r
 * of the word2vec (SGNS) table — same item id, same city/category names, its
 * input vector being the item's item-tower vector, stored in fp16 unless
 * opts.float_mirror (read it with rc_table_in_read) — and a live partitioned
 * index (index.h) over the mirror, with the same staleness machinery as the
 * word2vec index. The mirror's output vectors are never written nor read.
 *
 * Item-tower inputs of w2v row r: rc_tower_hash of the item id, of the city name
 * and of the category name (an empty name hashes to 0 = absent), and the
 * row's current SGNS input vector.
 *
 * Keeping it current (the writer, see below):
 *  - rc_tower_serve_sync_rows appends a mirror row for every w2v row not yet
 *    mirrored (new items: the cold-start path, a vector at once from the
 *    item's id/city/category/word2vec) and touches it in the index;
 *  - rc_tower_serve_refresh checks rows whose word2vec vector may have changed: the
 *    bundle keeps per row an int8 copy of the (normalised) w2v vector its
 *    tower vector was computed from, and recomputes the tower vector only when
 *    the w2v vector drifted past `drift` (1 - cosine) — the item tower costs
 *    ~20k multiply-adds, too much to run on every SGNS update — then touches
 *    the row; the index's own drift check decides re-indexing.
 *
 * Thread model: one WRITER thread at a time (sync_rows, refresh, flush,
 * maintain); the writer role may move to another thread with a
 * happens-before edge (a mutex hand-over): a loader builds a bundle, the
 * engine's trainer adopts it. rc_tower_serve_user_vector, rc_tower_serve_search and the
 * accessors from any thread concurrently with the writer. The w2v table is
 * borrowed: only rows below rc_table_size are read, from any thread.
 * Lifetime: reference counted; whoever drops the last reference frees it. */
#ifndef RECALLD_TOWER_SERVE_H
#define RECALLD_TOWER_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/index.h"
#include "recalld/recall.h"
#include "recalld/table.h"
#include "recalld/tower.h"

typedef struct rc_tower_serve rc_tower_serve;

typedef struct rc_tower_serve_opts {
    rc_index_opts index;       /* of the tower index (its drift: re-index threshold) */
    uint32_t max_items;        /* mirror bound, 0 = the table default */
    float drift;               /* w2v drift that triggers a recompute, 0 = 0.01 (without
                                * w2v_index) */
    const rc_index *w2v_index; /* the word2vec table's index (outlives the bundle), or
                                * NULL. Given: a row is recomputed when that index stored
                                * its vector again since the row was computed
                                * (rc_index_row_gen: 2 bytes a row); NULL: the bundle keeps
                                * an int8 copy of the w2v vector each row was computed
                                * from and recomputes past `drift` (w2v_dim bytes a row) */
    int float_mirror;          /* 1: the mirror's vectors in float32; 0 (default): in fp16
                                * (rc_table_opts.half), half the bytes, the same top-k */
} rc_tower_serve_opts;

typedef struct rc_tower_serve_stats {
    uint32_t rows;          /* mirrored rows (item vectors computed) */
    uint64_t checked;       /* rows checked by rc_tower_serve_refresh */
    uint64_t recomputed;    /* of them, recomputed (w2v drifted) */
    uint64_t sync_failures; /* rows that could not be mirrored (bound, memory) */
    size_t bytes;           /* mirror table + refresh references + model */
} rc_tower_serve_stats;

/* A bundle for model m (ownership moves to the bundle, also on failure) over
 * w2v. m's w2v_dim must equal w2v's dim. Starts with no row mirrored and one
 * reference (the caller's). Returns 0, RC_EINVAL ("tower: model w2v_dim 32
 * does not match the word2vec table's dim 64"), RC_ENOMEM, RC_EFAISS. */
int rc_tower_serve_create(rc_tower_model *m, const rc_table *w2v, const rc_tower_serve_opts *opts,
                          rc_tower_serve **out, char *errbuf, size_t errlen);
void rc_tower_serve_ref(rc_tower_serve *b);
void rc_tower_serve_unref(rc_tower_serve *b); /* NULL-safe; frees at 0 */

/* Writer. Mirrors w2v rows [mirrored, min(upto, rc_table_size(w2v))), in
 * order. Returns the number of rows added (0 when none), or a negative RC_E*
 * (the bundle stays consistent: rows before the failure are mirrored). */
int rc_tower_serve_sync_rows(rc_tower_serve *b, uint32_t upto);

/* Writer. Checks rows[0..n) (rows not mirrored yet are skipped), recomputing
 * at most max_recompute of them (0 = no limit). Returns how many of rows were
 * consumed (the caller re-offers the rest later); *recomputed (NULL ok) gets
 * the recomputations done. */
uint32_t rc_tower_serve_refresh(rc_tower_serve *b, const uint32_t *rows, uint32_t n,
                                uint32_t max_recompute, uint32_t *recomputed);

/* Writer: index work (rc_index_flush / rc_index_maintain of the tower index). */
int rc_tower_serve_flush(rc_tower_serve *b, char *errbuf, size_t errlen);
int rc_tower_serve_maintain(rc_tower_serve *b, char *errbuf, size_t errlen);

/* Any thread. The item-tower input of w2v row `row` (< rc_table_size). */
void rc_tower_serve_item_in(const rc_table *w2v, uint32_t row, rc_tower_item_in *in);

/* Any thread. The user-tower vector (dim floats) of in. Returns 0 or RC_ENOMEM. */
int rc_tower_serve_user_vector(rc_tower_serve *b, const rc_tower_user_in *in, float *out);
/* Any thread. The item-tower vector (dim floats) of in. Returns 0 or RC_ENOMEM. */
int rc_tower_serve_item_vector(rc_tower_serve *b, const rc_tower_item_in *in, float *out);

/* Any thread. Top-k items for the user vector q (rc_recall_search over the
 * mirror and the tower index). f holds MIRROR city/category ids
 * (rc_tower_serve_table); exclude holds rows (the same numbers in both tables). */
int rc_tower_serve_search(rc_tower_serve *b, const float *q, uint32_t k, float overfetch,
                          const rc_index_filter *f, const uint32_t *exclude, uint32_t nexclude,
                          rc_hit *out, uint32_t *n);

const rc_tower_model *rc_tower_serve_model(const rc_tower_serve *b);
const rc_table *rc_tower_serve_table(const rc_tower_serve *b); /* the mirror */
rc_index *rc_tower_serve_index(rc_tower_serve *b);
uint32_t rc_tower_serve_dim(const rc_tower_serve *b);
/* Any thread. Mirrored rows (acquire). */
uint32_t rc_tower_serve_rows(const rc_tower_serve *b);
void rc_tower_serve_stats_get(rc_tower_serve *b, rc_tower_serve_stats *st);

#endif
