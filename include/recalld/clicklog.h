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
    const char *path;               /* file, "-" = stdin; ".gz" suffix = gzip */
    enum rc_clicklog_format format; /* AUTO: by suffix (.jsonl/.json, .tsv, else csv) */
    const char *sep;                /* CSV separator string, NULL = "," (TSV: "\t") */
    int header;                     /* first row is a header (names usable as columns) */
    /* Columns: a 0-based index ("2") or a header name ("item_id"; matched
     * exactly, else ignoring case, '_' and '-'); NULL = absent. A name implies
     * a header row. With none of user/item/time given: user 0, item 1, time =
     * the last column (MovieLens u.data, ratings.dat). Item is required, user
     * or session too (no user: the session is the user); no time: file order,
     * rows 1 ms apart. Rows must have the column count of the header (or of
     * the first row). JSONL ignores these and uses the event schema's names.
     * format AUTO without a telling suffix: a first line starting with '{' is
     * JSONL, else CSV; sep NULL: the first of tab, "::", ";", ",", "|" found
     * in the first line ("\t" or "tab" also mean a tab). */
    const char *col_user, *col_item, *col_time, *col_session, *col_city, *col_cate;
    enum rc_time_unit time_unit; /* of the time column (JSONL ts is always ms) */
    /* Optional second time column, in integer milliseconds, added to the time
     * column (NULL = absent). Diginetica: --time eventdate --time-unit iso
     * --time-offset timeframe (a date plus ms since the session's start). */
    const char *col_time_offset;
    int64_t gap_ms;      /* session gap when no session column, 0 = 30 min */
    uint32_t max_report; /* malformed rows printed to stderr, 0 = 5 */
    int quiet;           /* no progress/report output */
    /* Item -> category side file (overrides/adds the category of every click of
     * a listed item; the log then has categories). NULL = none. Formats:
     * "csv" (default): two columns item;category, separator = sep when given
     * else detected (";", ",", tab, "::", "|"), a first row that names columns
     * (non-numeric category) is skipped — Diginetica's product-categories.csv;
     * "movielens": u.item ("|"-separated, latin-1), item = field 0, category =
     * the name index of the FIRST set flag among the 19 genre flags at the end
     * ("0".."18", u.genre order). Items absent from the file keep their own
     * category column (or ""). */
    const char *item_cates;
    const char *item_cates_format;
} rc_clicklog_opts;

/* Malformed-row reasons, indices into skipped_by_reason. */
enum rc_clicklog_reason {
    RC_LOG_R_COLUMNS = 0, /* too few columns for the mapping */
    RC_LOG_R_EMPTY_ID,    /* empty user, item or session */
    RC_LOG_R_BAD_TIME,    /* time (or time offset) unparsable or negative */
    RC_LOG_R_BAD_EVENT,   /* JSONL line refused by rc_event_decode */
    RC_LOG_R_TOO_LONG,    /* line over RC_CLICKLOG_LINE_MAX or field over RC_ID_MAX */
    RC_LOG_R_COUNT
};
#define RC_CLICKLOG_LINE_MAX 65536

typedef struct rc_click_rec {
    uint32_t user, item, city,
        cate;         /* dense ids into the log's dicts; city/cate 0 = "" when absent */
    uint32_t session; /* dense session id after rc_clicklog_sessionize */
    int64_t ts_ms;
} rc_click_rec;

/* The profile a JSONL user's events carried (ufeat.h builds its features from
 * it): the device of its LAST event with a non-empty device, the tags of its
 * last event with a non-empty tag list. */
typedef struct rc_click_profile {
    uint32_t device;  /* log->devices id + 1, 0 = none */
    uint32_t tag_off; /* its tags: log->tag_ids[tag_off .. tag_off + ntags) */
    uint8_t ntags;    /* 0 = none (<= RC_TAGS_MAX of event.h) */
    uint8_t tag_cap;  /* room at tag_off (loader bookkeeping) */
} rc_click_profile;

typedef struct rc_clicklog {
    rc_click_rec *recs; /* after sessionize: sorted by (session, ts) and sessions by start time */
    size_t n;
    rc_dict *users, *items, *cities, *cates; /* id strings */
    uint32_t nsessions;
    size_t *sess_off; /* session s = recs[sess_off[s] .. sess_off[s+1]) ; nsessions+1 entries */
    uint64_t lines, skipped;       /* data rows read (header, blank lines excluded) = n + skipped */
    uint64_t skipped_by_reason[8]; /* see rc_clicklog_reason_name */
    int has_city, has_cate;        /* the log carried those columns */
    /* JSONL only (all NULL/0 for CSV/TSV logs): device and tag strings, and
     * per user (index = dense user id, nprofiles entries; users past it have
     * none) what its events said. Memory: 12 bytes per user plus at most
     * 2 * RC_TAGS_MAX tag slots per user (a list is rewritten in place when it
     * fits). */
    rc_dict *devices, *tags;
    rc_click_profile *profiles;
    uint32_t nprofiles;
    uint32_t *tag_ids; /* tags ids, see rc_click_profile */
    size_t ntag_ids;
    size_t recs_cap; /* rc_clicklog_create's bound (0 for loaded logs) */
} rc_clicklog;

/* Loads and sessionizes. Returns 0, RC_ENOENT/RC_EIO (file), RC_EINVAL (bad
 * options, unknown column name: errbuf says which). Caller frees with
 * rc_clicklog_free. */
int rc_clicklog_load(const rc_clicklog_opts *opts, rc_clicklog **out, char *errbuf, size_t errlen);
void rc_clicklog_free(rc_clicklog *log); /* NULL-safe */
/* A log built in memory (the daemon's retraining from its replay buffer):
 * create it with room for cap clicks, append clicks (strings interned, like
 * a loaded log's; an empty city/category is id 0 = ""), then sessionize once
 * with the loader's rule (per user, time order, ties in append order, a new
 * session after a gap over gap_ms, 0 = 30 min). No profiles (devices/tags
 * NULL): features come separately (ufeat.h's struct).
 * create: 0, RC_EINVAL (out NULL), RC_ENOMEM. add: 0, RC_EINVAL (empty user
 * or item, already sessionized), RC_E2BIG (cap clicks already), RC_ENOMEM,
 * RC_E2BIG from the dicts. sessionize: 0, RC_EINVAL (errbuf says why),
 * RC_ENOMEM. Free with rc_clicklog_free. */
int rc_clicklog_create(size_t cap, rc_clicklog **out);
int rc_clicklog_add(rc_clicklog *log, const char *user, size_t ulen, const char *item, size_t ilen,
                    const char *city, size_t clen, const char *cate, size_t klen, int64_t ts_ms);
int rc_clicklog_sessionize(rc_clicklog *log, int64_t gap_ms, char *errbuf, size_t errlen);

/* Static snake_case name of a reason ("columns", "empty_id", "bad_time",
 * "bad_event", "too_long"), "?" when out of range. */
const char *rc_clicklog_reason_name(int reason);

/* Parses an ISO 8601 date "YYYY-MM-DD" or date-time "YYYY-MM-DDTHH:MM[:SS[.fff]]"
 * (' ' instead of 'T' accepted; optional "Z" or "+HH:MM"/"-HH:MM"; no zone =
 * UTC) from s[0..len) into epoch milliseconds. Returns 0 or RC_EINVAL. */
int rc_clicklog_parse_iso(const char *s, size_t len, int64_t *ms);

#endif
