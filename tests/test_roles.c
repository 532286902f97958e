/* Roles, end to end (docs/DESIGN.md "Roles and replicas"): a trainer
 * publishes its vectors to <topic>.vectors, a replica serves from that topic
 * and the click topic's sessions, through the real binaries on
 * recalld-broker. Every wait is on a condition (scaled timeouts). */
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/event.h"
#include "recalld/metrics.h"
#include "recalld/repart.h"
#include "recalld/srcpos.h"
#include "recalld/table.h"
#include "recalld/vec.h"
#include "recalld/vecpub.h"
#include "test.h"

#define PARTS 4
#define DIM   64 /* the daemon's default model.dim */

static const char *const broker_topics[] = {"--topic",    "clicks",         "--topic",
                                            "clicks.dlq", "--topic",        "clicks.vectors",
                                            "--topic",    "clicks.by-city", NULL};

static void ms_sleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static void mkdir_tmp(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/rc-roles-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
}

static void cleanup(const char *dir) { ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0); }

/* recalld --role ROLE on brokers with config DIR/<name>.json (replay off: the
 * trainer's model stands still once the stream is applied) and, when data is
 * not NULL, data_dir DIR/<name>. */
static void start_role(e2e_daemon *d, const char *dir, const char *name, const char *role,
                       const char *brokers, char *data, size_t datalen)
{
    char conf[256];
    snprintf(conf, sizeof conf, "%s/%s.json", dir, name);
    e2e_write_file(conf, "{\"train\":{\"replay_ratio\":0}}");
    const char *extra[8] = {"--config", conf, "--role", role, NULL};
    if (data) {
        snprintf(data, datalen, "%s/%s", dir, name);
        extra[4] = "--data-dir";
        extra[5] = data;
        extra[6] = NULL;
    }
    e2e_opts o = {.brokers = brokers, .extra = extra};
    e2e_start_opts(d, &o);
}

/* Waits until the trainer applied `events` and has nothing left to publish
 * (no row marked, no record undelivered) with its index flushed. */
static json_t *wait_published(const e2e_daemon *t, long long events)
{
    json_decref(e2e_wait_done(t->sock, (uint64_t)events, 120000));
    e2e_wait_model_still(t->sock);
    long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    for (;;) {
        json_t *st = e2e_request(t->sock, "{\"op\":\"stats\"}");
        if (e2e_int(st, "events.applied") >= events && e2e_int(st, "kafka.vectors.pending") == 0 &&
            e2e_int(st, "kafka.vectors.inflight") == 0 && e2e_int(st, "index.pending") == 0)
            return st;
        if (e2e_now_ms() > deadline)
            RC__FAIL("trainer: %lld rows still marked, %lld records in flight (log %s)",
                     e2e_int(st, "kafka.vectors.pending"), e2e_int(st, "kafka.vectors.inflight"),
                     t->log);
        json_decref(st);
        ms_sleep(100);
    }
}

/* The newest record of each generated item ("i<index>") in the vector topic. */
typedef struct newest {
    uint64_t version; /* 0 = no record */
    uint32_t count;
    char city[64], cate[64];
    float vec[DIM];
} newest;

struct newest_read {
    newest *out;
    uint32_t nitems;
    uint64_t records;
};

static void newest_message(void *ud, const rd_kafka_message_t *m)
{
    struct newest_read *nr = ud;
    rc_vecrec r;
    float v[DIM];
    ASSERT_EQ(rc_vecrec_decode(m->payload, m->len, &r, v, NULL, DIM), 0);
    ASSERT_EQ(r.flags, RC_VECREC_F_OUT); /* trainers publish the output vector */
    ASSERT_EQ(r.dim, DIM);
    /* the key is the item id (compaction keeps one record per key) */
    ASSERT(m->key_len == r.item_len && memcmp(m->key, r.item, r.item_len) == 0);
    char id[32];
    ASSERT(r.item_len < sizeof id && r.item[0] == 'i');
    memcpy(id, r.item, r.item_len);
    id[r.item_len] = '\0';
    uint32_t idx = (uint32_t)atol(id + 1);
    ASSERT(idx < nr->nitems);
    newest *n = &nr->out[idx];
    if (r.version > n->version) {
        n->version = r.version;
        n->count = r.count;
        snprintf(n->city, sizeof n->city, "%.*s", (int)r.city_len, r.city);
        snprintf(n->cate, sizeof n->cate, "%.*s", (int)r.cate_len, r.cate);
        memcpy(n->vec, v, sizeof v);
    }
    nr->records++;
}

static uint64_t read_vector_topic(const char *brokers, newest *out, uint32_t nitems)
{
    struct newest_read nr = {out, nitems, 0};
    memset(out, 0, nitems * sizeof *out);
    /* nothing deleted by retention at this size */
    ASSERT_EQ(e2e_topic_read(brokers, "clicks.vectors", PARTS, newest_message, &nr), 0);
    return nr.records;
}

/* A trainer publishes: once the stream is applied and the publisher drained,
 * <topic>.vectors holds a record for every item of the trainer's table, and
 * the newest one per item carries exactly the vector, count, city and
 * category of the trainer's final checkpoint. */
TEST(roles_trainer_publishes_every_item)
{
    const uint64_t N = 6000;
    char dir[64], data[256];
    e2e_broker b;
    e2e_daemon t;
    mkdir_tmp(dir, sizeof dir);
    e2e_broker_start(&b, PARTS, broker_topics);
    start_role(&t, dir, "t", "trainer", b.bootstrap, data, sizeof data);
    pid_t gen = e2e_gen_start(b.bootstrap, 31, N, 0, 0);
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    json_t *st = wait_published(&t, (long long)N);
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(st, "kafka"), "role")),
                 "trainer");
    long long published = e2e_int(st, "kafka.vectors.published");
    ASSERT_GE(published, e2e_int(st, "items"));
    ASSERT_EQ(e2e_int(st, "kafka.vectors.failed"), 0);
    /* Every mark was either coalesced into a waiting one or queued for a
     * record; how many coalesce depends on the batches' timing against the
     * publisher's ticks (none when each batch lands after a tick, as under
     * ThreadSanitizer on a loaded machine): roles_vecpub_coalesces_... */
    ASSERT_LE(e2e_int(st, "kafka.vectors.coalesced"), e2e_int(st, "kafka.vectors.marked"));
    json_decref(st);
    ASSERT_EQ(e2e_stop(&t), 0); /* the final checkpoint, and the publisher's last records */

    newest *top = calloc(E2E_GEN_ITEMS, sizeof *top);
    ASSERT(top != NULL);
    uint64_t records = read_vector_topic(b.bootstrap, top, E2E_GEN_ITEMS);
    rc_table *tab;
    rc_checkpoint_meta meta;
    e2e_checkpoint_open(data, &tab, &meta);
    uint32_t rows = rc_table_size(tab), with = 0;
    for (uint32_t r = 0; r < rows; r++) {
        size_t len;
        const char *id = rc_table_item_id(tab, r, &len);
        uint32_t idx = (uint32_t)atol(id + 1);
        ASSERT(idx < E2E_GEN_ITEMS);
        const newest *n = &top[idx];
        if (!n->version)
            RC__FAIL("item %.*s (row %u) has no record in clicks.vectors", (int)len, id, r);
        with++;
        if (memcmp(n->vec, rc_table_in(tab, r), sizeof n->vec) != 0)
            RC__FAIL("item %.*s: the newest record's vector is not the trainer's "
                     "(first component %g, trainer %g)",
                     (int)len, id, (double)n->vec[0], (double)rc_table_in(tab, r)[0]);
        ASSERT_EQ(n->count, rc_table_count(tab, r));
        ASSERT_STREQ(n->city, rc_table_city_name(tab, rc_table_city(tab, r)));
        ASSERT_STREQ(n->cate, rc_table_cate_name(tab, rc_table_cate(tab, r)));
    }
    fprintf(stderr, "trainer: %u items, %llu records in the topic (%lld published live)\n", rows,
            (unsigned long long)records, published);
    ASSERT_EQ(with, rows);
    ASSERT_GT(rows, 1000);
    rc_checkpoint_meta_free(&meta);
    rc_table_destroy(tab);
    free(top);
    e2e_broker_stop(&b);
    cleanup(t.dir);
    cleanup(dir);
}

/* Every number of a stats object has a row of the metrics table (its
 * /metrics family): the roles' new figures included. Returns the numbers. */
static int all_exported(json_t *o, char *path, size_t at)
{
    const char *key;
    json_t *v;
    int n = 0;
    json_object_foreach(o, key, v) {
        snprintf(path + at, 256 - at, "%s%s", at ? "." : "", key);
        if (json_is_object(v)) {
            n += all_exported(v, path, strlen(path));
            continue;
        }
        if (!json_is_number(v) && !json_is_boolean(v))
            continue;
        if (!rc_metrics_stat_find(path))
            RC__FAIL("stats number %s has no row in the metrics table (src/metrics_stats.c)", path);
        n++;
    }
    return n;
}

