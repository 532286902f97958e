/* metrics — see include/recalld/metrics.h.
 *
 * HTTP invariants (loop thread only):
 *  - a connection is in the server's list from accept until its close starts;
 *    the sweep closes any listed connection older than timeout_ms;
 *  - states go READING -> WRITING -> LINGER -> closed, never back: one request
 *    per connection, answered with Connection: close;
 *  - LINGER: after our FIN, reading continues (discarding) until the peer's
 *    EOF, so that unread request bytes never turn our close into an RST that
 *    could destroy the answer in flight;
 *  - the server is freed when its two handles and every connection are closed. */
#include "recalld/metrics.h"

#include <arpa/inet.h>
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/api.h"
#include "recalld/common.h"
#include "recalld/consumer.h"
#include "recalld/engine.h"
#include "recalld/index.h"
#include "recalld/log.h"
#include "recalld/server.h"
#include "recalld/table.h"

#define MOD          "metrics"
#define TARGET_MAX   2048 /* request-target bytes */
#define METHOD_MAX   16
#define SWEEP_MIN_MS 10
#define SWEEP_MAX_MS 250
#define HDR_MAX      256

/* ---- histograms -------------------------------------------------------- */

const uint64_t rc_hist_latency_us[] = {50,     100,     250,     500,     1000,    2500,
                                       5000,   10000,   25000,   50000,   100000,  250000,
                                       500000, 1000000, 2500000, 5000000, 10000000};
const uint32_t rc_hist_latency_us_n = RC_ARRAY_LEN(rc_hist_latency_us);
const uint64_t rc_hist_freshness_us[] = {1000,     2500,     5000,     10000,    25000,   50000,
                                         100000,   250000,   500000,   1000000,  2500000, 5000000,
                                         10000000, 30000000, 60000000, 120000000};
const uint32_t rc_hist_freshness_us_n = RC_ARRAY_LEN(rc_hist_freshness_us);

void rc_hist_init(rc_hist *h, const uint64_t *le, uint32_t nb, double scale)
{
    memset(h, 0, sizeof *h);
    h->scale = scale > 0 ? scale : 1;
    for (uint32_t i = 0; i < nb && h->nb < RC_HIST_MAX; i++)
        if (h->nb == 0 || le[i] > h->le[h->nb - 1])
            h->le[h->nb++] = le[i];
}

