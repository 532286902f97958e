/* metrics_http — the /metrics and /health listener (metrics.h).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/log.h"

#define MOD          "metrics"
#define TARGET_MAX   2048 /* request-target bytes */
#define METHOD_MAX   16
#define SWEEP_MIN_MS 10
#define SWEEP_MAX_MS 250
#define HDR_MAX      256

enum { ST_READING, ST_RENDERING, ST_WRITING, ST_LINGER };

typedef struct hconn hconn;

struct hconn {
    uv_tcp_t tcp;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    uv_work_t work; /* the /metrics page is rendered on a libuv worker */
    rc_metrics *m;
    hconn *prev, *next;
    uint64_t start_ms;
    char *req; /* request bytes [0, len), room for max_request + 1 */
    size_t len, scanned;
    char hdr[HDR_MAX];
    rc_buf body; /* owned by the render worker while state is ST_RENDERING */
    int state, listed;
    int minor, head; /* of the request being rendered */
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

/* Unlists the conn and closes its handle; while its page is being rendered
 * the handle stays open until the worker is done (on_rendered closes it). */
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
    if (c->state != ST_RENDERING)
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

static void render_work(uv_work_t *w)
{
    hconn *c = w->data;
    c->m->o.render(c->m->o.ud, &c->body);
}

static void on_rendered(uv_work_t *w, int status)
{
    hconn *c = w->data;
    rc_metrics *m = c->m;
    c->state = ST_WRITING;
    if (!c->listed) { /* timed out or closing meanwhile */
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    if (status != 0) {
        rc_log_error(MOD, "metrics page not rendered", "err=%s", uv_strerror(status));
        respond_text(c, c->minor, 500, "Internal Server Error", "metrics page not rendered\n", NULL,
                     c->head);
        return;
    }
    if (c->body.overflow) {
        rc_log_error(MOD, "metrics page over max_body", "max_body=%zu", m->o.max_body);
        respond_text(c, c->minor, 500, "Internal Server Error", "metrics page too large\n", NULL,
                     c->head);
        return;
    }
    bump(&m->scrapes, 1);
    respond(c, c->minor, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, c->head);
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
    c->minor = r.minor;
    c->head = head;
    /* The page reads every module's stats (milliseconds at a million items):
     * rendered on a worker so the loop never waits for it. */
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->state = ST_RENDERING;
    c->work.data = c;
    if (uv_queue_work(m->loop, &c->work, render_work, on_rendered) != 0) {
        render_work(&c->work);
        on_rendered(&c->work, 0);
    }
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
