/* A trainer's bootstrap of newly assigned cities (src/vboot.c) when the
 * assignment changes while it runs, end to end through the real binaries
 * on recalld-broker (docs/DESIGN.md "Roles and replicas", "Bootstrap of a
 * new owner's cities").
 *
 * The run is held deterministically: the only partition of clicks.vectors
 * has no leader (`leader clicks.vectors 0 -1`), so its watermarks do not
 * come and the run waits (vectors.bootstrap_timeout_ms is an hour) until the
 * test gives the partition its leader back. Every wait is on a condition
 * (scaled timeouts). */
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "e2e.h"
#include "recalld/buf.h"
#include "recalld/config.h"
#include "recalld/consumer.h"
#include "recalld/engine.h"
#include "recalld/repart.h"
#include "recalld/vboot.h"
#include "recalld/vecpub.h"
#include "test.h"

#define BP     4  /* partitions of clicks.by-city */
#define CITIES 12 /* c0..c11: every by-city partition has some (checked) */
#define PER    50 /* vector records per city */
#define DIM    64 /* the daemon's default model.dim */

static void ms_sleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static void cleanup(const char *dir) { ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0); }

static void broker_ok(e2e_broker *b, const char *cmd)
{
    char *reply = e2e_broker_cmd(b, "%s", cmd);
    if (strncmp(reply, "ok", 2) != 0)
        RC__FAIL("broker command \"%s\": %s", cmd, reply);
    free(reply);
}

/* The by-city partition of city c<i>, as the repartitioner computes it. */
static int city_part(int i)
{
    char city[8];
    snprintf(city, sizeof city, "c%d", i);
    return rc_repart_partition(city, strlen(city), BP);
}

/* Records of the cities of the partitions in set. */
static long long records_of(unsigned set)
{
    long long n = 0;
    for (int c = 0; c < CITIES; c++)
        n += (set >> city_part(c) & 1u) ? PER : 0;
    return n;
}

static rd_kafka_t *producer(const char *brokers)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ASSERT(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) == 0 &&
           rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err) == 0 &&
           rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) == 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ASSERT(rk != NULL);
    return rk;
}

static void produce(rd_kafka_t *rk, const char *topic, const char *key, const void *val, size_t len)
{
    rd_kafka_resp_err_t e;
    while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                                  RD_KAFKA_V_VALUE((void *)val, len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(rk, 10);
    ASSERT_EQ(e, 0);
}

/* CITIES x PER records, item i<k> of city c<k % CITIES>, count 1, as a
 * trainer publishes them (with the output vector). */
static void fill_vectors(const char *brokers, const char *topic)
{
    rd_kafka_t *rk = producer(brokers);
    float v[DIM], o[DIM];
    for (int i = 0; i < DIM; i++) {
        v[i] = (float)(i + 1) / DIM;
        o[i] = -(float)i / DIM;
    }
    rc_buf rec;
    rc_buf_init(&rec, 0);
    for (int k = 0; k < CITIES * PER; k++) {
        char item[16], city[8];
        snprintf(item, sizeof item, "i%d", k);
        snprintf(city, sizeof city, "c%d", k % CITIES);
        v[0] = (float)k;
        rc_buf_reset(&rec);
        ASSERT_EQ(rc_vecrec_encode(&rec, item, strlen(item), city, strlen(city), "k1", 2, 1,
                                   (uint64_t)k + 1, 1, v, o, DIM),
                  0);
        produce(rk, topic, item, rec.data, rec.len);
    }
    ASSERT_EQ(rd_kafka_flush(rk, (int)e2e_scaled_ms(60000)), 0);
    rd_kafka_destroy(rk);
    rc_buf_free(&rec);
}

/* n clicks on the click topic, spread over every city (user u<j>, item of
 * its city), at the wall clock. */
static void produce_clicks(const char *brokers, int n)
{
    rd_kafka_t *rk = producer(brokers);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    long long now = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    for (int j = 0; j < n; j++) {
        char user[16], ev[256];
        snprintf(user, sizeof user, "u%d", j % 97);
        int k = j % (CITIES * PER);
        int len = snprintf(ev, sizeof ev,
                           "{\"user_id\":\"%s\",\"item_id\":\"i%d\",\"city_id\":\"c%d\","
                           "\"cate_id\":\"k1\",\"ts\":%lld}",
                           user, k, k % CITIES, now + j);
        produce(rk, "clicks", user, ev, (size_t)len);
    }
    ASSERT_EQ(rd_kafka_flush(rk, (int)e2e_scaled_ms(60000)), 0);
    rd_kafka_destroy(rk);
}

/* recalld --role trainer <name> with its own data dir; replay off, and a
 * bootstrap that waits an hour for the vector topic. */
static void start_trainer(e2e_daemon *d, const char *dir, const char *name, const char *brokers)
{
    char conf[256], data[256];
    snprintf(conf, sizeof conf, "%s/%s.json", dir, name);
    snprintf(data, sizeof data, "%s/%s", dir, name);
    e2e_write_file(conf, "{\"train\":{\"replay_ratio\":0},"
                         "\"vectors\":{\"bootstrap_timeout_ms\":3600000}}");
    const char *extra[] = {"--config", conf, "--role", "trainer", "--data-dir", data, NULL};
    e2e_opts o = {.brokers = brokers, .extra = extra};
    e2e_start_opts(d, &o);
}

static unsigned assignment(json_t *st)
{
    unsigned set = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(json_object_get(st, "kafka"), "partitions"), i, p)
        set |= 1u << json_integer_value(json_object_get(p, "partition"));
    return set;
}

