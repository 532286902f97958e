/* log — see include/recalld/log.h.
 *
 * A record's fields come from the caller's printf tail ("key=%s n=%d"). To
 * know where each value starts and ends whatever its conversions expand to,
 * the format is rewritten so that every conversion's output is framed by
 * marker bytes (MARK_NUM or MARK_STR ... MARK_END); the literal text of the
 * format then gives the keys and the separators, the framed text the values,
 * which are quoted and escaped here. A marker byte inside an argument can
 * only move a field boundary: every byte is escaped, the line stays valid. */
#include "recalld/log.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MARK_NUM  '\x1e' /* output of an integer or float conversion follows */
#define MARK_STR  '\x1d' /* output of any other conversion follows */
#define MARK_END  '\x1f'
#define RESERVE   48         /* room kept for ` truncated=N` / `,"truncated":N}` and "\n" */
#define RAW_MAX   (1u << 20) /* formatted kv tail kept at most */
#define KEY_MAX   40
#define SEEN_MAX  32 /* keys checked for repeats */
#define STACK_BUF 4096

/* Relaxed atomics: SIGHUP changes them on the loop thread while any thread logs. */
static int g_level = -1;
static int g_json;
static int g_journal = -1; /* -1: not checked yet */
static pthread_mutex_t g_write_mu = PTHREAD_MUTEX_INITIALIZER;

void rc_log_set_level(enum rc_log_level lvl)
{
    __atomic_store_n(&g_level, (int)lvl, __ATOMIC_RELAXED);
}
void rc_log_set_json(int json) { __atomic_store_n(&g_json, json, __ATOMIC_RELAXED); }

int rc_log_level_parse(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static int level(void)
{
    int g = __atomic_load_n(&g_level, __ATOMIC_RELAXED);
    if (g < 0) {
        int l = rc_log_level_parse(getenv("RECALLD_LOG_LEVEL"));
        g = l >= 0 ? l : RC_LOG_INFO;
        __atomic_store_n(&g_level, g, __ATOMIC_RELAXED);
    }
    return g;
}

/* systemd sets JOURNAL_STREAM=DEV:INO for the stream it connects to stdout and
 * stderr; a match with fd 2 means our lines go to the journal as they are. */
int rc_log_detect_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    int on = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
             (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    __atomic_store_n(&g_journal, on, __ATOMIC_RELAXED);
    return on;
}

static int journal(void)
{
    int j = __atomic_load_n(&g_journal, __ATOMIC_RELAXED);
    return j >= 0 ? j : rc_log_detect_journal();
}

/* ---- the format, framed ------------------------------------------------ */

/* Copies fmt to out with every conversion framed; -1 if out is too small. */
static int mark_format(const char *fmt, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = fmt; *p;) {
        if (o + 4 > cap)
            return -1;
        if (*p != '%' || p[1] == '%') {
            size_t k = *p == '%' ? 2 : 1;
            memcpy(out + o, p, k);
            o += k, p += k;
            continue;
        }
        const char *s = p++;
        p += strspn(p, "-+ #0'");
        p += strspn(p, "0123456789*");
        if (*p == '.')
            p += 1 + strspn(p + 1, "0123456789*");
        p += strspn(p, "hlLqjzt");
        if (!*p)
            return -1; /* a dangling '%': let vsnprintf see the format as it is */
        p++;
        size_t k = (size_t)(p - s);
        if (o + k + 3 > cap)
            return -1;
        out[o++] = strchr("diufFeEgG", p[-1]) ? MARK_NUM : MARK_STR;
        memcpy(out + o, s, k);
        o += k;
        out[o++] = MARK_END;
    }
    out[o] = '\0';
    return 0;
}

/* ---- the line ---------------------------------------------------------- */

typedef struct line {
    char *p;
    size_t len, cap;
    int json, heap;
    int stopped;      /* a value was cut or left out: no more fields */
    size_t unwritten; /* bytes of the record not written, once stopped */
    int nseen;
    char seen[SEEN_MAX][KEY_MAX + 4];
} line;

