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
 *    not read) is dropped rather than buffered without bound;
 *  - optional allowlist of peer uids (SO_PEERCRED).
 * Empty lines are ignored; '\r' before '\n' is stripped; a last line without
 * '\n' before the peer's EOF is still a request. A handler that appends nothing
 * (or more than max_outbuf bytes) is answered {"ok":false,"error":{"code":
 * "internal",...}}. The socket file is created with `mode` (0660), set before
 * listen(2), and a stale socket file is replaced only if nothing listens on
 * it; a path that exists and is not a socket is never removed.
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

typedef struct rc_server_opts {
    const char *path;        /* socket path (borrowed during create) */
    unsigned mode;           /* file mode, 0 = 0660 */
    uint32_t max_line;       /* bytes per request line, 0 = 65536 */
    uint32_t max_clients;    /* 0 = 1024 */
    uint32_t idle_timeout_ms;/* 0 = 300000 (5 min) */
    size_t max_outbuf;       /* unsent reply bytes per client before drop, 0 = 4 MiB */
    const uid_t *allow_uids; /* NULL = anyone who can open the socket */
    uint32_t nallow_uids;
    rc_server_handler handler;
    void *ud;
} rc_server_opts;

typedef struct rc_server_stats {
    uint64_t clients;        /* connected now */
    uint64_t accepted, refused_max, refused_uid;
    uint64_t requests, too_long, idle_closed, slow_dropped;
    uint64_t inflight;       /* requests running on workers now */
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

/* Any thread (counters are atomics). */
void rc_server_stats_get(const rc_server *s, rc_server_stats *st);

#endif