void rc_hist_observe(rc_hist *h, uint64_t v)
{
    uint32_t lo = 0, hi = h->nb; /* first bound >= v, or nb */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (h->le[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    atomic_fetch_add_explicit(&h->n[lo], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

uint64_t rc_hist_count(const rc_hist *h)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i <= h->nb; i++)
        n += atomic_load_explicit(&h->n[i], memory_order_relaxed);
    return n;
}

/* ---- exposition text --------------------------------------------------- */

/* Shortest %g form that reads back as v. */
static void fmt_double(char *out, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(out, cap, "%.0f", v);
        return;
    }
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void put_escaped(rc_buf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            rc_buf_puts(b, "\\\\");
        else if (*s == '\n')
            rc_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            rc_buf_puts(b, "\\\"");
        else
            rc_buf_append(b, s, 1);
    }
}

void rc_prom_family(rc_buf *b, const char *name, const char *type, const char *help)
{
    rc_buf_printf(b, "# HELP %s ", name);
    put_escaped(b, help, 0);
    rc_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

static void sample_text(rc_buf *b, const char *name, const char *labels, const char *val)
{
    if (labels && labels[0])
        rc_buf_printf(b, "%s{%s} %s\n", name, labels, val);
    else
        rc_buf_printf(b, "%s %s\n", name, val);
}

void rc_prom_sample(rc_buf *b, const char *name, const char *labels, double v)
{
    char val[40];
    fmt_double(val, sizeof val, v);
    sample_text(b, name, labels, val);
}

void rc_prom_sample_u64(rc_buf *b, const char *name, const char *labels, uint64_t v)
{
    char val[24];
    snprintf(val, sizeof val, "%llu", (unsigned long long)v);
    sample_text(b, name, labels, val);
}

void rc_prom_label(rc_buf *labels, const char *name, const char *value)
{
    rc_buf_printf(labels, "%s%s=\"", labels->len ? "," : "", name);
    put_escaped(labels, value, 1);
    rc_buf_puts(labels, "\"");
}

/* v * h->scale, computed as a division when the scale is 1/N so that bounds
 * print as written (50 us -> 5e-05, not 4.9999999999999996e-05). */
static double scaled(const rc_hist *h, double v)
{
    double inv = 1.0 / h->scale, r = round(inv);
    if (h->scale < 1 && fabs(inv - r) < 1e-9 * r)
        return v / r;
    return v * h->scale;
}

void rc_prom_hist(rc_buf *b, const char *name, const char *labels, const rc_hist *h)
{
    uint64_t snap[RC_HIST_MAX + 1], cum = 0;
    char bname[160], lab[512], le[40];
    const char *sep = labels && labels[0] ? "," : "";
    for (uint32_t i = 0; i <= h->nb; i++)
        snap[i] = atomic_load_explicit(&h->n[i], memory_order_relaxed);
    snprintf(bname, sizeof bname, "%s_bucket", name);
    for (uint32_t i = 0; i <= h->nb; i++) {
        cum += snap[i];
        if (i < h->nb)
            fmt_double(le, sizeof le, scaled(h, (double)h->le[i]));
        else
            snprintf(le, sizeof le, "+Inf");
        snprintf(lab, sizeof lab, "%s%sle=\"%s\"", labels ? labels : "", sep, le);
        rc_prom_sample_u64(b, bname, lab, cum);
    }
    snprintf(bname, sizeof bname, "%s_sum", name);
    rc_prom_sample(b, bname, labels,
                   scaled(h, (double)atomic_load_explicit(&h->sum, memory_order_relaxed)));
    snprintf(bname, sizeof bname, "%s_count", name);
    rc_prom_sample_u64(b, bname, labels, cum);
}

/* ---- HTTP server ------------------------------------------------------- */

enum { ST_READING, ST_WRITING, ST_LINGER };

typedef struct hconn hconn;

struct hconn {
    uv_tcp_t tcp;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    rc_metrics *m;
    hconn *prev, *next;
    uint64_t start_ms;
    char *req; /* request bytes [0, len), room for max_request + 1 */
    size_t len, scanned;
    char hdr[HDR_MAX];
    rc_buf body;
    int state, listed;
};

struct rc_metrics {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep;
    rc_metrics_opts o;
    char bind[64];
    int port;
    hconn *head;
    size_t nconns;    /* not yet freed */
    unsigned handles; /* listener + sweep not yet closed */
    int closing;
    void (*close_cb)(void *);
    void *close_arg;
    _Atomic uint64_t accepted, refused, scrapes, health, bad, timeouts, clients;
};

static void bump(_Atomic uint64_t *v, int64_t d)
{
    atomic_fetch_add_explicit(v, (uint64_t)d, memory_order_relaxed);
}

static void maybe_free(rc_metrics *m)
{
    if (!m->closing || m->handles || m->nconns)
        return;
    void (*cb)(void *) = m->close_cb;
    void *arg = m->close_arg;
    free(m);
    if (cb)
        cb(arg);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    rc_metrics *m = h->data;
    m->handles--;
    maybe_free(m);
}

static void on_conn_closed(uv_handle_t *h)
{
    hconn *c = h->data;
    rc_metrics *m = c->m;
    free(c->req);
    rc_buf_free(&c->body);
    free(c);
    m->nconns--;
    maybe_free(m);
}

static void conn_close(hconn *c)
{
    rc_metrics *m = c->m;
    if (!c->listed)
        return; /* already closing */
    c->listed = 0;
    if (c->prev)
        c->prev->next = c->next;
    else
        m->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bump(&m->clients, -1);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    hconn *c = h->data;
    *buf = uv_buf_init(c->req, (unsigned)c->m->o.max_request); /* discarded */
}

static void on_linger_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0)
        conn_close(st->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    hconn *c = req->data;
    if (status < 0 || !c->listed) {
        conn_close(c);
        return;
    }
    c->state = ST_LINGER;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_linger_alloc, on_linger_read) != 0)
        conn_close(c);
}

static void on_written(uv_write_t *req, int status)
{
    hconn *c = req->data;
    if (status < 0 || !c->listed) {
        conn_close(c);
        return;
    }
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
}

/* Sends status line, headers and (unless head) c->body; then the conn closes. */
static void respond(hconn *c, int minor, int code, const char *reason, const char *ctype,
                    const char *extra, int head)
{
    uv_buf_t b[2];
    int n = snprintf(c->hdr, sizeof c->hdr,
                     "HTTP/1.%d %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     minor, code, reason, ctype, c->body.len, extra ? extra : "");
    assert(n > 0 && (size_t)n < sizeof c->hdr);
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->state = ST_WRITING;
    b[0] = uv_buf_init(c->hdr, (unsigned)n);
    b[1] = uv_buf_init(c->body.data, (unsigned)c->body.len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, b, head || !c->body.len ? 1 : 2, on_written))
        conn_close(c);
}

