/* Issue 11, the data side: no event or producer can freeze or exhaust recalld.
 * Each probe of the issue, through the real daemon (embedded Kafka, events
 * produced with kcat as the probes did):
 *  1. more city x category pairs than index.max_partitions: the index keeps
 *     indexing (overflow partition), health warns;
 *  2. an event with ts = INT64_MAX: refused as future_ts and dead-lettered;
 *     the user's later real clicks still train, TTL still expires them;
 *  6. model.max_items, sessions.max_users, kafka.dlq_file_max_mb reached:
 *     counted, warned in health, never a freeze; the dead-letter file is
 *     rotated and what a rotation deletes is counted.
 * Waits are for conditions, with a generous timeout. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/consumer.h"
#include "test.h"

#define WAIT_MS 120000

static void tmp_dir(char *out, size_t n)
{
    snprintf(out, n, "/tmp/rc-bounds-XXXXXX");
    ASSERT(mkdtemp(out) != NULL);
}

/* A private directory with the paths the daemon tests use in it. */
typedef struct paths {
    char dir[64], conf[128], lines[128], dlq[128], dlq1[136];
} paths;

static void paths_init(paths *p)
{
    tmp_dir(p->dir, sizeof p->dir);
    snprintf(p->conf, sizeof p->conf, "%s/r.json", p->dir);
    snprintf(p->lines, sizeof p->lines, "%s/lines.tsv", p->dir);
    snprintf(p->dlq, sizeof p->dlq, "%s/dlq.jsonl", p->dir);
    snprintf(p->dlq1, sizeof p->dlq1, "%s.1", p->dlq);
}

static void rm_rf(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ASSERT_EQ(system(cmd), 0);
}

/* Stats once every event of the stream is accounted for (consumed and
 * applied + invalid + ignored + rejected_capacity >= n) and the index has
 * nothing pending. */
static json_t *wait_quiet(const char *sock, long long n)
{
    long long t0 = e2e_now_ms();
    for (;;) {
        json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
        long long sum = e2e_int(st, "events.applied") + e2e_int(st, "events.invalid") +
                        e2e_int(st, "events.ignored") + e2e_int(st, "events.rejected_capacity");
        /* dead letters are written on the loop after their batch is done:
         * a stats reply can come between the two */
        long long dl = e2e_int(st, "kafka.dead_letters") + e2e_int(st, "kafka.dead_letter_errors");
        if (e2e_int(st, "events.consumed") >= n && sum >= n && e2e_int(st, "index.pending") == 0 &&
            dl >= e2e_int(st, "events.invalid"))
            return st;
        if (e2e_now_ms() - t0 > e2e_scaled_ms(WAIT_MS))
            RC__FAIL("not quiet: consumed %lld, accounted %lld of %lld, pending %lld, "
                     "dead letters %lld of %lld",
                     e2e_int(st, "events.consumed"), sum, n, e2e_int(st, "index.pending"), dl,
                     e2e_int(st, "events.invalid"));
        json_decref(st);
        usleep(50000);
    }
}

static long long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    long long n = 0;
    int ch;
    if (!f)
        return 0;
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

static long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

/* health's warnings joined into one string (malloc'd); the reply must be ready. */
static char *health_warnings(const char *sock)
{
    json_t *h = e2e_request(sock, "{\"op\":\"health\"}");
    ASSERT(json_is_true(json_object_get(h, "ok")));
    json_t *w = json_object_get(h, "warnings");
    char *s = w ? json_dumps(w, 0) : strdup("[]");
    json_decref(h);
    return s;
}

/* Probes 1 and 6: 60 distinct cities against index.max_partitions 8, 80 new
 * items against model.max_items 64, 20 users against sessions.max_users 4,
 * 400 fat malformed events against a 1 MiB dead-letter file. */
