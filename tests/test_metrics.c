/* Metrics tests: a strict Prometheus text-format (0.0.4) parser checks every
 * page; the HTTP server's limits are driven with raw TCP clients; the real
 * daemon's page is scraped before and after a generated stream. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "e2e.h"
#include "recalld/api.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/metrics.h"
#include "test.h"

/* ---- a strict exposition-format parser ---------------------------------- */

#define PROM_MAX_SAMPLES  4096
#define PROM_MAX_FAMILIES 512

typedef struct prom_sample {
    char name[128];
    char labels[256]; /* as written, without braces */
    char base[256];   /* labels without le (histogram grouping) */
    double le;        /* histogram buckets: the le value */
    int has_le;
    double v;
} prom_sample;

typedef struct prom_family {
    char name[128], type[16];
    int help, first, n; /* samples[first .. first+n) */
    int done;           /* another family followed: it may not come back */
} prom_family;

typedef struct prom_page {
    prom_sample s[PROM_MAX_SAMPLES];
    prom_family f[PROM_MAX_FAMILIES];
    int ns, nf;
} prom_page;

static int name_ok(const char *s, size_t n, int label)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static int parse_value(const char *s, double *v)
{
    char *end;
    if (!strcmp(s, "NaN")) {
        *v = NAN;
        return 0;
    }
    if (!strcmp(s, "+Inf") || !strcmp(s, "-Inf")) {
        *v = s[0] == '+' ? INFINITY : -INFINITY;
        return 0;
    }
    errno = 0;
    *v = strtod(s, &end);
    return *s && !*end && !errno && isfinite(*v) ? 0 : -1;
}

static prom_family *family_of(prom_page *p, const char *name)
{
    for (int i = 0; i < p->nf; i++)
        if (!strcmp(p->f[i].name, name))
            return &p->f[i];
    return NULL;
}

/* Parses `{a="x",b="y"}` at *pp into out (text between braces) and base
 * (the same without le); sets le. Checks names, escapes, duplicates. */
static void parse_labels(const char **pp, prom_sample *out, int line)
{
    const char *p = *pp + 1;
    char names[16][64];
    int nn = 0;
    size_t ol = 0, bl = 0;
    while (*p != '}') {
        const char *ns = p;
        while (*p && *p != '=')
            p++;
        if (!name_ok(ns, (size_t)(p - ns), 1) || p - ns >= 64 || p[1] != '"')
            RC__FAIL("line %d: bad label name", line);
        ASSERT_LT(nn, 16);
        snprintf(names[nn], sizeof names[nn], "%.*s", (int)(p - ns), ns);
        for (int i = 0; i < nn; i++)
            if (!strcmp(names[i], names[nn]))
                RC__FAIL("line %d: duplicate label %s", line, names[nn]);
        nn++;
        char val[128];
        size_t vl = 0;
        for (p += 2; *p != '"'; p++) {
            if (!*p || *p == '\n')
                RC__FAIL("line %d: unterminated label value", line);
            if (*p == '\\') {
                p++;
                if (*p != '\\' && *p != '"' && *p != 'n')
                    RC__FAIL("line %d: bad escape \\%c", line, *p);
            }
            ASSERT_LT(vl, sizeof val - 1);
            val[vl++] = *p;
        }
        val[vl] = '\0';
        const char *pair_end = ++p;
        int is_le = !strcmp(names[nn - 1], "le");
        if (is_le) {
            out->has_le = 1;
            if (parse_value(val, &out->le) != 0 || isnan(out->le))
                RC__FAIL("line %d: bad le \"%s\"", line, val);
        }
        size_t plen = (size_t)(pair_end - ns);
        ASSERT_LT(ol + plen + 2, sizeof out->labels);
        ol += (size_t)snprintf(out->labels + ol, sizeof out->labels - ol, "%s%.*s", ol ? "," : "",
                               (int)plen, ns);
        if (!is_le)
            bl += (size_t)snprintf(out->base + bl, sizeof out->base - bl, "%s%.*s", bl ? "," : "",
                                   (int)plen, ns);
        if (*p == ',')
            p++;
        else if (*p != '}')
            RC__FAIL("line %d: expected , or } after a label", line);
    }
    *pp = p + 1;
}

/* The family a sample name belongs to: itself, or for histograms the name
 * without _bucket/_sum/_count. */
static prom_family *sample_family(prom_page *p, const char *name, int line)
{
    prom_family *f = family_of(p, name);
    if (f)
        return f;
    static const char *sfx[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(name), k = strlen(sfx[i]);
        char base[128];
        if (n <= k || strcmp(name + n - k, sfx[i]))
            continue;
        snprintf(base, sizeof base, "%.*s", (int)(n - k), name);
        if ((f = family_of(p, base)) && !strcmp(f->type, "histogram"))
            return f;
    }
    RC__FAIL("line %d: sample %s has no # TYPE before it", line, name);
}

/* Every line of a family must be in one group. */
static void switch_family(prom_family **cur, prom_family *f, int line)
{
    if (f == *cur)
        return;
    if (f->done)
        RC__FAIL("line %d: family %s is not one group", line, f->name);
    if (*cur)
        (*cur)->done = 1;
    *cur = f;
}

static void parse_comment(prom_page *p, const char *l, int line, prom_family **cur)
{
    char kind[8], name[128];
    int off = 0;
    if (sscanf(l, "# %7s %127s %n", kind, name, &off) < 2)
        RC__FAIL("line %d: comment is neither HELP nor TYPE: %s", line, l);
    if (!name_ok(name, strlen(name), 0))
        RC__FAIL("line %d: bad metric name %s", line, name);
    prom_family *f = family_of(p, name);
    if (!f) {
        ASSERT_LT(p->nf, PROM_MAX_FAMILIES);
        f = &p->f[p->nf++];
        memset(f, 0, sizeof *f);
        snprintf(f->name, sizeof f->name, "%s", name);
        f->first = -1;
    }
    switch_family(cur, f, line);
    if (!strcmp(kind, "HELP")) {
        if (f->help++)
            RC__FAIL("line %d: second HELP for %s", line, name);
        for (const char *h = l + off; *h; h++)
            if (*h == '\\' && *++h != '\\' && *h != 'n')
                RC__FAIL("line %d: bad escape in HELP", line);
    } else if (!strcmp(kind, "TYPE")) {
        const char *t = l + off;
        if (f->type[0] || f->n)
            RC__FAIL("line %d: TYPE for %s repeated or after its samples", line, name);
        if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "histogram") &&
            strcmp(t, "summary") && strcmp(t, "untyped"))
            RC__FAIL("line %d: unknown type %s", line, t);
        snprintf(f->type, sizeof f->type, "%s", t);
    } else {
        RC__FAIL("line %d: comment is neither HELP nor TYPE: %s", line, l);
    }
}

static void parse_sample(prom_page *p, const char *l, int line, prom_family **cur)
{
    ASSERT_LT(p->ns, PROM_MAX_SAMPLES);
    prom_sample *s = &p->s[p->ns];
    memset(s, 0, sizeof *s);
    const char *q = l;
    while (*q && *q != '{' && *q != ' ')
        q++;
    if (!name_ok(l, (size_t)(q - l), 0) || q - l >= (long)sizeof s->name)
        RC__FAIL("line %d: bad metric name: %s", line, l);
    snprintf(s->name, sizeof s->name, "%.*s", (int)(q - l), l);
    if (*q == '{')
        parse_labels(&q, s, line);
    if (*q != ' ')
        RC__FAIL("line %d: expected a space before the value: %s", line, l);
    char val[64], ts[32];
    int nf = sscanf(q + 1, "%63s %31s", val, ts);
    if (nf < 1 || parse_value(val, &s->v) != 0)
        RC__FAIL("line %d: bad value: %s", line, l);
    prom_family *f = sample_family(p, s->name, line);
    switch_family(cur, f, line);
    if (f->first < 0)
        f->first = p->ns;
    f->n++;
    if (!strcmp(f->type, "counter") && !(s->v >= 0))
        RC__FAIL("line %d: negative counter %s", line, s->name);
    for (int i = f->first; i < p->ns; i++)
        if (!strcmp(p->s[i].name, s->name) && !strcmp(p->s[i].labels, s->labels))
            RC__FAIL("line %d: duplicate series %s{%s}", line, s->name, s->labels);
    p->ns++;
}

