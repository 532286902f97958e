#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/event.h"
#include "recalld/gen.h"
#include "test.h"

#define MIN_MS (60 * 1000LL)

static rc_gen *mk(const rc_gen_opts *o)
{
    rc_gen *g = NULL;
    char err[256];
    int rc = rc_gen_create(o, &g, err, sizeof err);
    if (rc)
        RC__FAIL("rc_gen_create: %s", err);
    return g;
}

/* Runs a shell command, captures stdout+stderr (malloc'd, caller frees);
 * returns the exit status. */
static int sh(char **out, const char *cmd)
{
    FILE *p = popen(cmd, "r");
    ASSERT(p);
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    ASSERT(b);
    size_t k;
    while ((k = fread(b + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (cap - n < 2) {
            b = realloc(b, cap *= 2);
            ASSERT(b);
        }
    }
    b[n] = '\0';
    int st = pclose(p);
    *out = b;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(gen_rejects_bad_opts)
{
    rc_gen *g = (rc_gen *)1;
    char err[256] = "";
    rc_gen_opts o = {.items = 10, .communities = 20};
    ASSERT_EQ(rc_gen_create(&o, &g, err, sizeof err), RC_EINVAL);
    ASSERT(g == NULL);
    ASSERT(strstr(err, "items"));
    o = (rc_gen_opts){.invalid_share = 1.5};
    ASSERT_EQ(rc_gen_create(&o, &g, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "invalid_share"));
    rc_gen_destroy(NULL);
    /* a tiny buffer is refused without consuming an event */
    o = (rc_gen_opts){.events = 1};
    g = mk(&o);
    char small[16], line[RC_GEN_LINE_MAX];
    size_t len;
    ASSERT_EQ(rc_gen_next(g, small, sizeof small, &len, NULL), RC_E2BIG);
    ASSERT_EQ(rc_gen_next(g, line, sizeof line, &len, NULL), 0);
    ASSERT_EQ(rc_gen_next(g, line, sizeof line, &len, NULL), RC_ENOENT);
    rc_gen_destroy(g);
}

TEST(gen_deterministic_by_seed)
{
    rc_gen_opts o = {.seed = 42, .invalid_share = 0.1};
    rc_gen *a = mk(&o), *b = mk(&o);
    o.seed = 43;
    rc_gen *c = mk(&o);
    char la[RC_GEN_LINE_MAX], lb[RC_GEN_LINE_MAX], lc[RC_GEN_LINE_MAX];
    size_t na, nb, nc;
    int differ = 0;
    for (int i = 0; i < 20000; i++) {
        ASSERT_EQ(rc_gen_next(a, la, sizeof la, &na, NULL), 0);
        ASSERT_EQ(rc_gen_next(b, lb, sizeof lb, &nb, NULL), 0);
        ASSERT_EQ(rc_gen_next(c, lc, sizeof lc, &nc, NULL), 0);
        ASSERT_EQ(na, nb);
        ASSERT(memcmp(la, lb, na) == 0);
        differ += na != nc || memcmp(la, lc, na) != 0;
    }
    ASSERT_GT(differ, 19000);
    rc_gen_destroy(a);
    rc_gen_destroy(b);
    rc_gen_destroy(c);
}

TEST(gen_valid_lines_decode_and_match_truth)
{
    rc_gen_opts o = {.seed = 5, .events = 50000};
    rc_gen *g = mk(&o);
    char line[RC_GEN_LINE_MAX], err[256], want[32];
    size_t len;
    rc_gen_info info;
    rc_event ev;
    int n = 0, with_device = 0, with_tags = 0;
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        ASSERT(info.valid);
        ASSERT_EQ(strlen(line), len);
        if (rc_event_decode(line, len, &ev, err, sizeof err) != RC_EV_OK)
            RC__FAIL("%s: %s", line, err);
        rc_gen_item it;
        ASSERT_EQ(rc_gen_item_truth(g, ev.item, ev.item_len, &it), 0);
        ASSERT_EQ(it.community, info.community);
        snprintf(want, sizeof want, "c%u", it.city);
        ASSERT_STREQ(ev.city, want);
        snprintf(want, sizeof want, "k%u", it.cate);
        ASSERT_STREQ(ev.cate, want);
        snprintf(want, sizeof want, "u%u", info.user);
        ASSERT_STREQ(ev.user, want);
        ASSERT_EQ(ev.ts_ms, info.ts_ms);
        with_device += ev.device_len > 0;
        with_tags += ev.ntags > 0;
        n++;
    }
    ASSERT_EQ(n, 50000);
    ASSERT_GT(with_device, n / 2);
    ASSERT_EQ(with_tags, n);
    rc_gen_counts c = rc_gen_counts_get(g);
    ASSERT_EQ(c.valid, 50000);
    ASSERT_EQ(c.invalid, 0);
    rc_gen_destroy(g);

    /* without the optional fields */
    o.flags = RC_GEN_NO_DEVICE | RC_GEN_NO_TAGS;
    o.events = 1000;
    g = mk(&o);
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        ASSERT_EQ(rc_event_decode(line, len, &ev, NULL, 0), RC_EV_OK);
        ASSERT_EQ(ev.device_len, 0);
        ASSERT_EQ(ev.ntags, 0);
    }
    rc_gen_destroy(g);
}

TEST(gen_invalid_share_and_refused)
{
    rc_gen_opts o = {.seed = 9, .events = 40000, .invalid_share = 0.2};
    rc_gen *g = mk(&o);
    char line[RC_GEN_LINE_MAX], err[256];
    size_t len;
    rc_gen_info info;
    rc_event ev;
    unsigned reasons[RC_EV_REASON_COUNT] = {0};
    uint64_t bad = 0;
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        enum rc_event_reason r = rc_event_decode(line, len, &ev, err, sizeof err);
        if (info.valid && r != RC_EV_OK)
            RC__FAIL("valid line refused: %s: %s", line, err);
        if (!info.valid && r == RC_EV_OK)
            RC__FAIL("invalid line accepted: %s", line);
        reasons[r]++;
        bad += !info.valid;
    }
    rc_gen_counts c = rc_gen_counts_get(g);
    ASSERT_EQ(c.invalid, bad);
    ASSERT_EQ(c.valid + c.invalid, 40000);
    ASSERT_GT(bad, 40000 * 0.18);
    ASSERT_LT(bad, 40000 * 0.22);
    /* varied: every kind of refusal but the message-size one shows up */
    for (int r = RC_EV_BAD_JSON; r <= RC_EV_OVERSIZED; r++) /* the decoder's reasons */
        if (reasons[r] < 100)
            RC__FAIL("reason %s seen %u times", rc_event_reason_name((enum rc_event_reason)r),
                     reasons[r]);
    rc_gen_destroy(g);
}

