/* End-to-end: the real recalld binary on its embedded Kafka, fed by the real
 * recalld-gen (and kcat) through Kafka, checked over the Unix socket. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/gen.h"
#include "test.h"

#define GEN_FLAGS "--users 3000 --items 3000 --cities 4 --cates 4 --communities 40"

static rc_gen *make_gen(uint64_t seed, uint64_t events, double invalid)
{
    rc_gen_opts o = {.seed = seed,
                     .events = events,
                     .users = 3000,
                     .items = 3000,
                     .cities = 4,
                     .cates = 4,
                     .communities = 40,
                     .invalid_share = invalid};
    rc_gen *g = NULL;
    char err[256];
    ASSERT_EQ(rc_gen_create(&o, &g, err, sizeof err), 0);
    return g;
}

static void produce_gen(const e2e_daemon *d, uint64_t seed, uint64_t events, double invalid)
{
    char *out = NULL;
    int st =
        e2e_sh(&out,
               RC_BIN("recalld-gen") " --brokers '%s' --topic clicks --seed %llu --events %llu "
                                     "--invalid-share %g " GEN_FLAGS " >/dev/null 2>%s/gen.err",
               d->bootstrap, (unsigned long long)seed, (unsigned long long)events, invalid, d->dir);
    if (st != 0) {
        char *err = NULL;
        e2e_sh(&err, "cat %s/gen.err", d->dir);
        RC__FAIL("recalld-gen failed (%d): %s", st, err);
    }
    free(out);
}

static long long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct target {
    uint32_t user, item;
} target;

/* Popularity top-50 of the prefix, for the baseline. */
static void top50(const uint32_t *count, uint32_t nitems, uint32_t *top)
{
    for (int k = 0; k < 70; k++) {
        uint32_t best = UINT32_MAX;
        for (uint32_t i = 0; i < nitems; i++) {
            int taken = 0;
            for (int j = 0; j < k && !taken; j++)
                taken = top[j] == i;
            if (!taken && (best == UINT32_MAX || count[i] > count[best]))
                best = i;
        }
        top[k] = best;
    }
}

#define HIST 20 /* = recall.window: the clicks the daemon excludes */

typedef struct hist {
    uint32_t item[HIST];
    uint32_t n, next;
} hist;

static int in_hist(const hist *h, uint32_t item)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (h->item[i] == item)
            return 1;
    return 0;
}

/* A wait's limit ends before the case's alarm, so a wait that never ends
 * fails with its own message (the runner's timeout only says "timeout"). */
TEST(e2e_waits_end_before_the_case_alarm)
{
    unsetenv("RC_TEST_TIME_SCALE"); /* this case's own process */
    unsigned saved = alarm(0);
    ASSERT_EQ(e2e_scaled_ms(300000), 300000); /* no alarm: the scaled limit */
    alarm(100);
    long long ms = e2e_scaled_ms(300000);
    ASSERT_LE(ms, 85000);
    ASSERT_GE(ms, 50000);
    ASSERT_EQ(e2e_scaled_ms(1000), 1000); /* a short wait keeps its limit */
    alarm(10);
    ASSERT_LE(e2e_scaled_ms(300000), 5000); /* half of what is left, at least */
    ASSERT_GT(alarm(0), 8u);                /* the alarm itself is kept */
    alarm(saved);
}

/* Next-click hit rate: for each user of the prefix, the first later click on an
 * item that the user did not click recently (the daemon excludes those) and
 * that the prefix contains. Popularity = the 50 most clicked prefix items the
 * user did not click recently. */
