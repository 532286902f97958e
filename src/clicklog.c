/* clicklog — loading offline click logs and cutting them into sessions.
 *
 * Input goes through zlib's gz* calls, which read plain files unchanged, so a
 * ".gz" file, a plain file and stdin share one path. Lines are read into one
 * fixed buffer (RC_CLICKLOG_LINE_MAX); a CSV/TSV row is split in place, with
 * "double-quoted" fields allowed; JSONL rows go through rc_event_decode, the
 * daemon's own validation. Every row ends as a compact record with dense ids
 * (users, items, cities, cates dicts). Sessionizing sorts a 16-byte key per
 * record (group, time, file order: ties keep the file's order) and never
 * moves strings. */
#include "recalld/clicklog.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>

#include "recalld/common.h"
#include "recalld/event.h"

#define DEFAULT_GAP_MS (30 * 60 * 1000)
#define DEFAULT_REPORT 5u
#define MAX_FIELDS     512
#define COL_ABSENT     (-1)
#define COL_LAST       (-2) /* the last column, resolved on the first data row */
#define ML_GENRES      19

enum col { C_USER, C_ITEM, C_TIME, C_TOFF, C_SESSION, C_CITY, C_CATE, C_N };
static const char *const col_flag[C_N] = {"--user",    "--item", "--time", "--time-offset",
                                          "--session", "--city", "--cate"};

static const char *const reason_names[RC_LOG_R_COUNT] = {
    [RC_LOG_R_COLUMNS] = "columns",   [RC_LOG_R_EMPTY_ID] = "empty_id",
    [RC_LOG_R_BAD_TIME] = "bad_time", [RC_LOG_R_BAD_EVENT] = "bad_event",
    [RC_LOG_R_TOO_LONG] = "too_long",
};

struct reader {
    gzFile gz;
    const char *name;
    char *buf;
    size_t cap;
    uint64_t lineno; /* physical line number of the last line read, from 1 */
};

struct field {
    char *s;
    size_t n;
};

struct loader {
    const rc_clicklog_opts *o;
    rc_clicklog *log;
    struct reader rd;
    enum rc_clicklog_format fmt;
    char sep[32];
    size_t seplen;
    int col[C_N];
    int ncols;          /* expected columns per row, 0 = not known yet */
    int header_pending; /* the next non-blank line is the header */
    int row_no;         /* data rows seen: ts of rows without a time column */
    rc_dict *sessions;  /* session column values, when there is one */
    size_t cap;         /* recs capacity */
    uint32_t reported;
    uint32_t prof_cap; /* log->profiles capacity */
    size_t tag_cap;    /* log->tag_ids capacity */
    struct field f[MAX_FIELDS];
    rc_event ev;
};

const char *rc_clicklog_reason_name(int reason)
{
    return reason >= 0 && reason < RC_LOG_R_COUNT ? reason_names[reason] : "?";
}

/* ---- ISO 8601 ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (era arithmetic: a
 * 400-year era has 146097 days; March-based years put Feb 29 last). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return dm[m - 1] + (m == 2 && leap);
}

/* Reads exactly n digits at *p (< end); returns -1 when absent. */
static int digits(const char **p, const char *end, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (*p >= end || !isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
    }
    return v;
}

static int parse_zone(const char *p, const char *end, int64_t *off_ms)
{
    *off_ms = 0;
    if (p == end)
        return 0;
    if (*p == 'Z' || *p == 'z')
        return p + 1 == end ? 0 : RC_EINVAL;
    if (*p != '+' && *p != '-')
        return RC_EINVAL;
    int sign = *p++ == '-' ? -1 : 1;
    int hh = digits(&p, end, 2), mm = 0;
    if (hh < 0 || hh > 23)
        return RC_EINVAL;
    if (p < end && *p == ':')
        p++;
    if (p < end && ((mm = digits(&p, end, 2)) < 0 || mm > 59))
        return RC_EINVAL;
    *off_ms = sign * ((int64_t)hh * 3600 + mm * 60) * 1000;
    return p == end ? 0 : RC_EINVAL;
}

/* "HH:MM[:SS[.fff]]" then an optional zone; adds to *ms. */
static int parse_clock(const char *p, const char *end, int64_t *ms)
{
    int hh = digits(&p, end, 2), mi, ss = 0, frac = 0;
    if (hh < 0 || hh > 23 || p >= end || *p++ != ':' || (mi = digits(&p, end, 2)) < 0 || mi > 59)
        return RC_EINVAL;
    if (p < end && *p == ':') {
        p++;
        if ((ss = digits(&p, end, 2)) < 0 || ss > 60)
            return RC_EINVAL;
        if (p < end && (*p == '.' || *p == ',')) {
            int scale = 100, nd = 0;
            for (p++; p < end && isdigit((unsigned char)*p); p++, nd++, scale /= 10)
                frac += (*p - '0') * scale;
            if (nd == 0)
                return RC_EINVAL;
        }
    }
    int64_t zone;
    if (parse_zone(p, end, &zone))
        return RC_EINVAL;
    *ms += (((int64_t)hh * 60 + mi) * 60 + ss) * 1000 + frac - zone;
    return 0;
}

