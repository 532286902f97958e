#include "e2e.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "recalld/cpus.h"
#include "recalld/api.h"
#include "recalld/engine.h"
#include "recalld/gen.h"
#include "test.h"

/* How long a helper waits for something that must happen: generous, so that
 * only a condition that never holds fails, however loaded the machine. */
#define E2E_PATIENCE_MS 120000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_sock(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return -1;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

char *e2e_raw(const char *sock, const char *bytes, size_t n, int timeout_ms)
{
    int fd = connect_sock(sock);
    if (fd < 0)
        return NULL;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, bytes + off, n - off);
        if (w <= 0) {
            close(fd);
            return NULL;
        }
        off += (size_t)w;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        long long left = deadline - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        if (len + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        char *nl = memchr(buf, '\n', len);
        if (nl) {
            *nl = '\0';
            close(fd);
            return buf;
        }
    }
    close(fd);
    free(buf);
    return NULL;
}

json_t *e2e_request(const char *sock, const char *fmt, ...)
{
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    line[n++] = '\n';
    char *reply = e2e_raw(sock, line, (size_t)n, E2E_PATIENCE_MS);
    if (!reply) {
        /* the daemon's log sits beside its socket (e2e_start): its tail says
         * why it stopped answering (a crash, a sanitizer's report) */
        const char *slash = strrchr(sock, '/');
        char *log = NULL;
        if (slash)
            e2e_sh(&log, "tail -40 %.*s/recalld.log 2>&1", (int)(slash - sock), sock);
        RC__FAIL("no reply from %s to %.*s; its log ends:\n%s", sock, n - 1, line,
                 log ? log : "(none)");
    }
    json_error_t je;
    json_t *j = json_loads(reply, 0, &je);
    if (!j)
        RC__FAIL("reply is not JSON (%s): %.200s", je.text, reply);
    free(reply);
    return j;
}

long long e2e_int(json_t *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = json_object_get(cur, tok);
    return json_is_integer(cur) ? (long long)json_integer_value(cur) : -1;
}

long long e2e_scaled_ms(long long ms)
{
    const char *v = getenv("RC_TEST_TIME_SCALE");
    double f = v ? atof(v) : 1.0;
    long long scaled = f > 1.0 ? (long long)((double)ms * f) : ms;
    unsigned left = alarm(0); /* the seconds the case has left (0: no alarm) */
    if (left) {
        alarm(left);
        long long room = (long long)left * 1000 - 15000;
        if (room < (long long)left * 500)
            room = (long long)left * 500;
        if (scaled > room)
            scaled = room;
    }
    return scaled;
}

json_t *e2e_wait_consumed(const char *sock, long long n, int timeout_ms)
{
    long long deadline = now_ms() + e2e_scaled_ms(timeout_ms);
    for (;;) {
        json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
        long long consumed = e2e_int(st, "events.consumed");
        long long done = e2e_int(st, "events.applied") + e2e_int(st, "events.invalid");
        if ((consumed >= n && done >= n) || now_ms() > deadline)
            return st;
        json_decref(st);
        usleep(50000);
    }
}