/* The assigned partitions of a daemon as a bit set, and its rebalances. */
static unsigned assignment(json_t *st)
{
    unsigned set = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(json_object_get(st, "kafka"), "partitions"), i, p)
        set |= 1u << json_integer_value(json_object_get(p, "partition"));
    return set;
}

/* Top-k item ids of a recall, with their scores. */
static size_t recall_ids(const char *sock, const char *user, const char *city, int exact,
                         char ids[][16], double *scores, size_t cap)
{
    char cityf[64] = "";
    if (city)
        snprintf(cityf, sizeof cityf, ",\"city\":\"%s\"", city);
    /* exact compares the vectors: "avg", since the fused mode's co-occurrence
     * channel is each process's own, ties broken by its row ids */
    json_t *r = e2e_request(sock, "{\"op\":\"recall\",\"user_id\":\"%s\",\"k\":50%s%s}", user,
                            cityf, exact ? ",\"exact\":true,\"mode\":\"avg\"" : "");
    ASSERT(json_is_true(json_object_get(r, "ok")));
    ASSERT(json_object_get(r, "fallback") == NULL); /* the user's clicks, not popularity */
    json_t *items = json_object_get(r, "items"), *it;
    size_t i, n = 0;
    json_array_foreach(items, i, it) {
        if (n == cap)
            break;
        snprintf(ids[n], 16, "%s", json_string_value(json_object_get(it, "item_id")));
        scores[n++] = json_real_value(json_object_get(it, "score"));
    }
    json_decref(r);
    return n;
}

/* Same answer: the same scores in order, and at each score the same ids
 * (items of equal score come in table-row order, which differs between the
 * processes); a tie group cut by k at the end may hold other ids. */
static int same_answer(char a[][16], const double *sa, size_t na, char b[][16], const double *sb,
                       size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (fabs(sa[i] - sb[i]) > 1e-6)
            return 0;
    for (size_t i = 0; i < na;) {
        size_t j = i;
        while (j < na && sa[j] == sa[i])
            j++;
        if (j < na) /* a whole group: the same ids in any order */
            for (size_t x = i; x < j; x++) {
                int found = 0;
                for (size_t y = i; y < j && !found; y++)
                    found = strcmp(a[x], b[y]) == 0;
                if (!found)
                    return 0;
            }
        i = j;
    }
    return 1;
}

/* A replica started after the stream: it bootstraps from the vector topic
 * (trains nothing), reads the clicks for sessions only in a group of its own
 * (the trainer's assignment does not move), shows its staleness, and answers
 * as the trainer does: the same exact top-50 for the same users, with and
 * without a city. */
/* A row marked again while it waits is coalesced: one record carries its
 * newest vector. Deterministic: the marks arrive in one call (under the
 * publisher's lock, so no tick takes the queue between them) and the next
 * tick is a minute away; the stop produces what waits. */
