/* recalld-gen — writes a synthetic click stream (JSON lines) to a file, stdout
 * or a Kafka topic. See include/recalld/gen.h for the planted structure.
 * Exit: 0 ok, 1 output or delivery failure, 2 usage. */
#include <assert.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "recalld/cli.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/gen.h"

#define MAX_KAFKA_PROPS 64

struct args {
    rc_gen_opts g;
    const char *out, *truth, *brokers, *topic;
    double rate;    /* events per second, 0 = unpaced */
    int timeout_ms; /* broker reachability and final delivery */
    /* -X KEY=VALUE: librdkafka properties over the defaults, in order; the
     * key is copied, the value borrowed from argv. */
    char kafka_key[MAX_KAFKA_PROPS][RC_CONF_KAFKA_KEY_MAX + 1];
    const char *kafka_val[MAX_KAFKA_PROPS];
    int nkafka;
};

struct kafka {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    uint64_t delivered, failed;
    rd_kafka_resp_err_t first_err;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

enum {
    G_SEED,
    G_EVENTS,
    G_USERS,
    G_ITEMS,
    G_CITIES,
    G_CATES,
    G_COMMUNITIES,
    G_START_TS,
    G_TIMEOUT,
    G_NVALUES,
    G_KAFKA = 100
};

/* Numbers are read as doubles (1e6 is fine) and range-checked by the parser. */
struct gen_parse {
    struct args *a;
    double v[G_NVALUES];
    int set[G_NVALUES];
};

static int on_gen_opt(void *ud, const rc_cli_opt *o, const char *v, char *eb, size_t el)
{
    struct gen_parse *p = ud;
    struct args *a = p->a;
    if (o->id != G_KAFKA) {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !(x >= o->min && x <= o->max))
            return rc_err(eb, el, RC_EINVAL, "expected a number in [%g, %g], got '%.40s'", o->min,
                          o->max, v);
        p->v[o->id] = x;
        p->set[o->id] = 1;
        return 0;
    }
    const char *eq = strchr(v, '=');
    if (!eq || eq == v || (size_t)(eq - v) > RC_CONF_KAFKA_KEY_MAX)
        return rc_err(eb, el, RC_EINVAL,
                      "expected KEY=VALUE (a librdkafka property), got "
                      "'%.60s'",
                      v);
    if (strlen(eq + 1) > RC_CONF_KAFKA_VALUE_MAX)
        return rc_err(eb, el, RC_E2BIG, "%.*s: value of %zu bytes, at most %u", (int)(eq - v), v,
                      strlen(eq + 1), RC_CONF_KAFKA_VALUE_MAX);
    if (a->nkafka == MAX_KAFKA_PROPS)
        return rc_err(eb, el, RC_EINVAL, "at most %d properties", MAX_KAFKA_PROPS);
    snprintf(a->kafka_key[a->nkafka], sizeof a->kafka_key[0], "%.*s", (int)(eq - v), v);
    a->kafka_val[a->nkafka++] = eq + 1;
    return 0;
}

#define U32 4294967295.0
#define BIG 9007199254740992.0

