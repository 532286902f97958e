/* bounds — health warnings for reached data-side bounds (see bounds.h). */
#include "recalld/bounds.h"

#include <stdio.h>
#include <string.h>

#include "recalld/index.h"
#include "recalld/session.h"

static int put(rc_buf *out, int n, const char *msg)
{
    if (n)
        rc_buf_puts(out, ",");
    rc_buf_json_str(out, msg, strlen(msg));
    return n + 1;
}

int rc_bounds_warnings(rc_engine *e, const rc_consumer_stats *cs, rc_buf *out, int n)
{
    const rc_config *c = rc_engine_config(e);
    rc_engine_counters ec;
    rc_index_stats is;
    rc_session_stats ss;
    char msg[256];
    rc_engine_counters_get(e, &ec);
    rc_index_counters_get(rc_engine_index(e), &is); /* on the loop: no sort */
    rc_engine_session_stats(e, &ss);
    if (is.overflow_rows) {
        snprintf(msg, sizeof msg,
                 "index.max_partitions (%u) reached: %llu rows of further city x "
                 "category pairs are in the overflow partition (searchable, scanned by every "
                 "search)",
                 is.max_partitions, (unsigned long long)is.overflow_rows);
        n = put(out, n, msg);
    }
    if (is.partition_errors) {
        snprintf(msg, sizeof msg,
                 "%llu index rows could not get a partition (out of memory) and "
                 "wait to be retried",
                 (unsigned long long)is.partition_errors);
        n = put(out, n, msg);
    }
    if (ec.rejected_capacity) {
        snprintf(msg, sizeof msg,
                 "model.max_items (%u) reached: %llu events on new items were not "
                 "applied (rejected_capacity)",
                 c->max_items, (unsigned long long)ec.rejected_capacity);
        n = put(out, n, msg);
    }
    if (ss.evicted_lru) {
        snprintf(msg, sizeof msg,
                 "sessions.max_users (%u) reached: %llu least recently active "
                 "users evicted",
                 c->max_users, (unsigned long long)ss.evicted_lru);
        n = put(out, n, msg);
    }
    if (cs && cs->dead_letters_dropped) {
        snprintf(msg, sizeof msg,
                 "kafka.dlq_file_max_mb (%u) reached: %llu dead letters deleted "
                 "by rotation",
                 c->dlq_file_max_mb, (unsigned long long)cs->dead_letters_dropped);
        n = put(out, n, msg);
    }
    if (cs && cs->dead_letter_errors) {
        snprintf(msg, sizeof msg, "%llu dead letters could not be written",
                 (unsigned long long)cs->dead_letter_errors);
        n = put(out, n, msg);
    }
    return n;
}
