/* Log tests: stderr is captured and every line is parsed back, logfmt with a
 * strict tokenizer below, JSON with jansson (duplicate keys refused). */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recalld/buf.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/log.h"
#include "test.h"

/* ---- capture ----------------------------------------------------------- */

typedef struct capture {
    int fd, saved;
} capture;

/* fd 2 goes to an unlinked temporary file until cap_end. */
static void cap_start(capture *c)
{
    char path[] = "/tmp/rc_test_log_XXXXXX";
    c->fd = mkstemp(path);
    ASSERT(c->fd >= 0);
    unlink(path);
    c->saved = dup(2);
    ASSERT(c->saved >= 0);
    ASSERT(dup2(c->fd, 2) == 2);
    rc_log_detect_journal();
}

/* Restores stderr; returns what was written (caller frees). */
static char *cap_end(capture *c)
{
    struct stat st;
    ASSERT(dup2(c->saved, 2) == 2);
    close(c->saved);
    ASSERT(fstat(c->fd, &st) == 0);
    char *text = malloc((size_t)st.st_size + 1);
    ASSERT(text);
    ASSERT(pread(c->fd, text, (size_t)st.st_size, 0) == st.st_size);
    text[st.st_size] = '\0';
    close(c->fd);
    return text;
}

/* ---- a strict logfmt tokenizer ----------------------------------------- */

#define LF_MAX 64

typedef struct lf_line {
    int n;
    char *key[LF_MAX];
    char *val[LF_MAX];
    size_t vlen[LF_MAX];
    int quoted[LF_MAX];
} lf_line;

static void put_utf8(char *out, size_t *o, unsigned cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xc0 | cp >> 6);
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*o)++] = (char)(0xe0 | cp >> 12);
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    }
}

/* Parses one line (without its newline): key=value separated by one space;
 * a key is [A-Za-z0-9_.:/-]+; a bare value is printable ASCII without space,
 * '"', '=' or '\'; a quoted one takes \" \\ \n \r \t \uXXXX and nothing else
 * after a backslash, and no raw control byte. 0, or -1 with why. */
static int lf_parse(const char *s, lf_line *out, char *why, size_t cap)
{
    const char *p = s;
    out->n = 0;
    while (*p) {
        const char *k = p;
        if (out->n == LF_MAX)
            return snprintf(why, cap, "too many fields"), -1;
        while (*p && (isalnum((unsigned char)*p) || strchr("_.:/-", *p)))
            p++;
        if (p == k || *p != '=')
            return snprintf(why, cap, "bad key at byte %td", k - s), -1;
        char *key = strndup(k, (size_t)(p - k)), *val = malloc(strlen(p) + 1);
        size_t o = 0;
        int q = *++p == '"';
        if (q) {
            for (p++; *p && *p != '"'; p++) {
                if ((unsigned char)*p < 0x20)
                    return snprintf(why, cap, "raw control byte at %td", p - s), -1;
                if (*p != '\\') {
                    val[o++] = *p;
                    continue;
                }
                p++;
                if (*p == '"' || *p == '\\')
                    val[o++] = *p;
                else if (*p == 'n')
                    val[o++] = '\n';
                else if (*p == 'r')
                    val[o++] = '\r';
                else if (*p == 't')
                    val[o++] = '\t';
                else if (*p == 'u' && strspn(p + 1, "0123456789abcdef") >= 4) {
                    char hex[5] = {p[1], p[2], p[3], p[4], 0};
                    put_utf8(val, &o, (unsigned)strtoul(hex, NULL, 16));
                    p += 4;
                } else
                    return snprintf(why, cap, "bad escape at %td", p - s), -1;
            }
            if (*p != '"')
                return snprintf(why, cap, "unterminated quote"), -1;
            p++;
        } else {
            for (; *p && *p != ' '; p++) {
                unsigned char c = (unsigned char)*p;
                if (c < 0x21 || c > 0x7e || c == '"' || c == '=' || c == '\\')
                    return snprintf(why, cap, "bad byte 0x%02x in a bare value at %td", c, p - s),
                           -1;
                val[o++] = *p;
            }
            if (o == 0)
                return snprintf(why, cap, "empty bare value at %td", p - s), -1;
        }
        val[o] = '\0';
        out->key[out->n] = key;
        out->val[out->n] = val;
        out->vlen[out->n] = o;
        out->quoted[out->n++] = q;
        if (*p == ' ' && p[1] != '\0' && p[1] != ' ')
            p++;
        else if (*p)
            return snprintf(why, cap, "expected one space at %td", p - s), -1;
    }
    return 0;
}

