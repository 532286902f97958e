/* Server tests: the server runs on its own loop thread; clients are plain
 * blocking (or polled) Unix sockets on the test thread. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/server.h"
#include "recalld/slice.h"
#include "e2e.h"
#include "test.h"

/* ---- harness ----------------------------------------------------------- */

typedef struct tserver {
    uv_loop_t loop;
    uv_async_t stop;
    uv_thread_t thr;
    rc_server *srv;
    char path[108];
    uint32_t drain_ms;
    atomic_int closed;
    /* Set (release) before uv_async_send(&stop), read (acquire) by on_stop:
     * what the test thread did before asking for the stop (reading the
     * server's stats, say) then happens-before the server's teardown. libuv's
     * own hand-over (atomics in uv_async_send, an eventfd the loop may have
     * drained already) orders it too, but invisibly to ThreadSanitizer. */
    atomic_int stop_sent;
} tserver;

static void ms_sleep(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static long now_ms(void) { return (long)(rc_now_ns() / 1000000u); }

/* How long a test waits for something that must happen: generous, so that
 * only a condition that never holds fails, however loaded the machine. */
#define PATIENCE_MS 60000

/* "hold" requests block the worker until the test releases them: an
 * in-flight request whose end the test controls, without a timing race. */
static atomic_int hold_released;

static void make_path(char *out, size_t n, const char *tag)
{
    snprintf(out, n, "/tmp/rc_srv_%ld_%s.sock", (long)getpid(), tag);
    unlink(out);
}

/* Test handler. "sleep:N" sleeps N ms; "hold" waits for hold_released; "big:N" replies with N bytes
 * of padding; "fail" replies ok:false; anything else is echoed with its length. */
static void echo_handler(void *ud, const char *line, size_t len, rc_buf *reply)
{
    ASSERT_EQ(line[len], '\0');
    if (len > 6 && memcmp(line, "sleep:", 6) == 0)
        ms_sleep(atol(line + 6));
    if (len == 4 && memcmp(line, "hold", 4) == 0)
        while (!atomic_load(&hold_released))
            ms_sleep(1);
    if (len > 4 && memcmp(line, "big:", 4) == 0) {
        long n = atol(line + 4);
        rc_buf_puts(reply, "{\"ok\":true,\"pad\":\"");
        for (long i = 0; i < n; i++)
            rc_buf_append(reply, "x", 1);
        rc_buf_puts(reply, "\"}");
        return;
    }
    if (len == 5 && memcmp(line, "slice", 5) == 0) { /* this worker's scheduler slice */
        rc_buf_printf(reply, "{\"ok\":true,\"slice_us\":%lld}", (long long)rc_slice_get());
        return;
    }
    if (len == 4 && memcmp(line, "fail", 4) == 0) {
        rc_buf_puts(reply,
                    "{\"ok\":false,\"error\":{\"code\":\"bad_request\",\"message\":\"fail\"}}");
        return;
    }
    rc_buf_printf(reply, "{\"ok\":true,\"len\":%zu,\"echo\":", len);
    rc_buf_json_str(reply, line, len);
    rc_buf_puts(reply, "}");
}

static void on_closed(void *arg)
{
    tserver *t = arg;
    atomic_store(&t->closed, 1);
}

static void on_stop(uv_async_t *a)
{
    tserver *t = a->data;
    ASSERT_EQ(atomic_load_explicit(&t->stop_sent, memory_order_acquire), 1);
    rc_server_close(t->srv, t->drain_ms, on_closed, t);
    uv_close((uv_handle_t *)a, NULL);
}

static void loop_thread(void *arg)
{
    tserver *t = arg;
    uv_run(&t->loop, UV_RUN_DEFAULT);
}

/* Starts a server with opts (path and handler filled in when unset). */
static void tserver_start(tserver *t, rc_server_opts *o, const char *tag)
{
    char err[256] = "";
    memset(t, 0, sizeof *t);
    make_path(t->path, sizeof t->path, tag);
    if (!o->path)
        o->path = t->path;
    if (!o->handler)
        o->handler = echo_handler;
    ASSERT_EQ(uv_loop_init(&t->loop), 0);
    int rc = rc_server_start(&t->loop, o, &t->srv, err, sizeof err);
    if (rc != 0)
        RC__FAIL("rc_server_start: %s", err);
    ASSERT_EQ(uv_async_init(&t->loop, &t->stop, on_stop), 0);
    t->stop.data = t;
    t->drain_ms = PATIENCE_MS;
    ASSERT_EQ(uv_thread_create(&t->thr, loop_thread, t), 0);
}

/* The runner ends a case with _exit(), which skips LeakSanitizer's exit hook:
 * ask for the check explicitly when built with it. */
void __lsan_do_leak_check(void) __attribute__((weak));

static void leak_check(void)
{
    if (__lsan_do_leak_check)
        __lsan_do_leak_check();
}

static void tserver_joined(tserver *t)
{
    ASSERT_EQ(uv_thread_join(&t->thr), 0);
    ASSERT_EQ(atomic_load(&t->closed), 1);
    ASSERT_EQ(uv_loop_close(&t->loop), 0);
    ASSERT_NE(access(t->path, F_OK), 0);
    leak_check();
}

static void tserver_send_stop(tserver *t)
{
    atomic_store_explicit(&t->stop_sent, 1, memory_order_release);
    ASSERT_EQ(uv_async_send(&t->stop), 0);
}

static void tserver_stop(tserver *t)
{
    tserver_send_stop(t);
    tserver_joined(t);
}

static rc_server_stats stats(tserver *t)
{
    rc_server_stats st;
    rc_server_stats_get(t->srv, &st);
    return st;
}

/* Waits until expr holds, up to ms milliseconds. */
#define WAIT_FOR(expr, ms)                                                                         \
    do {                                                                                           \
        long until_ = now_ms() + (ms);                                                             \
        while (!(expr) && now_ms() < until_)                                                       \
            ms_sleep(2);                                                                           \
        if (!(expr))                                                                               \
            RC__FAIL("timed out waiting for %s", #expr);                                           \
    } while (0)

/* ---- client ------------------------------------------------------------ */

typedef struct cli {
    int fd;
    size_t len;
    char buf[16384];
} cli;

static int cli_connect(cli *c, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memset(c, 0, sizeof *c);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(c->fd, 0);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -errno;
    return 0;
}

static void cli_open(cli *c, const char *path) { ASSERT_EQ(cli_connect(c, path), 0); }

static void cli_send(cli *c, const void *p, size_t n)
{
    const char *q = p;
    while (n) {
        ssize_t w = send(c->fd, q, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            RC__FAIL("send: %s", strerror(errno));
        q += w;
        n -= (size_t)w;
    }
}

static void cli_puts(cli *c, const char *s) { cli_send(c, s, strlen(s)); }

/* Reads one line into out (NUL-terminated, no '\n'). Returns its length, -1 on
 * EOF or error, -2 on timeout. */
static long cli_line(cli *c, char *out, size_t cap, long timeout_ms)
{
    long until = now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            ASSERT_LT(n, cap);
            memcpy(out, c->buf, n);
            out[n] = '\0';
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return (long)n;
        }
        ASSERT_LT(c->len, sizeof c->buf);
        long left = until - now_ms();
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) == 0)
            return -2;
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
}