TEST(bounds_daemon_partitions_items_users_dlq)
{
    paths P;
    paths_init(&P);
    const char *dir = P.dir, *conf = P.conf, *lines = P.lines, *dlq = P.dlq, *dlq1 = P.dlq1;
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"model\":{\"max_items\":64,\"dim\":16},\"sessions\":{\"max_users\":4},"
             "\"index\":{\"max_partitions\":8},"
             "\"kafka\":{\"dlq_file\":\"%s\",\"dlq_file_max_mb\":1}}",
             dlq);
    e2e_write_file(conf, cfg);
    FILE *f = fopen(lines, "w");
    ASSERT(f != NULL);
    const long long T = 1700000000000LL;
    long long n = 0, bad = 0;
    for (int i = 0; i < 80; i++, n++) /* item i in city c<i % 60>, user u<i % 20> */
        fprintf(f,
                "u%d\t{\"user_id\":\"u%d\",\"item_id\":\"i%d\",\"city_id\":\"c%d\","
                "\"cate_id\":\"k0\",\"ts\":%lld}\n",
                i % 20, i % 20, i, i % 60, T + i * 1000);
    static char pad[6001];
    memset(pad, 'x', sizeof pad - 1);
    for (int i = 0; i < 400; i++, n++, bad++) /* wrong_type ts, ~6 KB each */
        fprintf(f,
                "b%d\t{\"user_id\":\"b\",\"item_id\":\"i1\",\"city_id\":\"c0\","
                "\"cate_id\":\"k0\",\"ts\":\"%s\"}\n",
                i % 7, pad);
    ASSERT_EQ(fclose(f), 0);

    e2e_daemon d;
    const char *extra[] = {"--config", conf, NULL};
    e2e_start(&d, extra);
    e2e_kcat(&d, lines);
    json_t *st = wait_quiet(d.sock, n);
    /* 1: 64 items in 60 cities: 8 partitions of their own, the rest in the
     * overflow partition; every item indexed. */
    ASSERT_EQ(e2e_int(st, "items"), 64);
    ASSERT_EQ(e2e_int(st, "index.size"), 64);
    ASSERT_EQ(e2e_int(st, "index.partitions"), 9);
    /* which 64 items and 8 pairs come first depends on the interleaving of
     * Kafka partitions; 60 cities hold one or two of them each */
    ASSERT_GE(e2e_int(st, "index.overflow_rows"), 64 - 16);
    ASSERT_LE(e2e_int(st, "index.overflow_rows"), 64 - 8);
    /* 6: items and users bounded, counted */
    ASSERT_EQ(e2e_int(st, "events.rejected_capacity"), 80 - 64);
    ASSERT_EQ(e2e_int(st, "users.active"), 4);
    ASSERT_GT(e2e_int(st, "users.evicted_lru"), 0); /* how many: order-dependent */
    /* 6: the dead-letter file stays under its cap; what a rotation deleted is
     * counted, so written = in the files + dropped */
    ASSERT_EQ(e2e_int(st, "events.invalid"), bad);
    long long dl = e2e_int(st, "kafka.dead_letters"),
              dropped = e2e_int(st, "kafka.dead_letters_dropped");
    ASSERT_EQ(dl, bad);
    ASSERT_EQ(e2e_int(st, "kafka.dead_letter_errors"), 0);
    ASSERT_GE(e2e_int(st, "kafka.dlq_rotations"), 2);
    ASSERT_GT(dropped, 0);
    ASSERT_LE(file_size(dlq), 1 << 20);
    ASSERT_LE(file_size(dlq1), 1 << 20);
    ASSERT_EQ(count_lines(dlq) + count_lines(dlq1) + dropped, bad);
    json_decref(st);
    /* every item the table took is served, whichever partition holds it */
    int served = 0;
    for (int i = 0; i < 80; i++) {
        json_t *r = e2e_request(d.sock, "{\"op\":\"similar\",\"item_id\":\"i%d\",\"k\":3}", i);
        served += json_is_true(json_object_get(r, "ok"));
        json_decref(r);
    }
    ASSERT_EQ(served, 64);
    /* visible: still ready, with one warning per bound reached */
    char *w = health_warnings(d.sock);
    if (!strstr(w, "index.max_partitions (8) reached") || !strstr(w, "model.max_items (64)") ||
        !strstr(w, "sessions.max_users (4)") || !strstr(w, "kafka.dlq_file_max_mb (1)"))
        RC__FAIL("health warnings: %s", w);
    free(w);
    char *log = e2e_read_file(d.log);
    if (!strstr(log, "partition limit reached") || !strstr(log, "dead-letter file rotated") ||
        !strstr(log, "sessions.max_users reached"))
        RC__FAIL("log lacks a WARN: %.2000s", log);
    free(log);
    ASSERT_EQ(e2e_stop(&d), 0);
    rm_rf(dir);
}