/* Every assigned partition handed over to its end (none left paused). */
static int caught_up(json_t *st)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(json_object_get(st, "kafka"), "partitions"), i, p)
        if (json_integer_value(json_object_get(p, "lag")) != 0)
            return 0;
    return 1;
}

static int bits(unsigned x) { return __builtin_popcount(x); }

#define B(path) e2e_int(s, "kafka.vectors.bootstrap." path)

/* kafka.vectors.bootstrap.running (a boolean) */
static int running(json_t *s)
{
    json_t *k =
        json_object_get(json_object_get(json_object_get(s, "kafka"), "vectors"), "bootstrap");
    return json_is_true(json_object_get(k, "running"));
}

/* Polls d's stats until cond (an expression over s) holds. */
#define WAIT_STATS(d, what, cond)                                                                  \
    do {                                                                                           \
        long long deadline_ = e2e_now_ms() + e2e_scaled_ms(120000);                                \
        for (;;) {                                                                                 \
            s = e2e_request((d)->sock, "{\"op\":\"stats\"}");                                      \
            if (cond)                                                                              \
                break;                                                                             \
            if (e2e_now_ms() > deadline_)                                                          \
                RC__FAIL("%s: assignment %#x, bootstrap running %d paused %lld runs %lld "         \
                         "(log %s)",                                                               \
                         what, assignment(s), running(s), B("paused"), B("runs"), (d)->log);       \
            json_decref(s);                                                                        \
            ms_sleep(100);                                                                         \
        }                                                                                          \
    } while (0)

static long long done_events(json_t *s)
{
    return e2e_int(s, "events.applied") + e2e_int(s, "events.invalid") +
           e2e_int(s, "events.duplicates") + e2e_int(s, "events.late");
}

static int log_has(const e2e_daemon *d, const char *text)
{
    char *log = e2e_read_file(d->log);
    int has = log && strstr(log, text) != NULL;
    free(log);
    return has;
}

/* T1 bootstraps all four by-city partitions (held); T2 joins and takes two
 * of them mid-run: T1 drops their cities from the run (`revoked` 2) and
 * reads only its own; T2 starts its own run (held too) and is stopped by
 * SIGTERM mid-run: it exits 0 at once (`abandoned` in its log), and its
 * partitions come back to T1, which holds them for its next run. Once the
 * vector topic answers, T1's first run installs exactly the records of the
 * two partitions it kept, the second those of the two that came back
 * (matched = handed = installed = every record once, nothing skipped), no
 * partition stays paused: later clicks of every city are all trained. */