/* Expects the next line to be exactly want. */
static void cli_expect(cli *c, const char *want)
{
    char line[16384];
    long n = cli_line(c, line, sizeof line, PATIENCE_MS);
    if (n < 0)
        RC__FAIL("expected \"%s\", got %s", want, n == -1 ? "EOF" : "timeout");
    ASSERT_STREQ(line, want);
}

static void cli_expect_echo(cli *c, const char *s)
{
    char want[1024];
    snprintf(want, sizeof want, "{\"ok\":true,\"len\":%zu,\"echo\":\"%s\"}", strlen(s), s);
    cli_expect(c, want);
}

/* Sends the line s (one write) and expects its echo. */
static void cli_echo(cli *c, const char *s)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%s\n", s);
    ASSERT(n > 0 && (size_t)n < sizeof line);
    cli_send(c, line, (size_t)n);
    cli_expect_echo(c, s);
}

static void cli_expect_error(cli *c, const char *code)
{
    char line[1024], pat[128];
    long n = cli_line(c, line, sizeof line, PATIENCE_MS);
    if (n < 0)
        RC__FAIL("expected error %s, got %s", code, n == -1 ? "EOF" : "timeout");
    snprintf(pat, sizeof pat, "{\"ok\":false,\"error\":{\"code\":\"%s\",\"message\":\"", code);
    if (strncmp(line, pat, strlen(pat)) != 0)
        RC__FAIL("expected error %s, got %s", code, line);
}

static void cli_expect_eof(cli *c, long timeout_ms)
{
    char line[16384];
    long n = cli_line(c, line, sizeof line, timeout_ms);
    if (n != -1)
        RC__FAIL("expected EOF, got %s", n == -2 ? "timeout" : line);
}

static void cli_close(cli *c)
{
    close(c->fd);
    c->fd = -1;
}

/* ---- tests ------------------------------------------------------------- */

TEST(server_pipelined_order_and_empty_lines)
{
    tserver t;
    rc_server_opts o = {0};
    tserver_start(&t, &o, "pipe");
    cli c;
    cli_open(&c, t.path);
    cli_puts(&c, "one\n\ntwo\r\n\r\n\nthree\nsleep:50\nfour\n");
    cli_expect_echo(&c, "one");
    cli_expect_echo(&c, "two");
    cli_expect_echo(&c, "three");
    cli_expect_echo(&c, "sleep:50");
    cli_expect_echo(&c, "four");
    /* a line split over several writes */
    cli_puts(&c, "fi");
    ms_sleep(20);
    cli_puts(&c, "ve\n");
    cli_expect_echo(&c, "five");
    ASSERT_EQ(stats(&t).requests, 6);
    ASSERT_EQ(stats(&t).clients, 1);
    /* a last line without '\n' before the peer stops sending still counts */
    cli_puts(&c, "last");
    shutdown(c.fd, SHUT_WR);
    cli_expect_echo(&c, "last");
    cli_expect_eof(&c, PATIENCE_MS);
    cli_close(&c);
    WAIT_FOR(stats(&t).clients == 0, PATIENCE_MS);
    tserver_stop(&t);
}

/* socket.request_slice_us: the thread that starts the server (the loop
 * thread) and every worker that runs a request ask for the short slice, and
 * the stats report what the kernel applied; where it applies none (before
 * Linux 6.12) they say 0, never the slice asked for. */