TEST(e2e_stream_recall_beats_popularity)
{
    const uint64_t N = 60000, M = 20000, SEED = 11;
    e2e_daemon d;
    e2e_start(&d, NULL);
    produce_gen(&d, SEED, N, 0);

    rc_gen *g = make_gen(SEED, N + M, 0);
    uint32_t *count = calloc(3000, sizeof *count);
    uint8_t *seen_user = calloc(3000, 1), *has_target = calloc(3000, 1);
    hist *h = calloc(3000, sizeof *h);
    target *t = calloc(3000, sizeof *t);
    uint32_t nt = 0;
    char line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info;
    for (uint64_t i = 0; i < N + M; i++) {
        ASSERT_EQ(rc_gen_next(g, line, sizeof line, &len, &info), 0);
        if (i < N) {
            hist *u = &h[info.user];
            count[info.item]++;
            seen_user[info.user] = 1;
            u->item[u->next] = info.item;
            u->next = (u->next + 1) % HIST;
            u->n += u->n < HIST;
        } else if (seen_user[info.user] && !has_target[info.user] && count[info.item] > 0 &&
                   !in_hist(&h[info.user], info.item)) {
            has_target[info.user] = 1;
            t[nt++] = (target){info.user, info.item};
        }
    }
    uint32_t top[50 + HIST];
    top50(count, 3000, top);
    (void)top;
    json_t *st = e2e_wait_consumed(d.sock, (long long)N, 120000);
    ASSERT_EQ(e2e_int(st, "events.consumed"), (long long)N);
    ASSERT_EQ(e2e_int(st, "events.applied"), (long long)N);
    ASSERT_GT(e2e_int(st, "index.size"), 2000);
    json_decref(st);
    /* The model the recalls see is the one after the replays owed to the
     * stream (idle trainer time): wait for them and the index to settle, so
     * that a slow machine (TSan, load) scores the same model as a fast one. */
    long long deadline = e2e_now_ms() + e2e_scaled_ms(300000);
    for (;;) {
        st = e2e_request(d.sock, "{\"op\":\"stats\"}");
        long long owed = e2e_int(st, "training.replay.pending");
        long long pend = e2e_int(st, "index.pending");
        json_decref(st);
        if (owed == 0 && pend == 0)
            break;
        ASSERT(e2e_now_ms() < deadline);
        usleep(100000);
    }

    uint32_t hits = 0, pop_hits = 0, asked = 0, same_city = 0, in_fav = 0, returned = 0;
    for (uint32_t i = 0; i < nt && asked < 400; i++, asked++) {
        rc_gen_user u;
        ASSERT_EQ(rc_gen_user_at(g, t[i].user, &u), 0);
        json_t *r =
            e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u%u\",\"k\":50}", t[i].user);
        ASSERT(json_is_true(json_object_get(r, "ok")));
        json_t *items = json_object_get(r, "items"), *it;
        size_t j;
        char want[32];
        snprintf(want, sizeof want, "i%u", t[i].item);
        json_array_foreach(items, j, it) {
            const char *id = json_string_value(json_object_get(it, "item_id"));
            rc_gen_item gi;
            ASSERT(id != NULL);
            hits += strcmp(id, want) == 0;
            ASSERT_EQ(rc_gen_item_truth(g, id, strlen(id), &gi), 0);
            same_city += gi.city == u.home_city;
            for (uint32_t f = 0; f < u.nfav; f++)
                in_fav += gi.community == u.fav[f];
            returned++;
        }
        /* Popularity, with the user's recent clicks excluded as the daemon does. */
        for (uint32_t k = 0, taken = 0; k < 50 + HIST && taken < 50; k++) {
            if (in_hist(&h[t[i].user], top[k]))
                continue;
            taken++;
            pop_hits += top[k] == t[i].item;
        }
        json_decref(r);
    }
    double hr = (double)hits / asked, hr_pop = (double)pop_hits / asked;
    double city_share = (double)same_city / returned, fav_share = (double)in_fav / returned;
    printf(
        "HR@50 recall %.3f popularity %.3f; same city %.3f; favourite community %.3f (%u users)\n",
        hr, hr_pop, city_share, fav_share, asked);
    ASSERT_GT(asked, 200);
    ASSERT_EQ(returned, asked * 50);
    ASSERT_DBL_OP(hr, >=, 2 * hr_pop);
    ASSERT_DBL_OP(hr, >=, 0.25);
    ASSERT_DBL_OP(city_share, >=, 0.8);
    ASSERT_DBL_OP(fav_share, >=, 0.5);
    ASSERT_EQ(e2e_stop(&d), 0);
    rc_gen_destroy(g);
    free(count);
    free(seen_user);
    free(has_target);
    free(h);
    free(t);
}

