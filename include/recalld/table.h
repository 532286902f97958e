/* table — the item table: external item id -> dense row, with the row's input
 * and output vectors (dim floats each), city, category and click count.
 *
 * Storage is chunked (rows never move), so a pointer to a row's vector stays
 * valid for the table's life and readers need no lock to read vectors: the
 * trainer updates vectors in place (Hogwild-style); a reader may see a vector
 * mid-update, which recall tolerates (it re-scores, it does not persist).
 *
 * Thread model: one writer thread (the trainer) calls rc_table_add and writes
 * vectors/counts; any thread may call the lookup/read functions for rows below
 * rc_table_size(). */
#ifndef RECALLD_TABLE_H
#define RECALLD_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/common.h"

typedef struct rc_table rc_table;

#define RC_TABLE_MAX_DIM 1024u /* rc_table_opts.dim at most */

typedef struct rc_table_opts {
    uint32_t dim;        /* vector dimension, 0 = 64; multiple of 8, <= 1024 */
    uint32_t max_items;  /* hard bound, 0 = 16,777,216 */
    uint64_t seed;       /* for the small random part of new vectors */
    uint32_t chunk_rows; /* rows per storage chunk, power of 2 >= 64; 0 = about 4 MiB of
                          * input vectors per chunk (16384 rows at dim 64) */
    int input_only;      /* 1: rows have no output vector (rc_table_out returns NULL):
                          * a table that only holds vectors to index (the two-tower
                          * mirror), half the memory */
    int no_ids;          /* 1: rows are numbered only, no item ids (rc_table_append takes
                          * no id, rc_table_find finds nothing, rc_table_item_id is NULL):
                          * a table whose rows mirror another table's rows one for one,
                          * whose ids it would only repeat (the two-tower mirror) */
    int half;            /* 1: input vectors stored in fp16 (recalld/half.h), half their
                          * bytes; needs input_only and no_ids. rc_table_in returns NULL:
                          * read with rc_table_in_read / rc_table_in_copy, write with
                          * rc_table_in_write (the two-tower mirror) */
} rc_table_opts;

/* Cold-start noise: each component of a new input vector gets a uniform
 * perturbation in +-RC_TABLE_COLD_NOISE/dim — word2vec's own initial range.
 * Its norm (~0.036 at d=64) is small next to trained vectors (norm ~1), so a
 * new item clicked next to trained ones starts at their mean; while the model
 * is young (neighbours are themselves near their random start) the item keeps
 * an identity of its own. A smaller noise made every item a copy of the first
 * one's vector at bootstrap (all cosines ~0.999, measured) and SGNS could not
 * separate them in one pass. */
#define RC_TABLE_COLD_NOISE 0.5f

int rc_table_create(const rc_table_opts *opts, rc_table **out, char *errbuf, size_t errlen);
void rc_table_destroy(rc_table *t); /* NULL-safe */

uint32_t rc_table_dim(const rc_table *t);
/* Rows 0..size-1 exist (acquire load). */
uint32_t rc_table_size(const rc_table *t);

/* Writer thread. Interns a city / category / other attribute string; ids are
 * dense per kind, stable. Returns 0, RC_ENOMEM (bound), RC_E2BIG. */
int rc_table_city_id(rc_table *t, const char *s, size_t len, uint32_t *id);
int rc_table_cate_id(rc_table *t, const char *s, size_t len, uint32_t *id);
/* Any thread: lookups without interning (RC_ENOENT when unknown). */
int rc_table_find_city(const rc_table *t, const char *s, size_t len, uint32_t *id);
int rc_table_find_cate(const rc_table *t, const char *s, size_t len, uint32_t *id);
const char *rc_table_city_name(const rc_table *t, uint32_t city);
const char *rc_table_cate_name(const rc_table *t, uint32_t cate);
uint32_t rc_table_ncities(const rc_table *t);
uint32_t rc_table_ncates(const rc_table *t);