TEST(server_request_threads_ask_for_their_slice)
{
    tserver t;
    rc_server_opts o = {.slice_us = 200};
    tserver_start(&t, &o, "slice");
    int64_t mine = rc_slice_get();
    cli c;
    cli_open(&c, t.path);
    char line[256];
    for (int i = 0; i < 8; i++) { /* sequential: whichever workers take them */
        cli_puts(&c, "slice\n");
        cli_line(&c, line, sizeof line, PATIENCE_MS);
        if (mine == 200)
            ASSERT_STREQ(line, "{\"ok\":true,\"slice_us\":200}");
    }
    rc_server_stats st = stats(&t);
    ASSERT_EQ(st.slice_us, 200);
    cli_close(&c);
    tserver_stop(&t);
    rc_slice_set(0);
    if (mine != 200) {
        ASSERT_EQ(st.loop_slice_us, mine > 0 ? (uint64_t)mine : 0);
        ASSERT_NE(st.worker_slice_us, 200);
        RC_SKIP("this kernel does not apply custom slices (reports %lld µs): needs Linux 6.12",
                (long long)mine);
    }
    ASSERT_EQ(st.loop_slice_us, 200);
    ASSERT_EQ(st.worker_slice_us, 200);
    /* Not asked: the loop thread keeps the kernel's default, and a worker
     * started while its creator had another slice goes back to the default
     * (these workers were started under the first server's 200 µs). */
    int64_t dflt = rc_slice_get();
    ASSERT_NE(dflt, 200);
    rc_server_opts o2 = {0};
    tserver_start(&t, &o2, "slice0");
    cli_open(&c, t.path);
    for (int i = 0; i < 8; i++) {
        cli_puts(&c, "slice\n");
        cli_line(&c, line, sizeof line, PATIENCE_MS);
        char want[64];
        snprintf(want, sizeof want, "{\"ok\":true,\"slice_us\":%lld}", (long long)dflt);
        ASSERT_STREQ(line, want);
    }
    st = stats(&t);
    ASSERT_EQ(st.slice_us, 0);
    ASSERT_EQ(st.loop_slice_us, (uint64_t)dflt);
    ASSERT_EQ(st.worker_slice_us, (uint64_t)dflt);
    /* A reload's change reaches the loop thread at once and each worker
     * before its next request. */
    rc_server_set_slice(t.srv, 500); /* from the test thread: it started the server */
    ASSERT_EQ(rc_slice_get(), 500);
    cli_puts(&c, "slice\n");
    cli_line(&c, line, sizeof line, PATIENCE_MS);
    ASSERT_STREQ(line, "{\"ok\":true,\"slice_us\":500}");
    st = stats(&t);
    ASSERT_EQ(st.slice_us, 500);
    ASSERT_EQ(st.loop_slice_us, 500);
    ASSERT_EQ(st.worker_slice_us, 500);
    cli_close(&c);
    tserver_stop(&t);
    rc_slice_set(0);
}

/* slice.h: a slice is inherited by the threads a thread starts, and 0 gives
 * the kernel's default back (what rc__engine_background relies on). */
static void *slice_child(void *arg)
{
    int64_t *out = arg;
    out[0] = rc_slice_get();
    out[1] = rc_slice_set(0);
    return NULL;
}

TEST(slice_inherited_and_reset)
{
    int64_t dflt = rc_slice_get();
    if (rc_slice_set(300) != 300) {
        rc_slice_set(0);
        RC_SKIP("this kernel does not apply custom slices: needs Linux 6.12");
    }
    int64_t got[2] = {0, 0};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, slice_child, got), 0);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_EQ(got[0], 300);
    ASSERT_EQ(got[1], dflt);
    ASSERT_EQ(rc_slice_get(), 300); /* the child's reset is its own */
    ASSERT_EQ(rc_slice_set(0), dflt);
}

TEST(server_line_too_long_keeps_connection)
{
    tserver t;
    rc_server_opts o = {.max_line = 64};
    tserver_start(&t, &o, "long");
    cli c;
    cli_open(&c, t.path);
    char big[1000];
    memset(big, 'x', sizeof big);
    /* over-long line and a normal one in a single write */
    cli_send(&c, big, 200);
    cli_puts(&c, "\nok1\n");
    cli_expect_error(&c, "line_too_long");
    cli_expect_echo(&c, "ok1");
    /* over-long line arriving in pieces: one error, the rest discarded */
    cli_send(&c, big, 100);
    cli_expect_error(&c, "line_too_long");
    cli_send(&c, big, 1000);
    ms_sleep(20);
    cli_send(&c, big, 1000);
    cli_puts(&c, "\nok2\n");
    cli_expect_echo(&c, "ok2");
    /* boundaries: exactly max_line passes (with or without '\r'), one more fails */
    char line[80];
    memset(line, 'y', 64);
    memcpy(line + 64, "\r\n", 3);
    cli_puts(&c, line);
    line[64] = '\0';
    cli_expect_echo(&c, line);
    line[64] = 'y';
    memcpy(line + 65, "\n", 2);
    cli_puts(&c, line);
    cli_expect_error(&c, "line_too_long");
    cli_echo(&c, "ok3");
    ASSERT_EQ(stats(&t).too_long, 3);
    cli_close(&c);
    tserver_stop(&t);
}

TEST(server_max_clients_refused)
{
    tserver t;
    rc_server_opts o = {.max_clients = 2};
    tserver_start(&t, &o, "maxc");
    cli a, b, c;
    cli_open(&a, t.path);
    cli_echo(&a, "a");
    cli_open(&b, t.path);
    cli_echo(&b, "b");
    cli_open(&c, t.path);
    cli_expect_error(&c, "too_many_clients");
    cli_expect_eof(&c, PATIENCE_MS);
    cli_close(&c);
    ASSERT_EQ(stats(&t).refused_max, 1);
    cli_close(&a);
    WAIT_FOR(stats(&t).clients == 1, PATIENCE_MS);
    cli_open(&c, t.path);
    cli_echo(&c, "c");
    cli_echo(&b, "b2");
    cli_close(&b);
    cli_close(&c);
    tserver_stop(&t);
}