int e2e_sh(char **out, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    ASSERT(p != NULL);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += r;
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void e2e_start(e2e_daemon *d, const char *const *extra)
{
    e2e_opts o = {.extra = extra};
    e2e_start_opts(d, &o);
}

static void spawn(e2e_daemon *d, const e2e_opts *o)
{
    const char *argv[64];
    int argc = 0;
    if (!o->reuse) {
        memset(d, 0, sizeof *d);
        snprintf(d->dir, sizeof d->dir, "/tmp/rc-e2e-XXXXXX");
        ASSERT(mkdtemp(d->dir) != NULL);
        snprintf(d->sock, sizeof d->sock, "%s/s.sock", d->dir);
        snprintf(d->log, sizeof d->log, "%s/recalld.log", d->dir);
    }
    argv[argc++] = RC_BIN("recalld");
    if (o->brokers) {
        argv[argc++] = "--brokers";
        argv[argc++] = o->brokers;
    } else {
        argv[argc++] = "--embedded-kafka";
    }
    argv[argc++] = "--socket";
    argv[argc++] = d->sock;
    /* No metrics listener unless a test asks (extra flags come later and win):
     * parallel daemons must not compete for the default port. */
    argv[argc++] = "--metrics-port";
    argv[argc++] = "0";
    for (const char *const *x = o->extra; x && *x && argc < 60; x++)
        argv[argc++] = *x;
    argv[argc] = NULL;
    d->pid = fork();
    ASSERT(d->pid >= 0);
    if (d->pid == 0) {
        /* The daemon must not outlive a test that fails or times out. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *f = freopen(d->log, o->reuse ? "a" : "w", stderr);
        (void)f;
        if (o->fsize_limit > 0) {
            struct rlimit rl = {(rlim_t)o->fsize_limit, (rlim_t)o->fsize_limit};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
}

void e2e_kill(e2e_daemon *d)
{
    int st;
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = 0;
}

void e2e_start_opts(e2e_daemon *d, const e2e_opts *o)
{
    spawn(d, o);
    long long deadline = now_ms() + E2E_PATIENCE_MS;
    for (;;) {
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            char *log = NULL;
            e2e_sh(&log, "tail -20 %s", d->log);
            RC__FAIL("recalld exited during start:\n%s", log);
        }
        char *r = e2e_raw(d->sock, "{\"op\":\"health\"}\n", 16, 2000);
        int ok = r && (o->no_wait || strstr(r, "\"ok\":true"));
        free(r);
        if (ok)
            break;
        if (now_ms() > deadline)
            RC__FAIL("recalld not healthy after %d s (log %s)", E2E_PATIENCE_MS / 1000, d->log);
        usleep(50000);
    }
    json_t *st = e2e_request(d->sock, "{\"op\":\"stats\"}");
    const char *bs = json_string_value(json_object_get(json_object_get(st, "kafka"), "bootstrap"));
    ASSERT(bs && *bs);
    snprintf(d->bootstrap, sizeof d->bootstrap, "%s", bs);
    json_decref(st);
}

int e2e_stop(e2e_daemon *d)
{
    int st = 0;
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    long long deadline = now_ms() + e2e_scaled_ms(E2E_PATIENCE_MS);
    while (waitpid(d->pid, &st, WNOHANG) != d->pid) {
        if (now_ms() > deadline) {
            /* a shutdown that does not end: say where it stands before the
             * kill (the threads' stacks when gdb is installed, the log's end) */
            fprintf(stderr, "recalld (pid %d) still running %lld s after SIGTERM\n", (int)d->pid,
                    e2e_scaled_ms(E2E_PATIENCE_MS) / 1000);
            e2e_sh(NULL,
                   "command -v gdb >/dev/null && gdb -batch -nx -p %d -ex 'thread apply all bt' "
                   "2>/dev/null | grep -E '^(Thread|#)' >&2; tail -20 %s >&2",
                   (int)d->pid, d->log);
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &st, 0);
            return -1;
        }
        usleep(20000);
    }
    d->pid = 0;
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rc != 0) {
        /* say why: a sanitizer's report (TSan exits 66) or the log's end */
        fprintf(stderr, "recalld (log %s) exited with %d%s; its log:\n", d->log, rc,
                WIFSIGNALED(st) ? " (signal)" : "");
        e2e_sh(NULL,
               "if grep -q 'Sanitizer' %s; then sed -n '/Sanitizer/,$p' %s | head -120; "
               "else tail -30 %s; fi >&2",
               d->log, d->log, d->log);
    }
    return rc;
}

/* ---- recalld-broker ---- */