static void kcat_produce(const e2e_daemon *d, const char *lines)
{
    char path[400];
    snprintf(path, sizeof path, "%s/kcat.in", d->dir);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs(lines, f);
    fclose(f);
    e2e_kcat(d, path);
}

static int similar_contains(const char *sock, const char *item, const char *want)
{
    json_t *r = e2e_request(sock, "{\"op\":\"similar\",\"item_id\":\"%s\",\"k\":10}", item);
    json_t *items = json_object_get(r, "items"), *it;
    size_t j;
    int found = 0;
    json_array_foreach(items, j, it) {
        const char *id = json_string_value(json_object_get(it, "item_id"));
        found |= id && strcmp(id, want) == 0;
    }
    json_decref(r);
    return found;
}

/* A daemon on the embedded cluster that applied the 20,000 valid clicks of
 * generator seed 5. */
static void start_with_clicks(e2e_daemon *d)
{
    e2e_start(d, NULL);
    produce_gen(d, 5, 20000, 0);
    json_t *st = e2e_wait_consumed(d->sock, 20000, 120000);
    ASSERT_EQ(e2e_int(st, "events.applied"), 20000);
    json_decref(st);
}

TEST(e2e_new_item_similar_within_bounded_time)
{
    e2e_daemon d;
    start_with_clicks(&d);

    /* The most clicked item of the stream, and its city/category. */
    rc_gen *g = make_gen(5, 20000, 0);
    uint32_t *cnt = calloc(3000, sizeof *cnt), best = 0;
    char gl[RC_GEN_LINE_MAX], known[32];
    size_t gll;
    rc_gen_info gi0;
    long long ts = 0;
    while (rc_gen_next(g, gl, sizeof gl, &gll, &gi0) == 0) {
        if (++cnt[gi0.item] > cnt[best])
            best = gi0.item;
        ts = gi0.ts_ms + 1000;
    }
    free(cnt);
    snprintf(known, sizeof known, "i%u", best);
    rc_gen_item gi;
    ASSERT_EQ(rc_gen_item_truth(g, known, strlen(known), &gi), 0);
    json_t *u = e2e_request(d.sock, "{\"op\":\"similar\",\"item_id\":\"%s\",\"k\":1}", known);
    ASSERT(json_is_true(json_object_get(u, "ok")));
    json_decref(u);
    char lines[4096];
    snprintf(lines, sizeof lines,
             "zz1\t{\"user_id\":\"zz1\",\"item_id\":\"%s\",\"city_id\":\"c%u\",\"cate_id\":\"k%u\","
             "\"ts\":%lld}\n"
             "zz1\t{\"user_id\":\"zz1\",\"item_id\":\"brand-new-1\",\"city_id\":\"c%u\",\"cate_"
             "id\":\"k%u\",\"ts\":%lld}\n",
             known, gi.city, gi.cate, ts, gi.city, gi.cate, ts + 5000);
    /* The latency is reported, not bounded (a loaded machine is slow, not
     * wrong): the item must show up, however long it takes. */
    long long t0 = ms_now();
    kcat_produce(&d, lines);
    int found = 0;
    while (!found && ms_now() - t0 < 120000) {
        found = similar_contains(d.sock, known, "brand-new-1");
        if (!found)
            usleep(2000);
    }
    long long dt = ms_now() - t0;
    printf("brand-new item in similar(%s) after %lld ms (including kcat start-up)\n", known, dt);
    ASSERT(found);
    /* And the other way round: the new item's neighbours include i1. */
    ASSERT(similar_contains(d.sock, "brand-new-1", known));
    ASSERT_EQ(e2e_stop(&d), 0);
    rc_gen_destroy(g);
}

static long long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    long long n = 0;
    int c;
    if (!f)
        return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* A malformed line of the generator and how it is malformed. */
typedef struct bad_line {
    char *line;
    size_t len;
    int kind; /* enum rc_gen_bad */
    int seen;
} bad_line;

/* The refusal reason the event contract (recalld/event.h) gives each kind of
 * malformed line. */