static void lf_free(lf_line *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->key[i]), free(l->val[i]);
    l->n = 0;
}

static const char *lf_get(const lf_line *l, const char *key)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->key[i], key) == 0)
            return l->val[i];
    return NULL;
}

/* Splits text into lines (in place); every one must end with '\n'. */
static int split_lines(char *text, char **lines, int max)
{
    int n = 0;
    for (char *p = text; *p; n++) {
        char *nl = strchr(p, '\n');
        if (!nl)
            RC__FAIL("line without a newline: %.80s", p);
        ASSERT(n < max);
        *nl = '\0';
        lines[n] = p;
        p = nl + 1;
    }
    return n;
}

static void lf_must_parse(const char *line, lf_line *out)
{
    char why[128];
    if (lf_parse(line, out, why, sizeof why) != 0)
        RC__FAIL("not logfmt (%s): %.300s", why, line);
}

static json_t *json_must_parse(const char *line)
{
    json_error_t je;
    json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &je);
    if (!j || !json_is_object(j))
        RC__FAIL("not one JSON object (%d:%d %s): %.300s", je.line, je.column, je.text, line);
    return j;
}

static const char *nasty = "two words \"quoted\" a=b back\\slash\nnew\tline \x01 caf\xc3\xa9 end";
/* nasty as it reads back: every byte kept (\x01 as \u0001) */

/* ---- cases ------------------------------------------------------------- */

TEST(log_logfmt_values_quoted_and_escaped)
{
    capture c;
    char *lines[16], *text;
    lf_line f;
    rc_log_set_level(RC_LOG_DEBUG);
    cap_start(&c);
    rc_log_info("mod one", "msg with \"quotes\"", "a=%s b=%d empty=%s path=%s err=\"%s\"", nasty,
                42, "", "/tmp/x y", "boom");
    rc_log_warn("m", "bad utf8", "v=%s bare=%s", "x\xff\xfey", "plain");
    rc_log_error("m", "no kv", NULL);
    rc_log_debug("m", "literal word", "word %s=%d", "k", 3);
    text = cap_end(&c);
    ASSERT_EQ(split_lines(text, lines, 16), 4);

    lf_must_parse(lines[0], &f);
    ASSERT_STREQ(f.key[0], "ts");
    ASSERT_STREQ(lf_get(&f, "level"), "info");
    ASSERT_STREQ(lf_get(&f, "mod"), "mod one");
    ASSERT_STREQ(lf_get(&f, "msg"), "msg with \"quotes\"");
    ASSERT_STREQ(lf_get(&f, "a"), nasty);
    ASSERT_STREQ(lf_get(&f, "b"), "42");
    ASSERT_STREQ(lf_get(&f, "empty"), "");
    ASSERT_STREQ(lf_get(&f, "path"), "/tmp/x y");
    ASSERT_STREQ(lf_get(&f, "err"), "boom");
    ASSERT(f.quoted[f.n - 1]); /* err=\"%s\": quoted in the format, stays quoted */
    ASSERT(!f.quoted[5]);      /* b=42 bare */
    ASSERT(strstr(lines[0], " b=42 "));
    lf_free(&f);

    lf_must_parse(lines[1], &f);
    ASSERT_STREQ(lf_get(&f, "v"), "x\xef\xbf\xbd\xef\xbf\xbdy"); /* U+FFFD twice */
    ASSERT_STREQ(lf_get(&f, "bare"), "plain");
    ASSERT_STREQ(lf_get(&f, "level"), "warn");
    lf_free(&f);

    lf_must_parse(lines[2], &f);
    ASSERT_EQ(f.n, 4);
    ASSERT_STREQ(lf_get(&f, "level"), "error");
    lf_free(&f);

    lf_must_parse(lines[3], &f); /* a word without '=' and a key made by %s */
    ASSERT_STREQ(lf_get(&f, "_"), "word");
    ASSERT_STREQ(lf_get(&f, "__2"), "k=3"); /* "_" taken: suffix _2 */
    lf_free(&f);
    free(text);
}