/* Probe 2: one click with ts = INT64_MAX. Refused (future_ts, counted,
 * dead-lettered with its reason); the user's later real clicks are neither
 * late nor lost and train; the user still expires by TTL once the stream's
 * clock moves on. One key: one partition, in order. */
TEST(bounds_daemon_future_ts_refused_user_keeps_training)
{
    paths P;
    paths_init(&P);
    const char *dir = P.dir, *conf = P.conf, *lines = P.lines, *dlq = P.dlq;
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"model\":{\"dim\":16},\"sessions\":{\"ttl_ms\":120000},"
             "\"events\":{\"max_future_ms\":300000,\"max_past_ms\":86400000},"
             "\"kafka\":{\"dlq_file\":\"%s\"}}",
             dlq);
    e2e_write_file(conf, cfg);
    long long now = rc_wall_ms();
    FILE *f = fopen(lines, "w");
    ASSERT(f != NULL);
#define EV(item, ts)                                                                               \
    fprintf(f,                                                                                     \
            "u1\t{\"user_id\":\"u1\",\"item_id\":\"%s\",\"city_id\":\"c0\",\"cate_id\":"           \
            "\"k0\",\"ts\":%lld}\n",                                                               \
            item, (long long)(ts))
    EV("i1", now - 60000);
    EV("i2", now - 50000);
    fprintf(f, "u1\t{\"user_id\":\"u1\",\"item_id\":\"i3\",\"city_id\":\"c0\",\"cate_id\":"
               "\"k0\",\"ts\":9223372036854775807}\n");
    EV("i4", now - 40000);
    EV("i5", now - 30000);
    EV("i6", now - 2 * 86400000LL); /* two days behind the watermark: past_ts */
    ASSERT_EQ(fclose(f), 0);

    e2e_daemon d;
    const char *extra[] = {"--config", conf, NULL};
    e2e_start(&d, extra);
    e2e_kcat(&d, lines);
    json_t *st = wait_quiet(d.sock, 6);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.future_ts"), 1);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.past_ts"), 1);
    ASSERT_EQ(e2e_int(st, "events.applied"), 4);
    ASSERT_EQ(e2e_int(st, "events.late"), 0);
    ASSERT_LE(e2e_int(st, "events.max_ts"), now);
    ASSERT_GT(e2e_int(st, "training.pairs"), 0);
    json_decref(st);
    /* the user holds the four real clicks, newest last */
    json_t *u = e2e_request(d.sock, "{\"op\":\"user\",\"user_id\":\"u1\"}");
    json_t *cl = json_object_get(u, "clicks");
    ASSERT_EQ(json_array_size(cl), 4);
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(cl, 3), "item_id")), "i5");
    ASSERT_EQ(json_integer_value(json_object_get(json_array_get(cl, 3), "ts")), now - 30000);
    json_decref(u);
    /* dead-lettered with the new reasons */
    long long t0 = e2e_now_ms();
    char *dl = NULL;
    for (;;) {
        dl = e2e_read_file(dlq);
        if (strstr(dl, "\"reason\":\"future_ts\"") && strstr(dl, "\"reason\":\"past_ts\""))
            break;
        if (e2e_now_ms() - t0 > e2e_scaled_ms(WAIT_MS))
            RC__FAIL("dead letters: %s", dl);
        free(dl);
        usleep(50000);
    }
    ASSERT(strstr(dl, "events.max_future_ms") != NULL);
    free(dl);
    /* TTL still works: another user's click 4 minutes ahead (inside the
     * window) moves the stream's clock; u1, idle > 2 min, is dropped. */
    char more[160];
    snprintf(more, sizeof more, "%s/more.tsv", dir);
    f = fopen(more, "w");
    ASSERT(f != NULL);
    fprintf(f,
            "u2\t{\"user_id\":\"u2\",\"item_id\":\"i7\",\"city_id\":\"c0\",\"cate_id\":"
            "\"k0\",\"ts\":%lld}\n",
            now + 240000);
    ASSERT_EQ(fclose(f), 0);
    e2e_kcat(&d, more);
    t0 = e2e_now_ms();
    for (;;) {
        st = e2e_request(d.sock, "{\"op\":\"stats\"}");
        long long exp = e2e_int(st, "users.expired_ttl");
        json_decref(st);
        if (exp >= 1)
            break;
        if (e2e_now_ms() - t0 > e2e_scaled_ms(WAIT_MS))
            RC__FAIL("u1 never expired");
        usleep(100000);
    }
    u = e2e_request(d.sock, "{\"op\":\"user\",\"user_id\":\"u1\"}");
    ASSERT(!json_is_true(json_object_get(u, "ok")));
    json_decref(u);