/* Histogram rules, per label set: buckets with increasing le ending at +Inf,
 * non-decreasing counts, +Inf count == _count, a _sum. */
static void check_histogram(prom_page *p, prom_family *f)
{
    char bucket[140], sum[140], count[140];
    snprintf(bucket, sizeof bucket, "%s_bucket", f->name);
    snprintf(sum, sizeof sum, "%s_sum", f->name);
    snprintf(count, sizeof count, "%s_count", f->name);
    for (int i = f->first; f->n && i < f->first + f->n; i++) {
        prom_sample *c = &p->s[i];
        if (strcmp(c->name, count))
            continue;
        double prev_le = -INFINITY, prev_n = 0, inf_n = -1;
        int nb = 0, has_sum = 0;
        for (int j = f->first; j < f->first + f->n; j++) {
            prom_sample *b = &p->s[j];
            if (!strcmp(b->name, sum) && !strcmp(b->base, c->base))
                has_sum = 1;
            if (strcmp(b->name, bucket) || strcmp(b->base, c->base))
                continue;
            if (!b->has_le)
                RC__FAIL("%s{%s}: bucket without le", f->name, b->labels);
            if (!(b->le > prev_le))
                RC__FAIL("%s{%s}: le not increasing", f->name, b->labels);
            if (b->v < prev_n)
                RC__FAIL("%s{%s}: bucket counts decrease", f->name, b->labels);
            prev_le = b->le;
            prev_n = b->v;
            nb++;
            if (isinf(b->le))
                inf_n = b->v;
        }
        if (!nb || !isinf(prev_le))
            RC__FAIL("%s{%s}: no +Inf bucket", f->name, c->base);
        if (inf_n != c->v)
            RC__FAIL("%s{%s}: +Inf bucket %g != _count %g", f->name, c->base, inf_n, c->v);
        if (!has_sum)
            RC__FAIL("%s{%s}: no _sum", f->name, c->base);
    }
}

/* Parses text strictly into *p (aborts the test on any violation). */
static void prom_parse(prom_page *p, const char *text)
{
    prom_family *cur = NULL;
    char l[1024];
    int line = 0;
    memset(p, 0, sizeof *p);
    ASSERT(text && *text);
    ASSERT_EQ(text[strlen(text) - 1], '\n');
    for (const char *t = text; *t;) {
        const char *nl = strchr(t, '\n');
        size_t n = (size_t)(nl - t);
        line++;
        if (n == 0 || n >= sizeof l)
            RC__FAIL("line %d: empty or over-long line", line);
        memcpy(l, t, n);
        l[n] = '\0';
        if (l[0] == '#')
            parse_comment(p, l, line, &cur);
        else
            parse_sample(p, l, line, &cur);
        t = nl + 1;
    }
    for (int i = 0; i < p->nf; i++) {
        if (!p->f[i].type[0])
            RC__FAIL("family %s has no TYPE", p->f[i].name);
        if (!strcmp(p->f[i].type, "histogram"))
            check_histogram(p, &p->f[i]);
    }
}

/* Value of name{labels} (labels exactly as written, "" for none); aborts if absent. */
static double prom_get(const prom_page *p, const char *name, const char *labels)
{
    for (int i = 0; i < p->ns; i++)
        if (!strcmp(p->s[i].name, name) && !strcmp(p->s[i].labels, labels))
            return p->s[i].v;
    RC__FAIL("no sample %s{%s}", name, labels);
}

static int prom_has(const prom_page *p, const char *name, const char *labels)
{
    for (int i = 0; i < p->ns; i++)
        if (!strcmp(p->s[i].name, name) && (!labels || !strcmp(p->s[i].labels, labels)))
            return 1;
    return 0;
}

static double prom_sum(const prom_page *p, const char *name)
{
    double s = 0;
    for (int i = 0; i < p->ns; i++)
        if (!strcmp(p->s[i].name, name))
            s += p->s[i].v;
    return s;
}

/* The parser must refuse what the format forbids: a self-check. */
static void expect_refused(const char *text)
{
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        static prom_page pg;
        freopen("/dev/null", "w", stderr);
        prom_parse(&pg, text);
        _exit(0);
    }
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    if (!WIFSIGNALED(st))
        RC__FAIL("parser accepted: %s", text);
}

TEST(metrics_parser_rejects_bad_text)
{
    static prom_page pg;
    prom_parse(&pg, "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 3\n"
                    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                    "h_sum 3.5\nh_count 2\n");
    ASSERT_NEAR(prom_get(&pg, "h_count", ""), 2, 0);
    expect_refused("a 1\n");                                      /* no TYPE */
    expect_refused("# TYPE a gauge\na 1");                        /* no final newline */
    expect_refused("# TYPE 1a gauge\n1a 1\n");                    /* name */
    expect_refused("# TYPE a gauge\na{1k=\"v\"} 1\n");            /* label name */
    expect_refused("# TYPE a gauge\na{k=\"v\\x\"} 1\n");          /* escape */
    expect_refused("# TYPE a gauge\na{k=\"v\",k=\"w\"} 1\n");     /* duplicate label */
    expect_refused("# TYPE a gauge\na one\n");                    /* value */
    expect_refused("# TYPE a counter\na -1\n");                   /* negative counter */
    expect_refused("# TYPE a gauge\na 1\na 2\n");                 /* duplicate series */
    expect_refused("# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n"); /* not grouped */
    expect_refused("# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
                   "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"); /* le order */
    expect_refused("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                   "h_sum 1\nh_count 1\n"); /* decreasing */
    expect_refused("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n");
    expect_refused("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n");
}

/* ---- histograms and exposition helpers ---------------------------------- */

TEST(metrics_hist_buckets_cumulative)
{
    static const uint64_t le[] = {10, 100, 1000};
    static rc_hist h;
    static prom_page pg;
    rc_hist_init(&h, le, 3, 1e-3);
    uint64_t obs[] = {0, 10, 11, 100, 101, 1000, 1001, 5000};
    for (size_t i = 0; i < RC_ARRAY_LEN(obs); i++)
        rc_hist_observe(&h, obs[i]);
    ASSERT_EQ(rc_hist_count(&h), 8);
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_prom_family(&b, "t_seconds", "histogram", "test \\ help\nsecond line");
    rc_prom_hist(&b, "t_seconds", "op=\"x\"", &h);
    prom_parse(&pg, b.data);
    /* bounds are inclusive: 10 is in le=0.01 */
    ASSERT_NEAR(prom_get(&pg, "t_seconds_bucket", "op=\"x\",le=\"0.01\""), 2, 0);
    ASSERT_NEAR(prom_get(&pg, "t_seconds_bucket", "op=\"x\",le=\"0.1\""), 4, 0);
    ASSERT_NEAR(prom_get(&pg, "t_seconds_bucket", "op=\"x\",le=\"1\""), 6, 0);
    ASSERT_NEAR(prom_get(&pg, "t_seconds_bucket", "op=\"x\",le=\"+Inf\""), 8, 0);
    ASSERT_NEAR(prom_get(&pg, "t_seconds_count", "op=\"x\""), 8, 0);
    ASSERT_NEAR(prom_get(&pg, "t_seconds_sum", "op=\"x\""), 7.223, 1e-12);
    /* latency bounds print as written */
    rc_hist_init(&h, rc_hist_latency_us, rc_hist_latency_us_n, 1e-6);
    rc_buf_reset(&b);
    rc_prom_hist(&b, "l", NULL, &h);
    ASSERT(strstr(b.data, "l_bucket{le=\"5e-05\"} 0\n") != NULL);
    ASSERT(strstr(b.data, "l_bucket{le=\"0.0025\"} 0\n") != NULL);
    /* label values are escaped */
    rc_buf_reset(&b);
    rc_prom_label(&b, "topic", "a\"b\\c\nd");
    rc_prom_label(&b, "partition", "3");
    ASSERT_STREQ(b.data, "topic=\"a\\\"b\\\\c\\nd\",partition=\"3\"");
    rc_buf_free(&b);
}

static void observe_many(void *arg)
{
    for (int k = 0; k < 200000; k++)
        rc_hist_observe(arg, (uint64_t)(k % 7) * 1000);
}

TEST(metrics_hist_concurrent_observers)
{
    static rc_hist h;
    uv_thread_t t[4];
    rc_hist_init(&h, rc_hist_latency_us, rc_hist_latency_us_n, 1e-6);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(uv_thread_create(&t[i], observe_many, &h), 0);
    for (int i = 0; i < 4; i++)
        uv_thread_join(&t[i]);
    ASSERT_EQ(rc_hist_count(&h), 4 * 200000);
    /* the sum of (k % 7) * 1000 over k < 200000, per thread */
    ASSERT_EQ(atomic_load(&h.sum), 4LL * 1000 * (200000 / 7 * 21 + 3));
}

/* ---- the daemon's page, offline ---------------------------------------- */

static rc_engine *offline_engine(void)
{
    rc_config c;
    rc_config_defaults(&c);
    c.dim = 16;
    c.max_items = 4096;
    c.max_users = 1024;
    return e2e_engine_offline(&c);
}

/* n clicks one second apart: user i % users, item i % items, city i % cities. */
static void apply_clicks(rc_engine *e, int n, int users, int items, int cities)
{
    char line[256];
    for (int i = 0; i < n; i++) {
        int len = snprintf(line, sizeof line,
                           "{\"user_id\":\"u%d\",\"item_id\":\"i%d\",\"city_id\":%d,"
                           "\"cate_id\":1,\"ts\":%lld}",
                           i % users, i % items, i % cities, 1700000000000LL + i * 1000);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)len), RC_EV_OK);
    }
}