static void respond_text(hconn *c, int minor, int code, const char *reason, const char *text,
                         const char *extra, int head)
{
    rc_buf_reset(&c->body);
    rc_buf_puts(&c->body, text);
    if (code >= 400 && code < 500)
        bump(&c->m->bad, 1);
    respond(c, minor, code, reason, "text/plain; charset=utf-8", extra, head);
}

typedef struct http_req {
    char method[METHOD_MAX + 1];
    const char *path; /* inside the conn's buffer, NUL-terminated, query cut off */
    int minor;        /* HTTP/1.minor */
} http_req;

static int is_tchar(unsigned char ch) { return ch >= 'A' && ch <= 'Z'; }

/* Parses the request line and checks the header lines' shape. The buffer is
 * modified (NULs). 0 or -1 (malformed). */
static int parse_request(char *p, size_t n, http_req *r)
{
    char *eol = memchr(p, '\n', n), *sp, *q;
    size_t mlen = 0;
    if (!eol)
        return -1;
    *eol = '\0';
    if (eol > p && eol[-1] == '\r')
        eol[-1] = '\0';
    while (is_tchar((unsigned char)p[mlen]) && mlen < METHOD_MAX)
        mlen++;
    if (mlen == 0 || p[mlen] != ' ')
        return -1;
    memcpy(r->method, p, mlen);
    r->method[mlen] = '\0';
    q = p + mlen + 1;
    if (*q != '/' || !(sp = strchr(q, ' ')) || (size_t)(sp - q) > TARGET_MAX)
        return -1;
    for (char *t = q; t < sp; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f)
            return -1;
    *sp = '\0';
    if (strcmp(sp + 1, "HTTP/1.0") && strcmp(sp + 1, "HTTP/1.1"))
        return -1;
    r->minor = sp[8] - '0';
    if ((sp = strchr(q, '?')))
        *sp = '\0';
    r->path = q;
    /* Header lines: "name: value", no NUL bytes; the blank line ends them. */
    for (char *line = eol + 1; line < p + n;) {
        char *end = memchr(line, '\n', (size_t)(p + n - line));
        size_t len = end ? (size_t)(end - line) : (size_t)(p + n - line);
        if (len && line[len - 1] == '\r')
            len--;
        if (len == 0)
            break;
        if (memchr(line, '\0', len) || !memchr(line, ':', len) || line[0] == ':' ||
            line[0] == ' ' || line[0] == '\t')
            return -1;
        line += (end ? (size_t)(end - line) + 1 : len);
    }
    return 0;
}

static void serve(hconn *c)
{
    rc_metrics *m = c->m;
    http_req r;
    char why[160];
    if (parse_request(c->req, c->len, &r) != 0)
        return respond_text(c, 0, 400, "Bad Request", "bad request\n", NULL, 0);
    int head = strcmp(r.method, "HEAD") == 0;
    if (!head && strcmp(r.method, "GET") != 0)
        return respond_text(c, r.minor, 405, "Method Not Allowed", "method not allowed\n",
                            "Allow: GET, HEAD\r\n", 0);
    if (strcmp(r.path, "/health") == 0) {
        bump(&m->health, 1);
        why[0] = '\0';
        if (!m->o.ready || m->o.ready(m->o.ud, why, sizeof why))
            return respond_text(c, r.minor, 200, "OK", "ok\n", NULL, head);
        rc_buf_reset(&c->body);
        rc_buf_printf(&c->body, "not ready: %s\n", why);
        return respond(c, r.minor, 503, "Service Unavailable", "text/plain; charset=utf-8", NULL,
                       head);
    }
    if (strcmp(r.path, "/metrics") != 0)
        return respond_text(c, r.minor, 404, "Not Found", "not found: try /metrics or /health\n",
                            NULL, head);
    rc_buf_free(&c->body);
    rc_buf_init(&c->body, m->o.max_body);
    m->o.render(m->o.ud, &c->body);
    if (c->body.overflow) {
        rc_log_error(MOD, "metrics page over max_body", "max_body=%zu", m->o.max_body);
        return respond_text(c, r.minor, 500, "Internal Server Error", "metrics page too large\n",
                            NULL, head);
    }
    bump(&m->scrapes, 1);
    respond(c, r.minor, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, head);
}

