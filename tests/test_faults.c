/* Kafka faults and lifecycle, end to end: the real recalld against a
 * recalld-broker in its own process (faults injected through its stdin),
 * proved by counting. Every test checks that events.applied (summed over the
 * group's members) equals the valid messages of the topic's log exactly (the
 * generator's lines, read back from the topic: e2e_topic_truth): no loss, no
 * event applied twice. */
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/checkpoint.h"
#include "recalld/common.h"
#include "test.h"

/* Fast group membership for tests: a member killed or leaving is noticed in
 * seconds. (The mock delays a new group's first join by 3 s; a session
 * timeout below that never completes the join.) */
#define KAFKA_FAST                                                                                 \
    "\"kafka\":{\"config\":{\"session.timeout.ms\":\"4000\","                                      \
    "\"heartbeat.interval.ms\":\"500\"}}"

static void ms_sleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static void mkdir_tmp(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/rc-faults-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
}

static void cleanup(const char *dir) { ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0); }

static void cmd_ok(e2e_broker *b, const char *cmd)
{
    char *r = e2e_broker_cmd(b, "%s", cmd);
    if (strcmp(r, "ok") != 0)
        RC__FAIL("broker command \"%s\": %s", cmd, r);
    free(r);
}

/* Stats integer at path, fresh. */
static long long stat_now(const e2e_daemon *d, const char *path)
{
    json_t *st = e2e_request(d->sock, "{\"op\":\"stats\"}");
    long long v = e2e_int(st, path);
    json_decref(st);
    return v;
}

/* Waits until the stats integer at path exceeds `than` (the daemon's proof
 * that something happened); fails after 120 s. Returns the value. */
static long long wait_stat_above(const e2e_daemon *d, const char *path, long long than)
{
    long long v, deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    while ((v = stat_now(d, path)) <= than) {
        if (e2e_now_ms() > deadline)
            RC__FAIL("%s still %lld after %lld s, want > %lld (log %s)", path, v,
                     e2e_scaled_ms(120000) / 1000, than, d->log);
        ms_sleep(50);
    }
    return v;
}

/* Lines of the daemon's log matching the extended regex re. */
static long log_count(const e2e_daemon *d, const char *re)
{
    char *out = NULL;
    e2e_sh(&out, "grep -E -c -- '%s' %s", re, d->log);
    long n = out ? atol(out) : 0;
    free(out);
    return n;
}

/* Waits until more than `than` lines of the log match re; fails after 120 s. */
static long wait_log_above(const e2e_daemon *d, const char *re, long than)
{
    long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    long n;
    while ((n = log_count(d, re)) <= than) {
        if (e2e_now_ms() > deadline)
            RC__FAIL("no new log line /%s/ in %lld s (log %s)", re, e2e_scaled_ms(120000) / 1000,
                     d->log);
        ms_sleep(50);
    }
    return n;
}

/* Starts recalld on brokers with data_dir DIR/<name> and config DIR/<name>.json. */
static void start_member(e2e_daemon *d, const char *dir, const char *name, const char *brokers,
                         const char *json, char *data, size_t datalen)
{
    char conf[256];
    snprintf(data, datalen, "%s/%s", dir, name);
    snprintf(conf, sizeof conf, "%s/%s.json", dir, name);
    e2e_write_file(conf, json);
    const char *extra[] = {"--config", conf, "--data-dir", data, NULL}; /* copied by exec */
    e2e_opts o = {.brokers = brokers, .extra = extra};
    e2e_start_opts(d, &o);
}

/* The end of a single-member fault test: once the generator is done, the
 * truth is read from the topic itself (the generator's lines, each as often
 * as the log holds it: a producer retry across a fault may write a batch
 * twice, see e2e_topic_truth), and every message of the log was applied
 * exactly once: the counters equal the log's, each repeated message was
 * recognised as a duplicate click and not trained, and per item the final
 * checkpoint holds exactly the distinct clicks. Then everything is stopped
 * and removed. */
