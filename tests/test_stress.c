/* Stress: 1,000 concurrent clients on the real daemon's Unix socket — garbage
 * senders, over-long lines, half lines then silence, slow readers, clients
 * that hang up mid-request, and well-behaved clients whose answers must equal
 * the ones the same requests got alone — while the daemon's RSS stays within
 * what its configured limits allow, and the daemon is healthy afterwards. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/buf.h"
#include "recalld/common.h"
#include "test.h"

#define N_CLIENTS   1000
#define MAX_CLIENTS 1100
#define MAX_LINE    4096
#define MAX_OUTBUF  65536
#define IDLE_MS     3000
#define ROUNDS      3  /* requests per well-behaved client */
#define NREF        60 /* distinct reference requests */

enum kind { GOOD, JUNK, LONG, HALF, SLOW, ABRUPT };

typedef struct client {
    int fd;
    enum kind kind;
    int step; /* requests answered so far (junk/long: -1 while the bad line is pending) */
    int ref;  /* reference request being checked */
    int done;
    size_t len;
    char buf[1 << 16];
} client;

static char ref_req[NREF][160];
static char *ref_ans[NREF];

static long ms_now(void) { return (long)(rc_now_ns() / 1000000u); }

static int sock_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    ASSERT_LT(strlen(path), sizeof a.sun_path);
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        RC__FAIL("connect %s: %s", path, strerror(errno));
    return fd;
}

/* A reply reduced to what must not change between runs: the error code, or
 * the ordered item ids with scores to 1e-4. Checks the items' shape. */
static char *canonical(const char *line)
{
    json_error_t je;
    json_t *r = json_loads(line, 0, &je);
    if (!r)
        RC__FAIL("reply is not JSON: %.200s", line);
    rc_buf b;
    rc_buf_init(&b, 0);
    json_t *ok = json_object_get(r, "ok");
    ASSERT(json_is_boolean(ok));
    if (json_is_false(ok)) {
        const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
        ASSERT(code != NULL);
        rc_buf_printf(&b, "error:%s", code);
    } else {
        json_t *items = json_object_get(r, "items"), *it;
        size_t i;
        ASSERT(json_is_array(items));
        rc_buf_puts(&b, "items:");
        json_array_foreach(items, i, it) {
            const char *id = json_string_value(json_object_get(it, "item_id"));
            json_t *score = json_object_get(it, "score");
            ASSERT(id && *id && json_is_number(score));
            ASSERT(json_is_string(json_object_get(it, "city")));
            ASSERT(json_is_string(json_object_get(it, "cate")));
            rc_buf_printf(&b, "%s=%.4f,", id, json_number_value(score));
        }
    }
    json_decref(r);
    if (!b.data)
        rc_buf_puts(&b, "");
    return b.data;
}