TEST(vboot_revoke_add_and_stop_mid_run)
{
    enum { CLICKS = 600 };
    static const char *const topics[] = {"--topic", "clicks", "--topic", "clicks.dlq", NULL};
    char dir[64];
    e2e_broker b;
    e2e_daemon t1, t2;
    json_t *s;
    unsigned all = (1u << BP) - 1, cover = 0;
    for (int c = 0; c < CITIES; c++)
        cover |= 1u << city_part(c);
    ASSERT_EQ(cover, all);
    snprintf(dir, sizeof dir, "/tmp/rc-vboot-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    e2e_broker_start(&b, 2, topics);
    broker_ok(&b, "create clicks.by-city 4");
    broker_ok(&b, "create clicks.vectors 1");
    fill_vectors(b.bootstrap, "clicks.vectors");
    broker_ok(&b, "leader clicks.vectors 0 -1"); /* every bootstrap run now waits */

    start_trainer(&t1, dir, "t1", b.bootstrap);
    WAIT_STATS(&t1, "t1 holds its four partitions",
               assignment(s) == all && running(s) && B("paused") == BP);
    ASSERT_EQ(B("runs"), 0);
    json_decref(s);

    start_trainer(&t2, dir, "t2", b.bootstrap);
    WAIT_STATS(&t2, "t2 holds two partitions", bits(assignment(s)) == 2 && B("paused") == 2);
    unsigned p2 = assignment(s);
    json_decref(s);
    WAIT_STATS(&t1, "t1 keeps two", assignment(s) == (all & ~p2) && B("paused") == 2);
    ASSERT_EQ(B("revoked"), 2); /* dropped from the run that still reads */
    ASSERT(running(s));
    ASSERT_EQ(B("runs"), 0);
    json_decref(s);

    ASSERT_EQ(e2e_stop(&t2), 0); /* mid-run: does not wait for the hour */
    ASSERT(log_has(&t2, "bootstrap abandoned"));
    ASSERT(!log_has(&t2, "consumer close did not return"));

    /* the two come back to t1, without a position: held for its next run */
    WAIT_STATS(&t1, "t1 gets them back", assignment(s) == all && B("paused") == BP);
    ASSERT(running(s));
    ASSERT_EQ(B("runs"), 0);
    json_decref(s);

    broker_ok(&b, "leader clicks.vectors 0 1");
    WAIT_STATS(&t1, "t1's two runs end",
               B("runs") == 2 && !running(s) && B("paused") == 0 &&
                   e2e_int(s, "index.pending") == 0);
    fprintf(stderr,
            "t1: %lld runs, %lld records read, %lld matched, %lld handed, %lld installed, %lld "
            "skipped, %lld revoked, %lld dropped (t2 took %#x)\n",
            B("runs"), B("records"), B("matched"), B("handed"), B("installed"), B("skipped"),
            B("revoked"), B("dropped"), p2);
    long long n = CITIES * PER;
    ASSERT_EQ(records_of(all & ~p2) + records_of(p2), n);
    ASSERT_EQ(B("records"), 2 * n); /* each run read the whole topic */
    ASSERT_EQ(B("matched"), n);     /* the first kept none of the revoked cities */
    ASSERT_EQ(B("handed"), n);
    ASSERT_EQ(B("installed"), n);
    ASSERT_EQ(B("skipped"), 0);
    ASSERT_EQ(B("revoked"), 2);
    ASSERT_EQ(B("cancelled"), 0);
    ASSERT_EQ(B("dropped"), 0);
    ASSERT_EQ(B("abandoned"), 0);
    ASSERT_EQ(B("errors"), 0);
    ASSERT_EQ(e2e_int(s, "items"), n);
    long long done0 = done_events(s);
    json_decref(s);

    /* nothing left paused: every city's clicks get trained */
    produce_clicks(b.bootstrap, CLICKS);
    WAIT_STATS(&t1, "t1 trains the clicks of every city",
               done_events(s) >= done0 + CLICKS && caught_up(s) &&
                   e2e_int(s, "kafka.repartition.lag") == 0 && e2e_int(s, "index.pending") == 0);
    ASSERT_EQ(done_events(s), done0 + CLICKS);
    ASSERT_EQ(e2e_int(s, "items"), n); /* the clicks' items were all installed */
    json_decref(s);
    ASSERT_EQ(e2e_stop(&t1), 0);
    cleanup(t1.dir);
    cleanup(t2.dir);
    e2e_broker_stop(&b);
    cleanup(dir);
}

/* T1 bootstraps four partitions (held), T2 joins and takes two (held too);
 * T1 is then stopped (SIGSTOP) past its session timeout: the group gives
 * everything to T2, which holds the two new ones for its next run. When T1
 * goes on, its assignment is lost: its run, left without partitions, is
 * cancelled at once (the vector topic still has no leader), counted
 * `cancelled`, and the partitions the group gives T1 back start a new run.
 * Once the topic answers, each trainer installs exactly the records of the
 * cities it owns at the end (nothing for a partition it lost), nothing stays
 * paused, and the clicks of every city are trained once. */
TEST(vboot_lost_assignment_cancels_the_run)
{
    enum { CLICKS = 600 };
    static const char *const topics[] = {"--topic", "clicks", "--topic", "clicks.dlq", NULL};
    char dir[64];
    e2e_broker b;
    e2e_daemon t1, t2;
    json_t *s;
    unsigned all = (1u << BP) - 1;
    snprintf(dir, sizeof dir, "/tmp/rc-vboot-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    e2e_broker_start(&b, 2, topics);
    broker_ok(&b, "create clicks.by-city 4");
    broker_ok(&b, "create clicks.vectors 1");
    fill_vectors(b.bootstrap, "clicks.vectors");
    broker_ok(&b, "leader clicks.vectors 0 -1");

    start_trainer(&t1, dir, "t1", b.bootstrap);
    WAIT_STATS(&t1, "t1 holds its four partitions",
               assignment(s) == all && running(s) && B("paused") == BP);
    json_decref(s);
    start_trainer(&t2, dir, "t2", b.bootstrap);
    WAIT_STATS(&t2, "t2 holds two partitions", bits(assignment(s)) == 2 && B("paused") == 2);
    unsigned p2 = assignment(s);
    json_decref(s);
    WAIT_STATS(&t1, "t1 keeps two", assignment(s) == (all & ~p2) && B("paused") == 2);
    json_decref(s);

    ASSERT_EQ(kill(t1.pid, SIGSTOP), 0);
    WAIT_STATS(&t2, "t2 takes everything", assignment(s) == all && B("paused") == BP);
    ASSERT(running(s));
    ASSERT_EQ(B("runs"), 0);
    json_decref(s);
    ASSERT_EQ(kill(t1.pid, SIGCONT), 0);
    /* the vector topic has no leader yet: only the cancel ends t1's run */
    WAIT_STATS(&t1, "t1's run cancelled", B("cancelled") == 1 && B("runs") >= 1);
    ASSERT_EQ(B("revoked"), 4);
    ASSERT_EQ(B("installed"), 0);
    json_decref(s);
    /* the group gives t1 two back: held for its next run, and t2 lets them go */
    WAIT_STATS(&t1, "t1 holds two again", bits(assignment(s)) == 2 && B("paused") == 2);
    unsigned p1 = assignment(s);
    json_decref(s);
    WAIT_STATS(&t2, "t2 keeps two", assignment(s) == (all & ~p1) && B("paused") == 2);
    json_decref(s);

    broker_ok(&b, "leader clicks.vectors 0 1");
    unsigned a1 = 0, a2 = 0;
    long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    for (;;) {
        json_t *s1 = e2e_request(t1.sock, "{\"op\":\"stats\"}");
        json_t *s2 = e2e_request(t2.sock, "{\"op\":\"stats\"}");
        a1 = assignment(s1);
        a2 = assignment(s2);
        s = s1;
        int q1 = !running(s) && B("paused") == 0 && e2e_int(s, "index.pending") == 0;
        s = s2;
        int q2 = !running(s) && B("paused") == 0 && e2e_int(s, "index.pending") == 0;
        json_decref(s1);
        json_decref(s2);
        if (q1 && q2 && a1 == p1 && a2 == (all & ~p1))
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL("trainers not settled: %#x and %#x, quiet %d %d", a1, a2, q1, q2);
        ms_sleep(200);
    }
    s = e2e_request(t1.sock, "{\"op\":\"stats\"}");
    fprintf(stderr, "t1 %#x: %lld runs, %lld cancelled, %lld revoked, %lld installed\n", a1,
            B("runs"), B("cancelled"), B("revoked"), B("installed"));
    ASSERT_EQ(B("installed"), records_of(a1));
    ASSERT_EQ(B("skipped"), 0);
    ASSERT_EQ(B("dropped"), 0);
    ASSERT_EQ(B("cancelled"), 1);
    ASSERT_EQ(e2e_int(s, "items"), records_of(a1));
    long long done = done_events(s);
    json_decref(s);
    s = e2e_request(t2.sock, "{\"op\":\"stats\"}");
    fprintf(stderr, "t2 %#x: %lld runs, %lld cancelled, %lld revoked, %lld installed\n", a2,
            B("runs"), B("cancelled"), B("revoked"), B("installed"));
    ASSERT_EQ(B("installed"), records_of(a2));
    ASSERT_EQ(B("skipped"), 0);
    ASSERT_EQ(e2e_int(s, "items"), records_of(a2));
    done += done_events(s);
    json_decref(s);

    produce_clicks(b.bootstrap, CLICKS);
    deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    for (long long now_done = 0;;) {
        json_t *s1 = e2e_request(t1.sock, "{\"op\":\"stats\"}");
        json_t *s2 = e2e_request(t2.sock, "{\"op\":\"stats\"}");
        now_done = done_events(s1) + done_events(s2);
        int quiet = caught_up(s1) && caught_up(s2) && e2e_int(s1, "kafka.repartition.lag") == 0 &&
                    e2e_int(s2, "kafka.repartition.lag") == 0;
        json_decref(s1);
        json_decref(s2);
        if (quiet && now_done >= done + CLICKS) {
            ASSERT_EQ(now_done, done + CLICKS);
            break;
        }
        if (e2e_now_ms() > deadline)
            RC__FAIL("clicks not all trained: %lld of %d", now_done - done, CLICKS);
        ms_sleep(200);
    }
    ASSERT_EQ(e2e_stop(&t1), 0);
    ASSERT_EQ(e2e_stop(&t2), 0);
    cleanup(t1.dir);
    cleanup(t2.dir);
    e2e_broker_stop(&b);
    cleanup(dir);
}

/* ---- installing: the run's records handed to the trainer batch by batch ----
 * In process: the embedded mock cluster (clicks.by-city and clicks.vectors,
 * four partitions each), a trainer engine of two batches of 16, and the
 * bootstrap driven directly. The test's done callback feeds the bootstrap
 * only when told, so a run stops after two batches and the assignment can
 * change while it installs, deterministically. */

struct inst {
    rc_engine *e;
    rc_vboot *v;
    int feed, done;
};

static void inst_done(void *ud, const rc_invalid *inv, size_t n)
{
    (void)inv;
    (void)n;
    struct inst *x = ud;
    x->done++;
    if (x->feed)
        rc_vboot_feed(x->v);
}

static int no_batch(void *ud, const rc_kmsg *m, size_t n)
{
    (void)ud;
    (void)m;
    (void)n;
    return 0;
}

static int item_cmp(const void *a, const void *b) { return strcmp(a, b); }

/* The items i0.. in the order a run hands them (by id bytes). */
static void sorted_items(char (*ids)[8])
{
    for (int k = 0; k < CITIES * PER; k++)
        snprintf(ids[k], 8, "i%d", k);
    qsort(ids, CITIES * PER, 8, item_cmp);
}

/* Of the sorted items from `from` on, those of partition p. */
static long long tail_of(char (*ids)[8], long long from, int p)
{
    long long n = 0;
    for (long long i = from; i < CITIES * PER; i++)
        n += city_part(atoi(ids[i] + 1) % CITIES) == p;
    return n;
}

struct stall {
    struct inst *x;
    int until;
};

static int stalled(void *ud)
{
    struct stall *s = ud;
    return s->x->done >= s->until;
}

static int run_over(void *ud)
{
    struct inst *x = ud;
    rc_vboot_stats st;
    rc_vboot_stats_get(x->v, &st);
    return !st.running;
}

static uint64_t engine_records(rc_engine *e)
{
    rc_engine_install_stats is;
    rc_engine_install_stats_get(e, &is);
    return is.records;
}

/* A run installing (two batches handed, the rest held) loses one of its
 * four partitions: the rest of that partition's records is dropped, not
 * handed (`dropped` = exactly its records after the two batches), the other
 * three are installed whole, and the run resumes. A second run, of that
 * partition given back, loses it again while installing: cancelled, the rest
 * dropped. A third, stopped while installing, is abandoned: nothing more is
 * handed and everything is freed (ASan). */
TEST(vboot_revoked_while_installing)
{
    enum { B = 16, NB = 2 };
    static char ids[CITIES * PER][8];
    static const char *const more[] = {"clicks.vectors", NULL};
    uv_loop_t loop;
    char err[256] = "";
    rc_config c;
    rc_config_defaults(&c);
    c.role = RC_ROLE_TRAINER;
    c.queue_batches = NB;
    c.kafka_batch = B;
    struct inst x = {0};
    x.e = e2e_engine_threaded(&c, &loop, inst_done, &x);
    rc_consumer_opts co = {.topic = "clicks.by-city",
                           .embedded = 1,
                           .embedded_partitions = BP,
                           .embedded_topics = more,
                           .on_batch = no_batch};
    rc_consumer *cons = NULL;
    if (rc_consumer_start(&loop, &co, &cons, err, sizeof err) != 0)
        RC__FAIL("consumer: %s", err);
    fill_vectors(rc_consumer_bootstrap(cons), "clicks.vectors");
    rc_vboot_opts vo = {.loop = &loop,
                        .brokers = rc_consumer_bootstrap(cons),
                        .vtopic = "clicks.vectors",
                        .bytopic = "clicks.by-city",
                        .engine = x.e,
                        .consumer = cons,
                        .dim = DIM,
                        .timeout_ms = (uint32_t)e2e_scaled_ms(120000)};
    if (rc_vboot_create(&vo, &x.v, err, sizeof err) != 0)
        RC__FAIL("vboot: %s", err);
    sorted_items(ids);
    const int32_t all[BP] = {0, 1, 2, 3};
    int32_t p = (int32_t)city_part(0), q = (p + 1) % BP;
    long long n = CITIES * PER;
    rc_vboot_stats st;

    /* run 1: four partitions, one revoked after two batches */
    rc_vboot_rebalance(x.v, 1, all, BP);
    struct stall sl = {&x, NB};
    e2e_loop_until(&loop, stalled, &sl, 120000, "run 1 hands its first batches");
    rc_vboot_stats_get(x.v, &st);
    ASSERT(st.running);
    ASSERT_EQ(st.paused, BP);
    uint64_t s1 = engine_records(x.e); /* handed before the revoke: NB batches */
    ASSERT_EQ(s1, NB * B);
    rc_vboot_rebalance(x.v, 0, &p, 1);
    rc_vboot_stats_get(x.v, &st);
    ASSERT_EQ(st.paused, BP - 1);
    ASSERT_EQ(st.revoked, 1);
    x.feed = 1;
    rc_vboot_feed(x.v);
    e2e_loop_until(&loop, run_over, &x, 120000, "run 1 ends");
    rc_engine_sync(x.e);
    rc_vboot_stats_get(x.v, &st);
    long long drop1 = tail_of(ids, (long long)s1, p);
    fprintf(stderr, "run 1: %llu matched, %llu handed, %llu dropped (partition %d)\n",
            (unsigned long long)st.matched, (unsigned long long)st.handed,
            (unsigned long long)st.dropped, (int)p);
    ASSERT_GT(drop1, 0);
    ASSERT_EQ(st.runs, 1);
    ASSERT_EQ(st.matched, n);
    ASSERT_EQ(st.dropped, drop1);
    ASSERT_EQ(st.handed, n - drop1);
    ASSERT_EQ(st.cancelled, 0);
    ASSERT_EQ(st.paused, 0);
    ASSERT_EQ(engine_records(x.e), n - drop1);

    /* run 2: the partition given back, revoked again while installing */
    x.feed = 0;
    x.done = 0;
    rc_vboot_rebalance(x.v, 1, &p, 1);
    e2e_loop_until(&loop, stalled, &sl, 120000, "run 2 hands its first batches");
    ASSERT_EQ(engine_records(x.e), n - drop1 + NB * B);
    rc_vboot_rebalance(x.v, 0, &p, 1);
    x.feed = 1;
    rc_vboot_feed(x.v);
    e2e_loop_until(&loop, run_over, &x, 120000, "run 2 ends");
    rc_engine_sync(x.e);
    rc_vboot_stats_get(x.v, &st);
    ASSERT_EQ(st.runs, 2);
    ASSERT_EQ(st.cancelled, 1);
    ASSERT_EQ(st.revoked, 2);
    ASSERT_EQ(st.dropped, drop1 + records_of(1u << p) - NB * B);
    ASSERT_EQ(st.paused, 0);
    ASSERT_EQ(engine_records(x.e), n - drop1 + NB * B);

    /* run 3: stopped while installing */
    x.feed = 0;
    x.done = 0;
    rc_vboot_rebalance(x.v, 1, &q, 1);
    e2e_loop_until(&loop, stalled, &sl, 120000, "run 3 hands its first batches");
    rc_vboot_stop(x.v);
    rc_vboot_stop(x.v);                /* idempotent */
    rc_vboot_rebalance(x.v, 1, &p, 1); /* ignored once stopping */
    x.feed = 1;
    rc_vboot_feed(x.v);
    rc_engine_sync(x.e);
    rc_vboot_stats_get(x.v, &st);
    ASSERT_EQ(st.abandoned, 1);
    ASSERT_EQ(st.runs, 2);
    ASSERT_EQ(engine_records(x.e), n - drop1 + 2 * NB * B); /* nothing after the stop */
    rc_vboot_destroy(x.v);
    x.v = NULL;
    x.feed = 0;
    rc_consumer_close(cons, NULL, NULL);
    rc_consumer_destroy(cons);
    e2e_engine_threaded_close(x.e, &loop);
}