static void finish_exactly_once(e2e_broker *b, e2e_daemon *d, pid_t gen, uint64_t seed, uint64_t n,
                                double invalid, const char *data, const char *dir)
{
    e2e_truth tr;
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    e2e_topic_truth(b->bootstrap, "clicks", 4, seed, n, invalid, &tr);
    e2e_gen_topic_checked(&tr, n);
    if (tr.repeats)
        fprintf(stderr, "the log holds %llu valid messages twice (producer retries)\n",
                (unsigned long long)tr.repeats);
    json_t *st = e2e_wait_done(d->sock, tr.valid + tr.invalid, 120000);
    ASSERT_EQ(e2e_int(st, "events.applied"), tr.valid);
    ASSERT_EQ(e2e_int(st, "events.invalid"), tr.invalid);
    ASSERT_EQ(e2e_int(st, "events.duplicates"), tr.repeats);
    json_decref(st);
    ASSERT_EQ(e2e_stop(d), 0);
    uint32_t *sum = calloc(E2E_GEN_ITEMS, sizeof *sum);
    ASSERT_EQ(e2e_checkpoint_add_counts(data, sum), tr.valid);
    e2e_assert_counts(&tr, sum);
    free(sum);
    free(tr.count);
    e2e_broker_stop(b);
    cleanup(d->dir);
    cleanup(dir);
}

/* ---- consumer-group rebalance ---- */

/* Messages read by the two members: the sum of `next` over the partitions they
 * hold (kafka.partitions of stats), or -1 while a partition is held by both,
 * by none, or has no position yet. */
static long long read_to(json_t *sa, json_t *sb)
{
    int64_t next[4] = {-1, -1, -1, -1};
    int held[4] = {0};
    json_t *sts[2] = {sa, sb};
    for (int m = 0; m < 2; m++) {
        json_t *parts = json_object_get(json_object_get(sts[m], "kafka"), "partitions");
        size_t i;
        json_t *p;
        json_array_foreach(parts, i, p) {
            json_int_t id = json_integer_value(json_object_get(p, "partition"));
            if (id < 0 || id > 3)
                return -1;
            held[id]++;
            next[id] = json_integer_value(json_object_get(p, "next"));
        }
    }
    long long sum = 0;
    for (int p = 0; p < 4; p++) {
        if (held[p] != 1 || next[p] < 0)
            return -1;
        sum += next[p];
    }
    return sum;
}

/* Every event handed to the engine is accounted for (the counting invariant). */
static int idle_engine(json_t *st)
{
    return e2e_int(st, "events.consumed") ==
           e2e_int(st, "events.applied") + e2e_int(st, "events.invalid") +
               e2e_int(st, "events.ignored") + e2e_int(st, "events.rejected_capacity");
}

/* A second member joins the group in the middle of a paced stream: member A's
 * revoke waits until everything A applied is in a durable checkpoint and
 * committed (deferred revoke), B starts exactly there. Exactly once across
 * the two models: A.applied + B.applied == valid and, per item, A's clicks +
 * B's clicks == the generator's - whenever every hand-over commit succeeded
 * and no member lost its assignment by timeout. When one did (a loaded
 * machine can starve a member past its session), docs/DELIVERY.md promises
 * duplicates bounded by the events since the last commit, never a loss: the
 * test then asserts that bound and no loss. */
