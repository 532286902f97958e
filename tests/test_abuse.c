/* Abuse tests (issue 11, the socket side): the probes of a client with local
 * socket access, reproduced against the real daemon, each asserting the
 * bounded behaviour: cost limits before any work (probe 3), health while the
 * workers are saturated (probe 3), reload_model only from tower.model_dir
 * (probe 4), unknown request fields (issue 12), the default socket in a
 * private runtime directory and a squatted path (probe 6). The server-side
 * bounds on clients (probe 5) are in test_server.c: server_*. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/model.h"
#include "recalld/modelpath.h"
#include "recalld/table.h"
#include "test.h"

#define WAIT_MS ((int)e2e_scaled_ms(120000)) /* RC_TEST_TIME_SCALE: longer under TSan */
#define T0      1700000000000LL

static int is_ok(json_t *r) { return json_is_true(json_object_get(r, "ok")); }

static const char *err_code(json_t *r)
{
    const char *c = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
    return c ? c : "";
}

static const char *err_msg(json_t *r)
{
    const char *m = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
    return m ? m : "";
}

/* The request is answered with error `code` whose message contains `in`. */
static void expect_error(const char *sock, const char *req, const char *code, const char *in)
{
    json_t *r = e2e_request(sock, "%s", req);
    if (is_ok(r) || strcmp(err_code(r), code) != 0 || !strstr(err_msg(r), in))
        RC__FAIL("%s: expected %s naming \"%s\", got %s: %s", req, code, in, err_code(r),
                 err_msg(r));
    json_decref(r);
}