static const rc_cli_opt gen_opts[] = {
    {"seed", 0, RC_CLI_CALL, NULL, "N", "PRNG seed (default 1)", 0, BIG, G_SEED},
    {"events", 0, RC_CLI_CALL, NULL, "N", "lines to write (default 100000, 0 = until interrupted)",
     0, BIG, G_EVENTS},
    {"users", 0, RC_CLI_CALL, NULL, "N", "users (default 10000)", 1, U32, G_USERS},
    {"items", 0, RC_CLI_CALL, NULL, "N", "items (default 5000)", 1, U32, G_ITEMS},
    {"cities", 0, RC_CLI_CALL, NULL, "N", "cities (default 8)", 1, U32, G_CITIES},
    {"cates", 0, RC_CLI_CALL, NULL, "N", "categories / business lines (default 6)", 1, U32,
     G_CATES},
    {"communities", 0, RC_CLI_CALL, NULL, "N", "co-click communities (default 64)", 1, U32,
     G_COMMUNITIES},
    {"zipf", 0, RC_CLI_DBL, NULL, "S", "popularity exponent inside a community (default 1.0)", 0.01,
     9.99, 0},
    {"start-ts", 0, RC_CLI_CALL, NULL, "MS", "first event time, epoch ms (default 1700000000000)",
     1, BIG, G_START_TS},
    {"invalid-share", 0, RC_CLI_DBL, NULL, "F", "share of malformed lines, 0..1 (default 0)", 0, 1,
     0},
    {"no-device", 0, RC_CLI_BOOL, NULL, NULL, "omit the device field", 0, 0, 0},
    {"no-tags", 0, RC_CLI_BOOL, NULL, NULL, "omit the tags field", 0, 0, 0},
    {"drift", 0, RC_CLI_DBL, NULL, "P",
     "drifting interests: per session, probability of moving to a\n"
     "temporary interest (or back); tags keep the long-term one (0)",
     0, 1, 0},
    {"item-life-days", 0, RC_CLI_DBL, NULL, "D",
     "item churn: each item lives D days, its popularity rising\n"
     "then fading (sin of its age); 0 = no churn (0)",
     0, 36500, 0},
    {"churn-days", 0, RC_CLI_DBL, NULL, "D",
     "item churn: births spread over [start - life, start + D):\n"
     "new items appear for D days (about the stream's span:\n"
     "events / (34 * users) days) (0)",
     0, 36500, 0},
    {"truth", 0, RC_CLI_STR, NULL, "FILE", "write item truth TSV to FILE, user truth to FILE.users",
     0, 0, 0},
    {"out", 0, RC_CLI_STR, NULL, "FILE",
     "output file ('-' = stdout; default stdout unless --brokers)", 0, 0, 0},
    {"rate", 0, RC_CLI_DBL, NULL, "R", "pace to R events/s (default 0 = as fast as possible)", 0,
     1e9, 0},
    {"brokers", 0, RC_CLI_STR, NULL, "LIST", "produce to Kafka (bootstrap servers) ...", 0, 0, 0},
    {"topic", 0, RC_CLI_STR, NULL, "NAME", "... this topic (default clicks), key = user_id", 0, 0,
     0},
    {"timeout-ms", 0, RC_CLI_CALL, NULL, "N",
     "broker reachability / final delivery timeout (default 10000)", 1, 3600000, G_TIMEOUT},
    {"", 'X', RC_CLI_CALL, NULL, "KEY=VALUE",
     "librdkafka producer property (repeatable), over the\n"
     "defaults: -X security.protocol=ssl -X linger.ms=50",
     0, 0, G_KAFKA},
};

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct args *a)
{
    struct gen_parse p = {.a = a};
    int no_device = 0, no_tags = 0, argi, rc;
    rc_cli_opt opts[RC_ARRAY_LEN(gen_opts)];
    memcpy(opts, gen_opts, sizeof opts);
    memset(a, 0, sizeof *a);
    a->g.events = 100000;
    a->topic = "clicks";
    a->timeout_ms = 10000;
    /* Where the typed options go (the table is static, the struct is not). */
    void *dest[] = {&a->g.zipf,       &a->g.invalid_share, &no_device,
                    &no_tags,         &a->g.drift,         &a->g.item_life_days,
                    &a->g.churn_days, &a->truth,           &a->out,
                    &a->rate,         &a->brokers,         &a->topic};
    size_t nd = 0;
    for (size_t i = 0; i < RC_ARRAY_LEN(opts); i++)
        if (opts[i].type != RC_CLI_CALL && nd < RC_ARRAY_LEN(dest))
            opts[i].dest = dest[nd++];
    assert(nd == RC_ARRAY_LEN(dest)); /* one destination per typed option, in table order */
    rc_cli_spec s = {.prog = "recalld-gen",
                     .synopsis = "[options]",
                     .about = "Writes a synthetic click stream (JSON lines) to a file, stdout "
                              "or a Kafka topic.",
                     .opts = opts,
                     .nopts = RC_ARRAY_LEN(opts),
                     .fn = on_gen_opt,
                     .ud = &p};
    if ((rc = rc_cli_args(&s, argc, argv, &argi)) >= 0)
        return rc;
    if (p.set[G_SEED])
        a->g.seed = (uint64_t)p.v[G_SEED];
    if (p.set[G_EVENTS])
        a->g.events = (uint64_t)p.v[G_EVENTS];
    if (p.set[G_START_TS])
        a->g.start_ts_ms = (int64_t)p.v[G_START_TS];
    if (p.set[G_TIMEOUT])
        a->timeout_ms = (int)p.v[G_TIMEOUT];
    uint32_t *u32[] = {[G_USERS] = &a->g.users,
                       [G_ITEMS] = &a->g.items,
                       [G_CITIES] = &a->g.cities,
                       [G_CATES] = &a->g.cates,
                       [G_COMMUNITIES] = &a->g.communities};
    for (int i = G_USERS; i <= G_COMMUNITIES; i++)
        if (p.set[i])
            *u32[i] = (uint32_t)p.v[i];
    a->g.flags |= (no_device ? RC_GEN_NO_DEVICE : 0) | (no_tags ? RC_GEN_NO_TAGS : 0);
    if (a->nkafka && !a->brokers)
        return rc_cli_usage_error("recalld-gen",
                                  "-X needs --brokers (it sets producer properties)");
    if (!a->out && !a->brokers)
        a->out = "-";
    return -1;
}