TEST(faults_rebalance_mid_stream_no_loss)
{
    const uint64_t N = 10000;
    const double rate = 1000;    /* events/s of the generator */
    const int interval_ms = 500; /* checkpoint.interval_ms */
    char dir[64], da[256], db[256];
    e2e_broker b;
    e2e_daemon a, c;
    e2e_truth tr;
    uint32_t *sum = calloc(E2E_GEN_ITEMS, sizeof *sum);
    mkdir_tmp(dir, sizeof dir);
    e2e_broker_start(&b, 4, NULL);
    const char *json = "{\"checkpoint\":{\"interval_ms\":500}," KAFKA_FAST "}";
    start_member(&a, dir, "a", b.bootstrap, json, da, sizeof da);
    pid_t gen = e2e_gen_start(b.bootstrap, 21, N, 0.05, rate);
    /* B joins once A has applied part of the stream (a condition, not a delay). */
    json_decref(e2e_wait_consumed(a.sock, 1000, 300000));
    start_member(&c, dir, "b", b.bootstrap, json, db, sizeof db); /* healthy = assigned */
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    /* the truth: the log's messages (a producer retry may repeat one) */
    e2e_topic_truth(b.bootstrap, "clicks", 4, 21, N, 0.05, &tr);
    e2e_gen_topic_checked(&tr, N);
    const long long logged = (long long)(tr.valid + tr.invalid);
    long long applied = 0, invalid = 0, unclean = 0, read = 0;
    json_t *sa = NULL, *sb = NULL;
    /* Done when the two members' positions cover the whole log (`logged`
     * messages over 4 partitions, each owned by one member) and each engine has
     * accounted for every event handed to it. Counting applied events is not
     * enough: after a failed hand-over the duplicates reach N before the
     * tail of the stream is read. */
    for (long long deadline = e2e_now_ms() + e2e_scaled_ms(300000);; ms_sleep(200)) {
        json_decref(sa);
        json_decref(sb);
        sa = e2e_request(a.sock, "{\"op\":\"stats\"}");
        sb = e2e_request(c.sock, "{\"op\":\"stats\"}");
        applied = e2e_int(sa, "events.applied") + e2e_int(sb, "events.applied");
        invalid = e2e_int(sa, "events.invalid") + e2e_int(sb, "events.invalid");
        read = read_to(sa, sb);
        if (read == logged && idle_engine(sa) && idle_engine(sb))
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL("positions cover %lld of %lld messages (applied %lld + invalid %lld) "
                     "after %lld s",
                     read, logged, applied, invalid, e2e_scaled_ms(300000) / 1000);
    }
    unclean = e2e_int(sa, "kafka.commit_errors") + e2e_int(sb, "kafka.commit_errors") +
              e2e_int(sa, "kafka.lost_assignments") + e2e_int(sb, "kafka.lost_assignments");
    fprintf(stderr,
            "A applied %lld (rebalances %lld, commits %lld), B applied %lld; "
            "commit errors + lost assignments %lld\n",
            e2e_int(sa, "events.applied"), e2e_int(sa, "kafka.rebalances"),
            e2e_int(sa, "kafka.commits"), e2e_int(sb, "events.applied"), unclean);
    ASSERT_GE(e2e_int(sa, "kafka.rebalances"), 3); /* assign, revoke, assign */
    ASSERT_GT(e2e_int(sb, "events.applied"), 0);
    ASSERT_EQ(e2e_int(sa, "kafka.assigned") + e2e_int(sb, "kafka.assigned"), 4);
    ASSERT_EQ(e2e_int(sa, "events.lost") + e2e_int(sb, "events.lost"), 0);
    json_decref(sa);
    json_decref(sb);
    /* The documented bound on a failed hand-over: the events of the stream
     * since the last commit - a checkpoint interval, the commit interval (1 s)
     * and the checkpoint's write. */
    long long bound = unclean * (long long)(rate * (interval_ms + 1000 + 2000) / 1000);
    long long twice = applied + invalid - logged;
    fprintf(stderr, "applied twice: %lld (bound %lld)\n", twice, bound);
    if (unclean == 0) {
        ASSERT_EQ(applied, (long long)tr.valid);
        ASSERT_EQ(invalid, (long long)tr.invalid);
    } else {
        ASSERT_GE(applied, (long long)tr.valid);
        ASSERT_GE(invalid, (long long)tr.invalid);
        ASSERT_LE(twice, bound);
    }
    ASSERT_EQ(e2e_stop(&a), 0);
    ASSERT_EQ(e2e_stop(&c), 0);
    uint64_t ca = e2e_checkpoint_add_counts(da, sum), cb = e2e_checkpoint_add_counts(db, sum);
    ASSERT_EQ(ca + cb, (uint64_t)applied); /* the final checkpoints hold it all */
    for (uint32_t i = 0; i < E2E_GEN_ITEMS; i++) {
        if (sum[i] < tr.count[i])
            RC__FAIL("item i%u: %u clicks in the models, %u produced (lost)", i, sum[i],
                     tr.count[i]);
        if (unclean == 0 && sum[i] != tr.count[i])
            RC__FAIL("item i%u: %u clicks in the models, %u produced (twice)", i, sum[i],
                     tr.count[i]);
    }
    e2e_broker_stop(&b);
    cleanup(a.dir);
    cleanup(c.dir);
    cleanup(dir);
    free(sum);
    free(tr.count);
}