/* A word2vec model of n items i0.. in city c0, category k0, random vectors. */
static void write_w2v(const char *path, uint32_t dim, uint32_t n)
{
    char err[512], id[16];
    rc_table_opts to = {.dim = dim, .max_items = n + 16, .seed = 3};
    rc_table *t = NULL;
    uint32_t city, cate, row;
    ASSERT_EQ(rc_table_create(&to, &t, err, sizeof err), 0);
    ASSERT_EQ(rc_table_city_id(t, "c0", 2, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k0", 2, &cate), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 5);
    for (uint32_t i = 0; i < n; i++) {
        int len = snprintf(id, sizeof id, "i%u", i), created = 0;
        ASSERT_EQ(rc_table_upsert(t, id, (size_t)len, city, cate, NULL, 0, &row, &created), 0);
        float *v = rc_table_in(t, row);
        for (uint32_t j = 0; j < dim; j++)
            v[j] = rc_rng_float(&rng) - 0.5f;
        rc_table_count_add(t, row, 1);
    }
    if (rc_model_save(t, path, err, sizeof err))
        RC__FAIL("save: %s", err);
    rc_table_destroy(t);
}

/* Users u0..u(users-1), three clicks each on items of the model. */
static void produce_users(e2e_daemon *d, int users)
{
    char path[320];
    snprintf(path, sizeof path, "%s/clicks.txt", d->dir);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    for (int u = 0; u < users; u++)
        for (int j = 0; j < 3; j++)
            fprintf(f,
                    "u%d\t{\"user_id\":\"u%d\",\"item_id\":\"i%d\",\"city_id\":\"c0\","
                    "\"cate_id\":\"k0\",\"ts\":%lld}\n",
                    u, u, u * 3 + j, T0 + u * 10 + j);
    fclose(f);
    e2e_kcat(d, path);
    json_decref(e2e_wait_done(d->sock, (uint64_t)users * 3, WAIT_MS));
}

/* {"op":"recall","users":["u0",...,"u(n-1)"],"k":K,<extra>} */
static char *batch_request(int n, int k, const char *extra)
{
    size_t cap = (size_t)n * 12 + 256, len = 0;
    char *s = malloc(cap);
    len += (size_t)snprintf(s, cap, "{\"op\":\"recall\",\"users\":[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s\"u%d\"", i ? "," : "", i);
    snprintf(s + len, cap - len, "],\"k\":%d%s}", k, extra);
    return s;
}

static void start_with(e2e_daemon *d, const char *conf_text, const char *model, const char *dim)
{
    char conf[300], dir[] = "/tmp/rc-abuse-XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(conf, sizeof conf, "%s/c.json", dir);
    e2e_write_file(conf, conf_text);
    const char *extra[] = {"--config", conf, "--dim", dim, model ? "--model" : NULL, model, NULL};
    e2e_start(d, extra);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* Probe 3 with the default limits: the 2 KB request that kept every worker
 * busy for 17 s is refused before any work, naming the limit; so is exact
 * over every city at this size; within the limits the same shapes answer.
 * Unknown fields of every op are bad_request naming the field (issue 12). */
TEST(abuse_recall_cost_limits_and_unknown_fields)
{
    char dir[] = "/tmp/rc-abuse-XXXXXX", model[64];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(model, sizeof model, "%s/m.rcm", dir);
    write_w2v(model, 16, 50000);
    e2e_daemon d;
    start_with(&d, "{\"socket\":{\"max_outbuf\":262144}}", model, "16");
    produce_users(&d, 256);

    char *req = batch_request(256, 1000, ",\"exact\":true,\"city\":\"*\"");
    expect_error(d.sock, req, "limit_exceeded", "recall.max_k_users (25600)");
    free(req);
    req = batch_request(256, 100, ",\"exact\":true,\"city\":\"*\"");
    expect_error(d.sock, req, "limit_exceeded", "recall.max_exact_scan (4000000)");
    free(req);
    /* at max_k_users the work is allowed, but its 1.5 MB reply is over
     * socket.max_outbuf (256 KiB here): reply_too_large, not internal */
    req = batch_request(256, 100, ",\"city\":\"*\"");
    expect_error(d.sock, req, "reply_too_large", "socket.max_outbuf");
    free(req);
    req = batch_request(16, 100, ",\"city\":\"*\"");
    json_t *r = e2e_request(d.sock, "%s", req);
    if (!is_ok(r))
        RC__FAIL("batch within the limits: %s %s", err_code(r), err_msg(r));
    ASSERT_EQ(json_array_size(json_object_get(r, "results")), 16);
    json_decref(r);
    free(req);
    r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u7\",\"k\":10,\"exact\":true}");
    ASSERT(is_ok(r)); /* 50,000 items x 1 user is inside max_exact_scan */
    json_decref(r);

    expect_error(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"cty\":\"c0\"}", "bad_request",
                 "cty: unknown field");
    expect_error(d.sock, "{\"op\":\"recall\",\"users\":[\"u1\"],\"categoriez\":[\"k0\"]}",
                 "bad_request", "categoriez: unknown field");
    expect_error(d.sock, "{\"op\":\"similar\",\"item_id\":\"i1\",\"user_id\":\"u1\"}",
                 "bad_request", "user_id: unknown field (similar takes: op, item_id, k, mode)");
    expect_error(d.sock, "{\"op\":\"user\",\"user_id\":\"u1\",\"k\":3}", "bad_request",
                 "k: unknown field");
    expect_error(d.sock, "{\"op\":\"stats\",\"verbose\":true}", "bad_request",
                 "verbose: unknown field");
    expect_error(d.sock, "{\"op\":\"health\",\"deep\":1}", "bad_request", "deep: unknown field");
    expect_error(d.sock, "{\"op\":\"reload_model\",\"file\":\"x\"}", "bad_request",
                 "file: unknown field");
    expect_error(d.sock, "{\"op\":\"retrain_model\",\"now\":true}", "bad_request",
                 "now: unknown field");
    /* every documented field of recall is still accepted */
    r = e2e_request(d.sock,
                    "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":5,\"city\":\"c0\","
                    "\"categories\":[\"k0\"],\"mode\":\"avg\",\"half_life_ms\":0,"
                    "\"exact\":false,\"now_ms\":%lld}",
                    T0);
    ASSERT(is_ok(r));
    json_decref(r);
    json_t *st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_GE(e2e_int(st, "server.fast_requests"), 1);            /* health on the loop thread */
    ASSERT_EQ(e2e_int(st, "server.max_outbuf_total"), 268435456); /* the default */
    json_decref(st);
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s %s", d.dir, dir);
}

static int sock_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        ASSERT_GT(w, 0);
        p += w;
        n -= (size_t)w;
    }
}

/* Reads until '\n' (or EOF); returns the bytes read (malloc'd). */
static char *read_line(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ASSERT_EQ(poll(&p, 1, WAIT_MS), 1);
        if (len + 4096 > cap)
            b = realloc(b, cap *= 2);
        ssize_t r = recv(fd, b + len, cap - len - 1, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        if (b[len - 1] == '\n')
            break;
    }
    b[len] = '\0';
    return b;
}