TEST(roles_vecpub_coalesces_marks_of_a_waiting_row)
{
    e2e_broker b;
    e2e_broker_start(&b, PARTS, broker_topics);
    rc_table_opts to = {.dim = DIM, .seed = 3};
    rc_table *t = NULL;
    uint32_t city, cate, row;
    int created;
    ASSERT_EQ(rc_table_create(&to, &t, NULL, 0), 0);
    ASSERT_EQ(rc_table_city_id(t, "c1", 2, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k1", 2, &cate), 0);
    for (uint32_t i = 0; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof id, "i%u", i);
        ASSERT_EQ(rc_table_upsert(t, id, strlen(id), city, cate, NULL, 0, &row, &created), 0);
    }
    rc_vecpub_opts po = {
        .brokers = b.bootstrap, .topic = "clicks.vectors", .table = t, .interval_ms = 60000};
    rc_vecpub *p = NULL;
    char err[256];
    ASSERT_EQ(rc_vecpub_start(&po, &p, err, sizeof err), 0);
    rc_vecpub_mark(p, (uint32_t[]){3, 3, 4, 3, 5, 4}, 6);
    rc_vecpub_stats st;
    rc_vecpub_stats_get(p, &st);
    ASSERT_EQ(st.marked, 6);
    ASSERT_EQ(st.coalesced, 3);
    ASSERT_EQ(st.pending + st.produced, 3); /* rows 3, 4, 5: one record each */
    rc_vecpub_stop(p, 10000);
    newest *top = calloc(E2E_GEN_ITEMS, sizeof *top);
    ASSERT(top != NULL);
    ASSERT_EQ(read_vector_topic(b.bootstrap, top, E2E_GEN_ITEMS), 3);
    ASSERT(top[3].version > 0 && top[4].version > 0 && top[5].version > 0);
    ASSERT(top[0].version == 0 && top[1].version == 0 && top[2].version == 0);
    free(top);
    rc_table_destroy(t);
    e2e_broker_stop(&b);
}

TEST(roles_replica_bootstraps_and_answers_as_the_trainer)
{
    const uint64_t N = 6000;
    char dir[64];
    e2e_broker b;
    e2e_daemon t, r;
    mkdir_tmp(dir, sizeof dir);
    e2e_broker_start(&b, PARTS, broker_topics);
    start_role(&t, dir, "t", "trainer", b.bootstrap, NULL, 0);
    pid_t gen = e2e_gen_start(b.bootstrap, 37, N, 0, 0);
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    json_t *ts = wait_published(&t, (long long)N);
    unsigned before = assignment(ts);
    long long rebalances = e2e_int(ts, "kafka.rebalances");
    ASSERT_EQ(before, (1u << PARTS) - 1);

    start_role(&r, dir, "r", "replica", b.bootstrap, NULL, 0);
    json_t *rs = NULL;
    for (long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);; ms_sleep(100)) {
        json_decref(rs);
        rs = e2e_request(r.sock, "{\"op\":\"stats\"}");
        if (e2e_int(rs, "items") == e2e_int(ts, "items") &&
            e2e_int(rs, "events.applied") == (long long)N &&
            e2e_int(rs, "replica.staleness_ms") == 0 && e2e_int(rs, "index.pending") == 0)
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL("replica: %lld items (trainer %lld), %lld clicks in sessions, staleness "
                     "%lld ms (log %s)",
                     e2e_int(rs, "items"), e2e_int(ts, "items"), e2e_int(rs, "events.applied"),
                     e2e_int(rs, "replica.staleness_ms"), r.log);
    }
    fprintf(stderr,
            "replica: %lld records read, %lld applied, %lld stale; publish -> applied p50 %lld "
            "ms p99 %lld ms (bootstrap: records published before the replica started)\n",
            e2e_int(rs, "replica.records"), e2e_int(rs, "replica.applied"),
            e2e_int(rs, "replica.stale"), e2e_int(rs, "replica.publish_to_applied_ms.p50"),
            e2e_int(rs, "replica.publish_to_applied_ms.p99"));
    ASSERT_EQ(e2e_int(rs, "training.pairs"), 0); /* no click trained */
    ASSERT_GE(e2e_int(rs, "replica.applied"), e2e_int(ts, "items"));
    ASSERT_GT(e2e_int(rs, "replica.newest_publish_ms"), 0);
    ASSERT_EQ(e2e_int(rs, "kafka.vectors.assigned"), PARTS);
    ASSERT_EQ(e2e_int(rs, "kafka.vectors.lost"), 0);
    const char *rg = json_string_value(json_object_get(json_object_get(rs, "kafka"), "group"));
    ASSERT(rg && strncmp(rg, "recalld.replica.", 16) == 0);
    ASSERT_EQ(assignment(rs), (1u << PARTS) - 1); /* every click partition, in its own group */
    char path[256] = "";
    json_object_del(rs, "ok");
    json_object_del(ts, "ok");
    ASSERT_GT(all_exported(rs, path, 0), 100);
    ASSERT_GT(all_exported(ts, path, 0), 100);
    json_decref(rs);
    /* the trainer's group did not see the replica */
    json_t *ts2 = e2e_request(t.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(assignment(ts2), before);
    ASSERT_EQ(e2e_int(ts2, "kafka.rebalances"), rebalances);
    json_decref(ts2);
    json_decref(ts);

    /* The same answers for users with the same recent clicks. The trainer's
     * sessions come from <topic>.by-city, where a user's clicks in two cities
     * arrive from two partitions, interleaved as fetched (and a click older
     * than its session is counted late, not kept); the replica's come from the
     * click topic in order. So a user whose session holds the same clicks on
     * both gets the same answer, and only users with clicks in more than one
     * city may hold different ones (DESIGN.md "Trainer shards"). */
    static char ia[50][16], ib[50][16];
    double sa[50], sb[50];
    int users = 0, same_clicks = 0, same_exact = 0, same_city = 0;
    double overlap = 0;
    for (int u = 0; u < E2E_GEN_USERS && users < 100; u++) {
        char user[16], city[64] = "";
        snprintf(user, sizeof user, "u%d", u);
        json_t *q = e2e_request(t.sock, "{\"op\":\"user\",\"user_id\":\"%s\"}", user);
        json_t *qr = e2e_request(r.sock, "{\"op\":\"user\",\"user_id\":\"%s\"}", user);
        json_t *clicks = json_object_get(q, "clicks");
        int cities = 0;
        if (json_array_size(clicks) >= 2) {
            json_t *last = json_array_get(clicks, json_array_size(clicks) - 1);
            snprintf(city, sizeof city, "%s", json_string_value(json_object_get(last, "city")));
            size_t x;
            json_t *c;
            cities = 1;
            json_array_foreach(json_object_get(qr, "clicks"), x, c)
                cities += strcmp(json_string_value(json_object_get(c, "city")), city) != 0;
        }
        int same = json_equal(clicks, json_object_get(qr, "clicks"));
        json_decref(q);
        json_decref(qr);
        if (!city[0])
            continue;
        users++;
        if (!same) {
            if (cities < 2)
                RC__FAIL("%s: clicks in one city differ between the trainer and the replica", user);
            continue;
        }
        same_clicks++;
        size_t na = recall_ids(t.sock, user, NULL, 1, ia, sa, 50);
        size_t nb = recall_ids(r.sock, user, NULL, 1, ib, sb, 50);
        same_exact += same_answer(ia, sa, na, ib, sb, nb);
        na = recall_ids(t.sock, user, city, 1, ia, sa, 50);
        nb = recall_ids(r.sock, user, city, 1, ib, sb, 50);
        same_city += same_answer(ia, sa, na, ib, sb, nb);
        /* the default scope (the live index), reported */
        na = recall_ids(t.sock, user, NULL, 0, ia, sa, 50);
        nb = recall_ids(r.sock, user, NULL, 0, ib, sb, 50);
        size_t common = 0;
        for (size_t x = 0; x < na; x++)
            for (size_t y = 0; y < nb; y++)
                common += strcmp(ia[x], ib[y]) == 0;
        overlap += na ? (double)common / (double)na : 1.0;
    }
    fprintf(stderr,
            "%d users, %d with the same recent clicks on both: exact top-50 equal for %d (with "
            "the user's city: %d); default scope (live index) top-50 overlap %.4f\n",
            users, same_clicks, same_exact, same_city, same_clicks ? overlap / same_clicks : 0);
    ASSERT_EQ(users, 100);
    ASSERT_GE(same_clicks, 80);
    ASSERT_EQ(same_exact, same_clicks);
    ASSERT_EQ(same_city, same_clicks);
    ASSERT_EQ(e2e_stop(&r), 0);
    ASSERT_EQ(e2e_stop(&t), 0);
    e2e_broker_stop(&b);
    cleanup(r.dir);
    cleanup(t.dir);
    cleanup(dir);
}

/* The record round-trips with and without its output vector (a reader of
 * either kind takes both), and what is not a record is refused. */
TEST(roles_vector_record_round_trip)
{
    float v[DIM], o[DIM], back[DIM], oback[DIM];
    for (int i = 0; i < DIM; i++) {
        v[i] = (float)i * -0.25f + 1e-7f;
        o[i] = (float)i * 0.5f - 3.0f;
    }
    rc_buf b;
    rc_buf_init(&b, 0);
    ASSERT_EQ(rc_vecrec_encode(&b, "i42", 3, "c1", 2, "k3", 2, 7, 123456789012345ull, 1700000000123,
                               v, NULL, DIM),
              0);
    ASSERT_EQ(b.len, RC_VECREC_HEADER + 3 + 2 + 2 + DIM * 4);
    rc_vecrec r;
    memset(oback, 0x7f, sizeof oback);
    ASSERT_EQ(rc_vecrec_decode(b.data, b.len, &r, back, oback, DIM), 0);
    ASSERT(r.item_len == 3 && memcmp(r.item, "i42", 3) == 0);
    ASSERT(r.city_len == 2 && memcmp(r.city, "c1", 2) == 0);
    ASSERT(r.cate_len == 2 && memcmp(r.cate, "k3", 2) == 0);
    ASSERT_EQ(r.count, 7);
    ASSERT_EQ(r.version, 123456789012345ull);
    ASSERT_EQ(r.publish_ms, 1700000000123);
    ASSERT_EQ(r.dim, DIM);
    ASSERT_EQ(r.flags, 0);
    ASSERT(memcmp(v, back, sizeof v) == 0);
    ASSERT_EQ(((unsigned char *)oback)[0], 0x7f); /* no output vector: untouched */
    ASSERT_EQ(rc_vecrec_decode(b.data, b.len - 1, &r, back, NULL, DIM), RC_EINVAL); /* short */
    ASSERT_EQ(rc_vecrec_decode(b.data, b.len, &r, back, NULL, DIM - 8), RC_E2BIG);
    b.data[0] = 'X';
    ASSERT_EQ(rc_vecrec_decode(b.data, b.len, &r, back, NULL, DIM), RC_EINVAL); /* magic */
    /* with the output vector */
    rc_buf_reset(&b);
    ASSERT_EQ(rc_vecrec_encode(&b, "i42", 3, "c1", 2, "k3", 2, 7, 5, 6, v, o, DIM), 0);
    ASSERT_EQ(b.len, RC_VECREC_HEADER + 3 + 2 + 2 + 2 * DIM * 4);
    ASSERT_EQ(rc_vecrec_decode(b.data, b.len, &r, back, oback, DIM), 0);
    ASSERT_EQ(r.flags, RC_VECREC_F_OUT);
    ASSERT(memcmp(v, back, sizeof v) == 0 && memcmp(o, oback, sizeof o) == 0);
    memset(back, 0, sizeof back);
    ASSERT_EQ(rc_vecrec_decode(b.data, b.len, &r, back, NULL, DIM), 0); /* a replica's read */
    ASSERT(memcmp(v, back, sizeof v) == 0);
    ASSERT_EQ(rc_vecrec_decode(b.data, b.len - 4, &r, back, oback, DIM), RC_EINVAL);
    b.data[9] |= 0x80; /* a flag this reader does not know: cannot size the record */
    ASSERT_EQ(rc_vecrec_decode(b.data, b.len, &r, back, oback, DIM), RC_EINVAL);
    rc_buf_free(&b);
}

/* Submits one vector record of item to a replica engine (offline). */
static void submit_record(rc_engine *e, const char *item, const char *city, uint32_t count,
                          uint64_t version, int64_t publish_ms, float fill)
{
    float v[DIM];
    for (int i = 0; i < DIM; i++)
        v[i] = fill + (float)i / DIM;
    rc_buf rec;
    rc_buf_init(&rec, 0);
    ASSERT_EQ(rc_vecrec_encode(&rec, item, strlen(item), city, strlen(city), "k1", 2, count,
                               version, publish_ms, v, NULL, DIM),
              0);
    rc_batch *b = rc_engine_batch_get(e);
    ASSERT(b != NULL);
    rc_engine_batch_set_vectors(b);
    ASSERT_EQ(rc_engine_batch_add(b, rec.data, rec.len, 0, 0), 0);
    rc_engine_submit(e, b);
    rc_engine_sync(e);
    rc_buf_free(&rec);
}

/* A replica's engine: the newest version wins (an older or repeated record is
 * counted stale and changes nothing), the record's count and vector are the
 * row's; a click only enters the session (nothing trained, no count); the
 * staleness is the age of the newest record applied until the vector topic is
 * caught up, then 0. */
TEST(roles_replica_engine_versions_and_staleness)
{
    rc_config c;
    rc_config_defaults(&c);
    c.role = RC_ROLE_REPLICA;
    rc_engine *e = e2e_engine_offline(&c);
    int64_t old_ms = rc_wall_ms() - 60000; /* published a minute ago */
    submit_record(e, "i1", "c1", 5, 100, old_ms, 1.0f);
    submit_record(e, "i1", "c1", 3, 99, old_ms, 2.0f);  /* older: ignored */
    submit_record(e, "i1", "c1", 5, 100, old_ms, 3.0f); /* a repeat: ignored */
    submit_record(e, "i2", "c1", 1, 7, old_ms - 1000, 0.5f);
    const rc_table *t = rc_engine_table(e);
    uint32_t row;
    ASSERT_EQ(rc_table_find(t, "i1", 2, &row), 0);
    ASSERT_EQ(rc_table_count(t, row), 5);
    ASSERT(fabsf(rc_table_in(t, row)[0] - 1.0f) < 1e-6f); /* version 100's vector */
    json_t *st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "replica.applied"), 2);
    ASSERT_EQ(e2e_int(st, "replica.stale"), 2);
    ASSERT_EQ(e2e_int(st, "replica.newest_publish_ms"), old_ms);
    ASSERT_GE(e2e_int(st, "replica.staleness_ms"), 60000); /* lag unknown: the record's age */
    json_decref(st);
    submit_record(e, "i1", "c1", 6, 101, old_ms + 1, 4.0f); /* newer: applied */
    ASSERT_EQ(rc_table_count(t, row), 6);
    ASSERT(fabsf(rc_table_in(t, row)[0] - 4.0f) < 1e-6f);
    rc_engine_set_vector_lag(e, 0); /* caught up with the vector topic */
    /* clicks: sessions only */
    const char *l1 = "{\"user_id\":\"u1\",\"item_id\":\"i1\",\"city_id\":\"c1\",\"cate_id\":\"k1\","
                     "\"ts\":1700000000000}";
    const char *l2 = "{\"user_id\":\"u1\",\"item_id\":\"i2\",\"city_id\":\"c1\",\"cate_id\":\"k1\","
                     "\"ts\":1700000001000}";
    ASSERT_EQ(rc_engine_apply_line(e, l1, strlen(l1)), RC_EV_OK);
    ASSERT_EQ(rc_engine_apply_line(e, l2, strlen(l2)), RC_EV_OK);
    st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "replica.staleness_ms"), 0);
    ASSERT_EQ(e2e_int(st, "events.applied"), 2);
    ASSERT_EQ(e2e_int(st, "training.pairs"), 0);
    ASSERT_EQ(e2e_int(st, "users.active"), 1);
    json_decref(st);
    ASSERT_EQ(rc_table_count(t, row), 6); /* the trainers count clicks, not the replica */
    rc_engine_destroy(e);
}

