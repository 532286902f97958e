/* consumer_int — internals shared by the consumer (src/consumer.c) and the
 * mock broker (src/mock_broker.c), not installed. Embedded mode runs the mock
 * inside the consumer: its host producer also carries the dead letters. */
#ifndef RECALLD_CONSUMER_INT_H
#define RECALLD_CONSUMER_INT_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdatomic.h>

#include "recalld/consumer.h"
#include "recalld/mock_broker.h"

#define FLUSH_TIMEOUT_MS 5000
#define DEFAULT_PARTS    8

struct rc_consumer_mock {
    rd_kafka_t *rk; /* producer hosting the cluster; also produces to it */
    rd_kafka_mock_cluster_t *mc;
    char *bootstrap;
    rc_consumer *owner;  /* embedded: gets the host's delivery reports; else NULL */
    atomic_int stopping; /* read by log callbacks on librdkafka threads */
};

/* librdkafka log lines (any thread) go to our log. */
void rc__consumer_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
/* One librdkafka property; the error names the key. */
int rc__consumer_conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errbuf,
                          size_t errlen);
/* Delivery report of a dead letter; opaque is the consumer. */
void rc__consumer_dlq_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
/* The mock cluster; owner != NULL: the host producer also serves that
 * consumer's dead letters (embedded mode). */
int rc__consumer_mock_new(int brokers, int partitions, const char *const *topics, size_t ntopics,
                          rc_consumer *owner, rc_consumer_mock **out, char *errbuf, size_t errlen);

#endif