/* Probe 3, "health answers while the workers are saturated": with the cost
 * limits raised as far as an operator may, 24 exact batch recalls keep the 4
 * workers busy for several rounds (the rest wait in the pool's queue);
 * health, sent after them, is answered while at least half of them are still
 * unanswered. Queued behind them on a worker (first in, first out), it could
 * only start once all but 3 had answered. */
TEST(abuse_health_answers_while_workers_saturated)
{
    enum { LONG = 24 };
    char dir[] = "/tmp/rc-abuse-XXXXXX", model[64];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(model, sizeof model, "%s/m.rcm", dir);
    write_w2v(model, 16, 100000);
    e2e_daemon d;
    ASSERT_EQ(setenv("UV_THREADPOOL_SIZE", "4", 1), 0); /* the daemon's pool, whatever the env */
    start_with(&d, "{\"recall\":{\"max_k_users\":1000000,\"max_exact_scan\":1000000000000}}", model,
               "16");
    produce_users(&d, 256);
    /* each long request scans 100,000 items for its users; under TSan
     * (RC_TEST_TIME_SCALE 4) a quarter of the users keeps them long enough
     * for the ordering (health answers on the loop thread at once) without
     * hours of instrumented scanning on a loaded machine */
    int scale = (int)(e2e_scaled_ms(1000) / 1000);
    char *req = batch_request(256 / (scale > 1 ? scale : 1), 100, ",\"exact\":true,\"city\":\"*\"");
    int fds[LONG];
    for (int i = 0; i < LONG; i++) {
        fds[i] = sock_connect(d.sock);
        send_all(fds[i], req, strlen(req));
        send_all(fds[i], "\n", 1);
    }
    free(req);
    long long t0 = e2e_now_ms();
    int hfd = sock_connect(d.sock);
    send_all(hfd, "{\"op\":\"health\"}\n", 16);
    char *h = read_line(hfd);
    long long health_ms = e2e_now_ms() - t0;
    ASSERT(strstr(h, "\"status\":\"ready\"") != NULL);
    free(h);
    close(hfd);
    /* the ordering: some long request has not answered yet */
    int pending = 0;
    for (int i = 0; i < LONG; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        pending += poll(&p, 1, 0) == 0;
    }
    fprintf(stderr, "health answered in %lld ms with %d of %d long requests unanswered\n",
            health_ms, pending, LONG);
    ASSERT_GE(pending, LONG / 2);
    for (int i = 0; i < LONG; i++) {
        char *r = read_line(fds[i]);
        if (!strstr(r, "\"ok\":true"))
            RC__FAIL("long request %d: %.200s", i, r);
        free(r);
        close(fds[i]);
    }
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s %s", d.dir, dir);
}

/* Probe 4: reload_model reads only tower.model_dir; a path elsewhere gets one
 * generic answer whether it exists or not (nothing about other files leaks);
 * inside the directory a FIFO, a device, a symbolic link, a group- or
 * world-writable file and a file over tower.max_model_bytes are refused
 * without hanging, later loads are not "busy", and SIGTERM still exits 0. */
