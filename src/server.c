/* server — see include/recalld/server.h.
 *
 * Invariants (all state below is touched on the loop thread only, except
 * conn.line/line_len/reply and the server's immutable options, which a worker
 * reads or writes while conn.inflight is set; uv_queue_work orders both sides):
 *  - a conn is in the LRU list iff it is open and not closing; the list is
 *    ordered by last activity, so the idle sweep only looks at its head;
 *  - conn.refs counts the open handle plus a running work item; the conn is
 *    freed when both are gone (close callback / after-work callback);
 *  - while a request runs, reading is stopped and rbuf is not moved: the
 *    worker reads the line in place;
 *  - a conn is in the partial list iff it holds the start of a request line
 *    (or is discarding an over-long one) and no request of it runs; the list
 *    is ordered by when that line started, so the request-timeout sweep also
 *    only looks at its head;
 *  - queued is the sum of the unsent reply bytes of every conn (wreq.len of
 *    each write not yet completed), kept under max_outbuf_total;
 *  - the server is freed once its three handles are closed and no conn is left. */
#include "recalld/server.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/log.h"
#include "recalld/slice.h"

#define MOD            "server"
#define READ_SLACK     256         /* beyond max_line: "\r\n" and the start of the next line */
#define READ_INIT      4096        /* first read buffer; doubles up to max_line + READ_SLACK */
#define REPLY_KEEP     (64 * 1024) /* reply buffers above this are freed after each request */
#define LISTEN_BACKLOG 511
#define MAX_BOUND      ((size_t)1 << 30) /* cap on max_line and max_outbuf */
#define SWEEP_MIN_MS   10
#define SWEEP_MAX_MS   1000
#define EVICT_IDLE_MS  1000  /* at max_clients, a conn idle this long gives way to a new one */
#define PROBE_SLOTS    8     /* conns beyond max_clients that may only use the fast path */
#define WARN_EVERY_MS  10000 /* one WARN per limit per this period; counters count all */

typedef struct conn conn;

struct conn {
    uv_pipe_t pipe;
    uv_work_t work;
    rc_server *srv;
    conn *prev, *next;   /* LRU list, oldest activity at the head */
    conn *pprev, *pnext; /* partial list, oldest started line at the head */
    uint64_t last_ms;    /* uv_now() at the last read or finished request */
    uint64_t part_ms;    /* uv_now() when the unfinished line started */
    char *rbuf;          /* unparsed bytes are rbuf[rstart, rlen) */
    size_t rstart, rlen, rcap;
    size_t scanned;   /* bytes after rstart known to hold no '\n' */
    const char *line; /* request being handled, inside rbuf, NUL-terminated */
    size_t line_len;
    uint64_t queued_ns; /* rc_now_ns() when line was handed to the pool */
    rc_buf reply;       /* written by the worker, sent by the loop */
    unsigned refs;
    unsigned inflight : 1, reading : 1, closing : 1, discarding : 1, eof : 1, draining : 1,
        in_list : 1, counted : 1, in_plist : 1, probe : 1;
};

typedef struct wreq {
    uv_write_t req;
    size_t len;  /* bytes in data, counted in the server's queued total */
    char data[]; /* the unsent tail of one reply line */
} wreq;

struct rc_server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    uv_timer_t sweep;
    uv_timer_t drain;
    char *path;
    dev_t dev; /* identity of the socket file we created, so close never */
    ino_t ino; /* unlinks a file another process put there since */
    size_t max_line, rmax, max_outbuf, max_outbuf_total;
    size_t queued; /* unsent reply bytes of all conns (loop thread) */
    uint32_t max_clients, idle_ms, request_ms, probes;
    uint64_t warned_ms[4]; /* last WARN per limit, see warn_limit */
    uid_t *allow;
    uint32_t nallow;
    rc_server_handler handler;
    rc_server_fast_handler fast;
    void *ud;
    conn *head, *tail;
    conn *phead, *ptail;
    size_t nconns;    /* conns not yet freed, open or closing */
    unsigned handles; /* server handles not yet closed */
    int closing, drain_closed;
    void (*close_cb)(void *);
    void *close_arg;
    _Atomic uint64_t clients, accepted, refused_max, refused_uid;
    _Atomic uint64_t requests, too_long, idle_closed, slow_dropped, inflight;
    _Atomic uint64_t fast_requests, request_timeouts, evicted_idle, total_dropped, probes_admitted;
    _Atomic uint64_t queued_bytes, total_full_ms;
    _Atomic uint32_t slice_us;                       /* asked for (rc_server_set_slice) */
    _Atomic uint64_t loop_slice_us, worker_slice_us; /* in effect (slice.h), 0 unknown */
};

static void conn_close(conn *c);
static void process(conn *c);
static void set_reading(conn *c, int on);

static void ctr_add(_Atomic uint64_t *v, int64_t d)
{
    atomic_fetch_add_explicit(v, (uint64_t)d, memory_order_relaxed);
}