#undef EV
    ASSERT_EQ(e2e_stop(&d), 0);
    rm_rf(dir);
}

static int no_batch(void *ud, const rc_kmsg *m, size_t n)
{
    (void)ud;
    (void)m;
    (void)n;
    return 0;
}

/* kafka.dlq_file_max_mb at the consumer: a dead-letter file and FILE.1 left by
 * an earlier run are counted at start, so the first rotation counts the
 * earlier FILE.1's lines as dropped; written = in the files + dropped, each
 * file under the cap. */
TEST(bounds_dlq_file_rotation_counts_earlier_files)
{
    char dir[64], path[128], old[136], line[600];
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/dlq.jsonl", dir);
    snprintf(old, sizeof old, "%s.1", path);
    e2e_write_file(path, "{}\n{}\n{}\n");
    e2e_write_file(old, "{}\n{}\n{}\n{}\n{}\n");
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    rc_consumer_opts o = {
        .embedded = 1, .on_batch = no_batch, .dlq_file = path, .dlq_file_max_bytes = 8192};
    rc_consumer *c = NULL;
    char err[256] = "";
    if (rc_consumer_start(&loop, &o, &c, err, sizeof err) != 0)
        RC__FAIL("start: %s", err);
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\0';
    const int n = 100; /* ~700 bytes a line: ~11 a file, several rotations */
    for (int i = 0; i < n; i++) {
        rc_kmsg m = {.payload = line, .len = strlen(line), .partition = 0, .offset = i};
        ASSERT_EQ(rc_consumer_dead_letter(c, &m, "bad_json", "test"), 0);
    }
    rc_consumer_stats st;
    rc_consumer_stats_get(c, &st);
    ASSERT_EQ(st.dead_letters, n);
    ASSERT_EQ(st.dead_letter_errors, 0);
    ASSERT_GE(st.dlq_rotations, 5);
    ASSERT_LE(file_size(path), 8192);
    ASSERT_LE(file_size(old), 8192);
    ASSERT_EQ(count_lines(path) + count_lines(old) + (long long)st.dead_letters_dropped, n + 3 + 5);
    rc_consumer_close(c, NULL, NULL);
    rc_consumer_destroy(c);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    rm_rf(dir);
}