TEST(gen_items_in_one_city_and_cate)
{
    rc_gen_opts o = {
        .seed = 11, .events = 60000, .items = 3000, .cities = 5, .cates = 4, .communities = 40};
    rc_gen *g = mk(&o);
    uint32_t *city = calloc(3000, sizeof *city), *cate = calloc(3000, sizeof *cate);
    ASSERT(city && cate);
    char line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info;
    rc_event ev;
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        ASSERT_EQ(rc_event_decode(line, len, &ev, NULL, 0), RC_EV_OK);
        uint32_t ci = (uint32_t)atoi(ev.city + 1) + 1, ki = (uint32_t)atoi(ev.cate + 1) + 1;
        if (!city[info.item])
            city[info.item] = ci, cate[info.item] = ki;
        ASSERT_EQ(city[info.item], ci);
        ASSERT_EQ(cate[info.item], ki);
    }
    /* a community is inside one city, and mostly one or two categories */
    unsigned cate_hist[40][4] = {{0}};
    for (uint32_t i = 0; i < 3000; i++) {
        rc_gen_item it, it2;
        ASSERT_EQ(rc_gen_item_at(g, i, &it), 0);
        ASSERT_EQ(it.city, it.community % 5);
        ASSERT_LT(it.cate, 4);
        char id[16];
        snprintf(id, sizeof id, "i%u", i);
        ASSERT_EQ(rc_gen_item_truth(g, id, strlen(id), &it2), 0);
        ASSERT_EQ(it2.community, it.community);
        ASSERT_EQ(rc_gen_item_truth(g, id + 1, strlen(id + 1), &it2), 0); /* bare number */
        cate_hist[it.community][it.cate]++;
    }
    for (int m = 0; m < 40; m++) {
        unsigned tot = 0, top2 = 0, a = 0, b = 0;
        for (int k = 0; k < 4; k++) {
            tot += cate_hist[m][k];
            if (cate_hist[m][k] > a)
                b = a, a = cate_hist[m][k];
            else if (cate_hist[m][k] > b)
                b = cate_hist[m][k];
        }
        top2 = a + b;
        ASSERT_GE(top2 * 100, tot * 85);
    }
    rc_gen_item it;
    ASSERT_EQ(rc_gen_item_truth(g, "i3000", 5, &it), RC_ENOENT);
    ASSERT_EQ(rc_gen_item_truth(g, "x1", 2, &it), RC_ENOENT);
    ASSERT_EQ(rc_gen_item_truth(g, "i", 1, &it), RC_ENOENT);
    rc_gen_user u;
    ASSERT_EQ(rc_gen_user_truth(g, "u7", 2, &u), 0);
    ASSERT_EQ(rc_gen_user_truth(g, "u99999999", 9, &u), RC_ENOENT);
    free(city);
    free(cate);
    rc_gen_destroy(g);
}