static const char *reason_of(int kind)
{
    switch (kind) {
    case RC_GEN_BAD_TRUNCATED:
        return "bad_json";
    case RC_GEN_BAD_ARRAY:
        return "not_object";
    case RC_GEN_BAD_MISSING:
    case RC_GEN_BAD_NULL:
        return "missing_field";
    case RC_GEN_BAD_WRONG_TYPE:
        return "wrong_type";
    case RC_GEN_BAD_NEGATIVE_TS:
    case RC_GEN_BAD_NUL_BYTE:
    case RC_GEN_BAD_FRACTION_TS:
        return "bad_value";
    case RC_GEN_BAD_OVERSIZED_ID:
    case RC_GEN_BAD_TOO_MANY_TAGS:
        return "oversized";
    default:
        return "?";
    }
}

/* Each dead letter is one of the generator's malformed lines (its payload, up
 * to the stored prefix), each line has exactly one dead letter, and the
 * letter's reason is the one its kind of fault calls for. */
static void check_dlq_reasons(const char *path, bad_line *bad, size_t nbad)
{
    FILE *f = fopen(path, "r");
    ASSERT(f != NULL);
    char *buf = NULL;
    size_t cap = 0, letters = 0, kinds[RC_GEN_BAD_KINDS] = {0};
    ssize_t n;
    while ((n = getline(&buf, &cap, f)) > 0) {
        json_error_t je;
        json_t *j = json_loadb(buf, (size_t)n, JSON_ALLOW_NUL, &je);
        if (!j)
            RC__FAIL("dead letter %zu is not JSON (%s): %.200s", letters, je.text, buf);
        const char *reason = json_string_value(json_object_get(j, "reason"));
        json_t *pl = json_object_get(j, "payload");
        long long full = e2e_int(j, "len");
        ASSERT(reason && json_is_string(pl) && full >= 0);
        const char *p = json_string_value(pl);
        size_t plen = json_string_length(pl);
        ASSERT_LE(plen, full);
        size_t k = 0;
        for (; k < nbad; k++)
            if (!bad[k].seen && bad[k].len == (size_t)full && memcmp(bad[k].line, p, plen) == 0)
                break;
        if (k == nbad)
            RC__FAIL("dead letter %zu matches no malformed line: %.200s", letters, buf);
        bad[k].seen = 1;
        if (strcmp(reason, reason_of(bad[k].kind)) != 0)
            RC__FAIL("dead letter %zu: reason \"%s\", want \"%s\" (fault kind %d): %.200s", letters,
                     reason, reason_of(bad[k].kind), bad[k].kind, buf);
        kinds[bad[k].kind]++;
        letters++;
        json_decref(j);
    }
    free(buf);
    fclose(f);
    ASSERT_EQ(letters, nbad);
    for (int k = 0; k < RC_GEN_BAD_KINDS; k++)
        ASSERT_GT(kinds[k], 0); /* every kind of fault was checked */
}

