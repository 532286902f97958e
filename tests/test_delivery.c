/* Delivery guarantees end to end (docs/DELIVERY.md): the real recalld against
 * a recalld-broker in its own process. Every test counts: events produced,
 * applied, lost. Nothing here bounds wall-clock time; waits are for a
 * condition, with a generous timeout that only fails when it never holds. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "test.h"

#define WAIT_MS                                                                                    \
    ((int)e2e_scaled_ms(180000)) /* a condition that has not held by then never will               \
                                  */

static void ms_sleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static void tmpdir(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/rc-delivery-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
}

/* Starts recalld on b with group g and, when data is set, --data-dir data;
 * json (may be NULL) is written to DIR/<name>.json and passed as --config. */
static void start_on(e2e_daemon *d, const e2e_broker *b, const char *dir, const char *name,
                     const char *group, const char *data, const char *json, int no_wait)
{
    static char conf[256], grp[128], dd[256]; /* copied by exec */
    const char *extra[12];
    int n = 0;
    snprintf(grp, sizeof grp, "%s", group);
    extra[n++] = "--group";
    extra[n++] = grp;
    if (data) {
        snprintf(dd, sizeof dd, "%s", data);
        extra[n++] = "--data-dir";
        extra[n++] = dd;
    }
    if (json) {
        snprintf(conf, sizeof conf, "%s/%s.json", dir, name);
        e2e_write_file(conf, json);
        extra[n++] = "--config";
        extra[n++] = conf;
    }
    extra[n] = NULL;
    e2e_opts o = {.brokers = b->bootstrap, .extra = extra, .no_wait = 1};
    e2e_start_opts(d, &o);
    if (no_wait)
        return;
    /* Ready = partitions assigned. A restarted static member waits (on the
     * mock, which ignores static membership) for its previous session to
     * expire: seconds, more on a loaded machine. */
    long long deadline = e2e_now_ms() + WAIT_MS;
    for (;;) {
        char *r = e2e_raw(d->sock, "{\"op\":\"health\"}\n", 16, 10000);
        int ok = r && strstr(r, "\"status\":\"ready\"");
        free(r);
        if (ok)
            return;
        if (e2e_now_ms() > deadline)
            RC__FAIL("recalld not ready after %d s (log %s)", WAIT_MS / 1000, d->log);
        ms_sleep(100);
    }
}

/* Produces `events` generated clicks (no invalid ones) and waits for the
 * generator: every one of them was delivered to the broker. */
static void produce(const e2e_broker *b, uint64_t seed, uint64_t events)
{
    ASSERT_EQ(e2e_gen_wait(e2e_gen_start(b->bootstrap, seed, events, 0.0, 0)), 0);
}

/* Waits until events.applied + events.lost >= total; returns the stats. Fails
 * only when the count stops moving for WAIT_MS (a slow build on a loaded
 * machine is still making progress). */
static json_t *wait_accounted(const char *sock, long long total)
{
    long long deadline = e2e_now_ms() + WAIT_MS, last = -1;
    for (;;) {
        json_t *st = e2e_request(sock, "{\"op\":\"stats\"}");
        long long got = e2e_int(st, "events.applied") + e2e_int(st, "events.lost");
        if (got >= total)
            return st;
        if (got > last) {
            last = got;
            deadline = e2e_now_ms() + WAIT_MS;
        }
        if (e2e_now_ms() > deadline)
            RC__FAIL("applied + lost = %lld of %lld, unchanged for %d s", got, total,
                     WAIT_MS / 1000);
        json_decref(st);
        ms_sleep(200);
    }
}

static int health_has_warning(const char *sock, const char *needle)
{
    char *r = e2e_raw(sock, "{\"op\":\"health\"}\n", 16, 10000);
    int found =
        r && strstr(r, "\"status\":\"ready\"") && strstr(r, "\"warnings\":[") && strstr(r, needle);
    free(r);
    return found;
}

/* Events deleted by retention while recalld was down are counted, never
 * hidden: the restart resumes from the checkpoint's position, finds the log
 * starting later, and reports exactly the missing range (stats, health,
 * metrics counters); then a member with a fresh data directory resumes from
 * the group's committed offset (looked up at assignment) and counts its own
 * gap the same way. Applied + lost == produced, exactly, for both. */
