/* mock_broker — librdkafka's mock cluster (rdkafka_mock.h) in this process, with
 * fault injection by text command: what the consumer's embedded mode and
 * recalld-broker run (include/recalld/mock_broker.h). */
#include "recalld/mock_broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "consumer_int.h"
#include "recalld/common.h"
#include "recalld/log.h"

#define MOD "consumer" /* log lines keep the module name they had in consumer.c */

/* The mock host is created without bootstrap.servers (the cluster does not
 * exist yet) and loses its brokers when the cluster stops first: expected, not
 * logged. */
static void mock_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const rc_consumer_mock *m = rd_kafka_opaque(rk);
    if (atomic_load(&m->stopping) || (!strcmp(fac, "CONFWARN") && strstr(buf, "bootstrap.servers")))
        return;
    rc__consumer_kafka_log(rk, level, fac, buf);
}

/* ---- mock cluster ---- */

static void mock_dr(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    rc_consumer_mock *m = opaque;
    if (m->owner)
        rc__consumer_dlq_dr(rk, msg, m->owner);
}

/* owner != NULL: the host producer also serves that consumer's dead letters. */
int rc__consumer_mock_new(int brokers, int partitions, const char *const *topics, size_t ntopics,
                          rc_consumer *owner, rc_consumer_mock **out, char *errbuf, size_t errlen)
{
    char why[256];
    rc_consumer_mock *m = calloc(1, sizeof *m);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = RC_ENOMEM;
    if (!m || !conf)
        goto out_free;
    m->owner = owner;
    rd_kafka_conf_set_opaque(conf, m);
    rd_kafka_conf_set_log_cb(conf, mock_log);
    rd_kafka_conf_set_dr_msg_cb(conf, mock_dr);
    if ((rc = rc__consumer_conf_set(conf, "client.id", "recalld-mock", errbuf, errlen)))
        goto out_free;
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!m->rk) {
        rc = rc_err(errbuf, errlen, RC_EKAFKA, "kafka: mock host: %s", why);
        goto out_free;
    }
    conf = NULL; /* owned by m->rk */
    m->mc = rd_kafka_mock_cluster_new(m->rk, brokers > 0 ? brokers : 1);
    if (!m->mc) {
        rc = rc_err(errbuf, errlen, RC_EKAFKA, "kafka: mock cluster: cannot start");
        goto out_free;
    }
    for (size_t i = 0; i < ntopics; i++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
            m->mc, topics[i], partitions > 0 ? partitions : DEFAULT_PARTS, 1);
        if (err) {
            rc = rc_err(errbuf, errlen, RC_EKAFKA, "kafka: mock topic %s: %s", topics[i],
                        rd_kafka_err2str(err));
            goto out_free;
        }
    }
    m->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(m->mc));
    if (!m->bootstrap) {
        rc = RC_ENOMEM;
        goto out_free;
    }
    rd_kafka_brokers_add(m->rk, m->bootstrap);
    *out = m;
    return 0;
out_free:
    if (conf)
        rd_kafka_conf_destroy(conf);
    rc_consumer_mock_destroy(m);
    if (rc == RC_ENOMEM)
        rc_err(errbuf, errlen, rc, "kafka: mock: out of memory");
    return rc;
}

int rc_consumer_mock_start(int brokers, int partitions, const char *const *topics, size_t ntopics,
                           rc_consumer_mock **out, char *errbuf, size_t errlen)
{
    if (!out || (ntopics && !topics) || brokers < 0 || partitions < 0)
        return rc_err(errbuf, errlen, RC_EINVAL, "mock: invalid argument");
    for (size_t i = 0; i < ntopics; i++)
        if (!topics[i] || !topics[i][0])
            return rc_err(errbuf, errlen, RC_EINVAL, "mock: empty topic name");
    return rc__consumer_mock_new(brokers, partitions, topics, ntopics, NULL, out, errbuf, errlen);
}

const char *rc_consumer_mock_bootstrap(const rc_consumer_mock *m)
{
    return m ? m->bootstrap : NULL;
}

void rc_consumer_mock_destroy(rc_consumer_mock *m)
{
    if (!m)
        return;
    if (m->rk && rd_kafka_flush(m->rk, FLUSH_TIMEOUT_MS))
        rc_log_warn(MOD, "mock host: messages lost at shutdown", "pending=%d",
                    rd_kafka_outq_len(m->rk));
    atomic_store(&m->stopping, 1);
    /* The cluster's thread uses the host handle: cluster first. */
    if (m->mc)
        rd_kafka_mock_cluster_destroy(m->mc);
    if (m->rk)
        rd_kafka_destroy(m->rk);
    free(m->bootstrap);
    free(m);
}

/* ---- mock fault injection ---- */

