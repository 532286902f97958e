/* consumer — Kafka click stream in, on a libuv loop (librdkafka consumer group).
 *
 * The loop thread never blocks on Kafka: librdkafka's consumer queue signals a
 * pipe (rd_kafka_queue_io_event_enable) that a uv_poll watches; on readiness the
 * consumer drains at most `batch` messages with zero timeout and hands them to
 * on_batch. When on_batch returns RC_EAGAIN (the trainer's queue is full) the
 * consumer stops draining until rc_consumer_resume is called — backpressure
 * without loss (messages stay in librdkafka's queue; fetching pauses at its
 * queued.max.messages.kbytes).
 *
 * The embedded mode starts librdkafka's mock cluster (rdkafka_mock.h) inside the
 * process, creates the topic (and the dead-letter topic) there, and consumes
 * from it; rc_consumer_bootstrap gives its address for outside producers.
 *
 * Offsets: nothing is committed that the owner did not say: rc_consumer_store
 * marks offsets (e.g. what a durable checkpoint contains) that librdkafka's
 * committer then commits - in the background, for partitions being unassigned
 * (before the group hands them over) and at close, never in the middle of a
 * rebalance. rc_consumer_commit commits explicitly at once. Positions
 * consumed so far are available per partition.
 *
 * Dead letters: rc_consumer_dead_letter produces the raw payload to
 * `<topic>.dlq` (headers: reason, error, source partition/offset) or appends a
 * JSON line to a file, as configured.
 *
 * Thread model: every call on the loop thread, except rc_consumer_stats_get. */
#ifndef RECALLD_CONSUMER_H
#define RECALLD_CONSUMER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct rc_consumer rc_consumer;

typedef struct rc_kmsg {
    const char *payload; /* borrowed for the duration of on_batch */
    size_t len;
    const char *key;
    size_t key_len;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* broker/producer timestamp, -1 if none */
    const void *header;   /* value of the header opts.header names (borrowed), NULL if none */
    size_t header_len;
} rc_kmsg;

/* Called on the loop thread with n >= 1 messages. Return 0 when all n were taken,
 * or RC_EAGAIN to refuse the WHOLE batch (it will be offered again after
 * rc_consumer_resume). */
typedef int (*rc_consumer_batch_cb)(void *ud, const rc_kmsg *msgs, size_t n);

/* Partitions assigned or revoked (rebalance); owners drop per-partition state. */
typedef void (*rc_consumer_rebalance_cb)(void *ud, int assigned, const int32_t *parts, size_t n);

/* Events lost: offsets [from, to) of partition were removed from the log (by
 * retention) before this consumer read them. Loop thread. */
typedef void (*rc_consumer_gap_cb)(void *ud, int32_t partition, int64_t from, int64_t to);

/* librdkafka reported a fatal error (e.g. this static member was fenced by
 * another instance with the same group.instance.id): the consumer hands over
 * nothing more; the owner should stop. Loop thread. */
typedef void (*rc_consumer_fatal_cb)(void *ud, const char *why);