TEST(abuse_reload_model_only_from_model_dir)
{
    char dir[] = "/tmp/rc-abuse-XXXXXX", models[64], conf[300], line[512];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(models, sizeof models, "%s/models", dir);
    ASSERT_EQ(mkdir(models, 0755), 0);
    snprintf(conf, sizeof conf, "{\"tower\":{\"model_dir\":\"%s\",\"max_model_bytes\":65536}}",
             models);
    ASSERT_EQ(e2e_sh(NULL,
                     "cd %s && mkfifo fifo && ln -s /etc/passwd link && "
                     "printf 'not a model at all' > junk && cp junk ww && chmod 666 ww && "
                     "truncate -s 3G big && ln -s /dev/zero dev && mkdir ../secret",
                     models),
              0);
    e2e_daemon d;
    start_with(&d, conf, NULL, "16");

    const char *outside[] = {"/etc/shadow", "/etc/passwd", "/nonexistent/x.tower",
                             "../x",        "..",          "/dev/zero"};
    for (size_t i = 0; i < sizeof outside / sizeof *outside; i++) {
        snprintf(line, sizeof line, "{\"op\":\"reload_model\",\"path\":\"%s\"}", outside[i]);
        json_t *r = e2e_request(d.sock, "%s", line);
        ASSERT_STREQ(err_code(r), "not_allowed");
        ASSERT_STREQ(err_msg(r), RC_MODELPATH_NOT_ALLOWED); /* the same for every one */
        json_decref(r);
    }
    snprintf(line, sizeof line, "{\"op\":\"reload_model\",\"path\":\"%s/../secret/m\"}", models);
    expect_error(d.sock, line, "not_allowed", RC_MODELPATH_NOT_ALLOWED);
    expect_error(d.sock, "{\"op\":\"reload_model\",\"path\":\"fifo\"}", "load_failed",
                 "not a regular file");
    expect_error(d.sock, "{\"op\":\"reload_model\",\"path\":\"link\"}", "load_failed",
                 "symbolic link");
    expect_error(d.sock, "{\"op\":\"reload_model\",\"path\":\"dev\"}", "load_failed",
                 "symbolic link");
    expect_error(d.sock, "{\"op\":\"reload_model\",\"path\":\"ww\"}", "load_failed",
                 "group- or world-writable");
    expect_error(d.sock, "{\"op\":\"reload_model\",\"path\":\"big\"}", "load_failed",
                 "over tower.max_model_bytes (65536)");
    snprintf(line, sizeof line, "{\"op\":\"reload_model\",\"path\":\"%s/junk\"}", models);
    expect_error(d.sock, line, "load_failed", "bad magic"); /* read: no busy left behind */
    expect_error(d.sock, "{\"op\":\"reload_model\"}", "load_failed", "no model file");
    ASSERT_EQ(chmod(models, 0777), 0);
    expect_error(d.sock, "{\"op\":\"reload_model\",\"path\":\"junk\"}", "load_failed",
                 "group- or world-writable: refused");
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s %s", d.dir, dir);
}

/* Probe 6: without socket.path the socket is made in a private runtime
 * directory ($RUNTIME_DIRECTORY here), created 0750; no metrics listener
 * unless asked for; a path squatted by another user's file is a clear error. */