TEST(e2e_malformed_events_counted_none_lost)
{
    const uint64_t N = 30000;
    char dlq[400];
    e2e_daemon d;
    const char *extra[] = {"--dlq-file", NULL, NULL};
    char tmpl[] = "/tmp/rc-dlq-XXXXXX";
    ASSERT(mkdtemp(tmpl) != NULL);
    snprintf(dlq, sizeof dlq, "%s/dlq.jsonl", tmpl);
    extra[1] = dlq;
    e2e_start(&d, extra);
    produce_gen(&d, 9, N, 0.1);
    rc_gen *g = make_gen(9, N, 0.1);
    char line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info;
    bad_line *bad = calloc(N, sizeof *bad);
    size_t nbad = 0;
    ASSERT(bad != NULL);
    while (rc_gen_next(g, line, sizeof line, &len, &info) == 0) {
        if (info.valid)
            continue;
        ASSERT(info.bad >= 0 && info.bad < RC_GEN_BAD_KINDS);
        bad[nbad].line = malloc(len);
        memcpy(bad[nbad].line, line, len);
        bad[nbad].len = len;
        bad[nbad].kind = info.bad;
        nbad++;
    }
    rc_gen_counts c = rc_gen_counts_get(g);
    ASSERT_EQ(nbad, c.invalid);
    ASSERT_GT(c.invalid, N / 20);
    json_t *st = e2e_wait_consumed(d.sock, (long long)N, 120000);
    printf("valid %llu invalid %llu; daemon applied %lld invalid %lld\n",
           (unsigned long long)c.valid, (unsigned long long)c.invalid,
           e2e_int(st, "events.applied"), e2e_int(st, "events.invalid"));
    ASSERT_EQ(e2e_int(st, "events.consumed"), (long long)N);
    ASSERT_EQ(e2e_int(st, "events.applied"), (long long)c.valid);
    ASSERT_EQ(e2e_int(st, "events.invalid"), (long long)c.invalid);
    json_decref(st);
    /* Every refused event is in the dead-letter file, with its reason. */
    long long lines_dlq = -1;
    for (long long t0 = ms_now(); lines_dlq != (long long)c.invalid; usleep(50000)) {
        lines_dlq = count_lines(dlq);
        if (lines_dlq > (long long)c.invalid || ms_now() - t0 > 120000)
            break;
    }
    ASSERT_EQ(lines_dlq, (long long)c.invalid);
    ASSERT_EQ(e2e_stop(&d), 0);
    check_dlq_reasons(dlq, bad, nbad);
    for (size_t i = 0; i < nbad; i++)
        free(bad[i].line);
    free(bad);
    rc_gen_destroy(g);
}

/* Protocol errors get an error line and the connection stays usable. */
TEST(e2e_socket_errors_keep_connection)
{
    e2e_daemon d;
    e2e_start(&d, NULL);
    const char *req = "this is not json\n"
                      "{\"op\":\"nope\"}\n"
                      "{\"op\":\"recall\"}\n"
                      "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":0}\n"
                      "{\"op\":\"recall\",\"user_id\":[1]}\n"
                      "{\"op\":\"similar\",\"item_id\":\"no-such-item\"}\n"
                      "[1,2]\n"
                      "{\"op\":\"recall\",\"user_id\":\"ghost\",\"k\":5}\n"
                      "{\"op\":\"stats\"}\n";
    const char *want[] = {"bad_json",    "unknown_op",  "bad_request",
                          "bad_request", "bad_request", "unknown_item",
                          "bad_request", NULL,          NULL};
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    ASSERT_LT(strlen(d.sock), sizeof a.sun_path);
    memcpy(a.sun_path, d.sock, strlen(d.sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    ASSERT_EQ(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    char buf[1 << 16];
    size_t have = 0;
    for (size_t i = 0; i < RC_ARRAY_LEN(want); i++) {
        char *nl;
        while (!(nl = memchr(buf, '\n', have))) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            ASSERT(poll(&p, 1, 10000) == 1);
            ssize_t r = read(fd, buf + have, sizeof buf - have);
            ASSERT(r > 0);
            have += (size_t)r;
        }
        *nl = '\0';
        json_t *j = json_loads(buf, 0, NULL);
        ASSERT(j != NULL);
        if (want[i]) {
            ASSERT(json_is_false(json_object_get(j, "ok")));
            ASSERT_STREQ(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                         want[i]);
        } else {
            ASSERT(json_is_true(json_object_get(j, "ok")));
        }
        json_decref(j);
        size_t used = (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, have - used);
        have -= used;
    }
    close(fd);
    ASSERT_EQ(e2e_stop(&d), 0);
}

/* Item ids of a reply's "items" (at most cap), their count. */
static size_t reply_ids(json_t *r, char ids[][32], size_t cap)
{
    size_t j, n = 0;
    json_t *it;
    json_array_foreach(json_object_get(r, "items"), j, it)
        if (n < cap)
            snprintf(ids[n++], 32, "%s", json_string_value(json_object_get(it, "item_id")));
    return n;
}

static size_t overlap(char a[][32], size_t na, char b[][32], size_t nb)
{
    size_t o = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t k = 0; k < nb; k++)
            o += strcmp(a[i], b[k]) == 0;
    return o;
}