/* Submits install records to a trainer's engine (offline): item, count,
 * input vector filled with fin, output vector with fout (NaN: none). */
static void submit_install(rc_engine *e, const char *item, uint32_t count, float fin, float fout)
{
    float v[DIM], o[DIM];
    for (int i = 0; i < DIM; i++) {
        v[i] = fin + (float)i / DIM;
        o[i] = fout - (float)i / DIM;
    }
    rc_buf rec;
    rc_buf_init(&rec, 0);
    ASSERT_EQ(rc_vecrec_encode(&rec, item, strlen(item), "c1", 2, "k1", 2, count, 1, 1, v,
                               isnan(fout) ? NULL : o, DIM),
              0);
    rc_batch *b = rc_engine_batch_get(e);
    ASSERT(b != NULL);
    rc_engine_batch_set_install(b);
    ASSERT_EQ(rc_engine_batch_add(b, rec.data, rec.len, -1, -1), 0);
    ASSERT_EQ(rc_engine_batch_add(b, "not a record", 12, -1, -1), 0);
    rc_engine_submit(e, b);
    rc_engine_sync(e);
    rc_buf_free(&rec);
}

/* A trainer installs a record's row (input and output vectors, count) when
 * it does not hold the item or holds it with a lower count, keeps its own row
 * otherwise, refuses what is not a record, and indexes what it installed. */
TEST(roles_trainer_engine_installs_records)
{
    rc_config c;
    rc_config_defaults(&c);
    c.role = RC_ROLE_TRAINER;
    rc_engine *e = e2e_engine_offline(&c);
    const rc_table *t = rc_engine_table(e);
    uint32_t row;
    submit_install(e, "i1", 40, 1.0f, -2.0f);
    ASSERT_EQ(rc_table_find(t, "i1", 2, &row), 0);
    ASSERT_EQ(rc_table_count(t, row), 40);
    ASSERT(fabsf(rc_table_in(t, row)[0] - 1.0f) < 1e-6f);
    ASSERT(fabsf(rc_table_out(t, row)[0] + 2.0f) < 1e-6f);
    ASSERT(fabsf(rc_table_out(t, row)[DIM - 1] + 2.0f + (float)(DIM - 1) / DIM) < 1e-6f);
    submit_install(e, "i1", 40, 5.0f, 5.0f); /* held with as many clicks: kept */
    ASSERT(fabsf(rc_table_in(t, row)[0] - 1.0f) < 1e-6f);
    submit_install(e, "i1", 41, 3.0f, NAN); /* more clicks, no output vector: the row's stays */
    ASSERT_EQ(rc_table_count(t, row), 41);
    ASSERT(fabsf(rc_table_in(t, row)[0] - 3.0f) < 1e-6f);
    ASSERT(fabsf(rc_table_out(t, row)[0] + 2.0f) < 1e-6f);
    json_t *st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "index.size"), 1);
    ASSERT_EQ(e2e_int(st, "items"), 1);
    json_decref(st);
    rc_engine_install_stats is;
    rc_engine_install_stats_get(e, &is);
    ASSERT_EQ(is.records, 6);
    ASSERT_EQ(is.installed, 2);
    ASSERT_EQ(is.kept, 1);
    ASSERT_EQ(is.invalid, 3);
    ASSERT_EQ(is.count, 41);
    /* similar answers from the installed vector */
    submit_install(e, "i2", 3, 3.0f, 0.0f);
    rc_hit h[2];
    uint32_t n = 0;
    ASSERT_EQ(rc_engine_similar(e, "i1", 2, 2, h, &n), 0);
    ASSERT_EQ(n, 1);
    rc_engine_destroy(e);
}

/* ---- trainer shards: the click stream repartitioned by city ---- */

#define SPARTS 8 /* partitions of the click topic */
#define BPARTS                                                                                     \
    3 /* of clicks.by-city: the generator's cities c0..c3 fall into 0, 2, 1, 2                     \
       * (murmur2 of the key, as librdkafka's and Java's partitioners) */
#define NSHARD 3

static const char *const shard_topics[] = {"--topic", "clicks",         "--topic", "clicks.dlq",
                                           "--topic", "clicks.vectors", NULL};

/* recalld-broker with clicks.by-city of BPARTS partitions. */
static void start_shard_broker(e2e_broker *b)
{
    e2e_broker_start(b, SPARTS, shard_topics);
    char *reply = e2e_broker_cmd(b, "create clicks.by-city %d", BPARTS);
    ASSERT(strncmp(reply, "ok", 2) == 0);
    free(reply);
}

/* recalld --role trainer with its own data dir; checkpoints only at revokes
 * and at stop (checkpoint.interval_ms 0), replay off, and no bootstrap of
 * newly assigned cities (vectors.bootstrap false): these tests count every
 * click in exactly one checkpoint, which a new owner's bootstrap breaks on
 * purpose (it inherits the counts of the rows it installs;
 * roles_shard_killed_survivor_bootstraps_its_cities tests it). */
static void start_shard(e2e_daemon *d, const char *dir, int i, const char *brokers, char *data,
                        size_t datalen)
{
    char conf[256], name[16];
    snprintf(name, sizeof name, "t%d", i);
    snprintf(conf, sizeof conf, "%s/%s.json", dir, name);
    e2e_write_file(conf, "{\"train\":{\"replay_ratio\":0},\"checkpoint\":{\"interval_ms\":0},"
                         "\"vectors\":{\"bootstrap\":false}}");
    snprintf(data, datalen, "%s/%s", dir, name);
    const char *extra[] = {"--config", conf, "--role", "trainer", "--data-dir", data, NULL};
    e2e_opts o = {.brokers = brokers, .extra = extra};
    e2e_start_opts(d, &o);
}

/* Sum of a stats number over the live shards (alive[i] != 0). */
static long long shard_sum(json_t **st, const int *alive, const char *path)
{
    long long s = 0;
    for (int i = 0; i < NSHARD; i++)
        if (alive[i])
            s += e2e_int(st[i], path);
    return s;
}

/* The by-city partitions assigned to a shard, as a bit set, and whether each
 * has no lag (everything in the log handed over). */
static unsigned shard_parts(json_t *st, int *caught_up)
{
    unsigned set = 0;
    size_t i;
    json_t *p;
    *caught_up = 1;
    json_array_foreach(json_object_get(json_object_get(st, "kafka"), "partitions"), i, p) {
        set |= 1u << json_integer_value(json_object_get(p, "partition"));
        if (json_integer_value(json_object_get(p, "lag")) != 0)
            *caught_up = 0;
    }
    return set;
}

/* Waits until the live shards together own every by-city partition with
 * no lag, their repartitioners have nothing in flight or unread, the
 * trainers are idle, and the counts of two polls 300 ms apart agree; fills
 * st[] (caller decrefs). */