void e2e_broker_start(e2e_broker *b, int partitions, const char *const *extra)
{
    const char *argv[32];
    char parts[16];
    int argc = 0, in[2], out[2];
    memset(b, 0, sizeof *b);
    snprintf(parts, sizeof parts, "%d", partitions);
    argv[argc++] = RC_BIN("recalld-broker");
    argv[argc++] = "--partitions";
    argv[argc++] = parts;
    for (; extra && *extra && argc < 30; extra++)
        argv[argc++] = *extra;
    argv[argc] = NULL;
    ASSERT_EQ(pipe(in), 0);
    ASSERT_EQ(pipe(out), 0);
    b->pid = fork();
    ASSERT(b->pid >= 0);
    if (b->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        if (!getenv("RC_TEST_BROKER_LOG"))
            (void)!freopen("/dev/null", "w", stderr);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    b->cmd_fd = in[1];
    b->out_fd = out[0];
    size_t len = 0;
    while (len + 1 < sizeof b->bootstrap) { /* first line: the bootstrap address */
        ssize_t r = read(b->out_fd, b->bootstrap + len, 1);
        ASSERT(r == 1);
        if (b->bootstrap[len] == '\n')
            break;
        len++;
    }
    b->bootstrap[len] = '\0';
    ASSERT(len > 0);
}

char *e2e_broker_cmd(e2e_broker *b, const char *fmt, ...)
{
    char line[512], reply[512];
    size_t len = 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    line[n++] = '\n';
    ASSERT_EQ(write(b->cmd_fd, line, (size_t)n), n);
    while (len + 1 < sizeof reply) {
        ssize_t r = read(b->out_fd, reply + len, 1);
        ASSERT(r == 1);
        if (reply[len] == '\n')
            break;
        len++;
    }
    reply[len] = '\0';
    return strdup(reply);
}

void e2e_broker_stop(e2e_broker *b)
{
    int st;
    if (b->pid <= 0)
        return;
    kill(b->pid, SIGTERM);
    waitpid(b->pid, &st, 0);
    close(b->cmd_fd);
    close(b->out_fd);
    b->pid = 0;
}

/* ---- generated streams ---- */

void e2e_checkpoint_open(const char *data, rc_table **t, rc_checkpoint_meta *m)
{
    char err[512];
    rc_table_opts to = {.dim = 64};
    *t = NULL;
    if (rc_checkpoint_restore(data, &to, t, m, NULL, 0, err, sizeof err))
        RC__FAIL("restore %s: %s", data, err);
}

uint64_t e2e_checkpoint_add_counts(const char *data, uint32_t *sum)
{
    rc_table *t;
    rc_checkpoint_meta m;
    e2e_checkpoint_open(data, &t, &m);
    for (uint32_t i = 0; i < E2E_GEN_ITEMS; i++) {
        char id[16];
        uint32_t row;
        snprintf(id, sizeof id, "i%u", i);
        if (rc_table_find(t, id, strlen(id), &row) == 0)
            sum[i] += rc_table_count(t, row);
    }
    uint64_t applied = rc_checkpoint_meta_counter(&m, "applied", 0);
    rc_checkpoint_meta_free(&m);
    rc_table_destroy(t);
    return applied;
}

void e2e_assert_counts(const e2e_truth *tr, const uint32_t *sum)
{
    for (uint32_t i = 0; i < E2E_GEN_ITEMS; i++)
        if (sum[i] != tr->count[i])
            RC__FAIL("item i%u: %u clicks in the models, %u produced", i, sum[i], tr->count[i]);
}

void e2e_gen_file(const char *path, const rc_gen_opts *o)
{
    rc_gen *g = NULL;
    char err[256], line[RC_GEN_LINE_MAX];
    size_t len;
    if (rc_gen_create(o, &g, err, sizeof err))
        RC__FAIL("rc_gen_create: %s", err);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    while (rc_gen_next(g, line, sizeof line, &len, NULL) == 0) {
        fwrite(line, 1, len, f);
        fputc('\n', f);
    }
    ASSERT_EQ(fclose(f), 0);
    rc_gen_destroy(g);
}

rc_gen *e2e_gen_open(uint64_t seed, uint64_t events, double invalid)
{
    rc_gen_opts o = {.seed = seed,
                     .events = events,
                     .users = E2E_GEN_USERS,
                     .items = E2E_GEN_ITEMS,
                     .cities = 4,
                     .cates = 4,
                     .communities = 40,
                     .invalid_share = invalid};
    rc_gen *g = NULL;
    char err[256];
    if (rc_gen_create(&o, &g, err, sizeof err))
        RC__FAIL("rc_gen_create: %s", err);
    return g;
}

void e2e_gen_truth(uint64_t seed, uint64_t events, double invalid, e2e_truth *t)
{
    rc_gen *g = e2e_gen_open(seed, events, invalid);
    char line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info;
    memset(t, 0, sizeof *t);
    t->count = calloc(E2E_GEN_ITEMS, sizeof *t->count);
    ASSERT(t->count != NULL);
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        if (info.valid) {
            t->valid++;
            t->count[info.item]++;
        } else {
            t->invalid++;
        }
    }
    rc_gen_destroy(g);
}

/* One generated line, found again by its text. */
struct gen_line {
    char *text;
    size_t len;
    uint32_t item;
    int valid;
    uint32_t seen; /* messages of the log with this text */
    int32_t part;  /* where the log first holds it (when seen) */
    int64_t off;
};

static uint64_t text_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

