/* vboot — a trainer shard takes over cities warm: it bootstraps the cities
 * of by-city partitions it was just assigned from the vector topic
 * (docs/DESIGN.md "Roles and replicas", "Failover").
 *
 * When the group gives a trainer a partition of <topic>.by-city that it has
 * no position for (no checkpoint of its own covers it: a shard died, or a
 * fresh shard joined), the daemon pauses the partition and hands it here
 * (rc_vboot_assigned). A run then, on its own thread and its own librdkafka
 * consumer (no group membership, nothing committed), takes the high
 * watermarks of every partition of <topic>.vectors at that moment and reads
 * each from its beginning up to that mark, keeping the records whose city
 * the repartitioner sends to one of the run's partitions
 * (rc_repart_partition: the same murmur2 partitioner, so the mapping is
 * exact), the newest version per item. Back on the loop thread the kept
 * records go to the engine in install batches (rc_engine_batch_set_install),
 * as free batches allow, and once the last is submitted the partitions are
 * resumed: the trainer installs the records before any click of those
 * partitions (batches are trained in order).
 *
 * Bounds: a run reads for at most timeout_ms and at most max_records records
 * (then it installs what it has; both logged and counted); the records kept
 * are deduplicated whenever they pass twice the last deduplicated count, so
 * memory is bounded by the records of the moved cities (and of max_records).
 * Records deleted by retention before they were read are counted `lost` as
 * the consumer's gap check counts them: below a partition's low watermark
 * when the run starts, or a jump at its first record; later jumps (offsets
 * without a record: compaction) are `gaps`. A partition of the vector topic
 * whose watermarks do not come (no leader) is asked again until the deadline.
 *
 * Rebalances during a run: a partition assigned meanwhile waits, paused, for
 * the next run; a waiting one revoked is forgotten; a partition of the run
 * revoked is marked gone: its cities' records are no longer kept, those kept
 * are dropped before they are handed (`dropped`), and it is not resumed (the
 * consumer resumes what it unassigns). A run left without partitions is
 * cancelled (its reader stops, `cancelled`). rc_vboot_stop abandons a run.
 *
 * Thread model: every call on the loop thread, rc_vboot_stats_json on any. */
#ifndef RECALLD_VBOOT_H
#define RECALLD_VBOOT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "recalld/buf.h"
#include "recalld/consumer.h"
#include "recalld/engine.h"

typedef struct rc_vboot rc_vboot;

typedef struct rc_vboot_opts {
    uv_loop_t *loop;
    const char *brokers;      /* bootstrap list */
    const char *vtopic;       /* <topic>.vectors: read */
    const char *bytopic;      /* <topic>.by-city: its partition count maps cities */
    const char *group;        /* names the reader's client (nothing is committed) */
    const char *const *extra; /* NULL-terminated key, value pairs of librdkafka config */
    rc_engine *engine;        /* installs the records */
    rc_consumer *consumer;    /* the by-city consumer: partitions paused, then resumed */
    uint32_t dim;
    uint32_t timeout_ms;  /* a run's reading, 0 = 120000 */
    uint64_t max_records; /* records read per run, 0 = no bound */
} rc_vboot_opts;

typedef struct rc_vboot_stats {
    uint64_t runs;      /* runs finished */
    int running;        /* a run is reading or handing its records (rc_vboot_stats_json
                         * also while the trainer has not installed all of them) */
    uint32_t paused;    /* partitions held (running or waiting) */
    uint64_t records;   /* records of the vector topic read */
    uint64_t matched;   /* of them, of a city of the run's partitions */
    uint64_t handed;    /* records handed to the engine (newest per item) */
    uint64_t invalid;   /* read but not records (or another dimension) */
    uint64_t lost;      /* deleted by retention before they were read */
    uint64_t gaps;      /* offsets without a record (compaction) */
    uint64_t errors;    /* reader errors (the run goes on, or ends early) */
    uint64_t timeouts;  /* runs stopped at timeout_ms */
    uint64_t truncated; /* runs stopped at max_records */
    uint64_t revoked;   /* partitions revoked while their run read or installed */
    uint64_t cancelled; /* runs ended because every partition was revoked */
    uint64_t dropped;   /* records read for a partition revoked before they were handed */
    uint64_t abandoned; /* runs stopped by a shutdown (nothing installed after it) */
    int64_t last_ms;    /* the last run: assignment -> partitions resumed, -1 none */
    char last_error[128];
} rc_vboot_stats;

int rc_vboot_create(const rc_vboot_opts *o, rc_vboot **out, char *errbuf, size_t errlen);
/* The daemon's rebalance callback: by-city partitions parts[0..n) were
 * assigned without a position (they are paused here and bootstrapped), or
 * revoked (assigned 0: forgotten if waiting, dropped from the running run;
 * never resumed here). Ignored after rc_vboot_stop. */
void rc_vboot_rebalance(rc_vboot *v, int assigned, const int32_t *parts, size_t n);
/* An engine batch came back (the daemon's on_done): installing goes on. */
void rc_vboot_feed(rc_vboot *v);
/* Any thread. */
void rc_vboot_stats_get(rc_vboot *v, rc_vboot_stats *st);
/* Any thread: "runs":N,... (no braces), the engine's install counters
 * included (installed, skipped, install_invalid, count). */
void rc_vboot_stats_json(rc_vboot *v, rc_buf *out);
/* Shutdown begins: a run stops reading (its thread notices within 200 ms, or
 * at its metadata request's next try: at most 5 s) and installing, nothing
 * new starts, later rebalances are ignored; logged, counted `abandoned`.
 * Idempotent, NULL-safe. */
void rc_vboot_stop(rc_vboot *v);
/* rc_vboot_stop, then waits for the run's thread and frees once the loop has
 * closed its handle. Paused partitions stay paused (shutdown). NULL-safe. */
void rc_vboot_destroy(rc_vboot *v);

#endif
