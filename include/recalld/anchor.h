/* anchor — the warm-start anchor of the streaming trainer (train.anchor).
 *
 * A snapshot of a warm-started table's input vectors (the model the engine
 * was started from: model.path or a restored checkpoint), taken once, and
 * every row's click count at that moment. After each SGNS update of a click
 * the trainer pulls the input vectors it changed back toward their snapshot
 * (rc_sgns_opts.anchor):
 *
 *     in <- in + s * (anchor - in),   s = min(1, lr * strength * fade)
 *     fade = h / (h + clicks since the snapshot)   (h = fade_clicks; 1 when h = 0)
 *
 * i.e. a step of the L2 penalty strength/2 * |in - anchor|^2 at the click's
 * own rate (L2-SP), weaker as the item collects clicks of its own in the
 * stream. Rows added after the snapshot (items the warm model never saw)
 * have no anchor and learn freely.
 *
 * Storage: int8 per component with one float scale per row (max |x| / 127)
 * and the row's count: dim + 8 bytes a row (72 at d64, about 14% of the
 * table's 524), against dim * 4 + 4 for a float copy (+50%). The rounding
 * error is at most scale / 2 per component.
 *
 * Thread model: built once on the writer thread; read-only afterwards, so
 * any thread may pull (the pull writes the table row like SGNS does). */
#ifndef RECALLD_ANCHOR_H
#define RECALLD_ANCHOR_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/table.h"

typedef struct rc_anchor rc_anchor;

typedef struct rc_anchor_opts {
    float strength;    /* train.anchor: L2 strength, > 0 */
    float fade_clicks; /* train.anchor_fade_clicks: h above, 0 = never fades */
} rc_anchor_opts;

/* Snapshots rows 0..rc_table_size(t)-1 of t (their input vectors and counts).
 * Returns 0, RC_EINVAL (strength <= 0, fade < 0, table with no rows) or
 * RC_ENOMEM. */
int rc_anchor_create(const rc_table *t, const rc_anchor_opts *o, rc_anchor **out, char *errbuf,
                     size_t errlen);
void rc_anchor_destroy(rc_anchor *a); /* NULL-safe */

/* Writer thread, between updates (no pull may run): takes the snapshot
 * again from t for the rows a holds, e.g. after install_model "replace"
 * put a whole new table in (the old snapshot would pull rows back into the
 * table it replaced). Rows added since the first snapshot stay without
 * anchor. NULL-safe. */
void rc_anchor_rebase(rc_anchor *a, const rc_table *t);

uint32_t rc_anchor_rows(const rc_anchor *a); /* rows anchored; 0 for NULL */
size_t rc_anchor_bytes(const rc_anchor *a);  /* heap bytes; 0 for NULL */

/* The pull's step s for row at rate lr (0 for a row without anchor). */
float rc_anchor_step(const rc_anchor *a, const rc_table *t, uint32_t row, float lr);

/* The anchor vector of row (< rc_anchor_rows) into out (dim floats). */
void rc_anchor_get(const rc_anchor *a, uint32_t row, float *out);

/* Pulls row's input vector toward its anchor by rc_anchor_step; scratch:
 * dim floats. No-op for a row without anchor or a NULL anchor. */
void rc_anchor_pull(const rc_anchor *a, rc_table *t, uint32_t row, float lr, float *scratch);

#endif