/* 1 when req[0..len) holds the blank line that ends the headers. */
static int headers_complete(hconn *c)
{
    size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
    for (size_t i = from; i < c->len; i++) {
        if (c->req[i] != '\n')
            continue;
        if ((i >= 1 && c->req[i - 1] == '\n') ||
            (i >= 2 && c->req[i - 1] == '\r' && c->req[i - 2] == '\n'))
            return 1;
    }
    c->scanned = c->len;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    hconn *c = h->data;
    size_t room = c->m->o.max_request - c->len;
    *buf = uv_buf_init(c->req + c->len, (unsigned)room);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    hconn *c = st->data;
    if (n == 0 || c->state != ST_READING)
        return;
    if (n < 0) { /* EOF before a complete request, or an error */
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    c->req[c->len] = '\0';
    if (headers_complete(c))
        return serve(c);
    if (c->len >= c->m->o.max_request)
        respond_text(c, 0, 431, "Request Header Fields Too Large", "request too large\n", NULL, 0);
}

static void refuse(uv_stream_t *ls)
{
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t)
        return;
    uv_tcp_init(ls->loop, t);
    if (uv_accept(ls, (uv_stream_t *)t) == 0)
        uv_tcp_close_reset(t, (uv_close_cb)free);
    else
        uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void on_connection(uv_stream_t *ls, int status)
{
    rc_metrics *m = ls->data;
    if (status < 0) {
        rc_log_warn(MOD, "accept failed", "err=%s", uv_strerror(status));
        return;
    }
    if (atomic_load(&m->clients) >= m->o.max_clients) {
        bump(&m->refused, 1);
        refuse(ls);
        return;
    }
    hconn *c = calloc(1, sizeof *c);
    if (!c || !(c->req = malloc(m->o.max_request + 1))) {
        free(c);
        refuse(ls);
        return;
    }
    c->m = m;
    rc_buf_init(&c->body, 0);
    uv_tcp_init(m->loop, &c->tcp);
    c->tcp.data = c;
    m->nconns++;
    c->listed = 1;
    c->next = m->head;
    if (m->head)
        m->head->prev = c;
    m->head = c;
    bump(&m->clients, 1);
    c->start_ms = uv_now(m->loop);
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    bump(&m->accepted, 1);
}

static void on_sweep(uv_timer_t *t)
{
    rc_metrics *m = t->data;
    uint64_t now = uv_now(m->loop);
    hconn *next;
    for (hconn *c = m->head; c; c = next) {
        next = c->next;
        if (now - c->start_ms < m->o.timeout_ms)
            continue;
        if (c->state != ST_LINGER)
            bump(&m->timeouts, 1);
        conn_close(c);
    }
}

static int resolve(rc_metrics *m, struct sockaddr_storage *sa, char *errbuf, size_t errlen)
{
    if (uv_ip4_addr(m->bind, m->port, (struct sockaddr_in *)sa) == 0 &&
        strchr(m->bind, ':') == NULL)
        return 0;
    if (uv_ip6_addr(m->bind, m->port, (struct sockaddr_in6 *)sa) == 0)
        return 0;
    return rc_err(errbuf, errlen, RC_EINVAL, "metrics: bind %s: expected an IP address", m->bind);
}

static int listen_on(rc_metrics *m, char *errbuf, size_t errlen)
{
    struct sockaddr_storage sa;
    int len = sizeof sa, r;
    int rc = resolve(m, &sa, errbuf, errlen);
    if (rc)
        return rc;
    uv_tcp_init(m->loop, &m->listener);
    m->listener.data = m;
    m->handles++;
    if ((r = uv_tcp_bind(&m->listener, (struct sockaddr *)&sa, 0)) == 0 &&
        (r = uv_listen((uv_stream_t *)&m->listener, 64, on_connection)) == 0 &&
        (r = uv_tcp_getsockname(&m->listener, (struct sockaddr *)&sa, &len)) == 0) {
        m->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                 : ((struct sockaddr_in *)&sa)->sin_port);
        return 0;
    }
    return rc_err(errbuf, errlen, RC_EIO, "metrics %s%s%s:%d: bind: %s",
                  strchr(m->bind, ':') ? "[" : "", m->bind, strchr(m->bind, ':') ? "]" : "",
                  m->port, uv_strerror(r));
}