TEST(gen_sessions_and_time_order)
{
    rc_gen_opts o = {.seed = 3, .events = 100000, .users = 2000};
    rc_gen *g = mk(&o);
    int64_t *last = calloc(2000, sizeof *last);
    ASSERT(last);
    char line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info;
    int64_t prev = 0;
    unsigned sessions = 0, in_session = 0, users_seen = 0;
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        ASSERT_GE(info.ts_ms, prev); /* the stream is in time order */
        ASSERT_GE(info.ts_ms, o.start_ts_ms ? o.start_ts_ms : 1700000000000LL);
        prev = info.ts_ms;
        int64_t l = last[info.user];
        if (!l) {
            ASSERT(info.new_session);
            users_seen++;
        } else {
            ASSERT_GT(info.ts_ms, l); /* strictly increasing per user */
            if (info.new_session) {
                ASSERT_GT(info.ts_ms - l, 30 * MIN_MS);
                sessions++;
            } else {
                ASSERT_LT(info.ts_ms - l, 30 * MIN_MS);
                in_session++;
            }
        }
        last[info.user] = info.ts_ms;
    }
    ASSERT_GT(users_seen, 1900);
    ASSERT_GT(sessions, 5000);
    ASSERT_GT(in_session, 3 * sessions); /* sessions of several clicks */
    free(last);
    rc_gen_destroy(g);
}

TEST(gen_users_click_mostly_in_favourites)
{
    rc_gen_opts o = {.seed = 21, .events = 100000};
    rc_gen *g = mk(&o);
    char line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info;
    rc_event ev;
    uint64_t n = 0, fav = 0, home = 0, flagged = 0;
    unsigned nfav2 = 0;
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        ASSERT_EQ(rc_event_decode(line, len, &ev, NULL, 0), RC_EV_OK);
        rc_gen_user u;
        rc_gen_item it;
        ASSERT_EQ(rc_gen_user_truth(g, ev.user, ev.user_len, &u), 0);
        ASSERT_EQ(rc_gen_item_truth(g, ev.item, ev.item_len, &it), 0);
        int in = it.community == u.fav[0] || it.community == u.fav[1];
        ASSERT_EQ(in, info.favourite);
        fav += in;
        flagged += info.favourite;
        home += it.city == u.home_city;
        n++;
    }
    ASSERT_EQ(flagged, fav); /* the generator's flag, summed, is the truth's count */
    ASSERT_GT(fav * 100, n * 70);
    ASSERT_GT(home * 100, n * 85);
    for (uint32_t i = 0; i < 10000; i++) {
        rc_gen_user u;
        ASSERT_EQ(rc_gen_user_at(g, i, &u), 0);
        ASSERT(u.nfav == 1 || u.nfav == 2);
        ASSERT_EQ(u.fav[0] % 8, u.home_city);
        ASSERT_EQ(u.fav[1] % 8, u.home_city);
        nfav2 += u.nfav == 2;
    }
    ASSERT_GT(nfav2, 3000);
    ASSERT_LT(nfav2, 7000);
    fprintf(stderr, "favourite share %.3f, home city %.3f\n", (double)fav / (double)n,
            (double)home / (double)n);
    rc_gen_destroy(g);
}