TEST(server_idle_timeout_closes)
{
    tserver t;
    /* The timeout is long next to busy's 50 ms pauses, so that a loaded
     * machine does not make busy look idle. */
    rc_server_opts o = {.idle_timeout_ms = 1000};
    tserver_start(&t, &o, "idle");
    cli idle, busy;
    cli_open(&idle, t.path);
    cli_open(&busy, t.path);
    cli_echo(&idle, "hi");
    /* busy keeps talking every 50 ms; a request longer than the timeout is not idleness */
    for (int i = 0; i < 8; i++) {
        cli_echo(&busy, "ping");
        ms_sleep(50);
    }
    cli_echo(&busy, "sleep:1500");
    /* idle was closed by the idle timeout (counted below), not by anything
     * else: busy's connection stays usable */
    cli_expect_eof(&idle, PATIENCE_MS);
    cli_echo(&busy, "still");
    ASSERT_EQ(stats(&t).idle_closed, 1);
    cli_close(&idle);
    cli_close(&busy);
    tserver_stop(&t);
}

TEST(server_slow_reader_dropped)
{
    tserver t;
    rc_server_opts o = {.max_outbuf = 64 * 1024};
    tserver_start(&t, &o, "slow");
    cli bad, good;
    cli_open(&bad, t.path);
    cli_open(&good, t.path);
    /* 2000 requests of 4 KiB replies: 8 MiB the bad client never reads */
    static char reqs[2000 * 10];
    size_t n = 0;
    for (int i = 0; i < 2000; i++)
        n += (size_t)snprintf(reqs + n, sizeof reqs - n, "big:4096\n");
    cli_send(&bad, reqs, n);
    for (int i = 0; i < 100; i++) {
        char q[32];
        snprintf(q, sizeof q, "g%d", i);
        cli_puts(&good, q);
        cli_puts(&good, "\n");
        cli_expect_echo(&good, q);
    }
    WAIT_FOR(stats(&t).slow_dropped == 1, PATIENCE_MS);
    WAIT_FOR(stats(&t).clients == 1, PATIENCE_MS);
    cli_echo(&good, "after");
    /* the bad client finds its connection closed once it reads what was sent */
    char line[8192];
    long got;
    int lines = 0;
    while ((got = cli_line(&bad, line, sizeof line, PATIENCE_MS)) >= 0)
        lines++;
    ASSERT_EQ(got, -1);
    ASSERT_LT(lines, 2000);
    cli_close(&bad);
    cli_close(&good);
    tserver_stop(&t);
}

TEST(server_garbage_reaches_handler)
{
    tserver t;
    rc_server_opts o = {.max_line = 4096};
    tserver_start(&t, &o, "garb");
    cli c;
    cli_open(&c, t.path);
    rc_rng r;
    rc_rng_seed(&r, 7);
    char g[600], line[16384], want[64];
    for (int round = 0; round < 50; round++) {
        size_t n = 1 + rc_rng_below(&r, 500);
        for (size_t i = 0; i < n; i++) {
            g[i] = (char)rc_rng_below(&r, 256);
            if (g[i] == '\n' || g[i] == '\r')
                g[i] = 0;
        }
        g[n] = '\n';
        cli_send(&c, g, n + 1);
        ASSERT_GE(cli_line(&c, line, sizeof line, PATIENCE_MS), 0);
        snprintf(want, sizeof want, "{\"ok\":true,\"len\":%zu,", n);
        ASSERT_EQ(strncmp(line, want, strlen(want)), 0);
    }
    /* pure NULs and a high-bit byte run */
    cli_send(&c, "\0\0\0\n\xff\xfe\n", 7);
    cli_expect(&c, "{\"ok\":true,\"len\":3,\"echo\":\"\\u0000\\u0000\\u0000\"}");
    ASSERT_GE(cli_line(&c, line, sizeof line, PATIENCE_MS), 0);
    ASSERT_EQ(strncmp(line, "{\"ok\":true,\"len\":2,", 19), 0);
    cli_echo(&c, "fine");
    cli_close(&c);
    tserver_stop(&t);
}