/* ---- LRU list ---------------------------------------------------------- */

static void lru_remove(conn *c)
{
    rc_server *s = c->srv;
    if (!c->in_list)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->tail = c->prev;
    c->prev = c->next = NULL;
    c->in_list = 0;
}

static void lru_push(conn *c)
{
    rc_server *s = c->srv;
    c->prev = s->tail;
    c->next = NULL;
    if (s->tail)
        s->tail->next = c;
    else
        s->head = c;
    s->tail = c;
    c->in_list = 1;
}

static void touch(conn *c)
{
    c->last_ms = uv_now(c->srv->loop);
    if (c->in_list && c != c->srv->tail) {
        lru_remove(c);
        lru_push(c);
    }
}

/* ---- partial list ------------------------------------------------------ */

static void plist_remove(conn *c)
{
    rc_server *s = c->srv;
    if (!c->in_plist)
        return;
    if (c->pprev)
        c->pprev->pnext = c->pnext;
    else
        s->phead = c->pnext;
    if (c->pnext)
        c->pnext->pprev = c->pprev;
    else
        s->ptail = c->pprev;
    c->pprev = c->pnext = NULL;
    c->in_plist = 0;
}

/* After framing: a conn holding the start of a line (or discarding one) has
 * request_timeout_ms from that line's first byte to its newline. */
static void plist_update(conn *c)
{
    rc_server *s = c->srv;
    int partial = !c->inflight && !c->closing && (c->discarding || c->rlen > c->rstart);
    if (!partial) {
        plist_remove(c);
        return;
    }
    if (c->in_plist)
        return;
    c->part_ms = uv_now(s->loop);
    c->pprev = s->ptail;
    c->pnext = NULL;
    if (s->ptail)
        s->ptail->pnext = c;
    else
        s->phead = c;
    s->ptail = c;
    c->in_plist = 1;
}

/* A WARN for limit `which` at most once per WARN_EVERY_MS: a flood of clients
 * hitting a limit must not flood the log (the counters count every one). */
static int warn_limit(rc_server *s, int which)
{
    uint64_t now = uv_now(s->loop);
    if (s->warned_ms[which] && now - s->warned_ms[which] < WARN_EVERY_MS)
        return 0;
    s->warned_ms[which] = now ? now : 1;
    return 1;
}

enum { WARN_SLOW, WARN_TOTAL, WARN_TIMEOUT, WARN_EVICT };

/* ---- teardown ---------------------------------------------------------- */

static void server_maybe_free(rc_server *s)
{
    if (!s->closing || s->handles || s->nconns)
        return;
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;
    rc_log_info(MOD, "closed", "path=%s", s->path);
    free(s->path);
    free(s->allow);
    free(s);
    if (cb)
        cb(arg);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    rc_server *s = h->data;
    s->handles--;
    server_maybe_free(s);
}

static void close_drain_timer(rc_server *s)
{
    if (s->drain_closed)
        return;
    s->drain_closed = 1;
    uv_close((uv_handle_t *)&s->drain, on_server_handle_closed);
}

static void conn_unref(conn *c)
{
    if (--c->refs)
        return;
    rc_server *s = c->srv;
    free(c->rbuf);
    rc_buf_free(&c->reply);
    free(c);
    s->nconns--;
    server_maybe_free(s);
}

static void on_conn_closed(uv_handle_t *h) { conn_unref(h->data); }

/* Starts closing c; memory goes when the handle is closed and no work runs. */
static void conn_close(conn *c)
{
    rc_server *s = c->srv;
    if (c->closing)
        return;
    c->closing = 1;
    lru_remove(c);
    plist_remove(c);
    if (c->counted) {
        c->counted = 0;
        ctr_add(&s->clients, -1);
    }
    if (c->probe) {
        c->probe = 0;
        s->probes--;
    }
    uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
    if (s->closing && !s->head)
        close_drain_timer(s);
}

/* A conn that is done reading (EOF or server drain) closes once nothing is
 * running and every reply byte has left. */
static void conn_maybe_finish(conn *c)
{
    if (c->closing || c->inflight || !(c->eof || c->draining))
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) == 0)
        conn_close(c);
}

/* ---- writing ----------------------------------------------------------- */

static void queued_add(rc_server *s, size_t n, int sign)
{
    s->queued = sign > 0 ? s->queued + n : s->queued - n;
    atomic_store_explicit(&s->queued_bytes, s->queued, memory_order_relaxed);
}

static void on_write(uv_write_t *req, int status)
{
    conn *c = req->handle->data;
    wreq *w = req->data;
    queued_add(c->srv, w->len, -1);
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED)
            rc_log_debug(MOD, "write failed", "err=%s", uv_strerror(status));
        conn_close(c);
        return;
    }
    conn_maybe_finish(c);
}