int rc_metrics_start(uv_loop_t *loop, const rc_metrics_opts *opts, rc_metrics **out, char *errbuf,
                     size_t errlen)
{
    if (!loop || !opts || !out || !opts->render)
        return rc_err(errbuf, errlen, RC_EINVAL, "metrics: invalid arguments");
    *out = NULL;
    const char *bind = opts->bind && opts->bind[0] ? opts->bind : "127.0.0.1";
    if (strlen(bind) >= sizeof(((rc_metrics *)0)->bind))
        return rc_err(errbuf, errlen, RC_EINVAL, "metrics: bind %s: expected an IP address", bind);
    rc_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return rc_err(errbuf, errlen, RC_ENOMEM, "metrics: out of memory");
    m->loop = loop;
    m->o = *opts;
    m->o.bind = NULL;
    snprintf(m->bind, sizeof m->bind, "%s", bind);
    m->port = opts->port;
    m->o.max_request = opts->max_request ? opts->max_request : 8192;
    m->o.timeout_ms = opts->timeout_ms ? opts->timeout_ms : 5000;
    m->o.max_clients = opts->max_clients ? opts->max_clients : 16;
    m->o.max_body = opts->max_body ? opts->max_body : (size_t)16 << 20;
    int rc = listen_on(m, errbuf, errlen);
    if (rc) {
        if (m->handles) { /* the listener closes through the loop, then m is freed */
            m->closing = 1;
            uv_close((uv_handle_t *)&m->listener, on_server_handle_closed);
        } else {
            free(m);
        }
        return rc;
    }
    uv_timer_init(loop, &m->sweep);
    m->sweep.data = m;
    m->handles++;
    uint64_t every = RC_MAX(SWEEP_MIN_MS, RC_MIN(SWEEP_MAX_MS, m->o.timeout_ms / 4));
    uv_timer_start(&m->sweep, on_sweep, every, every);
    if (!strcmp(m->bind, "127.0.0.1") || !strcmp(m->bind, "::1"))
        rc_log_info(MOD, "listening", "addr=%s port=%d", m->bind, m->port);
    else
        rc_log_warn(MOD, "listening beyond loopback", "addr=%s port=%d", m->bind, m->port);
    *out = m;
    return 0;
}

int rc_metrics_port(const rc_metrics *m) { return m ? m->port : -1; }

void rc_metrics_close(rc_metrics *m, void (*cb)(void *arg), void *arg)
{
    if (!m || m->closing)
        return;
    m->closing = 1;
    m->close_cb = cb;
    m->close_arg = arg;
    uv_close((uv_handle_t *)&m->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&m->sweep, on_server_handle_closed);
    while (m->head)
        conn_close(m->head);
}

void rc_metrics_stats_get(const rc_metrics *m, rc_metrics_stats *st)
{
    if (!m || !st)
        return;
    rc_metrics *w = (rc_metrics *)m; /* atomic loads only */
    st->accepted = atomic_load(&w->accepted);
    st->refused = atomic_load(&w->refused);
    st->scrapes = atomic_load(&w->scrapes);
    st->health = atomic_load(&w->health);
    st->bad_requests = atomic_load(&w->bad);
    st->timeouts = atomic_load(&w->timeouts);
    st->clients = atomic_load(&w->clients);
}

/* ---- the daemon's page ------------------------------------------------- */

size_t rc_metrics_rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static void counter(rc_buf *b, const char *name, const char *help, uint64_t v)
{
    rc_prom_family(b, name, "counter", help);
    rc_prom_sample_u64(b, name, NULL, v);
}

static void gauge(rc_buf *b, const char *name, const char *help, double v)
{
    rc_prom_family(b, name, "gauge", help);
    rc_prom_sample(b, name, NULL, v);
}

static void render_events(rc_buf *b, rc_engine *e)
{
    rc_engine_counters c;
    char lab[64];
    rc_engine_counters_get(e, &c);
    counter(b, "recalld_events_consumed_total", "Kafka messages handed to the engine.", c.consumed);
    counter(b, "recalld_events_applied_total", "Valid click events applied to the model.",
            c.applied);
    rc_prom_family(b, "recalld_events_invalid_total", "counter",
                   "Refused events (dead-lettered), by reason.");
    for (int r = 1; r < RC_EV_REASON_COUNT; r++) {
        snprintf(lab, sizeof lab, "reason=\"%s\"", rc_event_reason_name((enum rc_event_reason)r));
        rc_prom_sample_u64(b, "recalld_events_invalid_total", lab, c.invalid[r]);
    }
    counter(b, "recalld_events_ignored_total", "Valid events of a type other than click.",
            c.ignored);
    counter(b, "recalld_events_rejected_capacity_total",
            "Valid events not applied because a configured bound was reached.",
            c.rejected_capacity);
    counter(b, "recalld_events_lost_total",
            "Events deleted from Kafka (retention) before recalld read them.", c.lost);
    counter(b, "recalld_training_pairs_total", "SGNS (context, target) pairs trained.", c.pairs);
    counter(b, "recalld_items_created_total", "Items created by the stream.", c.new_items);
    gauge(b, "recalld_items", "Rows of the item table.", rc_table_size(rc_engine_table(e)));
    rc_prom_family(b, "recalld_freshness_seconds", "histogram",
                   "Time from a batch being consumed to its events applied and the index "
                   "flushed.");
    rc_prom_hist(b, "recalld_freshness_seconds", NULL, rc_engine_freshness(e));
}