TEST(server_socket_mode_and_path_claim)
{
    tserver t;
    rc_server_opts o = {0};
    tserver_start(&t, &o, "mode");
    struct stat st;
    ASSERT_EQ(stat(t.path, &st), 0);
    ASSERT(S_ISSOCK(st.st_mode));
    ASSERT_EQ(st.st_mode & 0777, 0660);
    /* a second server on a live path is refused and leaves it alone */
    uv_loop_t loop;
    rc_server *s2 = NULL;
    char err[256] = "";
    ASSERT_EQ(uv_loop_init(&loop), 0);
    rc_server_opts o2 = {.path = t.path, .handler = echo_handler};
    ASSERT_EQ(rc_server_start(&loop, &o2, &s2, err, sizeof err), RC_EIO);
    ASSERT(strstr(err, "another server is listening") != NULL);
    cli c;
    cli_open(&c, t.path);
    cli_echo(&c, "alive");
    cli_close(&c);
    tserver_stop(&t);

    /* a stale socket file (bound, nobody listening) is replaced */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", t.path);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    ASSERT_EQ(access(t.path, F_OK), 0);
    o2.mode = 0600;
    ASSERT_EQ(rc_server_start(&loop, &o2, &s2, err, sizeof err), 0);
    ASSERT_EQ(stat(t.path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    rc_server_close(s2, 0, NULL, NULL);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_NE(access(t.path, F_OK), 0);

    /* a regular file is never deleted */
    fd = open(t.path, O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    close(fd);
    ASSERT_EQ(rc_server_start(&loop, &o2, &s2, err, sizeof err), RC_EIO);
    ASSERT(strstr(err, "not a socket") != NULL);
    ASSERT_EQ(access(t.path, F_OK), 0);
    unlink(t.path);
    /* too long a path */
    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    o2.path = longp;
    ASSERT_EQ(rc_server_start(&loop, &o2, &s2, err, sizeof err), RC_EINVAL);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    leak_check();
}

TEST(server_close_drains_inflight)
{
    tserver t;
    rc_server_opts o = {0};
    tserver_start(&t, &o, "drain");
    cli c, idle;
    cli_open(&c, t.path);
    cli_open(&idle, t.path);
    cli_puts(&c, "sleep:300\nnever\n");
    WAIT_FOR(stats(&t).inflight == 1, PATIENCE_MS);
    tserver_send_stop(&t);
    /* the in-flight reply arrives, the pipelined request behind it does not */
    cli_expect_echo(&c, "sleep:300");
    cli_expect_eof(&c, PATIENCE_MS);
    cli_expect_eof(&idle, PATIENCE_MS);
    tserver_joined(&t);
    cli_close(&c);
    cli_close(&idle);
    leak_check();
}

TEST(server_close_forces_after_drain_timeout)
{
    tserver t;
    rc_server_opts o = {0};
    tserver_start(&t, &o, "force");
    t.drain_ms = 100;
    cli c;
    cli_open(&c, t.path);
    /* the request holds its worker until released: the connection can only
     * close (EOF, no reply) because the drain timed out */
    atomic_store(&hold_released, 0);
    cli_puts(&c, "hold\n");
    WAIT_FOR(stats(&t).inflight == 1, PATIENCE_MS);
    tserver_send_stop(&t);
    cli_expect_eof(&c, PATIENCE_MS);
    atomic_store(&hold_released, 1);
    /* the server is freed only after the worker finished with the conn */
    tserver_joined(&t);
    cli_close(&c);
    leak_check();
}

TEST(server_uid_allowlist)
{
    uid_t other = getuid() + 1, me = getuid();
    tserver t;
    rc_server_opts o = {.allow_uids = &other, .nallow_uids = 1};
    tserver_start(&t, &o, "uid");
    cli c;
    cli_open(&c, t.path);
    cli_expect_error(&c, "forbidden");
    cli_expect_eof(&c, PATIENCE_MS);
    cli_close(&c);
    ASSERT_EQ(stats(&t).refused_uid, 1);
    tserver_stop(&t);

    rc_server_opts o2 = {.allow_uids = &me, .nallow_uids = 1};
    tserver_start(&t, &o2, "uid");
    cli_open(&c, t.path);
    cli_echo(&c, "me");
    cli_close(&c);
    tserver_stop(&t);
}

/* Many clients driven by one poll loop, each doing `rounds` sequential
 * requests; every tenth client sends a garbage line first. */
typedef struct pc {
    int fd, sent, got;
    size_t len;
    char buf[256], want[64];
} pc;

static void pc_send(pc *p, int idx)
{
    char q[64];
    int n = snprintf(q, sizeof q, "c%d-%d\n", idx, p->sent);
    snprintf(p->want, sizeof p->want, "{\"ok\":true,\"len\":%d,\"echo\":\"c%d-%d\"}", n - 1, idx,
             p->sent);
    ASSERT_EQ(send(p->fd, q, (size_t)n, MSG_NOSIGNAL), n);
    p->sent++;
}

/* Consumes complete lines; returns 1 when this client is done. */
static int pc_read(pc *p, int idx, int rounds)
{
    ssize_t r = recv(p->fd, p->buf + p->len, sizeof p->buf - p->len - 1, 0);
    if (r <= 0)
        RC__FAIL("client %d: recv %zd (%s)", idx, r, r < 0 ? strerror(errno) : "EOF");
    p->len += (size_t)r;
    char *nl;
    while ((nl = memchr(p->buf, '\n', p->len))) {
        int garbage = p->got < 0;
        *nl = '\0';
        if (garbage) {
            ASSERT_EQ(strncmp(p->buf, "{\"ok\":true,\"len\":5,", 19), 0);
        } else {
            ASSERT_STREQ(p->buf, p->want);
        }
        p->got++;
        size_t used = (size_t)(nl - p->buf) + 1;
        memmove(p->buf, nl + 1, p->len - used);
        p->len -= used;
        if (p->got == rounds)
            return 1;
        if (!garbage)
            pc_send(p, idx);
    }
    return 0;
}

/* Raises the soft fd limit to the hard one; returns how many clients fit
 * (each costs two fds here: client and server side). */
static int fit_clients(int want)
{
    struct rlimit rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((rlim_t)(2 * want + 64) > rl.rlim_cur)
        want = (int)(rl.rlim_cur - 64) / 2;
    ASSERT_GE(want, 200);
    return want;
}

/* n clients, ROUNDS sequential requests each, every tenth sending a garbage
 * line first; with hogs, every fiftieth client instead floods requests with
 * large replies and never reads. Returns the number of hogs. */
static int run_many(tserver *t, int n, int hogs)
{
    enum { ROUNDS = 5 };
    pc *cs = calloc((size_t)n, sizeof *cs);
    struct pollfd *pf = calloc((size_t)n, sizeof *pf);
    static char flood[500 * 10];
    size_t flen = 0;
    int nhogs = 0, left = 0;
    ASSERT(cs && pf);
    for (int i = 0; i < 500; i++)
        flen += (size_t)snprintf(flood + flen, sizeof flood - flen, "big:4096\n");
    for (int i = 0; i < n; i++) {
        cli c;
        cli_open(&c, t->path);
        cs[i].fd = c.fd;
        if (hogs && i % 50 == 25) {
            ASSERT_EQ(send(c.fd, flood, flen, MSG_NOSIGNAL), (ssize_t)flen);
            cs[i].got = -2; /* not polled */
            nhogs++;
            continue;
        }
        if (i % 10 == 0) {
            ASSERT_EQ(send(c.fd, "\x01\0\xff\x7f\x80\n", 6, MSG_NOSIGNAL), 6);
            cs[i].got = -1;
        }
        pc_send(&cs[i], i);
        left++;
    }
    long t0 = now_ms();
    while (left > 0) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (cs[i].fd >= 0 && cs[i].got != -2)
                pf[m++] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
        int r = poll(pf, (nfds_t)m, PATIENCE_MS);
        ASSERT_GT(r, 0);
        for (int j = 0, i = 0; j < m; j++) {
            if (!pf[j].revents)
                continue;
            while (cs[i].fd != pf[j].fd)
                i++;
            if (pc_read(&cs[i], i, ROUNDS)) {
                close(cs[i].fd);
                cs[i].fd = -1;
                left--;
            }
        }
    }
    /* timing only (no bound: a loaded machine is slow, not wrong) */
    fprintf(stderr, "%d clients served in %ld ms\n", n, now_ms() - t0);
    if (hogs)
        WAIT_FOR(stats(t).slow_dropped == (uint64_t)nhogs, PATIENCE_MS);
    else
        ASSERT_EQ(stats(t).requests, (uint64_t)n * ROUNDS + (uint64_t)(n + 9) / 10);
    ASSERT_EQ(stats(t).refused_max, 0);
    for (int i = 0; i < n; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    WAIT_FOR(stats(t).clients == 0, PATIENCE_MS);
    free(cs);
    free(pf);
    return nhogs;
}

TEST(server_many_concurrent_clients)
{
    int n = fit_clients(1000);
    tserver t;
    rc_server_opts o = {.max_clients = (uint32_t)n};
    tserver_start(&t, &o, "many");
    run_many(&t, n, 0);
    tserver_stop(&t);
}

TEST(server_stress_garbage_and_slow_readers)
{
    int n = fit_clients(1000);
    tserver t;
    rc_server_opts o = {.max_clients = (uint32_t)n, .max_outbuf = 64 * 1024};
    tserver_start(&t, &o, "stress");
    ASSERT_EQ(run_many(&t, n, 1), n / 50);
    ASSERT_EQ(stats(&t).slow_dropped, (uint64_t)(n / 50));
    tserver_stop(&t);
}

/* Runs argv with stdout captured into out; returns the exit status. */
static int run_cmd(char *const argv[], char *out, size_t cap)
{
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(p[0]);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* Answers like the real protocol for the few ops recallctl shortcuts send. */
static void ctl_handler(void *ud, const char *line, size_t len, rc_buf *reply)
{
    if (strstr(line, "\"op\":\"health\"")) {
        rc_buf_puts(reply, "{\"ok\":true,\"status\":\"serving\"}");
    } else if (strstr(line, "\"op\":\"slow\"")) {
        ms_sleep(1000);
        rc_buf_puts(reply, "{\"ok\":true}");
    } else if (strstr(line, "\"op\":\"recall\"")) {
        rc_buf_printf(reply, "{\"ok\":true,\"req\":%s}", line);
    } else {
        rc_buf_puts(reply, "{\"ok\":false,\"error\":{\"code\":\"bad_request\",\"message\":\"x\"}}");
    }
}

TEST(server_recallctl_exit_codes)
{
    tserver t;
    rc_server_opts o = {.handler = ctl_handler};
    tserver_start(&t, &o, "ctl");
    char out[8192];
    char *bin = RC_BIN("recallctl");
    char *health[] = {bin, "--socket", t.path, "health", NULL};
    ASSERT_EQ(run_cmd(health, out, sizeof out), 0);
    ASSERT(strstr(out, "\"status\": \"serving\"") != NULL);
    char *recall[] = {bin, "--raw", "--socket", t.path, "recall", "42", "10", "bj", NULL};
    ASSERT_EQ(run_cmd(recall, out, sizeof out), 0);
    ASSERT_STREQ(out, "{\"ok\":true,\"req\":{\"op\":\"recall\",\"user_id\":\"42\","
                      "\"k\":10,\"city\":\"bj\"}}\n");
    char *stats_[] = {bin, "--socket", t.path, "stats", NULL};
    ASSERT_EQ(run_cmd(stats_, out, sizeof out), 1);
    char *json[] = {bin, "--socket", t.path, "{\"op\": \"nope\"}", NULL};
    ASSERT_EQ(run_cmd(json, out, sizeof out), 1);
    char *slow[] = {bin, "--socket", t.path, "--timeout", "200", "{\"op\":\"slow\"}", NULL};
    ASSERT_EQ(run_cmd(slow, out, sizeof out), 2);
    char missing[128];
    snprintf(missing, sizeof missing, "%s.missing", t.path);
    char *nosock[] = {bin, "--socket", missing, "health", NULL};
    ASSERT_EQ(run_cmd(nosock, out, sizeof out), 2);
    char *usage[] = {bin, "--socket", t.path, "recall", NULL};
    ASSERT_EQ(run_cmd(usage, out, sizeof out), 2);
    char *badjson[] = {bin, "--socket", t.path, "{nope", NULL};
    ASSERT_EQ(run_cmd(badjson, out, sizeof out), 2);
    tserver_stop(&t);
}

/* ---- issue 11: no client can freeze or exhaust the server --------------- */

/* Fast handler: answers "health" on the loop thread, passes the rest on. */
static int fast_handler(void *ud, const char *line, size_t len, rc_buf *reply)
{
    if (len != 6 || memcmp(line, "health", 6) != 0)
        return 0;
    rc_buf_puts(reply, "{\"ok\":true,\"fast\":true}");
    return 1;
}

/* Raw send that tolerates a peer that closed (the trickler's fate). */
static int send_some(cli *c, const char *p, size_t n)
{
    return send(c->fd, p, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

/* health is answered while every worker is held by a request (and more wait
 * in the pool's queue): the answer comes while they still run, an ordering,
 * not a timing. Without the fast path it would wait behind the holds. */
TEST(server_health_answers_while_workers_are_held)
{
    tserver t;
    rc_server_opts o = {.fast = fast_handler};
    enum { BUSY = 12 }; /* above libuv's pool (4, or UV_THREADPOOL_SIZE) */
    cli busy[BUSY], probe;
    atomic_store(&hold_released, 0);
    tserver_start(&t, &o, "fast");
    for (int i = 0; i < BUSY; i++) {
        cli_open(&busy[i], t.path);
        cli_puts(&busy[i], "hold\n");
    }
    WAIT_FOR(stats(&t).inflight == BUSY, PATIENCE_MS);
    cli_open(&probe, t.path);
    cli_puts(&probe, "health\nhealth\n");
    cli_expect(&probe, "{\"ok\":true,\"fast\":true}");
    cli_expect(&probe, "{\"ok\":true,\"fast\":true}");
    ASSERT_EQ(stats(&t).inflight, BUSY); /* every hold still running or queued */
    ASSERT_EQ(stats(&t).fast_requests, 2);
    /* anything else from the same conn still goes to the workers */
    cli_puts(&probe, "after\n");
    atomic_store(&hold_released, 1);
    for (int i = 0; i < BUSY; i++) {
        cli_expect_echo(&busy[i], "hold");
        cli_close(&busy[i]);
    }
    cli_expect_echo(&probe, "after");
    cli_close(&probe);
    tserver_stop(&t);
}

/* At max_clients with every client busy (nothing idle to evict), a new
 * connection gets a probe slot: health answered, then closed; any other
 * request there is too_many_clients. */
TEST(server_probe_slot_beyond_max_clients)
{
    tserver t;
    rc_server_opts o = {.max_clients = 2, .fast = fast_handler};
    cli a, b, p, q;
    atomic_store(&hold_released, 0);
    tserver_start(&t, &o, "probe");
    cli_open(&a, t.path);
    cli_open(&b, t.path);
    cli_puts(&a, "hold\n");
    cli_puts(&b, "hold\n");
    WAIT_FOR(stats(&t).inflight == 2, PATIENCE_MS);
    cli_open(&p, t.path);
    cli_puts(&p, "health\n");
    cli_expect(&p, "{\"ok\":true,\"fast\":true}");
    cli_expect_eof(&p, PATIENCE_MS);
    cli_open(&q, t.path);
    cli_puts(&q, "ping\n");
    cli_expect_error(&q, "too_many_clients");
    cli_expect_eof(&q, PATIENCE_MS);
    ASSERT_EQ(stats(&t).probes, 2);
    ASSERT_EQ(stats(&t).refused_max, 1);
    ASSERT_EQ(stats(&t).clients, 2);
    ASSERT_EQ(stats(&t).evicted_idle, 0);
    atomic_store(&hold_released, 1);
    cli_expect_echo(&a, "hold");
    cli_expect_echo(&b, "hold");
    cli_close(&a);
    cli_close(&b);
    cli_close(&p);
    cli_close(&q);
    tserver_stop(&t);
}

/* Idle connections cannot lock new clients out: at max_clients the least
 * recently active one, idle for a second, gives way (evicted_idle). */
TEST(server_idle_client_evicted_at_max_clients)
{
    tserver t;
    rc_server_opts o = {.max_clients = 2};
    cli a, b, c;
    char line[1024];
    tserver_start(&t, &o, "evict");
    cli_open(&a, t.path);
    cli_echo(&a, "a");
    cli_open(&b, t.path);
    cli_echo(&b, "b");
    /* refused while a is not yet idle long enough, admitted once it is */
    long until = now_ms() + PATIENCE_MS;
    for (;;) {
        cli_open(&c, t.path);
        send_some(&c, "c\n", 2); /* a refused conn may be closed already */
        ASSERT_GE(cli_line(&c, line, sizeof line, PATIENCE_MS), 0);
        if (strstr(line, "\"echo\":\"c\""))
            break;
        ASSERT(strstr(line, "too_many_clients") != NULL);
        cli_close(&c);
        if (now_ms() > until)
            RC__FAIL("no idle client was evicted");
        ms_sleep(50);
    }
    cli_expect_eof(&a, PATIENCE_MS); /* the oldest went */
    ASSERT_EQ(stats(&t).evicted_idle, 1);
    cli_echo(&b, "b2");
    cli_close(&a);
    cli_close(&b);
    cli_close(&c);
    tserver_stop(&t);
}

/* A client trickling a request line (a byte now and then, never the
 * newline) is closed after request_timeout_ms with request_timeout, although
 * it is never idle; an endless over-long line likewise. */
TEST(server_request_timeout_closes_tricklers)
{
    tserver t;
    rc_server_opts o = {.request_timeout_ms = 300, .idle_timeout_ms = 600000, .max_line = 64};
    cli tr, lg, good;
    char line[1024], junk[100];
    memset(junk, 'x', sizeof junk);
    tserver_start(&t, &o, "trkl");
    cli_open(&tr, t.path);
    cli_open(&lg, t.path);
    cli_open(&good, t.path);
    int got_tr = 0, got_lg = 0;
    long until = now_ms() + PATIENCE_MS;
    cli_puts(&tr, "{\"op\":");
    while ((!got_tr || !got_lg) && now_ms() < until) {
        /* keep sending (a refused send: closed already) and look for the answer */
        long r;
        if (!got_tr) {
            send_some(&tr, "x", 1);
            if ((r = cli_line(&tr, line, sizeof line, 10)) >= 0)
                got_tr = strstr(line, "request_timeout") ? 1 : -1;
            else if (r == -1)
                got_tr = -2; /* closed without saying why */
        }
        if (!got_lg) {
            send_some(&lg, junk, sizeof junk);
            if ((r = cli_line(&lg, line, sizeof line, 10)) >= 0 && !strstr(line, "line_too_long"))
                got_lg = strstr(line, "request_timeout") ? 1 : -1;
            else if (r == -1)
                got_lg = -2;
        }
        cli_echo(&good, "g");
    }
    ASSERT_EQ(got_tr, 1);
    ASSERT_EQ(got_lg, 1);
    cli_expect_eof(&tr, PATIENCE_MS);
    ASSERT_EQ(stats(&t).request_timeouts, 2);
    ASSERT_EQ(stats(&t).idle_closed, 0);
    cli_echo(&good, "still");
    cli_close(&tr);
    cli_close(&lg);
    cli_close(&good);
    tserver_stop(&t);
}

/* Clients that never read cannot make the server hold more than
 * max_outbuf_total of replies, although each alone stays under its own
 * max_outbuf: the one that would pass the total is dropped and counted. */
TEST(server_outbuf_total_bounds_all_clients)
{
    tserver t;
    const size_t total = 256 * 1024;
    rc_server_opts o = {.max_outbuf = 4u << 20, .max_outbuf_total = total};
    enum { BAD = 8, REQS = 40 };
    cli bad[BAD], good;
    static char reqs[REQS * 12];
    size_t n = 0;
    for (int i = 0; i < REQS; i++)
        n += (size_t)snprintf(reqs + n, sizeof reqs - n, "big:60000\n");
    tserver_start(&t, &o, "total");
    for (int i = 0; i < BAD; i++) {
        cli_open(&bad[i], t.path);
        cli_send(&bad[i], reqs, n);
    }
    cli_open(&good, t.path);
    long until = now_ms() + PATIENCE_MS;
    uint64_t peak = 0;
    while (stats(&t).outbuf_total_dropped == 0 && now_ms() < until) {
        peak = RC_MAX(peak, stats(&t).queued_bytes);
        cli_echo(&good, "g");
    }
    ASSERT_GE(stats(&t).outbuf_total_dropped, 1);
    ASSERT_EQ(stats(&t).slow_dropped, 0);
    ASSERT_LE(peak, total);
    ASSERT_LE(stats(&t).queued_bytes, total);
    ASSERT_EQ(stats(&t).max_outbuf_total, total);
    cli_echo(&good, "after");
    for (int i = 0; i < BAD; i++)
        cli_close(&bad[i]);
    cli_close(&good);
    tserver_stop(&t);
}

/* Tricklers are never idle, yet cannot lock new clients out either: at
 * max_clients the one whose unfinished line is oldest (a second or more)
 * gives way, long before request_timeout_ms. */
TEST(server_trickler_evicted_at_max_clients)
{
    tserver t;
    rc_server_opts o = {.max_clients = 2, .request_timeout_ms = 600000};
    cli a, b, c;
    char line[1024];
    tserver_start(&t, &o, "evtr");
    cli_open(&a, t.path);
    cli_open(&b, t.path);
    cli_puts(&a, "{\"op\":");
    cli_puts(&b, "{\"op\":");
    long until = now_ms() + PATIENCE_MS;
    for (;;) {
        send_some(&a, "x", 1); /* both keep trickling: never idle */
        send_some(&b, "x", 1);
        cli_open(&c, t.path);
        send_some(&c, "c\n", 2);
        ASSERT_GE(cli_line(&c, line, sizeof line, PATIENCE_MS), 0);
        if (strstr(line, "\"echo\":\"c\""))
            break;
        ASSERT(strstr(line, "too_many_clients") != NULL);
        cli_close(&c);
        if (now_ms() > until)
            RC__FAIL("no trickling client was evicted");
        ms_sleep(50);
    }
    cli_expect_eof(&a, PATIENCE_MS); /* its line started first */
    ASSERT_EQ(stats(&t).evicted_idle, 1);
    ASSERT_EQ(stats(&t).request_timeouts, 0);
    cli_close(&a);
    cli_close(&b);
    cli_close(&c);
    tserver_stop(&t);
}