/* ---- broker down and back ---- */

/* All brokers refuse connections for 3 s in the middle of a paced stream:
 * recalld keeps serving (stats, health), fetches resume when the brokers come
 * back, and every event is applied exactly once. */
TEST(faults_broker_down_and_up_no_loss)
{
    const uint64_t N = 8000;
    char dir[64], data[256];
    e2e_broker b;
    e2e_daemon d;
    mkdir_tmp(dir, sizeof dir);
    e2e_broker_start(&b, 4, NULL);
    start_member(&d, dir, "d", b.bootstrap, "{\"checkpoint\":{\"interval_ms\":300}," KAFKA_FAST "}",
                 data, sizeof data);
    pid_t gen = e2e_gen_start(b.bootstrap, 31, N, 0.02, 1000);
    wait_stat_above(&d, "events.applied", 0); /* the stream flows */
    /* librdkafka reports each refused reconnect (the log's kafka lines) */
    const char *refused = "Connection refused.*client=recalld#consumer";
    long before = log_count(&d, refused);
    cmd_ok(&b, "down all");
    /* the fault reached the consumer: its reconnects are refused; it serves
     * meanwhile */
    wait_log_above(&d, refused, before);
    json_t *h = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT(json_is_true(json_object_get(h, "ok")));
    long long applied_down = e2e_int(h, "events.applied");
    json_decref(h);
    cmd_ok(&b, "up all");
    wait_stat_above(&d, "events.applied", applied_down); /* resumed */
    finish_exactly_once(&b, &d, gen, 31, N, 0.02, data, dir);
}

/* The fault tests' truth reader counts what the log holds: the generator's
 * lines once each, a line written twice (as a producer retry writes it)
 * as a repeat, without a second click for its item, and the generated lines
 * the log lacks as absent. */
TEST(faults_topic_truth_counts_a_repeated_line)
{
    const uint64_t N = 600;
    e2e_broker b;
    e2e_truth gen_tr, t1, t2;
    e2e_gen_truth(33, N, 0.02, &gen_tr);
    e2e_broker_start(&b, 4, NULL);
    ASSERT_EQ(e2e_gen_wait(e2e_gen_start(b.bootstrap, 33, N, 0.02, 0)), 0);
    e2e_topic_truth(b.bootstrap, "clicks", 4, 33, N, 0.02, &t1);
    ASSERT_EQ(t1.valid, gen_tr.valid);
    ASSERT_EQ(t1.invalid, gen_tr.invalid);
    ASSERT_EQ(t1.repeats, 0);
    ASSERT_EQ(t1.absent, 0);
    e2e_assert_counts(&t1, gen_tr.count);

    /* the first valid line again, as a retried batch would write it */
    rc_gen *g = e2e_gen_open(33, N, 0.02);
    char err[256], line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info = {0};
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0 && !info.valid)
        ;
    ASSERT(info.valid);
    rc_gen_destroy(g);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", b.bootstrap, err, sizeof err), 0);
    ASSERT_EQ(rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err), 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ASSERT(rk != NULL);
    ASSERT_EQ(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("clicks"), RD_KAFKA_V_VALUE(line, len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              0);
    ASSERT_EQ(rd_kafka_flush(rk, (int)e2e_scaled_ms(30000)), 0);
    rd_kafka_destroy(rk);

    e2e_topic_truth(b.bootstrap, "clicks", 4, 33, N, 0.02, &t2);
    ASSERT_EQ(t2.valid, gen_tr.valid + 1);
    ASSERT_EQ(t2.invalid, gen_tr.invalid);
    ASSERT_EQ(t2.repeats, 1);
    ASSERT_EQ(t2.absent, 0);
    e2e_assert_counts(&t2, gen_tr.count); /* still one click for its item */
    free(t2.count);
    /* a generator run 40 lines longer than the log: those 40 are absent */
    e2e_topic_truth(b.bootstrap, "clicks", 4, 33, N + 40, 0.02, &t2);
    ASSERT_EQ(t2.absent, 40);
    ASSERT_EQ(t2.valid, gen_tr.valid + 1);
    e2e_broker_stop(&b);
    free(gen_tr.count);
    free(t1.count);
    free(t2.count);
}