/* half_life_ms weights clicks by 2^(-age/H) (README): users P and Q click the
 * same two items A and B of the same city, an hour apart, in opposite orders.
 * Without decay (a plain mean) their vectors and rankings are identical; with
 * H = 1 min the older click weighs 2^-60, so each user's ranking follows its
 * newest click: P's recall shares more with similar(B) than with similar(A),
 * Q's the other way round. */

static void check_half_life(const e2e_daemon *d)
{
    rc_gen *g = make_gen(5, 20000, 0);
    uint32_t *cnt = calloc(3000, sizeof *cnt), a = 0, b = UINT32_MAX;
    char gl[RC_GEN_LINE_MAX], id[32];
    size_t gll;
    rc_gen_info gi;
    long long ts = 0;
    while (rc_gen_next(g, gl, sizeof gl, &gll, &gi) == 0) {
        if (++cnt[gi.item] > cnt[a])
            a = gi.item;
        ts = RC_MAX(ts, gi.ts_ms);
    }
    rc_gen_item ia, ib;
    snprintf(id, sizeof id, "i%u", a);
    ASSERT_EQ(rc_gen_item_truth(g, id, strlen(id), &ia), 0);
    for (uint32_t i = 0; i < 3000; i++) { /* the most clicked of A's city, another community */
        snprintf(id, sizeof id, "i%u", i);
        rc_gen_item x;
        ASSERT_EQ(rc_gen_item_truth(g, id, strlen(id), &x), 0);
        if (x.city == ia.city && x.community != ia.community &&
            (b == UINT32_MAX || cnt[i] > cnt[b]))
            b = i;
    }
    ASSERT(b != UINT32_MAX);
    snprintf(id, sizeof id, "i%u", b);
    ASSERT_EQ(rc_gen_item_truth(g, id, strlen(id), &ib), 0);
    free(cnt);
    rc_gen_destroy(g);
    char lines[2048];
    const long long H = 3600000;
    snprintf(lines, sizeof lines,
             "hlP\t{\"user_id\":\"hlP\",\"item_id\":\"i%u\",\"city_id\":\"c%u\",\"cate_id\":\"k%"
             "u\",\"ts\":%lld}\n"
             "hlP\t{\"user_id\":\"hlP\",\"item_id\":\"i%u\",\"city_id\":\"c%u\",\"cate_id\":\"k%"
             "u\",\"ts\":%lld}\n"
             "hlQ\t{\"user_id\":\"hlQ\",\"item_id\":\"i%u\",\"city_id\":\"c%u\",\"cate_id\":\"k%"
             "u\",\"ts\":%lld}\n"
             "hlQ\t{\"user_id\":\"hlQ\",\"item_id\":\"i%u\",\"city_id\":\"c%u\",\"cate_id\":\"k%"
             "u\",\"ts\":%lld}\n",
             a, ia.city, ia.cate, ts + 1000, b, ib.city, ib.cate, ts + 1000 + H, b, ib.city,
             ib.cate, ts + 1000, a, ia.city, ia.cate, ts + 1000 + H);
    kcat_produce(d, lines);
    json_decref(e2e_wait_consumed(d->sock, 20004, 120000));
    e2e_wait_model_still(d->sock); /* the model stands still between the recalls below */

    enum { K = 30 };
    static char p0[K][32], q0[K][32], p1[K][32], q1[K][32], sa[K][32], sb[K][32];
    json_t *r;
#define HL_RECALL(user, hl, out, n)                                                                \
    r = e2e_request(d->sock,                                                                       \
                    "{\"op\":\"recall\",\"user_id\":\"" user "\",\"k\":%d,"                        \
                    "\"half_life_ms\":%lld}",                                                      \
                    K, (long long)(hl));                                                           \
    ASSERT(json_is_true(json_object_get(r, "ok")));                                                \
    ASSERT(json_object_get(r, "fallback") == NULL);                                                \
    n = reply_ids(r, out, K);                                                                      \
    json_decref(r)
    size_t np0, nq0, np1, nq1, na, nb;
    HL_RECALL("hlP", 0, p0, np0);
    HL_RECALL("hlQ", 0, q0, nq0);
    HL_RECALL("hlP", 60000, p1, np1);
    HL_RECALL("hlQ", 60000, q1, nq1);
#undef HL_RECALL
    r = e2e_request(d->sock, "{\"op\":\"similar\",\"item_id\":\"i%u\",\"k\":%d}", a, K);
    na = reply_ids(r, sa, K);
    json_decref(r);
    r = e2e_request(d->sock, "{\"op\":\"similar\",\"item_id\":\"i%u\",\"k\":%d}", b, K);
    nb = reply_ids(r, sb, K);
    json_decref(r);
    ASSERT_EQ(np0, K);
    ASSERT_EQ(nq0, K);
    ASSERT_EQ(np1, K);
    ASSERT_EQ(nq1, K);
    size_t pa = overlap(p1, np1, sa, na), pb = overlap(p1, np1, sb, nb);
    size_t qa = overlap(q1, nq1, sa, na), qb = overlap(q1, nq1, sb, nb);
    printf(
        "half-life: no decay P/Q common %zu of %d; decayed P ~ similar(A) %zu, ~ similar(B) %zu; "
        "Q ~ A %zu, ~ B %zu\n",
        overlap(p0, np0, q0, nq0), K, pa, pb, qa, qb);
    for (size_t i = 0; i < K; i++) /* no decay: same clicks, same ranking */
        ASSERT_STREQ(p0[i], q0[i]);
    ASSERT_GT(pb, pa); /* P's newest click is B */
    ASSERT_GT(qa, qb); /* Q's newest click is A */
}