typedef struct rc_consumer_opts {
    const char *brokers;         /* bootstrap list; ignored when embedded */
    const char *topic;           /* 0 = "clicks" */
    const char *group;           /* 0 = "recalld" */
    int embedded;                /* start the mock cluster in-process */
    int embedded_partitions;     /* topic partitions in the mock, 0 = 8 (the mock keeps
                                  * ~5 MiB per partition: more partitions, more room) */
    uint32_t batch;              /* max messages per on_batch, 0 = 1024 */
    const char *dlq_topic;       /* NULL = "<topic>.dlq" */
    const char *dlq_file;        /* non-NULL: dead letters go to this file instead */
    uint64_t dlq_file_max_bytes; /* dlq_file is rotated to dlq_file.1 before it would pass
                                    this size (the old .1 is deleted); 0 = no cap */
    const char *const *extra;    /* NULL-terminated key, value pairs of librdkafka config */
    rc_consumer_batch_cb on_batch;
    rc_consumer_rebalance_cb on_rebalance; /* may be NULL */
    void *ud;
    /* Start positions (copied): when partition start_parts[i] is assigned,
     * consumption starts at start_offsets[i] instead of the group's committed
     * offset, because the owner's model already holds everything before it
     * (restored from a checkpoint). Positions then follow what is handed over
     * and survive revokes: a partition that comes back resumes where this
     * consumer's owner left it. Messages below a partition's position are never
     * handed over again (counted in stats.skipped_applied). */
    const int32_t *start_parts;
    const int64_t *start_offsets;
    size_t nstart;
    /* 1: a revoke (rebalance) is not passed to librdkafka until the owner calls
     * rc_consumer_release, so it can make what it applied from those partitions
     * durable and commit it first; the next owner then starts exactly there.
     * Meanwhile nothing more of the revoked partitions is handed over. A revoke
     * while closing, or of a lost assignment, is applied at once. */
    int defer_revoke;
    /* Static group membership: group.instance.id (NULL or "" = dynamic). A
     * restarted instance with the same id gets its partitions back without a
     * rebalance; a second live instance with the same id is fenced by the
     * broker (on_fatal). */
    const char *instance_id;
    /* 1: partitions of the first assignment that have no start position are
     * read from the beginning of the log (the owner lost its model: replay);
     * what retention already removed is reported as lost. */
    int replay_from_start;
    /* 1: no group membership (a replica's reader of <topic>.vectors): every
     * partition of the topic is assigned from the beginning of its log, once
     * the topic's metadata is known (looked up at start and then every second
     * until it is; partitions added later need a restart). group only names
     * the client; nothing is committed; the gap check runs as for a replay
     * (what retention deleted before the first offset is counted lost). No
     * dead-letter producer is created. */
    int assign_all;
    /* More topics the embedded mock creates (NULL-terminated; e.g. a trainer's
     * click topic when it consumes <topic>.by-city), as many partitions each. */
    const char *const *embedded_topics;
    /* A message header whose value each rc_kmsg carries (NULL: none), e.g.
     * the source position a repartitioner adds (srcpos.h). Not copied: a
     * string that outlives the consumer (a literal). */
    const char *header;
    rc_consumer_gap_cb on_gap;     /* may be NULL */
    rc_consumer_fatal_cb on_fatal; /* may be NULL */
} rc_consumer_opts;

typedef struct rc_consumer_stats {
    uint64_t messages, bytes, batches, refused_batches;
    uint64_t dead_letters, dead_letter_errors;
    uint64_t dead_letters_dropped;   /* written, then deleted by a rotation of dlq_file */
    uint64_t dlq_rotations;          /* rotations of dlq_file */
    uint64_t errors;                 /* consumer errors reported by librdkafka */
    int assigned;                    /* partitions assigned now */
    int64_t lag;                     /* sum over assigned partitions, -1 unknown */
    uint64_t commits, commit_errors; /* rc_consumer_commit results reported by the broker */
    uint64_t skipped_applied;        /* messages below the owner's position, dropped */
    uint64_t rebalances;             /* assignments + revokes seen */
    int revoke_pending;              /* a deferred revoke waits for rc_consumer_release */
    /* Offset gaps. Per partition the consumer knows where reading must go on:
     * the last offset handed over + 1, the owner's start position, the group's
     * committed offset (looked up at assignment), or for a partition nobody
     * ever committed the start of the log (0 for the embedded cluster, whose
     * topic this process created; else the log start seen first). A first
     * offset beyond that, or a jump later on, is a gap: the part of it below
     * the partition's log start was deleted unread (retention) and is counted
     * in `lost` (WARN log line, on_gap); the rest (offsets that never held a
     * message: compaction, transaction markers) in `offset_gaps`. */
    uint64_t lost, offset_gaps;
    int32_t last_gap_partition; /* -1 none */
    int64_t last_gap_from, last_gap_to;
    uint64_t lookups_failed;   /* committed-offset look-ups that failed (gap check off) */
    uint64_t stale_offsets;    /* offsets not stored: below the assignment's start */
    uint64_t lost_assignments; /* revokes of partitions the group had already taken away */
    int fatal;                 /* a fatal error stopped the consumer */
    char last_error[128];      /* last consumer error (e.g. unknown topic), "" none */
} rc_consumer_stats;

int rc_consumer_start(uv_loop_t *loop, const rc_consumer_opts *opts, rc_consumer **out,
                      char *errbuf, size_t errlen);

/* Bootstrap servers ("127.0.0.1:PORT,..."): the mock's when embedded. */
const char *rc_consumer_bootstrap(const rc_consumer *c);

/* Resume draining after a refused batch; the refused batch is offered first, on a
 * later loop iteration. May be called from inside on_batch (before returning
 * RC_EAGAIN). No-op when not paused. */
void rc_consumer_resume(rc_consumer *c);