TEST(gen_cli_file_truth_and_counts)
{
    char dir[] = "/tmp/rc_gen_XXXXXX", cmd[1024], *out;
    ASSERT(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "%s --seed 4 --events 3000 --invalid-share 0.1 --items 500 --users 300 "
             "--out %s/ev.jsonl --truth %s/truth.tsv 2>&1",
             RC_BIN("recalld-gen"), dir, dir);
    ASSERT_EQ(sh(&out, cmd), 0);
    unsigned long long total, valid, invalid;
    const char *p = strstr(out, "wrote ");
    ASSERT(p);
    ASSERT_EQ(sscanf(p, "wrote %llu lines: %llu valid, %llu invalid", &total, &valid, &invalid), 3);
    ASSERT_EQ(total, 3000);
    ASSERT_EQ(valid + invalid, 3000);
    ASSERT_GT(invalid, 200);
    ASSERT_LT(invalid, 400);
    free(out);
    snprintf(cmd, sizeof cmd,
             "wc -l < %s/ev.jsonl; wc -l < %s/truth.tsv; wc -l < %s/truth.tsv.users;"
             " head -2 %s/truth.tsv; head -2 %s/truth.tsv.users",
             dir, dir, dir, dir, dir);
    ASSERT_EQ(sh(&out, cmd), 0);
    unsigned a, b, c;
    ASSERT_EQ(sscanf(out, "%u %u %u", &a, &b, &c), 3);
    ASSERT_EQ(a, 3000);
    ASSERT_EQ(b, 501);
    ASSERT_EQ(c, 301);
    ASSERT(strstr(out, "item_id\tcommunity\tcity\tcate\ni0\t"));
    ASSERT(strstr(out, "user_id\thome_city\tcommunities\nu0\tc"));
    free(out);
    /* same seed, same bytes; bad flag is a usage error */
    snprintf(cmd, sizeof cmd,
             "%s --seed 4 --events 3000 --invalid-share 0.1 --items 500 --users 300 2>/dev/null"
             " | cmp - %s/ev.jsonl && %s --zipf x 2>&1; echo rc=$?",
             RC_BIN("recalld-gen"), dir, RC_BIN("recalld-gen"));
    ASSERT_EQ(sh(&out, cmd), 0);
    ASSERT(strstr(out, "--zipf: expected a number"));
    ASSERT(strstr(out, "rc=2"));
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ASSERT_EQ(system(cmd), 0);
}

TEST(gen_cli_kafka_mock_delivery)
{
    char err[256], cmd[1024], *out;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ASSERT_EQ(rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err), RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ASSERT(rk);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
    ASSERT(mc);
    ASSERT_EQ(rd_kafka_mock_topic_create(mc, "clicks_gen", 4, 1), 0);
    snprintf(cmd, sizeof cmd,
             "%s --events 5000 --invalid-share 0.05 --brokers %s --topic clicks_gen 2>&1",
             RC_BIN("recalld-gen"), rd_kafka_mock_cluster_bootstraps(mc));
    int rc = sh(&out, cmd);
    if (rc != 0)
        RC__FAIL("exit %d: %s", rc, out);
    ASSERT(strstr(out, "delivered 5000, failed 0"));
    free(out);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
}

TEST(gen_cli_unreachable_brokers_fail_fast)
{
    char cmd[512], *out;
    snprintf(cmd, sizeof cmd, "%s --events 10 --brokers 127.0.0.1:1 --timeout-ms 1500 2>&1",
             RC_BIN("recalld-gen"));
    uint64_t t0 = rc_now_ns();
    int rc = sh(&out, cmd);
    double s = (double)(rc_now_ns() - t0) / 1e9;
    ASSERT_NE(rc, 0);
    /* its own timeout ended it (how fast the machine ran it is not the point) */
    ASSERT(strstr(out, "cannot reach Kafka brokers '127.0.0.1:1' within 1500 ms"));
    fprintf(stderr, "recalld-gen gave up after %.1f s\n", s);
    free(out);
}

