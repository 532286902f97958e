/* server — newline-delimited JSON over a Unix stream socket, on a libuv loop.
 *
 * The server owns framing, connections and limits; it does not parse requests.
 * Each complete line is handed to the handler on a libuv worker thread
 * (uv_queue_work), so a slow search never blocks the loop. A connection has at
 * most one request in flight: replies come back in request order, and reading
 * is paused while a request runs (pipelined lines wait in the kernel buffer or
 * a bounded read buffer) — that is the backpressure.
 *
 * Limits, each answered with an error line and counted, never a crash:
 *  - a line longer than max_line: {"ok":false,"error":{"code":"line_too_long",...}}
 *    and the rest of that line is discarded; the connection stays usable;
 *  - more than max_clients connections: the new one gets an error line
 *    "too_many_clients" and is closed;
 *  - a client idle longer than idle_timeout_ms is closed;
 *  - a client whose unsent replies exceed max_outbuf bytes (a reader that does
 *    not read) is dropped rather than buffered without bound, and so is the
 *    client whose reply would take the unsent bytes of all clients past
 *    max_outbuf_total (counted, WARN, and visible in the stats);
 *  - a request line must be complete (newline) within request_timeout_ms of
 *    its first byte, else "request_timeout" and the client is closed: a
 *    client trickling bytes cannot hold a slot;
 *  - at max_clients, the least recently active client idle for 1 s or more,
 *    else the one whose unfinished line started 1 s ago or more, is closed to
 *    make room (evicted_idle); failing that, up to 8 "probe" connections
 *    beyond max_clients may send one request that the fast handler answers
 *    (health), anything else gets too_many_clients; when the 8 are taken the
 *    oldest probe gives way;
 *  - optional allowlist of peer uids (SO_PEERCRED).
 * Empty lines are ignored; '\r' before '\n' is stripped; a last line without
 * '\n' before the peer's EOF is still a request. A handler that appends nothing
 * is answered {"ok":false,"error":{"code":"internal",...}}, one that appends
 * more than max_outbuf bytes "reply_too_large". The socket file is created
 * with `mode` (0660), set before listen(2), and a stale socket file is
 * replaced only if nothing listens on it; a path that exists and is not a socket is never removed.
 *
 * Thread model: create/close on the loop thread; the handler runs on worker
 * threads, possibly several at once for different connections. */
#ifndef RECALLD_SERVER_H
#define RECALLD_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "recalld/buf.h"

typedef struct rc_server rc_server;

/* Runs on a worker thread. line[0..len) is one request without the newline
 * (not NUL-terminated... but line[len] == '\0' is guaranteed). Append exactly
 * one JSON value (no newline) to reply. ud is the opts' ud. */
typedef void (*rc_server_handler)(void *ud, const char *line, size_t len, rc_buf *reply);

/* Runs on the loop thread before a line goes to a worker: returns 1 when it
 * answered the line itself (appended one JSON value to reply), 0 to pass the
 * line on (reply untouched). Must be cheap and never block (health). */
typedef int (*rc_server_fast_handler)(void *ud, const char *line, size_t len, rc_buf *reply);

typedef struct rc_server_opts {
    const char *path;            /* socket path (borrowed during create) */
    unsigned mode;               /* file mode, 0 = 0660 */
    uint32_t max_line;           /* bytes per request line, 0 = 65536 */
    uint32_t max_clients;        /* 0 = 1024 */
    uint32_t idle_timeout_ms;    /* 0 = 300000 (5 min) */
    size_t max_outbuf;           /* unsent reply bytes per client before drop, 0 = 4 MiB */
    size_t max_outbuf_total;     /* unsent reply bytes of all clients, 0 = 256 MiB */
    uint32_t request_timeout_ms; /* first byte of a line to its newline, 0 = 10000 */
    const uid_t *allow_uids;     /* NULL = anyone who can open the socket */
    uint32_t nallow_uids;
    rc_server_handler handler;
    rc_server_fast_handler fast; /* NULL = every line goes to a worker (no probe slots) */
    /* The scheduler slice (µs, slice.h) the loop thread and each request
     * worker ask for: short, so that a request preempts a busy core's running
     * thread when it wakes. 0 = leave the kernel's default. */
    uint32_t slice_us;
    void *ud; /* passed to handler and fast */
} rc_server_opts;

