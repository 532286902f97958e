/* repart — a trainer's repartitioner: the click stream, re-keyed by city
 * (docs/DESIGN.md "Roles and replicas").
 *
 * It reads the click topic in its own consumer group (normally
 * "<group>.repartition": the trainers started with the same --brokers --topic
 * --group share the click topic's partitions through it) and forwards every
 * message unchanged to the by-city topic (normally "<topic>.by-city"), keyed
 * by the event's city (normalised as the trainer decodes it: 7 and "7" are one
 * city), on its own idempotent producer whose partitioner (murmur2_random)
 * maps a key to one partition: a city lives in exactly one partition of the
 * by-city topic. A message that does not decode keeps its original key (a
 * random partition without one) and is forwarded all the same
 * (`unkeyed`): the trainer that receives it refuses, counts and dead-letters
 * it as it would from the click topic.
 *
 * Offsets (at-least-once): the input offsets of a batch are stored for commit
 * only once every message of that batch and of every earlier batch was
 * delivered. A revoke waits (deferred) until the batches handed over before
 * it are delivered and their offsets stored, so a clean hand-over forwards
 * nothing twice; after a crash the next owner forwards again what was
 * delivered after the last commit (the trainers' session store drops a click
 * it already holds, `events.duplicates`). A failed delivery is produced again
 * (`retries`); a message that cannot even be queued again stops the offsets
 * of its batch and of all later ones from being stored (`failed`, logged):
 * nothing is lost, it is forwarded again after a restart or a rebalance.
 *
 * Thread model: every call on the loop thread, except rc_repart_stats_get /
 * rc_repart_stats_json (any thread). */
#ifndef RECALLD_REPART_H
#define RECALLD_REPART_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "recalld/buf.h"
#include "recalld/consumer.h"

typedef struct rc_repart rc_repart;

typedef struct rc_repart_opts {
    const char *brokers;           /* bootstrap list (required) */
    const char *topic;             /* click topic (input, required) */
    const char *out_topic;         /* by-city topic (output, required) */
    const char *group;             /* the repartitioners' group (required) */
    uint32_t batch;                /* max messages per consumer batch, 0 = the consumer's */
    uint32_t max_inflight;         /* forwarded, not yet delivered: input pauses at this */
    int topic_wait_ms;             /* how long rc_repart_start waits for out_topic's metadata */
    const char *const *extra;      /* NULL-terminated key, value pairs of librdkafka config */
    rc_consumer_fatal_cb on_fatal; /* may be NULL */
    void *ud;
} rc_repart_opts;

typedef struct rc_repart_stats {
    uint64_t consumed;  /* messages read from the click topic */
    uint64_t forwarded; /* messages queued to the by-city topic (first attempt) */
    uint64_t delivered; /* deliveries the broker acknowledged */
    uint64_t unkeyed;   /* forwarded with their original key: no city decoded */
    uint64_t retries;   /* deliveries that failed and were queued again */
    uint64_t failed;    /* messages that could not be queued (their batch stops the offsets) */
    uint64_t paused;    /* input batches refused at max_inflight */
    uint64_t stored;    /* input batches whose offsets were stored for commit */
    uint64_t inflight;  /* forwarded, not delivered yet */
    int32_t out_partitions;
    int assigned; /* click-topic partitions assigned to this repartitioner */
    int64_t lag;  /* of the click topic behind this repartitioner, -1 unknown */
} rc_repart_stats;

/* Connects, looks the by-city topic up (a broker that auto-creates topics
 * creates it with its default partition count; else it must exist: the error
 * says so), joins the group. Returns 0 or an RC_ error with errbuf set. */
int rc_repart_start(uv_loop_t *loop, const rc_repart_opts *o, rc_repart **out, char *errbuf,
                    size_t errlen);

/* Stops reading the click topic (loop handles close asynchronously);
 * deliveries are still served. Idempotent, NULL-safe. */
void rc_repart_close(rc_repart *r);

/* Waits up to flush_ms for what is in flight, stores the offsets of the
 * delivered batches, leaves the group (committing them), frees. Blocks:
 * shutdown only. Run the loop afterwards until its handles are closed.
 * NULL-safe. */
void rc_repart_destroy(rc_repart *r, int flush_ms);

void rc_repart_stats_get(rc_repart *r, rc_repart_stats *st);

/* "topic":...,"group":...,"consumed":N,... (no braces). */
void rc_repart_stats_json(rc_repart *r, rc_buf *out);

/* Any thread: the by-city partition (of partitions) that the
 * repartitioner's producer gives the key city[0..len): librdkafka's
 * murmur2_random partitioner itself, so a reader that needs to know where a
 * city lives (vboot.h) agrees with the forwards exactly. len 0: -1 (an
 * unkeyed forward goes to a random partition). */
int32_t rc_repart_partition(const char *city, size_t len, int32_t partitions);

#endif