static int write_truth(const rc_gen *g, const char *path)
{
    char upath[4096];
    snprintf(upath, sizeof upath, "%s.users", path);
    FILE *fi = fopen(path, "w"), *fu = fopen(upath, "w");
    int rc = fi && fu ? rc_gen_write_truth(g, fi, fu) : RC_EIO;
    if ((fi && fclose(fi)) || (fu && fclose(fu)))
        rc = RC_EIO;
    if (rc)
        fprintf(stderr, "recalld-gen: truth: %s: %s\n", fi ? upath : path,
                errno ? strerror(errno) : rc_strerror(rc));
    return rc;
}

/* ---- Kafka ----------------------------------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct kafka *k = opaque;
    (void)rk;
    if (m->err) {
        if (!k->failed++)
            k->first_err = m->err;
    } else {
        k->delivered++;
    }
}

static int set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
    char err[256];
    if (rd_kafka_conf_set(conf, key, val, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "recalld-gen: kafka: %s: %s\n", key, err); /* names -X's key too */
        return -1;
    }
    return 0;
}

static int kafka_open(struct kafka *k, const struct args *a)
{
    char err[512], tmo[32];
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    snprintf(tmo, sizeof tmo, "%d", a->timeout_ms * 3);
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (set(conf, "bootstrap.servers", a->brokers) || set(conf, "linger.ms", "5") ||
        set(conf, "batch.num.messages", "10000") || set(conf, "message.timeout.ms", tmo) ||
        set(conf, "client.id", "recalld-gen") ||
        /* Every message is keyed by its user ("u<n>", run below): a keyed
         * message goes to crc32(key) % partitions under librdkafka's default
         * partitioner, named here so the spread does not depend on a default.
         * One user's clicks stay in order in one partition, and thousands of
         * users spread the load evenly over all partitions (unkeyed, the
         * sticky partitioner would send each ~10 ms run of messages to one
         * random partition: uneven in the short run, and no per-user order). */
        set(conf, "partitioner", "consistent_random") ||
        /* Idempotent: a retried produce request must not duplicate clicks. */
        set(conf, "enable.idempotence", "true")) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    for (int i = 0; i < a->nkafka; i++) /* -X: over the defaults above */
        if (set(conf, a->kafka_key[i], a->kafka_val[i])) {
            rd_kafka_conf_destroy(conf);
            return -1;
        }
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!k->rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "recalld-gen: kafka: %s\n", err);
        return -1;
    }
    conf = NULL; /* owned by rk now */
    /* a metadata round trip proves a broker answers before we produce */
    rd_kafka_resp_err_t e = rd_kafka_metadata(k->rk, 0, NULL, &md, a->timeout_ms);
    if (e) {
        fprintf(stderr, "recalld-gen: cannot reach Kafka brokers '%s' within %d ms: %s\n",
                a->brokers, a->timeout_ms, rd_kafka_err2str(e));
        return -1;
    }
    rd_kafka_metadata_destroy(md);
    k->rkt = rd_kafka_topic_new(k->rk, a->topic, NULL);
    if (!k->rkt) {
        fprintf(stderr, "recalld-gen: kafka: topic %s: %s\n", a->topic,
                rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    return 0;
}

static int kafka_send(struct kafka *k, const char *line, size_t len, const char *key, size_t klen)
{
    for (;;) {
        if (rd_kafka_produce(k->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)line, len,
                             key, klen, NULL) == 0)
            return 0;
        rd_kafka_resp_err_t e = rd_kafka_last_error();
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "recalld-gen: kafka: produce: %s\n", rd_kafka_err2str(e));
            return -1;
        }
        rd_kafka_poll(k->rk, 50); /* queue full: serve delivery reports, retry */
        if (stop)
            return -1;
    }
}