static void wait_shards_quiet(e2e_daemon *t, const int *alive, json_t **st, long long min_done)
{
    long long deadline = e2e_now_ms() + e2e_scaled_ms(180000), last = -1;
    for (int i = 0; i < NSHARD; i++)
        st[i] = NULL;
    for (;;) {
        unsigned all = 0;
        int quiet = 1;
        for (int i = 0; i < NSHARD; i++) {
            json_decref(st[i]);
            st[i] = NULL;
            if (!alive[i])
                continue;
            st[i] = e2e_request(t[i].sock, "{\"op\":\"stats\"}");
            int caught_up;
            all |= shard_parts(st[i], &caught_up);
            quiet &= caught_up && e2e_int(st[i], "kafka.repartition.lag") == 0 &&
                     e2e_int(st[i], "kafka.repartition.inflight") == 0 &&
                     e2e_int(st[i], "kafka.vectors.pending") == 0 &&
                     e2e_int(st[i], "kafka.vectors.inflight") == 0 &&
                     e2e_int(st[i], "index.pending") == 0;
        }
        long long done =
            shard_sum(st, alive, "events.applied") + shard_sum(st, alive, "events.invalid") +
            shard_sum(st, alive, "events.duplicates") + shard_sum(st, alive, "events.late");
        /* the click topic's partitions all read by live repartitioners */
        quiet &= shard_sum(st, alive, "kafka.repartition.assigned") == SPARTS;
        if (all == (1u << BPARTS) - 1 && quiet && done >= min_done && done == last)
            return;
        last = quiet ? done : -1;
        if (e2e_now_ms() > deadline)
            RC__FAIL("shards: partitions %#x, %lld events done (at least %lld), quiet %d", all,
                     done, min_done, quiet);
        ms_sleep(300);
    }
}

/* City -> by-city partition, from the log itself. */
struct city_parts {
    char city[16][8];
    int part[16];
    int n, mixed;
};

static void city_message(void *ud, const rd_kafka_message_t *m)
{
    struct city_parts *cp = ud;
    rc_event ev;
    if (rc_event_decode(m->payload, m->len, &ev, NULL, 0) != RC_EV_OK)
        return; /* an invalid line: forwarded with its own key */
    ASSERT(m->key_len == ev.city_len && memcmp(m->key, ev.city, ev.city_len) == 0);
    int i = 0;
    while (i < cp->n && strcmp(cp->city[i], ev.city) != 0)
        i++;
    if (i == cp->n) {
        ASSERT(cp->n < 16 && ev.city_len < 8);
        memcpy(cp->city[cp->n], ev.city, ev.city_len + 1u);
        cp->part[cp->n++] = (int)m->partition;
    } else if (cp->part[i] != (int)m->partition) {
        cp->mixed++;
    }
}

/* The cities of a checkpoint's table, as a bit set over cp's cities. */
static unsigned checkpoint_cities(const char *data, const struct city_parts *cp)
{
    rc_table *tab;
    rc_checkpoint_meta meta;
    unsigned set = 0;
    e2e_checkpoint_open(data, &tab, &meta);
    for (uint32_t r = 0; r < rc_table_size(tab); r++) {
        const char *c = rc_table_city_name(tab, rc_table_city(tab, r));
        int i = 0;
        while (i < cp->n && strcmp(cp->city[i], c) != 0)
            i++;
        ASSERT(i < cp->n);
        set |= 1u << i;
    }
    rc_checkpoint_meta_free(&meta);
    rc_table_destroy(tab);
    return set;
}

/* Three trainer shards and two replicas on one broker: the repartitioners
 * forward every click once to clicks.by-city keyed by city (a city in one
 * partition), the shards share that topic's partitions, every valid event is
 * trained exactly once across them, each city by one shard only, and a
 * replica answers as the city's owner for users who clicked in one city. */
TEST(roles_shards_train_each_city_once)
{
    const uint64_t N = 20000, SEED = 41;
    const double INV = 0.01;
    char dir[64], data[NSHARD][256];
    e2e_broker b;
    e2e_daemon t[NSHARD], r[2];
    int alive[NSHARD] = {1, 1, 1};
    mkdir_tmp(dir, sizeof dir);
    start_shard_broker(&b);
    for (int i = 0; i < NSHARD; i++)
        start_shard(&t[i], dir, i, b.bootstrap, data[i], sizeof data[i]);
    pid_t gen = e2e_gen_start(b.bootstrap, SEED, N, INV, 0);
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    e2e_truth tr;
    e2e_gen_truth(SEED, N, INV, &tr);
    json_t *st[NSHARD];
    wait_shards_quiet(t, alive, st, (long long)N);
    for (int i = 0; i < NSHARD; i++)
        fprintf(stderr,
                "shard %d: by-city partitions %#x, applied %lld, invalid %lld, duplicates %lld, "
                "late %lld, repartitioned %lld\n",
                i, assignment(st[i]), e2e_int(st[i], "events.applied"),
                e2e_int(st[i], "events.invalid"), e2e_int(st[i], "events.duplicates"),
                e2e_int(st[i], "events.late"), e2e_int(st[i], "kafka.repartition.consumed"));
    for (int i = 0; i < NSHARD; i++) /* BPARTS partitions for NSHARD shards: one each */
        ASSERT_GT(e2e_int(st[i], "events.applied"), 0);
    /* every click read once from the click topic, forwarded once */
    ASSERT_EQ(shard_sum(st, alive, "kafka.repartition.consumed"), (long long)N);
    ASSERT_EQ(shard_sum(st, alive, "kafka.repartition.delivered"), (long long)N);
    ASSERT_EQ(shard_sum(st, alive, "kafka.repartition.unkeyed"), (long long)tr.invalid);
    ASSERT_EQ(shard_sum(st, alive, "kafka.repartition.failed"), 0);
    /* every valid event trained exactly once across the shards */
    ASSERT_EQ(shard_sum(st, alive, "events.applied"), (long long)tr.valid);
    ASSERT_EQ(shard_sum(st, alive, "events.invalid"), (long long)tr.invalid);
    ASSERT_EQ(shard_sum(st, alive, "events.duplicates"), 0);
    ASSERT_EQ(shard_sum(st, alive, "kafka.repartition.repeats_dropped"), 0);
    for (int i = 0; i < NSHARD; i++)
        ASSERT_STREQ(json_string_value(json_object_get(json_object_get(st[i], "kafka"), "topic")),
                     "clicks.by-city");
    /* the by-city log: each generated line once, a city in one partition */
    e2e_truth bt;
    e2e_topic_truth(b.bootstrap, "clicks.by-city", BPARTS, SEED, N, INV, &bt);
    ASSERT_EQ(bt.absent, 0); /* recalld's own topic: every line */
    ASSERT_EQ(bt.valid, tr.valid);
    ASSERT_EQ(bt.repeats, 0);
    struct city_parts cp = {.n = 0};
    ASSERT_EQ(e2e_topic_read(b.bootstrap, "clicks.by-city", BPARTS, city_message, &cp), 0);
    ASSERT_EQ(cp.n, 4);
    ASSERT_EQ(cp.mixed, 0);

    /* replicas: the vectors of every shard, the sessions of every user */
    long long items = shard_sum(st, alive, "items");
    for (int k = 0; k < 2; k++) {
        char name[8];
        snprintf(name, sizeof name, "r%d", k);
        start_role(&r[k], dir, name, "replica", b.bootstrap, NULL, 0);
    }
    for (int k = 0; k < 2; k++)
        for (long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);; ms_sleep(100)) {
            json_t *rs = e2e_request(r[k].sock, "{\"op\":\"stats\"}");
            int ok = e2e_int(rs, "items") == items &&
                     e2e_int(rs, "events.applied") == (long long)tr.valid &&
                     e2e_int(rs, "replica.staleness_ms") == 0 && e2e_int(rs, "index.pending") == 0;
            long long ri = e2e_int(rs, "items");
            json_decref(rs);
            if (ok)
                break;
            if (e2e_now_ms() > deadline)
                RC__FAIL("replica %d: %lld items, shards %lld (log %s)", k, ri, items, r[k].log);
        }
    static char ia[50][16], ib[50][16];
    double sa[50], sb[50];
    int users = 0, same = 0, owners[NSHARD] = {0};
    for (int u = 0; u < E2E_GEN_USERS && users < 60; u++) {
        char user[16], city[16] = "";
        snprintf(user, sizeof user, "u%d", u);
        json_t *q = e2e_request(r[0].sock, "{\"op\":\"user\",\"user_id\":\"%s\"}", user);
        json_t *clicks = json_object_get(q, "clicks"), *c;
        size_t i, nclicks = json_array_size(clicks);
        int one_city = nclicks >= 2;
        json_array_foreach(clicks, i, c) {
            const char *cc = json_string_value(json_object_get(c, "city"));
            if (!city[0])
                snprintf(city, sizeof city, "%s", cc);
            one_city &= strcmp(city, cc) == 0;
        }
        json_decref(q);
        if (!one_city)
            continue;
        int owner = -1; /* the shard holding the user's clicks (its city's) */
        for (int s = 0; s < NSHARD; s++) {
            json_t *qs = e2e_request(t[s].sock, "{\"op\":\"user\",\"user_id\":\"%s\"}", user);
            if (json_array_size(json_object_get(qs, "clicks")) == nclicks) {
                ASSERT_EQ(owner, -1);
                owner = s;
            }
            json_decref(qs);
        }
        ASSERT(owner >= 0);
        owners[owner]++;
        users++;
        size_t na = recall_ids(t[owner].sock, user, city, 1, ia, sa, 50);
        int both = 1;
        for (int k = 0; k < 2; k++) {
            size_t nb = recall_ids(r[k].sock, user, city, 1, ib, sb, 50);
            both &= same_answer(ia, sa, na, ib, sb, nb);
        }
        same += both;
    }
    fprintf(stderr,
            "%d one-city users (owners: %d %d %d): both replicas' exact top-50 in the user's "
            "city equal the owner's for %d\n",
            users, owners[0], owners[1], owners[2], same);
    ASSERT_EQ(users, 60);
    ASSERT_EQ(same, users);
    for (int i = 0; i < NSHARD; i++)
        ASSERT_GT(owners[i], 0);
    for (int k = 0; k < 2; k++) {
        ASSERT_EQ(e2e_stop(&r[k]), 0);
        cleanup(r[k].dir);
    }

    /* the final checkpoints: each city in one shard, every click once */
    uint32_t *sum = calloc(E2E_GEN_ITEMS, sizeof *sum);
    ASSERT(sum != NULL);
    unsigned seen = 0;
    for (int i = 0; i < NSHARD; i++) {
        json_decref(st[i]);
        ASSERT_EQ(e2e_stop(&t[i]), 0);
        unsigned cities = checkpoint_cities(data[i], &cp);
        ASSERT_EQ(cities & seen, 0);
        seen |= cities;
        e2e_checkpoint_add_counts(data[i], sum);
        cleanup(t[i].dir);
    }
    ASSERT_EQ(seen, (1u << cp.n) - 1);
    e2e_assert_counts(&tr, sum);
    free(sum);
    free(tr.count);
    free(bt.count);
    e2e_broker_stop(&b);
    cleanup(dir);
}