/* Writer thread. Finds item `id` or adds it with city/cate. A new row gets a
 * cold-start input vector: the mean of the input vectors of ctx[0..nctx) (its
 * session neighbours) when nctx > 0, else the mean of the most recent items of
 * its (city, cate) group, else of its city, else a small random vector; plus
 * small noise. Its output vector starts at zero. An existing item keeps its
 * city/cate (the first seen wins). *created = 1 when added. Returns 0,
 * RC_ENOMEM (max_items reached), RC_EINVAL. */
int rc_table_upsert(rc_table *t, const char *id, size_t len, uint32_t city, uint32_t cate,
                    const uint32_t *ctx, uint32_t nctx, uint32_t *row, int *created);

/* Writer thread. Gives an existing row the start of an item nothing is
 * known of: a small random input vector (the last fallback of the cold
 * start above; a neighbours' mean would put a row that learnt nothing next
 * to every query), output vector zero. City, category and count stay.
 * install_model "replace" uses it for the rows a rebuilt table does not
 * hold. Returns 0, or RC_EINVAL (no such row). */
int rc_table_reset_row(rc_table *t, uint32_t row);

/* Writer thread; loaders only (checkpoint restore). Appends a NEW item with
 * its count and no cold start: both vectors are left UNINITIALISED and the
 * caller must write them before the row is used (another thread may write
 * them, for rows below rc_table_size, while the writer appends further rows).
 * The cold-start rings see the row as if it had been added by upsert.
 * Returns 0, RC_EINVAL (id exists, empty, unknown city/cate), RC_ENOMEM. */
int rc_table_append(rc_table *t, const char *id, size_t len, uint32_t city, uint32_t cate,
                    uint32_t count, uint32_t *row);

/* Any thread. Returns 0 and *row, or RC_ENOENT. */
int rc_table_find(const rc_table *t, const char *id, size_t len, uint32_t *row);

/* Writer thread; a cache hint for a later rc_table_find/upsert of item id,
 * in steps as rc_dict_prefetch (0, then 1, then 2, some work apart); from
 * step 1 on it also loads the row's count and vectors. */
void rc_table_prefetch(const rc_table *t, const char *id, size_t len, int step);

/* Any thread, row < size. */
const char *rc_table_item_id(const rc_table *t, uint32_t row, size_t *len);
float *rc_table_in(const rc_table *t, uint32_t row); /* dim floats; NULL if half */
/* Row's input vector as floats: a pointer into the table, or (half tables) buf
 * (dim floats) holding its decoded copy. */
const float *rc_table_in_read(const rc_table *t, uint32_t row, float *buf);
/* q . v / |v| for row's input vector v (0 when v is zero), the re-rank's
 * score: in a half table computed from the fp16 row in one pass. */
float rc_table_in_cos(const rc_table *t, uint32_t row, const float *q);
/* dst (dim floats) = row's input vector. */
void rc_table_in_copy(const rc_table *t, uint32_t row, float *dst);
/* Writer (or the thread that appended the row, before readers may see it):
 * row's input vector = v (rounded to fp16 in half tables). */
void rc_table_in_write(rc_table *t, uint32_t row, const float *v);
int rc_table_half(const rc_table *t);                 /* 1 if opts.half */
float *rc_table_out(const rc_table *t, uint32_t row); /* dim floats; NULL if input_only */
uint32_t rc_table_city(const rc_table *t, uint32_t row);
uint32_t rc_table_cate(const rc_table *t, uint32_t row);
uint32_t rc_table_count(const rc_table *t, uint32_t row);
/* Writer thread. Saturates at UINT32_MAX. */
void rc_table_count_add(rc_table *t, uint32_t row, uint32_t inc);
/* Any thread. Sum of all rc_table_count_add increments (the corpus size that
 * subsampling needs). */
uint64_t rc_table_total_count(const rc_table *t);
/* The weight of an item's clicks in its recall score (recall.popularity_weight,
 * rc_recall_score): any thread; 0 (the default of a new table) = cosine only. */
void rc_table_set_pop_weight(rc_table *t, float w);
float rc_table_pop_weight(const rc_table *t);

/* Approximate heap bytes (vectors + ids + metadata). */
size_t rc_table_bytes(const rc_table *t);

#endif