typedef struct rc_server_stats {
    uint64_t clients; /* connected now */
    uint64_t accepted, refused_max, refused_uid;
    uint64_t requests, too_long, idle_closed, slow_dropped;
    uint64_t inflight;      /* requests running on workers now */
    uint64_t fast_requests; /* answered on the loop thread by the fast handler */
    uint64_t request_timeouts, evicted_idle, outbuf_total_dropped;
    uint64_t probes;       /* conns admitted into a probe slot beyond max_clients */
    uint64_t queued_bytes; /* unsent reply bytes of all clients now */
    uint64_t max_outbuf_total;
    uint64_t outbuf_total_full_ms; /* rc_now_ns()/1e6 when max_outbuf_total was last hit, 0 */
    uint32_t slice_us;             /* asked for (opts.slice_us) */
    /* In effect, as the kernel reports it (µs): the loop thread's since start,
     * the request workers' once one has run a request (after a change, the
     * last worker's to ask); 0 = not reported (a kernel before 6.12) or no
     * request yet. Differs from slice_us where the
     * kernel does not apply it. */
    uint64_t loop_slice_us, worker_slice_us;
} rc_server_stats;

/* Binds and listens. Returns 0, or RC_EIO with "socket PATH: why" in errbuf
 * (another server live on PATH, not a socket, bind/listen failure), RC_EINVAL
 * (NULL path/handler, path too long for sockaddr_un). On RC_EIO after the
 * handles were created, they close through the loop: run it (e.g. the caller's
 * shutdown uv_run) before uv_loop_close(). Sets SIGPIPE to SIG_IGN for the
 * process: a peer that hangs up must cost a write error, not the daemon. */
int rc_server_start(uv_loop_t *loop, const rc_server_opts *opts, rc_server **out, char *errbuf,
                    size_t errlen);

/* Stops accepting, lets in-flight requests finish and their replies be written
 * (at most drain_ms), closes every connection, unlinks the socket file, frees
 * the server, then calls cb(arg) on the loop thread. Pipelined requests not yet
 * started are not run. drain_ms 0 closes connections at once; a handler still
 * running past the drain keeps the server (and cb) waiting until it returns,
 * its reply discarded. cb may be NULL; s NULL or already closing: no-op.
 * Loop thread only. */
void rc_server_close(rc_server *s, uint32_t drain_ms, void (*cb)(void *arg), void *arg);

/* Changes the slice the request path asks for (a config reload): the calling
 * thread, which should be the loop thread, asks at once, each worker before
 * its next request. Thread-safe. */
void rc_server_set_slice(rc_server *s, uint32_t us);

/* Any thread (counters are atomics). */
void rc_server_stats_get(const rc_server *s, rc_server_stats *st);

/* Inside a handler, on its worker thread: how long (ns) the request waited
 * between being framed on the loop thread and a worker starting it (libuv's
 * queue). 0 outside a handler. */
uint64_t rc_server_queue_wait_ns(void);

/* The default socket path, in a private runtime directory: the first of
 * $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=), /run/recalld (when /run
 * or it is writable) and $XDG_RUNTIME_DIR/recalld, plus "/recalld.sock".
 * With create, a missing directory is made with mode 0750 and an existing
 * one must be a directory owned by this uid (or root) that is not group- or
 * world-writable. Writes at most cap bytes to out. Returns 0, or RC_EIO /
 * RC_ENOENT (none usable) with "socket.path: why" in errbuf. Any thread. */
int rc_server_default_path(char *out, size_t cap, int create, char *errbuf, size_t errlen);

#endif
