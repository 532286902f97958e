/* Private to the metrics module (metrics.c, metrics_stats.c). */
#ifndef RECALLD_METRICS_INT_H
#define RECALLD_METRICS_INT_H

#include <stddef.h>

#include "recalld/buf.h"

/* Appends the COUNTER and GAUGE rows of the stats table whose paths are in
 * the stats object stats[0..len) (JSON text, braces included). */
void rc__metrics_render_stats(rc_buf *out, const char *stats, size_t len);

#endif