/* Waits for every outstanding delivery; returns 0 when all succeeded. */
static int kafka_close(struct kafka *k, int timeout_ms)
{
    int rc = 0;
    if (!k->rk)
        return 0;
    if (k->rkt) {
        rd_kafka_flush(k->rk, timeout_ms);
        int left = rd_kafka_outq_len(k->rk);
        if (left > 0) {
            fprintf(stderr, "recalld-gen: kafka: %d messages undelivered after %d ms\n", left,
                    timeout_ms);
            rc = -1;
        }
        fprintf(stderr, "recalld-gen: kafka: delivered %llu, failed %llu%s%s\n",
                (unsigned long long)k->delivered, (unsigned long long)k->failed,
                k->failed ? ", first error: " : "",
                k->failed ? rd_kafka_err2str(k->first_err) : "");
        if (k->failed)
            rc = -1;
        rd_kafka_topic_destroy(k->rkt);
    }
    rd_kafka_destroy(k->rk);
    return rc;
}

/* ---- main loop --------------------------------------------------------------- */

static void pace(const struct args *a, uint64_t t0, uint64_t n)
{
    uint64_t due = t0 + (uint64_t)((double)n * 1e9 / a->rate), now = rc_now_ns();
    if (due > now + 200000) {
        struct timespec ts = {(time_t)((due - now) / 1000000000u),
                              (long)((due - now) % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

static void progress(uint64_t n, uint64_t t0, int final)
{
    double s = (double)(rc_now_ns() - t0) / 1e9;
    fprintf(stderr, "\rrecalld-gen: %llu lines, %.0f lines/s%s", (unsigned long long)n,
            s > 0 ? (double)n / s : 0.0, final ? "\n" : "");
}

static int run(rc_gen *g, const struct args *a, FILE *out, struct kafka *k)
{
    char line[RC_GEN_LINE_MAX], key[16];
    size_t len;
    rc_gen_info info;
    uint64_t n = 0, t0 = rc_now_ns(), last = t0;
    int tty = isatty(2), rc;

    while (!stop && (rc = rc_gen_next(g, line, sizeof line, &len, &info)) == 0) {
        if (out) {
            line[len] = '\n';
            if (fwrite(line, 1, len + 1, out) != len + 1) {
                fprintf(stderr, "recalld-gen: write: %s\n", strerror(errno));
                return -1;
            }
        }
        if (k->rk) {
            int kl = snprintf(key, sizeof key, "u%u", info.user);
            if (kafka_send(k, line, len, key, (size_t)kl))
                return -1;
            if ((n & 255) == 0)
                rd_kafka_poll(k->rk, 0);
        }
        n++;
        if (a->rate > 0)
            pace(a, t0, n);
        if (tty && (n & 1023) == 0 && rc_now_ns() - last >= 1000000000u) {
            last = rc_now_ns();
            progress(n, t0, 0);
        }
    }
    if (tty)
        progress(n, t0, 1);
    return 0;
}

int main(int argc, char **argv)
{
    struct kafka k = {0};
    rc_gen *g = NULL;
    FILE *out = NULL;
    char err[256];
    int rc = 1;

    static struct args a; /* -X keys: ~16 KiB */
    if ((rc = parse_args(argc, argv, &a)) >= 0)
        return rc;
    rc = 1;
    if (rc_gen_create(&a.g, &g, err, sizeof err)) {
        fprintf(stderr, "recalld-gen: %s\n", err);
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    if (a.truth && write_truth(g, a.truth))
        goto out_gen;
    if (a.out) {
        out = strcmp(a.out, "-") == 0 ? stdout : fopen(a.out, "w");
        if (!out) {
            fprintf(stderr, "recalld-gen: %s: %s\n", a.out, strerror(errno));
            goto out_gen;
        }
        setvbuf(out, NULL, _IOFBF, 1 << 20);
    }
    if (a.brokers && kafka_open(&k, &a))
        goto out_close;
    rc = run(g, &a, out, &k) ? 1 : 0;
out_close:
    if (kafka_close(&k, a.timeout_ms))
        rc = 1;
    if (out && (fflush(out) || (out != stdout ? fclose(out) : 0))) {
        fprintf(stderr, "recalld-gen: %s: %s\n", a.out, strerror(errno));
        rc = 1;
    }
    rc_gen_counts c = rc_gen_counts_get(g);
    fprintf(stderr, "recalld-gen: wrote %llu lines: %llu valid, %llu invalid\n",
            (unsigned long long)(c.valid + c.invalid), (unsigned long long)c.valid,
            (unsigned long long)c.invalid);
out_gen:
    rc_gen_destroy(g);
    return rc;
}