int rc_clicklog_parse_iso(const char *s, size_t len, int64_t *ms)
{
    if (!s || !ms)
        return RC_EINVAL;
    const char *p = s, *end = s + len;
    int y = digits(&p, end, 4), m, d;
    if (y < 0 || p >= end || *p++ != '-' || (m = digits(&p, end, 2)) < 1 || m > 12 || p >= end ||
        *p++ != '-' || (d = digits(&p, end, 2)) < 1 || d > days_in_month(y, m))
        return RC_EINVAL;
    int64_t v = days_from_civil(y, m, d) * 86400000;
    if (p < end) {
        if (*p != 'T' && *p != 't' && *p != ' ')
            return RC_EINVAL;
        if (parse_clock(p + 1, end, &v))
            return RC_EINVAL;
    }
    *ms = v;
    return 0;
}

/* ---- reading lines ---- */

static int reader_open(struct reader *r, const char *path, char *eb, size_t el)
{
    r->name = strcmp(path, "-") == 0 ? "stdin" : path;
    r->cap = RC_CLICKLOG_LINE_MAX + 2;
    if (!(r->buf = malloc(r->cap)))
        return rc_err(eb, el, RC_ENOMEM, "clicklog: out of memory");
    errno = 0;
    if (strcmp(path, "-") == 0) {
        int fd = dup(STDIN_FILENO);
        if (fd >= 0 && !(r->gz = gzdopen(fd, "rb")))
            close(fd);
    } else {
        r->gz = gzopen(path, "rb");
    }
    if (!r->gz)
        return rc_err(eb, el, errno == ENOENT ? RC_ENOENT : RC_EIO, "clicklog %s: %s", r->name,
                      errno ? strerror(errno) : "cannot open");
    gzbuffer(r->gz, 256 * 1024);
    return 0;
}

static void reader_close(struct reader *r)
{
    if (r->gz)
        gzclose(r->gz);
    free(r->buf);
}

/* Next line without its EOL into r->buf[0..*len). Returns 1, 0 at end of
 * input, RC_E2BIG for an over-long line (consumed up to its newline), RC_EIO
 * for a read or decompression error (errbuf says which). */
static int reader_line(struct reader *r, size_t *len, char *eb, size_t el)
{
    if (!gzgets(r->gz, r->buf, (int)r->cap)) {
        int zerr;
        const char *msg = gzerror(r->gz, &zerr);
        if (zerr == Z_OK)
            return 0;
        return rc_err(eb, el, RC_EIO, "clicklog %s: line %llu: %s", r->name,
                      (unsigned long long)r->lineno + 1, zerr == Z_ERRNO ? strerror(errno) : msg);
    }
    r->lineno++;
    size_t n = strlen(r->buf);
    if (n && r->buf[n - 1] == '\n') {
        n--;
    } else if (n == r->cap - 1) {
        int c;
        while ((c = gzgetc(r->gz)) != -1 && c != '\n')
            ;
        return RC_E2BIG;
    }
    if (n && r->buf[n - 1] == '\r')
        n--;
    r->buf[n] = '\0';
    *len = n;
    return 1;
}

/* ---- rows ---- */

