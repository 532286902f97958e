/* recall — the query side shared by the server and the evaluator: a query
 * vector from a user's recent clicks, index search with over-fetch, exact
 * re-scoring with the table's current vectors, exclusion of already-clicked
 * items and filters.
 *
 * Thread-safe: any number of threads may query while the trainer writes (the
 * index has its own locks; table vectors are read without locks and may be
 * mid-update, which only perturbs a score). */
#ifndef RECALLD_RECALL_H
#define RECALLD_RECALL_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/index.h"
#include "recalld/table.h"

typedef struct rc_hit {
    uint32_t row;
    float score; /* cosine between the query and the item's current input vector */
} rc_hit;

/* q[dim] = mean of the L2-normalised input vectors of rows[0..n), weighted by
 * w[i] when w is non-NULL; then normalised. Returns 0, or RC_ENOENT when n == 0
 * or every vector is zero. */
int rc_recall_query_vector(const rc_table *t, const uint32_t *rows, const float *w, uint32_t n,
                           float *q);

/* Top-k rows for query q: searches the index for ceil(k * overfetch) + nexclude
 * candidates (filter f may be NULL), re-scores each with the current table
 * vector, drops rows in exclude[0..nexclude) and rows failing the filter, sorts
 * by score and keeps k. out has room for k. Returns 0 or a negative RC_E*. */
int rc_recall_search(const rc_table *t, rc_index *ix, const float *q, uint32_t k, float overfetch,
                     const rc_index_filter *f, const uint32_t *exclude, uint32_t nexclude,
                     rc_hit *out, uint32_t *n);

#endif