TEST(delivery_retention_gap_counted_exactly)
{
    char dir[64], da[128], db[128];
    e2e_broker b;
    e2e_daemon a, c;
    const char *json = "{\"checkpoint\":{\"interval_ms\":500}}";
    tmpdir(dir, sizeof dir);
    snprintf(da, sizeof da, "%s/a", dir);
    snprintf(db, sizeof db, "%s/b", dir);
    e2e_broker_start(&b, 1, NULL); /* one partition: ~5 MiB of log in all */
    start_on(&a, &b, dir, "a", "gap", da, json, 0);
    produce(&b, 31, 1000);
    json_decref(wait_accounted(a.sock, 1000));
    ASSERT_EQ(e2e_stop(&a), 0); /* final checkpoint at 1000, committed */

    /* Far more than the mock keeps, while nobody reads: the log start moves. */
    produce(&b, 32, 60000);
    start_on(&a, &b, dir, "a", "gap", da, json, 0);
    json_t *st = wait_accounted(a.sock, 61000);
    long long applied = e2e_int(st, "events.applied"), lost = e2e_int(st, "events.lost");
    fprintf(stderr, "restart from the checkpoint: applied %lld, lost %lld\n", applied, lost);
    ASSERT_GT(lost, 0);
    ASSERT_EQ(applied + lost, 61000);
    ASSERT_EQ(e2e_int(st, "kafka.lost"), lost);
    ASSERT_EQ(e2e_int(st, "kafka.last_gap.partition"), 0);
    ASSERT_EQ(e2e_int(st, "kafka.last_gap.from"), 1000); /* the checkpoint's position */
    ASSERT_EQ(e2e_int(st, "kafka.last_gap.to"), 1000 + lost);
    json_decref(st);
    ASSERT(health_has_warning(a.sock, "events lost"));
    char *log = NULL;
    e2e_sh(&log, "grep -c 'events lost: deleted from the log' %s", a.log);
    ASSERT(log && atoi(log) >= 1);
    free(log);
    ASSERT_EQ(e2e_stop(&a), 0); /* commits 61000 */

    /* A new member (new data dir, same group): starts at the committed offset. */
    produce(&b, 33, 60000);
    start_on(&c, &b, dir, "b", "gap", db, json, 0);
    st = wait_accounted(c.sock, 60000);
    applied = e2e_int(st, "events.applied");
    lost = e2e_int(st, "events.lost");
    fprintf(stderr, "new member at the committed offset: applied %lld, lost %lld\n", applied, lost);
    ASSERT_GT(lost, 0);
    ASSERT_EQ(applied + lost, 60000);
    ASSERT_EQ(e2e_int(st, "kafka.last_gap.from"), 61000); /* the committed offset */
    ASSERT_EQ(e2e_int(st, "kafka.lookups_failed"), 0);
    json_decref(st);
    ASSERT(health_has_warning(c.sock, "events lost"));
    ASSERT_EQ(e2e_stop(&c), 0);
    e2e_broker_stop(&b);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s' '%s' '%s'", dir, a.dir, c.dir), 0);
}

/* The counterpart: nothing trimmed, nothing lost - the gap check does not
 * invent losses across restarts, fresh members or an idle group. */
TEST(delivery_no_gap_no_loss_reported)
{
    char dir[64], da[128];
    e2e_broker b;
    e2e_daemon a;
    const char *json = "{\"checkpoint\":{\"interval_ms\":500}}";
    tmpdir(dir, sizeof dir);
    snprintf(da, sizeof da, "%s/a", dir);
    e2e_broker_start(&b, 3, NULL);
    produce(&b, 41, 3000); /* before the group exists: read from the beginning */
    start_on(&a, &b, dir, "a", "nogap", da, json, 0);
    json_decref(wait_accounted(a.sock, 3000));
    ASSERT_EQ(e2e_stop(&a), 0);
    produce(&b, 42, 3000);
    start_on(&a, &b, dir, "a", "nogap", da, json, 0);
    json_t *st = wait_accounted(a.sock, 6000);
    ASSERT_EQ(e2e_int(st, "events.applied"), 6000);
    ASSERT_EQ(e2e_int(st, "events.lost"), 0);
    ASSERT_EQ(e2e_int(st, "kafka.lost"), 0);
    ASSERT_EQ(e2e_int(st, "kafka.last_gap.partition"), -1); /* absent */
    json_decref(st);
    char *r = e2e_raw(a.sock, "{\"op\":\"health\"}\n", 16, 10000);
    ASSERT(r && strstr(r, "\"status\":\"ready\"") && !strstr(r, "warnings"));
    free(r);
    ASSERT_EQ(e2e_stop(&a), 0);
    e2e_broker_stop(&b);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s' '%s'", dir, a.dir), 0);
}