/* ---- partition leader errors ---- */

/* Moves the leader of each of the 4 partitions of clicks: the odd ones to
 * broker odd_to, the even ones to the other of brokers 1 and 2. */
static void move_leaders(e2e_broker *b, int odd_to)
{
    for (int p = 0; p < 4; p++) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "leader clicks %d %d", p, p % 2 ? odd_to : 3 - odd_to);
        cmd_ok(b, cmd);
    }
}

/* Two brokers; mid-stream the partitions' leaders move, fetches fail with
 * NOT_LEADER_FOR_PARTITION and commits with REQUEST_TIMED_OUT /
 * COORDINATOR_NOT_AVAILABLE: the consumer follows the leaders, retries, and no
 * event is lost or applied twice. */
TEST(faults_leader_moves_and_request_errors_no_loss)
{
    const uint64_t N = 8000;
    char dir[64], data[256];
    e2e_broker b;
    e2e_daemon d;
    const char *two[] = {"--brokers", "2", NULL};
    mkdir_tmp(dir, sizeof dir);
    e2e_broker_start(&b, 4, two);
    start_member(&d, dir, "d", b.bootstrap,
                 "{\"checkpoint\":{\"interval_ms\":300},\"log\":{\"level\":\"debug\"},"
                 "\"kafka\":{\"config\":{\"session.timeout.ms\":\"4000\","
                 "\"heartbeat.interval.ms\":\"500\",\"debug\":\"fetch,cgrp,topic\"}}}",
                 data, sizeof data);
    pid_t gen = e2e_gen_start(b.bootstrap, 41, N, 0.02, 1000);
    wait_stat_above(&d, "kafka.commits", 0); /* the stream flows, commits succeed */
    /* Evidence that the faults hit the stream, from librdkafka's debug log:
     * fetches refused with NOT_LEADER, and an offset commit that failed and is
     * retried ("Operation in progress" is its result while retrying). */
    const char *not_leader = "Fetch backoff.*Not leader for partition";
    const char *commit_retry = "OffsetCommit for .* returned: Local: Operation in progress";
    long nl = log_count(&d, not_leader), cr = log_count(&d, commit_retry);
    cmd_ok(&b, "errors Fetch 5 NOT_LEADER_FOR_PARTITION");
    cmd_ok(&b, "errors OffsetCommit 2 REQUEST_TIMED_OUT");
    move_leaders(&b, 1);
    wait_log_above(&d, not_leader, nl);
    cr = wait_log_above(&d, commit_retry, cr);
    /* The moves back wait until the client follows the first ones: every
     * partition delegated to its new leader and fetching from there. Moving a
     * leader back while librdkafka 2.0.2 still has the older metadata in
     * flight can leave a partition delegated to the old leader for good
     * ("leader N unchanged, not migrating away from preferred replica N",
     * upstream issue 3399): a client bug this test does not exercise. */
    for (int p = 0; p < 4; p++) {
        char pat[96];
        snprintf(pat, sizeof pat, ": clicks \\[%d\\]: delegate to broker [^ ]*/%d ", p,
                 p % 2 ? 1 : 2); /* also the first delegation: a leader may not move */
        wait_log_above(&d, pat, 0);
    }
    long long applied = stat_now(&d, "events.applied");
    wait_stat_above(&d, "events.applied", applied);
    applied = stat_now(&d, "events.applied");
    cmd_ok(&b, "errors OffsetCommit 2 COORDINATOR_NOT_AVAILABLE");
    move_leaders(&b, 2);
    wait_log_above(&d, commit_retry, cr);
    wait_stat_above(&d, "events.applied", applied); /* fetching goes on after the moves */
    finish_exactly_once(&b, &d, gen, 41, N, 0.02, data, dir);
}

