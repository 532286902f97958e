/* recalld-gen — writes a synthetic click stream (JSON lines) to a file, stdout
 * or a Kafka topic. See include/recalld/gen.h for the planted structure.
 * Exit: 0 ok, 1 output or delivery failure, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/gen.h"

struct args {
    rc_gen_opts g;
    const char *out, *truth, *brokers, *topic;
    double rate;    /* events per second, 0 = unpaced */
    int timeout_ms; /* broker reachability and final delivery */
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

static void usage(FILE *f)
{
    fputs("usage: recalld-gen [options]\n"
          "  --seed N            PRNG seed (default 1)\n"
          "  --events N          lines to write (default 100000, 0 = until interrupted)\n"
          "  --users N           users (default 10000)\n"
          "  --items N           items (default 5000)\n"
          "  --cities N          cities (default 8)\n"
          "  --cates N           categories / business lines (default 6)\n"
          "  --communities N     co-click communities (default 64)\n"
          "  --zipf S            popularity exponent inside a community (default 1.0)\n"
          "  --start-ts MS       first event time, epoch ms (default 1700000000000)\n"
          "  --invalid-share F   share of malformed lines, 0..1 (default 0)\n"
          "  --no-device         omit the device field\n"
          "  --no-tags           omit the tags field\n"
          "  --drift P           drifting interests: per session, probability of moving to a\n"
          "                      temporary interest (or back); tags keep the long-term one (0)\n"
          "  --truth FILE        write item truth TSV to FILE, user truth to FILE.users\n"
          "  --out FILE          output file ('-' = stdout; default stdout unless --brokers)\n"
          "  --rate R            pace to R events/s (default 0 = as fast as possible)\n"
          "  --brokers LIST      produce to Kafka (bootstrap servers) ...\n"
          "  --topic NAME        ... this topic (default clicks), key = user_id\n"
          "  --timeout-ms N      broker reachability / final delivery timeout (default 10000)\n",
          f);
}

static int parse_num(const char *name, const char *s, double lo, double hi, double *v)
{
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (errno || end == s || *end || !(*v >= lo && *v <= hi)) {
        fprintf(stderr, "recalld-gen: --%s: expected a number in [%g, %g], got '%s'\n", name, lo,
                hi, s);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        {"seed", 1, 0, 's'},        {"events", 1, 0, 'n'},
        {"users", 1, 0, 'u'},       {"items", 1, 0, 'i'},
        {"cities", 1, 0, 'c'},      {"cates", 1, 0, 'k'},
        {"communities", 1, 0, 'm'}, {"zipf", 1, 0, 'z'},
        {"start-ts", 1, 0, 'S'},    {"invalid-share", 1, 0, 'x'},
        {"truth", 1, 0, 'T'},       {"out", 1, 0, 'o'},
        {"rate", 1, 0, 'r'},        {"brokers", 1, 0, 'b'},
        {"topic", 1, 0, 't'},       {"timeout-ms", 1, 0, 'w'},
        {"no-device", 0, 0, 'D'},   {"no-tags", 0, 0, 'G'},
        {"drift", 1, 0, 'd'},
        {"help", 0, 0, 'h'},        {0, 0, 0, 0}};
    const double u32 = 4294967295.0, big = 9007199254740992.0;
    double v = 0;
    int c, idx;

    memset(a, 0, sizeof *a);
    a->g.events = 100000;
    a->topic = "clicks";
    a->timeout_ms = 10000;
    while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        const char *name = c == '?' || c == 'h' ? "" : longopts[idx].name;
        int bad = 0;
        switch (c) {
            case 's': bad = parse_num(name, optarg, 0, big, &v), a->g.seed = (uint64_t)v; break;
            case 'n': bad = parse_num(name, optarg, 0, big, &v), a->g.events = (uint64_t)v; break;
            case 'u': bad = parse_num(name, optarg, 1, u32, &v), a->g.users = (uint32_t)v; break;
            case 'i': bad = parse_num(name, optarg, 1, u32, &v), a->g.items = (uint32_t)v; break;
            case 'c': bad = parse_num(name, optarg, 1, u32, &v), a->g.cities = (uint32_t)v; break;
            case 'k': bad = parse_num(name, optarg, 1, u32, &v), a->g.cates = (uint32_t)v; break;
            case 'm':
                bad = parse_num(name, optarg, 1, u32, &v), a->g.communities = (uint32_t)v;
                break;
            case 'z': bad = parse_num(name, optarg, 0.01, 9.99, &a->g.zipf); break;
            case 'S':
                bad = parse_num(name, optarg, 1, big, &v), a->g.start_ts_ms = (int64_t)v;
                break;
            case 'x': bad = parse_num(name, optarg, 0, 1, &a->g.invalid_share); break;
            case 'd': bad = parse_num(name, optarg, 0, 1, &a->g.drift); break;
            case 'r': bad = parse_num(name, optarg, 0, 1e9, &a->rate); break;
            case 'w': bad = parse_num(name, optarg, 1, 3600000, &v), a->timeout_ms = (int)v; break;
            case 'T': a->truth = optarg; break;
            case 'o': a->out = optarg; break;
            case 'b': a->brokers = optarg; break;
            case 't': a->topic = optarg; break;
            case 'D': a->g.flags |= RC_GEN_NO_DEVICE; break;
            case 'G': a->g.flags |= RC_GEN_NO_TAGS; break;
            case 'h': usage(stdout); exit(0);
            default: usage(stderr); return -1;
        }
        if (bad)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "recalld-gen: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!a->out && !a->brokers)
        a->out = "-";
    return 0;
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
        fprintf(stderr, "recalld-gen: kafka: %s: %s\n", key, err);
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
    struct args a;
    struct kafka k = {0};
    rc_gen *g = NULL;
    FILE *out = NULL;
    char err[256];
    int rc = 1;

    if (parse_args(argc, argv, &a))
        return 2;
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