static const struct {
    const char *name;
    int16_t key;
} api_keys[] = {{"Produce", 0},          {"Fetch", 1},        {"ListOffsets", 2},
                {"Metadata", 3},         {"OffsetCommit", 8}, {"OffsetFetch", 9},
                {"FindCoordinator", 10}, {"JoinGroup", 11},   {"Heartbeat", 12},
                {"LeaveGroup", 13},      {"SyncGroup", 14},   {"ApiVersions", 18}};

static int parse_api(const char *s, int16_t *key)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end && v >= 0 && v < 100) {
        *key = (int16_t)v;
        return 0;
    }
    for (size_t i = 0; i < RC_ARRAY_LEN(api_keys); i++)
        if (strcasecmp(s, api_keys[i].name) == 0) {
            *key = api_keys[i].key;
            return 0;
        }
    return -1;
}

/* A Kafka error by name ("NOT_LEADER_FOR_PARTITION", as rd_kafka_err2name
 * spells it) or number. */
static int parse_kerr(const char *s, rd_kafka_resp_err_t *err)
{
    const struct rd_kafka_err_desc *d;
    size_t n;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end) {
        *err = (rd_kafka_resp_err_t)v;
        return 0;
    }
    rd_kafka_get_err_descs(&d, &n);
    for (size_t i = 0; i < n; i++)
        if (d[i].name && strcasecmp(d[i].name, s) == 0) {
            *err = d[i].code;
            return 0;
        }
    return -1;
}

static int parse_broker(const char *s, int32_t *id)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (strcmp(s, "all") == 0) {
        *id = -1;
        return 0;
    }
    if (!*s || *end || v < 1 || v > 1000)
        return -1;
    *id = (int32_t)v;
    return 0;
}

int rc_consumer_mock_command(rc_consumer_mock *m, const char *line, char *reply, size_t cap)
{
    char cmd[32] = "", a[256] = "", b[64] = "", c[64] = "";
    int32_t id = 0;
    int16_t api;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (!m || !line)
        return rc_err(reply, cap, RC_EINVAL, "error: no cluster or command");
    int n = sscanf(line, "%31s %255s %63s %63s", cmd, a, b, c);
    if (n >= 2 && (!strcmp(cmd, "down") || !strcmp(cmd, "up"))) {
        if (parse_broker(a, &id))
            return rc_err(reply, cap, RC_EINVAL, "error: %s: expected a broker id or all", cmd);
        err = cmd[0] == 'd' ? rd_kafka_mock_broker_set_down(m->mc, id)
                            : rd_kafka_mock_broker_set_up(m->mc, id);
    } else if (n == 4 && !strcmp(cmd, "leader")) {
        if (parse_broker(c, &id) && strcmp(c, "-1"))
            return rc_err(reply, cap, RC_EINVAL, "error: leader: expected a broker id or -1");
        err = rd_kafka_mock_partition_set_leader(m->mc, a, atoi(b), strcmp(c, "-1") ? id : -1);
    } else if (n == 4 && !strcmp(cmd, "errors")) {
        rd_kafka_resp_err_t e[64];
        long cnt = strtol(b, NULL, 10);
        if (parse_api(a, &api) || cnt < 1 || cnt > 64 || parse_kerr(c, &e[0]))
            return rc_err(reply, cap, RC_EINVAL, "error: errors API COUNT(1..64) ERROR");
        for (long i = 1; i < cnt; i++)
            e[i] = e[0];
        rd_kafka_mock_push_request_errors_array(m->mc, api, (size_t)cnt, e);
    } else if (n == 3 && !strcmp(cmd, "topic-error")) {
        if (parse_kerr(b, &err))
            return rc_err(reply, cap, RC_EINVAL, "error: topic-error TOPIC ERROR");
        rd_kafka_mock_topic_set_error(m->mc, a, err);
        err = RD_KAFKA_RESP_ERR_NO_ERROR;
    } else if (n == 3 && !strcmp(cmd, "create")) {
        err = rd_kafka_mock_topic_create(m->mc, a, atoi(b), 1);
    } else if (n == 3 && !strcmp(cmd, "rtt")) {
        if (parse_broker(a, &id) || id < 0)
            return rc_err(reply, cap, RC_EINVAL, "error: rtt ID MS");
        err = rd_kafka_mock_broker_set_rtt(m->mc, id, atoi(b));
    } else {
        return rc_err(reply, cap, RC_EINVAL,
                      "error: unknown command \"%s\" (down, up, leader, "
                      "errors, topic-error, create, rtt)",
                      cmd);
    }
    if (err)
        return rc_err(reply, cap, RC_EKAFKA, "error: %s", rd_kafka_err2str(err));
    rc_log_info(MOD, "mock fault command", "command=\"%s\"", line);
    return rc_err(reply, cap, 0, "ok");
}