/* Sends p[0..n) plus '\n'. Tries the socket first so the common case copies
 * nothing; the unsent tail is queued, unless the queue would pass max_outbuf
 * (the peer is not reading) or all clients' queues would pass
 * max_outbuf_total (memory bounded whatever max_clients is): then the peer
 * is dropped. */
static void send_line(conn *c, const char *p, size_t n)
{
    rc_server *s = c->srv;
    uv_stream_t *st = (uv_stream_t *)&c->pipe;
    uv_buf_t b[2] = {uv_buf_init((char *)p, (unsigned)n), uv_buf_init((char *)"\n", 1)};
    size_t total = n + 1, done = 0, queued = uv_stream_get_write_queue_size(st);
    if (queued == 0) {
        int r = uv_try_write(st, b, 2);
        if (r < 0 && r != UV_EAGAIN) {
            rc_log_debug(MOD, "write failed", "err=%s", uv_strerror(r));
            conn_close(c);
            return;
        }
        done = r > 0 ? (size_t)r : 0;
        if (done == total)
            return;
    }
    size_t left = total - done;
    if (queued + left > s->max_outbuf) {
        ctr_add(&s->slow_dropped, 1);
        if (warn_limit(s, WARN_SLOW))
            rc_log_warn(MOD, "dropping slow reader", "queued=%zu max_outbuf=%zu dropped=%llu",
                        queued + left, s->max_outbuf,
                        (unsigned long long)atomic_load(&s->slow_dropped));
        conn_close(c);
        return;
    }
    if (s->queued + left > s->max_outbuf_total) {
        ctr_add(&s->total_dropped, 1);
        atomic_store(&s->total_full_ms, rc_now_ns() / 1000000u);
        if (warn_limit(s, WARN_TOTAL))
            rc_log_warn(MOD,
                        "socket.max_outbuf_total reached: dropping a client that does not "
                        "read",
                        "queued_total=%zu max_outbuf_total=%zu dropped=%llu", s->queued,
                        s->max_outbuf_total, (unsigned long long)atomic_load(&s->total_dropped));
        conn_close(c);
        return;
    }
    wreq *w = malloc(sizeof *w + left);
    if (!w) {
        conn_close(c);
        return;
    }
    w->len = left;
    if (done < n)
        memcpy(w->data, p + done, n - done);
    w->data[left - 1] = '\n';
    w->req.data = w;
    uv_buf_t wb = uv_buf_init(w->data, (unsigned)left);
    int r = uv_write(&w->req, st, &wb, 1, on_write);
    if (r < 0) {
        free(w);
        conn_close(c);
        return;
    }
    queued_add(s, left, 1);
}

/* Server-made errors share the protocol's error shape; code and msg are
 * constant text without characters that need escaping. */