/* Appends n bytes; -1 when that would pass RC_LOG_LINE_MAX or memory is short. */
static int lb_put(line *l, const char *s, size_t n)
{
    if (l->len + n > RC_LOG_LINE_MAX)
        return -1;
    if (l->len + n > l->cap) {
        size_t cap = l->cap * 2 > l->len + n ? l->cap * 2 : l->len + n;
        cap = cap < RC_LOG_LINE_MAX ? cap : RC_LOG_LINE_MAX;
        char *p = l->heap ? realloc(l->p, cap) : malloc(cap);
        if (!p)
            return -1;
        if (!l->heap)
            memcpy(p, l->p, l->len);
        l->p = p, l->cap = cap, l->heap = 1;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
    return 0;
}

static size_t limit(void) { return RC_LOG_LINE_MAX - RESERVE; }

/* Length of the valid UTF-8 sequence at s (1..4), 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t k;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2;
    else if (c >= 0xe0 && c <= 0xef)
        k = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        k = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (n < k || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return k;
}

/* One unit of escaped output for the bytes at s into u (<= 6 bytes); *used:
 * input bytes it stands for. Shared by logfmt and JSON (their quoted strings
 * take the same escapes). */
static size_t escape_unit(const unsigned char *s, size_t n, char *u, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    const char *short_esc = NULL;
    unsigned char c = s[0];
    size_t k;
    *used = 1;
    if (c == '"')
        short_esc = "\\\"";
    else if (c == '\\')
        short_esc = "\\\\";
    else if (c == '\n')
        short_esc = "\\n";
    else if (c == '\r')
        short_esc = "\\r";
    else if (c == '\t')
        short_esc = "\\t";
    if (short_esc) {
        memcpy(u, short_esc, 2);
        return 2;
    }
    if (c < 0x20 || c == 0x7f) {
        memcpy(u, "\\u00", 4);
        u[4] = hex[c >> 4];
        u[5] = hex[c & 15];
        return 6;
    }
    if ((k = utf8_len(s, n)) == 0) { /* not UTF-8: the replacement character */
        memcpy(u, "\\ufffd", 6);
        return 6;
    }
    memcpy(u, s, k);
    *used = k;
    return k;
}

/* Appends v[0..n) escaped while the line stays within lim; returns the bytes
 * of v consumed (n when all of it). A unit is written whole or not at all. */
static size_t put_escaped(line *l, const char *v, size_t n, size_t lim)
{
    size_t i = 0, used, k;
    char u[8];
    while (i < n) {
        size_t run = 0; /* bytes that need no escape, written at once */
        while (i + run < n && (unsigned char)v[i + run] >= 0x20 &&
               (unsigned char)v[i + run] < 0x7f && v[i + run] != '"' && v[i + run] != '\\')
            run++;
        if (run) {
            if (l->len + run > lim)
                run = lim > l->len ? lim - l->len : 0;
            if (!run || lb_put(l, v + i, run))
                return i;
            i += run;
            continue;
        }
        k = escape_unit((const unsigned char *)v + i, n - i, u, &used);
        if (l->len + k > lim || lb_put(l, u, k))
            return i;
        i += used;
    }
    return n;
}

/* A quoted string; cut with RC_LOG_CUT_MARK when it does not fit. Returns the
 * bytes of v not written. */
static size_t put_quoted(line *l, const char *v, size_t n)
{
    size_t start = l->len, done;
    if (lb_put(l, "\"", 1))
        return n;
    done = put_escaped(l, v, n, limit() - 1);
    if (done < n) { /* again, leaving room for the mark */
        l->len = start + 1;
        done = put_escaped(l, v, n, limit() - 1 - strlen(RC_LOG_CUT_MARK));
        lb_put(l, RC_LOG_CUT_MARK, strlen(RC_LOG_CUT_MARK));
    }
    lb_put(l, "\"", 1);
    return n - done;
}

static int needs_quote(const char *v, size_t n)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\')
            return 1;
    }
    return 0;
}

/* A JSON number as the grammar of RFC 8259 has it (no NaN, Inf, '+', hex). */
static int json_number(const char *v, size_t n)
{
    size_t i = 0, d;
    if (i < n && v[i] == '-')
        i++;
    if (i < n && v[i] == '0')
        i++;
    else {
        for (d = i; i < n && v[i] >= '0' && v[i] <= '9'; i++)
            ;
        if (i == d)
            return 0;
    }
    if (i < n && v[i] == '.') {
        for (d = ++i; i < n && v[i] >= '0' && v[i] <= '9'; i++)
            ;
        if (i == d)
            return 0;
    }
    if (i < n && (v[i] == 'e' || v[i] == 'E')) {
        if (++i < n && (v[i] == '+' || v[i] == '-'))
            i++;
        for (d = i; i < n && v[i] >= '0' && v[i] <= '9'; i++)
            ;
        if (i == d)
            return 0;
    }
    return i == n;
}

/* A whole JSON object or array (no trailing bytes, no repeated keys). */
static int json_embeddable(const char *v, size_t n)
{
    json_error_t je;
    if (n < 2 || (v[0] != '{' && v[0] != '['))
        return 0;
    json_t *j = json_loadb(v, n, JSON_REJECT_DUPLICATES, &je);
    json_decref(j);
    return j != NULL;
}