/* Idle is normal: a member that sees no event for longer than
 * max.poll.interval.ms keeps its group membership (recalld polls librdkafka
 * on a timer, not only when messages arrive), stays ready, and consumes what
 * comes afterwards. */
TEST(delivery_idle_keeps_group_membership)
{
    char dir[64];
    e2e_broker b;
    e2e_daemon a;
    tmpdir(dir, sizeof dir);
    e2e_broker_start(&b, 2, NULL);
    /* librdkafka's lowest accepted value is session.timeout.ms (6 s here). */
    start_on(&a, &b, dir, "a", "idle", NULL,
             "{\"kafka\":{\"config\":{\"max.poll.interval.ms\":\"7000\"}}}", 0);
    json_t *st = e2e_request(a.sock, "{\"op\":\"stats\"}");
    long long rb = e2e_int(st, "kafka.rebalances");
    ASSERT_EQ(e2e_int(st, "kafka.assigned"), 2);
    json_decref(st);
    /* Three poll intervals without an event; health is asked throughout. */
    for (int i = 0; i < 21; i++) {
        char *r = e2e_raw(a.sock, "{\"op\":\"health\"}\n", 16, 10000);
        ASSERT(r && strstr(r, "\"status\":\"ready\""));
        free(r);
        ms_sleep(1000);
    }
    st = e2e_request(a.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(st, "kafka.rebalances"), rb); /* never left, never rejoined */
    ASSERT_EQ(e2e_int(st, "kafka.assigned"), 2);
    json_decref(st);
    char *log = NULL;
    e2e_sh(&log, "grep -c 'max poll interval' %s", a.log);
    ASSERT(log && atoi(log) == 0);
    free(log);
    produce(&b, 51, 500);
    json_decref(wait_accounted(a.sock, 500));
    ASSERT_EQ(e2e_stop(&a), 0);
    e2e_broker_stop(&b);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s' '%s'", dir, a.dir), 0);
}

/* SIGTERM before the first assignment exits 0. The window that aborts
 * librdkafka < 2.3.0 (a cooperative-sticky member destroyed after its
 * JoinGroup answer and before its first assignment) is made wide and hit on
 * purpose: a killed member stays in the group as a ghost, the group waits for
 * it to sync, every broker answer is delayed (mock RTT), and recalld is
 * stopped right after librdkafka logs its JoinGroup answer (debug log).
 * Repeated. */