/* Pauses (pause 1) or resumes (0) fetching of the partitions parts[0..n):
 * nothing of a paused partition is handed over, and what was fetched but not
 * handed over is fetched again on resume (from the last message handed over
 * + 1, or the partition's start). E.g. a trainer holds partitions it was just
 * assigned while it bootstraps their cities (vboot.h). Partitions not
 * assigned are ignored by librdkafka. Loop thread. */
void rc_consumer_pause_parts(rc_consumer *c, const int32_t *parts, size_t n, int pause);

/* Sends a refused event to the dead-letter sink. reason: short code; err: text. */
int rc_consumer_dead_letter(rc_consumer *c, const rc_kmsg *m, const char *reason, const char *err);

/* Commits next-offsets (offset of the last applied message + 1) per partition,
 * asynchronously. parts/offsets have n entries. */
int rc_consumer_commit(rc_consumer *c, const int32_t *parts, const int64_t *offsets, size_t n);

/* Stores next-offsets (n entries) to be committed by librdkafka (see
 * "Offsets" above); partitions not assigned are skipped. Returns 0, RC_EINVAL,
 * RC_EKAFKA (some partition not stored). Loop thread. */
int rc_consumer_store(rc_consumer *c, const int32_t *parts, const int64_t *offsets, size_t n);

/* Completes a deferred revoke (opts.defer_revoke): stores parts/offsets (n
 * entries, n = 0: nothing) and lets librdkafka unassign, which commits the
 * stored offsets of the revoked partitions and waits for the answer before
 * the group moves on. Returns 0, RC_EINVAL when no revoke is pending,
 * RC_EKAFKA when an offset could not be stored (the revoke completes anyway).
 * Loop thread. */
int rc_consumer_release(rc_consumer *c, const int32_t *parts, const int64_t *offsets, size_t n);

/* 1 when partition p is assigned, or revoked with the revoke still deferred
 * (its offsets may still be committed). Loop thread. */
int rc_consumer_owns(const rc_consumer *c, int32_t p);

/* Fills parts[i]/next_offsets[i] (i < cap) with the assigned partitions that
 * have a position - messages handed to on_batch, or a start position
 * (opts.start_offsets) - and for each the offset of the last message taken + 1
 * (the value rc_consumer_commit expects). Returns how many such partitions
 * exist (may exceed cap). Loop thread. */
size_t rc_consumer_positions(const rc_consumer *c, int32_t *parts, int64_t *next_offsets,
                             size_t cap);

/* Fills parts[i]/lags[i] (i < cap) for every assigned partition: messages
 * between the position (last taken + 1, or the low watermark before any) and
 * the high watermark, as of the last refresh (about once a second), -1 while
 * unknown. Returns the number of assigned partitions (may exceed cap). Loop
 * thread. */
size_t rc_consumer_lags(const rc_consumer *c, int32_t *parts, int64_t *lags, size_t cap);

/* One assigned partition as other threads see it (see rc_consumer_partitions). */
typedef struct rc_consumer_part {
    int32_t partition;
    int64_t next; /* offset after the last message handed over; -1 before any */
    int64_t lag;  /* as rc_consumer_lags; -1 while unknown */
} rc_consumer_part;

/* Any thread: copies the assigned partitions as of the consumer's last
 * publication (after every batch, rebalance and lag refresh) into out[i],
 * i < cap, ordered by partition; returns how many there are (may exceed cap). */
size_t rc_consumer_partitions(rc_consumer *c, rc_consumer_part *out, size_t cap);

/* Closes the loop handles (poll, idle, timer) asynchronously and calls cb(c, arg)
 * (cb may be NULL) once they are closed; the consumer stops handing over
 * messages at once. Kafka handles stay open until rc_consumer_destroy, which the
 * owner calls afterwards (e.g. from cb). Calling it twice is a no-op. */
typedef void (*rc_consumer_close_cb)(rc_consumer *c, void *arg);
void rc_consumer_close(rc_consumer *c, rc_consumer_close_cb cb, void *arg);

/* Closes the consumer (leaves the group; the revoke reaches on_rebalance),
 * flushes the DLQ producer (at most 5 s), destroys the mock cluster. May block up
 * to a few seconds: call at shutdown only. NULL-safe. If rc_consumer_close has
 * not completed yet, it is started and the memory is freed by the last close
 * callback: run the loop until it returns before uv_loop_close. */
void rc_consumer_destroy(rc_consumer *c);

/* Counters as of the consumer's last loop tick. Thread-safe. */
void rc_consumer_stats_get(rc_consumer *c, rc_consumer_stats *st);

#endif