/* kill -9 of a shard mid-stream: after the group's session timeout its
 * by-city partition moves to a survivor, which resumes from the committed
 * offset (no checkpoint ran mid-stream: the start of the stream) and trains
 * those cities from there; the dead shard's repartitioner's click partitions
 * move too, and what it forwarded after its last commit is forwarded again
 * (the by-city log holds repeats: the survivors drop them by their source
 * position). The survivors' final checkpoints (with the dead shard's last
 * one, from before the stream) hold every generated click at most once, and
 * each one they lack is counted late. */
TEST(roles_shard_killed_cities_resume_on_a_survivor)
{
    const uint64_t N = 24000, SEED = 43;
    char dir[64], data[NSHARD][256];
    e2e_broker b;
    e2e_daemon t[NSHARD];
    int alive[NSHARD] = {1, 1, 1};
    mkdir_tmp(dir, sizeof dir);
    start_shard_broker(&b);
    for (int i = 0; i < NSHARD; i++)
        start_shard(&t[i], dir, i, b.bootstrap, data[i], sizeof data[i]);
    pid_t gen = e2e_gen_start(b.bootstrap, SEED, N, 0, 4000); /* ~6 s of stream */
    /* the victim: shard 0, once it has trained part of its cities' clicks */
    for (long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);; ms_sleep(50)) {
        json_t *s0 = e2e_request(t[0].sock, "{\"op\":\"stats\"}");
        long long applied = e2e_int(s0, "events.applied");
        json_decref(s0);
        if (applied >= 500)
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL("shard 0 applied %lld clicks (log %s)", applied, t[0].log);
    }
    e2e_kill(&t[0]);
    alive[0] = 0;
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    long long killed = e2e_now_ms();
    e2e_truth tr, bt;
    e2e_gen_truth(SEED, N, 0, &tr);
    json_t *st[NSHARD];
    wait_shards_quiet(t, alive, st, 1);
    fprintf(stderr, "kill -9 -> survivors quiet: %lld ms\n", e2e_now_ms() - killed);
    /* truth of the by-city log: every line, and how many repeats */
    e2e_topic_truth(b.bootstrap, "clicks.by-city", BPARTS, SEED, N, 0, &bt);
    ASSERT_EQ(bt.absent, 0);
    ASSERT_EQ(bt.valid - bt.repeats, tr.valid);
    fprintf(stderr,
            "survivors: partitions %#x + %#x, applied %lld + %lld, duplicates %lld + %lld; "
            "by-city log: %llu messages, %llu repeats\n",
            assignment(st[1]), assignment(st[2]), e2e_int(st[1], "events.applied"),
            e2e_int(st[2], "events.applied"), e2e_int(st[1], "events.duplicates"),
            e2e_int(st[2], "events.duplicates"), (unsigned long long)bt.valid,
            (unsigned long long)bt.repeats);
    /* every message of the by-city log reached a live trainer once (the dead
     * shard committed nothing of the stream: its partition is read again
     * from the start) */
    long long applied = shard_sum(st, alive, "events.applied");
    long long dropped = shard_sum(st, alive, "kafka.repartition.repeats_dropped");
    long long dups = shard_sum(st, alive, "events.duplicates");
    long long late = shard_sum(st, alive, "events.late");
    ASSERT_EQ(applied + dropped, (long long)bt.valid);
    uint32_t *sum = calloc(E2E_GEN_ITEMS, sizeof *sum);
    ASSERT(sum != NULL);
    uint64_t dead = e2e_checkpoint_add_counts(data[0], sum);
    ASSERT_EQ(dead, 0); /* its last checkpoint is from before the stream */
    for (int i = 1; i < NSHARD; i++) {
        json_decref(st[i]);
        ASSERT_EQ(e2e_stop(&t[i]), 0);
        e2e_checkpoint_add_counts(data[i], sum);
        cleanup(t[i].dir);
    }
    /* No click trained twice: a repeat (the same click-topic position
     * forwarded again) is dropped before the engine. What was not trained is
     * counted late: the replayed backlog of the dead shard's city comes out of
     * event-time order against the survivor's own city for users who clicked
     * in both. */
    long long trained = 0, missing = 0;
    for (uint32_t i = 0; i < E2E_GEN_ITEMS; i++) {
        if (sum[i] > tr.count[i])
            RC__FAIL("item i%u: %u clicks in the models, %u produced", i, sum[i], tr.count[i]);
        trained += sum[i];
        missing += tr.count[i] - sum[i];
    }
    fprintf(stderr,
            "trained %lld of %llu clicks: %lld not trained (%lld counted late); %llu repeats in "
            "the by-city log, %lld dropped by source position, %lld as duplicate clicks\n",
            trained, (unsigned long long)tr.valid, missing, late, (unsigned long long)bt.repeats,
            dropped, dups);
    ASSERT_LE(dropped, (long long)bt.repeats); /* a repeat is dropped at most once */
    ASSERT_EQ(trained + dups + late, applied);
    ASSERT_LE(missing, late);
    ASSERT_LE(missing, (long long)tr.valid / 20);
    cleanup(t[0].dir);
    free(sum);
    free(tr.count);
    free(bt.count);
    e2e_broker_stop(&b);
    cleanup(dir);
}

/* ---- a new owner bootstraps the cities it takes over ---- */

/* 1 when group "recalld" has committed every partition of clicks.by-city up
 * to its high watermark (the trainers commit only from checkpoints). */