static void api_call(rc_api *a, const char *req, const char *want)
{
    rc_buf r;
    rc_buf_init(&r, 1 << 20);
    rc_api_handle(a, req, strlen(req), &r);
    if (!r.data || !strstr(r.data, want))
        RC__FAIL("%s -> %s (want %s)", req, r.data ? r.data : "(none)", want);
    rc_buf_free(&r);
}

TEST(metrics_render_offline_engine_and_api)
{
    static prom_page pg;
    static rc_api a;
    rc_engine *e = offline_engine();
    apply_clicks(e, 200, 10, 37, 3);
    ASSERT_EQ(rc_engine_apply_line(e, "{", 1), RC_EV_BAD_JSON);
    ASSERT_EQ(rc_engine_apply_line(e, "[1]", 3), RC_EV_NOT_OBJECT);
    ASSERT_EQ(rc_engine_apply_line(e, "{\"user_id\":\"u\"}", 15), RC_EV_MISSING_FIELD);
    rc_engine_sync(e);
    rc_api_init(&a);
    a.engine = e;
    api_call(&a, "{\"op\":\"health\"}", "model not loaded");
    atomic_store(&a.model_ready, 1);
    api_call(&a, "{\"op\":\"health\"}", "partition assignment");
    atomic_store(&a.assigned, 1);
    api_call(&a, "{\"op\":\"health\"}", "\"ok\":true");
    for (int i = 0; i < 5; i++)
        api_call(&a, "{\"op\":\"recall\",\"user_id\":\"u3\",\"k\":5}", "\"ok\":true");
    api_call(&a, "{\"op\":\"similar\",\"item_id\":\"i3\"}", "\"ok\":true");
    api_call(&a, "not json", "bad_json");
    api_call(&a, "{\"op\":\"nope\"}", "unknown_op");
    rc_metrics_sources src = {.engine = e, .api = &a};
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_metrics_render(&src, &b);
    prom_parse(&pg, b.data);
    ASSERT_NEAR(prom_get(&pg, "recalld_events_applied_total", ""), 200, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_events_invalid_total", "reason=\"bad_json\""), 1, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_events_invalid_total", "reason=\"not_object\""), 1, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_events_invalid_total", "reason=\"missing_field\""), 1, 0);
    ASSERT_NEAR(prom_sum(&pg, "recalld_events_invalid_total"), 3, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_items", ""), 37, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_index_size", ""), 37, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_index_pending", ""), 0, 0);
    ASSERT_DBL_OP(prom_get(&pg, "recalld_training_pairs_total", ""), >, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_freshness_seconds_count", ""), 203, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_request_duration_seconds_count", "op=\"recall\""), 5, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_request_duration_seconds_count", "op=\"similar\""), 1, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_request_duration_seconds_count", "op=\"health\""), 3, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_request_duration_seconds_count", "op=\"invalid\""), 2, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_request_errors_total", ""), 4, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_ready", ""), 1, 0);
    ASSERT_DBL_OP(prom_get(&pg, "process_resident_memory_bytes", ""), >, 1 << 20);
    ASSERT(!prom_has(&pg, "recalld_kafka_consumer_lag", NULL)); /* no consumer source */
    rc_buf_free(&b);
    rc_engine_destroy(e);
}

/* The checkpoint owner's callback fills the figures; age follows the wall clock. */
static int fake_checkpoint(void *arg, rc_metrics_checkpoint *out)
{
    int *have = arg;
    if (*have < 0)
        return -1;
    out->written = 3;
    out->failed = 1;
    out->last_bytes = 12345;
    out->last_duration_s = *have ? 0.25 : -1;
    out->last_pause_s = *have ? 0.001 : -1;
    out->last_ok_wall_ms = *have ? rc_wall_ms() - 2000 : -1;
    return 0;
}

TEST(metrics_checkpoint_hook)
{
    static prom_page pg;
    int have = 1;
    rc_metrics_sources src = {.checkpoint = fake_checkpoint, .checkpoint_arg = &have};
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_metrics_render(&src, &b);
    prom_parse(&pg, b.data);
    ASSERT_NEAR(prom_get(&pg, "recalld_checkpoint_age_seconds", ""), 2, 0.5);
    ASSERT_NEAR(prom_get(&pg, "recalld_checkpoint_duration_seconds", ""), 0.25, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_checkpoint_pause_seconds", ""), 0.001, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_checkpoints_total", "result=\"ok\""), 3, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_checkpoints_total", "result=\"failed\""), 1, 0);
    have = 0; /* none written yet: the families stay, without samples */
    rc_buf_reset(&b);
    rc_metrics_render(&src, &b);
    prom_parse(&pg, b.data);
    ASSERT(!prom_has(&pg, "recalld_checkpoint_age_seconds", NULL));
    ASSERT(prom_has(&pg, "recalld_checkpoints_total", NULL));
    have = -1; /* checkpoints off */
    rc_buf_reset(&b);
    rc_metrics_render(&src, &b);
    ASSERT(strstr(b.data, "recalld_checkpoint") == NULL);
    rc_buf_free(&b);
}

/* ---- every number of the stats op on the page --------------------------- */

static int prom_family_has(const prom_page *p, const char *name)
{
    for (int i = 0; i < p->nf; i++)
        if (!strcmp(p->f[i].name, name))
            return 1;
    return 0;
}

/* Walks the stats object: each number and boolean needs a row of the table
 * whose family is on the page; rows rendered from the stats show its value.
 * Returns the numbers seen. */