static void render_index(rc_buf *b, rc_engine *e)
{
    rc_index_stats is;
    rc_index_stats_get(rc_engine_index(e), &is);
    gauge(b, "recalld_index_size", "Rows searchable in the live index.", (double)is.size);
    gauge(b, "recalld_index_partitions", "Index partitions (city, category).",
          (double)is.partitions);
    gauge(b, "recalld_index_ivf_partitions", "Index partitions that are IVF.",
          (double)is.ivf_partitions);
    gauge(b, "recalld_index_pending", "Re-index backlog: rows touched and not yet checked.",
          (double)is.pending);
    gauge(b, "recalld_index_staleness_seconds", "Age of the oldest pending touch, 0 when none.",
          is.staleness_ms / 1e3);
    counter(b, "recalld_index_added_total", "Rows added to the index.", is.added);
    counter(b, "recalld_index_reindexed_total", "Rows re-indexed after drifting.", is.reindexed);
    counter(b, "recalld_index_skipped_small_drift_total",
            "Touched rows left as indexed (drift under the threshold).", is.skipped_small_drift);
    counter(b, "recalld_index_retrains_total", "IVF partitions (re)trained.", is.retrains);
    gauge(b, "recalld_index_overflow_rows",
          "Rows in the overflow partition (index.max_partitions reached).",
          (double)is.overflow_rows);
    gauge(b, "recalld_index_new_item_freshness_p50_seconds",
          "Median time from a new item's first touch to searchable (recent window).",
          (double)is.fresh_p50_us / 1e6);
    gauge(b, "recalld_index_new_item_freshness_p99_seconds",
          "99th percentile of the time from a new item's first touch to searchable.",
          (double)is.fresh_p99_us / 1e6);
    gauge(b, "recalld_index_bytes", "Memory held by the index.", (double)is.bytes);
}

static void render_kafka(rc_buf *b, rc_consumer *k, const char *topic)
{
    int32_t parts[1024];
    int64_t lags[1024];
    rc_consumer_stats st;
    rc_buf lab;
    size_t n = rc_consumer_lags(k, parts, lags, RC_ARRAY_LEN(parts));
    rc_consumer_stats_get(k, &st);
    rc_prom_family(b, "recalld_kafka_consumer_lag", "gauge",
                   "Messages behind the high watermark, per assigned partition (refreshed "
                   "every second).");
    rc_buf_init(&lab, 0);
    for (size_t i = 0; i < RC_MIN(n, RC_ARRAY_LEN(parts)); i++) {
        char p[16];
        if (lags[i] < 0)
            continue;
        snprintf(p, sizeof p, "%d", parts[i]);
        rc_buf_reset(&lab);
        rc_prom_label(&lab, "topic", topic ? topic : "");
        rc_prom_label(&lab, "partition", p);
        rc_prom_sample(b, "recalld_kafka_consumer_lag", lab.data, (double)lags[i]);
    }
    rc_buf_free(&lab);
    gauge(b, "recalld_kafka_assigned_partitions", "Partitions assigned to this consumer.",
          st.assigned);
    counter(b, "recalld_kafka_messages_total", "Messages consumed.", st.messages);
    counter(b, "recalld_kafka_bytes_total", "Payload bytes consumed.", st.bytes);
    counter(b, "recalld_kafka_dead_letters_total", "Events sent to the dead-letter sink.",
            st.dead_letters);
    counter(b, "recalld_kafka_dead_letter_errors_total", "Dead letters that could not be written.",
            st.dead_letter_errors);
    counter(b, "recalld_kafka_dead_letters_dropped_total",
            "Dead letters deleted by a rotation of kafka.dlq_file (kafka.dlq_file_max_mb).",
            st.dead_letters_dropped);
    counter(b, "recalld_kafka_errors_total", "Consumer errors reported by librdkafka.", st.errors);
    counter(b, "recalld_kafka_paused_batches_total",
            "Batches refused because the trainer was busy (backpressure).", st.refused_batches);
    counter(b, "recalld_kafka_commits_total", "Offset commits acknowledged.", st.commits);
    counter(b, "recalld_kafka_commit_errors_total", "Offset commits that failed.",
            st.commit_errors);
    counter(b, "recalld_kafka_lost_total",
            "Offsets deleted from the log before this process read them (retention).", st.lost);
    counter(b, "recalld_kafka_offset_gaps_total",
            "Offsets skipped that held no readable message (compaction, transaction markers).",
            st.offset_gaps);
    counter(b, "recalld_kafka_skipped_applied_total",
            "Messages below the model's position, dropped (already applied).",
            st.skipped_applied);
    counter(b, "recalld_kafka_rebalances_total", "Assignments and revokes seen.", st.rebalances);
}