/* Recall options over the socket: multi_category plans and quotas, category
 * filter, time decay, batch requests. */
TEST(e2e_recall_modes_filters_and_batches)
{
    e2e_daemon d;
    start_with_clicks(&d);

    uint32_t checked = 0;
    for (uint32_t u = 0; u < 200 && checked < 30; u++) {
        json_t *r = e2e_request(
            d.sock, "{\"op\":\"recall\",\"user_id\":\"u%u\",\"k\":20,\"mode\":\"multi_category\"}",
            u);
        ASSERT(json_is_true(json_object_get(r, "ok")));
        json_t *plan = json_object_get(r, "categories"), *items = json_object_get(r, "items");
        if (!plan) { /* unknown user: popular fallback */
            json_decref(r);
            continue;
        }
        size_t i, j;
        json_t *p, *it;
        long long quota_sum = 0;
        double share_sum = 0;
        json_array_foreach(plan, i, p) {
            quota_sum += json_integer_value(json_object_get(p, "quota"));
            share_sum += json_real_value(json_object_get(p, "share")) +
                         (double)json_integer_value(json_object_get(p, "share"));
            long long filled = json_integer_value(json_object_get(p, "filled")), seen = 0;
            const char *cate = json_string_value(json_object_get(p, "cate"));
            json_array_foreach(items, j, it)
                seen += strcmp(json_string_value(json_object_get(it, "cate")), cate) == 0;
            ASSERT_EQ(seen, filled);
        }
        ASSERT_EQ(quota_sum, 20);
        ASSERT_NEAR(share_sum, 1.0, 1e-3);
        ASSERT_EQ(json_array_size(items), 20);
        /* every item belongs to a planned category */
        json_array_foreach(items, j, it) {
            int in_plan = 0;
            json_array_foreach(plan, i, p)
                in_plan |= strcmp(json_string_value(json_object_get(p, "cate")),
                                  json_string_value(json_object_get(it, "cate"))) == 0;
            ASSERT(in_plan);
        }
        checked++;
        json_decref(r);
    }
    ASSERT_GE(checked, 10);

    /* category filter: k items, every one of the category (k1 has ~750 items) */
    json_t *r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":10,"
                                    "\"categories\":[\"k1\"],\"half_life_ms\":600000}");
    ASSERT(json_is_true(json_object_get(r, "ok")));
    size_t j;
    json_t *it;
    ASSERT_EQ(json_array_size(json_object_get(r, "items")), 10);
    json_array_foreach(json_object_get(r, "items"), j, it)
        ASSERT_STREQ(json_string_value(json_object_get(it, "cate")), "k1");
    json_decref(r);

    check_half_life(&d);

    r = e2e_request(d.sock,
                    "{\"op\":\"recall\",\"users\":[\"u1\",\"u2\",\"nobody-here\"],\"k\":5}");
    ASSERT(json_is_true(json_object_get(r, "ok")));
    json_t *res = json_object_get(r, "results");
    ASSERT_EQ(json_array_size(res), 3);
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(res, 2), "user_id")),
                 "nobody-here");
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(res, 2), "fallback")), "popular");
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(json_array_size(json_object_get(json_array_get(res, (size_t)i), "items")), 5);
    json_decref(r);

    r = e2e_request(d.sock, "{\"op\":\"recall\",\"users\":[\"u1\",[2]],\"k\":5}");
    ASSERT(json_is_false(json_object_get(r, "ok")));
    ASSERT(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                  "users[1]") != NULL);
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"mode\":\"fancy\"}");
    ASSERT(json_is_false(json_object_get(r, "ok")));
    json_decref(r);
    ASSERT_EQ(e2e_stop(&d), 0);
}

