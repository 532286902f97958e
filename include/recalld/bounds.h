/* bounds — the `health` warnings of the data side's resource bounds (issue 11,
 * OPERATIONS.md "Memory budget"): the index's partition limit
 * (index.max_partitions), the item table (model.max_items), the session store
 * (sessions.max_users) and the dead-letter file (kafka.dlq_file_max_mb).
 * Reaching one is not a fault — recalld keeps serving by its documented policy
 * — but it is visible: a counter, a WARN where it happens, and these lines. */
#ifndef RECALLD_BOUNDS_H
#define RECALLD_BOUNDS_H

#include "recalld/buf.h"
#include "recalld/consumer.h"
#include "recalld/engine.h"

/* Any thread. Appends one JSON string per bound reached to out, each preceded
 * by a comma when n (the strings already written) > 0. cs may be NULL (no
 * consumer). Returns n plus the strings written. */
int rc_bounds_warnings(rc_engine *e, const rc_consumer_stats *cs, rc_buf *out, int n);

#endif