uint64_t e2e_topic_read(const char *brokers, const char *topic, int partitions,
                        void (*on_msg)(void *ud, const rd_kafka_message_t *m), void *ud)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) ||
        rd_kafka_conf_set(conf, "group.id", "e2e-topic-read", err, sizeof err) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) ||
        rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err))
        RC__FAIL("consumer config: %s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        RC__FAIL("consumer: %s", err);
    int64_t *end = calloc((size_t)partitions, sizeof *end),
            *pos = calloc((size_t)partitions, sizeof *pos);
    ASSERT(end != NULL && pos != NULL);
    rd_kafka_topic_partition_list_t *pl = rd_kafka_topic_partition_list_new(partitions);
    int open = 0;
    uint64_t trimmed = 0;
    for (int p = 0; p < partitions; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, (int)e2e_scaled_ms(30000));
        if (e)
            RC__FAIL("watermarks of %s [%d]: %s", topic, p, rd_kafka_err2str(e));
        end[p] = hi;
        pos[p] = lo;
        trimmed += (uint64_t)lo;
        if (lo < hi) {
            rd_kafka_topic_partition_list_add(pl, topic, p)->offset = lo;
            open++;
        }
    }
    ASSERT_EQ(rd_kafka_assign(rk, pl), 0);
    rd_kafka_topic_partition_list_destroy(pl);
    long long deadline = now_ms() + e2e_scaled_ms(E2E_PATIENCE_MS);
    while (open > 0) {
        if (now_ms() > deadline)
            RC__FAIL("reading %s: %d partitions short of their end after %lld ms", topic, open,
                     e2e_scaled_ms(E2E_PATIENCE_MS));
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                RC__FAIL("reading %s: %s", topic, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        int p = m->partition;
        ASSERT(p >= 0 && p < partitions);
        if (m->offset != pos[p])
            RC__FAIL("%s [%d]: offset %lld read, %lld expected (a gap in the log)", topic, p,
                     (long long)m->offset, (long long)pos[p]);
        on_msg(ud, m);
        if (++pos[p] == end[p])
            open--;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(end);
    free(pos);
    return trimmed;
}

/* e2e_topic_truth's state while it reads the log. */
struct truth_read {
    struct gen_line *lines;
    const uint32_t *slot;
    size_t cap;
    e2e_truth *t;
};

static void truth_message(void *ud, const rd_kafka_message_t *m)
{
    struct truth_read *r = ud;
    size_t s = text_hash(m->payload, m->len) & (r->cap - 1);
    struct gen_line *l = NULL;
    for (; r->slot[s]; s = (s + 1) & (r->cap - 1)) {
        struct gen_line *o = &r->lines[r->slot[s] - 1];
        if (o->len == m->len && memcmp(o->text, m->payload, m->len) == 0) {
            l = o;
            break;
        }
    }
    if (!l)
        RC__FAIL("%s [%d] offset %lld is no generated line: '%.*s'", rd_kafka_topic_name(m->rkt),
                 (int)m->partition, (long long)m->offset, (int)m->len, (const char *)m->payload);
    if (l->valid) {
        r->t->valid++;
        if (l->seen)
            r->t->repeats++;
        else
            r->t->count[l->item]++;
    } else {
        r->t->invalid++;
    }
    if (!l->seen++) {
        l->part = m->partition;
        l->off = m->offset;
    }
}

void e2e_topic_truth(const char *brokers, const char *topic, int partitions, uint64_t seed,
                     uint64_t events, double invalid, e2e_truth *t)
{
    /* the generator's lines in an open-addressing table by text */
    size_t cap = 16;
    while (cap < 2 * events)
        cap *= 2;
    struct gen_line *lines = calloc(events, sizeof *lines);
    uint32_t *slot = malloc(cap * sizeof *slot); /* line index + 1, 0 = empty */
    ASSERT(lines != NULL && slot != NULL);
    memset(slot, 0, cap * sizeof *slot);
    rc_gen *g = e2e_gen_open(seed, events, invalid);
    char buf[RC_GEN_LINE_MAX];
    size_t len, n = 0;
    rc_gen_info info;
    while (n < events && rc_gen_next(g, buf, sizeof buf, &len, &info) == 0) {
        struct gen_line *l = &lines[n];
        l->text = malloc(len ? len : 1);
        ASSERT(l->text != NULL);
        memcpy(l->text, buf, len);
        l->len = len;
        l->valid = info.valid;
        l->item = info.item;
        size_t s = text_hash(buf, len) & (cap - 1);
        while (slot[s]) {
            const struct gen_line *o = &lines[slot[s] - 1];
            if (o->len == len && memcmp(o->text, buf, len) == 0)
                RC__FAIL("generated lines %u and %zu are the same: '%.*s'", slot[s] - 1, n,
                         (int)len, buf);
            s = (s + 1) & (cap - 1);
        }
        slot[s] = (uint32_t)++n;
    }
    rc_gen_destroy(g);
    ASSERT_EQ(n, events);

    memset(t, 0, sizeof *t);
    t->count = calloc(E2E_GEN_ITEMS, sizeof *t->count);
    ASSERT(t->count != NULL);
    struct truth_read tr = {lines, slot, cap, t};
    uint64_t trimmed = e2e_topic_read(brokers, topic, partitions, truth_message, &tr);
    size_t missing = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (!lines[i].seen && !missing++)
            first = i;
    if (missing) {
        /* what a missing line's neighbours say: one lost message, or a lost
         * batch (the lines around it absent too, or present in a partition
         * whose offsets close over the gap) */
        for (size_t i = first >= 3 ? first - 3 : 0; i < n && i <= first + 3; i++)
            fprintf(stderr, "  line %zu: %s\n", i, lines[i].seen ? "in the log" : "missing");
        for (size_t i = first >= 3 ? first - 3 : 0; i < n && i <= first + 3; i++)
            if (lines[i].seen)
                fprintf(stderr, "  line %zu at [%d] offset %lld\n", i, (int)lines[i].part,
                        (long long)lines[i].off);
        fprintf(stderr,
                "%zu generated lines are not in %s (the log: %llu valid, %llu invalid, "
                "%llu repeats, %llu trimmed), the first line %zu: '%.*s'\n",
                missing, topic, (unsigned long long)t->valid, (unsigned long long)t->invalid,
                (unsigned long long)t->repeats, (unsigned long long)trimmed, first,
                (int)lines[first].len, lines[first].text);
    }
    t->absent = missing;
    for (size_t i = 0; i < n; i++)
        free(lines[i].text);
    free(lines);
    free(slot);
}

void e2e_gen_topic_checked(const e2e_truth *t, uint64_t events)
{
    if (t->absent)
        fprintf(stderr,
                "the log lacks %llu of the %llu lines recalld-gen reported delivered: "
                "lost before recalld could read them; recalld is checked against the log\n",
                (unsigned long long)t->absent, (unsigned long long)events);
    ASSERT_LE(t->absent * 100, events);
}

pid_t e2e_gen_start(const char *brokers, uint64_t seed, uint64_t events, double invalid,
                    double rate)
{
    char s_seed[32], s_ev[32], s_inv[32], s_rate[32], s_u[16], s_i[16];
    snprintf(s_seed, sizeof s_seed, "%llu", (unsigned long long)seed);
    snprintf(s_ev, sizeof s_ev, "%llu", (unsigned long long)events);
    snprintf(s_inv, sizeof s_inv, "%g", invalid);
    snprintf(s_rate, sizeof s_rate, "%g", rate);
    snprintf(s_u, sizeof s_u, "%d", E2E_GEN_USERS);
    snprintf(s_i, sizeof s_i, "%d", E2E_GEN_ITEMS);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        (void)!freopen("/dev/null", "w", stdout);
        execl(RC_BIN("recalld-gen"), "recalld-gen", "--brokers", brokers, "--topic", "clicks",
              "--seed", s_seed, "--events", s_ev, "--invalid-share", s_inv, "--rate", s_rate,
              "--users", s_u, "--items", s_i, "--cities", "4", "--cates", "4", "--communities",
              "40", "--timeout-ms", "120000", (char *)NULL);
        _exit(127);
    }
    return pid;
}