/* ---- topic missing at start ---- */

/* The topic does not exist yet (the mock creates topics on demand, so its
 * metadata is made to say UNKNOWN_TOPIC_OR_PART): recalld starts, serves,
 * reports not-ready (health) and the reason (kafka.last_error), does not
 * crash; once the topic exists it is assigned and consumes. */
TEST(faults_topic_missing_at_start_waits)
{
    const uint64_t N = 2000;
    char dir[64], data[256];
    e2e_broker b;
    e2e_daemon d;
    e2e_truth tr;
    const char *other[] = {"--topic", "other", NULL};
    mkdir_tmp(dir, sizeof dir);
    e2e_gen_truth(51, N, 0, &tr);
    e2e_broker_start(&b, 4, other);
    cmd_ok(&b, "topic-error clicks UNKNOWN_TOPIC_OR_PART");
    snprintf(data, sizeof data, "%s/d", dir);
    char conf[256];
    snprintf(conf, sizeof conf, "%s/d.json", dir);
    e2e_write_file(conf, "{" KAFKA_FAST "}");
    const char *extra[] = {"--config", conf, "--data-dir", data, NULL};
    e2e_opts o = {.brokers = b.bootstrap, .extra = extra, .no_wait = 1};
    e2e_start_opts(&d, &o);
    /* first the daemon's proof that it met the missing topic (the reason in
     * kafka.last_error), then: not ready, alive */
    json_t *st = NULL;
    const char *why = NULL;
    for (long long t0 = e2e_now_ms();; ms_sleep(50)) {
        st = e2e_request(d.sock, "{\"op\":\"stats\"}");
        why = json_string_value(json_object_get(json_object_get(st, "kafka"), "last_error"));
        if (why && strstr(why, "UNKNOWN_TOPIC"))
            break;
        json_decref(st);
        if (e2e_now_ms() - t0 > e2e_scaled_ms(120000))
            RC__FAIL(
                "no UNKNOWN_TOPIC in kafka.last_error after 120 s x RC_TEST_TIME_SCALE (log %s)",
                d.log);
    }
    json_t *h = e2e_request(d.sock, "{\"op\":\"health\"}");
    ASSERT(json_is_false(json_object_get(h, "ok")));
    json_decref(h);
    fprintf(stderr, "while the topic is missing: kafka.last_error = \"%s\"\n", why ? why : "");
    ASSERT(why && strstr(why, "UNKNOWN_TOPIC") != NULL);
    json_decref(st);
    ASSERT_EQ(kill(d.pid, 0), 0); /* alive */

    cmd_ok(&b, "topic-error clicks NO_ERROR");
    long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    for (;;) {
        char *r = e2e_raw(d.sock, "{\"op\":\"health\"}\n", 16, 2000);
        int ok = r && strstr(r, "\"ok\":true");
        free(r);
        if (ok)
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL(
                "no assignment 120 s x RC_TEST_TIME_SCALE after the topic was created (log %s)",
                d.log);
        ms_sleep(200);
    }
    fprintf(stderr, "assigned %.1f s after the topic was created\n",
            (e2e_scaled_ms(120000) - (deadline - e2e_now_ms())) / 1000.0);
    pid_t gen = e2e_gen_start(b.bootstrap, 51, N, 0, 0);
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    st = e2e_wait_done(d.sock, N, 120000);
    ASSERT_EQ(e2e_int(st, "events.applied"), tr.valid);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&d), 0);
    free(tr.count);
    e2e_broker_stop(&b);
    cleanup(d.dir);
    cleanup(dir);
}