static void send_error(conn *c, const char *code, const char *msg)
{
    char line[256];
    int n = snprintf(line, sizeof line,
                     "{\"ok\":false,\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, msg);
    assert(n > 0 && (size_t)n < sizeof line);
    send_line(c, line, (size_t)n);
}

static void send_too_long(conn *c)
{
    char msg[96];
    ctr_add(&c->srv->too_long, 1);
    snprintf(msg, sizeof msg, "request line exceeds %zu bytes", c->srv->max_line);
    send_error(c, "line_too_long", msg);
}

/* ---- requests on workers ----------------------------------------------- */

static _Thread_local uint64_t queue_wait_ns; /* of the request this worker runs */
/* The slice this worker last asked for; UINT32_MAX before its first request. */
static _Thread_local uint32_t worker_slice_asked = UINT32_MAX;

uint64_t rc_server_queue_wait_ns(void) { return queue_wait_ns; }

/* On a worker's first request and after a change (libuv starts workers
 * lazily and gives no start hook): a worker asks even for 0, the kernel's
 * default, since it may have inherited another slice from its creator. */
static void worker_slice(rc_server *s)
{
    uint32_t want = atomic_load_explicit(&s->slice_us, memory_order_relaxed);
    if (worker_slice_asked == want)
        return;
    worker_slice_asked = want;
    int64_t got = rc_slice_set(want);
    atomic_store_explicit(&s->worker_slice_us, got > 0 ? (uint64_t)got : 0, memory_order_relaxed);
}

static void work_cb(uv_work_t *w)
{
    conn *c = w->data;
    worker_slice(c->srv);
    uint64_t now = rc_now_ns();
    queue_wait_ns = now > c->queued_ns ? now - c->queued_ns : 0;
    rc_buf_reset(&c->reply);
    c->srv->handler(c->srv->ud, c->line, c->line_len, &c->reply);
    queue_wait_ns = 0;
}

static void after_work_cb(uv_work_t *w, int status)
{
    conn *c = w->data;
    rc_server *s = c->srv;
    c->inflight = 0;
    ctr_add(&s->inflight, -1);
    if (c->closing) {
        conn_unref(c);
        return;
    }
    c->refs--;
    touch(c);
    if (status == 0 && !c->reply.overflow && c->reply.len > 0)
        send_line(c, c->reply.data, c->reply.len);
    else if (c->reply.overflow)
        send_error(c, "reply_too_large", "reply exceeds socket.max_outbuf");
    else
        send_error(c, "internal", "no reply");
    if (c->reply.cap > REPLY_KEEP)
        rc_buf_free(&c->reply);
    if (!c->closing)
        process(c);
}

/* Cheap requests (health) are answered here on the loop thread, so that they
 * never wait behind busy workers; a probe conn (admitted beyond max_clients)
 * gets nothing else and is closed after its answer. */
static int dispatch_fast(conn *c, char *line, size_t len)
{
    rc_server *s = c->srv;
    int answered = 0;
    if (s->fast) {
        rc_buf_reset(&c->reply);
        answered = s->fast(s->ud, line, len, &c->reply);
    }
    if (answered) {
        ctr_add(&s->fast_requests, 1);
        if (!c->reply.overflow && c->reply.len > 0)
            send_line(c, c->reply.data, c->reply.len);
        else
            send_error(c, "internal", "no reply");
    } else if (c->probe) {
        ctr_add(&s->refused_max, 1);
        send_error(c, "too_many_clients", "server is at max_clients (only health is answered)");
    }
    if (c->probe && !c->closing) {
        c->draining = 1; /* one request per probe conn; closes once written */
        set_reading(c, 0);
        conn_maybe_finish(c);
    }
    return answered || c->probe;
}

static void dispatch(conn *c, char *line, size_t len)
{
    rc_server *s = c->srv;
    line[len] = '\0';
    if (dispatch_fast(c, line, len))
        return;
    c->line = line;
    c->line_len = len;
    c->inflight = 1;
    c->refs++;
    c->work.data = c;
    ctr_add(&s->requests, 1);
    ctr_add(&s->inflight, 1);
    c->queued_ns = rc_now_ns();
    int r = uv_queue_work(s->loop, &c->work, work_cb, after_work_cb);
    assert(r == 0); /* fails only on a NULL work_cb */
    (void)r;
}

/* ---- reading and framing ----------------------------------------------- */

/* Moves the unparsed bytes to the front; only while no request runs. */
static void compact(conn *c)
{
    assert(!c->inflight);
    if (c->rstart == 0)
        return;
    memmove(c->rbuf, c->rbuf + c->rstart, c->rlen - c->rstart);
    c->rlen -= c->rstart;
    c->rstart = 0;
}

/* Makes room for at least one more byte, growing up to rmax. 0 or RC_ENOMEM. */
static int reserve(conn *c)
{
    compact(c);
    if (c->rlen < c->rcap)
        return 0;
    size_t cap = RC_MIN(c->rcap * 2, c->srv->rmax);
    if (cap <= c->rcap)
        return RC_ENOMEM;
    char *p = realloc(c->rbuf, cap);
    if (!p)
        return RC_ENOMEM;
    c->rbuf = p;
    c->rcap = cap;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    if (reserve(c) != 0) {
        *buf = uv_buf_init(NULL, 0); /* read_cb sees UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

/* Takes one step of framing. Returns 1 to continue, 0 when more input is needed. */
static int frame_one(conn *c)
{
    rc_server *s = c->srv;
    char *p = c->rbuf + c->rstart;
    size_t n = c->rlen - c->rstart;
    char *nl = memchr(p + c->scanned, '\n', n - c->scanned);
    if (!nl) {
        c->scanned = n;
        if (c->discarding) {
            c->rstart = c->rlen = c->scanned = 0;
            return 0;
        }
        if (n <= s->max_line + 1) /* a line of max_line bytes may still end in "\r\n" */
            return 0;
        send_too_long(c);
        c->discarding = 1;
        c->rstart = c->rlen = c->scanned = 0;
        return 1;
    }
    size_t len = (size_t)(nl - p);
    c->rstart += len + 1;
    c->scanned = 0;
    if (c->discarding) {
        c->discarding = 0;
        return 1;
    }
    if (len && p[len - 1] == '\r')
        len--;
    if (len == 0)
        return 1;
    if (len > s->max_line) {
        send_too_long(c);
        return 1;
    }
    dispatch(c, p, len);
    return 1;
}

/* Frames and dispatches until a request runs or input runs out, then sets
 * reading accordingly: paused while a request runs (backpressure). */
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void set_reading(conn *c, int on)
{
    uv_stream_t *st = (uv_stream_t *)&c->pipe;
    if (on == c->reading)
        return;
    c->reading = (unsigned)on;
    if (!on)
        uv_read_stop(st);
    else if (uv_read_start(st, on_alloc, on_read) != 0)
        conn_close(c);
}

static void process(conn *c)
{
    while (!c->inflight && !c->closing && !c->draining && frame_one(c))
        ;
    if (c->closing)
        return;
    plist_update(c);
    if (c->eof || c->draining) {
        conn_maybe_finish(c);
        return;
    }
    set_reading(c, !c->inflight);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    conn *c = st->data;
    if (n == 0)
        return;
    if (n == UV_EOF) {
        /* The peer finished sending: a last line without '\n' still counts. */
        c->eof = 1;
        set_reading(c, 0);
        if (!c->discarding && c->rlen > c->rstart && reserve(c) == 0)
            c->rbuf[c->rlen++] = '\n';
        process(c);
        return;
    }
    if (n < 0) {
        rc_log_debug(MOD, "read failed", "err=%s", uv_strerror((int)n));
        conn_close(c);
        return;
    }
    c->rlen += (size_t)n;
    touch(c);
    process(c);
}

/* ---- accepting --------------------------------------------------------- */

static int peer_allowed(rc_server *s, conn *c, uid_t *uid)
{
    uv_os_fd_t fd;
    struct ucred cr;
    socklen_t len = sizeof cr;
    *uid = (uid_t)-1;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
        return 0;
    *uid = cr.uid;
    for (uint32_t i = 0; i < s->nallow; i++)
        if (s->allow[i] == cr.uid)
            return 1;
    return 0;
}

/* At max_clients: closes the least recently active conn if it has been idle
 * for EVICT_IDLE_MS with nothing running or queued, else the conn whose
 * unfinished line started longest ago if that was EVICT_IDLE_MS ago (a
 * trickler is never idle), so that neither idle nor trickling connections
 * can lock new clients out. 1 if one was closed. */
static int evict_idle(rc_server *s)
{
    conn *o = s->head, *p = s->phead;
    uint64_t now = uv_now(s->loop), since;
    if (o && !o->inflight && now - o->last_ms >= EVICT_IDLE_MS &&
        uv_stream_get_write_queue_size((uv_stream_t *)&o->pipe) == 0)
        since = now - o->last_ms;
    else if (p && now - p->part_ms >= EVICT_IDLE_MS)
        since = now - p->part_ms, o = p;
    else
        return 0;
    ctr_add(&s->evicted_idle, 1);
    if (warn_limit(s, WARN_EVICT))
        rc_log_warn(MOD, "at max_clients: closing an idle or trickling client",
                    "max_clients=%u idle_ms=%llu evicted=%llu", s->max_clients,
                    (unsigned long long)since, (unsigned long long)atomic_load(&s->evicted_idle));
    conn_close(o);
    return 1;
}

/* Probe slots are for one quick request each: when all are taken, the
 * oldest gives way, so that conns squatting them cannot keep a liveness probe
 * out (rare path, only at max_clients: a walk of the LRU list). */
static void evict_probe(rc_server *s)
{
    for (conn *c = s->head; c; c = c->next)
        if (c->probe) {
            ctr_add(&s->evicted_idle, 1);
            conn_close(c);
            return;
        }
}

/* Admits an accepted conn, or answers it with an error line and closes it.
 * At max_clients an idle conn gives way; failing that a probe slot takes the
 * conn for one fast request (health), so that liveness probes still answer. */
static void admit(rc_server *s, conn *c)
{
    uid_t uid;
    if (s->nallow && !peer_allowed(s, c, &uid)) {
        ctr_add(&s->refused_uid, 1);
        rc_log_warn(MOD, "peer refused", "uid=%ld", (long)uid);
        send_error(c, "forbidden", "peer uid not allowed");
        conn_close(c);
        return;
    }
    if (atomic_load(&s->clients) >= s->max_clients && !evict_idle(s)) {
        if (s->fast && s->probes >= PROBE_SLOTS)
            evict_probe(s);
        if (!s->fast || s->probes >= PROBE_SLOTS) {
            ctr_add(&s->refused_max, 1);
            if (warn_limit(s, WARN_EVICT))
                rc_log_warn(MOD, "too many clients", "max_clients=%u", s->max_clients);
            send_error(c, "too_many_clients", "server is at max_clients");
            conn_close(c);
            return;
        }
        c->probe = 1;
        s->probes++;
        ctr_add(&s->probes_admitted, 1);
    }
    c->rcap = RC_MIN((size_t)READ_INIT, s->rmax);
    c->rbuf = malloc(c->rcap);
    if (!c->rbuf) {
        conn_close(c);
        return;
    }
    c->counted = !c->probe;
    ctr_add(&s->clients, c->counted);
    c->last_ms = uv_now(s->loop);
    lru_push(c);
    set_reading(c, 1);
}

static void on_connection(uv_stream_t *ls, int status)
{
    rc_server *s = ls->data;
    if (status < 0) {
        rc_log_warn(MOD, "accept failed", "err=%s", uv_strerror(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        rc_log_error(MOD, "out of memory accepting a client", NULL);
        return;
    }
    c->srv = s;
    c->refs = 1;
    rc_buf_init(&c->reply, s->max_outbuf);
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    s->nconns++;
    int r = uv_accept(ls, (uv_stream_t *)&c->pipe);
    if (r != 0) {
        rc_log_warn(MOD, "accept failed", "err=%s", uv_strerror(r));
        conn_close(c);
        return;
    }
    ctr_add(&s->accepted, 1);
    admit(s, c);
}

static void on_sweep(uv_timer_t *t)
{
    rc_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    conn *c;
    while ((c = s->phead) && now - c->part_ms >= s->request_ms) {
        ctr_add(&s->request_timeouts, 1);
        if (warn_limit(s, WARN_TIMEOUT))
            rc_log_warn(MOD, "request line not completed in time: client closed",
                        "request_timeout_ms=%u timeouts=%llu", s->request_ms,
                        (unsigned long long)atomic_load(&s->request_timeouts));
        send_error(c, "request_timeout",
                   "request line not completed within "
                   "socket.request_timeout_ms");
        conn_close(c);
    }
    while ((c = s->head) && now - c->last_ms >= s->idle_ms) {
        if (c->inflight) { /* a slow request is not idleness */
            touch(c);
            continue;
        }
        ctr_add(&s->idle_closed, 1);
        rc_log_debug(MOD, "idle client closed", "idle_ms=%llu",
                     (unsigned long long)(now - c->last_ms));
        conn_close(c);
    }
}

/* ---- start ------------------------------------------------------------- */

/* 1 if something accepts connections at path, 0 if not (stale file), or -errno. */
static int probe_live(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int err = r == 0 ? 0 : errno;
    close(fd);
    if (r == 0 || err == EAGAIN) /* EAGAIN: backlog full, so alive */
        return 1;
    if (err == ECONNREFUSED || err == ENOENT)
        return 0;
    return -err;
}

#define SQUAT_HINT "remove it or set socket.path (a private directory such as the default)"

/* Makes path free for bind: refuses a live server or a non-socket file,
 * removes a stale socket file. A path held by another user (squatted, e.g.
 * in a shared /tmp) is named as such. */
static int claim_path(const char *path, char *errbuf, size_t errlen)
{
    struct stat st;
    char who[64] = "";
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        return rc_err(errbuf, errlen, RC_EIO, "socket %s: %s", path, strerror(errno));
    }
    if (st.st_uid != geteuid())
        snprintf(who, sizeof who, " (owned by uid %ld, not this process's)", (long)st.st_uid);
    if (!S_ISSOCK(st.st_mode))
        return rc_err(errbuf, errlen, RC_EIO, "socket %s: exists and is not a socket%s: %s", path,
                      who, SQUAT_HINT);
    int live = probe_live(path);
    if (live > 0)
        return rc_err(errbuf, errlen, RC_EIO, "socket %s: another server is listening%s", path,
                      who);
    if (live < 0)
        return rc_err(errbuf, errlen, RC_EIO, "socket %s: probe: %s%s", path, strerror(-live), who);
    if (unlink(path) != 0 && errno != ENOENT)
        return rc_err(errbuf, errlen, RC_EIO, "socket %s: unlink stale: %s%s: %s", path,
                      strerror(errno), who, SQUAT_HINT);
    rc_log_info(MOD, "removed stale socket", "path=%s", path);
    return 0;
}

static int copy_opts(rc_server *s, const rc_server_opts *o)
{
    s->path = strdup(o->path);
    if (!s->path)
        return RC_ENOMEM;
    /* uv_buf_t lengths are unsigned int: keep every buffer well below that */
    s->max_line = RC_MIN(o->max_line ? o->max_line : 65536, MAX_BOUND);
    s->rmax = s->max_line + READ_SLACK;
    s->max_clients = o->max_clients ? o->max_clients : 1024;
    s->idle_ms = o->idle_timeout_ms ? o->idle_timeout_ms : 300000;
    s->max_outbuf = RC_MIN(o->max_outbuf ? o->max_outbuf : (size_t)4 << 20, MAX_BOUND);
    s->max_outbuf_total = o->max_outbuf_total ? o->max_outbuf_total : (size_t)256 << 20;
    s->request_ms = o->request_timeout_ms ? o->request_timeout_ms : 10000;
    s->handler = o->handler;
    s->fast = o->fast;
    s->ud = o->ud;
    if (o->nallow_uids) {
        s->allow = malloc(o->nallow_uids * sizeof *s->allow);
        if (!s->allow)
            return RC_ENOMEM;
        memcpy(s->allow, o->allow_uids, o->nallow_uids * sizeof *s->allow);
        s->nallow = o->nallow_uids;
    }
    return 0;
}

/* Binds, sets the mode before listen (nobody can connect in between), listens. */
static int bind_listen(rc_server *s, unsigned mode, char *errbuf, size_t errlen)
{
    struct stat st;
    int r = uv_pipe_bind(&s->listener, s->path);
    if (r < 0)
        return rc_err(errbuf, errlen, RC_EIO, "socket %s: bind: %s", s->path, uv_strerror(r));
    if (chmod(s->path, mode) != 0 || lstat(s->path, &st) != 0) {
        rc_err(errbuf, errlen, RC_EIO, "socket %s: chmod: %s", s->path, strerror(errno));
        goto out_unlink;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    r = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (r < 0) {
        rc_err(errbuf, errlen, RC_EIO, "socket %s: listen: %s", s->path, uv_strerror(r));
        goto out_unlink;
    }
    return 0;
out_unlink:
    unlink(s->path);
    return RC_EIO;
}

/* The loop thread asks for the request path's slice; the workers, which it
 * starts later, inherit it and ask again themselves (worker_slice). */
static void server_slice(rc_server *s, uint32_t us)
{
    atomic_store(&s->slice_us, us);
    int64_t got = us ? rc_slice_set(us) : rc_slice_get();
    atomic_store(&s->loop_slice_us, got > 0 ? (uint64_t)got : 0);
    if (!us)
        return;
    if (got == (int64_t)us)
        rc_log_info(MOD, "request threads ask for a short scheduler slice", "slice_us=%u", us);
    else
        rc_log_warn(MOD,
                    "the kernel does not apply socket.request_slice_us (custom slices need "
                    "Linux 6.12 or later): a request may wait for a busy core's slice",
                    "slice_us=%u in_effect_us=%lld error=\"%s\"", us, (long long)got,
                    got < 0 ? strerror(errno) : "none");
}

void rc_server_set_slice(rc_server *s, uint32_t us)
{
    if (s && us != atomic_load(&s->slice_us))
        server_slice(s, us);
}

int rc_server_start(uv_loop_t *loop, const rc_server_opts *opts, rc_server **out, char *errbuf,
                    size_t errlen)
{
    if (!loop || !opts || !out || !opts->path || !opts->handler ||
        (opts->nallow_uids && !opts->allow_uids))
        return rc_err(errbuf, errlen, RC_EINVAL, "server: invalid arguments");
    *out = NULL;
    if (strlen(opts->path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return rc_err(errbuf, errlen, RC_EINVAL, "socket %s: path longer than %zu bytes",
                      opts->path, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    rc_server *s = calloc(1, sizeof *s);
    if (!s)
        return rc_err(errbuf, errlen, RC_ENOMEM, "server: out of memory");
    s->loop = loop;
    if (copy_opts(s, opts) != 0) {
        free(s->path);
        free(s);
        return rc_err(errbuf, errlen, RC_ENOMEM, "server: out of memory");
    }
    int rc = claim_path(s->path, errbuf, errlen);
    if (rc != 0) {
        free(s->allow);
        free(s->path);
        free(s);
        return rc;
    }
    /* A peer that hangs up must cost a write error, not the process. */
    signal(SIGPIPE, SIG_IGN);
    uv_pipe_init(loop, &s->listener, 0);
    uv_timer_init(loop, &s->sweep);
    uv_timer_init(loop, &s->drain);
    s->listener.data = s->sweep.data = s->drain.data = s;
    s->handles = 3;
    rc = bind_listen(s, opts->mode ? opts->mode : 0660, errbuf, errlen);
    if (rc != 0) {
        /* Handles are freed through the loop: the caller's next uv_run frees s. */
        s->closing = 1;
        uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
        uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
        close_drain_timer(s);
        return rc;
    }
    server_slice(s, opts->slice_us);
    uint64_t shortest = RC_MIN(s->idle_ms, s->request_ms);
    uint64_t every = RC_MAX(SWEEP_MIN_MS, RC_MIN(SWEEP_MAX_MS, shortest / 4));
    uv_timer_start(&s->sweep, on_sweep, every, every);
    rc_log_info(MOD, "listening", "path=%s mode=%o max_clients=%u max_line=%zu", s->path,
                opts->mode ? opts->mode : 0660, s->max_clients, s->max_line);
    *out = s;
    return 0;
}

/* ---- close ------------------------------------------------------------- */

static void force_all(rc_server *s)
{
    while (s->head)
        conn_close(s->head);
}

static void on_drain_timeout(uv_timer_t *t)
{
    rc_server *s = t->data;
    rc_log_warn(MOD, "drain timed out, closing clients", NULL);
    force_all(s);
    close_drain_timer(s);
}

/* Unlinks the socket file only if it is still the one this server bound. */
static void unlink_own(rc_server *s)
{
    struct stat st;
    if (lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
        unlink(s->path);
}

void rc_server_close(rc_server *s, uint32_t drain_ms, void (*cb)(void *arg), void *arg)
{
    if (!s || s->closing)
        return;
    s->closing = 1;
    s->close_cb = cb;
    s->close_arg = arg;
    /* Unlink before closing the fd: after close another server may bind the path. */
    unlink_own(s);
    uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
    conn *next;
    for (conn *c = s->head; c; c = next) {
        next = c->next;
        c->draining = 1;
        set_reading(c, 0);
        conn_maybe_finish(c);
    }
    if (!s->head || drain_ms == 0) {
        force_all(s);
        close_drain_timer(s);
    } else {
        uv_timer_start(&s->drain, on_drain_timeout, drain_ms, 0);
    }
}

void rc_server_stats_get(const rc_server *s, rc_server_stats *st)
{
    if (!s || !st)
        return;
    rc_server *m = (rc_server *)s; /* atomic loads only */
    st->clients = atomic_load_explicit(&m->clients, memory_order_relaxed);
    st->accepted = atomic_load_explicit(&m->accepted, memory_order_relaxed);
    st->refused_max = atomic_load_explicit(&m->refused_max, memory_order_relaxed);
    st->refused_uid = atomic_load_explicit(&m->refused_uid, memory_order_relaxed);
    st->requests = atomic_load_explicit(&m->requests, memory_order_relaxed);
    st->too_long = atomic_load_explicit(&m->too_long, memory_order_relaxed);
    st->idle_closed = atomic_load_explicit(&m->idle_closed, memory_order_relaxed);
    st->slow_dropped = atomic_load_explicit(&m->slow_dropped, memory_order_relaxed);
    st->inflight = atomic_load_explicit(&m->inflight, memory_order_relaxed);
    st->fast_requests = atomic_load_explicit(&m->fast_requests, memory_order_relaxed);
    st->request_timeouts = atomic_load_explicit(&m->request_timeouts, memory_order_relaxed);
    st->evicted_idle = atomic_load_explicit(&m->evicted_idle, memory_order_relaxed);
    st->outbuf_total_dropped = atomic_load_explicit(&m->total_dropped, memory_order_relaxed);
    st->probes = atomic_load_explicit(&m->probes_admitted, memory_order_relaxed);
    st->queued_bytes = atomic_load_explicit(&m->queued_bytes, memory_order_relaxed);
    st->max_outbuf_total = m->max_outbuf_total;
    st->outbuf_total_full_ms = atomic_load_explicit(&m->total_full_ms, memory_order_relaxed);
    st->slice_us = atomic_load_explicit(&m->slice_us, memory_order_relaxed);
    st->loop_slice_us = atomic_load_explicit(&m->loop_slice_us, memory_order_relaxed);
    st->worker_slice_us = atomic_load_explicit(&m->worker_slice_us, memory_order_relaxed);
}

/* ---- default path ------------------------------------------------------ */

/* dir is usable for the socket: a directory owned by us or root, not group-
 * or world-writable (else another user could replace the socket). With
 * create, made 0750 when missing. 0 or -errno / -EPERM. */
static int private_dir(const char *dir, int create)
{
    struct stat st;
    if (create && mkdir(dir, 0750) != 0 && errno != EEXIST)
        return -errno;
    if (lstat(dir, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022))
        return -EPERM;
    return 0;
}

int rc_server_default_path(char *out, size_t cap, int create, char *errbuf, size_t errlen)
{
    char dirs[3][512];
    const char *rt = getenv("RUNTIME_DIRECTORY"), *xdg = getenv("XDG_RUNTIME_DIR");
    size_t n = 0;
    if (!out || !cap)
        return rc_err(errbuf, errlen, RC_EINVAL, "socket.path: invalid arguments");
    /* systemd may list several directories, separated by ':': the first */
    if (rt && rt[0])
        snprintf(dirs[n++], sizeof dirs[0], "%.*s", (int)strcspn(rt, ":"), rt);
    if (access("/run/recalld", W_OK) == 0 || (create && access("/run", W_OK) == 0) ||
        (!create && access("/run/recalld", F_OK) == 0))
        snprintf(dirs[n++], sizeof dirs[0], "/run/recalld");
    if (xdg && xdg[0])
        snprintf(dirs[n++], sizeof dirs[0], "%s/recalld", xdg);
    int why = -ENOENT;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        /* a client only needs the directory the daemon made (it may be in its
         * group, not its owner) */
        int r = create                                           ? private_dir(dirs[i], 1)
                : stat(dirs[i], &st) == 0 && S_ISDIR(st.st_mode) ? 0
                                                                 : -ENOENT;
        if (r == 0 && strlen(dirs[i]) + sizeof "/recalld.sock" <= RC_MIN(cap, (size_t)108)) {
            snprintf(out, cap, "%s/recalld.sock", dirs[i]);
            return 0;
        }
        why = r ? r : -ENAMETOOLONG;
        rc_log_debug(MOD, "runtime directory not usable", "dir=%s err=\"%s\"", dirs[i],
                     why == -EPERM ? "group/world-writable or owned by another user"
                                   : strerror(-why));
    }
    return rc_err(errbuf, errlen, n ? RC_EIO : RC_ENOENT,
                  "socket.path: no private runtime directory ($RUNTIME_DIRECTORY, /run/recalld, "
                  "$XDG_RUNTIME_DIR/recalld)%s%s: set socket.path or --socket",
                  n ? ": last tried: " : "", n ? strerror(-why) : "");
}