static void make_references(const char *sock)
{
    for (int i = 0; i < NREF; i++) {
        if (i % 3 == 2)
            snprintf(ref_req[i], sizeof ref_req[i],
                     "{\"op\":\"similar\",\"item_id\":\"i%d\",\"k\":10}\n", i * 13);
        else
            snprintf(ref_req[i], sizeof ref_req[i],
                     "{\"op\":\"recall\",\"user_id\":\"u%d\",\"k\":20%s}\n", i * 7,
                     i % 3 ? ",\"city\":\"1\"" : "");
        char *r = e2e_raw(sock, ref_req[i], strlen(ref_req[i]), 20000);
        ASSERT(r != NULL);
        ref_ans[i] = canonical(r);
        free(r);
    }
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pw = {.fd = fd, .events = POLLOUT};
            ASSERT_GT(poll(&pw, 1, 5000), 0);
            continue;
        }
        if (w <= 0)
            RC__FAIL("send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

static void send_next(client *c, int idx)
{
    c->ref = (idx * 7 + c->step * 13) % NREF;
    if (c->step == ROUNDS - 1 && idx % 5 == 0) {
        send_all(c->fd, "{\"op\":\"stats\"}\n", 15);
        c->ref = -1;
        return;
    }
    send_all(c->fd, ref_req[c->ref], strlen(ref_req[c->ref]));
}

/* First lines: the misbehaviour of each kind. */
static void open_client(client *c, const char *sock, int idx)
{
    static char junk[64], longline[MAX_LINE + 1000], slow[120000];
    static size_t slow_len;
    c->fd = sock_connect(sock);
    c->step = 0;
    switch (c->kind) {
    case JUNK:
        for (size_t i = 0; i < sizeof junk - 1; i++)
            junk[i] = (char)(i == 0 ? 0 : (idx * 31 + i * 17) % 255 + 1);
        for (size_t i = 0; i < sizeof junk - 1; i++)
            if (junk[i] == '\n')
                junk[i] = '\x7f';
        junk[sizeof junk - 1] = '\n';
        send_all(c->fd, junk, sizeof junk);
        c->step = -1;
        break;
    case LONG:
        memset(longline, 'x', sizeof longline - 1);
        longline[sizeof longline - 1] = '\n';
        send_all(c->fd, longline, sizeof longline);
        c->step = -1;
        break;
    case HALF:
        send_all(c->fd, "{\"op\":\"recall\",\"user_", 21);
        break;
    case SLOW:
        if (!slow_len)
            while (slow_len + 100 < sizeof slow)
                slow_len += (size_t)snprintf(slow + slow_len, sizeof slow - slow_len,
                                             "{\"op\":\"recall\",\"user_id\":\"u%zu\",\"k\":200}\n",
                                             slow_len % 1000);
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        /* as much as the socket takes: the rest is never sent, nothing is read */
        if (send(c->fd, slow, slow_len, MSG_NOSIGNAL) < 0 && errno != EAGAIN)
            RC__FAIL("slow send: %s", strerror(errno));
        break;
    case ABRUPT:
        send_all(c->fd, ref_req[idx % NREF], strlen(ref_req[idx % NREF]));
        close(c->fd);
        c->fd = -1;
        break;
    case GOOD:
        send_next(c, idx);
        break;
    }
    c->done = c->kind != GOOD && c->kind != JUNK && c->kind != LONG;
    if (!c->done)
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
}

/* Handles one reply line; returns 1 when the client is finished. */
static int on_line(client *c, int idx, const char *line, long long consumed)
{
    if (c->step < 0) { /* the answer to the bad line: an error, and the connection lives on */
        json_t *r = json_loads(line, 0, NULL);
        const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
        ASSERT(json_is_false(json_object_get(r, "ok")));
        ASSERT_STREQ(code, c->kind == JUNK ? "bad_json" : "line_too_long");
        json_decref(r);
        c->step = 0;
        send_next(c, idx);
        return 0;
    }
    if (c->ref < 0) {
        json_t *r = json_loads(line, 0, NULL);
        ASSERT(json_is_true(json_object_get(r, "ok")));
        ASSERT_EQ(e2e_int(r, "events.consumed"), consumed);
        json_decref(r);
    } else {
        char *got = canonical(line);
        if (strcmp(got, ref_ans[c->ref]) != 0)
            RC__FAIL("client %d: %s-> %.300s\nalone it was %.300s", idx, ref_req[c->ref], got,
                     ref_ans[c->ref]);
        free(got);
    }
    if (++c->step == ROUNDS)
        return 1;
    send_next(c, idx);
    return 0;
}

static int on_readable(client *c, int idx, long long consumed)
{
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (r <= 0)
        RC__FAIL("client %d (kind %d): connection lost (%s)", idx, c->kind,
                 r < 0 ? strerror(errno) : "EOF");
    c->len += (size_t)r;
    c->buf[c->len] = '\0';
    char *nl;
    while ((nl = memchr(c->buf, '\n', c->len))) {
        *nl = '\0';
        if (on_line(c, idx, c->buf, consumed))
            return 1;
        size_t used = (size_t)(nl - c->buf) + 1;
        memmove(c->buf, nl + 1, c->len - used);
        c->len -= used;
    }
    return 0;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* Value of a sample without labels on the metrics page, -1 when absent. */
static double metric(int port, const char *name)
{
    char req[] = "GET /metrics HTTP/1.0\r\n\r\n", key[128];
    static char page[1 << 17];
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    size_t n = 0;
    ssize_t r;
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    send_all(fd, req, sizeof req - 1);
    while ((r = read(fd, page + n, sizeof page - 1 - n)) > 0)
        n += (size_t)r;
    close(fd);
    page[n] = '\0';
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(page, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static enum kind kind_of(int i)
{
    static const enum kind mix[20] = {JUNK, LONG, HALF, HALF, SLOW, ABRUPT};
    return mix[i % 20]; /* 5% junk, 5% long, 10% half, 5% slow, 5% abrupt, 70% good */
}

static void wait_metric(int port, const char *name, double want, int timeout_ms)
{
    long deadline = ms_now() + timeout_ms;
    double v;
    while ((v = metric(port, name)) < want && ms_now() < deadline)
        usleep(100000);
    if (v < want)
        RC__FAIL("%s = %g, want >= %g", name, v, want);
}

TEST(stress_1000_clients_garbage_and_slow_readers)
{
    struct rlimit rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max; /* the daemon inherits it */
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < N_CLIENTS + 200)
        RC__FAIL("RLIMIT_NOFILE hard limit %lu is too low for %d clients",
                 (unsigned long)rl.rlim_cur, N_CLIENTS);
    char cfg[] = "/tmp/rc-stress-XXXXXX", port[16], *out = NULL;
    int fd = mkstemp(cfg), P = free_port();
    ASSERT_GE(fd, 0);
    dprintf(fd,
            "{\"socket\":{\"max_clients\":%d,\"max_line\":%d,\"max_outbuf\":%d,"
            "\"idle_timeout_ms\":%d},\"log\":{\"level\":\"warn\",\"stats_interval_ms\":0}}\n",
            MAX_CLIENTS, MAX_LINE, MAX_OUTBUF, IDLE_MS);
    close(fd);
    snprintf(port, sizeof port, "%d", P);
    const char *extra[] = {"--config", cfg, "--metrics-port", port, NULL};
    e2e_daemon d;
    e2e_start(&d, extra);
    ASSERT_EQ(
        e2e_sh(
            &out,
            RC_BIN("recalld-gen") " --brokers '%s' --seed 3 --events 20000 "
                                  "--users 2000 --items 1500 --cities 4 --cates 4 >/dev/null 2>&1",
            d.bootstrap),
        0);
    free(out);
    json_t *st = e2e_wait_consumed(d.sock, 20000, 120000);
    long long consumed = e2e_int(st, "events.consumed");
    ASSERT_EQ(consumed, 20000);
    json_decref(st);
    e2e_wait_model_still(d.sock); /* the references must not change under the clients */
    make_references(d.sock);
    long rss0 = rss_kb(d.pid), peak = rss0;

    static client cs[N_CLIENTS];
    static struct pollfd pf[N_CLIENTS];
    static int map[N_CLIENTS];
    int left = 0, nslow = 0, nhalf = 0, nlong = 0;
    long t0 = ms_now();
    for (int i = 0; i < N_CLIENTS; i++) {
        cs[i].kind = kind_of(i);
        open_client(&cs[i], d.sock, i);
        left += !cs[i].done;
        nslow += cs[i].kind == SLOW;
        nhalf += cs[i].kind == HALF;
        nlong += cs[i].kind == LONG;
    }
    long last_rss = 0;
    while (left > 0) {
        int m = 0;
        for (int i = 0; i < N_CLIENTS; i++)
            if (!cs[i].done) {
                pf[m] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
                map[m++] = i;
            }
        int r = poll(pf, (nfds_t)m, 120000);
        ASSERT_GT(r, 0);
        for (int j = 0; j < m; j++) {
            int i = map[j];
            if (pf[j].revents && on_readable(&cs[i], i, consumed)) {
                cs[i].done = 1;
                close(cs[i].fd);
                cs[i].fd = -1;
                left--;
            }
        }
        if (ms_now() - last_rss > 100) {
            last_rss = ms_now();
            peak = RC_MAX(peak, rss_kb(d.pid));
        }
    }
    long storm_ms = ms_now() - t0; /* reported below, not bounded */
    /* the half lines are closed by the idle timeout, the slow readers dropped */
    wait_metric(P, "recalld_socket_idle_closed_total", nhalf, IDLE_MS + 120000);
    wait_metric(P, "recalld_socket_slow_dropped_total", nslow, 120000);
    peak = RC_MAX(peak, rss_kb(d.pid));
    ASSERT_GE(metric(P, "recalld_socket_lines_too_long_total"), nlong);
    ASSERT_EQ((long)metric(P, "recalld_socket_refused_total{reason=\"max_clients\"}"), 0);
    /* alive and still right */
    ASSERT_EQ(kill(d.pid, 0), 0);
    json_t *h = e2e_request(d.sock, "{\"op\":\"health\"}");
    ASSERT(json_is_true(json_object_get(h, "ok")));
    json_decref(h);
    for (int i = 0; i < NREF; i++) {
        char *r = e2e_raw(d.sock, ref_req[i], strlen(ref_req[i]), 20000), *got;
        ASSERT(r != NULL);
        got = canonical(r);
        ASSERT_STREQ(got, ref_ans[i]);
        free(got);
        free(r);
    }
    /* what the limits allow: every client's read buffer and unsent replies, plus
     * slack for worker threads and the allocator */
    long bound_kb = (long)MAX_CLIENTS * (MAX_LINE + 256 + MAX_OUTBUF) / 1024 + 64 * 1024;
    printf("storm %ld ms; daemon RSS %ld kB before, peak %ld kB (+%ld kB, bound +%ld kB)\n",
           storm_ms, rss0, peak, peak - rss0, bound_kb);
    ASSERT_LT(peak - rss0, bound_kb);
    for (int i = 0; i < N_CLIENTS; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    for (int i = 0; i < NREF; i++)
        free(ref_ans[i]);
    ASSERT_EQ(e2e_stop(&d), 0);
    unlink(cfg);
}

/* socket.allow_uids from the config file reaches the server (SO_PEERCRED). */
TEST(socket_allow_uids_from_config)
{
    char dir[] = "/tmp/rc-uids-XXXXXX", cfg[300], sock[300], log[300];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    snprintf(sock, sizeof sock, "%s/s.sock", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    /* allowed: this uid is listed */
    FILE *f = fopen(cfg, "w");
    ASSERT(f != NULL);
    fprintf(f, "{\"socket\":{\"allow_uids\":[%u,%u]}}\n", (unsigned)getuid() + 7,
            (unsigned)getuid());
    fclose(f);
    const char *extra[] = {"--config", cfg, NULL};
    e2e_daemon d;
    e2e_start(&d, extra); /* its health request must be admitted */
    ASSERT_EQ(e2e_stop(&d), 0);
    /* refused: only another uid is listed */
    f = fopen(cfg, "w");
    ASSERT(f != NULL);
    fprintf(f, "{\"socket\":{\"allow_uids\":[%u]}}\n", (unsigned)getuid() + 7);
    fclose(f);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (!freopen(log, "w", stderr))
            _exit(126);
        execl(RC_BIN("recalld"), "recalld", "--embedded-kafka", "--metrics-port", "0", "--socket",
              sock, "--config", cfg, (char *)NULL);
        _exit(127);
    }
    /* the refusal is sent at accept, before any request */
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = -1;
    memcpy(a.sun_path, sock, strlen(sock) + 1);
    for (long deadline = ms_now() + 120000; fd < 0; usleep(50000)) {
        ASSERT_LT(ms_now(), deadline);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            fd = -1;
        }
    }
    char buf[512];
    size_t n = 0;
    for (ssize_t k; n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0;)
        n += (size_t)k; /* until the server closes */
    buf[n] = '\0';
    close(fd);
    if (!strstr(buf, "\"code\":\"forbidden\""))
        RC__FAIL("reply: %s", buf);
    kill(pid, SIGTERM);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    e2e_sh(NULL, "rm -rf %s", dir);
}