/* ---- lifecycle ---- */

/* Committed offsets of group "recalld" on topic clicks, partitions 0..n-1. */
static void committed(const char *brokers, int n, int64_t *out)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, why, sizeof why), 0);
    ASSERT_EQ(rd_kafka_conf_set(conf, "group.id", "recalld", why, sizeof why), 0);
    ASSERT_EQ(rd_kafka_conf_set(conf, "log_level", "3", why, sizeof why), 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    ASSERT(rk != NULL);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(l, "clicks", p);
    ASSERT_EQ(rd_kafka_committed(rk, l, 10000), 0);
    for (int p = 0; p < n; p++)
        out[p] = l->elems[p].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

/* SIGTERM: consuming stops, requests drain, the pipeline finishes, the final
 * checkpoint (the only one: checkpoint.interval_ms 0) holds every event, its
 * offsets are committed, exit 0. A restart resumes exactly after them:
 * nothing is applied again. */
TEST(lifecycle_sigterm_final_checkpoint_and_commit)
{
    const uint64_t N = 5000;
    char dir[64], data[256];
    e2e_broker b;
    e2e_daemon d;
    e2e_truth tr;
    int64_t offs[4];
    mkdir_tmp(dir, sizeof dir);
    e2e_gen_truth(71, N, 0.03, &tr);
    e2e_broker_start(&b, 4, NULL);
    start_member(&d, dir, "d", b.bootstrap, "{\"checkpoint\":{\"interval_ms\":0}," KAFKA_FAST "}",
                 data, sizeof data);
    pid_t gen = e2e_gen_start(b.bootstrap, 71, N, 0.03, 0);
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    json_t *st = e2e_wait_done(d.sock, N, 120000);
    ASSERT_EQ(e2e_int(st, "events.applied"), tr.valid);
    ASSERT_EQ(e2e_int(st, "checkpoint.written"), 0);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&d), 0);

    rc_table *t;
    rc_checkpoint_meta m;
    e2e_checkpoint_open(data, &t, &m);
    ASSERT_EQ(rc_checkpoint_meta_counter(&m, "applied", 0), tr.valid);
    ASSERT_EQ(rc_checkpoint_meta_counter(&m, "consumed", 0), N);
    ASSERT_EQ(m.noffsets, 4);
    committed(b.bootstrap, 4, offs);
    int64_t total = 0;
    for (uint32_t i = 0; i < m.noffsets; i++) {
        ASSERT_EQ(offs[m.offsets[i].partition], m.offsets[i].next);
        total += m.offsets[i].next;
    }
    ASSERT_EQ(total, N); /* offsets start at 0: the next offsets sum to N */
    rc_checkpoint_meta_free(&m);
    rc_table_destroy(t);

    const char *extra[] = {"--config", NULL, "--data-dir", data, NULL};
    char conf[256];
    snprintf(conf, sizeof conf, "%s/d.json", dir);
    extra[1] = conf;
    e2e_opts o = {.brokers = b.bootstrap, .extra = extra, .reuse = 1};
    e2e_start_opts(&d, &o);
    /* One marker event at the end of each partition: once the daemon knows
     * all four marker users, it has read every partition to its end, so an
     * event handed over again would have come before them. (Their time is
     * after the stream's: users idle for the session TTL before the newest
     * event are expired, and would look unknown. Now is after the stream and
     * inside events.max_future_ms of the wall clock.) */
    long long mark_ts = (long long)time(NULL) * 1000;
    for (int p = 0; p < 4; p++) {
        char *out = NULL;
        int rc = e2e_sh(&out,
                        "printf '%%s\\n' '{\"user_id\":\"mark%d\",\"item_id\":\"i1\","
                        "\"city_id\":\"c0\",\"cate_id\":\"k0\",\"ts\":%lld}' | "
                        "kcat -P -b '%s' -t clicks -p %d 2>&1",
                        p, mark_ts, b.bootstrap, p);
        if (rc != 0)
            RC__FAIL("kcat: %s", out ? out : "");
        free(out);
    }
    for (long long t0 = e2e_now_ms(), known = 0; known < 4; ms_sleep(50)) {
        known = 0;
        for (int p = 0; p < 4; p++) {
            json_t *r =
                e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"mark%d\",\"k\":1}", p);
            known += json_object_get(r, "fallback") == NULL;
            json_decref(r);
        }
        if (known < 4 && e2e_now_ms() - t0 > e2e_scaled_ms(120000))
            RC__FAIL("marker events not applied after 120 s x RC_TEST_TIME_SCALE (log %s)", d.log);
    }
    st = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(st, "events.applied"), tr.valid + 4);
    ASSERT_EQ(e2e_int(st, "events.consumed"), N + 4);
    ASSERT_EQ(e2e_int(st, "kafka.messages"), 4); /* the markers; nothing handed over again */
    json_decref(st);
    ASSERT_EQ(e2e_stop(&d), 0);
    free(tr.count);
    e2e_broker_stop(&b);
    cleanup(d.dir);
    cleanup(dir);
}