TEST(abuse_default_socket_private_dir_and_squat)
{
    char dir[] = "/tmp/rc-abuse-XXXXXX", rt[64], sq[96];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(rt, sizeof rt, "%s/rt", dir);
    ASSERT_EQ(setenv("RUNTIME_DIRECTORY", rt, 1), 0);
    e2e_daemon d;
    memset(&d, 0, sizeof d);
    snprintf(d.dir, sizeof d.dir, "%s", dir);
    snprintf(d.sock, sizeof d.sock, "%s/recalld.sock", rt);
    snprintf(d.log, sizeof d.log, "%s/recalld.log", dir);
    const char *extra[] = {"--socket", "", NULL};
    e2e_opts o = {.reuse = 1, .extra = extra};
    e2e_start_opts(&d, &o);
    struct stat st;
    ASSERT_EQ(stat(rt, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0750);
    ASSERT_EQ(e2e_stop(&d), 0);
    unsetenv("RUNTIME_DIRECTORY");
    rc_config c; /* the metrics listener is off unless asked for */
    rc_config_defaults(&c);
    ASSERT_EQ(c.metrics_port, 0);
    ASSERT_STREQ(c.socket_path, "");

    /* squatted: a regular file of another user where the socket should be */
    snprintf(sq, sizeof sq, "%s/sq.sock", dir);
    e2e_write_file(sq, "");
    int other = geteuid() == 0 && chown(sq, 65534, 65534) == 0;
    char *out = NULL;
    int rc = e2e_sh(&out, RC_BIN("recalld") " --embedded-kafka --socket %s 2>&1", sq);
    ASSERT_EQ(rc, 1);
    ASSERT(strstr(out, "exists and is not a socket") != NULL);
    if (other)
        ASSERT(strstr(out, "owned by uid 65534") != NULL);
    free(out);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* The path rules themselves (modelpath.h), without a daemon: a file of the
 * directory by name or by a path through it resolves to the canonical path;
 * the configured model is allowed; nothing else. */
TEST(abuse_modelpath_rules)
{
    char dir[] = "/tmp/rc-abuse-XXXXXX", models[64], good[96], out[512], err[512], alias[96];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(models, sizeof models, "%s/models", dir);
    ASSERT_EQ(mkdir(models, 0755), 0);
    snprintf(good, sizeof good, "%s/good.tower", models);
    e2e_write_file(good, "x");
    ASSERT_EQ(chmod(good, 0644), 0);
    snprintf(alias, sizeof alias, "%s/alias", dir);
    ASSERT_EQ(symlink(models, alias), 0);
    rc_modelpath_opts o = {.dir = models, .max_bytes = 4096};
    ASSERT_EQ(rc_modelpath_check(&o, "good.tower", out, sizeof out, err, sizeof err), 0);
    ASSERT_STREQ(out, good);
    ASSERT_EQ(rc_modelpath_check(&o, good, out, sizeof out, err, sizeof err), 0);
    snprintf(alias + strlen(alias), sizeof alias - strlen(alias), "/good.tower");
    ASSERT_EQ(rc_modelpath_check(&o, alias, out, sizeof out, err, sizeof err), 0);
    ASSERT_STREQ(out, good); /* the directory is resolved, the file is not followed */
    ASSERT_EQ(rc_modelpath_check(&o, "/etc/passwd", out, sizeof out, err, sizeof err), RC_EINVAL);
    ASSERT_EQ(rc_modelpath_check(&o, "none", out, sizeof out, err, sizeof err), RC_EIO);
    ASSERT_EQ(rc_modelpath_check(&o, NULL, out, sizeof out, err, sizeof err), RC_ENOENT);
    o.configured = "/etc/passwd"; /* the operator's choice: checked, not confined */
    ASSERT_EQ(rc_modelpath_check(&o, "/etc/passwd", out, sizeof out, err, sizeof err), 0);
    o.dir = NULL;
    ASSERT_EQ(rc_modelpath_check(&o, good, out, sizeof out, err, sizeof err), RC_EINVAL);
    ASSERT_STREQ(err, RC_MODELPATH_NOT_ALLOWED);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* Probe 5: 1,100 connections that send nothing (more than socket.max_clients,
 * 1024) lock out neither the liveness probe nor new clients: health answers
 * on a new connection at once (a probe slot, the oldest squatted one giving
 * way), and a recall gets in as soon as an idle connection can be closed. */
TEST(abuse_1100_idle_connections_do_not_lock_out)
{
    enum { IDLE = 1100 };
    struct rlimit rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max; /* the daemon inherits it */
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < IDLE + 200)
        RC__FAIL("RLIMIT_NOFILE hard limit %lu is too low", (unsigned long)rl.rlim_cur);
    e2e_daemon d;
    e2e_start(&d, NULL);
    static int fds[IDLE];
    for (int i = 0; i < IDLE; i++) {
        fds[i] = sock_connect(d.sock);
    }
    /* the liveness probe, right away, twice */
    for (int i = 0; i < 2; i++) {
        char *h = e2e_raw(d.sock, "{\"op\":\"health\"}\n", 16, WAIT_MS);
        ASSERT(h != NULL);
        ASSERT(strstr(h, "\"status\":\"ready\"") != NULL);
        free(h);
    }
    /* the k8s liveness probe, as deploy/k8s runs it */
    ASSERT_EQ(
        e2e_sh(NULL, RC_BIN("recallctl") " --socket %s --timeout 60000 --alive health", d.sock), 0);
    /* a client with real work: admitted once an idle connection is a second old */
    const char req[] = "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":3}\n";
    long long until = e2e_now_ms() + WAIT_MS;
    for (;;) {
        char *r = e2e_raw(d.sock, req, sizeof req - 1, WAIT_MS);
        int ok = r && strstr(r, "\"ok\":true");
        if (!ok && (!r || !strstr(r, "too_many_clients")))
            RC__FAIL("recall: %s", r ? r : "no reply");
        free(r);
        if (ok)
            break;
        if (e2e_now_ms() > until)
            RC__FAIL("no idle connection was ever closed for a new client");
        usleep(50000);
    }
    json_t *st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_GE(e2e_int(st, "server.evicted_idle"), 1);
    ASSERT_GE(e2e_int(st, "server.probes"), 1);
    ASSERT_LE(e2e_int(st, "server.clients"), 1024);
    json_decref(st);
    for (int i = 0; i < IDLE; i++)
        close(fds[i]);
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s", d.dir);
}