TEST(delivery_sigterm_before_first_assignment_exits_0)
{
    char dir[64];
    e2e_broker b;
    e2e_daemon ghost, d;
    tmpdir(dir, sizeof dir);
    e2e_broker_start(&b, 4, NULL);
    start_on(&ghost, &b, dir, "ghost", "early", NULL, NULL, 0);
    e2e_kill(&ghost); /* stays a member until its session times out */
    /* Every answer of the (single) broker comes 1.5 s late, so a member that
     * has its JoinGroup answer waits at least that long for its assignment
     * (SyncGroup): a window the test hits on a loaded machine too. */
    char *r = e2e_broker_cmd(&b, "rtt 1 1500");
    ASSERT_STREQ(r, "ok");
    free(r);
    const char *json =
        "{\"kafka\":{\"config\":{\"debug\":\"cgrp\"}},\"log\":{\"level\":\"debug\"}}";
    int joined_rounds = 0;
    for (int round = 0; round < 4; round++) {
        start_on(&d, &b, dir, "d", "early", NULL, json, 1);
        long long deadline = e2e_now_ms() + WAIT_MS;
        int joined = 0;
        while (!joined && e2e_now_ms() < deadline) {
            char *out = NULL;
            e2e_sh(&out, "grep -c 'JoinGroup response' %s", d.log);
            joined = out && atoi(out) > 0;
            free(out);
            if (!joined)
                ms_sleep(20);
        }
        ASSERT(joined);
        json_t *st = e2e_request(d.sock, "{\"op\":\"stats\"}");
        int assigned = (int)e2e_int(st, "kafka.rebalances") > 0;
        json_decref(st);
        joined_rounds += !assigned;
        ASSERT_EQ(e2e_stop(&d), 0);
        char *out = NULL;
        e2e_sh(&out, "grep -c 'Assertion' %s", d.log);
        ASSERT(out && atoi(out) == 0);
        free(out);
        ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", d.dir), 0);
    }
    /* The point of the test: at least once stopped between join and assignment. */
    fprintf(stderr, "stopped before the first assignment in %d of 4 rounds\n", joined_rounds);
    ASSERT_GT(joined_rounds, 0);
    e2e_broker_stop(&b);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s' '%s'", dir, ghost.dir), 0);
}

/* kill -9 five times within seconds while producing, start once more: the
 * restarted member gets partitions (the dead members' sessions expire after
 * session.timeout.ms, 6 s by default, instead of librdkafka's 45 s) and the
 * model ends with every event exactly once (checkpoint + replay from its
 * positions). The rejoin time is printed; bench/rejoin.sh measures it. */
TEST(delivery_rejoin_after_repeated_kills_exactly_once)
{
    char dir[64], da[128];
    e2e_broker b;
    e2e_daemon a;
    e2e_truth tr;
    const char *json = "{\"checkpoint\":{\"interval_ms\":300}}";
    tmpdir(dir, sizeof dir);
    snprintf(da, sizeof da, "%s/a", dir);
    e2e_gen_truth(61, 12000, 0.0, &tr);
    e2e_broker_start(&b, 4, NULL);
    start_on(&a, &b, dir, "a", "rejoin", da, json, 0);
    pid_t gen = e2e_gen_start(b.bootstrap, 61, 12000, 0.0, 2000);
    for (int k = 0; k < 5; k++) {
        e2e_kill(&a);
        start_on(&a, &b, dir, "a", "rejoin", da, json, 1); /* socket up, not yet assigned */
        ms_sleep(300);
    }
    e2e_kill(&a);
    long long t0 = e2e_now_ms();
    start_on(&a, &b, dir, "a", "rejoin", da, json, 1);
    long long deadline = t0 + WAIT_MS;
    for (;;) {
        json_t *st = e2e_request(a.sock, "{\"op\":\"stats\"}");
        int assigned = (int)e2e_int(st, "kafka.assigned");
        json_decref(st);
        if (assigned == 4)
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL("no assignment %d s after the last restart", WAIT_MS / 1000);
        ms_sleep(100);
    }
    fprintf(stderr, "rejoined (4 partitions) %.1f s after the last restart\n",
            (e2e_now_ms() - t0) / 1e3);
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    json_t *st = wait_accounted(a.sock, (long long)tr.valid);
    ASSERT_EQ(e2e_int(st, "events.applied"), (long long)tr.valid);
    ASSERT_EQ(e2e_int(st, "events.lost"), 0);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&a), 0);
    e2e_broker_stop(&b);
    free(tr.count);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s' '%s'", dir, a.dir), 0);
}

/* Flips one byte in the middle of every checkpoint-*.rcc under data. */
static int corrupt_all(const char *data)
{
    char *out = NULL;
    int n = 0;
    e2e_sh(&out, "ls %s | grep -E '^checkpoint-[0-9]+\\.rcc$'", data);
    for (char *line = strtok(out ? out : (char *)"", "\n"); line; line = strtok(NULL, "\n")) {
        char path[512];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", data, line);
        int fd = open(path, O_RDWR);
        ASSERT(fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size > 64);
        unsigned char c;
        off_t at = sb.st_size / 2;
        ASSERT_EQ(pread(fd, &c, 1, at), 1);
        c ^= 0x5a;
        ASSERT_EQ(pwrite(fd, &c, 1, at), 1);
        close(fd);
        n++;
    }
    free(out);
    return n;
}