/* CONFIG.md pipeline.background_cpus "auto" in the daemon: librdkafka's
 * threads (rdk:*, here the embedded cluster's too) and the engine's own
 * background threads (rc-*) on the background cores, so that fetching and
 * decoding the stream never takes a request's core; the loop thread on the
 * others (the request workers inherit its set). */
TEST(e2e_background_cpus_keep_kafka_off_the_request_cores)
{
    cpu_set_t all, bg, rest;
    if (!e2e_cpus_auto(&all, &bg, &rest))
        RC_SKIP("one core allowed: nothing to pin apart");
    char dir[] = "/tmp/rc-e2e-cpus-XXXXXX", conf[64];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(conf, sizeof conf, "%s/c.json", dir);
    FILE *f = fopen(conf, "w");
    ASSERT(f != NULL);
    fputs("{\"pipeline\":{\"background_cpus\":\"auto\"}}\n", f);
    ASSERT_EQ(fclose(f), 0);
    e2e_daemon d;
    const char *extra[] = {"--config", conf, NULL};
    e2e_start(&d, extra);
    produce_gen(&d, 5, 2000, 0);
    json_t *r = e2e_request(d.sock, "{\"op\":\"recall\",\"user_id\":\"u1\",\"k\":5}");
    json_decref(r);
    char tdir[64];
    snprintf(tdir, sizeof tdir, "/proc/%d/task", (int)d.pid);
    DIR *td = opendir(tdir);
    ASSERT(td != NULL);
    int rdk = 0, rc = 0, main_ok = 0;
    struct dirent *de;
    while ((de = readdir(td)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        pid_t tid = (pid_t)atoi(de->d_name);
        char path[400], comm[32] = "";
        snprintf(path, sizeof path, "%s/%s/comm", tdir, de->d_name);
        FILE *cf = fopen(path, "r");
        if (!cf)
            continue; /* the thread ended */
        if (!fgets(comm, sizeof comm, cf))
            comm[0] = '\0';
        fclose(cf);
        cpu_set_t set;
        if (sched_getaffinity(tid, sizeof set, &set) != 0)
            continue;
        if (tid == d.pid) {
            if (!CPU_EQUAL(&set, &rest))
                RC__FAIL("the loop thread is not on the request cores");
            main_ok = 1;
        } else if (strncmp(comm, "rdk:", 4) == 0) {
            if (!CPU_EQUAL(&set, &bg))
                RC__FAIL("librdkafka's thread %s is not on the background cores", comm);
            rdk++;
        } else if (strncmp(comm, "rc-", 3) == 0) {
            if (!CPU_EQUAL(&set, &bg))
                RC__FAIL("background thread %s is not on the background cores", comm);
            rc++;
        }
    }
    closedir(td);
    ASSERT(main_ok);
    ASSERT_GE(rdk, 2); /* librdkafka's main thread and a broker thread at least */
    ASSERT_GE(rc, 2);  /* the decoder and the trainer */
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s %s", d.dir, dir);
}
