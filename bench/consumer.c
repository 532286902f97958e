/* bench_consumer: consume throughput of rc_consumer from librdkafka's mock
 * cluster.
 *
 *   bench_consumer [messages (200000)] [batch (1024)]
 *
 * A mock cluster (8 partitions) is filled first (~110-byte JSON messages, keyed
 * by user), then a consumer joins and drains it on a libuv loop. Printed:
 * messages/s from the first message handed over to the last (fetch + queue +
 * hand-over; the mock's group join, ~3 s, is excluded and printed apart). The
 * mock keeps only ~5 MiB per partition: stay under ~250000 messages. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "recalld/common.h"
#include "recalld/consumer.h"
#include "recalld/log.h"
#include "recalld/mock_broker.h"

struct count {
    uint64_t n, want, first_ns, last_ns;
    uv_loop_t *loop;
};

static int on_batch(void *ud, const rc_kmsg *msgs, size_t n)
{
    struct count *c = ud;
    if (!c->n)
        c->first_ns = rc_now_ns();
    c->n += n;
    if (c->n >= c->want) {
        c->last_ns = rc_now_ns();
        uv_stop(c->loop);
    }
    return 0;
}

static int fill(const char *bootstrap, uint64_t n)
{
    char why[256], key[16], val[160];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, why, sizeof why) ||
        rd_kafka_conf_set(conf, "linger.ms", "20", why, sizeof why)) {
        fprintf(stderr, "bench_consumer: %s\n", why);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!rk)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof key, "u%d", (int)(i % 9973));
        int vl = snprintf(val, sizeof val,
                          "{\"user_id\":\"u%d\",\"item_id\":%d,\"city_id\":%d,\"cate_id\":%d,"
                          "\"ts\":%lld}",
                          (int)(i % 9973), (int)(i % 50000), (int)(i % 31), (int)(i % 17),
                          1700000000000LL + (long long)i);
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("clicks"), RD_KAFKA_V_KEY(key, (size_t)kl),
                          RD_KAFKA_V_VALUE(val, (size_t)vl),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY | RD_KAFKA_MSG_F_BLOCK),
                          RD_KAFKA_V_END);
        rd_kafka_poll(rk, 0);
    }
    int rc = rd_kafka_flush(rk, 60000) ? -1 : 0;
    rd_kafka_destroy(rk);
    return rc;
}

int main(int argc, char **argv)
{
    uint64_t want = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
    uint32_t batch = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1024;
    const char *topics[] = {"clicks", "clicks.dlq"};
    char err[256];
    rc_consumer_mock *m = NULL;
    rc_log_set_level(RC_LOG_WARN);
    if (rc_consumer_mock_start(1, 8, topics, 2, &m, err, sizeof err)) {
        fprintf(stderr, "bench_consumer: %s\n", err);
        return 1;
    }
    if (fill(rc_consumer_mock_bootstrap(m), want)) {
        fprintf(stderr, "bench_consumer: fill failed\n");
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct count cnt = {.want = want, .loop = &loop};
    rc_consumer_opts o = {.brokers = rc_consumer_mock_bootstrap(m),
                          .group = "bench",
                          .batch = batch,
                          .on_batch = on_batch,
                          .ud = &cnt};
    rc_consumer *c = NULL;
    uint64_t t0 = rc_now_ns();
    if (rc_consumer_start(&loop, &o, &c, err, sizeof err)) {
        fprintf(stderr, "bench_consumer: %s\n", err);
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    double s = (double)(cnt.last_ns - cnt.first_ns) / 1e9;
    printf("consumer: %llu messages, batch %u: %.0f msg/s (%.3f s after a %.2f s "
           "group join)\n",
           (unsigned long long)cnt.n, batch, (double)cnt.n / s, s,
           (double)(cnt.first_ns - t0) / 1e9);
    rc_consumer_close(c, NULL, NULL);
    rc_consumer_destroy(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rc_consumer_mock_destroy(m);
    return 0;
}