static int log_has(const char *log, const char *needle)
{
    char *out = NULL;
    int st = e2e_sh(&out, "grep -F -c -- '%s' %s", needle, log);
    free(out);
    return st == 0;
}

/* SIGHUP reloads what can change safely (recall.k_max here), names in the log
 * what changed and what needs a restart (model.dim: not applied), and keeps
 * the running configuration when the file became invalid. */
TEST(lifecycle_sighup_reloads_safe_keys)
{
    char dir[64], conf[256];
    e2e_daemon d;
    mkdir_tmp(dir, sizeof dir);
    snprintf(conf, sizeof conf, "%s/r.json", dir);
    e2e_write_file(conf, "{\"recall\":{\"k_max\":100}}");
    const char *extra[] = {"--config", conf, NULL};
    e2e_opts o = {.extra = extra};
    e2e_start_opts(&d, &o);
    const char *req = "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":150}";
    json_t *r = e2e_request(d.sock, "%s", req);
    ASSERT(json_is_false(json_object_get(r, "ok")));
    json_decref(r);

    e2e_write_file(conf, "{\"recall\":{\"k_max\":200},\"model\":{\"dim\":32},"
                         "\"log\":{\"stats_interval_ms\":60000}}");
    ASSERT_EQ(kill(d.pid, SIGHUP), 0);
    long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    while (!log_has(d.log, "config reloaded") && e2e_now_ms() < deadline)
        ms_sleep(50);
    ASSERT(log_has(d.log, "changed=\"recall.k_max,log.stats_interval_ms\""));
    ASSERT(log_has(d.log, "restart_needed=\"model.dim\""));
    r = e2e_request(d.sock, "%s", req);
    ASSERT(json_is_true(json_object_get(r, "ok")));
    json_decref(r);

    e2e_write_file(conf, "{\"recall\":{\"k_max\":");
    ASSERT_EQ(kill(d.pid, SIGHUP), 0);
    deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    while (!log_has(d.log, "config reload failed") && e2e_now_ms() < deadline)
        ms_sleep(50);
    ASSERT(log_has(d.log, "config reload failed: the running configuration stays"));
    r = e2e_request(d.sock, "%s", req);
    ASSERT(json_is_true(json_object_get(r, "ok"))); /* k_max 200 stays */
    json_decref(r);
    ASSERT_EQ(e2e_stop(&d), 0);
    cleanup(d.dir);
    cleanup(dir);
}