static int by_city_committed(const char *brokers)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) ||
        rd_kafka_conf_set(conf, "group.id", "recalld", err, sizeof err) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) ||
        rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err))
        RC__FAIL("consumer config: %s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    ASSERT(rk != NULL);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(BPARTS);
    for (int p = 0; p < BPARTS; p++)
        rd_kafka_topic_partition_list_add(l, "clicks.by-city", p);
    int all = rd_kafka_committed(rk, l, 5000) == 0;
    for (int p = 0; all && p < BPARTS; p++) {
        int64_t lo, hi;
        all = rd_kafka_query_watermark_offsets(rk, "clicks.by-city", p, &lo, &hi, 5000) == 0 &&
              hi > 0 && l->elems[p].offset == hi;
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return all;
}

/* The ids of item's `similar` top-k (0 when the daemon does not know it). */
static size_t similar_ids(const char *sock, const char *item, char ids[][16], size_t k)
{
    json_t *r = e2e_request(sock, "{\"op\":\"similar\",\"item_id\":\"%s\",\"k\":%zu}", item, k);
    size_t i, n = 0;
    json_t *it;
    if (json_is_true(json_object_get(r, "ok")))
        json_array_foreach(json_object_get(r, "items"), i, it) {
            if (n < k)
                snprintf(ids[n++], 16, "%s", json_string_value(json_object_get(it, "item_id")));
        }
    json_decref(r);
    return n;
}

/* The k items nearest to item (cosine of the newest vectors) among the
 * items of the by-city partitions in mask, as "i<index>" ids, best first. */
static size_t nearest_moved(const newest *nw, uint32_t item, unsigned mask, char ids[][16],
                            size_t k)
{
    enum { KMAX = 64 };
    uint32_t best[KMAX];
    float bs[KMAX], q[DIM];
    size_t n = 0;
    ASSERT(k <= KMAX);
    memcpy(q, nw[item].vec, sizeof q);
    rc_vec_normalize(q, DIM);
    for (uint32_t j = 0; j < E2E_GEN_ITEMS; j++) {
        if (j == item || !nw[j].version ||
            !(mask & 1u << rc_repart_partition(nw[j].city, strlen(nw[j].city), BPARTS)))
            continue;
        float x[DIM];
        memcpy(x, nw[j].vec, sizeof x);
        rc_vec_normalize(x, DIM);
        float sc = rc_vec_dot(q, x, DIM);
        size_t p = n < k ? n++ : k;
        while (p > 0 && bs[p - 1] < sc) {
            if (p < k) {
                bs[p] = bs[p - 1];
                best[p] = best[p - 1];
            }
            p--;
        }
        if (p < k) {
            bs[p] = sc;
            best[p] = j;
        }
    }
    for (size_t i = 0; i < n; i++)
        snprintf(ids[i], 16, "i%u", best[i]);
    return n;
}

/* A shard killed -9 after its checkpoint committed everything: the survivor
 * that takes its by-city partition installs the dead shard's published rows
 * of those cities before it resumes the partition, so it answers `similar`
 * for their items as the dead shard did (a cold start would not know them:
 * nothing is left to replay), and clicks that follow are trained from
 * there: the partition was resumed, nothing is lost. */
/* Every record a bootstrap handed over taken by the trainer (a run ends when
 * its last install batch is submitted, not applied; these tests publish
 * no invalid record, so `invalid` counts only refused installs). */
static int installed_all(json_t *s)
{
    return e2e_int(s, "kafka.vectors.bootstrap.installed") +
               e2e_int(s, "kafka.vectors.bootstrap.skipped") +
               e2e_int(s, "kafka.vectors.bootstrap.invalid") >=
           e2e_int(s, "kafka.vectors.bootstrap.handed");
}

TEST(roles_shard_killed_survivor_bootstraps_its_cities)
{
    const uint64_t N = 12000, SEED = 47, N2 = 3000, SEED2 = 48;
    enum { TOP = 8, K = 20 };
    char dir[64], data[NSHARD][256], conf[256];
    e2e_broker b;
    e2e_daemon t[NSHARD];
    int alive[NSHARD] = {1, 1, 1};
    mkdir_tmp(dir, sizeof dir);
    start_shard_broker(&b);
    /* checkpoints every 300 ms: offsets reach the group soon after the stream */
    snprintf(conf, sizeof conf, "%s/ck.json", dir);
    e2e_write_file(conf, "{\"checkpoint\":{\"interval_ms\":300}}");
    for (int i = 0; i < NSHARD; i++) {
        char name[16], conf0[256];
        snprintf(name, sizeof name, "t%d", i);
        snprintf(conf0, sizeof conf0, "%s/%s.json", dir, name);
        e2e_write_file(conf0, "{\"train\":{\"replay_ratio\":0}}");
        snprintf(data[i], sizeof data[i], "%s/%s", dir, name);
        const char *extra[] = {"--config", conf0,        "--config", conf, "--role",
                               "trainer",  "--data-dir", data[i],    NULL};
        e2e_opts o = {.brokers = b.bootstrap, .extra = extra};
        e2e_start_opts(&t[i], &o);
    }
    pid_t gen = e2e_gen_start(b.bootstrap, SEED, N, 0, 0);
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    e2e_truth tr, tr2;
    e2e_gen_truth(SEED, N, 0, &tr);
    json_t *st[NSHARD];
    wait_shards_quiet(t, alive, st, (long long)tr.valid);
    for (long long deadline = e2e_now_ms() + e2e_scaled_ms(60000); !by_city_committed(b.bootstrap);
         ms_sleep(200))
        if (e2e_now_ms() > deadline)
            RC__FAIL("the shards' checkpoints did not commit clicks.by-city to its end");
    unsigned moved = assignment(st[0]);
    ASSERT(moved != 0);
    long long done1 = 0;
    for (int i = 1; i < NSHARD; i++)
        done1 += e2e_int(st[i], "events.applied") + e2e_int(st[i], "events.invalid") +
                 e2e_int(st[i], "events.duplicates") + e2e_int(st[i], "events.late");
    for (int i = 0; i < NSHARD; i++)
        json_decref(st[i]);
    /* the moved cities' items, the most clicked first, as the vector topic has them */
    newest *nw = calloc(E2E_GEN_ITEMS, sizeof *nw);
    ASSERT(nw != NULL);
    ASSERT_EQ(e2e_topic_read(b.bootstrap, "clicks.vectors", SPARTS, newest_message,
                             &(struct newest_read){nw, E2E_GEN_ITEMS, 0}),
              0);
    uint32_t top[TOP], ntop = 0, nmoved = 0;
    for (uint32_t i = 0; i < E2E_GEN_ITEMS; i++) {
        if (!nw[i].version ||
            !(moved & 1u << rc_repart_partition(nw[i].city, strlen(nw[i].city), BPARTS)))
            continue;
        nmoved++;
        uint32_t j = ntop; /* insertion into the TOP most clicked */
        while (j > 0 && nw[top[j - 1]].count < nw[i].count) {
            if (j < TOP)
                top[j] = top[j - 1];
            j--;
        }
        if (j < TOP)
            top[j] = i;
        if (ntop < TOP)
            ntop++;
    }
    ASSERT(ntop == TOP);
    /* The reference: each item's K nearest by cosine among the moved cities'
     * newest records in the vector topic, which is what a bootstrap installs.
     * The dead shard's own answers are not the reference. A rebalance in
     * mid-stream (a shard that misses its heartbeats on a loaded machine) can
     * give another shard some of those cities' clicks for a while, and the
     * newer vectors it publishes never reach the dead shard's table. */
    static char before[TOP][K][16], after[K][16];
    size_t nb[TOP];
    for (uint32_t i = 0; i < TOP; i++) {
        nb[i] = nearest_moved(nw, top[i], moved, before[i], K);
        ASSERT_EQ(nb[i], K);
    }
    e2e_kill(&t[0]);
    alive[0] = 0;
    /* the survivor that gets the moved partitions bootstraps them */
    int owner = -1;
    for (long long deadline = e2e_now_ms() + e2e_scaled_ms(120000); owner < 0; ms_sleep(200)) {
        for (int i = 1; i < NSHARD && owner < 0; i++) {
            json_t *s = e2e_request(t[i].sock, "{\"op\":\"stats\"}");
            if ((assignment(s) & moved) == moved &&
                e2e_int(s, "kafka.vectors.bootstrap.runs") >= 1 &&
                e2e_int(s, "kafka.vectors.bootstrap.paused") == 0 && installed_all(s) &&
                e2e_int(s, "index.pending") == 0)
                owner = i;
            json_decref(s);
        }
        if (owner < 0 && e2e_now_ms() > deadline)
            RC__FAIL("no survivor took partitions %#x and bootstrapped them", moved);
    }
    /* One reply reads the index's pending count before the bootstrap
     * counters: a later reply must see the installed rows indexed too. */
    json_t *s = NULL;
    for (long long deadline = e2e_now_ms() + e2e_scaled_ms(60000);; ms_sleep(100)) {
        s = e2e_request(t[owner].sock, "{\"op\":\"stats\"}");
        if (e2e_int(s, "index.pending") == 0)
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL("survivor t%d: index still pending", owner);
        json_decref(s);
    }
    long long installed = e2e_int(s, "kafka.vectors.bootstrap.installed");
    fprintf(stderr,
            "survivor t%d: bootstrap of partitions %#x: %lld records read, %lld matched, %lld "
            "handed, %lld installed, %lld skipped, %lld ms (%u items of those cities)\n",
            owner, moved, e2e_int(s, "kafka.vectors.bootstrap.records"),
            e2e_int(s, "kafka.vectors.bootstrap.matched"),
            e2e_int(s, "kafka.vectors.bootstrap.handed"), installed,
            e2e_int(s, "kafka.vectors.bootstrap.skipped"), e2e_int(s, "kafka.vectors.bootstrap.ms"),
            nmoved);
    ASSERT_GT(installed, 0);
    ASSERT_EQ(e2e_int(s, "kafka.vectors.bootstrap.handed"),
              installed + e2e_int(s, "kafka.vectors.bootstrap.skipped"));
    ASSERT_GE(e2e_int(s, "kafka.vectors.bootstrap.handed"), nmoved);
    ASSERT_EQ(e2e_int(s, "kafka.vectors.bootstrap.lost"), 0);
    ASSERT_EQ(e2e_int(s, "kafka.vectors.bootstrap.paused"), 0);
    json_decref(s);
    /* the same neighbours as the newest published vectors: nothing replayed */
    size_t same = 0;
    for (uint32_t i = 0; i < TOP; i++) {
        char item[16];
        snprintf(item, sizeof item, "i%u", top[i]);
        size_t na = similar_ids(t[owner].sock, item, after, K);
        for (size_t x = 0; x < nb[i]; x++)
            for (size_t y = 0; y < na; y++)
                same += strcmp(before[i][x], after[y]) == 0;
    }
    fprintf(stderr,
            "similar top-%d of %d moved items: %zu of %d neighbours as the vector topic's newest "
            "records\n",
            K, TOP, same, TOP * K);
    ASSERT_GE(same, (size_t)(TOP * K * 9 / 10));
    /* the partitions were resumed: later clicks are all trained by the survivors */
    gen = e2e_gen_start(b.bootstrap, SEED2, N2, 0, 0);
    ASSERT_EQ(e2e_gen_wait(gen), 0);
    e2e_gen_truth(SEED2, N2, 0, &tr2);
    wait_shards_quiet(t, alive, st, done1 + (long long)tr2.valid);
    for (int i = 1; i < NSHARD; i++) {
        json_decref(st[i]);
        ASSERT_EQ(e2e_stop(&t[i]), 0);
        cleanup(t[i].dir);
    }
    cleanup(t[0].dir);
    free(nw);
    free(tr.count);
    free(tr2.count);
    e2e_broker_stop(&b);
    cleanup(dir);
}

/* A trainer's bootstrap counts the records retention deleted before it read
 * them: a one-partition clicks.vectors filled past the mock's ~5 MiB, then a
 * trainer that owns every by-city partition (all new to it) reads what is
 * left; read + lost = produced, and every record read is installed. */
TEST(roles_trainer_bootstrap_counts_records_lost_to_retention)
{
    const int R = 20000; /* ~560 bytes each: ~11 MB, past the mock's retention */
    static const char *const topics[] = {"--topic", "clicks", "--topic", "clicks.dlq", NULL};
    char dir[64], err[512];
    e2e_broker b;
    e2e_daemon t;
    mkdir_tmp(dir, sizeof dir);
    e2e_broker_start(&b, 2, topics);
    char *reply = e2e_broker_cmd(&b, "create clicks.by-city 2");
    ASSERT(strncmp(reply, "ok", 2) == 0);
    free(reply);
    reply = e2e_broker_cmd(&b, "create clicks.vectors 1");
    ASSERT(strncmp(reply, "ok", 2) == 0);
    free(reply);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ASSERT(rd_kafka_conf_set(conf, "bootstrap.servers", b.bootstrap, err, sizeof err) == 0 &&
           rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err) == 0 &&
           rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) == 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ASSERT(rk != NULL);
    float v[DIM], o[DIM];
    for (int i = 0; i < DIM; i++) {
        v[i] = (float)i / DIM;
        o[i] = -(float)i / DIM;
    }
    rc_buf rec;
    rc_buf_init(&rec, 0);
    for (int k = 0; k < R; k++) {
        char item[16], city[8];
        snprintf(item, sizeof item, "i%d", k);
        snprintf(city, sizeof city, "c%d", k % 4);
        v[0] = (float)k;
        rc_buf_reset(&rec);
        ASSERT_EQ(rc_vecrec_encode(&rec, item, strlen(item), city, strlen(city), "k1", 2, 1,
                                   (uint64_t)k + 1, 1, v, o, DIM),
                  0);
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC("clicks.vectors"), RD_KAFKA_V_KEY(item, strlen(item)),
                    RD_KAFKA_V_VALUE(rec.data, rec.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                    RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        ASSERT_EQ(e, 0);
    }
    ASSERT_EQ(rd_kafka_flush(rk, (int)e2e_scaled_ms(60000)), 0);
    rd_kafka_destroy(rk);
    rc_buf_free(&rec);
    start_role(&t, dir, "t", "trainer", b.bootstrap, NULL, 0);
    json_t *s = NULL;
    for (long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);; ms_sleep(100)) {
        s = e2e_request(t.sock, "{\"op\":\"stats\"}");
        if (e2e_int(s, "kafka.vectors.bootstrap.runs") >= 1 &&
            e2e_int(s, "kafka.vectors.bootstrap.paused") == 0 && installed_all(s) &&
            e2e_int(s, "index.pending") == 0)
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL("no bootstrap run finished (log %s)", t.log);
        json_decref(s);
    }
    /* again: one reply reads the table's size and the index's pending count
     * before the bootstrap counters, so the reply that saw the last install
     * counted may predate its rows */
    for (long long deadline = e2e_now_ms() + e2e_scaled_ms(60000);; ms_sleep(100)) {
        json_decref(s);
        s = e2e_request(t.sock, "{\"op\":\"stats\"}");
        if (e2e_int(s, "index.pending") == 0)
            break;
        if (e2e_now_ms() > deadline)
            RC__FAIL("index still pending (log %s)", t.log);
    }
    long long read = e2e_int(s, "kafka.vectors.bootstrap.records");
    long long lost = e2e_int(s, "kafka.vectors.bootstrap.lost");
    fprintf(stderr, "bootstrap: %lld records read, %lld lost to retention, %lld installed\n", read,
            lost, e2e_int(s, "kafka.vectors.bootstrap.installed"));
    ASSERT_GT(lost, 0);
    ASSERT_EQ(read + lost, R);
    ASSERT_EQ(e2e_int(s, "kafka.vectors.bootstrap.handed"), read); /* every city is its own */
    ASSERT_EQ(e2e_int(s, "kafka.vectors.bootstrap.installed"), read);
    ASSERT_EQ(e2e_int(s, "items"), read);
    json_decref(s);
    s = e2e_request(t.sock, "{\"op\":\"health\"}"); /* said, not only counted */
    char want[128];
    snprintf(want, sizeof want, "%lld vector records lost", lost);
    json_t *w = json_array_get(json_object_get(s, "warnings"), 0);
    if (!w || !strstr(json_string_value(w), want))
        RC__FAIL("health lacks \"%s\"", want);
    json_decref(s);
    ASSERT_EQ(e2e_stop(&t), 0);
    cleanup(t.dir);
    e2e_broker_stop(&b);
    cleanup(dir);
}

