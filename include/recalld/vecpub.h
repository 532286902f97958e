/* vecpub — item vectors to the vector topic (`<topic>.vectors`), and the
 * record format replicas read back.
 *
 * Record: key = the item id; value = a small little-endian binary record
 * (rc_vecrec_encode): magic "RCV1", the dimension, the item id, city and
 * category names, the item's click count, its input vector (the one the
 * index normalises and recall re-scores with: float32), a version, the
 * publish wall time and, when flag bit RC_VECREC_F_OUT (byte 9, zero in
 * records written before it existed) is set, the output (context) vector
 * after the input vector. Trainers publish it, so that a trainer that takes
 * over a city can go on training from the published rows (vboot.h);
 * replicas ignore it. Readers accept records with and without it; a record
 * with a flag bit they do not know is refused (not sized). The version grows per item: max(previous
 * + 1, wall clock in microseconds) of the publishing process, so it also grows across a trainer's
 * restarts (while its clock does not go back by more than the downtime). A reader keeps the record
 * of the highest version per item: a record delivered twice (an idempotent producer's retry, which
 * librdkafka 2.0.2's mock cluster does not deduplicate) or out of order is harmless.
 *
 * Publisher (the trainer side): the engine hands it the rows whose input
 * vector changed at each batch boundary (rc_vecpub_mark); a row marked again
 * before it is produced is coalesced (one record carries its newest vector).
 * Its own thread wakes every interval_ms and produces at most max_rate
 * records a second (a token bucket holding at most one second of credit),
 * oldest marks first, with its own idempotent librdkafka producer
 * (partitioner murmur2_random: the key decides the partition, as with
 * Java clients, so compaction keeps one record per item). The vector is read
 * from the table when the record is built, after the mark was cleared: a
 * later change marks the row again. A failed delivery marks the row again
 * (counted `failed`), a full producer queue leaves the rest for the next
 * tick (counted `queue_full`): nothing is dropped while the process runs. At
 * stop, what is still marked is produced within a few seconds regardless of
 * the rate, and flushed; what could not be is counted `dropped` and logged.
 *
 * The dirty set is one byte per table row plus a queue of row ids, so it is
 * bounded by model.max_items. */
#ifndef RECALLD_VECPUB_H
#define RECALLD_VECPUB_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/buf.h"
#include "recalld/table.h"

#define RC_VECREC_MAGIC  "RCV1"
#define RC_VECREC_HEADER 32   /* bytes before the item id */
#define RC_VECREC_F_OUT  0x01 /* flags: the output vector follows the input vector */

/* A decoded record; item, city and cate point into the decoded bytes (not
 * NUL-terminated). */
typedef struct rc_vecrec {
    const char *item, *city, *cate;
    uint32_t item_len, city_len, cate_len;
    uint32_t dim, count;
    uint32_t flags; /* RC_VECREC_F_OUT */
    uint64_t version;
    int64_t publish_ms;
} rc_vecrec;

/* Appends the record of one item to out: its input vector vec and, when
 * outv is not NULL, its output vector (flag RC_VECREC_F_OUT). Returns 0,
 * RC_EINVAL (an id or name over 255 bytes, dim 0 or over 65535), RC_ENOMEM. */
int rc_vecrec_encode(rc_buf *out, const char *item, size_t item_len, const char *city,
                     size_t city_len, const char *cate, size_t cate_len, uint32_t count,
                     uint64_t version, int64_t publish_ms, const float *vec, const float *outv,
                     uint32_t dim);
/* Decodes p[0..n) into r, the input vector into vec and, when outv is not
 * NULL and the record has one (r->flags & RC_VECREC_F_OUT), the output
 * vector into outv (each room for cap floats). Returns 0, RC_EINVAL (not a
 * record: magic, sizes, unknown flags), RC_E2BIG (dim > cap). */
int rc_vecrec_decode(const void *p, size_t n, rc_vecrec *r, float *vec, float *outv, uint32_t cap);

typedef struct rc_vecpub rc_vecpub;

typedef struct rc_vecpub_opts {
    const char *brokers;      /* bootstrap list */
    const char *topic;        /* the vector topic */
    const char *const *extra; /* NULL-terminated key, value pairs of librdkafka config */
    const rc_table *table;    /* read for the records; must outlive the publisher */
    uint32_t max_rate;        /* records/s, 0 = 20000 */
    uint32_t interval_ms;     /* tick, 0 = 100 */
    uint32_t max_pending;     /* producer queue (messages), 0 = 4194304 */
} rc_vecpub_opts;

typedef struct rc_vecpub_stats {
    uint64_t marked;     /* marks received */
    uint64_t coalesced;  /* marks of a row already waiting */
    uint64_t produced;   /* records handed to the producer */
    uint64_t delivered;  /* acknowledged by the broker */
    uint64_t failed;     /* delivery failures (the row was marked again) */
    uint64_t queue_full; /* produce calls refused by a full queue (row kept marked) */
    uint64_t dropped;    /* still marked or undelivered at stop */
    uint64_t pending;    /* rows marked now */
    uint64_t inflight;   /* produced, not yet acknowledged or failed */
    uint64_t last_version;
    int64_t last_publish_ms; /* wall time of the newest record built, -1 none */
    uint32_t max_rate;
    char last_error[128]; /* last delivery or produce error, "" none */
} rc_vecpub_stats;

/* Creates the producer and starts the thread. Returns 0, RC_EINVAL,
 * RC_EKAFKA, RC_ENOMEM. */
int rc_vecpub_start(const rc_vecpub_opts *o, rc_vecpub **out, char *errbuf, size_t errlen);
/* Any thread (the trainer): rows[0..n) changed. */
void rc_vecpub_mark(rc_vecpub *p, const uint32_t *rows, size_t n);
/* Any thread: rows 0..n-1 (e.g. a restored model, published at start). */
void rc_vecpub_mark_all(rc_vecpub *p, uint32_t n);
/* The engine's vector sink (rc_engine_set_vector_sink): ud is the publisher. */
void rc_vecpub_sink(void *ud, const uint32_t *rows, size_t n);
/* Produces what is still marked (at most timeout_ms, whatever max_rate),
 * flushes the producer, stops the thread and frees. NULL-safe. The table must
 * not change meanwhile (stop the trainer first). */
void rc_vecpub_stop(rc_vecpub *p, int timeout_ms);
/* Any thread. */
void rc_vecpub_stats_get(rc_vecpub *p, rc_vecpub_stats *st);
/* Any thread: the stats as the members of a JSON object (no braces). */
void rc_vecpub_stats_json(rc_vecpub *p, rc_buf *out);

#endif