enum { V_TEXT, V_QUOTED, V_NUM };

/* Writes one value; returns the bytes of v not written (0: all of it). */
static size_t put_value(line *l, const char *v, size_t n, int kind)
{
    if (kind == V_NUM || (kind == V_TEXT && !l->json && !needs_quote(v, n))) {
        if (l->len + n <= limit() && !lb_put(l, v, n))
            return 0;
    } else if (kind == V_TEXT && l->json && l->len + n <= limit() && json_embeddable(v, n)) {
        size_t start = l->len;
        if (lb_put(l, v, n) == 0) {
            for (size_t i = start; i < l->len; i++) /* whitespace outside strings */
                if (l->p[i] == '\n' || l->p[i] == '\r' || l->p[i] == '\t')
                    l->p[i] = ' ';
            return 0;
        }
    }
    return put_quoted(l, v, n);
}

static int key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-' || c == '/' || c == ':';
}

static int key_seen(line *l, const char *k)
{
    static const char *reserved[] = {"ts", "level", "mod", "msg", "truncated"};
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (strcmp(k, reserved[i]) == 0)
            return 1;
    for (int i = 0; i < l->nseen; i++)
        if (strcmp(k, l->seen[i]) == 0)
            return 1;
    return 0;
}

/* The key as written: unsafe bytes become '_', at most KEY_MAX bytes, a
 * suffix _2, _3... when it repeats. */
static void make_key(line *l, const char *k, size_t n, char *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n && m < KEY_MAX; i++)
        out[m++] = key_char(k[i]) ? k[i] : '_';
    if (m == 0)
        out[m++] = '_';
    out[m] = '\0';
    for (int s = 2; key_seen(l, out) && s < 100; s++)
        snprintf(out + m, 4, "_%d", s);
    if (l->nseen < SEEN_MAX)
        memcpy(l->seen[l->nseen++], out, strlen(out) + 1);
}

/* Writes key and value. Returns 1 when the record stops here (the value was
 * cut or there was no room left for it), its unwritten bytes counted. */
static int put_field(line *l, const char *key, const char *v, size_t n, int kind)
{
    char k[KEY_MAX + 8];
    size_t start = l->len, cut;
    if (l->json)
        snprintf(k, sizeof k, ",\"%s\":", key);
    else
        snprintf(k, sizeof k, " %s=", key);
    /* the key, with room to say at least "" and the mark after it */
    if (l->len + strlen(k) + 2 + strlen(RC_LOG_CUT_MARK) > limit() || lb_put(l, k, strlen(k))) {
        l->len = start;
        cut = n;
    } else {
        cut = put_value(l, v, n, kind);
    }
    if (cut == 0)
        return 0;
    l->stopped = 1;
    l->unwritten += cut;
    return 1;
}

/* ---- the fields of the kv tail ----------------------------------------- */

/* Bytes of raw[i..n) that are neither markers nor separators' spaces: what a
 * stopped record leaves unwritten. */
static size_t payload(const char *raw, size_t i, size_t n)
{
    size_t c = 0;
    for (; i < n; i++)
        c += raw[i] != MARK_NUM && raw[i] != MARK_STR && raw[i] != MARK_END;
    return c;
}

/* Splits the framed text into fields and writes them. The value of a field
 * is compacted in place over raw (its key is copied out first). */
static void put_fields(line *l, char *raw, size_t n)
{
    size_t i = 0;
    while (i < n && !l->stopped) {
        char key[KEY_MAX + 4];
        size_t ks, vlen = 0, lits = 0;
        int quoted = 0, forced = 0, nmarks = 0, num = 0;
        while (i < n && raw[i] == ' ')
            i++;
        if (i >= n)
            break;
        for (ks = i; i < n && raw[i] != '=' && raw[i] != ' ' && raw[i] != MARK_NUM &&
                     raw[i] != MARK_STR && raw[i] != MARK_END;
             i++)
            ;
        if (i < n && raw[i] == '=' && i > ks) {
            make_key(l, raw + ks, i - ks, key);
            i++;
        } else { /* a word without key=: its own field "_" */
            make_key(l, "_", 1, key);
            i = ks;
        }
        char *val = raw + ks;
        while (i < n) {
            char c = raw[i];
            if (c == MARK_NUM || c == MARK_STR) {
                nmarks++;
                num = c == MARK_NUM;
                for (i++; i < n && raw[i] != MARK_END; i++)
                    val[vlen++] = raw[i];
                i += i < n;
                continue;
            }
            if (c == MARK_END) {
                i++;
            } else if (c == '"') {
                quoted = !quoted, forced = 1, i++;
            } else if (c == ' ' && !quoted) {
                break;
            } else if (c == '\\' && quoted && i + 1 < n && raw[i + 1] == '"') {
                val[vlen++] = '"', lits++, i += 2;
            } else {
                val[vlen++] = c, lits++, i++;
            }
        }
        int kind = forced                                                      ? V_QUOTED
                   : nmarks == 1 && lits == 0 && num && json_number(val, vlen) ? V_NUM
                                                                               : V_TEXT;
        if (put_field(l, key, val, vlen, kind))
            l->unwritten += payload(raw, i, n);
    }
}