/* No valid checkpoint is not an empty model at the committed offsets: when
 * every checkpoint is corrupt, recalld says so and replays the log from the
 * beginning - the model ends with every event once, nothing is counted lost
 * (the log still holds it all), and events produced afterwards are applied
 * once more, not twice. */
TEST(delivery_all_checkpoints_corrupt_replays_from_start)
{
    char dir[64], da[128];
    e2e_broker b;
    e2e_daemon a;
    const char *json = "{\"checkpoint\":{\"interval_ms\":300,\"keep\":3}}";
    tmpdir(dir, sizeof dir);
    snprintf(da, sizeof da, "%s/a", dir);
    e2e_broker_start(&b, 2, NULL);
    start_on(&a, &b, dir, "a", "corrupt", da, json, 0);
    produce(&b, 71, 5000);
    json_decref(wait_accounted(a.sock, 5000));
    ASSERT_EQ(e2e_stop(&a), 0); /* offsets 5000 committed */
    ASSERT_GT(corrupt_all(da), 0);
    start_on(&a, &b, dir, "a", "corrupt", da, json, 0);
    json_t *st = wait_accounted(a.sock, 5000);
    ASSERT_EQ(e2e_int(st, "events.applied"), 5000);
    ASSERT_EQ(e2e_int(st, "events.lost"), 0);
    json_decref(st);
    char *log = NULL;
    e2e_sh(&log, "grep -c 'no valid checkpoint' %s", a.log);
    ASSERT(log && atoi(log) >= 1);
    free(log);
    produce(&b, 72, 1000);
    st = wait_accounted(a.sock, 6000);
    ASSERT_EQ(e2e_int(st, "events.applied"), 6000);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&a), 0);
    /* The replayed model is checkpointed: a plain restart restores it. */
    start_on(&a, &b, dir, "a", "corrupt", da, json, 0);
    st = e2e_request(a.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(st, "events.applied"), 6000);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&a), 0);
    e2e_broker_stop(&b);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s' '%s'", dir, a.dir), 0);
}

/* Static membership: with a data directory the member has a stable
 * group.instance.id (host + directory), shown in stats; kafka.instance_id
 * sets one, "none" turns it off; without a data directory there is none. */
TEST(delivery_static_member_identity)
{
    char dir[64], da[128];
    e2e_broker b;
    e2e_daemon a;
    tmpdir(dir, sizeof dir);
    snprintf(da, sizeof da, "%s/a", dir);
    e2e_broker_start(&b, 1, NULL);
    start_on(&a, &b, dir, "a", "ident", da, NULL, 1);
    json_t *st = e2e_request(a.sock, "{\"op\":\"stats\"}");
    const char *id =
        json_string_value(json_object_get(json_object_get(st, "kafka"), "instance_id"));
    ASSERT(id && strncmp(id, "recalld-", 8) == 0);
    char first[256];
    snprintf(first, sizeof first, "%s", id);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&a), 0);
    start_on(&a, &b, dir, "a", "ident", da, NULL, 1); /* same dir: same identity */
    st = e2e_request(a.sock, "{\"op\":\"stats\"}");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(st, "kafka"), "instance_id")),
                 first);
    json_decref(st);
    ASSERT_EQ(e2e_stop(&a), 0);
    start_on(&a, &b, dir, "a", "ident", da, "{\"kafka\":{\"instance_id\":\"shard-7\"}}", 1);
    st = e2e_request(a.sock, "{\"op\":\"stats\"}");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(st, "kafka"), "instance_id")),
                 "shard-7");
    json_decref(st);
    ASSERT_EQ(e2e_stop(&a), 0);
    start_on(&a, &b, dir, "a", "ident", da, "{\"kafka\":{\"instance_id\":\"none\"}}", 1);
    st = e2e_request(a.sock, "{\"op\":\"stats\"}");
    ASSERT(json_is_null(json_object_get(json_object_get(st, "kafka"), "instance_id")));
    json_decref(st);
    ASSERT_EQ(e2e_stop(&a), 0);
    e2e_broker_stop(&b);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s' '%s'", dir, a.dir), 0);
}
