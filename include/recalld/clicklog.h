/* clicklog — offline click logs for recalld-train and recalld-eval: JSON lines
 * in the event schema, or CSV/TSV (any separator string, e.g. ";" or "::")
 * with a column mapping, optionally gzip-compressed (.gz read directly), from
 * a file or stdin ("-"). Malformed rows are counted by reason, reported (first
 * few with line numbers) and skipped, never fatal.
 *
 * The log is loaded whole into memory as compact records with dense ids, then
 * sorted into sessions (per user, time order, split at an inactivity gap or by
 * a session column) — the same gap rule as the daemon's sessions. */
#ifndef RECALLD_CLICKLOG_H
#define RECALLD_CLICKLOG_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/dict.h"

enum rc_clicklog_format { RC_LOG_AUTO = 0, RC_LOG_JSONL, RC_LOG_CSV, RC_LOG_TSV };
enum rc_time_unit { RC_TIME_S = 0, RC_TIME_MS, RC_TIME_ISO };

typedef struct rc_clicklog_opts {
    const char *path;            /* file, "-" = stdin; ".gz" suffix = gzip */
    enum rc_clicklog_format format; /* AUTO: by suffix (.jsonl/.json, .tsv, else csv) */
    const char *sep;             /* CSV separator string, NULL = "," (TSV: "\t") */
    int header;                  /* first row is a header (names usable as columns) */
    /* Columns: a 0-based index ("2") or a header name ("item_id"); NULL = absent.
     * JSONL ignores these and uses the event schema's field names. */
    const char *col_user, *col_item, *col_time, *col_session, *col_city, *col_cate;
    enum rc_time_unit time_unit; /* of the time column (JSONL ts is always ms) */
    int64_t gap_ms;              /* session gap when no session column, 0 = 30 min */
    uint32_t max_report;         /* malformed rows printed to stderr, 0 = 5 */
    int quiet;                   /* no progress/report output */
} rc_clicklog_opts;

typedef struct rc_click_rec {
    uint32_t user, item, city, cate; /* dense ids into the log's dicts; city/cate 0 = "" when absent */
    uint32_t session;                /* dense session id after rc_clicklog_sessionize */
    int64_t ts_ms;
} rc_click_rec;

typedef struct rc_clicklog {
    rc_click_rec *recs; /* after sessionize: sorted by (session, ts) and sessions by start time */
    size_t n;
    rc_dict *users, *items, *cities, *cates; /* id strings */
    uint32_t nsessions;
    size_t *sess_off;   /* session s = recs[sess_off[s] .. sess_off[s+1]) ; nsessions+1 entries */
    uint64_t lines, skipped;
    uint64_t skipped_by_reason[8]; /* see rc_clicklog_reason_name */
    int has_city, has_cate;        /* the log carried those columns */
} rc_clicklog;

/* Loads and sessionizes. Returns 0, RC_ENOENT/RC_EIO (file), RC_EINVAL (bad
 * options, unknown column name: errbuf says which). Caller frees with
 * rc_clicklog_free. */
int rc_clicklog_load(const rc_clicklog_opts *opts, rc_clicklog **out, char *errbuf, size_t errlen);
void rc_clicklog_free(rc_clicklog *log);
const char *rc_clicklog_reason_name(int reason);

#endif