/* ---- the record -------------------------------------------------------- */

static void put_header(line *l, enum rc_log_level lvl, const char *mod, const char *msg)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    static const int prio[] = {7, 6, 4, 3};
    char head[96], tbuf[40];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof tbuf - n, ".%03ldZ", ts.tv_nsec / 1000000);
    n = 0;
    if (journal())
        n = (size_t)snprintf(head, sizeof head, "<%d>", prio[lvl]);
    if (l->json)
        snprintf(head + n, sizeof head - n, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":", tbuf,
                 names[lvl]);
    else
        snprintf(head + n, sizeof head - n, "ts=%s level=%s mod=", tbuf, names[lvl]);
    lb_put(l, head, strlen(head));
    mod = mod ? mod : "";
    msg = msg ? msg : "";
    if (put_value(l, mod, strlen(mod), V_TEXT) > 0)
        l->stopped = 1;
    else
        put_field(l, "msg", msg, strlen(msg), V_QUOTED);
}

static void put_trailer(line *l, size_t raw_lost)
{
    char t[RESERVE];
    int n = 0;
    if (l->stopped || raw_lost)
        n = snprintf(t, sizeof t, l->json ? ",\"truncated\":%zu" : " truncated=%zu",
                     l->unwritten + raw_lost);
    n += snprintf(t + n, sizeof t - (size_t)n, "%s\n", l->json ? "}" : "");
    /* limit() keeps RESERVE free: this cannot fail for length */
    lb_put(l, t, (size_t)n);
}

static void write_line(const char *p, size_t n)
{
    pthread_mutex_lock(&g_write_mu);
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* stderr is gone: nothing else to tell it to */
        p += w, n -= (size_t)w;
    }
    pthread_mutex_unlock(&g_write_mu);
}

/* Formats the kv tail with framed conversions into *raw (stack or heap);
 * returns its length, and in *lost the bytes past RAW_MAX. */
static size_t format_kv(char **raw, size_t cap, size_t *lost, const char *kvfmt, va_list ap)
{
    char fstack[512], *mfmt = fstack;
    size_t fcap = strlen(kvfmt) * 3 + 4;
    va_list ap2;
    int n;
    *lost = 0;
    if (fcap > sizeof fstack && !(mfmt = malloc(fcap)))
        return 0;
    if (mark_format(kvfmt, mfmt, fcap) != 0)
        snprintf(mfmt, fcap, "%s", kvfmt); /* unframed: values end at spaces */
    va_copy(ap2, ap);
    n = vsnprintf(*raw, cap, mfmt, ap);
    if (n >= 0 && (size_t)n >= cap) {
        size_t want = (size_t)n + 1 < RAW_MAX ? (size_t)n + 1 : RAW_MAX;
        char *h = malloc(want);
        if (h) {
            vsnprintf(h, want, mfmt, ap2);
            *raw = h, cap = want;
        }
        *lost = (size_t)n - (cap - 1);
        n = (int)(cap - 1);
    }
    va_end(ap2);
    if (mfmt != fstack)
        free(mfmt);
    return n > 0 ? (size_t)n : 0;
}

void rc_log(enum rc_log_level lvl, const char *mod, const char *msg, const char *kvfmt, ...)
{
    if ((int)lvl < level() || lvl >= RC_LOG_OFF || (int)lvl < 0)
        return;
    char lstack[STACK_BUF], rstack[STACK_BUF], *raw = rstack;
    line l = {.p = lstack, .cap = sizeof lstack};
    size_t n = 0, lost = 0;
    l.json = __atomic_load_n(&g_json, __ATOMIC_RELAXED);
    if (kvfmt) {
        va_list ap;
        va_start(ap, kvfmt);
        n = format_kv(&raw, sizeof rstack, &lost, kvfmt, ap);
        va_end(ap);
    }
    put_header(&l, lvl, mod, msg);
    if (l.stopped)
        l.unwritten += payload(raw, 0, n);
    else
        put_fields(&l, raw, n);
    put_trailer(&l, lost);
    write_line(l.p, l.len);
    if (raw != rstack)
        free(raw);
    if (l.heap)
        free(l.p);
}