TEST(log_json_fields_are_members)
{
    capture c;
    char *lines[8], *text;
    rc_log_set_level(RC_LOG_DEBUG);
    rc_log_set_json(1);
    cap_start(&c);
    rc_log_info("consumer", "assigned \"x\"",
                "partitions=%d ratio=%.2f a=%s id=%s obj={%s} "
                "msg=%s msg=%s nan=%f neg=%d",
                4, 0.5, nasty, "007", "\"k\":[1,2],\"s\":\"t\"", "dup1", "dup2", (double)NAN, -3);
    rc_log_info("m", "not json", "obj={%s}", "\"k\":");
    text = cap_end(&c);
    ASSERT_EQ(split_lines(text, lines, 8), 2);

    json_t *j = json_must_parse(lines[0]);
    ASSERT_STREQ(json_string_value(json_object_get(j, "level")), "info");
    ASSERT_STREQ(json_string_value(json_object_get(j, "mod")), "consumer");
    ASSERT_STREQ(json_string_value(json_object_get(j, "msg")), "assigned \"x\"");
    ASSERT(json_object_get(j, "kv") == NULL);
    ASSERT(json_is_integer(json_object_get(j, "partitions")));
    ASSERT_EQ(json_integer_value(json_object_get(j, "partitions")), 4);
    ASSERT(json_is_real(json_object_get(j, "ratio")));
    ASSERT_NEAR(json_real_value(json_object_get(j, "ratio")), 0.5, 0);
    ASSERT_STREQ(json_string_value(json_object_get(j, "a")), nasty);
    ASSERT_STREQ(json_string_value(json_object_get(j, "id")), "007"); /* %s stays a string */
    json_t *o = json_object_get(j, "obj");
    ASSERT(json_is_object(o));
    ASSERT_EQ(json_array_size(json_object_get(o, "k")), 2);
    ASSERT_STREQ(json_string_value(json_object_get(j, "msg_2")), "dup1");
    ASSERT_STREQ(json_string_value(json_object_get(j, "msg_3")), "dup2");
    ASSERT(json_is_string(json_object_get(j, "nan")));
    ASSERT_EQ(json_integer_value(json_object_get(j, "neg")), -3);
    json_decref(j);

    j = json_must_parse(lines[1]);
    ASSERT_STREQ(json_string_value(json_object_get(j, "obj")), "{\"k\":}");
    json_decref(j);
    free(text);
}

/* A value much longer than the old 1,400-byte cut goes out whole. */
TEST(log_long_record_whole)
{
    capture c;
    char *lines[4], *text, *big = malloc(20001);
    lf_line f;
    ASSERT(big);
    for (int i = 0; i < 20000; i++)
        big[i] = "ab \"=\\"[i % 6];
    big[20000] = '\0';
    cap_start(&c);
    rc_log_info("m", "long", "v=%s after=%d", big, 7);
    rc_log_set_json(1);
    rc_log_info("m", "long", "v=%s after=%d", big, 7);
    text = cap_end(&c);
    ASSERT_EQ(split_lines(text, lines, 4), 2);
    lf_must_parse(lines[0], &f);
    ASSERT_STREQ(lf_get(&f, "v"), big);
    ASSERT_STREQ(lf_get(&f, "after"), "7");
    ASSERT(lf_get(&f, "truncated") == NULL);
    lf_free(&f);
    json_t *j = json_must_parse(lines[1]);
    ASSERT_STREQ(json_string_value(json_object_get(j, "v")), big);
    ASSERT_EQ(json_integer_value(json_object_get(j, "after")), 7);
    json_decref(j);
    free(text);
    free(big);
}