/* What `recalld-gen --brokers` produced, read back from a recalld-broker: every
 * message is keyed by its user ("u<n>", also for the malformed lines), all of
 * a user's clicks are in one partition in the order generated (compared line
 * by line with the same stream regenerated in-process), nothing is missing or
 * repeated, and the default partitioner spread the users over every partition. */
TEST(gen_cli_kafka_keyed_by_user)
{
    enum { PARTS = 16, USERS = 2000, EVENTS = 20000 };
    const rc_gen_opts o = {
        .seed = 11, .events = EVENTS, .users = USERS, .items = 1000, .invalid_share = 0.05};
    e2e_broker b;
    char err[256], cmd[1024], *out;

    e2e_broker_start(&b, PARTS, NULL);
    snprintf(cmd, sizeof cmd,
             "%s --seed 11 --events %d --users %d --items 1000 --invalid-share 0.05 "
             "--brokers %s --topic clicks >/dev/null 2>&1",
             RC_BIN("recalld-gen"), EVENTS, USERS, b.bootstrap);
    int rc = sh(&out, cmd);
    if (rc != 0)
        RC__FAIL("recalld-gen exit %d: %s", rc, out);
    free(out);

    /* The same stream in-process: each user's lines in generation order. */
    static size_t at[EVENTS + 1];
    static uint32_t owner[EVENTS], first[USERS + 1], next_line[EVENTS], cursor[USERS];
    static int32_t part_of[USERS];
    char line[RC_GEN_LINE_MAX], *text = NULL;
    size_t len, cap = 0;
    rc_gen *g = mk(&o);
    rc_gen_info info;
    for (int i = 0; i < EVENTS; i++) {
        ASSERT_EQ(rc_gen_next(g, line, sizeof line, &len, &info), 0);
        if (at[i] + len > cap) {
            cap = cap ? 2 * cap : 1 << 20;
            text = realloc(text, cap);
            ASSERT(text);
        }
        memcpy(text + at[i], line, len);
        at[i + 1] = at[i] + len;
        owner[i] = info.user;
        first[info.user + 1]++;
    }
    rc_gen_destroy(g);
    for (int u = 0; u < USERS; u++)
        first[u + 1] += first[u];
    memcpy(cursor, first, sizeof cursor);
    for (int i = 0; i < EVENTS; i++)
        next_line[cursor[owner[i]]++] = (uint32_t)i; /* user-major, in order */
    memcpy(cursor, first, sizeof cursor);
    for (int u = 0; u < USERS; u++)
        part_of[u] = -1;

    /* Read every partition from the beginning (assigned, no group join). */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", b.bootstrap, err, sizeof err), 0);
    ASSERT_EQ(rd_kafka_conf_set(conf, "group.id", "test-gen-keys", err, sizeof err), 0);
    ASSERT_EQ(rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err), 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        RC__FAIL("consumer: %s", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    for (int p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(l, "clicks", p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ASSERT_EQ(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);

    int per_part[PARTS] = {0}, got = 0;
    uint64_t deadline = rc_now_ns() + 60000000000ull;
    while (got < EVENTS && rc_now_ns() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                RC__FAIL("consume: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        ASSERT(m->partition >= 0 && m->partition < PARTS);
        const char *k = m->key;
        ASSERT(k && m->key_len >= 2 && m->key_len < 12 && k[0] == 'u');
        uint32_t u = 0;
        for (size_t j = 1; j < m->key_len; j++) {
            ASSERT(k[j] >= '0' && k[j] <= '9');
            u = u * 10 + (uint32_t)(k[j] - '0');
        }
        ASSERT_LT(u, USERS);
        if (part_of[u] < 0)
            part_of[u] = m->partition;
        if (part_of[u] != m->partition)
            RC__FAIL("user u%u in partitions %d and %d", u, part_of[u], (int)m->partition);
        /* the user's next line, exactly: right key, in order, none skipped */
        ASSERT_LT(cursor[u], first[u + 1]);
        uint32_t want = next_line[cursor[u]++];
        size_t wlen = at[want + 1] - at[want];
        if (m->len != wlen || memcmp(m->payload, text + at[want], wlen) != 0)
            RC__FAIL("key u%u, partition %d, offset %lld: got '%.*s', expected '%.*s'", u,
                     (int)m->partition, (long long)m->offset, (int)m->len, (const char *)m->payload,
                     (int)wlen, text + at[want]);
        per_part[m->partition]++;
        got++;
        rd_kafka_message_destroy(m);
    }
    ASSERT_EQ(got, EVENTS);
    for (int u = 0; u < USERS; u++)
        ASSERT_EQ(cursor[u], first[u + 1]);
    /* Spread: every partition has data, none far above the mean (hashing
     * 2,000 users into 16 partitions: ~125 users each, +-10%). */
    int lo = EVENTS, hi = 0;
    for (int p = 0; p < PARTS; p++) {
        lo = per_part[p] < lo ? per_part[p] : lo;
        hi = per_part[p] > hi ? per_part[p] : hi;
    }
    printf("messages per partition: min %d, max %d, mean %d\n", lo, hi, EVENTS / PARTS);
    ASSERT_GT(lo, 0);
    ASSERT_LT(hi, 2 * EVENTS / PARTS);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    e2e_broker_stop(&b);
    free(text);
}

/* Item churn: every click goes to an item alive at its time, items appear
 * during the stream and fade out of it, and without the options the stream
 * is the one it always was. */
TEST(gen_item_churn_lives_and_fades)
{
    /* ~125 items per community, ~30 of them alive at a time: a community
     * without a living item (the fallback) does not happen here. */
    rc_gen_opts o = {.seed = 5,
                     .events = 40000,
                     .users = 400,
                     .items = 2000,
                     .communities = 16,
                     .cities = 4,
                     .item_life_days = 1,
                     .churn_days = 3};
    rc_gen *g = mk(&o);
    char line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info;
    int64_t t0 = 0, day = 86400000;
    uint8_t *first_day = calloc(o.items, 1), *last_day = calloc(o.items, 1);
    uint64_t n = 0, alive = 0;
    ASSERT(first_day && last_day);
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        rc_gen_item it;
        ASSERT_EQ(rc_gen_item_at(g, info.item, &it), 0);
        ASSERT_EQ(it.dies_ms - it.born_ms, day);
        alive += info.ts_ms >= it.born_ms && info.ts_ms < it.dies_ms;
        if (!n++)
            t0 = info.ts_ms;
        if (info.ts_ms < t0 + day)
            first_day[info.item] = 1;
        if (info.ts_ms >= t0 + 2 * day) /* the stream spans about 40000 / (34 * 400) days */
            last_day[info.item] = 1;
    }
    ASSERT_EQ(alive, n);
    /* Items of the first day have died by the third: (almost) no overlap. */
    unsigned both = 0, only_first = 0, only_last = 0;
    for (uint32_t i = 0; i < o.items; i++) {
        both += first_day[i] && last_day[i];
        only_first += first_day[i] && !last_day[i];
        only_last += last_day[i] && !first_day[i];
    }
    ASSERT_EQ(both, 0);
    ASSERT_GT(only_first, 200);
    ASSERT_GT(only_last, 200);
    rc_gen_destroy(g);
    free(first_day);
    free(last_day);

    /* Off: the same lines as before churn existed (line 2000 of seed 5, as
     * the generator wrote it then). */
    rc_gen_opts a = {.seed = 5, .events = 2000};
    rc_gen *ga = mk(&a);
    while (rc_gen_next(ga, line, sizeof line, &len, NULL) == 0)
        ;
    ASSERT_STREQ(line, "{\"user_id\":\"u4899\",\"item_id\":\"i1738\",\"city_id\":\"c1\","
                       "\"cate_id\":\"k2\",\"ts\":1700000630750,\"device\":\"d7\","
                       "\"tags\":[\"t2_0\",\"t2_0\",\"t2_2\"]}");
    rc_gen_item it;
    ASSERT_EQ(rc_gen_item_at(ga, 0, &it), 0);
    ASSERT(it.born_ms == INT64_MIN && it.dies_ms == INT64_MAX);
    rc_gen_destroy(ga);

    /* Churn without a life, or a negative life, is refused. */
    char err[256] = "";
    rc_gen *bad = NULL;
    o = (rc_gen_opts){.churn_days = 2};
    ASSERT_EQ(rc_gen_create(&o, &bad, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "churn_days"));
    o = (rc_gen_opts){.item_life_days = -1};
    ASSERT_EQ(rc_gen_create(&o, &bad, err, sizeof err), RC_EINVAL);
}