static void render_server(rc_buf *b, rc_server *s)
{
    rc_server_stats st;
    rc_server_stats_get(s, &st);
    gauge(b, "recalld_socket_clients", "Unix socket clients connected now.", (double)st.clients);
    counter(b, "recalld_socket_accepted_total", "Unix socket connections accepted.", st.accepted);
    rc_prom_family(b, "recalld_socket_refused_total", "counter",
                   "Unix socket connections refused, by reason.");
    rc_prom_sample_u64(b, "recalld_socket_refused_total", "reason=\"max_clients\"", st.refused_max);
    rc_prom_sample_u64(b, "recalld_socket_refused_total", "reason=\"uid\"", st.refused_uid);
    counter(b, "recalld_socket_requests_total", "Request lines dispatched.", st.requests);
    counter(b, "recalld_socket_lines_too_long_total", "Request lines over socket.max_line.",
            st.too_long);
    counter(b, "recalld_socket_idle_closed_total", "Clients closed after socket.idle_timeout_ms.",
            st.idle_closed);
    counter(b, "recalld_socket_slow_dropped_total",
            "Clients dropped for not reading their replies (socket.max_outbuf).", st.slow_dropped);
    gauge(b, "recalld_socket_inflight", "Requests running on worker threads now.",
          (double)st.inflight);
}

static void render_api(rc_buf *b, rc_api *a)
{
    const char *why;
    char lab[32];
    gauge(b, "recalld_ready", "1 when health is ok: model loaded, partitions assigned.",
          rc_api_ready(a, &why));
    counter(b, "recalld_request_errors_total", "Requests answered ok:false.",
            atomic_load(&a->errors));
    rc_prom_family(b, "recalld_request_duration_seconds", "histogram",
                   "Time to handle one socket request (parse, search, reply), by op.");
    for (int op = 0; op < RC_API_OP_COUNT; op++) {
        snprintf(lab, sizeof lab, "op=\"%s\"", rc_api_op_name(op));
        rc_prom_hist(b, "recalld_request_duration_seconds", lab, &a->latency[op]);
    }
    counter(b, "recalld_two_tower_requests_total", "Recall requests with \"mode\":\"two_tower\".",
            atomic_load(&a->tt_requests));
    counter(b, "recalld_two_tower_request_errors_total",
            "Two-tower recall requests answered ok:false.", atomic_load(&a->tt_errors));
    rc_prom_family(b, "recalld_two_tower_request_duration_seconds", "histogram",
                   "Time to handle one two_tower recall request (user tower, search, reply).");
    rc_prom_hist(b, "recalld_two_tower_request_duration_seconds", NULL, &a->tt_latency);
}

static void render_tower(rc_buf *b, rc_engine *e)
{
    rc_engine_tower_info ti;
    rc_engine_tower_info_get(e, &ti);
    gauge(b, "recalld_tower_loaded", "1 when a two-tower model is served.", ti.loaded);
    gauge(b, "recalld_tower_loading", "1 while a two-tower model load is in progress.",
          ti.loading);
    gauge(b, "recalld_tower_params", "Parameters of the served two-tower model.",
          (double)ti.params);
    gauge(b, "recalld_tower_dim", "Vector size of the served two-tower model.", ti.dim);
    gauge(b, "recalld_tower_items", "Items with an item-tower vector.", ti.items);
    counter(b, "recalld_tower_reloads_total", "Two-tower model loads that succeeded.", ti.loads);
    counter(b, "recalld_tower_reload_failures_total",
            "Two-tower model loads refused (the served model stayed).", ti.load_failures);
    counter(b, "recalld_tower_recomputed_total",
            "Item-tower vectors recomputed after their word2vec vector drifted.", ti.recomputed);
    gauge(b, "recalld_tower_refresh_pending", "Rows queued for a word2vec drift check.",
          (double)ti.refresh_pending);
    gauge(b, "recalld_tower_index_size", "Rows searchable in the tower index.",
          (double)ti.index.size);
    gauge(b, "recalld_tower_index_pending", "Tower index backlog: rows touched, not yet checked.",
          (double)ti.index.pending);
    gauge(b, "recalld_tower_index_staleness_seconds",
          "Age of the oldest pending tower index touch, 0 when none.", ti.index.staleness_ms / 1e3);
    gauge(b, "recalld_tower_index_new_item_freshness_p50_seconds",
          "Median time from a new item's first touch to searchable in the tower index.",
          (double)ti.index.fresh_p50_us / 1e6);
    gauge(b, "recalld_tower_index_new_item_freshness_p99_seconds",
          "99th percentile of the time from a new item's first touch to searchable in the "
          "tower index.", (double)ti.index.fresh_p99_us / 1e6);
    gauge(b, "recalld_tower_bytes", "Memory held by the served two-tower bundle.",
          (double)ti.bytes);
    rc_engine_retrain_info ri;
    rc_engine_retrain_info_get(e, &ri);
    rc_prom_family(b, "recalld_tower_retrains_total", "counter",
                   "Background retrains of the two-tower model, by outcome.");
    rc_prom_sample_u64(b, "recalld_tower_retrains_total", "result=\"done\"", ri.done);
    rc_prom_sample_u64(b, "recalld_tower_retrains_total", "result=\"failed\"", ri.failed);
    rc_prom_sample_u64(b, "recalld_tower_retrains_total", "result=\"skipped\"", ri.skipped);
    gauge(b, "recalld_tower_retrain_running", "1 while a background retrain runs.", ri.running);
    gauge(b, "recalld_tower_retrain_last_duration_seconds",
          "Duration of the last retrain, snapshot to serving (0: none yet).", ri.last_seconds);
    gauge(b, "recalld_tower_retrain_last_examples",
          "Training examples in the replay buffer at the last retrain.",
          (double)ri.last_examples);
    gauge(b, "recalld_tower_retrain_last_loss",
          "Mean training loss over the last 10% of the last retrain's examples.", ri.last_loss);
    gauge(b, "recalld_tower_replay_clicks", "Clicks held in the replay buffer.",
          (double)ri.replay.fill);
    gauge(b, "recalld_tower_replay_capacity_clicks", "Bound of the replay buffer (0: off).",
          (double)ri.replay.capacity);
    gauge(b, "recalld_tower_replay_bytes", "Memory of the replay buffer.",
          (double)ri.replay.bytes);
}