__attribute__((format(printf, 3, 4))) static void malformed(struct loader *L, int reason,
                                                            const char *fmt, ...)
{
    L->log->skipped++;
    L->log->skipped_by_reason[reason]++;
    uint32_t max = L->o->max_report ? L->o->max_report : DEFAULT_REPORT;
    if (L->o->quiet || L->reported >= max)
        return;
    L->reported++;
    fprintf(stderr, "clicklog: %s:%llu: skipped (%s): ", L->rd.name,
            (unsigned long long)L->rd.lineno, reason_names[reason]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const char *find_sep(const char *p, const char *end, const char *sep, size_t seplen)
{
    if (seplen == 1)
        return memchr(p, sep[0], (size_t)(end - p));
    return memmem(p, (size_t)(end - p), sep, seplen);
}

static void trim(struct field *f, int keep_tab)
{
    while (f->n && (f->s[0] == ' ' || (!keep_tab && f->s[0] == '\t'))) {
        f->s++;
        f->n--;
    }
    while (f->n && (f->s[f->n - 1] == ' ' || (!keep_tab && f->s[f->n - 1] == '\t')))
        f->n--;
}

/* A field opening with '"' runs to the next lone '"' ("" is a quote), then to
 * the separator; it is unescaped in place. Returns where the field ends. */
static const char *quoted(char *p, const char *end, struct field *f)
{
    char *w = p, *q = p + 1;
    f->s = w;
    while (q < end) {
        if (*q == '"') {
            if (q + 1 < end && q[1] == '"') {
                *w++ = '"';
                q += 2;
                continue;
            }
            q++;
            break;
        }
        *w++ = *q++;
    }
    f->n = (size_t)(w - f->s);
    return q;
}

/* Splits s[0..len) into L->f; returns the number of fields (all of them, even
 * past MAX_FIELDS, where only the first MAX_FIELDS are kept). */
static int split(struct loader *L, char *s, size_t len)
{
    const char *end = s + len;
    char *p = s;
    int n = 0, keep_tab = strchr(L->sep, '\t') != NULL;
    for (;;) {
        struct field f = {p, 0};
        const char *from = p;
        if (p < end && *p == '"')
            from = quoted(p, end, &f);
        const char *nx = find_sep(from, end, L->sep, L->seplen);
        if (f.s == p && from == p)
            f.n = (size_t)((nx ? nx : end) - p);
        if (n < MAX_FIELDS) {
            trim(&f, keep_tab);
            L->f[n] = f;
        }
        n++;
        if (!nx)
            return n;
        p = (char *)nx + L->seplen;
    }
}

/* Parses a number in f (decimal, optional fraction) scaled to ms. */
static int parse_num_ms(const struct field *f, double scale, int64_t *ms)
{
    char tmp[64];
    if (f->n == 0 || f->n >= sizeof tmp)
        return RC_EINVAL;
    memcpy(tmp, f->s, f->n);
    tmp[f->n] = '\0';
    char *e;
    errno = 0;
    double v = strtod(tmp, &e);
    if (*e || errno || !isfinite(v) || v < 0 || v * scale > 9e15)
        return RC_EINVAL;
    *ms = (int64_t)llround(v * scale);
    return 0;
}

static int parse_time(const struct loader *L, const struct field *t, const struct field *off,
                      int64_t *ms)
{
    int rc;
    switch (L->o->time_unit) {
    case RC_TIME_MS:
        rc = parse_num_ms(t, 1, ms);
        break;
    case RC_TIME_ISO:
        rc = rc_clicklog_parse_iso(t->s, t->n, ms);
        break;
    default:
        rc = parse_num_ms(t, 1000, ms);
        break;
    }
    int64_t extra = 0;
    if (rc == 0 && off && (rc = parse_num_ms(off, 1, &extra)) == 0)
        *ms += extra;
    return rc == 0 && *ms >= 0 ? 0 : RC_EINVAL;
}

static int push_rec(struct loader *L, const rc_click_rec *r)
{
    rc_clicklog *log = L->log;
    if (log->n == L->cap) {
        size_t ncap = L->cap ? L->cap * 2 : 4096;
        rc_click_rec *nr = realloc(log->recs, ncap * sizeof(*nr));
        if (!nr)
            return RC_ENOMEM;
        log->recs = nr;
        L->cap = ncap;
    }
    log->recs[log->n++] = *r;
    return 0;
}

/* Interns the strings of one valid click and stores its record. */
static int add_click(struct loader *L, const struct field *v, int64_t ts)
{
    rc_clicklog *log = L->log;
    rc_click_rec r = {.ts_ms = ts};
    const struct field *user = v[C_USER].s ? &v[C_USER] : &v[C_SESSION];
    int rc = rc_dict_intern(log->users, user->s, user->n, &r.user, NULL);
    if (!rc)
        rc = rc_dict_intern(log->items, v[C_ITEM].s, v[C_ITEM].n, &r.item, NULL);
    if (!rc && v[C_CITY].s)
        rc = rc_dict_intern(log->cities, v[C_CITY].s, v[C_CITY].n, &r.city, NULL);
    if (!rc && v[C_CATE].s)
        rc = rc_dict_intern(log->cates, v[C_CATE].s, v[C_CATE].n, &r.cate, NULL);
    if (!rc && v[C_SESSION].s && L->sessions)
        rc = rc_dict_intern(L->sessions, v[C_SESSION].s, v[C_SESSION].n, &r.session, NULL);
    return rc ? rc : push_rec(L, &r);
}

/* Validates ids of a row: returns a reason or -1 when fine. */
static int check_ids(const struct field *v)
{
    static const int ids[] = {C_USER, C_ITEM, C_SESSION};
    for (size_t i = 0; i < RC_ARRAY_LEN(ids); i++) {
        if (!v[ids[i]].s)
            continue;
        if (v[ids[i]].n == 0)
            return RC_LOG_R_EMPTY_ID;
        if (v[ids[i]].n > RC_ID_MAX)
            return RC_LOG_R_TOO_LONG;
    }
    if ((v[C_CITY].s && v[C_CITY].n > RC_ATTR_MAX) || (v[C_CATE].s && v[C_CATE].n > RC_ATTR_MAX))
        return RC_LOG_R_TOO_LONG;
    return -1;
}

static int csv_row(struct loader *L, char *line, size_t len)
{
    int nf = split(L, line, len);
    if (L->ncols == 0) {
        L->ncols = nf;
        for (int c = 0; c < C_N; c++)
            if (L->col[c] == COL_LAST)
                L->col[c] = nf - 1;
    }
    int need = 0;
    for (int c = 0; c < C_N; c++)
        need = RC_MAX(need, L->col[c] + 1);
    if (nf != L->ncols || nf < need || nf > MAX_FIELDS) {
        malformed(L, RC_LOG_R_COLUMNS, "%d columns, expected %d", nf, L->ncols);
        return 0;
    }
    struct field v[C_N];
    for (int c = 0; c < C_N; c++)
        v[c] = L->col[c] >= 0 ? L->f[L->col[c]] : (struct field){NULL, 0};
    int reason = check_ids(v);
    if (reason >= 0) {
        malformed(L, reason, "%s", reason == RC_LOG_R_EMPTY_ID ? "empty id" : "field too long");
        return 0;
    }
    int64_t ts = (int64_t)L->row_no;
    if (v[C_TIME].s && parse_time(L, &v[C_TIME], v[C_TOFF].s ? &v[C_TOFF] : NULL, &ts)) {
        malformed(L, RC_LOG_R_BAD_TIME, "time '%.*s' is not %s", (int)RC_MIN(v[C_TIME].n, 40),
                  v[C_TIME].s,
                  L->o->time_unit == RC_TIME_ISO  ? "an ISO 8601 date/time"
                  : L->o->time_unit == RC_TIME_MS ? "milliseconds >= 0"
                                                  : "seconds >= 0");
        return 0;
    }
    return add_click(L, v, ts);
}

/* The profile slot of user u, growing the array (zeroed) as needed. */
static rc_click_profile *profile_of(struct loader *L, uint32_t u)
{
    rc_clicklog *log = L->log;
    if (u >= L->prof_cap) {
        uint32_t cap = RC_MAX(u + 1, L->prof_cap ? L->prof_cap * 2 : 1024);
        rc_click_profile *p = realloc(log->profiles, (size_t)cap * sizeof *p);
        if (!p)
            return NULL;
        memset(p + L->prof_cap, 0, (size_t)(cap - L->prof_cap) * sizeof *p);
        log->profiles = p;
        L->prof_cap = cap;
    }
    log->nprofiles = RC_MAX(log->nprofiles, u + 1);
    return &log->profiles[u];
}

/* Room for n tags of profile p: its slot when it fits, else a new one of 4, 8
 * or 16 at the pool's end (so a user never holds more than 28 slots). */
static int tag_room(struct loader *L, rc_click_profile *p, uint32_t n)
{
    rc_clicklog *log = L->log;
    if (n <= p->tag_cap)
        return 0;
    uint32_t cap = n <= 4 ? 4 : n <= 8 ? 8 : 16;
    if (log->ntag_ids + cap > L->tag_cap) {
        size_t nc = RC_MAX(L->tag_cap * 2, log->ntag_ids + cap + 4096);
        uint32_t *t = realloc(log->tag_ids, nc * sizeof *t);
        if (!t)
            return RC_ENOMEM;
        log->tag_ids = t;
        L->tag_cap = nc;
    }
    p->tag_off = (uint32_t)log->ntag_ids;
    p->tag_cap = (uint8_t)cap;
    log->ntag_ids += cap;
    return 0;
}

/* Keeps the device and tags of a JSONL event for its user (the last non-empty
 * ones win: later events overwrite). */
static int keep_profile(struct loader *L, uint32_t user, const rc_event *ev)
{
    rc_clicklog *log = L->log;
    uint32_t id, ids[RC_TAGS_MAX], n = 0;
    int rc;
    if (ev->device_len == 0 && ev->ntags == 0)
        return 0;
    if ((!log->devices && (rc = rc_dict_create(0, &log->devices, NULL, 0))) ||
        (!log->tags && (rc = rc_dict_create(0, &log->tags, NULL, 0))))
        return rc;
    rc_click_profile *p = profile_of(L, user);
    if (!p)
        return RC_ENOMEM;
    if (ev->device_len) {
        if ((rc = rc_dict_intern(log->devices, ev->device, ev->device_len, &id, NULL)))
            return rc;
        p->device = id + 1;
    }
    for (uint32_t i = 0; i < ev->ntags && i < RC_TAGS_MAX; i++) {
        if (ev->tag_len[i] == 0)
            continue; /* an empty string is no tag */
        if ((rc = rc_dict_intern(log->tags, ev->tags[i], ev->tag_len[i], &ids[n], NULL)))
            return rc;
        n++;
    }
    if (n == 0)
        return 0;
    if ((rc = tag_room(L, p, n)))
        return rc;
    memcpy(log->tag_ids + p->tag_off, ids, n * sizeof *ids);
    p->ntags = (uint8_t)n;
    return 0;
}

static int json_row(struct loader *L, const char *line, size_t len)
{
    char why[160];
    rc_event *ev = &L->ev;
    enum rc_event_reason r = rc_event_decode(line, len, ev, why, sizeof why);
    if (r != RC_EV_OK) {
        malformed(L, RC_LOG_R_BAD_EVENT, "%s: %s", rc_event_reason_name(r), why);
        return 0;
    }
    struct field v[C_N] = {
        [C_USER] = {ev->user, ev->user_len},
        [C_ITEM] = {ev->item, ev->item_len},
        [C_CITY] = {ev->city, ev->city_len},
        [C_CATE] = {ev->cate, ev->cate_len},
    };
    int rc = add_click(L, v, ev->ts_ms);
    return rc ? rc : keep_profile(L, L->log->recs[L->log->n - 1].user, ev);
}

/* ---- setup: format, separator, columns ---- */

/* A separator given by the user: "\\t" (backslash, t) and "tab" name a tab. */
static const char *user_sep(const char *sep)
{
    return strcmp(sep, "\\t") == 0 || strcmp(sep, "tab") == 0 ? "\t" : sep;
}

static void set_sep(struct loader *L, const char *sep)
{
    snprintf(L->sep, sizeof L->sep, "%s", sep);
    L->seplen = strlen(L->sep);
}

static const char *suffix_of(const char *path, char *tmp, size_t cap)
{
    snprintf(tmp, cap, "%s", path);
    size_t n = strlen(tmp);
    if (n > 3 && strcmp(tmp + n - 3, ".gz") == 0)
        tmp[n -= 3] = '\0';
    const char *dot = strrchr(tmp, '.');
    return dot && !strchr(dot, '/') ? dot : "";
}

/* The separator of a delimited line: the first of tab, "::", ";", ",", "|"
 * found in it (a single-column file gets ","). */
static const char *sniff_sep(const char *line)
{
    static const char *const cand[] = {"\t", "::", ";", ",", "|"};
    for (size_t i = 0; i < RC_ARRAY_LEN(cand); i++)
        if (strstr(line, cand[i]))
            return cand[i];
    return ",";
}

/* Decides format and separator from the options, the path, and the first line. */
static void decide_format(struct loader *L, const char *first)
{
    const rc_clicklog_opts *o = L->o;
    char tmp[512];
    const char *suf = suffix_of(o->path, tmp, sizeof tmp);
    L->fmt = o->format;
    if (L->fmt == RC_LOG_AUTO) {
        if (!strcasecmp(suf, ".jsonl") || !strcasecmp(suf, ".json") || !strcasecmp(suf, ".ndjson"))
            L->fmt = RC_LOG_JSONL;
        else if (!strcasecmp(suf, ".tsv"))
            L->fmt = RC_LOG_TSV;
        else if (!o->sep && first[strspn(first, " \t")] == '{')
            L->fmt = RC_LOG_JSONL;
        else
            L->fmt = RC_LOG_CSV;
    }
    if (o->sep)
        set_sep(L, user_sep(o->sep));
    else
        set_sep(L, L->fmt == RC_LOG_TSV ? "\t" : sniff_sep(first));
}

static int is_index(const char *s)
{
    return *s && strspn(s, "0123456789") == strlen(s) && strlen(s) < 6;
}

/* Header names compare exactly, else ignoring case, '_' and '-' (so that
 * "sessionId" finds "session_id"). */
static int name_eq(const char *spec, const struct field *f, int loose)
{
    size_t n = strlen(spec);
    if (!loose)
        return n == f->n && memcmp(spec, f->s, n) == 0;
    size_t i = 0, j = 0;
    for (;;) {
        while (i < n && (spec[i] == '_' || spec[i] == '-'))
            i++;
        while (j < f->n && (f->s[j] == '_' || f->s[j] == '-'))
            j++;
        if (i == n || j == f->n)
            return i == n && j == f->n;
        if (tolower((unsigned char)spec[i++]) != tolower((unsigned char)f->s[j++]))
            return 0;
    }
}

static int find_name(const struct loader *L, int nf, const char *spec)
{
    for (int loose = 0; loose < 2; loose++)
        for (int i = 0; i < RC_MIN(nf, MAX_FIELDS); i++)
            if (name_eq(spec, &L->f[i], loose))
                return i;
    return -1;
}

static const char *col_spec(const rc_clicklog_opts *o, int c)
{
    switch (c) {
    case C_USER:
        return o->col_user;
    case C_ITEM:
        return o->col_item;
    case C_TIME:
        return o->col_time;
    case C_TOFF:
        return o->col_time_offset;
    case C_SESSION:
        return o->col_session;
    case C_CITY:
        return o->col_city;
    default:
        return o->col_cate;
    }
}

/* Column indices from the options (names wait for the header). */
static int setup_columns(struct loader *L, char *eb, size_t el)
{
    const rc_clicklog_opts *o = L->o;
    int any = o->col_user || o->col_item || o->col_time;
    for (int c = 0; c < C_N; c++) {
        const char *s = col_spec(o, c);
        L->col[c] = COL_ABSENT;
        if (s && is_index(s))
            L->col[c] = atoi(s);
        else if (s && !*s)
            return rc_err(eb, el, RC_EINVAL, "clicklog: %s: empty column", col_flag[c]);
        else if (s)
            L->header_pending = 1; /* a name: the first row must name the columns */
    }
    if (!any) { /* user item ... time: MovieLens-like logs load with no flags */
        L->col[C_USER] = 0;
        L->col[C_ITEM] = 1;
        L->col[C_TIME] = COL_LAST;
    }
    if (!o->col_item && any)
        return rc_err(eb, el, RC_EINVAL, "clicklog: --item is required with a column mapping");
    if (!o->col_user && !o->col_session && any)
        return rc_err(eb, el, RC_EINVAL, "clicklog: --user or --session is required");
    if (o->col_time_offset && !o->col_time)
        return rc_err(eb, el, RC_EINVAL, "clicklog: --time-offset needs --time");
    if (o->header)
        L->header_pending = 1;
    return 0;
}

static int header_row(struct loader *L, char *line, size_t len, char *eb, size_t el)
{
    int nf = split(L, line, len);
    L->ncols = nf;
    L->header_pending = 0;
    for (int c = 0; c < C_N; c++) {
        const char *s = col_spec(L->o, c);
        if (!s || is_index(s)) {
            if (L->col[c] == COL_LAST)
                L->col[c] = nf - 1;
            continue;
        }
        if ((L->col[c] = find_name(L, nf, s)) < 0) {
            char names[256] = "";
            for (int i = 0, w = 0; i < RC_MIN(nf, MAX_FIELDS) && w < (int)sizeof names - 1; i++)
                w += snprintf(names + w, sizeof names - (size_t)w, "%s%.*s", i ? ", " : "",
                              (int)L->f[i].n, L->f[i].s);
            return rc_err(eb, el, RC_EINVAL, "clicklog %s: %s %s: no such column (header: %s)",
                          L->rd.name, col_flag[c], s, names);
        }
    }
    return 0;
}

/* ---- the item -> category side file ---- */

static int ml_genre(struct loader *L, int nf, struct field *cate, char *tmp, size_t cap)
{
    if (nf < ML_GENRES + 1 || nf > MAX_FIELDS)
        return RC_EINVAL;
    for (int g = 0; g < ML_GENRES; g++) {
        const struct field *f = &L->f[nf - ML_GENRES + g];
        if (f->n == 1 && f->s[0] == '1') {
            cate->n = (size_t)snprintf(tmp, cap, "%d", g);
            cate->s = tmp;
            return 0;
        }
    }
    return RC_EINVAL;
}

/* Reads the side file; item_cate[item] = category id for the log's items. */
static int read_item_cates(struct loader *L, uint32_t *item_cate, char *eb, size_t el)
{
    const rc_clicklog_opts *o = L->o;
    int ml = o->item_cates_format && strcmp(o->item_cates_format, "movielens") == 0;
    if (o->item_cates_format && !ml && strcmp(o->item_cates_format, "csv") != 0)
        return rc_err(eb, el, RC_EINVAL,
                      "clicklog: --item-cates-format: expected csv or movielens");
    struct reader rd = {0};
    int rc = reader_open(&rd, o->item_cates, eb, el);
    size_t len;
    uint64_t bad = 0;
    char tmp[16];
    L->seplen = 0;
    while (rc == 0 && (rc = reader_line(&rd, &len, eb, el)) != 0) {
        if (rc < 0 && rc != RC_E2BIG)
            break;
        if (rc == RC_E2BIG || len == 0) {
            bad += rc == RC_E2BIG;
            rc = 0;
            continue;
        }
        rc = 0;
        if (!L->seplen)
            set_sep(L, ml ? "|" : o->sep ? user_sep(o->sep) : sniff_sep(rd.buf));
        int nf = split(L, rd.buf, len);
        struct field cate = L->f[1];
        uint32_t item, id;
        if (nf < 2 || (ml && ml_genre(L, nf, &cate, tmp, sizeof tmp))) {
            bad++;
            continue;
        }
        /* Only the log's items matter; a header row names no item of it. */
        if (rc_dict_find(L->log->items, L->f[0].s, L->f[0].n, &item) || cate.n > RC_ATTR_MAX)
            continue;
        if ((rc = rc_dict_intern(L->log->cates, cate.s, cate.n, &id, NULL)) == 0)
            item_cate[item] = id;
    }
    if (rc == 0 && bad && !o->quiet)
        fprintf(stderr, "clicklog: %s: %llu unusable rows ignored\n", rd.name,
                (unsigned long long)bad);
    reader_close(&rd);
    return rc;
}

static int apply_item_cates(struct loader *L, char *eb, size_t el)
{
    rc_clicklog *log = L->log;
    uint32_t nitems = rc_dict_size(log->items);
    uint32_t *map = malloc(((size_t)nitems + 1) * sizeof(uint32_t));
    if (!map)
        return rc_err(eb, el, RC_ENOMEM, "clicklog: out of memory");
    memset(map, 0xff, ((size_t)nitems + 1) * sizeof(uint32_t));
    int rc = read_item_cates(L, map, eb, el);
    if (rc == 0) {
        for (size_t i = 0; i < log->n; i++)
            if (map[log->recs[i].item] != UINT32_MAX)
                log->recs[i].cate = map[log->recs[i].item];
        log->has_cate = 1;
    }
    free(map);
    return rc;
}

/* ---- sessions ---- */

struct skey {
    uint32_t grp, seq;
    int64_t ts;
};

struct sess {
    int64_t start;
    uint32_t first_seq; /* file position of its earliest click: tie-break */
    uint32_t beg, end;  /* range in the sorted keys */
};

static int cmp_key(const void *a, const void *b)
{
    const struct skey *x = a, *y = b;
    if (x->grp != y->grp)
        return x->grp < y->grp ? -1 : 1;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_sess(const void *a, const void *b)
{
    const struct sess *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

/* Cuts the sorted keys into sessions: a new one at a new group, or (by user)
 * when the gap since the previous click is over gap_ms — the daemon's rule. */
static struct sess *cut_sessions(const struct skey *k, size_t n, int by_col, int64_t gap,
                                 uint32_t *ns)
{
    size_t cap = 1024, m = 0;
    struct sess *s = malloc(cap * sizeof(*s));
    for (size_t i = 0; s && i < n; i++) {
        int cut = i == 0 || k[i].grp != k[i - 1].grp || (!by_col && k[i].ts - k[i - 1].ts > gap);
        if (!cut) {
            s[m - 1].end = (uint32_t)i + 1;
            continue;
        }
        if (m == cap) {
            struct sess *ns2 = realloc(s, (cap *= 2) * sizeof(*s));
            if (!ns2) {
                free(s);
                return NULL;
            }
            s = ns2;
        }
        s[m++] = (struct sess){k[i].ts, k[i].seq, (uint32_t)i, (uint32_t)i + 1};
    }
    *ns = (uint32_t)m;
    return s;
}

/* by_col: recs[].session holds session column ids (else users are cut by
 * gap_ms, 0 = the default). */
static int sessionize_log(rc_clicklog *log, int by_col, int64_t gap_ms, char *eb, size_t el)
{
    size_t n = log->n;
    int64_t gap = gap_ms > 0 ? gap_ms : DEFAULT_GAP_MS;
    struct skey *k = malloc((n ? n : 1) * sizeof(*k));
    rc_click_rec *out = malloc((n ? n : 1) * sizeof(*out));
    size_t *off = NULL;
    struct sess *s = NULL;
    uint32_t ns = 0;
    int rc = RC_ENOMEM;
    if (!k || !out)
        goto out_free;
    for (size_t i = 0; i < n; i++)
        k[i] = (struct skey){by_col ? log->recs[i].session : log->recs[i].user, (uint32_t)i,
                             log->recs[i].ts_ms};
    qsort(k, n, sizeof(*k), cmp_key);
    if (!(s = cut_sessions(k, n, by_col, gap, &ns)) || !(off = malloc((ns + 1) * sizeof(*off))))
        goto out_free;
    /* Several sessions starting at the same ms keep the file's order. */
    qsort(s, ns, sizeof(*s), cmp_sess);
    size_t w = 0;
    for (uint32_t j = 0; j < ns; j++) {
        off[j] = w;
        for (uint32_t i = s[j].beg; i < s[j].end; i++) {
            out[w] = log->recs[k[i].seq];
            out[w++].session = j;
        }
    }
    off[ns] = w;
    free(log->recs);
    log->recs = out;
    out = NULL;
    log->sess_off = off;
    log->nsessions = ns;
    rc = 0;
out_free:
    free(s);
    free(out);
    free(k);
    return rc ? rc_err(eb, el, rc, "clicklog: out of memory (%zu clicks)", n) : 0;
}

static int sessionize(struct loader *L, char *eb, size_t el)
{
    return sessionize_log(L->log, L->sessions != NULL, L->o->gap_ms, eb, el);
}

/* ---- load ---- */

static int create_dicts(rc_clicklog *log)
{
    uint32_t id;
    if (rc_dict_create(0, &log->users, NULL, 0) || rc_dict_create(0, &log->items, NULL, 0) ||
        rc_dict_create(0, &log->cities, NULL, 0) || rc_dict_create(0, &log->cates, NULL, 0))
        return RC_ENOMEM;
    /* id 0 = "" in cities and cates: the value of clicks without one. */
    if (rc_dict_intern(log->cities, "", 0, &id, NULL) ||
        rc_dict_intern(log->cates, "", 0, &id, NULL))
        return RC_ENOMEM;
    return 0;
}

/* One line, in whatever state the loader is in. */
static int on_line(struct loader *L, char *line, size_t len, char *eb, size_t el)
{
    if (len == 0 || line[strspn(line, " \t")] == '\0')
        return 0; /* blank lines are no rows */
    if (L->fmt == RC_LOG_AUTO)
        decide_format(L, line);
    if (L->fmt != RC_LOG_JSONL && L->header_pending)
        return header_row(L, line, len, eb, el);
    L->log->lines++;
    L->row_no++;
    int rc = L->fmt == RC_LOG_JSONL ? json_row(L, line, len) : csv_row(L, line, len);
    return rc ? rc_err(eb, el, rc, "clicklog %s: line %llu: %s", L->rd.name,
                       (unsigned long long)L->rd.lineno, rc_strerror(rc))
              : 0;
}

static int read_all(struct loader *L, char *eb, size_t el)
{
    size_t len;
    int rc;
    while ((rc = reader_line(&L->rd, &len, eb, el)) != 0) {
        if (rc == RC_E2BIG) {
            L->log->lines++;
            malformed(L, RC_LOG_R_TOO_LONG, "line over %d bytes", RC_CLICKLOG_LINE_MAX);
            continue;
        }
        if (rc < 0 || (rc = on_line(L, L->rd.buf, len, eb, el)) != 0)
            return rc;
    }
    return 0;
}

static void summary(const struct loader *L)
{
    const rc_clicklog *log = L->log;
    if (L->o->quiet)
        return;
    fprintf(stderr,
            "clicklog: %s: %llu rows, %zu clicks, %u users, %u items, %u sessions, "
            "%llu skipped",
            L->rd.name, (unsigned long long)log->lines, log->n, rc_dict_size(log->users),
            rc_dict_size(log->items), log->nsessions, (unsigned long long)log->skipped);
    for (int r = 0; r < RC_LOG_R_COUNT; r++)
        if (log->skipped_by_reason[r])
            fprintf(stderr, " %s=%llu", reason_names[r],
                    (unsigned long long)log->skipped_by_reason[r]);
    fputc('\n', stderr);
}

static int check_opts(const rc_clicklog_opts *o, char *eb, size_t el)
{
    if (!o || !o->path)
        return rc_err(eb, el, RC_EINVAL, "clicklog: --input is required");
    if ((unsigned)o->format > RC_LOG_TSV || (unsigned)o->time_unit > RC_TIME_ISO)
        return rc_err(eb, el, RC_EINVAL, "clicklog: bad format or time unit");
    if (o->sep && (!*o->sep || strlen(o->sep) >= 32))
        return rc_err(eb, el, RC_EINVAL, "clicklog: --sep: expected 1..31 bytes");
    if (o->gap_ms < 0)
        return rc_err(eb, el, RC_EINVAL, "clicklog: --gap-ms: expected >= 0");
    return 0;
}

int rc_clicklog_load(const rc_clicklog_opts *opts, rc_clicklog **out, char *eb, size_t el)
{
    if (!out)
        return rc_err(eb, el, RC_EINVAL, "clicklog: out is required");
    *out = NULL;
    int rc = check_opts(opts, eb, el);
    if (rc)
        return rc;
    struct loader *L = calloc(1, sizeof(*L));
    rc_clicklog *log = calloc(1, sizeof(*log));
    if (!L || !log) {
        rc = rc_err(eb, el, RC_ENOMEM, "clicklog: out of memory");
        goto out_free;
    }
    L->o = opts;
    L->log = log;
    L->fmt = RC_LOG_AUTO;
    log->has_city = opts->col_city != NULL;
    log->has_cate = opts->col_cate != NULL;
    if ((rc = create_dicts(log)) ||
        (opts->col_session && (rc = rc_dict_create(0, &L->sessions, NULL, 0)))) {
        rc = rc_err(eb, el, rc, "clicklog: out of memory");
        goto out_free;
    }
    if ((rc = setup_columns(L, eb, el)) || (rc = reader_open(&L->rd, opts->path, eb, el)) ||
        (rc = read_all(L, eb, el)))
        goto out_free;
    if (L->fmt == RC_LOG_JSONL)
        log->has_city = log->has_cate = 1;
    if ((opts->item_cates && (rc = apply_item_cates(L, eb, el))) || (rc = sessionize(L, eb, el)))
        goto out_free;
    summary(L);
    *out = log;
    log = NULL;
out_free:
    rc_clicklog_free(log);
    if (L) {
        reader_close(&L->rd);
        rc_dict_destroy(L->sessions);
        free(L);
    }
    return rc;
}

/* ---- logs built in memory ---- */

int rc_clicklog_create(size_t cap, rc_clicklog **out)
{
    if (!out)
        return RC_EINVAL;
    *out = NULL;
    rc_clicklog *log = calloc(1, sizeof *log);
    if (!log)
        return RC_ENOMEM;
    log->recs_cap = cap;
    log->recs = malloc((cap ? cap : 1) * sizeof *log->recs);
    log->has_city = log->has_cate = 1;
    if (!log->recs || create_dicts(log)) {
        rc_clicklog_free(log);
        return RC_ENOMEM;
    }
    *out = log;
    return 0;
}

int rc_clicklog_add(rc_clicklog *log, const char *user, size_t ulen, const char *item, size_t ilen,
                    const char *city, size_t clen, const char *cate, size_t klen, int64_t ts_ms)
{
    if (!log || !user || !ulen || !item || !ilen || (clen && !city) || (klen && !cate) ||
        log->sess_off)
        return RC_EINVAL;
    if (log->n >= log->recs_cap)
        return RC_E2BIG;
    rc_click_rec r = {.ts_ms = ts_ms};
    int rc = rc_dict_intern(log->users, user, ulen, &r.user, NULL);
    if (!rc)
        rc = rc_dict_intern(log->items, item, ilen, &r.item, NULL);
    if (!rc && clen)
        rc = rc_dict_intern(log->cities, city, clen, &r.city, NULL);
    if (!rc && klen)
        rc = rc_dict_intern(log->cates, cate, klen, &r.cate, NULL);
    if (rc)
        return rc;
    log->recs[log->n++] = r;
    return 0;
}

int rc_clicklog_sessionize(rc_clicklog *log, int64_t gap_ms, char *eb, size_t el)
{
    if (!log || gap_ms < 0 || log->sess_off)
        return rc_err(eb, el, RC_EINVAL, "clicklog: sessionize: %s",
                      !log         ? "no log"
                      : gap_ms < 0 ? "gap_ms < 0"
                                   : "already sessionized");
    return sessionize_log(log, 0, gap_ms, eb, el);
}

void rc_clicklog_free(rc_clicklog *log)
{
    if (!log)
        return;
    free(log->recs);
    free(log->sess_off);
    rc_dict_destroy(log->users);
    rc_dict_destroy(log->items);
    rc_dict_destroy(log->cities);
    rc_dict_destroy(log->cates);
    rc_dict_destroy(log->devices);
    rc_dict_destroy(log->tags);
    free(log->profiles);
    free(log->tag_ids);
    free(log);
}