/* Past RC_LOG_LINE_MAX: cut between escapes, marked, the rest counted. */
static void check_cut(int json, char unit)
{
    capture c;
    char *lines[4], *text;
    size_t n = 3 * RC_LOG_LINE_MAX;
    char *big = malloc(n + 1);
    ASSERT(big);
    memset(big, unit, n);
    big[n] = '\0';
    rc_log_set_json(json);
    cap_start(&c);
    rc_log_info("m", "enormous", "first=%d v=%s next=%d", 1, big, 5);
    text = cap_end(&c);
    ASSERT_EQ(split_lines(text, lines, 4), 1);
    ASSERT_LE(strlen(lines[0]) + 1, RC_LOG_LINE_MAX);
    ASSERT_GE(strlen(lines[0]) + 1, RC_LOG_LINE_MAX - 64); /* the budget was used */
    const char *v;
    size_t vlen;
    unsigned long long cut;
    lf_line f = {0};
    json_t *j = NULL;
    if (json) {
        j = json_must_parse(lines[0]);
        v = json_string_value(json_object_get(j, "v"));
        vlen = json_string_length(json_object_get(j, "v"));
        cut = (unsigned long long)json_integer_value(json_object_get(j, "truncated"));
        ASSERT(json_object_get(j, "next") == NULL);
        ASSERT_EQ(json_integer_value(json_object_get(j, "first")), 1);
    } else {
        lf_must_parse(lines[0], &f);
        v = lf_get(&f, "v");
        vlen = strlen(v);
        ASSERT(lf_get(&f, "truncated"));
        cut = strtoull(lf_get(&f, "truncated"), NULL, 10);
        ASSERT(lf_get(&f, "next") == NULL);
        ASSERT_STREQ(lf_get(&f, "first"), "1");
    }
    size_t mark = strlen(RC_LOG_CUT_MARK);
    ASSERT_GT(vlen, mark);
    ASSERT(memcmp(v + vlen - mark, RC_LOG_CUT_MARK, mark) == 0);
    for (size_t i = 0; i < vlen - mark; i++)
        ASSERT_EQ(v[i], unit);
    /* what was not written: the rest of v, then " next=5" */
    ASSERT_EQ(cut, n - (vlen - mark) + strlen(" next=5"));
    json_decref(j);
    lf_free(&f);
    free(text);
    free(big);
}

TEST(log_enormous_record_cut_with_marker)
{
    check_cut(0, 'x');
    check_cut(0, '"'); /* every byte an escape: the cut never splits one */
    check_cut(1, 'x');
    check_cut(1, '\n');
}

/* The daemon's periodic stats record: the whole engine stats object. */
TEST(log_stats_record_parses_back)
{
    rc_config cfg;
    rc_engine *e = NULL;
    char err[256], *lines[4], *text;
    rc_buf b;
    capture c;
    lf_line f;
    rc_config_defaults(&cfg);
    cfg.dim = 16;
    cfg.max_items = 1024;
    cfg.max_users = 256;
    ASSERT_EQ(rc_engine_create(&cfg, NULL, NULL, NULL, &e, err, sizeof err), 0);
    rc_buf_init(&b, 0);
    rc_engine_stats_json(e, &b);
    ASSERT_GT(b.len, 1400); /* what the old line cut */
    cap_start(&c);
    rc_log_info("recalld", "stats", "json={%s}", b.data);
    rc_log_set_json(1);
    rc_log_info("recalld", "stats", "json={%s}", b.data);
    text = cap_end(&c);
    ASSERT_EQ(split_lines(text, lines, 4), 2);
    lf_must_parse(lines[0], &f);
    json_t *s = json_must_parse(lf_get(&f, "json"));
    ASSERT(json_object_get(s, "events"));
    json_decref(s);
    lf_free(&f);
    json_t *j = json_must_parse(lines[1]);
    ASSERT(json_is_object(json_object_get(json_object_get(j, "json"), "events")));
    json_decref(j);
    free(text);
    rc_buf_free(&b);
    rc_engine_destroy(e);
}

/* ---- concurrent long lines --------------------------------------------- */

#define CONC_THREADS 4
#define CONC_LINES   50
#define CONC_LEN     (3 * 4096) /* over PIPE_BUF: the kernel does not keep it whole */

typedef struct reader {
    int fd;
    char *data;
    size_t len, cap;
} reader;

