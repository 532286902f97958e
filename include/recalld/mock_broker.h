/* mock_broker — librdkafka's mock Kafka cluster inside this process, with fault
 * injection: what `recalld --embedded-kafka` (consumer.h), recalld-broker and
 * bench/consumer.c run. */
#ifndef RECALLD_MOCK_BROKER_H
#define RECALLD_MOCK_BROKER_H

#include <stddef.h>

/* The mock cluster alone (what embedded mode and recalld-broker run): `brokers`
 * mock brokers (0 = 1), each topic in topics[0..ntopics) created with
 * `partitions` partitions (0 = 8), replication factor 1.
 * librdkafka 2.0.2's mock keeps only about segment.bytes (~5 MiB) per partition
 * and silently drops older data: spread load over partitions and consume while
 * producing. Starts librdkafka threads; the caller frees with
 * rc_consumer_mock_destroy. */
typedef struct rc_consumer_mock rc_consumer_mock;
int rc_consumer_mock_start(int brokers, int partitions, const char *const *topics, size_t ntopics,
                           rc_consumer_mock **out, char *errbuf, size_t errlen);
/* "127.0.0.1:PORT,...": borrowed, valid until destroy. */
const char *rc_consumer_mock_bootstrap(const rc_consumer_mock *m);
void rc_consumer_mock_destroy(rc_consumer_mock *m);

/* Fault injection on the mock (what recalld-broker reads on stdin), one
 * command per call; reply gets "ok" or "error: why". Commands:
 *   down ID|all, up ID|all      broker stops / resumes accepting connections
 *   leader TOPIC PART ID|-1     move a partition's leader (-1: leaderless)
 *   errors API COUNT ERROR      the next COUNT requests of API (name or key:
 *                               Fetch, OffsetCommit, JoinGroup...) fail with
 *                               ERROR (name as rd_kafka_err2name, or code)
 *   topic-error TOPIC ERROR     metadata reports ERROR for TOPIC (NO_ERROR clears)
 *   create TOPIC PARTITIONS     create a topic
 *   rtt ID MS                   broker round-trip delay
 * Broker ids start at 1. Returns 0, RC_EINVAL or RC_EKAFKA. Any thread. */
int rc_consumer_mock_command(rc_consumer_mock *m, const char *line, char *reply, size_t cap);

#endif