static void render_checkpoint(rc_buf *b, const rc_metrics_sources *s)
{
    rc_metrics_checkpoint ck = {.last_ok_wall_ms = -1, .last_duration_s = -1, .last_pause_s = -1};
    if (s->checkpoint(s->checkpoint_arg, &ck) != 0)
        return;
    rc_prom_family(b, "recalld_checkpoint_age_seconds", "gauge",
                   "Time since the newest durable checkpoint was completed (absent: none).");
    if (ck.last_ok_wall_ms >= 0)
        rc_prom_sample(b, "recalld_checkpoint_age_seconds", NULL,
                       (double)RC_MAX(0, rc_wall_ms() - ck.last_ok_wall_ms) / 1e3);
    rc_prom_family(b, "recalld_checkpoint_duration_seconds", "gauge",
                   "Duration of the last checkpoint write (absent: none yet).");
    if (ck.last_duration_s >= 0)
        rc_prom_sample(b, "recalld_checkpoint_duration_seconds", NULL, ck.last_duration_s);
    rc_prom_family(b, "recalld_checkpoint_pause_seconds", "gauge",
                   "Model writer's pause to copy the last checkpoint (absent: none yet).");
    if (ck.last_pause_s >= 0)
        rc_prom_sample(b, "recalld_checkpoint_pause_seconds", NULL, ck.last_pause_s);
    rc_prom_family(b, "recalld_checkpoints_total", "counter", "Checkpoint writes, by result.");
    rc_prom_sample_u64(b, "recalld_checkpoints_total", "result=\"ok\"", ck.written);
    rc_prom_sample_u64(b, "recalld_checkpoints_total", "result=\"failed\"", ck.failed);
    gauge(b, "recalld_checkpoint_bytes", "Size of the newest durable checkpoint.",
          (double)ck.last_bytes);
}

static void render_self(rc_buf *b, rc_metrics *m)
{
    rc_metrics_stats st;
    rc_metrics_stats_get(m, &st);
    counter(b, "recalld_metrics_scrapes_total", "Answers to GET /metrics.", st.scrapes);
    counter(b, "recalld_metrics_bad_requests_total", "HTTP requests answered 4xx.",
            st.bad_requests);
    counter(b, "recalld_metrics_timeouts_total", "HTTP connections closed by the timeout.",
            st.timeouts);
    counter(b, "recalld_metrics_refused_total", "HTTP connections over the client limit.",
            st.refused);
}

void rc_metrics_render(const rc_metrics_sources *s, rc_buf *out)
{
    rc_prom_family(out, "recalld_build_info", "gauge", "Always 1; the version is a label.");
    rc_prom_sample(out, "recalld_build_info", "version=\"" RC_VERSION "\"", 1);
    gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
          (double)rc_metrics_rss_bytes());
    if (s->api)
        render_api(out, s->api);
    if (s->engine) {
        render_events(out, s->engine);
        render_index(out, s->engine);
        render_tower(out, s->engine);
    }
    if (s->consumer)
        render_kafka(out, s->consumer, s->topic);
    if (s->server)
        render_server(out, s->server);
    if (s->checkpoint)
        render_checkpoint(out, s);
    if (s->metrics)
        render_self(out, s->metrics);
    if (s->extra)
        s->extra(s->extra_arg, out);
}