static int walk_stats(json_t *o, char *path, size_t at, const prom_page *pg, int exact, int ckpt)
{
    const char *key;
    json_t *v;
    int n = 0;
    json_object_foreach(o, key, v) {
        snprintf(path + at, 256 - at, "%s%s", at ? "." : "", key);
        if (json_is_object(v)) {
            n += walk_stats(v, path, strlen(path), pg, exact, ckpt);
            continue;
        }
        if (!json_is_number(v) && !json_is_boolean(v))
            continue;
        n++;
        const rc_metrics_stat *r = rc_metrics_stat_find(path);
        if (!r)
            RC__FAIL("stats number %s has no row in the metrics table (src/metrics_stats.c)", path);
        if (r->kind == RC_MSTAT_INFO || (!ckpt && !strncmp(path, "checkpoint.", 11)))
            continue;
        if (!prom_family_has(pg, r->metric))
            RC__FAIL("stats number %s: family %s not on the page", path, r->metric);
        if (r->kind != RC_MSTAT_COUNTER || strchr(r->path, '*') || !exact)
            continue;
        double want = (json_is_number(v) ? json_number_value(v) : json_is_true(v)) * r->scale;
        ASSERT_NEAR(prom_get(pg, r->metric, ""), want, 0);
    }
    return n;
}

TEST(metrics_every_stats_number_exported)
{
    static prom_page pg;
    static rc_api a;
    char path[256] = "";
    int have = 1;
    rc_engine *e = offline_engine();
    /* a repeated click (duplicates), one back in time (reordered) */
    const char *lines[] = {
        "{\"user_id\":\"u1\",\"item_id\":\"i1\",\"city_id\":1,\"cate_id\":1,\"ts\":1700000010000}",
        "{\"user_id\":\"u1\",\"item_id\":\"i2\",\"city_id\":1,\"cate_id\":1,\"ts\":1700000020000}",
        "{\"user_id\":\"u1\",\"item_id\":\"i2\",\"city_id\":1,\"cate_id\":1,\"ts\":1700000020000}",
        "{\"user_id\":\"u1\",\"item_id\":\"i3\",\"city_id\":1,\"cate_id\":1,\"ts\":1700000015000}",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        ASSERT_EQ(rc_engine_apply_line(e, lines[i], strlen(lines[i])), RC_EV_OK);
    rc_engine_sync(e);
    rc_api_init(&a);
    a.engine = e;
    atomic_store(&a.model_ready, 1);
    api_call(&a, "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":5}", "\"ok\":true");
    rc_buf r, b;
    rc_buf_init(&r, 1 << 20);
    rc_api_handle(&a, "{\"op\":\"stats\"}", 14, &r);
    json_error_t je;
    json_t *st = json_loads(r.data, 0, &je);
    ASSERT(st);
    json_object_del(st, "ok");
    ASSERT_EQ(e2e_int(st, "events.duplicates"), 1);
    ASSERT_EQ(e2e_int(st, "events.reordered"), 1);
    rc_metrics_sources src = {
        .engine = e, .api = &a, .checkpoint = fake_checkpoint, .checkpoint_arg = &have};
    rc_buf_init(&b, 0);
    rc_metrics_render(&src, &b);
    prom_parse(&pg, b.data);
    ASSERT_GT(walk_stats(st, path, 0, &pg, 1, 0), 100); /* no data dir: checkpoints off */
    ASSERT_NEAR(prom_get(&pg, "recalld_events_duplicates_total", ""), 1, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_events_reordered_total", ""), 1, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_events_late_total", ""), 0, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_users", ""), 1, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_requests_total", ""), 2, 0);
    /* the table has no row for a path the stats do not have */
    size_t n;
    const rc_metrics_stat *t = rc_metrics_stat_table(&n);
    for (size_t i = 0; i < n; i++)
        ASSERT(t[i].path && (t[i].kind == RC_MSTAT_INFO || t[i].metric));
    json_decref(st);
    rc_buf_free(&r);
    rc_buf_free(&b);
    rc_engine_destroy(e);
}

/* The quantile gauges are gone: new-item freshness is a histogram. */
TEST(metrics_new_item_freshness_histogram)
{
    static prom_page pg;
    rc_engine *e = offline_engine();
    apply_clicks(e, 50, 5, 50, 1);
    rc_engine_sync(e);
    rc_metrics_sources src = {.engine = e};
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_metrics_render(&src, &b);
    prom_parse(&pg, b.data);
    ASSERT(!strstr(b.data, "_p50_") && !strstr(b.data, "_p99_"));
    ASSERT(prom_family_has(&pg, "recalld_index_new_item_freshness_seconds"));
    ASSERT_NEAR(prom_get(&pg, "recalld_index_new_item_freshness_seconds_count", ""), 50, 0);
    ASSERT_NEAR(prom_get(&pg, "recalld_index_new_item_freshness_seconds_bucket", "le=\"+Inf\""), 50,
                0);
    ASSERT_DBL_OP(prom_get(&pg, "recalld_index_new_item_freshness_seconds_sum", ""), >, 0);
    ASSERT(prom_family_has(&pg, "recalld_tower_index_new_item_freshness_seconds"));
    /* the writer's lock holds: at least one batch applied the 50 items */
    ASSERT(prom_family_has(&pg, "recalld_index_write_lock_seconds"));
    ASSERT_DBL_OP(prom_get(&pg, "recalld_index_write_lock_seconds_count", ""), >=, 1);
    rc_buf_free(&b);
    rc_engine_destroy(e);
}

TEST(metrics_config_keys)
{
    rc_config c;
    char err[256];
    rc_config_defaults(&c);
    ASSERT_EQ(c.metrics_port, 0); /* off unless asked for (issue 11) */
    ASSERT_STREQ(c.metrics_bind, "127.0.0.1");
    ASSERT_EQ(c.nallow_uids, 0);
    ASSERT_EQ(rc_config_load_str(&c,
                                 "{\"metrics\":{\"port\":0,\"bind\":\"::1\"},"
                                 "\"socket\":{\"allow_uids\":[0,1000]}}",
                                 err, sizeof err),
              0);
    ASSERT_EQ(c.metrics_port, 0);
    ASSERT_STREQ(c.metrics_bind, "::1");
    ASSERT_EQ(c.nallow_uids, 2);
    ASSERT_EQ(c.allow_uids[1], 1000);
    ASSERT_EQ(rc_config_validate(&c, err, sizeof err), 0);
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"metrics\":{\"port\":65536}}", "metrics.port"},
        {"{\"metrics\":{\"port\":\"9464\"}}", "metrics.port"},
        {"{\"socket\":{\"allow_uids\":1000}}", "socket.allow_uids: expected an array"},
        {"{\"socket\":{\"allow_uids\":[-1]}}", "socket.allow_uids: element 0"},
        {"{\"socket\":{\"allow_uids\":[0,\"x\"]}}", "socket.allow_uids: element 1"},
        {"{\"metrics\":{\"nope\":1}}", "metrics.nope: unknown key"},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(bad); i++) {
        rc_config_defaults(&c);
        err[0] = '\0';
        ASSERT_EQ(rc_config_load_str(&c, bad[i].json, err, sizeof err), RC_EINVAL);
        if (!strstr(err, bad[i].want))
            RC__FAIL("%s -> \"%s\" (want %s)", bad[i].json, err, bad[i].want);
    }
    rc_config_defaults(&c);
    ASSERT_EQ(rc_config_load_str(&c, "{\"metrics\":{\"bind\":\"localhost\"}}", err, sizeof err), 0);
    ASSERT_EQ(rc_config_validate(&c, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "metrics.bind") != NULL);
}

/* ---- the HTTP server ----------------------------------------------------- */

typedef struct thttp {
    uv_loop_t loop;
    uv_async_t stop;
    uv_thread_t thr;
    rc_metrics *m;
    int port;
    atomic_int ready, closed;
    atomic_int hold, rendering; /* hold: the render waits while set; rendering: inside it */
} thttp;

static void thttp_render(void *ud, rc_buf *out)
{
    thttp *t = ud;
    atomic_store(&t->rendering, 1);
    while (atomic_load(&t->hold))
        usleep(1000);
    atomic_store(&t->rendering, 0);
    rc_prom_family(out, "t_up", "gauge", "test page");
    rc_prom_sample(out, "t_up", NULL, 1);
}