int e2e_gen_wait(pid_t pid)
{
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

json_t *e2e_wait_done(const char *sock, uint64_t total, int timeout_ms)
{
    long long deadline = now_ms() + e2e_scaled_ms(timeout_ms);
    for (;;) {
        json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
        long long done = e2e_int(st, "events.applied") + e2e_int(st, "events.invalid");
        if (done >= (long long)total || now_ms() > deadline)
            return st;
        json_decref(st);
        usleep(100000);
    }
}

char *e2e_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        RC__FAIL("%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    ASSERT(s != NULL);
    ASSERT_EQ(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

void e2e_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs(text, f);
    ASSERT_EQ(fclose(f), 0);
}

long long e2e_now_ms(void) { return now_ms(); }

void e2e_kcat(const e2e_daemon *d, const char *path)
{
    char *out = NULL;
    int st = e2e_sh(&out, "kcat -P -b '%s' -t clicks -K '\\t' -l %s 2>&1", d->bootstrap, path);
    if (st != 0)
        RC__FAIL("kcat failed (%d): %s", st, out ? out : "");
    free(out);
}

/* ---- in process ---- */

json_t *e2e_json(const char *text)
{
    json_error_t je;
    json_t *j = text ? json_loads(text, 0, &je) : NULL;
    if (!j)
        RC__FAIL("not JSON (%s): %.2000s", text ? je.text : "no text", text ? text : "");
    return j;
}

rc_engine *e2e_engine_offline(const rc_config *c)
{
    rc_engine *e = NULL;
    char err[512];
    if (rc_engine_create(c, NULL, NULL, NULL, &e, err, sizeof err))
        RC__FAIL("rc_engine_create: %s", err);
    return e;
}

rc_engine *e2e_engine_threaded(const rc_config *c, uv_loop_t *loop, rc_engine_done_cb done,
                               void *ud)
{
    rc_engine *e = NULL;
    char err[512];
    ASSERT_EQ(uv_loop_init(loop), 0);
    if (rc_engine_create(c, loop, done, ud, &e, err, sizeof err))
        RC__FAIL("rc_engine_create: %s", err);
    return e;
}

void e2e_engine_threaded_close(rc_engine *e, uv_loop_t *loop)
{
    rc_engine_destroy(e);
    ASSERT_EQ(uv_run(loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(uv_loop_close(loop), 0);
}

void e2e_loop_until(uv_loop_t *loop, int (*cond)(void *ud), void *ud, int timeout_ms,
                    const char *what)
{
    long long limit = e2e_scaled_ms(timeout_ms), t0 = now_ms();
    while (!cond(ud)) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (now_ms() - t0 > limit)
            RC__FAIL("%s: not after %lld ms", what, limit);
        usleep(2000);
    }
}

void e2e_engine_click(rc_engine *e, const char *user, const char *item, const char *city,
                      const char *cate, int64_t ts)
{
    ASSERT_EQ(rc_engine_apply_click(e, user, strlen(user), item, strlen(item), city, strlen(city),
                                    cate, strlen(cate), ts),
              0);
}

const char *e2e_engine_item(rc_engine *e, uint32_t row)
{
    static _Thread_local char id[RC_ID_MAX + 1];
    size_t len;
    const char *p = rc_table_item_id(rc_engine_table(e), row, &len);
    snprintf(id, sizeof id, "%.*s", (int)len, p);
    return id;
}

json_t *e2e_engine_stats(rc_engine *e)
{
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_buf_puts(&b, "{");
    rc_engine_stats_json(e, &b);
    rc_buf_puts(&b, "}");
    json_error_t je;
    json_t *st = json_loads(b.data, 0, &je);
    if (!st)
        RC__FAIL("stats JSON: %s: %.300s", je.text, b.data);
    rc_buf_free(&b);
    return st;
}

json_t *e2e_api(void *a, const char *req)
{
    rc_buf r;
    rc_buf_init(&r, 1 << 22);
    rc_api_handle(a, req, strlen(req), &r);
    json_error_t je;
    json_t *j = r.data ? json_loads(r.data, 0, &je) : NULL;
    if (!j)
        RC__FAIL("%s -> not JSON: %.300s", req, r.data ? r.data : "(none)");
    rc_buf_free(&r);
    return j;
}

void e2e_wait_model_still(const char *sock)
{
    long long deadline = e2e_now_ms() + e2e_scaled_ms(300000);
    for (;;) {
        json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
        long long replay = e2e_int(st, "training.replay.pending");
        long long index = e2e_int(st, "index.pending");
        json_decref(st);
        if (replay == 0 && index == 0)
            return;
        if (e2e_now_ms() > deadline)
            RC__FAIL("the model still moves: %lld replays owed, %lld rows pending in the index",
                     replay, index);
        usleep(100000);
    }
}

int e2e_cpus_auto(cpu_set_t *all, cpu_set_t *bg, cpu_set_t *rest)
{
    ASSERT_EQ(sched_getaffinity(0, sizeof *all, all), 0);
    if (CPU_COUNT(all) < 2)
        return 0;
    char why[160];
    ASSERT_EQ(rc_cpus_plan("auto", bg, rest, why, sizeof why), 1);
    return 1;
}