/* The source position header round-trips; the filter calls a position at or
 * below the newest of its (partition, source partition) pair a repeat, keeps
 * pairs apart, forgets a partition on a new tenure, and holds many pairs. */
TEST(roles_srcpos_filter_drops_repeats_only)
{
    unsigned char pos[RC_SRCPOS_LEN];
    int32_t p;
    int64_t o;
    rc_srcpos_encode(pos, 31, 1234567890123);
    ASSERT_EQ(rc_srcpos_decode(pos, sizeof pos, &p, &o), 0);
    ASSERT_EQ(p, 31);
    ASSERT_EQ(o, 1234567890123);
    ASSERT_EQ(rc_srcpos_decode(pos, sizeof pos - 1, &p, &o), -1);
    ASSERT_EQ(rc_srcpos_decode(NULL, 0, &p, &o), -1);
    rc_srcpos_encode(pos, -1, 5);
    ASSERT_EQ(rc_srcpos_decode(pos, sizeof pos, &p, &o), -1);

    rc_srcpos_seen *s = rc_srcpos_seen_new();
    ASSERT(s != NULL);
    ASSERT_EQ(rc_srcpos_seen_check(s, 0, 1, 5), 0);
    ASSERT_EQ(rc_srcpos_seen_check(s, 0, 1, 6), 0);
    ASSERT_EQ(rc_srcpos_seen_check(s, 0, 1, 6), 1);
    ASSERT_EQ(rc_srcpos_seen_check(s, 0, 1, 3), 1);
    ASSERT_EQ(rc_srcpos_seen_check(s, 0, 2, 3), 0); /* another source partition */
    ASSERT_EQ(rc_srcpos_seen_check(s, 1, 1, 3), 0); /* another by-city partition */
    rc_srcpos_seen_forget(s, 0);
    ASSERT_EQ(rc_srcpos_seen_check(s, 0, 1, 4), 0);
    ASSERT_EQ(rc_srcpos_seen_check(s, 1, 1, 3), 1); /* partition 1 kept its history */
    for (int32_t a = 0; a < 40; a++)
        for (int32_t b = 0; b < 50; b++)
            ASSERT_EQ(rc_srcpos_seen_check(s, 100 + a, b, 10 + b), 0);
    for (int32_t a = 0; a < 40; a++)
        for (int32_t b = 0; b < 50; b++) {
            ASSERT_EQ(rc_srcpos_seen_check(s, 100 + a, b, 10 + b), 1);
            ASSERT_EQ(rc_srcpos_seen_check(s, 100 + a, b, 11 + b), 0);
        }
    rc_srcpos_seen_free(s);
}