static int thttp_ready(void *ud, char *why, size_t cap)
{
    thttp *t = ud;
    if (atomic_load(&t->ready))
        return 1;
    snprintf(why, cap, "warming up");
    return 0;
}

static void thttp_closed(void *arg) { atomic_store(&((thttp *)arg)->closed, 1); }

static void thttp_on_stop(uv_async_t *a)
{
    thttp *t = a->data;
    rc_metrics_close(t->m, thttp_closed, t);
    uv_close((uv_handle_t *)a, NULL);
}

static void thttp_loop(void *arg) { uv_run(&((thttp *)arg)->loop, UV_RUN_DEFAULT); }

static void thttp_start(thttp *t, rc_metrics_opts *o)
{
    char err[256];
    memset(t, 0, sizeof *t);
    ASSERT_EQ(uv_loop_init(&t->loop), 0);
    o->render = thttp_render;
    o->ready = thttp_ready;
    o->ud = t;
    if (rc_metrics_start(&t->loop, o, &t->m, err, sizeof err))
        RC__FAIL("rc_metrics_start: %s", err);
    t->port = rc_metrics_port(t->m);
    ASSERT_GT(t->port, 0);
    ASSERT_EQ(uv_async_init(&t->loop, &t->stop, thttp_on_stop), 0);
    t->stop.data = t;
    ASSERT_EQ(uv_thread_create(&t->thr, thttp_loop, t), 0);
}

static void thttp_stop(thttp *t)
{
    uv_async_send(&t->stop);
    uv_thread_join(&t->thr);
    ASSERT_EQ(atomic_load(&t->closed), 1);
    ASSERT_EQ(uv_loop_close(&t->loop), 0);
}

static rc_metrics_stats thttp_stats(thttp *t)
{
    rc_metrics_stats st;
    rc_metrics_stats_get(t->m, &st);
    return st;
}

static long mono_ms(void) { return (long)(rc_now_ns() / 1000000u); }

static int tcp_connect(const char *ip, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Reads until EOF or timeout into out (NUL-terminated); returns bytes, or -1
 * on timeout, -2 on a reset. */
static long read_all(int fd, char *out, size_t cap, int timeout_ms)
{
    size_t n = 0;
    long deadline = mono_ms() + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        long left = deadline - mono_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        ssize_t r = read(fd, out + n, cap - 1 - n);
        if (r < 0)
            return errno == ECONNRESET ? -2 : -1;
        out[n += (size_t)r] = '\0';
        if (r == 0 || n == cap - 1)
            return (long)n;
    }
}

/* One exchange: sends req, returns the whole response (static buffer). */
static const char *http(int port, const char *req)
{
    static char buf[1 << 16];
    int fd = tcp_connect("127.0.0.1", port);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    long n = read_all(fd, buf, sizeof buf, 60000);
    close(fd);
    if (n < 0)
        RC__FAIL("no complete response to %s", req);
    return buf;
}

static void expect_status(int port, const char *req, const char *status)
{
    const char *r = http(port, req);
    if (strncmp(r, status, strlen(status)) != 0)
        RC__FAIL("%s -> %.80s (want %s)", req, r, status);
}