static void *read_all(void *arg)
{
    reader *r = arg;
    for (;;) {
        if (r->len + 65536 > r->cap) {
            r->cap = r->cap * 2 + 65536;
            r->data = realloc(r->data, r->cap + 1);
            ASSERT(r->data);
        }
        ssize_t n = read(r->fd, r->data + r->len, r->cap - r->len);
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    r->data[r->len] = '\0';
    return NULL;
}

static void *log_many(void *arg)
{
    int id = (int)(intptr_t)arg;
    char *v = malloc(CONC_LEN + 1);
    ASSERT(v);
    memset(v, 'a' + id, CONC_LEN);
    v[CONC_LEN] = '\0';
    for (int i = 0; i < CONC_LINES; i++)
        rc_log_info("m", "conc", "id=%d i=%d v=%s", id, i, v);
    free(v);
    return NULL;
}

TEST(log_concurrent_long_lines_never_interleave)
{
    int p[2], saved = dup(2);
    pthread_t rd, th[CONC_THREADS];
    reader r = {0};
    ASSERT(pipe(p) == 0);
    r.fd = p[0];
    ASSERT(dup2(p[1], 2) == 2);
    close(p[1]);
    ASSERT(pthread_create(&rd, NULL, read_all, &r) == 0);
    for (int t = 0; t < CONC_THREADS; t++)
        ASSERT(pthread_create(&th[t], NULL, log_many, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < CONC_THREADS; t++)
        pthread_join(th[t], NULL);
    ASSERT(dup2(saved, 2) == 2); /* the last writer gone: the reader sees EOF */
    close(saved);
    pthread_join(rd, NULL);
    close(p[0]);
    static char *lines[CONC_THREADS * CONC_LINES + 1];
    ASSERT_EQ(split_lines(r.data, lines, CONC_THREADS * CONC_LINES + 1), CONC_THREADS * CONC_LINES);
    int seen[CONC_THREADS] = {0};
    for (int i = 0; i < CONC_THREADS * CONC_LINES; i++) {
        lf_line f;
        lf_must_parse(lines[i], &f);
        int id = atoi(lf_get(&f, "id"));
        ASSERT(id >= 0 && id < CONC_THREADS);
        ASSERT_EQ(atoi(lf_get(&f, "i")), seen[id]++);
        const char *v = lf_get(&f, "v");
        ASSERT_EQ(strlen(v), CONC_LEN);
        ASSERT_EQ(strspn(v, (char[]){(char)('a' + id), 0}), CONC_LEN);
        lf_free(&f);
    }
    free(r.data);
}

/* ---- journald ---------------------------------------------------------- */

TEST(log_journal_priority_prefix)
{
    capture c;
    char *lines[16], *text, js[64];
    struct stat st;
    rc_log_set_level(RC_LOG_DEBUG);
    cap_start(&c);
    ASSERT(fstat(2, &st) == 0);
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    ASSERT_EQ(rc_log_detect_journal(), 1);
    rc_log_debug("m", "d", NULL);
    rc_log_info("m", "i", NULL);
    rc_log_warn("m", "w", NULL);
    rc_log_error("m", "e", "k=%s", "v v");
    rc_log_set_json(1);
    rc_log_error("m", "e", "k=%s", "v v");
    rc_log_set_json(0);
    /* another stream (stdout of a journal-run unit redirected, say): no prefix */
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", js, 1);
    ASSERT_EQ(rc_log_detect_journal(), 0);
    rc_log_info("m", "not journal", NULL);
    setenv("JOURNAL_STREAM", "garbage", 1);
    ASSERT_EQ(rc_log_detect_journal(), 0);
    unsetenv("JOURNAL_STREAM");
    ASSERT_EQ(rc_log_detect_journal(), 0);
    rc_log_info("m", "no env", NULL);
    text = cap_end(&c);
    ASSERT_EQ(split_lines(text, lines, 16), 7);
    const char *want[] = {"<7>", "<6>", "<4>", "<3>", "<3>"};
    for (int i = 0; i < 5; i++) {
        lf_line f;
        if (strncmp(lines[i], want[i], 3) != 0)
            RC__FAIL("line %d: want prefix %s: %.80s", i, want[i], lines[i]);
        if (i < 4) {
            lf_must_parse(lines[i] + 3, &f);
            lf_free(&f);
        } else {
            json_decref(json_must_parse(lines[i] + 3));
        }
    }
    ASSERT(strncmp(lines[5], "ts=", 3) == 0);
    ASSERT(strncmp(lines[6], "ts=", 3) == 0);
    free(text);
}