TEST(metrics_http_get_head_and_errors)
{
    thttp t;
    rc_metrics_opts o = {0};
    thttp_start(&t, &o);
    const char *r = http(t.port, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
    ASSERT_EQ(strncmp(r, "HTTP/1.1 200 OK\r\n", 17), 0);
    ASSERT(strstr(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != NULL);
    ASSERT(strstr(r, "Connection: close\r\n") != NULL);
    const char *body = strstr(r, "\r\n\r\n") + 4;
    ASSERT_STREQ(body, "# HELP t_up test page\n# TYPE t_up gauge\nt_up 1\n");
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body));
    ASSERT(strstr(r, cl) != NULL);
    r = http(t.port, "HEAD /metrics HTTP/1.0\r\n\r\n");
    ASSERT_EQ(strncmp(r, "HTTP/1.0 200 OK\r\n", 17), 0);
    ASSERT(strstr(r, cl) != NULL);
    ASSERT_STREQ(strstr(r, "\r\n\r\n"), "\r\n\r\n");
    expect_status(t.port, "GET /metrics?name[]=x HTTP/1.0\n\n", "HTTP/1.0 200 OK");
    expect_status(t.port, "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                  "HTTP/1.1 405 Method Not Allowed");
    ASSERT(strstr(http(t.port, "PUT /metrics HTTP/1.1\r\n\r\n"), "Allow: GET, HEAD\r\n"));
    expect_status(t.port, "GET /other HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found");
    expect_status(t.port, "GARBAGE\r\n\r\n", "HTTP/1.0 400 Bad Request");
    expect_status(t.port, "GET /metrics HTTP/2.0\r\n\r\n", "HTTP/1.0 400");
    expect_status(t.port, "GET metrics HTTP/1.1\r\n\r\n", "HTTP/1.0 400");
    expect_status(t.port, "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", "HTTP/1.0 400");
    expect_status(t.port, "GET /met\x01rics HTTP/1.1\r\n\r\n", "HTTP/1.0 400");
    r = http(t.port, "GET /health HTTP/1.1\r\n\r\n");
    ASSERT_EQ(strncmp(r, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
    ASSERT_STREQ(strstr(r, "\r\n\r\n") + 4, "not ready: warming up\n");
    atomic_store(&t.ready, 1);
    r = http(t.port, "GET /health HTTP/1.1\r\n\r\n");
    ASSERT_EQ(strncmp(r, "HTTP/1.1 200 OK\r\n", 17), 0);
    ASSERT_STREQ(strstr(r, "\r\n\r\n") + 4, "ok\n");
    r = http(t.port, "HEAD /health HTTP/1.1\r\n\r\n");
    ASSERT(strstr(r, "Content-Length: 3\r\n") != NULL);
    ASSERT_STREQ(strstr(r, "\r\n\r\n"), "\r\n\r\n");
    rc_metrics_stats st = thttp_stats(&t);
    ASSERT_EQ(st.scrapes, 3);
    ASSERT_EQ(st.health, 3);
    ASSERT_EQ(st.bad_requests, 8);
    ASSERT_EQ(st.timeouts, 0);
    thttp_stop(&t);
}

/* Non-loopback IPv4 address of this host, or 0 when there is none. */
static int other_address(char *ip, size_t cap)
{
    struct ifaddrs *ifa, *i;
    int found = 0;
    if (getifaddrs(&ifa) != 0)
        return 0;
    for (i = ifa; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        struct in_addr a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
        if ((ntohl(a.s_addr) >> 24) == 127)
            continue;
        inet_ntop(AF_INET, &a, ip, (socklen_t)cap);
        found = 1;
    }
    freeifaddrs(ifa);
    return found;
}

TEST(metrics_http_limits)
{
    thttp t;
    char buf[4096], ip[64];
    rc_metrics_opts o = {.max_request = 512, .timeout_ms = 400, .max_clients = 4};
    thttp_start(&t, &o);
    /* headers that never end within max_request: 431, then closed */
    int fd = tcp_connect("127.0.0.1", t.port);
    memset(buf, 'a', 600);
    memcpy(buf, "GET /metrics HTTP/1.1\r\nX: ", 26);
    ASSERT_EQ(write(fd, buf, 600), 600);
    ASSERT_GT(read_all(fd, buf, sizeof buf, 60000), 0);
    ASSERT_EQ(strncmp(buf, "HTTP/1.0 431 ", 13), 0);
    close(fd);
    /* half a request, then silence: closed by the timeout, unanswered (not
     * before the timeout; how long after depends on the machine's load) */
    long t0 = mono_ms();
    fd = tcp_connect("127.0.0.1", t.port);
    ASSERT_EQ(write(fd, "GET /met", 8), 8);
    ASSERT_EQ(read_all(fd, buf, sizeof buf, 60000), 0);
    ASSERT_GE(mono_ms() - t0, 350);
    close(fd);
    ASSERT_EQ(thttp_stats(&t).timeouts, 1);
    /* max_clients silent peers hold every slot: the next one is refused at once */
    int idle[4];
    for (int i = 0; i < 4; i++)
        ASSERT_GE(idle[i] = tcp_connect("127.0.0.1", t.port), 0);
    for (long dl = mono_ms() + 60000; thttp_stats(&t).clients < 4 && mono_ms() < dl;)
        usleep(1000);
    ASSERT_EQ(thttp_stats(&t).clients, 4);
    fd = tcp_connect("127.0.0.1", t.port);
    ASSERT_GE(fd, 0);
    ASSERT(write(fd, "GET /metrics HTTP/1.0\r\n\r\n", 25) == 25 || errno == ECONNRESET ||
           errno == EPIPE);
    long r = read_all(fd, buf, sizeof buf, 60000);
    ASSERT(r == 0 || r == -2); /* EOF or reset, unanswered */
    close(fd);
    /* refused at once, not closed by the timeout: the counters tell which */
    ASSERT_EQ(thttp_stats(&t).refused, 1);
    ASSERT_EQ(thttp_stats(&t).timeouts, 1);
    for (int i = 0; i < 4; i++)
        close(idle[i]);
    for (long dl = mono_ms() + 60000; thttp_stats(&t).clients > 0 && mono_ms() < dl;)
        usleep(1000);
    /* The slots are free again: a request is answered. The 400 ms timeout
     * also covers the render, which a loaded machine can make slower: an
     * unanswered request must then be one more timeout, and is retried. */
    for (int attempt = 0;; attempt++) {
        uint64_t before = thttp_stats(&t).timeouts;
        const char *page = http(t.port, "GET /metrics HTTP/1.0\r\n\r\n");
        if (!strncmp(page, "HTTP/1.0 200 OK", 15))
            break;
        if (page[0] || thttp_stats(&t).timeouts == before || attempt == 20)
            RC__FAIL("after the slots were freed: %.80s (timeouts %llu -> %llu)", page,
                     (unsigned long long)before, (unsigned long long)thttp_stats(&t).timeouts);
    }
    /* bound to loopback: the host's other addresses refuse the port */
    if (other_address(ip, sizeof ip)) {
        ASSERT_EQ(tcp_connect(ip, t.port), -1);
        ASSERT_EQ(errno, ECONNREFUSED);
    }
    thttp_stop(&t);
}

TEST(metrics_http_bind_errors)
{
    uv_loop_t loop;
    rc_metrics *m = NULL, *m2 = NULL;
    char err[256];
    ASSERT_EQ(uv_loop_init(&loop), 0);
    rc_metrics_opts o = {.bind = "localhost", .render = thttp_render};
    ASSERT_EQ(rc_metrics_start(&loop, &o, &m, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "metrics: bind localhost: expected an IP address") != NULL);
    o.bind = NULL;
    ASSERT_EQ(rc_metrics_start(&loop, &o, &m, err, sizeof err), 0);
    o.port = (uint16_t)rc_metrics_port(m);
    ASSERT_EQ(rc_metrics_start(&loop, &o, &m2, err, sizeof err), RC_EIO);
    char want[96];
    snprintf(want, sizeof want, "metrics 127.0.0.1:%d: bind: ", o.port);
    if (!strstr(err, want))
        RC__FAIL("\"%s\" lacks \"%s\"", err, want);
    ASSERT(m2 == NULL);
    /* IPv6: listening on ::1 works exactly when the host can bind ::1 */
    o.bind = "::1";
    o.port = 0;
    int v6 = socket(AF_INET6, SOCK_STREAM, 0), host_v6 = 0;
    if (v6 >= 0) {
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        host_v6 = bind(v6, (struct sockaddr *)&a6, sizeof a6) == 0;
        close(v6);
    }
    int rc6 = rc_metrics_start(&loop, &o, &m2, err, sizeof err);
    if (host_v6 && rc6 != 0)
        RC__FAIL("metrics on ::1: %s", err);
    if (rc6 == 0) {
        ASSERT(host_v6);
        int port6 = rc_metrics_port(m2);
        ASSERT_GT(port6, 0);
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                                  .sin6_port = htons((uint16_t)port6),
                                  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        int c6 = socket(AF_INET6, SOCK_STREAM, 0);
        ASSERT_GE(c6, 0);
        ASSERT_EQ(connect(c6, (struct sockaddr *)&a6, sizeof a6), 0); /* listening on ::1 */
        close(c6);
        rc_metrics_close(m2, NULL, NULL);
    } else {
        ASSERT(m2 == NULL);
    }
    rc_metrics_close(m, NULL, NULL);
    rc_metrics_close(m, NULL, NULL); /* second close: no-op */
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* ---- the real daemon ------------------------------------------------------ */

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void scrape(int port, prom_page *pg)
{
    const char *r = http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    if (strncmp(r, "HTTP/1.1 200 OK\r\n", 17) != 0)
        RC__FAIL("scrape: %.100s", r);
    prom_parse(pg, strstr(r, "\r\n\r\n") + 4);
}

static void produce(const e2e_daemon *d, uint64_t seed, uint64_t events, double invalid)
{
    char *out = NULL;
    int st =
        e2e_sh(&out,
               RC_BIN("recalld-gen") " --brokers '%s' --topic clicks --seed %llu --events %llu "
                                     "--invalid-share %g --users 2000 --items 2000 --cities 4 "
                                     "--cates 4 >/dev/null 2>%s/gen.err",
               d->bootstrap, (unsigned long long)seed, (unsigned long long)events, invalid, d->dir);
    if (st != 0)
        RC__FAIL("recalld-gen failed (%d), see %s/gen.err", st, d->dir);
    free(out);
}

/* Inodes of the sockets pid holds open. */
static int socket_inodes(pid_t pid, unsigned long *ino, int cap)
{
    char path[64], link[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    ASSERT(dir != NULL);
    struct dirent *de;
    while ((de = readdir(dir)) && n < cap) {
        char fp[384];
        snprintf(fp, sizeof fp, "%s/%s", path, de->d_name);
        ssize_t l = readlink(fp, link, sizeof link - 1);
        if (l <= 0)
            continue;
        link[l] = '\0';
        if (sscanf(link, "socket:[%lu]", &ino[n]) == 1)
            n++;
    }
    closedir(dir);
    return n;
}

/* Checks every TCP listener of pid: IPv4 127.0.0.1 only, on the metrics port
 * or one of the embedded Kafka brokers' ports (bootstrap). Returns how many
 * listen on the metrics port. */
static int check_listeners(pid_t pid, int metrics_port, const char *bootstrap)
{
    static unsigned long ino[4096];
    int nino = socket_inodes(pid, ino, 4096), on_metrics = 0;
    static const char *files[] = {"tcp", "tcp6"};
    for (int f = 0; f < 2; f++) {
        char path[64], line[512];
        snprintf(path, sizeof path, "/proc/%d/net/%s", (int)pid, files[f]);
        FILE *fp = fopen(path, "r");
        if (!fp)
            continue;                                 /* no IPv6 in this kernel */
        ASSERT(fgets(line, sizeof line, fp) != NULL); /* header */
        while (fgets(line, sizeof line, fp)) {
            char local[64], state[8];
            unsigned long inode;
            if (sscanf(line, " %*s %63s %*s %7s %*s %*s %*s %*s %*s %lu", local, state, &inode) !=
                3)
                continue;
            int mine = 0;
            for (int i = 0; i < nino && !mine; i++)
                mine = ino[i] == inode;
            if (!mine || strcmp(state, "0A") != 0) /* 0A: LISTEN */
                continue;
            if (f == 1)
                RC__FAIL("IPv6 TCP listener %s", local);
            unsigned addr, port;
            ASSERT_EQ(sscanf(local, "%8X:%X", &addr, &port), 2);
            if (addr != htonl(INADDR_LOOPBACK))
                RC__FAIL("TCP listener on %s is not 127.0.0.1", local);
            char want[32];
            snprintf(want, sizeof want, "127.0.0.1:%u", port);
            if ((int)port == metrics_port)
                on_metrics++;
            else if (!strstr(bootstrap, want))
                RC__FAIL("TCP listener on port %u is neither metrics nor Kafka (%s)", port,
                         bootstrap);
        }
        fclose(fp);
    }
    return on_metrics;
}

TEST(metrics_e2e_page_moves_with_the_stream)
{
    static prom_page p0, p1;
    const uint64_t N = 20000;
    char port[16];
    int P = free_port();
    snprintf(port, sizeof port, "%d", P);
    const char *extra[] = {"--metrics-port", port, NULL};
    e2e_daemon d;
    e2e_start(&d, extra);
    ASSERT_EQ(check_listeners(d.pid, P, d.bootstrap), 1);
    const char *h = http(P, "GET /health HTTP/1.0\r\n\r\n");
    ASSERT_EQ(strncmp(h, "HTTP/1.0 200 OK\r\n", 17), 0);
    scrape(P, &p0);
    int scrapes = 1; /* p0 */
    ASSERT_NEAR(prom_get(&p0, "recalld_ready", ""), 1, 0);
    ASSERT_NEAR(prom_get(&p0, "recalld_kafka_assigned_partitions", ""), RC_CONF_EMBEDDED_PARTITIONS,
                0);
    ASSERT_NEAR(prom_get(&p0, "recalld_events_consumed_total", ""), 0, 0);

    produce(&d, 5, N, 0.05);
    json_t *st = e2e_wait_consumed(d.sock, (long long)N, 120000);
    ASSERT_EQ(e2e_int(st, "events.consumed"), (long long)N);
    for (int i = 0; i < 20; i++)
        json_decref(e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u%d\",\"k\":10}", i));
    /* lag is refreshed once a second and dead letters count on delivery: wait
     * for both to settle */
    long deadline = mono_ms() + 120000;
    do {
        usleep(200000);
        scrape(P, &p1);
        scrapes++;
    } while ((prom_sum(&p1, "recalld_kafka_consumer_lag") != 0 ||
              prom_get(&p1, "recalld_kafka_dead_letters_total", "") <
                  (double)e2e_int(st, "events.invalid")) &&
             mono_ms() < deadline);

    ASSERT_NEAR(prom_get(&p1, "recalld_events_consumed_total", "") -
                    prom_get(&p0, "recalld_events_consumed_total", ""),
                (double)N, 0);
    ASSERT_NEAR(prom_get(&p1, "recalld_kafka_messages_total", ""), (double)N, 0);
    ASSERT_NEAR(prom_get(&p1, "recalld_events_applied_total", ""),
                (double)e2e_int(st, "events.applied"), 0);
    double invalid = prom_sum(&p1, "recalld_events_invalid_total");
    ASSERT_NEAR(invalid, (double)e2e_int(st, "events.invalid"), 0);
    ASSERT_DBL_OP(invalid, >, N * 0.02);
    ASSERT_DBL_OP(prom_get(&p1, "recalld_events_invalid_total", "reason=\"bad_json\""), >, 0);
    ASSERT_DBL_OP(prom_get(&p1, "recalld_events_invalid_total", "reason=\"missing_field\""), >, 0);
    ASSERT_NEAR(prom_get(&p1, "recalld_kafka_dead_letters_total", ""), invalid, 0);
    ASSERT_DBL_OP(prom_get(&p1, "recalld_training_pairs_total", ""), >, N);
    ASSERT_NEAR(prom_get(&p1, "recalld_items", ""), (double)e2e_int(st, "items"), 0);
    ASSERT_DBL_OP(prom_get(&p1, "recalld_index_size", ""), >, 1000);
    ASSERT_DBL_OP(prom_get(&p1, "recalld_freshness_seconds_count", ""), >,
                  prom_get(&p0, "recalld_freshness_seconds_count", ""));
    ASSERT_NEAR(prom_get(&p1, "recalld_request_duration_seconds_count", "op=\"recall\""), 20, 0);
    ASSERT_DBL_OP(prom_get(&p1, "recalld_request_duration_seconds_sum", "op=\"recall\""), >, 0);
    ASSERT_DBL_OP(prom_get(&p1, "recalld_request_duration_seconds_count", "op=\"stats\""), >=, 2);
    ASSERT_DBL_OP(prom_get(&p1, "recalld_socket_requests_total", ""), >,
                  prom_get(&p0, "recalld_socket_requests_total", ""));
    ASSERT_DBL_OP(prom_get(&p1, "process_resident_memory_bytes", ""), >, 1 << 20);
    for (int part = 0; part < 8; part++) {
        char lab[64];
        snprintf(lab, sizeof lab, "topic=\"clicks\",partition=\"%d\"", part);
        ASSERT_NEAR(prom_get(&p1, "recalld_kafka_consumer_lag", lab), 0, 0);
    }
    /* a page counts the scrapes answered before it: p0 and the loop's earlier ones */
    ASSERT_NEAR(prom_get(&p1, "recalld_metrics_scrapes_total", ""), scrapes - 1, 0);
    json_decref(st);
    /* every number of the daemon's stats (Kafka's included) has its metric */
    char path[256] = "";
    st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    json_object_del(st, "ok");
    scrape(P, &p1);
    ASSERT_GT(walk_stats(st, path, 0, &p1, 0, 0), 120); /* checkpoints off here */
    ASSERT_NEAR(prom_get(&p1, "recalld_events_duplicates_total", ""),
                (double)e2e_int(st, "events.duplicates"), 0);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&d), 0);
}

TEST(metrics_daemon_port_errors)
{
    char dir[] = "/tmp/rc-metrics-XXXXXX", *out = NULL;
    ASSERT(mkdtemp(dir) != NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ASSERT_EQ(listen(fd, 1), 0);
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    int busy = ntohs(sa.sin_port);
    int st = e2e_sh(&out,
                    "timeout 60 " RC_BIN("recalld") " --embedded-kafka --socket %s/s.sock "
                                                    "--metrics-port %d 2>&1 >/dev/null",
                    dir, busy);
    ASSERT_EQ(st, 1);
    char want[96];
    snprintf(want, sizeof want, "recalld: metrics 127.0.0.1:%d: bind: address already in use",
             busy);
    if (!strstr(out, want))
        RC__FAIL("output lacks \"%s\":\n%s", want, out);
    free(out);
    close(fd);
    st = e2e_sh(&out, RC_BIN("recalld") " --metrics-port 70000 --check-config 2>&1");
    ASSERT_EQ(st, 2);
    ASSERT(strstr(out, "metrics.port") != NULL);
    free(out);
    st = e2e_sh(&out, RC_BIN("recalld") " --metrics-port 0 --check-config 2>&1");
    ASSERT_EQ(st, 0);
    free(out);
    e2e_sh(NULL, "rm -rf %s", dir);
}

TEST(metrics_e2e_checkpoint_figures)
{
    static prom_page pg;
    char dir[] = "/tmp/rc-metrics-ck-XXXXXX", cfg[300], port[16];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    FILE *f = fopen(cfg, "w");
    ASSERT(f != NULL);
    fprintf(f, "{\"checkpoint\":{\"interval_ms\":300},\"log\":{\"stats_interval_ms\":0}}\n");
    fclose(f);
    int P = free_port();
    snprintf(port, sizeof port, "%d", P);
    const char *extra[] = {"--config", cfg, "--data-dir", dir, "--metrics-port", port, NULL};
    e2e_daemon d;
    e2e_start(&d, extra);
    produce(&d, 9, 3000, 0);
    json_decref(e2e_wait_consumed(d.sock, 3000, 120000));
    long deadline = mono_ms() + e2e_scaled_ms(120000);
    do {
        usleep(200000);
        scrape(P, &pg);
        /* until one contains both vectors of every item (dim 64) */
    } while ((!prom_has(&pg, "recalld_checkpoint_duration_seconds", NULL) ||
              prom_get(&pg, "recalld_checkpoint_bytes", "") <=
                  prom_get(&pg, "recalld_items", "") * 2 * 64 * 4) &&
             mono_ms() < deadline);
    if (prom_get(&pg, "recalld_checkpoint_bytes", "") <=
        prom_get(&pg, "recalld_items", "") * 2 * 64 * 4) { /* why, for the log */
        json_t *why = e2e_request(d.sock, "{\"op\":\"stats\"}");
        char *ck = json_dumps(json_object_get(why, "checkpoint"), JSON_COMPACT);
        char *ev = json_dumps(json_object_get(why, "events"), JSON_COMPACT);
        char *log = NULL;
        e2e_sh(&log, "tail -30 %s", d.log);
        fprintf(stderr, "items %lld, checkpoint %s\nevents %s\nlog:\n%s\n", e2e_int(why, "items"),
                ck ? ck : "-", ev ? ev : "-", log ? log : "-");
        free(ck);
        free(ev);
        free(log);
        json_decref(why);
    }
    ASSERT_DBL_OP(prom_get(&pg, "recalld_checkpoints_total", "result=\"ok\""), >=, 1);
    ASSERT_NEAR(prom_get(&pg, "recalld_checkpoints_total", "result=\"failed\""), 0, 0);
    ASSERT_DBL_OP(prom_get(&pg, "recalld_checkpoint_duration_seconds", ""), >, 0);
    ASSERT_DBL_OP(prom_get(&pg, "recalld_checkpoint_pause_seconds", ""), >=, 0);
    ASSERT_DBL_OP(prom_get(&pg, "recalld_checkpoint_bytes", ""), >,
                  prom_get(&pg, "recalld_items", "") * 2 * 64 * 4);
    /* written every 300 ms (or found unchanged, which renews it too): the
     * age falls again (a bound in seconds would measure the machine's load) */
    double prev = prom_get(&pg, "recalld_checkpoint_age_seconds", ""), age;
    ASSERT_DBL_OP(prev, >=, 0);
    deadline = mono_ms() + e2e_scaled_ms(120000);
    for (;; prev = age) {
        usleep(50000);
        scrape(P, &pg);
        age = prom_get(&pg, "recalld_checkpoint_age_seconds", "");
        if (age < prev || mono_ms() > deadline)
            break;
    }
    ASSERT_DBL_OP(age, <, prev); /* renewed between two scrapes */
    /* with checkpoints on, their numbers of the stats op are on the page too */
    char path[256] = "";
    json_t *st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT(json_is_true(json_object_get(json_object_get(st, "checkpoint"), "enabled")));
    json_object_del(st, "ok");
    scrape(P, &pg);
    ASSERT_GT(walk_stats(st, path, 0, &pg, 0, 1), 120);
    ASSERT_NEAR(prom_get(&pg, "recalld_checkpoint_enabled", ""), 1, 0);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* The page is rendered off the loop: while a render is held, /health is
 * answered; the held scrape then completes, and a close requested while a
 * render runs waits for it (the close callback comes after). */
TEST(metrics_http_render_off_loop_and_close_waits)
{
    thttp t;
    rc_metrics_opts o = {0};
    thttp_start(&t, &o);
    atomic_store(&t.hold, 1);
    int fd = tcp_connect("127.0.0.1", t.port);
    ASSERT_GE(fd, 0);
    const char *req = "GET /metrics HTTP/1.1\r\n\r\n";
    ASSERT_EQ(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    for (int i = 0; i < 60000 && !atomic_load(&t.rendering); i++)
        usleep(1000);
    ASSERT_EQ(atomic_load(&t.rendering), 1);
    atomic_store(&t.ready, 1);
    expect_status(t.port, "GET /health HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK");
    ASSERT_EQ(atomic_load(&t.rendering), 1); /* still held: health did not wait for it */
    atomic_store(&t.hold, 0);
    static char buf[4096];
    ASSERT_GT(read_all(fd, buf, sizeof buf, 60000), 0);
    close(fd);
    ASSERT_EQ(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    ASSERT(strstr(buf, "t_up 1\n") != NULL);
    /* Close while a render is held: not closed until it ends. */
    atomic_store(&t.hold, 1);
    fd = tcp_connect("127.0.0.1", t.port);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    for (int i = 0; i < 60000 && !atomic_load(&t.rendering); i++)
        usleep(1000);
    ASSERT_EQ(atomic_load(&t.rendering), 1);
    uv_async_send(&t.stop);
    int fd2;
    for (int i = 0; i < 60000 && (fd2 = tcp_connect("127.0.0.1", t.port)) >= 0; i++) {
        close(fd2);
        usleep(1000);
    }
    for (int i = 0; i < 500 && !atomic_load(&t.closed); i++) /* closing: give it time to end */
        usleep(1000);
    ASSERT_EQ(atomic_load(&t.closed), 0);
    atomic_store(&t.hold, 0);
    uv_thread_join(&t.thr);
    ASSERT_EQ(atomic_load(&t.closed), 1);
    ASSERT_EQ(uv_loop_close(&t.loop), 0);
    close(fd);
}

/* The recalld headers a source file includes ("recalld/x.h" -> x), one per
 * line in out (room for cap bytes). */
static void recalld_includes(const char *path, char *out, size_t cap)
{
    char *src = e2e_read_file(path);
    size_t n = 0;
    out[0] = '\0';
    for (const char *p = src; (p = strstr(p, "#include \"recalld/")); p++) {
        const char *name = p + strlen("#include \"recalld/"), *end = strstr(name, ".h\"");
        ASSERT(end != NULL);
        n += (size_t)snprintf(out + n, cap - n, "%.*s\n", (int)(end - name), name);
        ASSERT(n < cap);
    }
    free(src);
}

/* DESIGN.md's module map: histograms are a leaf (hist includes no recalld
 * header but its own), and the Prometheus page is above every module (only
 * the metrics sources, prom and the daemon include recalld/metrics.h). */
TEST(metrics_hist_is_a_leaf_and_the_page_is_on_top)
{
    char inc[4096];
    recalld_includes(RC_SOURCE_DIR "/src/hist.c", inc, sizeof inc);
    ASSERT_STREQ(inc, "hist\n");
    recalld_includes(RC_SOURCE_DIR "/include/recalld/hist.h", inc, sizeof inc);
    ASSERT_STREQ(inc, "");
    static const char *const dirs[] = {"/src/", "/src/bin/", "/include/recalld/"};
    int files = 0;
    for (size_t d = 0; d < RC_ARRAY_LEN(dirs); d++) {
        char dir[512], path[1024];
        snprintf(dir, sizeof dir, "%s%s", RC_SOURCE_DIR, dirs[d]);
        DIR *dp = opendir(dir);
        ASSERT(dp != NULL);
        for (struct dirent *de; (de = readdir(dp));) {
            size_t len = strlen(de->d_name);
            if (len < 3 ||
                (strcmp(de->d_name + len - 2, ".c") && strcmp(de->d_name + len - 2, ".h")))
                continue;
            snprintf(path, sizeof path, "%s%s", dir, de->d_name);
            recalld_includes(path, inc, sizeof inc);
            files++;
            if (!strstr(inc, "metrics\n") || (d == 0 && !strncmp(de->d_name, "metrics", 7)) ||
                (d == 0 && !strcmp(de->d_name, "prom.c")) ||
                (d == 1 && !strcmp(de->d_name, "recalld.c")))
                continue;
            RC__FAIL("%s%s includes recalld/metrics.h: only the page's own sources and the daemon "
                     "may",
                     dirs[d], de->d_name);
        }
        closedir(dp);
    }
    ASSERT_GT(files, 50);
}
